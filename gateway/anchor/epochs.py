"""Epochs and their anchors: sealing stored messages into an epoch's Merkle tree, and the
outbox that puts each epoch's root on chain, one transaction per epoch.

The ingest seals (it owns the write connection); the Anchorer thread sends sealed epochs
in order, retries with back-off, and records the tx hash, block and gas. ProofAnchor treats
the same root for the same epoch as a no-op, so a resend after a crash is harmless.
"""
import logging
import threading
import time

from gateway.wire import merkle

log = logging.getLogger("edgekeep.anchor")

RECEIPT_TIMEOUT = 60
BACKOFF_MAX = 60


def seal_epoch(store):
    """Give every unsealed message a leaf in the next epoch's tree; the epoch, or None.
    store: the ingest's Store (gateway/store/database.py)."""
    with store.transaction():
        rows = store.unsealed()
        if not rows:
            return None
        epoch = store.next_epoch()
        root = merkle.root([d for _, d in rows])
        store.add_epoch(epoch, root, [mid for mid, _ in rows], time.time())
    log.info("sealed epoch %d: %d messages, root %s", epoch, len(rows), root.hex())
    return epoch


class Anchorer:
    def __init__(self, store, chain):
        """The outbox over a Store of its own (Store.connect: this thread's connection)."""
        self.store = store
        self.chain = chain
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.backoff = 1
        self.thread = threading.Thread(target=self._run, name="anchor", daemon=True)

    def start(self):
        self.thread.start()

    def notify(self, epoch=None):
        self.wake.set()

    def stop(self, drain_timeout=60):
        """Stop after every sealed epoch is mined, or after drain_timeout seconds."""
        deadline = time.monotonic() + drain_timeout
        while self.pending() and time.monotonic() < deadline:
            self.wake.set()
            time.sleep(0.2)
        left = self.pending()
        if left:
            log.warning("stopping with %d epoch(s) not yet anchored; they go out on the next start",
                        len(left))
        self._stop.set()
        self.wake.set()
        self.thread.join()

    def pending(self):
        return self.store.unmined_epochs()

    def _run(self):
        while not self._stop.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            for epoch in self.pending():
                if self._stop.is_set():
                    return
                try:
                    self.anchor(epoch)
                    self.backoff = 1
                except Exception as e:  # the chain may be down: keep the outbox, retry later
                    self.store.epoch_failed(epoch, str(e)[:500])
                    log.warning("anchoring epoch %d failed (%s); retry in %d s", epoch, e,
                                self.backoff)
                    self._stop.wait(self.backoff)
                    self.backoff = min(self.backoff * 2, BACKOFF_MAX)
                    break

    def anchor(self, epoch):
        row = self.store.epoch(epoch)
        root, count, tx_hash = row["root"], row["count"], row["tx_hash"]
        on_chain = self.chain.anchor_of(epoch)
        if on_chain and on_chain["root"] != root:
            raise RuntimeError("epoch %d holds another root on chain: %s" % (
                epoch, on_chain["root"].hex()))
        if on_chain is None:
            tx_hash = self.chain.send_anchor(epoch, root, count)
            self.store.epoch_sent(epoch, tx_hash)
            receipt = self.chain.wait_receipt(tx_hash, RECEIPT_TIMEOUT)
            if not receipt["status"]:
                raise RuntimeError("anchor tx %s for epoch %d reverted" % (tx_hash, epoch))
            block, block_hash, gas = receipt["block_number"], receipt["block_hash"], receipt["gas_used"]
        else:  # mined before a crash, or by an earlier run
            block, gas = on_chain["block_number"], None
            block_hash = self.chain.block_hash(block)
        self.store.epoch_mined(epoch, block, block_hash, gas, time.time())
        log.info("epoch %d anchored in block %d (tx %s, %s messages)", epoch, block, tx_hash, count)
