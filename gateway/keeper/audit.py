"""The Keeper: storage audits drawn from chain randomness, anchored audit records, repair.

An audit takes the hash of the chain's latest block as its seed and derives its challenges
from it and from the epoch anchors on chain alone (`challenges`), so anyone can recompute
them. Each challenge names an anchored leaf (a message) and, if that message is a camera
manifest, one chunk of its object. The Provider answers with the bytes and Merkle paths;
`check` verifies them against the anchored epoch root and the device key on chain, trusting
nothing else. The gateway's own Keeper also reads every share of what it challenged, so a
damaged share is found even though reads still succeed from the others, and queues repair.

The records (seed, challenges, outcomes) are leaves of a Merkle tree whose root goes to
StorageAudit.record, which stores the seed block's hash as the chain saw it.
"""
import hashlib
import logging
import threading
import time

from agent.objects import KIND_MANIFEST
from gateway.health import DISK_FULL, WAITING, Registry, disk_full, unreachable
from gateway.keeper.challenges import Challenge, Outcome, check, draw, record_hash, seed_block
from gateway.store.audits import Record
from gateway.store.provider import Provider, Unrecoverable
from gateway.wire import merkle, objects, protocol

log = logging.getLogger("edgekeep.keeper")

RECEIPT_TIMEOUT = 60
PROTECT_SAVE_EVERY = 64     # protect() records its position at least this often
PROTECT_PAGE = 256          # protect() reads the messages to copy this many at a time
STOP_JOIN = 5               # KeeperLoop.stop: seconds for the loop to finish its step
STOP_COPY = 3               # KeeperLoop.stop: seconds of a last copy; the rest at the next start

# -- challenges: a function of the chain alone ---------------------------------------


# -- checking an answer against the chain -------------------------------------------------


# -- the gateway's own Keeper ----------------------------------------------------------------

