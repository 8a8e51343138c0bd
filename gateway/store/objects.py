"""The rows of camera objects and their chunks (tables objects, object_chunks).

The upload logic is the ingest's (gateway/ingest/objects.py); this is what it reads and
writes, on the Store's connection (`store.objects`), inside the caller's transaction if any.
"""

COLUMNS = ("device", "oid", "seq", "time", "event", "type", "size", "chunk_size", "count", "root",
           "hashes", "stored", "bytes", "created_at", "updated_at", "completed_at")


class Objects:
    def __init__(self, db):
        self.db = db

    def _rows(self, sql, args=()):
        cur = self.db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    # -- uploads -------------------------------------------------------------------

    def register(self, device, oid, seq, time, event, type, size, chunk_size, count, root,
                 hashes, now):
        """A new object, awaiting its chunks; nothing if (device, oid) is known already."""
        self.db.execute(
            "INSERT INTO objects (device, oid, seq, time, event, type, size, chunk_size, count, "
            "root, hashes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (device, oid, seq, time, event, type, size, chunk_size, count, root, hashes, now, now))

    def upload_state(self, device, oid):
        """(chunk count, chunk hashes, chunks stored) of an object, or None."""
        return self.db.execute("SELECT count, hashes, stored FROM objects "
                               "WHERE device = ? AND oid = ?", (device, oid)).fetchone()

    def add_chunk(self, device, oid, idx, digest):
        """Note chunk idx as stored; False if it was already."""
        return self.db.execute("INSERT OR IGNORE INTO object_chunks (device, oid, idx, digest) "
                               "VALUES (?, ?, ?, ?)", (device, oid, idx, digest)).rowcount == 1

    def set_progress(self, rows):
        """rows: [(device, oid, chunks stored, bytes added, updated_at, completed_at or None)]."""
        self.db.executemany("UPDATE objects SET stored = ?, bytes = bytes + ?, updated_at = ?, "
                            "completed_at = ? WHERE device = ? AND oid = ?",
                            [(stored, added, at, done, device, oid)
                             for device, oid, stored, added, at, done in rows])

    def chunk_indexes(self, device, oid):
        """The indexes of the object's stored chunks, ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT idx FROM object_chunks WHERE device = ? AND oid = ? ORDER BY idx",
            (device, oid))]

    def has_chunk(self, device, oid, idx):
        return self.db.execute("SELECT 1 FROM object_chunks WHERE device = ? AND oid = ? "
                               "AND idx = ?", (device, oid, idx)).fetchone() is not None

    # -- queries ---------------------------------------------------------------------

    def list(self):
        return self._rows("SELECT * FROM objects ORDER BY time, created_at, seq")

    def get(self, device, oid):
        rows = self._rows("SELECT * FROM objects WHERE device = ? AND oid = ?", (device, oid))
        return rows[0] if rows else None

    def find(self, ident):
        """An object by `<oid>` or `<device>-<oid>` (hex); KeyError if none or ambiguous."""
        device, _, oid = ident.lower().rpartition("-")
        if device:
            rows = self._rows("SELECT * FROM objects WHERE oid = ? AND device = ?", (oid, device))
        else:
            rows = self._rows("SELECT * FROM objects WHERE oid = ?", (oid,))
        if len(rows) != 1:
            raise KeyError("no object %s" % ident if not rows else
                           "object id %s is ambiguous: give <device>-<oid>" % ident)
        return rows[0]

    def recent(self, device, limit, columns=COLUMNS):
        """A device's newest objects, newest first, with these columns."""
        bad = set(columns) - set(COLUMNS)
        if bad:
            raise ValueError("no object column(s) %s" % ", ".join(sorted(bad)))
        return self._rows("SELECT %s FROM objects WHERE device = ? ORDER BY time DESC, seq DESC "
                          "LIMIT ?" % ", ".join(columns), (device, limit))

    # -- retention (in the caller's transaction) -------------------------------------

    def retention_candidates(self, stale_before):
        """[(device, oid, capture time, bytes)] of the objects retention may delete: complete,
        or without a chunk since stale_before; oldest first."""
        return self.db.execute(
            "SELECT device, oid, time, bytes FROM objects "
            "WHERE completed_at IS NOT NULL OR updated_at < ? ORDER BY time, created_at, seq",
            (stale_before,)).fetchall()

    def total_bytes(self):
        return self.db.execute("SELECT coalesce(sum(bytes), 0) FROM objects").fetchone()[0]

    def delete(self, device, oid):
        """Forget an object and its chunks; the digests of its chunks that no other object
        holds (the blobs to delete)."""
        key = (device, oid)
        digests = [r[0] for r in self.db.execute(
            "SELECT digest FROM object_chunks WHERE device = ? AND oid = ?", key)]
        self.db.execute("DELETE FROM object_chunks WHERE device = ? AND oid = ?", key)
        self.db.execute("DELETE FROM objects WHERE device = ? AND oid = ?", key)
        return [d for d in dict.fromkeys(digests)
                if not self.db.execute("SELECT 1 FROM object_chunks WHERE digest = ?",
                                       (d,)).fetchone()]
