"""Objects on the gateway: camera snapshots and clips, reassembled from resumable chunks.

The signed manifest (kind m) is an ordinary message: the ingest verifies, sequence-checks,
stores and seals it into an epoch like any other, and calls `register` in the same
transaction. Chunks (kind c) are not signed: each is accepted only if its SHA-256 is the one
the manifest lists at its index. A chunk's COSE_Encrypt0 is stored content-addressed in the
Provider (gateway/store/provider.py: erasure-coded shares over the storage roots); the gateway
never holds the key that opens it.

After each committed batch the ingest calls `publish`: every object touched gets a chunk
ack (the ranges stored) on ek/<device>/down/chunks, and a Frigate-style event on
ek/<device>/event when it starts ("new") and when its last chunk is stored ("end").

The rows are the store's (gateway/store/objects.py, `store.objects`); the blobs the
Provider's. Both work on the ingest's connection, inside its transaction.
"""
import contextlib
import logging
import time

from agent import cbor
from agent.objects import (
    CACK_ID,
    CACK_RANGES,
    CACK_STATE,
    CACK_VERSION,
    COMPLETE,
    HASH_LEN,
    PARTIAL,
    UNKNOWN,
)
from agent.proto import VERSION, down_topic
from gateway.ingest import events
from gateway.store import provider
from gateway.wire.objects import BAD_CHUNK, DUPLICATE_CHUNK, UNKNOWN_OBJECT, ranges
from gateway.wire.protocol import Reject

log = logging.getLogger("edgekeep.objects")

STALE_AFTER = 86400                  # s without a chunk before an incomplete object is abandoned

class _Upload:
    """An object's chunk count inside one ingest transaction, written back by flush()."""

    def __init__(self, count, hashes, stored):
        self.count = count
        self.hashes = hashes
        self.stored = stored
        self.added = 0       # ciphertext bytes stored in this transaction
        self.at = None       # when the last of them was


class ObjectStore:
    def __init__(self, store, provider, keep_days=30, max_bytes=None):
        """Objects over a Store and its Provider (provider.Provider.open(store)); no I/O."""
        self.store = store
        self.rows = store.objects
        self.provider = provider
        self.keep_days = keep_days
        self.max_bytes = max_bytes
        self.touched = set()             # (device, oid) to ack after the commit
        self.pending_events = []         # (device, type, oid) to publish after the commit
        self._uploads = {}               # (device, oid) -> _Upload, in this transaction

    @classmethod
    def open(cls, store, keep_days=30, max_bytes=None):
        """The objects of a Store's data directory, with its Provider."""
        return cls(store, provider.Provider.open(store), keep_days, max_bytes)

    # -- ingest, inside its transaction ------------------------------------------

    def register(self, env, m, now):
        """A new manifest message was stored: its object now awaits its chunks."""
        self.rows.register(env.device, m.oid, env.seq, env.time, m.event, m.type, m.size,
                           m.chunk_size, m.count, m.root, m.hashes, now)
        self.pending_events.append((env.device, "new", m.oid))

    @contextlib.contextmanager
    def savepoint(self):
        """The store's savepoint (store.savepoint()), with this object store's own state: if
        the block raises, the events it queued are forgotten with the rows it wrote."""
        events = len(self.pending_events)
        with self.store.savepoint():
            try:
                yield self
            except BaseException:
                del self.pending_events[events:]
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
            raise Reject(UNKNOWN_OBJECT, "device %s has no object %s" % key)
        if c.index is None:
            return
        if c.index >= obj.count or (obj.hashes[c.index * HASH_LEN:(c.index + 1) * HASH_LEN]
                                    != c.digest):
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
        self.provider.flush()

    def discard(self):
        """The transaction rolled back: nothing of it is to be announced."""
        self._uploads.clear()
        self.touched.clear()
        self.pending_events.clear()

    # -- after the commit ----------------------------------------------------------

    def publish(self, client):
        for device, oid in sorted(self.touched):
            client.publish(down_topic(device, "chunks"), self.chunk_ack(device, oid), qos=1)
        for device, kind, oid in self.pending_events:
            client.publish(events.topic(device), events.payload(self.get(device, oid), kind), qos=1)
        self.discard()

    def chunk_ack(self, device, oid):
        row = self.rows.upload_state(device, oid)
        have = self.rows.chunk_indexes(device, oid)
        state = UNKNOWN if row is None else COMPLETE if row.stored == row.chunks else PARTIAL
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

    def retain(self, now=None):
        """Delete objects older than keep_days, then the oldest until under max_bytes.

        An object still being uploaded (incomplete, a chunk within STALE_AFTER) is never
        deleted. The manifest message stays: epochs and their proofs need it.
        """
        now = time.time() if now is None else now
        with self.store.transaction():
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
