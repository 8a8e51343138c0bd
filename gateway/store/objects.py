"""The rows of camera objects and their chunks (tables objects, object_chunks), and of the
chunks held before their object's manifest came (pending_chunks: a clip still recording).

The upload logic is the ingest's (gateway/ingest/objects.py); this is what it reads and
writes, on the Store's connection (`store.objects`), inside the caller's transaction if any.
"""

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

COLUMNS = ("device", "oid", "seq", "time", "event", "type", "size", "chunk_size", "count", "root",
           "hashes", "stored", "bytes", "created_at", "updated_at", "completed_at", "parent")

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


class Pending(NamedTuple):
    """A chunk held before its object's manifest: its index, SHA-256 and ciphertext bytes."""
    idx: int
    digest: bytes
    bytes: int


class Expired(NamedTuple):
    """A pending chunk whose manifest never came in time."""
    device: str
    oid: str
    idx: int
    digest: bytes


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
                 hashes: bytes, now: float, parent: str | None = None) -> None:
        """A new object, awaiting its chunks; nothing if (device, oid) is known already.
        parent: the hex id of the object it belongs to (a clip's poster), if any."""
        self.db.execute(
            "INSERT INTO objects (device, oid, seq, time, event, type, size, chunk_size, count, "
            "root, hashes, created_at, updated_at, parent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device, oid, seq, time, event, type, size, chunk_size, count, root, hashes, now, now,
             parent))

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

    # -- pending chunks: before the manifest ---------------------------------------------

    def hold_pending(self, device: str, oid: str, idx: int, digest: bytes, nbytes: int,
                     now: float) -> bool:
        """Hold a chunk of an object whose manifest has not come; False if one is held at
        that index already (the first stays)."""
        return self.db.execute("INSERT INTO pending_chunks (device, oid, idx, digest, bytes, "
                               "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (device, oid, idx, digest, nbytes, now)).rowcount == 1

    def pending_bytes(self, device: str) -> int:
        """The ciphertext bytes held pending for a device, all its objects together."""
        total: int = self.db.execute("SELECT coalesce(sum(bytes), 0) FROM pending_chunks "
                                     "WHERE device = ?", (device,)).fetchone()[0]
        return total

    def pending_indexes(self, device: str, oid: str) -> Indexes:
        """The indexes of the object's pending chunks, ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT idx FROM pending_chunks WHERE device = ? AND oid = ? ORDER BY idx",
            (device, oid))]

    def take_pending(self, device: str, oid: str) -> list[Pending]:
        """The object's pending chunks, no longer pending (its manifest came)."""
        rows = [Pending._make(r) for r in self.db.execute(
            "SELECT idx, digest, bytes FROM pending_chunks WHERE device = ? AND oid = ? "
            "ORDER BY idx", (device, oid))]
        if rows:
            self.db.execute("DELETE FROM pending_chunks WHERE device = ? AND oid = ?",
                            (device, oid))
        return rows

    def drop_expired(self, before: float) -> list[Expired]:
        """Forget the pending chunks of every object with none received at or after
        `before`; what was dropped."""
        rows = [Expired._make(r) for r in self.db.execute(
            "SELECT device, oid, idx, digest FROM pending_chunks p WHERE NOT EXISTS ("
            "SELECT 1 FROM pending_chunks q WHERE q.device = p.device AND q.oid = p.oid "
            "AND q.received_at >= ?)", (before,))]
        self.db.executemany("DELETE FROM pending_chunks WHERE device = ? AND oid = ? AND idx = ?",
                            [(r.device, r.oid, r.idx) for r in rows])
        return rows

    def unreferenced(self, digests: Iterable[bytes]) -> Digests:
        """Those of digests that no object's chunk and no pending chunk is (blobs to delete)."""
        return [d for d in dict.fromkeys(digests)
                if not self.db.execute("SELECT 1 FROM object_chunks WHERE digest = ?",
                                       (d,)).fetchone()
                and not self.db.execute("SELECT 1 FROM pending_chunks WHERE digest = ?",
                                        (d,)).fetchone()]

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
        return self._rows("SELECT %s FROM objects WHERE device = ? ORDER BY time DESC, seq DESC "
                          "LIMIT ?" % ", ".join(_columns(columns)), (device, limit))

    # -- events: the objects that are not another's poster or thumbnail ----------------

    def events(self, device: str | None, since: float | None, until: float | None,
               limit: int, columns: Sequence[str] = COLUMNS) -> Rows:
        """Objects without a parent (snapshots, clips), newest first: one camera's or every
        one's, captured in [since, until) where given."""
        where, args = _range("", device, since, until)
        where.append("parent IS NULL")
        return self._rows("SELECT %s FROM objects WHERE %s ORDER BY time DESC, seq DESC LIMIT ?"
                          % (", ".join(_columns(columns)), " AND ".join(where)), args + [limit])

    def linked(self, device: str, parents: Sequence[str],
               columns: Sequence[str] = COLUMNS) -> Rows:
        """The objects that belong to these (their posters and thumbnails), oldest first."""
        if not parents:
            return []
        return self._rows("SELECT %s FROM objects WHERE device = ? AND parent IN (%s) "
                          "ORDER BY time, seq" % (", ".join(_columns(columns)),
                                                  ", ".join("?" * len(parents))),
                          [device, *parents])

    def orphans(self, device: str | None, since: float | None, until: float | None,
                limit: int, columns: Sequence[str] = COLUMNS) -> Rows:
        """Posters and thumbnails whose parent is not in (yet), newest first: one camera's
        or every one's, captured in [since, until) where given."""
        where, args = _range("o.", device, since, until)
        where += ["o.parent IS NOT NULL", "NOT EXISTS (SELECT 1 FROM objects p "
                  "WHERE p.device = o.device AND p.oid = o.parent)"]
        return self._rows("SELECT %s FROM objects o WHERE %s ORDER BY o.time DESC, o.seq DESC "
                          "LIMIT ?" % (", ".join("o." + c for c in _columns(columns)),
                                       " AND ".join(where)), args + [limit])

    def updated_since(self, t: float, columns: Sequence[str] = COLUMNS) -> Rows:
        """Objects whose upload moved (registered, a chunk stored) at or after t."""
        return self._rows("SELECT %s FROM objects WHERE updated_at >= ? ORDER BY updated_at"
                          % ", ".join(_columns(columns)), (t,))

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
        return self.unreferenced(digests)


def _columns(columns: Sequence[str]) -> Sequence[str]:
    """columns, if each is one of the table's (they are put into SQL as they are)."""
    bad = set(columns) - set(COLUMNS)
    if bad:
        raise ValueError("no object column(s) %s" % ", ".join(sorted(bad)))
    return columns


def _range(prefix: str, device: str | None, since: float | None,
           until: float | None) -> tuple[list[str], list[Any]]:
    """WHERE conditions and their arguments: one device's, captured in [since, until)."""
    where, args = [], []
    for cond, value in (("device = ?", device), ("time >= ?", since), ("time < ?", until)):
        if value is not None:
            where.append(prefix + cond)
            args.append(value)
    return where, args
