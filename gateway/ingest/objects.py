"""Objects on the gateway: camera snapshots and clips, reassembled from resumable chunks.

The signed manifest (kind m) is an ordinary message: the ingest verifies, sequence-checks,
stores and seals it into an epoch like any other, and calls `register` in the same
transaction. Chunks (kind c) are not signed: each is accepted only if its SHA-256 is the one
the manifest lists at its index. A chunk's COSE_Encrypt0 is stored content-addressed in the
Provider (gateway/store/provider.py: erasure-coded shares over the storage roots); the gateway
never holds the key that opens it.

A clip's chunks may come before its manifest (the camera sends them while it still records):
from an authenticated device (the broker lets only that device publish under its topic) they
are held pending, in the Provider under their SHA-256 like any chunk, within a budget per
device (PENDING_MAX_BYTES; over it a chunk is refused, `pending_over_budget`) and for at most
PENDING_MAX_AGE without a manifest (then dropped, `pending_expired`). When the manifest comes,
each pending chunk whose hash is the manifest's at its index becomes the object's chunk; any
other is dropped as `bad_chunk`. The rows decide, under the store's write lock, so a chunk and
its manifest may reach different workers in either order.

After each committed batch the ingest calls `publish`: every object touched gets a chunk
ack (the ranges stored) on ek/<device>/down/chunks, and a Frigate-style event on
ek/<device>/event when it starts ("new"), when its last chunk is stored ("end"), and when a
clip's poster is ("update"; gateway/ingest/events.py).

The rows are the store's (gateway/store/objects.py, `store.objects`); the blobs the
Provider's. Both work on the ingest's connection, inside its transaction.
"""
import contextlib
import logging
import time
from collections import Counter

from agent import cbor
from agent.objects import (
    CACK_ID,
    CACK_RANGES,
    CACK_STATE,
    CACK_VERSION,
    COMPLETE,
    HASH_LEN,
    PARTIAL,
    PENDING,
    UNKNOWN,
)
from agent.proto import VERSION, down_topic
from gateway.ingest import events
from gateway.store import provider
from gateway.wire.objects import (
    BAD_CHUNK,
    DUPLICATE_CHUNK,
    MAX_OBJECT_CHUNKS,
    UNKNOWN_OBJECT,
    ranges,
)
from gateway.wire.protocol import Reject

log = logging.getLogger("edgekeep.objects")

STALE_AFTER = 86400                  # s without a chunk before an incomplete object is abandoned
PENDING_MAX_BYTES = 16 * 1024 * 1024  # a device's chunks held before their manifests
PENDING_MAX_AGE = 86400              # s an object's pending chunks wait for its manifest
PENDING_OVER_BUDGET = "pending_over_budget"  # refused: the device's pending budget is full
PENDING_EXPIRED = "pending_expired"  # dropped: its manifest never came in PENDING_MAX_AGE

class _Upload:
    """An object's chunk count inside one ingest transaction, written back by flush()."""

    def __init__(self, count, hashes, stored):
        self.count = count
        self.hashes = hashes
        self.stored = stored
        self.added = 0       # ciphertext bytes stored in this transaction
        self.at = None       # when the last of them was

    def lists(self, index, digest):
        """Whether the manifest lists this chunk hash at this index."""
        return index < self.count and self.hashes[index * HASH_LEN:(index + 1) * HASH_LEN] == digest


