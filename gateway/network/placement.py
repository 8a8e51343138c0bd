"""Placing the gateway's blobs on its peers (docs/network.md, "Network blobs and shares" and
"Agreements and slots").

Every blob of the local Provider (stored messages, manifests, camera chunks, the metadata
snapshots) is queued (table offbox, with its sealed digest), then sealed with the storage
key, erasure-coded k of m and sent as m share records, each to a different peer: no peer
ever holds k shares of a blob (one share per peer, enforced), so no peer alone can rebuild
it, and any k peers can. The peers with the most free capacity are chosen first.

A share's placement row is written as 'sending', with the peer's next slot, and committed
before its PUT; the PUT makes it 'placed'. A crash in between is resumed by sending the same
record to the same slot again (sealing is deterministic, and a peer takes the same record in
the same slot again as a no-op). A blob is durable off-box once k shares are placed
(restorable without this gateway) and complete once all m are.

Placement is asynchronous to the ingest, which made each blob durable locally already:
PlacerLoop places in a supervised thread of its own (gateway/health.py) and is only woken by
the ingest, never waited for.

A peer lost (an audit failed, or unreachable past its grace) is replaced: its shares are
rebuilt (from the local copy, else from k shares on the other peers) and placed elsewhere,
the blobs with the fewest good shares first; when it answers again it is told to drop them.
"""
import hashlib
import logging
import threading
import time

from gateway.health import DISK_FULL, Registry, disk_full
from gateway.network import protocol
from gateway.network.client import Clients, PeerError
from gateway.store import erasure
from gateway.store.placements import FAILED, HELD, PLACED, RELEASED, SENDING, Placement
from gateway.store.provider import Unrecoverable

log = logging.getLogger("edgekeep.network")

QUEUE_BATCH = 256          # blobs queued per round
STEP_BATCH = 64            # blobs placed per round
STOP_JOIN = 5              # PlacerLoop.stop: seconds for the loop to finish its step
RECHECK_FULL = 3600        # seconds between asking a full peer whether it has room again
SEEN_EVERY = 60            # seconds between two notes of a peer's good answers
ROOM = 1 << 16             # free bytes a full peer needs again to be active
RETRY_DOWN = 60            # seconds before a peer that did not answer is called again
RETRY_RELEASE = 600        # seconds between two attempts to release slots on a failed peer


def _fmt_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000
    return "%d B" % n  # pragma: no cover


def _peers_word(n):
    return "%d peer%s" % (n, "" if n == 1 else "s")


class Unavailable(Exception):
    """A blob's sealed bytes cannot be had: no local copy and fewer than k shares on peers."""


class _Blob:
    """One blob's sealed bytes and records while it is being placed (memoised)."""

    def __init__(self, off, sealed):
        self.off = off
        self.sealed = sealed
        self._shares = None
        self._records = {}

    def record(self, j):
        if j not in self._records:
            if self._shares is None:
                self._shares = erasure.encode(self.sealed, self.off.k, self.off.m)
            self._records[j] = protocol.make_record(self.off.k, self.off.m, j, self.off.size,
                                                    self.off.sealed, self._shares[j])
        return self._records[j]