class Keeper:
    def __init__(self, store, provider, chain):
        """A Keeper over a Store (its `audits` rows) and that store's Provider; no I/O."""
        self.store = store
        self.audits = store.audits
        self.provider = provider
        self.chain = chain
        self.halt = threading.Event()   # set: protect() returns between two messages
        self.backlog = 0                # messages protect() left for its next call

    @classmethod
    def open(cls, store, chain):
        """The Keeper of a Store's data directory, with its Provider."""
        return cls(store, Provider.open(store), chain)

    def protect(self, deadline=None):
        """Copy messages the Provider does not hold yet into it, oldest first; how many.

        Interruptible: returns between two messages once `halt` is set or time.monotonic()
        passes `deadline`, leaving `backlog` messages for the next call. Its position
        (keeper_state protected_id) is saved as it goes and on the way out, so a stop, or a
        crash, midway loses nothing: the next call (the next start) resumes there, and a
        message copied again is a no-op (Provider.put of a blob it holds).
        """
        since = self.audits.state("protected_id")
        last = self.store.latest_message_id()   # what came later is for the next call
        done, n = since, 0
        try:
            while done < last:
                # A page at a time: a backlog of any size (a Keeper slower than the ingest,
                # a start after a long stop) costs one page of memory (bench/soak.py).
                rows = [r for r in self.store.messages_from(done, PROTECT_PAGE) if r.id <= last]
                if not rows:
                    break
                for mid, digest, raw in rows:
                    if self.halt.is_set() or (deadline is not None
                                              and time.monotonic() >= deadline):
                        return n
                    if hashlib.sha256(raw).digest() != digest:
                        log.error("message %d is corrupt in the store; not copied", mid)
                    else:
                        self.provider.put(digest, raw)
                    done, n = mid, n + 1
                    if n % PROTECT_SAVE_EVERY == 0:
                        self.audits.set_state("protected_id", done)
        finally:
            self.backlog = max(0, last - done)   # row ids: messages are never deleted
            if done != since:
                self.audits.set_state("protected_id", done)
        return n

    # audits

    def audit_sample(self, n):
        block, chs = draw(self.chain, n)
        return self._audit("sample", block, chs)

    def audit_all(self, target=None):
        """Every chunk of every anchored object, or of one (`<device>-<seq>` for a message,
        `[<device>-]<oid>` for a camera object)."""
        return self._audit("object" if target else "all", seed_block(self.chain),
                           self._targets(target))

    def _targets(self, target):
        if target is None:
            rows = self.store.sealed_messages()
        else:
            rows = self._target_rows(target)
        out = []
        for m in rows:
            device, kind, raw, epoch, leaf = m["device"], m["kind"], m["raw"], m["epoch"], m["leaf"]
            count = 1
            if kind == KIND_MANIFEST:
                signed = protocol.parse("ek/%s/up/%s" % (device, kind), raw, len(raw))
                count = objects.parse_manifest(signed.payload, stored=True).count
            out += [Challenge(len(out) + i, epoch, leaf, i) for i in range(count)]
        return out

    def _target_rows(self, target):
        device, _, tail = target.rpartition("-")
        if tail.isdigit():
            m = self.store.message(device, int(tail))
        else:
            obj = self.store.objects.find(target)
            m = self.store.message(obj["device"], obj["seq"])
        if m is None or m["epoch"] is None:
            raise LookupError("%s is not a sealed message or object here" % target)
        return [m]

    def _audit(self, mode, block, chs):
        self.protect()
        audit = self.audits.start(time.time(), mode, block["number"], block["hash"])
        seed = bytes.fromhex(block["hash"][2:])
        damaged, records = set(), []
        for ch in chs:
            o, bad = self.challenge(ch)
            damaged |= bad
            h = record_hash(audit, block["number"], seed, ch, o)
            records.append(Record(ch.index, ch.epoch, ch.leaf, o.chunk, o.digest, o.outcome,
                                  o.detail, h))
        self.audits.add_records(audit, records)
        failed = sum(r.outcome == "failed" for r in records)
        skipped = sum(r.outcome == "skipped" for r in records)
        root = merkle.root([r.hash for r in records]).hex() if records else None
        self.audits.finish(audit, len(records), failed, skipped, root, int(failed == 0))
        if damaged:
            self._after_repair(audit, self.repair(sorted(damaged)))
        log.info("audit %d (%s): %d challenges, %d failed", audit, mode, len(records), failed)
        return audit

    def challenge(self, ch):
        """Answer and check one challenge here; (Outcome, digests with damaged shares)."""
        try:
            answer = self.provider.answer(ch.epoch, ch.leaf, ch.select)
        except (LookupError, Unrecoverable, ValueError) as e:
            return Outcome("failed", "no answer: %s" % e, None, -1), set()
        o = check(ch, answer, self.chain)
        digests = [hashlib.sha256(answer["message"]).digest()]
        if answer["chunk"]:
            digests.append(hashlib.sha256(answer["chunk"]["data"]).digest())
        bad = {d for d in digests if self._damaged(d)}
        if bad and o.outcome == "ok":
            o = o._replace(outcome="failed", detail="%s: damaged or missing share(s) of %s" % (
                o.detail, ", ".join(d.hex()[:16] for d in sorted(bad))))
        return o, bad

    def _damaged(self, digest):
        if not self.provider.has(digest):
            return False
        good, m = self.provider.health(digest)
        return good < m

    def _after_repair(self, audit, repairs):
        lost = [r for r in repairs if r["outcome"] == "lost"]
        alarm = ("%d blob(s) below k shares, not repairable: %s" % (
            len(lost), ", ".join(r["digest"].hex()[:16] for r in lost))) if lost else None
        self.audits.set_repaired(audit, len(repairs) - len(lost), int(not lost), alarm)

    def anchor(self, audit):
        """Put the audit's root on chain (StorageAudit.record); the audit row after it."""
        a = self.audit_row(audit)
        if not a["root"]:
            self.audits.set_empty(audit)
            return self.audit_row(audit)
        try:
            tx = self.chain.send_audit(audit, a["seed_block"], bytes.fromhex(a["root"]),
                                       a["challenges"], a["failed"])
            receipt = self.chain.wait_receipt(tx, RECEIPT_TIMEOUT)
            if not receipt["status"]:
                raise RuntimeError("audit tx %s reverted" % tx)
            self.audits.set_anchored(audit, tx, receipt["block_number"])
        except Exception as e:  # the chain may be down: the record stays, marked
            log.warning("anchoring audit %d failed: %s", audit, e)
            self.audits.set_error(audit, "not anchored: %s" % str(e)[:200])
        return self.audit_row(audit)

    def audit_row(self, audit):
        return self.audits.get(audit)

    def records(self, audit):
        """[(idx, epoch, leaf, chunk, digest, outcome, detail, hash)] of an audit."""
        return self.audits.records(audit)

    # repair

    def repair(self, digests=None):
        """Rebuild damaged or missing shares, the blobs with the fewest good shares first
        (MEMO's risk-first order); every blob when `digests` is None. One row per repair."""
        self.protect()
        todo = []
        for d in self.provider.digests() if digests is None else digests:
            good, m = self.provider.health(d)
            if good < m:
                todo.append((good, d))
        out = []
        for good, d in sorted(todo):
            try:
                outcome, detail = "repaired", "share(s) %s rewritten" % self.provider.rebuild(d)
            except Unrecoverable as e:
                outcome, detail = "lost", str(e)
                log.error("ALARM: %s", e)
            self.audits.add_repair(time.time(), d, good, outcome, detail)
            out.append({"digest": d, "good": good, "outcome": outcome, "detail": detail})
        return out

    def status(self):
        """Roots, blobs, the last audit and the repairs that failed: `gateway keeper status`."""
        return {"roots": self.provider.roots, "missing_roots": self.provider.missing_roots(),
                "k": self.provider.k, "m": self.provider.m,
                "blobs": len(self.provider.digests()), "unrepairable": self.audits.unrepairable(),
                "last_audit": self.audits.last(), "repairs": self.audits.repair_count()}