class ObjectStore:
    def __init__(self, store, provider, keep_days=30, max_bytes=None,
                 pending_max_bytes=PENDING_MAX_BYTES, pending_max_age=PENDING_MAX_AGE):
        """Objects over a Store and its Provider (provider.Provider.open(store)); no I/O."""
        self.store = store
        self.rows = store.objects
        self.provider = provider
        self.keep_days = keep_days
        self.max_bytes = max_bytes
        self.pending_max_bytes = pending_max_bytes
        self.pending_max_age = pending_max_age
        self.touched = set()             # (device, oid) to ack after the commit
        self.pending_events = []         # (device, type, oid) to publish after the commit
        self.rejects = Counter()         # chunks dropped in this transaction, by reason
        self._uploads = {}               # (device, oid) -> _Upload, in this transaction
        self._pending_bytes = {}         # device -> bytes held pending, in this transaction

    @classmethod
    def open(cls, store, keep_days=30, max_bytes=None):
        """The objects of a Store's data directory, with its Provider."""
        return cls(store, provider.Provider.open(store), keep_days, max_bytes)

    # -- ingest, inside its transaction ------------------------------------------

    def register(self, env, m, now):
        """A new manifest message was stored: its object now awaits its chunks."""
        self.rows.register(env.device, m.oid, env.seq, env.time, m.event, m.type, m.size,
                           m.chunk_size, m.count, m.root, m.hashes, now,
                           m.of.hex() if m.of is not None else None)
        self.pending_events.append((env.device, "new", m.oid))
        self._bind_pending((env.device, m.oid), now)

    def _bind_pending(self, key, now):
        """The chunks held before the manifest become the object's where the manifest lists
        their hash at their index; the others are dropped as bad_chunk."""
        held = self.rows.take_pending(*key)
        if not held:
            return
        self.touched.add(key)
        self._pending_bytes.pop(key[0], None)
        obj = self._upload(key)
        bad = []
        for p in held:
            if not obj.lists(p.idx, p.digest):
                bad.append(p.digest)
                continue
            self.rows.add_chunk(*key, p.idx, p.digest)
            obj.stored += 1
            obj.added += p.bytes
            obj.at = now
        for d in self.rows.unreferenced(bad):
            self.provider.delete(d)
        if bad:
            self.rejects[BAD_CHUNK] += len(bad)
            log.warning("rejected (%s): %d chunk(s) of object %s held before its manifest are "
                        "not in it", BAD_CHUNK, len(bad), key[1])
        if obj.stored == obj.count:
            self.pending_events.append((key[0], "end", key[1]))

    @contextlib.contextmanager
    def savepoint(self):
        """The store's savepoint (store.savepoint()), with this object store's own state: if
        the block raises, the events it queued are forgotten with the rows it wrote."""
        events, rejects = len(self.pending_events), Counter(self.rejects)
        uploads, touched = set(self._uploads), set(self.touched)
        with self.store.savepoint():
            try:
                yield self
            except BaseException:
                del self.pending_events[events:]
                self.rejects = rejects
                for key in set(self._uploads) - uploads:
                    del self._uploads[key]
                self.touched &= touched
                self._pending_bytes.clear()
                raise

    def prepare(self, c):
        """Chunk c with the CPU work of storing it done (its share records): for the ingest's
        verify pool, outside the transaction."""
        if c.data is not None:
            c.records = self.provider.records(c.digest, c.data)
        return c

    def add_chunk(self, c, now):
        """Store one chunk (or note a query); Reject for what must be counted."""
        key = (c.device, c.oid)
        self.touched.add(key)
        obj = self._upload(key)
        if obj is None:
            return self._hold(c, now)
        if c.index is None:
            return
        if not obj.lists(c.index, c.digest):
            raise Reject(BAD_CHUNK, "chunk %d of object %s is not in its signed manifest"
                         % (c.index, c.oid))
        if not self.rows.add_chunk(c.device, c.oid, c.index, c.digest):
            raise Reject(DUPLICATE_CHUNK, "chunk %d of object %s again" % (c.index, c.oid))
        self.provider.put(c.digest, c.data, sync=False, records=c.records)  # flush() before commit
        obj.stored += 1
        obj.added += len(c.data)
        obj.at = now
        if obj.stored == obj.count:
            self.pending_events.append((c.device, "end", c.oid))

    def _hold(self, c, now):
        """A chunk (or a query) of an object whose manifest has not come: held pending within
        the device's budget. A query for an object with nothing held is unknown_object."""
        key = (c.device, c.oid)
        if c.index is None:
            if not self.rows.pending_indexes(*key):
                raise Reject(UNKNOWN_OBJECT, "device %s has no object %s" % key)
            return
        if c.index >= MAX_OBJECT_CHUNKS:
            raise Reject(BAD_CHUNK, "chunk %d of object %s: no object has that many"
                         % (c.index, c.oid))
        held = self._pending_bytes.get(c.device)
        if held is None:
            held = self.rows.pending_bytes(c.device)
        if held + len(c.data) > self.pending_max_bytes:
            raise Reject(PENDING_OVER_BUDGET, "device %s holds %d bytes of chunks without a "
                         "manifest; chunk %d of object %s waits for its manifest"
                         % (c.device, held, c.index, c.oid))
        if not self.rows.hold_pending(c.device, c.oid, c.index, c.digest, len(c.data), now):
            raise Reject(DUPLICATE_CHUNK, "chunk %d of object %s again (pending)"
                         % (c.index, c.oid))
        self.provider.put(c.digest, c.data, sync=False, records=c.records)  # flush() before commit
        self._pending_bytes[c.device] = held + len(c.data)

    def _upload(self, key):
        """The object's row as this transaction has changed it so far; None if none."""
        obj = self._uploads.get(key)
        if obj is None:
            row = self.rows.upload_state(*key)
            if row is not None:
                obj = self._uploads[key] = _Upload(*row)
        return obj

    def flush(self):
        """Write this transaction's chunk counts and make its chunks durable; the ingest
        calls it just before COMMIT."""
        self.rows.set_progress([
            key + (obj.stored, obj.added, obj.at, obj.at if obj.stored == obj.count else None)
            for key, obj in self._uploads.items() if obj.at is not None])
        self._uploads.clear()
        self._pending_bytes.clear()
        self.provider.flush()

    def take_rejects(self):
        """The chunks this transaction dropped, by reason, for the ingest's rejects."""
        counts, self.rejects = self.rejects, Counter()
        return counts

    def discard(self):
        """The transaction rolled back: nothing of it is to be announced."""
        self._uploads.clear()
        self._pending_bytes.clear()
        self.touched.clear()
        self.pending_events.clear()
        self.rejects.clear()

    # -- after the commit ----------------------------------------------------------

    def publish(self, client):
        for device, oid in sorted(self.touched):
            client.publish(down_topic(device, "chunks"), self.chunk_ack(device, oid), qos=1)
        updated = set()  # one "update" a clip a batch: each would say the same
        for device, kind, oid in self.pending_events:
            for event, obj, just in self.frigate_events(device, kind, oid):
                if event == "update" and (device, obj["oid"]) in updated:
                    continue
                updated.add((device, obj["oid"]) if event == "update" else None)
                linked = self.rows.linked(device, [obj["oid"]])
                client.publish(events.topic(device), events.payload(obj, event, linked, just),
                               qos=1)
        self.discard()

    def frigate_events(self, device, kind, oid):
        """[(event type, row, the poster or thumbnail it tells of)] that the feed says of an
        object now "new" or "end": a poster or thumbnail whole is its clip's "update"
        (nothing while the clip is unknown); a clip new with its poster stored already is
        "new" then "update"."""
        obj = self.get(device, oid)
        if obj is None:
            return []
        if obj["parent"] is not None:
            parent = self.get(device, obj["parent"]) if kind == "end" else None
            return [] if parent is None else [("update", parent, oid)]
        if kind == "new" and events.linked_ids(self.rows.linked(device, [oid]))[events.POSTER]:
            return [("new", obj, None), ("update", obj, None)]
        return [(kind, obj, None)]

    def chunk_ack(self, device, oid):
        row = self.rows.upload_state(device, oid)
        if row is None:
            have = self.rows.pending_indexes(device, oid)
            state = PENDING if have else UNKNOWN
        else:
            have = self.rows.chunk_indexes(device, oid)
            state = COMPLETE if row.stored == row.chunks else PARTIAL
        return cbor.dumps({CACK_VERSION: VERSION, CACK_ID: bytes.fromhex(oid),
                           CACK_RANGES: ranges(have), CACK_STATE: state})

    # -- queries ---------------------------------------------------------------------

    def list(self):
        return self.rows.list()

    def get(self, device, oid):
        return self.rows.get(device, oid)

    def find(self, ident):
        """An object by `<oid>` or `<device>-<oid>` (hex)."""
        return self.rows.find(ident)

    def chunks(self, obj):
        """The stored COSE_Encrypt0 of each chunk, in order, each checked against the manifest
        (the Provider checks it against its digest, which the manifest lists)."""
        if obj["stored"] != obj["count"]:
            raise ValueError("object %s has %d of %d chunks" % (obj["oid"], obj["stored"],
                                                                 obj["count"]))
        for i in range(obj["count"]):
            try:
                yield self.provider.get(obj["hashes"][i * HASH_LEN:(i + 1) * HASH_LEN])
            except provider.Unrecoverable as e:
                raise ValueError("chunk %d of object %s is lost: %s" % (i, obj["oid"], e))

    # -- retention ---------------------------------------------------------------------

    def _drop_expired(self, now):
        """Drop the pending chunks of objects whose manifest has not come in pending_max_age
        (counted as pending_expired), and their blobs."""
        dropped = self.rows.drop_expired(now - self.pending_max_age)
        if not dropped:
            return
        for d in self.rows.unreferenced(r.digest for r in dropped):
            self.provider.delete(d)
        self.store.add_rejects({PENDING_EXPIRED: len(dropped)})
        log.warning("dropped %d chunk(s) of %d object(s) whose manifest never came in %d s",
                    len(dropped), len({(r.device, r.oid) for r in dropped}),
                    self.pending_max_age)

    def retain(self, now=None):
        """Delete objects older than keep_days, then the oldest until under max_bytes.

        An object still being uploaded (incomplete, a chunk within STALE_AFTER) is never
        deleted. The manifest message stays: epochs and their proofs need it.
        """
        now = time.time() if now is None else now
        with self.store.transaction():
            self._drop_expired(now)
            rows = self.rows.retention_candidates(now - STALE_AFTER)
            total = self.rows.total_bytes()
            doomed = []
            for device, oid, t, size in rows:
                too_old = self.keep_days is not None and t < now - self.keep_days * 86400
                if too_old or (self.max_bytes is not None and total > self.max_bytes):
                    doomed.append((device, oid))
                    total -= size
            for key in doomed:
                for d in self.rows.delete(*key):  # the chunks no other object shares
                    self.provider.delete(d)
        if doomed:
            self.provider.compact()  # gives the deleted chunks' disk space back
            log.info("retention deleted %d object(s)", len(doomed))
        return doomed
