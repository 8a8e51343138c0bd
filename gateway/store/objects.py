"""The rows of camera objects and their chunks (tables objects, object_chunks).

The upload logic is the ingest's (gateway/ingest/objects.py); this is what it reads and
writes, on the Store's connection (`store.objects`), inside the caller's transaction if any.
"""

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

COLUMNS = ("device", "oid", "seq", "time", "event", "type", "size", "chunk_size", "count", "root",
           "hashes", "stored", "bytes", "created_at", "updated_at", "completed_at")

# The row shapes, named here: inside class Objects, `list` is its method.
Row = dict[str, Any]                   # an objects row, by column name
Rows = list[Row]
Indexes = list[int]
Digests = list[bytes]
# (device, oid, chunks stored, bytes added, updated_at, completed_at or None)
Progress = tuple[str, str, int, int, float, float | None]


class UploadState(NamedTuple):
    """An object's upload: its chunk count, chunk hashes (32 bytes each), chunks stored."""
    chunks: int  # the count column
    hashes: bytes
    stored: int


class Candidate(NamedTuple):
    """An object retention may delete: device, oid, capture time, bytes stored."""
    device: str
    oid: str
    time: int
    bytes: int


Candidates = list[Candidate]


class Objects:
    def __init__(self, db: Connection) -> None:
        self.db = db

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        cur = self.db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    # -- uploads -------------------------------------------------------------------

    def register(self, device: str, oid: str, seq: int, time: int, event: str | None,
                 type: str | None, size: int, chunk_size: int, count: int, root: bytes,
                 hashes: bytes, now: float) -> None:
        """A new object, awaiting its chunks; nothing if (device, oid) is known already."""
        self.db.execute(
            "INSERT INTO objects (device, oid, seq, time, event, type, size, chunk_size, count, "
            "root, hashes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (device, oid, seq, time, event, type, size, chunk_size, count, root, hashes, now, now))

    def upload_state(self, device: str, oid: str) -> UploadState | None:
        """(chunk count, chunk hashes, chunks stored) of an object, or None."""
        row = self.db.execute(
            "SELECT count, hashes, stored FROM objects "
            "WHERE device = ? AND oid = ?", (device, oid)).fetchone()
        return None if row is None else UploadState._make(row)

    def add_chunk(self, device: str, oid: str, idx: int, digest: bytes) -> bool:
        """Note chunk idx as stored; False if it was already."""
        return self.db.execute("INSERT INTO object_chunks (device, oid, idx, digest) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (device, oid, idx, digest)).rowcount == 1

    def set_progress(self, rows: Iterable[Progress]) -> None:
        """rows: [(device, oid, chunks stored, bytes added, updated_at, completed_at or None)]."""
        self.db.executemany("UPDATE objects SET stored = ?, bytes = bytes + ?, updated_at = ?, "
                            "completed_at = ? WHERE device = ? AND oid = ?",
                            [(stored, added, at, done, device, oid)
                             for device, oid, stored, added, at, done in rows])

    def chunk_indexes(self, device: str, oid: str) -> Indexes:
        """The indexes of the object's stored chunks, ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT idx FROM object_chunks WHERE device = ? AND oid = ? ORDER BY idx",
            (device, oid))]

    def has_chunk(self, device: str, oid: str, idx: int) -> bool:
        return self.db.execute("SELECT 1 FROM object_chunks WHERE device = ? AND oid = ? "
                               "AND idx = ?", (device, oid, idx)).fetchone() is not None

    # -- queries ---------------------------------------------------------------------

    def list(self) -> Rows:
        return self._rows("SELECT * FROM objects ORDER BY time, created_at, seq")

    def get(self, device: str, oid: str) -> Row | None:
        rows = self._rows("SELECT * FROM objects WHERE device = ? AND oid = ?", (device, oid))
        return rows[0] if rows else None

    def find(self, ident: str) -> Row:
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

    def recent(self, device: str, limit: int, columns: Sequence[str] = COLUMNS) -> Rows:
        """A device's newest objects, newest first, with these columns."""
        bad = set(columns) - set(COLUMNS)
        if bad:
            raise ValueError("no object column(s) %s" % ", ".join(sorted(bad)))
        return self._rows("SELECT %s FROM objects WHERE device = ? ORDER BY time DESC, seq DESC "
                          "LIMIT ?" % ", ".join(columns), (device, limit))

    # -- retention (in the caller's transaction) -------------------------------------

    def retention_candidates(self, stale_before: float) -> Candidates:
        """[(device, oid, capture time, bytes)] of the objects retention may delete: complete,
        or without a chunk since stale_before; oldest first."""
        return [Candidate._make(r) for r in self.db.execute(
            "SELECT device, oid, time, bytes FROM objects "
            "WHERE completed_at IS NOT NULL OR updated_at < ? ORDER BY time, created_at, seq",
            (stale_before,))]

    def total_bytes(self) -> int:
        total: int = self.db.execute("SELECT coalesce(sum(bytes), 0) FROM objects").fetchone()[0]
        return total

    def delete(self, device: str, oid: str) -> Digests:
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
