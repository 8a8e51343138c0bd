"""Epochs and their anchors: sealing stored messages into an epoch's Merkle tree, and the
outbox that puts each epoch's root on chain, one transaction per epoch.

The ingest seals (it owns the write connection); the Anchorer thread sends sealed epochs
in order, retries with back-off, and records the tx hash, block and gas. ProofAnchor treats
the same root for the same epoch as a no-op, so a resend after a crash is harmless.
"""
import logging
import threading
import time

from gateway.health import DISK_FULL, Registry, disk_full
from gateway.wire import merkle

log = logging.getLogger("edgekeep.anchor")

RECEIPT_TIMEOUT = 60
DRAIN_TIMEOUT = 10  # Anchorer.stop: seconds, all told, for the outbox to empty
BACKOFF_MAX = 60


def seal_epoch(store, fence=None):
    """Give every unsealed message a leaf in the next epoch's tree; the epoch, or None.
    store: the ingest's Store (gateway/store/database.py). fence: a function of the store
    that says, inside the transaction, whether this process may still seal (it holds the
    workers' lease); None: it may."""
    with store.transaction():
        if fence is not None and not fence(store):
            return None
        rows = store.unsealed()
        if not rows:
            return None
        epoch = store.next_epoch()
        root = merkle.root([d for _, d in rows])
        store.add_epoch(epoch, root, [mid for mid, _ in rows], time.time())
    log.info("sealed epoch %d: %d messages, root %s", epoch, len(rows), root.hex())
    return epoch


class Anchorer:
    def __init__(self, store, chain, health=None, fence=None):
        """The outbox over a Store of its own (Store.connect: this thread's connection).

        chain: the Chain client, or a function that makes one (called in the outbox's
        thread, again with back-off until the chain answers: the gateway starts without it).
        health: the process's gateway.health.Registry (a private one if None). fence: a
        function of the store that says whether this process may still anchor (it holds the
        workers' lease, gateway/workers.py); None: it may."""
        self.store = store
        self.fence = fence
        if callable(chain):
            self.chain, self._connect = None, chain
        else:
            self.chain, self._connect = chain, None
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.backoff = 1
        registry = health or Registry()
        self.health = registry.component("anchor")
        self.thread = registry.thread("anchor", self._run, self._stop)

    def start(self):
        self.thread.start()

    def notify(self, epoch=None):
        self.wake.set()

    def stop(self, drain_timeout=DRAIN_TIMEOUT):
        """Stop after every sealed epoch is mined, or after drain_timeout seconds all told (a
        receipt being waited for included). Epochs still in the outbox stay there, sealed,
        and are anchored first at the next start; a transaction already sent is found on
        chain then (anchor_of) and not sent twice."""
        deadline = time.monotonic() + drain_timeout
        while self.chain is not None and self.pending() and time.monotonic() < deadline:
            self.wake.set()
            time.sleep(0.2)
        self._stop.set()
        self.wake.set()
        if self.thread.is_alive():
            # Waiting for a receipt, it ends with the process (a daemon thread).
            self.thread.join(max(0.1, deadline - time.monotonic()))
        left = self.pending()
        if left:
            log.warning("stopping with %d epoch(s) not yet anchored; they go out on the next start",
                        len(left))

    def pending(self):
        return self.store.unmined_epochs()

    def _run(self):
        """The loop: connect to the chain if need be, then send what is pending. The chain
        down and the disk full are waited out here; anything else escapes to the
        supervisor (gateway/health.py), which logs, counts and restarts this loop."""
        while not self._stop.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            if self.chain is None and not self._connect_chain():
                continue
            try:
                done = self.step()
            except Exception as e:
                if not disk_full(e):
                    raise
                self.health.pause(DISK_FULL, "disk full: %s" % e)
                log.warning("anchor outbox: disk full (%s); retry in %d s", e, self.backoff)
                self._wait_backoff()
                continue
            if done:
                self.health.progress()  # alive again after waiting for the chain or the disk

    def _connect_chain(self):
        try:
            self.chain = self._connect()
        except Exception as e:
            if self.backoff == 1 or self.backoff >= BACKOFF_MAX:
                log.warning("chain not reachable (%s); anchoring waits, retry in %d s",
                            str(e)[:200], self.backoff)
            self.health.waiting("chain", "chain not reachable: %s" % str(e)[:200])
            self._wait_backoff()
            return False
        self.backoff = 1
        self.health.alive()
        log.info("chain %s reachable (chain id %d); anchoring %d pending epoch(s)",
                 self.chain.rpc_url, self.chain.chain_id, len(self.pending()))
        return True

    def _wait_backoff(self):
        self._stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.wake.set()

    def step(self):
        """Anchor the pending epochs, oldest first, until one fails (it is kept and retried
        after a back-off); True if none failed."""
        for epoch in self.pending():
            if self._stop.is_set() or (self.fence and not self.fence(self.store)):
                return True
            try:
                self.anchor(epoch)
                self.backoff = 1
            except Exception as e:  # the chain may be down: keep the outbox, retry later
                if disk_full(e):
                    raise
                try:
                    self.store.epoch_failed(epoch, str(e)[:500])
                except Exception as e2:
                    if not disk_full(e2):
                        raise
                log.warning("anchoring epoch %d failed (%s); retry in %d s", epoch, e,
                            self.backoff)
                self.health.waiting("chain", "epoch %d not anchored: %s" % (epoch, str(e)[:200]))
                self._wait_backoff()
                return False
        return True

    def anchor(self, epoch):
        row = self.store.epoch(epoch)
        root, count, tx_hash = row["root"], row["count"], row["tx_hash"]
        on_chain = self.chain.anchor_of(epoch)
        if on_chain and on_chain["root"] != root:
            raise RuntimeError("epoch %d holds another root on chain: %s" % (
                epoch, on_chain["root"].hex()))
        if on_chain is None:
            if not (tx_hash and self.chain.known(tx_hash)):  # else: sent before a crash
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