class KeeperLoop:
    """The running gateway's Keeper: copies sealed messages into the Provider as epochs seal,
    re-protects a lost root at once, and audits every `period` seconds once the chain answers."""

    def __init__(self, keeper, period=600, samples=16, connect=None, health=None):
        """keeper: a Keeper on a Store of its own (Store.connect: this thread's connection);
        its chain may be None, with `connect` a function that makes it (tried before each
        audit until the chain answers). health: the process's gateway.health.Registry."""
        self.keeper = keeper
        self.period, self.samples = period, samples
        self.connect = connect
        self.wake = threading.Event()
        self._stop = threading.Event()
        registry = health or Registry()
        self.health = registry.component("keeper")
        self.thread = registry.thread("keeper", self._run, self._stop)

    def start(self):
        self.thread.start()
        return self

    def notify(self, epoch=None):
        self.wake.set()

    def stop(self, join=STOP_JOIN, copy=STOP_COPY):
        """Stop within about join + copy seconds. The copy backlog is not drained: the loop's
        copy stops between two messages, then a last copy runs for at most `copy` seconds
        (enough for the last epoch at a normal rate) and what is left is copied at the next
        start (protect() keeps its position)."""
        self._stop.set()
        self.keeper.halt.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(join)
        if self.thread.is_alive():  # an audit or repair step in hand: it ends with the process
            log.warning("keeper: still busy after %g s; stopping without it", join)
            return
        self.keeper.halt.clear()
        try:
            self.keeper.protect(deadline=time.monotonic() + copy)
        except Exception as e:
            log.warning("keeper: last copy into the Provider failed (%s); done on the next start",
                        e)
        if self.keeper.backlog:
            log.warning("keeper: %d message(s) not copied into the Provider yet; copied at the "
                        "next start", self.keeper.backlog)

    def _run(self):
        """One round per wake-up (or 5 s). The disk full and the chain down are waited out
        here; anything else escapes to the supervisor (gateway/health.py), which logs,
        counts and restarts this loop."""
        next_audit = time.monotonic() + self.period
        while not self._stop.is_set():
            self.wake.wait(5)
            self.wake.clear()
            try:
                self.keeper.protect()
                if self.keeper.provider.missing_roots():
                    log.error("storage root(s) lost: %s; repairing",
                              ", ".join(self.keeper.provider.missing_roots()))
                    self.keeper.repair()
                if time.monotonic() >= next_audit and self._chain():
                    next_audit = time.monotonic() + self.period
                    self.keeper.anchor(self.keeper.audit_sample(self.samples))
            except Exception as e:
                if disk_full(e):
                    if self.health.state != "paused":
                        log.warning("keeper paused: disk full (%s)", e)
                    self.health.pause(DISK_FULL, "disk full: %s" % str(e)[:200])
                    continue
                if unreachable(e):  # the chain went away during an audit: the next round
                    self.health.waiting("chain", "chain not reachable: %s" % str(e)[:200])
                    continue
                raise
            self.health.progress(alive=self.health.state != WAITING or self.keeper.chain is not None)

    def _chain(self):
        """True once the Keeper has its chain (made by `connect` when it answers)."""
        if self.keeper.chain is not None:
            return True
        if self.connect is None:
            return False
        try:
            self.keeper.chain = self.connect()
        except Exception as e:
            self.health.waiting("chain", "audits wait for the chain: %s" % str(e)[:200])
            return False
        self.health.alive()
        return True
