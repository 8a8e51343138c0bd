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
from gateway.store import database as store

log = logging.getLogger("edgekeep.anchor")

RECEIPT_TIMEOUT = 60
BACKOFF_MAX = 60


def seal_epoch(db):
    """Give every unsealed message a leaf in the next epoch's tree; the epoch, or None."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute("SELECT id, digest FROM messages WHERE epoch IS NULL "
                          "ORDER BY id").fetchall()
        if not rows:
            db.execute("COMMIT")
            return None
        epoch = db.execute("SELECT coalesce(max(epoch), 0) + 1 FROM epochs").fetchone()[0]
        root = merkle.root([d for _, d in rows])
        db.executemany("UPDATE messages SET epoch = ?, leaf = ? WHERE id = ?",
                       [(epoch, i, mid) for i, (mid, _) in enumerate(rows)])
        db.execute("INSERT INTO epochs (epoch, root, count, sealed_at) VALUES (?, ?, ?, ?)",
                   (epoch, root, len(rows), time.time()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    log.info("sealed epoch %d: %d messages, root %s", epoch, len(rows), root.hex())
    return epoch


class Anchorer:
    def __init__(self, data_dir, chain):
        self.db = store.connect(data_dir)
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
        return [r[0] for r in self.db.execute(
            "SELECT epoch FROM epochs WHERE status != 'mined' ORDER BY epoch")]

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
                    self.db.execute("UPDATE epochs SET last_error = ?, attempts = attempts + 1 "
                                    "WHERE epoch = ?", (str(e)[:500], epoch))
                    log.warning("anchoring epoch %d failed (%s); retry in %d s", epoch, e,
                                self.backoff)
                    self._stop.wait(self.backoff)
                    self.backoff = min(self.backoff * 2, BACKOFF_MAX)
                    break

    def anchor(self, epoch):
        row = self.db.execute("SELECT root, count, tx_hash FROM epochs WHERE epoch = ?",
                              (epoch,)).fetchone()
        root, count, tx_hash = row
        on_chain = self.chain.anchor_of(epoch)
        if on_chain and on_chain["root"] != root:
            raise RuntimeError("epoch %d holds another root on chain: %s" % (
                epoch, on_chain["root"].hex()))
        if on_chain is None:
            tx_hash = self.chain.send_anchor(epoch, root, count)
            self.db.execute("UPDATE epochs SET status = 'sent', tx_hash = ?, "
                            "attempts = attempts + 1 WHERE epoch = ?", (tx_hash, epoch))
            receipt = self.chain.wait_receipt(tx_hash, RECEIPT_TIMEOUT)
            if not receipt["status"]:
                raise RuntimeError("anchor tx %s for epoch %d reverted" % (tx_hash, epoch))
            block, block_hash, gas = receipt["block_number"], receipt["block_hash"], receipt["gas_used"]
        else:  # mined before a crash, or by an earlier run
            block, gas = on_chain["block_number"], None
            block_hash = self.chain.block_hash(block)
        self.db.execute("UPDATE epochs SET status = 'mined', block = ?, block_hash = ?, "
                        "gas = coalesce(?, gas), mined_at = ?, last_error = NULL WHERE epoch = ?",
                        (block, block_hash, gas, time.time(), epoch))
        log.info("epoch %d anchored in block %d (tx %s, %s messages)", epoch, block, tx_hash, count)
