"""The Provider's rows: the blobs it holds and where each of their shares is (tables blobs,
shares).

The erasure code and the pack files are the Provider's (gateway/store/provider.py); this is
what it reads and writes, on the Store's connection (`store.blobs`), inside the caller's
transaction if any.
"""

from collections.abc import Iterable
from typing import NamedTuple

from gateway.store.dialect import Connection


class Blob(NamedTuple):
    """How a blob is coded: its size in bytes, cut into m shares of which any k rebuild it."""
    size: int
    k: int
    m: int


class Location(NamedTuple):
    """Where a share's record is: pack file name (in the share's root), offset, length."""
    pack: str
    offset: int
    length: int


class PackedShare(NamedTuple):
    """A share whose record is in a given pack: blob digest, share index, offset, length."""
    digest: bytes
    idx: int
    offset: int
    length: int


ShareRow = tuple[bytes, int, str, int, int]   # (digest, share index, pack, offset, length)
# (new pack, new offset, digest, share index, old pack): a record copied by compaction
Move = tuple[str, int, bytes, int, str]


class Blobs:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- blobs -------------------------------------------------------------------------

    def add(self, digest: bytes, size: int, k: int, m: int, stored_at: float) -> bool:
        """A new blob, coded k of m; False (and nothing written) if it is held already."""
        return bool(self.db.execute("INSERT INTO blobs (digest, size, k, m, stored_at) "
                                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                    (digest, size, k, m, stored_at)).rowcount)

    def get(self, digest: bytes) -> Blob | None:
        """(size, k, m) of a blob, or None if it is not held."""
        row = self.db.execute("SELECT size, k, m FROM blobs WHERE digest = ?",
                              (digest,)).fetchone()
        return None if row is None else Blob._make(row)

    def delete(self, digest: bytes) -> None:
        """Forget a blob and where its shares are."""
        self.db.execute("DELETE FROM shares WHERE digest = ?", (digest,))
        self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))

    def digests(self) -> list[bytes]:
        """The digests of every blob held, oldest first."""
        return [r[0] for r in self.db.execute("SELECT digest FROM blobs ORDER BY rowid")]

    # -- shares ------------------------------------------------------------------------

    def add_shares(self, rows: Iterable[ShareRow]) -> None:
        """rows: [(digest, share index, pack, offset, length)], each replacing the share's
        previous location, if any."""
        self.db.executemany('INSERT INTO shares (digest, idx, pack, "offset", length) '
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest, idx) DO UPDATE SET "
                            'pack = excluded.pack, "offset" = excluded."offset", '
                            "length = excluded.length", rows)

    def location(self, digest: bytes, idx: int) -> Location | None:
        """(pack, offset, length) of share idx of a blob, or None."""
        row = self.db.execute(
            'SELECT pack, "offset", length FROM shares WHERE digest = ? AND idx = ?',
            (digest, idx)).fetchone()
        return None if row is None else Location._make(row)

    def root_used(self, root: int, roots: int) -> bool:
        """Whether any share is in root `root` of `roots` (share j is in root j % roots)."""
        return self.db.execute("SELECT 1 FROM shares WHERE idx % ? = ? LIMIT 1",
                               (roots, root)).fetchone() is not None

    # -- compaction --------------------------------------------------------------------

    def live_bytes(self, pack: str) -> int:
        """The bytes of the share records a pack still holds."""
        live: int = self.db.execute("SELECT coalesce(sum(length), 0) FROM shares "
                                    "WHERE pack = ?", (pack,)).fetchone()[0]
        return live

    def in_pack(self, pack: str) -> list[PackedShare]:
        """[(digest, share index, offset, length)] of the shares whose record is in a pack."""
        return [PackedShare._make(r) for r in self.db.execute(
            'SELECT digest, idx, "offset", length FROM shares WHERE pack = ?', (pack,))]

    def move_shares(self, moves: Iterable[Move]) -> None:
        """moves: [(new pack, new offset, digest, share index, old pack)]; a share no longer
        in its old pack (rewritten meanwhile) stays where it is now."""
        self.db.executemany('UPDATE shares SET pack = ?, "offset" = ? '
                            "WHERE digest = ? AND idx = ? AND pack = ?", moves)