class Placer:
    def __init__(self, store, provider, identity, k=2, m=3, clients=None):
        """The placer of a gateway's blobs; no I/O.

        store: a Store (its own connection, for the placer's thread); provider: the local
        Provider over it; identity: the gateway's (gateway/network/identity.py). k, m: the
        network code (network_k, network_m). clients: how to talk to a peer: None (a
        gateway.network.client.PeerClient per peer), a function (name, endpoint) -> client,
        or a mapping name -> client."""
        if not 1 <= k <= m <= 255:
            raise ValueError("the network code needs 1 <= k <= m <= 255 (got k=%d, m=%d)"
                             % (k, m))
        self.store = store
        self.placements = store.placements
        self.provider = provider
        self.identity = identity
        self.k, self.m = k, m
        self._clients = Clients(identity, clients)
        self.lock = threading.RLock()   # one step, replace or release at a time
        self.halt = threading.Event()   # set: step() returns between two blobs
        self._full_checked = {}         # peer -> time.monotonic() of the last look
        self._seen_at = {}              # peer -> time.monotonic() its last answer was noted
        self._gaps = set()              # peers whose slot numbering disagreed (logged once)
        self._down = {}                 # peer -> time.monotonic() it last did not answer
        self._release_tried = {}        # peer -> time.monotonic() of the last release_pending

    # -- peers ---------------------------------------------------------------------------

    def client(self, name, endpoint):
        return self._clients(name, endpoint)

    def _peers(self):
        """{name: peer row (a dict)} of every peer not removed."""
        return {p.name: p._asdict() for p in self.store.peers.all() if p.status != "removed"}

    def _usable(self):
        """{name: [peer row, free bytes]} of the peers a new share may go to: active ones,
        but for those that did not answer in the last RETRY_DOWN seconds."""
        return {name: [p, p["capacity"] - self.placements.bytes_on(name)]
                for name, p in self._peers().items()
                if p["status"] == "active" and not self._is_down(name)}

    def _is_down(self, name):
        at = self._down.get(name)
        return at is not None and time.monotonic() - at < RETRY_DOWN

    # -- queueing ------------------------------------------------------------------------

    def queue_new(self, limit=None):
        """Queue every blob of the local Provider that is not queued yet (up to `limit`); how
        many were queued."""
        with self.lock:
            return self._queue_new(limit)

    def _queue_new(self, limit):
        n = 0
        while limit is None or n < limit:
            batch = QUEUE_BATCH if limit is None else min(QUEUE_BATCH, limit - n)
            digests = self.placements.unqueued(batch)
            if not digests:
                break
            now = time.time()
            for digest in digests:
                try:
                    sealed = self.identity.seal(self.provider.get(digest), digest)
                except (LookupError, Unrecoverable) as e:
                    log.error("blob %s is not readable in the local Provider (%s); not placed "
                              "on peers", digest.hex()[:16], e)
                    sealed = None
                if sealed is not None:
                    self.placements.queue(digest, hashlib.sha256(sealed).digest(), len(sealed),
                                          self.k, self.m, now)
                    n += 1
            if len(digests) < batch or n == 0:
                break
        return n

    # -- placing -------------------------------------------------------------------------

    def step(self, limit=STEP_BATCH):
        """Send the shares left 'sending' (a crash, an unreachable peer) again, then place the
        missing shares of up to `limit` incomplete blobs, oldest first. Returns counts:
        {"placed": shares, "bytes": record bytes sent, "blobs": blobs looked at, "left":
        shares that found no peer this time}."""
        with self.lock:
            stats = {"placed": 0, "bytes": 0, "blobs": 0, "left": 0}
            blocked = self.resend(stats)
            usable = self._usable()
            for off in self.placements.incomplete(limit):
                if self.halt.is_set():
                    break
                stats["blobs"] += 1
                self._place(off, usable, blocked, stats)
            return stats

    def resend(self, stats=None):
        """PUT every 'sending' placement again to its own slot; the peers still not answering
        (none of their later slots can be filled before these)."""
        stats = stats if stats is not None else {"placed": 0, "bytes": 0, "blobs": 0, "left": 0}
        peers = self._peers()
        blocked = set()
        blobs = {}
        for p in self.placements.sending():
            if p.peer in blocked:
                continue
            if self._is_down(p.peer):
                blocked.add(p.peer)
                continue
            peer = peers.get(p.peer)
            if peer is None:        # removed: its slots are of no use any more
                self.placements.set_state(p.peer, p.slot, FAILED)
                continue
            off = self.placements.get(p.digest)
            try:
                if p.digest not in blobs:
                    blobs[p.digest] = self._blob(off, stats)
                record = blobs[p.digest].record(p.idx)
            except Unavailable as e:
                log.error("share %d of blob %s cannot be sent again to %s: %s", p.idx,
                          p.digest.hex()[:16], p.peer[:16], e)
                blocked.add(p.peer)
                continue
            if protocol.leaf(record) != p.leaf:
                log.error("share %d of blob %s rebuilt to other bytes than slot %d of %s holds; "
                          "dropping that slot", p.idx, p.digest.hex()[:16], p.slot, p.peer[:16])
                self.placements.forget(p.peer, p.slot)
                continue
            outcome = self._put(peer, p.slot, record)
            if outcome == "placed":
                self.placements.set_state(p.peer, p.slot, PLACED, time.time())
                self.placements.refresh(p.digest, time.time())
                stats["placed"] += 1
                stats["bytes"] += len(record)
            elif outcome == "blocked":
                blocked.add(p.peer)
            else:                   # refused: the slot is not filled, the share goes elsewhere
                self.placements.forget(p.peer, p.slot)
                if outcome == "gap":
                    blocked.add(p.peer)
        return blocked

    def _place(self, off, usable, blocked, stats, avoid=()):
        """Place the missing shares of one blob; the shares placed."""
        rows = self.placements.of_blob(off.digest)
        have = {p.idx for p in rows if p.state in HELD}
        missing = [j for j in range(off.m) if j not in have]
        if not missing:
            self.placements.refresh(off.digest, time.time())
            return 0
        # A peer holding, or having held, any share of this blob takes no other: never k.
        taken = {p.peer for p in rows if p.state != RELEASED} | set(avoid)
        length = protocol.RECORD.size + -(-off.size // off.k)
        if self._choose(usable, blocked, taken, length) is None:
            stats["left"] += len(missing)     # no peer for it now: not sealed for nothing
            return 0
        try:
            blob = self._blob(off, stats)
        except Unavailable as e:
            log.error("blob %s cannot be placed: %s", off.digest.hex()[:16], e)
            stats["left"] += len(missing)
            return 0
        placed = 0
        for j in missing:
            record = blob.record(j)
            while True:
                choice = self._choose(usable, blocked, taken, len(record))
                if choice is None:
                    stats["left"] += 1
                    break
                outcome = self._send(usable[choice][0], off.digest, j, record)
                if outcome == "placed":
                    usable[choice][1] -= len(record)
                    taken.add(choice)
                    placed += 1
                    stats["placed"] += 1
                    stats["bytes"] += len(record)
                    break
                if outcome == "blocked":
                    blocked.add(choice)
                    taken.add(choice)   # its 'sending' row holds share j: next step
                    break
                if outcome == "gap":
                    blocked.add(choice)
                else:
                    usable.pop(choice, None)    # full or refusing: try another peer
        self.placements.refresh(off.digest, time.time())
        return placed

    @staticmethod
    def _choose(usable, blocked, taken, length):
        """The peer with the most free bytes that may take a share of `length` bytes."""
        best = None
        for name, (_, free) in usable.items():
            if name in blocked or name in taken or free < length:
                continue
            if best is None or (free, name) > (usable[best][1], best):
                best = name
        return best

    def _send(self, peer, digest, j, record):
        """Write share j's placement on peer as 'sending' (committed), PUT it, mark it
        'placed'. "placed", "blocked" (unreachable: the row stays 'sending'), "refused" or
        "gap" (the row is gone, the slot free again)."""
        name = peer["name"]
        with self.store.transaction():
            slot = self.placements.next_slot(name)
            self.placements.add(Placement(name, slot, digest, j, protocol.leaf(record),
                                          len(record), SENDING, None))
        outcome = self._put(peer, slot, record)
        if outcome == "placed":
            self.placements.set_state(name, slot, PLACED, time.time())
        elif outcome in ("refused", "gap"):
            self.placements.forget(name, slot)
        return outcome

    def _put(self, peer, slot, record):
        """PUT one record: "placed", "blocked" (unreachable: tried again later), "gap" (the
        peer's slots and ours disagree: not this peer for now) or "refused" (it will not take
        it: over quota, a bad share)."""
        name = peer["name"]
        try:
            self.client(name, peer["endpoint"]).put_slot(slot, record)
        except PeerError as e:
            return self._refused(peer, slot, e)
        self._seen(peer)
        return "placed"

    def _refused(self, peer, slot, e):
        name, reason = peer["name"], getattr(e, "reason", None)
        detail = getattr(e, "detail", None) or str(e)
        if reason == "over_quota":
            log.warning("peer %s is full (%s): placing on other peers; it is asked again in %d "
                        "s", name[:16], detail, RECHECK_FULL)
            self.store.peers.set_status(name, "full")
            self._full_checked[name] = time.monotonic()
            return "refused"
        if reason in ("unreachable", "wrong_key"):
            self._unreachable(name, "%s: %s" % (reason, detail))
            return "blocked"
        if reason in ("slot_gap", "slot_taken"):
            if name not in self._gaps:
                self._gaps.add(name)
                log.error("peer %s refused slot %d (%s: %s, its next slot %s): its slots and "
                          "ours disagree; placing on other peers", name[:16], slot, reason,
                          detail, getattr(e, "next", "?"))
            return "gap"
        if reason in ("bad_share", "too_large"):
            log.error("peer %s refused slot %d: %s (%s)", name[:16], slot, reason, detail)
            return "refused"
        log.info("peer %s did not take slot %d (%s: %s); tried again later", name[:16], slot,
                 reason, detail)
        return "blocked"    # rate_limited, a server error: passing

    def _unreachable(self, name, detail):
        self._down[name] = time.monotonic()
        self.store.peers.unreachable(name, time.time(), detail[:500])
        log.info("peer %s unreachable (%s); its shares wait for the next round", name[:16],
                 detail)

    def _seen(self, peer):
        """Note a good answer from a peer (at most once a minute unless it was unreachable)."""
        name = peer["name"]
        last = self._seen_at.get(name)
        if (peer.get("unreachable_since") is None and last is not None
                and time.monotonic() - last < SEEN_EVERY):
            return
        self._seen_at[name] = time.monotonic()
        peer["unreachable_since"] = None
        self._gaps.discard(name)
        self._down.pop(name, None)
        self.store.peers.seen(name, time.time())

    # -- a blob's sealed bytes -------------------------------------------------------------

    def _blob(self, off, stats=None, exclude=()):
        return _Blob(off, self._sealed(off, stats, exclude))

    def _sealed(self, off, stats=None, exclude=()):
        """The blob's sealed bytes: sealed from the local Provider's copy, or decoded from k
        shares on peers (not those in `exclude`) when the local copy is gone."""
        if self.provider.has(off.digest):
            try:
                sealed = self.identity.seal(self.provider.get(off.digest), off.digest)
                if hashlib.sha256(sealed).digest() == off.sealed:
                    return sealed
                log.error("blob %s seals to other bytes than when queued (another identity?)",
                          off.digest.hex()[:16])
            except Unrecoverable as e:
                log.warning("blob %s lost locally (%s); rebuilding it from peers",
                            off.digest.hex()[:16], e)
        return self._sealed_from_peers(off, stats, exclude)

    def _sealed_from_peers(self, off, stats, exclude):
        peers = self._peers()
        good = {}
        for p in self.placements.of_blob(off.digest):
            if len(good) == off.k:
                break
            if p.state != PLACED or p.peer in exclude or p.idx in good or p.peer not in peers:
                continue
            try:
                raw = self.client(p.peer, peers[p.peer]["endpoint"]).get_slot(p.slot)
            except PeerError as e:
                raw, why = None, e
            else:
                why = "released, or never filled"
            if raw is None:
                log.warning("share %d of blob %s not read from %s: %s", p.idx,
                            off.digest.hex()[:16], p.peer[:16], why)
                continue
            if stats is not None:
                stats["fetched"] = stats.get("fetched", 0) + len(raw)
            try:
                rec = protocol.parse_record(raw)
            except protocol.Refused:
                rec = None
            if rec is None or protocol.leaf(raw) != p.leaf or rec.index != p.idx:
                log.warning("slot %d of %s does not hold share %d of blob %s", p.slot,
                            p.peer[:16], p.idx, off.digest.hex()[:16])
                continue
            good[p.idx] = rec.body
        if len(good) < off.k:
            raise Unavailable("no local copy and %d good share(s) of %d needed on peers"
                              % (len(good), off.k))
        sealed = erasure.decode(good, off.size, off.k, off.m)
        if hashlib.sha256(sealed).digest() != off.sealed:
            raise Unavailable("the shares on peers decode to other bytes")
        return sealed

    # -- losing a peer -------------------------------------------------------------------------

    def replace(self, peer, reason):
        """Move every share on `peer` (it lost them, failed an audit, or stayed unreachable
        past its grace) to other peers: each is rebuilt (local copy, else k shares from the
        other peers) and placed on a peer holding no share of that blob, the blobs with the
        fewest good shares first. Its placements become 'failed' (release_to tells it to drop
        them when it answers again) and the peer 'failed'. Returns {"peer", "reason", "blobs",
        "shares": placed, "left": shares that found no peer (placed by a later step),
        "bytes_sent", "bytes_fetched", "bytes": both}."""
        with self.lock:
            with self.store.transaction():
                digests = self.placements.mark_failed(peer)
                if self.store.peers.get(peer) is not None:
                    self.store.peers.set_status(peer, "failed")
                now = time.time()
                states = [self.placements.refresh(d, now) for d in digests]
            log.warning("replacing peer %s (%s): %d blob(s) had a share there", peer[:16],
                        reason, len(digests))
            stats = {"placed": 0, "bytes": 0, "blobs": 0, "left": 0, "fetched": 0}
            blocked = self.resend(stats)
            usable = self._usable()
            for s in sorted((s for s in states if s is not None),
                            key=lambda s: (s.placed, s.offbox.queued_at)):
                stats["blobs"] += 1
                self._place(s.offbox, usable, blocked, stats, avoid=(peer,))
            out = {"peer": peer, "reason": reason, "blobs": stats["blobs"],
                   "shares": stats["placed"], "left": stats["left"],
                   "bytes_sent": stats["bytes"], "bytes_fetched": stats["fetched"],
                   "bytes": stats["bytes"] + stats["fetched"]}
            log.warning("peer %s replaced: %d share(s) of %d blob(s) moved (%s sent, %s read "
                        "from peers), %d left for later", peer[:16], out["shares"], out["blobs"],
                        _fmt_bytes(out["bytes_sent"]), _fmt_bytes(out["bytes_fetched"]),
                        out["left"])
            return out

    def release_to(self, peer):
        """Tell a peer that answers again to drop every slot of ours marked failed there
        (DELETE); each becomes 'released'. How many; stops at the first call that does not
        get through (the rest on the next call)."""
        with self.lock:
            row = self.store.peers.get(peer)
            if row is None:
                return 0
            client = self.client(peer, row.endpoint)
            n = 0
            for p in self.placements.of_peer(peer, (FAILED,)):
                try:
                    client.release(p.slot)
                except PeerError as e:
                    if getattr(e, "reason", None) not in ("not_found", "released"):
                        log.info("peer %s: slot %d not released (%s); tried again later",
                                 peer[:16], p.slot, e)
                        break
                self.placements.set_state(peer, p.slot, RELEASED)
                n += 1
            if n:
                self._seen(row._asdict())
                log.info("peer %s dropped %d share(s) of ours it no longer holds for us",
                         peer[:16], n)
            return n

    def forget_deleted(self, limit=QUEUE_BATCH):
        """Blobs the local Provider no longer holds (retention deleted a clip) are forgotten
        off the box too: their shares are released at their peers by release_pending. How
        many blobs."""
        with self.lock:
            orphans = self.placements.orphans(limit)
            with self.store.transaction():
                for digest in orphans:
                    self.placements.drop(digest)
            if orphans:
                log.info("%d blob(s) deleted here: their shares on peers are released",
                         len(orphans))
            return len(orphans)

    def release_pending(self):
        """release_to every peer with failed placements that is not removed, each at most
        every RETRY_RELEASE seconds (a failed peer may well not answer); how many released."""
        n = 0
        peers = self._peers()
        for name in self.placements.peers():
            last = self._release_tried.get(name)
            if name not in peers or (last is not None
                                     and time.monotonic() - last < RETRY_RELEASE):
                continue
            if self.placements.of_peer(name, (FAILED,)):
                self._release_tried[name] = time.monotonic()
                n += self.release_to(name)
        return n

    def recheck_full(self, every=RECHECK_FULL):
        """Ask each full peer (at most every `every` s) whether it has room again: one that
        has ROOM bytes free for us again is active again. The names made active."""
        with self.lock:
            return self._recheck_full(every)

    def _recheck_full(self, every):
        out = []
        for name, p in self._peers().items():
            if p["status"] != "full":
                continue
            last = self._full_checked.get(name)
            if last is not None and time.monotonic() - last < every:
                continue
            self._full_checked[name] = time.monotonic()
            try:
                hello = self.client(name, p["endpoint"]).hello()
            except PeerError:
                continue
            if hello.get("quota", 0) - hello.get("used", 0) >= ROOM:
                self.store.peers.set_status(name, "active")
                out.append(name)
                log.info("peer %s has room again (%s of %s used)", name[:16],
                         _fmt_bytes(hello.get("used", 0)), _fmt_bytes(hello["quota"]))
        return out

    # -- what the peers give -------------------------------------------------------------------

    def survival(self):
        """What the current peers give, in plain words, for `peer list` and the admin page:
        {"peers", "k", "m", "survives", "statement", "not_offbox_blobs", "not_offbox_bytes",
        "durable", "complete"}."""
        peers = [p for p in self._peers().values() if p["status"] in ("active", "full")]
        n, k, m = len(peers), self.k, self.m
        nob = self.placements.not_offbox()
        counts = self.placements.counts()
        if n < k:
            survives = None
            statement = ("with %s, blobs are not restorable without this gateway: pair at least "
                         "%d (k) peers; %d (m) to also survive a peer's loss"
                         % (_peers_word(n), k, m))
        else:
            spare = min(n, m) - k
            if spare == 0:
                survives = "the loss of this gateway"
                statement = ("with %s, blobs survive the loss of this gateway but not of a peer "
                             "as well: pair %d more peer%s (%d, m) to also survive a peer's loss"
                             % (_peers_word(n), m - n, "" if m - n == 1 else "s", m))
            else:
                survives = "the loss of this gateway and %s" % _peers_word(spare)
                statement = "with %s, blobs survive %s" % (_peers_word(n), survives)
            if nob.blobs:
                statement += ("; %d blob(s) (%s) are not yet off-box (being placed)"
                              % (nob.blobs, _fmt_bytes(nob.bytes)))
        return {"peers": n, "k": k, "m": m, "survives": survives, "statement": statement,
                "not_offbox_blobs": nob.blobs, "not_offbox_bytes": nob.bytes,
                "durable": counts["durable"], "complete": counts["complete"]}


class PlacerLoop:
    """The running gateway's placer: queues the Provider's new blobs and places their shares
    continuously, in a supervised thread (gateway/health.py), woken by notify() (a sealed
    epoch, a stored camera chunk) or every `period` seconds."""

    def __init__(self, placer, period=30, health=None, metadata=None, snapshot_every=10):
        """placer: a Placer on a Store of its own (Store.connect: this thread's connection).
        health: the process's gateway.health.Registry. metadata: a
        gateway.network.metadata.Metadata on the placer's store and Provider, whose snapshots
        (at most one every snapshot_every seconds) are placed like any blob and whose catalog
        goes to the peers once they are durable off-box."""
        self.placer = placer
        self.period = period
        self.metadata = metadata
        self.snapshot_every = snapshot_every
        self.last_snapshot = 0.0
        self.lock = threading.RLock()   # held by whoever uses the placer (the remote Keeper too)
        self.wake = threading.Event()
        self._stop = threading.Event()
        registry = health or Registry()
        self.health = registry.component("placer")
        self.thread = registry.thread("placer", self._run, self._stop)
        self.last = None            # the last round's step() counts

    def start(self):
        self.thread.start()
        return self

    def notify(self, *_):
        """Something new to place: never blocks (the ingest calls it)."""
        self.wake.set()

    def stop(self, join=STOP_JOIN):
        self._stop.set()
        self.placer.halt.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(join)
        if self.thread.is_alive():
            log.warning("placer: still busy after %g s; stopping without it", join)
        self.placer.halt.clear()

    def _run(self):
        """One round per wake-up or period; at once again while a round found more to do.
        The disk full is waited out here; anything else escapes to the supervisor."""
        more = True
        while not self._stop.is_set():
            if not more:
                self.wake.wait(self.period)
            self.wake.clear()
            if self._stop.is_set():
                break
            try:
                more = self.round()
            except Exception as e:
                if not disk_full(e):
                    raise
                if self.health.state != "paused":
                    log.warning("placer paused: disk full (%s)", e)
                self.health.pause(DISK_FULL, "disk full: %s" % str(e)[:200])
                more = False
                continue
            self.health.progress()

    def round(self):
        """Snapshot the metadata, queue, place, release, re-check, publish the catalog; True
        if there is more to do at once."""
        with self.lock:
            return self._round()

    def _round(self):
        p = self.placer
        if self.metadata and time.monotonic() - self.last_snapshot >= self.snapshot_every:
            self.last_snapshot = time.monotonic()
            self.metadata.snapshot()
        queued = p.queue_new(QUEUE_BATCH)
        stats = p.step(STEP_BATCH)
        self.last = stats
        p.forget_deleted()
        p.release_pending()
        p.recheck_full()
        more = queued == QUEUE_BATCH or (stats["blobs"] == STEP_BATCH and stats["placed"] > 0)
        if stats["left"] and not stats["placed"]:
            survival = p.survival()
            self.health.alive(survival["statement"])
        if self.metadata:
            self.metadata.publish(lambda peer: p.client(peer.name, peer.endpoint))
        return more
