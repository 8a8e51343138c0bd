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
"""
import logging
import time

import cbor2

from agent.objects import (CACK_ID, CACK_RANGES, CACK_STATE, CACK_VERSION, COMPLETE, HASH_LEN,
                           PARTIAL, UNKNOWN)
from agent.proto import VERSION, down_topic
from gateway.ingest import events
from gateway.store import database as store
from gateway.store import provider
from gateway.wire.objects import BAD_CHUNK, DUPLICATE_CHUNK, UNKNOWN_OBJECT, ranges
from gateway.wire.protocol import Reject

log = logging.getLogger("edgekeep.objects")

STALE_AFTER = 86400                  # s without a chunk before an incomplete object is abandoned

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    device TEXT NOT NULL,
    oid TEXT NOT NULL,               -- hex object id
    seq INTEGER NOT NULL,            -- the manifest's message sequence
    time INTEGER NOT NULL,           -- capture time (Unix s)
    event TEXT,
    type TEXT,
    size INTEGER NOT NULL,           -- plaintext bytes
    chunk_size INTEGER NOT NULL,
    count INTEGER NOT NULL,          -- chunks
    root BLOB NOT NULL,              -- Merkle root of the chunk hashes
    hashes BLOB NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, -- ciphertext bytes stored
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    completed_at REAL,
    PRIMARY KEY (device, oid)
);
CREATE TABLE IF NOT EXISTS object_chunks (
    device TEXT NOT NULL,
    oid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (device, oid, idx)
);
CREATE INDEX IF NOT EXISTS object_chunks_digest ON object_chunks (digest);
"""


class _Upload:
    """An object's chunk count inside one ingest transaction, written back by flush()."""

    def __init__(self, count, hashes, stored):
        self.count = count
        self.hashes = hashes
        self.stored = stored
        self.added = 0       # ciphertext bytes stored in this transaction
        self.at = None       # when the last of them was


class ObjectStore:
    def __init__(self, data_dir, db=None, keep_days=30, max_bytes=None):
        self.data_dir = data_dir
        self.db = db or store.connect(data_dir)
        self.db.executescript(SCHEMA)
        self.provider = provider.Provider(data_dir, self.db)
        self.keep_days = keep_days
        self.max_bytes = max_bytes
        self.touched = set()             # (device, oid) to ack after the commit
        self.pending_events = []         # (device, type, oid) to publish after the commit
        self._uploads = {}               # (device, oid) -> _Upload, in this transaction

    # -- ingest, inside its transaction ------------------------------------------

    def register(self, env, m, now):
        """A new manifest message was stored: its object now awaits its chunks."""
        self.db.execute(
            "INSERT INTO objects (device, oid, seq, time, event, type, size, chunk_size, count, "
            "root, hashes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (env.device, m.oid, env.seq, env.time, m.event, m.type, m.size, m.chunk_size,
             m.count, m.root, m.hashes, now, now))
        self.pending_events.append((env.device, "new", m.oid))

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
        if not self.db.execute("INSERT OR IGNORE INTO object_chunks (device, oid, idx, digest) "
                               "VALUES (?, ?, ?, ?)", key + (c.index, c.digest)).rowcount:
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
            row = self.db.execute("SELECT count, hashes, stored FROM objects "
                                  "WHERE device = ? AND oid = ?", key).fetchone()
            if row is not None:
                obj = self._uploads[key] = _Upload(*row)
        return obj

    def flush(self):
        """Write this transaction's chunk counts and make its chunks durable; the ingest
        calls it just before COMMIT."""
        for key, obj in self._uploads.items():
            if obj.at is not None:
                done = obj.at if obj.stored == obj.count else None
                self.db.execute("UPDATE objects SET stored = ?, bytes = bytes + ?, "
                                "updated_at = ?, completed_at = ? WHERE device = ? AND oid = ?",
                                (obj.stored, obj.added, obj.at, done) + key)
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
        row = self.db.execute("SELECT count, stored FROM objects WHERE device = ? AND oid = ?",
                              (device, oid)).fetchone()
        have = [r[0] for r in self.db.execute(
            "SELECT idx FROM object_chunks WHERE device = ? AND oid = ? ORDER BY idx",
            (device, oid))]
        state = UNKNOWN if row is None else COMPLETE if row[1] == row[0] else PARTIAL
        return cbor2.dumps({CACK_VERSION: VERSION, CACK_ID: bytes.fromhex(oid),
                            CACK_RANGES: ranges(have), CACK_STATE: state})

    # -- queries ---------------------------------------------------------------------

    def list(self):
        cur = self.db.execute("SELECT * FROM objects ORDER BY time, created_at, seq")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur]

    def get(self, device, oid):
        cur = self.db.execute("SELECT * FROM objects WHERE device = ? AND oid = ?", (device, oid))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def find(self, ident):
        """An object by `<oid>` or `<device>-<oid>` (hex)."""
        device, _, oid = ident.rpartition("-")
        rows = [o for o in self.list() if o["oid"] == oid.lower()
                and (not device or o["device"] == device.lower())]
        if len(rows) != 1:
            raise KeyError("no object %s" % ident if not rows else
                           "object id %s is ambiguous: give <device>-<oid>" % ident)
        return rows[0]

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
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT device, oid, time, bytes FROM objects "
                "WHERE completed_at IS NOT NULL OR updated_at < ? ORDER BY time, created_at, seq",
                (now - STALE_AFTER,)).fetchall()
            total = db.execute("SELECT coalesce(sum(bytes), 0) FROM objects").fetchone()[0]
            doomed = []
            for device, oid, t, size in rows:
                too_old = self.keep_days is not None and t < now - self.keep_days * 86400
                if too_old or (self.max_bytes is not None and total > self.max_bytes):
                    doomed.append((device, oid))
                    total -= size
            for key in doomed:
                digests = [r[0] for r in db.execute(
                    "SELECT digest FROM object_chunks WHERE device = ? AND oid = ?", key)]
                db.execute("DELETE FROM object_chunks WHERE device = ? AND oid = ?", key)
                db.execute("DELETE FROM objects WHERE device = ? AND oid = ?", key)
                for d in digests:  # unless another object shares the chunk
                    if not db.execute("SELECT 1 FROM object_chunks WHERE digest = ?",
                                      (d,)).fetchone():
                        self.provider.delete(d)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if doomed:
            self.provider.compact()  # gives the deleted chunks' disk space back
            log.info("retention deleted %d object(s)", len(doomed))
        return doomed
