"""The Keeper's rows: audits, their records, repairs and its own counters (tables audits,
audit_records, repairs, keeper_state), on the Store's connection (`store.audits`).
"""

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

RECORD_COLUMNS = ("idx", "epoch", "leaf", "chunk", "digest", "outcome", "detail", "hash")

Row = dict[str, Any]  # an audits row, by column name


class Record(NamedTuple):
    """One audit record, its fields in RECORD_COLUMNS order."""
    idx: int                 # the challenge's index in the audit
    epoch: int
    leaf: int
    chunk: int               # -1: the message itself
    digest: bytes | None     # proven, or None
    outcome: str             # ok, failed, skipped
    detail: str | None
    hash: bytes              # its leaf in the audit tree


class Audits:
    def __init__(self, db: Connection) -> None:
        self.db = db

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        cur = self.db.execute(sql, args)
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    # -- audits ------------------------------------------------------------------------

    def start(self, time: float, mode: str, seed_block: int, seed_hash: str) -> int:
        """A new open audit; its id."""
        audit: int = self.db.execute("INSERT INTO audits (time, mode, seed_block, seed_hash) "
                                     "VALUES (?, ?, ?, ?) RETURNING id",
                                     (time, mode, seed_block, seed_hash)).fetchone()[0]
        return audit

    def add_records(self, audit: int, records: Iterable[Record]) -> None:
        """records: [(idx, epoch, leaf, chunk, digest, outcome, detail, hash)] of the audit."""
        self.db.executemany("INSERT INTO audit_records (audit, idx, epoch, leaf, chunk, digest, "
                            "outcome, detail, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(audit,) + tuple(r) for r in records])

    def finish(self, audit: int, challenges: int, failed: int, skipped: int, root: str | None,
               ok: int) -> None:
        self.db.execute("UPDATE audits SET challenges = ?, failed = ?, skipped = ?, root = ?, "
                        "ok = ? WHERE id = ?", (challenges, failed, skipped, root, ok, audit))

    def set_repaired(self, audit: int, repaired: int, ok: int, alarm: str | None) -> None:
        self.db.execute("UPDATE audits SET repaired = ?, ok = ?, alarm = ? WHERE id = ?",
                        (repaired, ok, alarm, audit))

    def set_empty(self, audit: int) -> None:
        self.db.execute("UPDATE audits SET status = 'empty' WHERE id = ?", (audit,))

    def set_anchored(self, audit: int, tx_hash: str, block: int) -> None:
        self.db.execute("UPDATE audits SET status = 'anchored', tx_hash = ?, block = ? "
                        "WHERE id = ?", (tx_hash, block, audit))

    def set_error(self, audit: int, alarm: str) -> None:
        """Not anchored: status error, and alarm unless the audit has one already."""
        self.db.execute("UPDATE audits SET status = 'error', alarm = coalesce(alarm, ?) "
                        "WHERE id = ?", (alarm, audit))

    def get(self, audit: int) -> Row | None:
        """An audit's row as a dict, or None."""
        return self._row("SELECT * FROM audits WHERE id = ?", (audit,))

    def last(self) -> Row | None:
        """The newest audit's row, or None while there is none."""
        return self._row("SELECT * FROM audits ORDER BY id DESC LIMIT 1")

    def records(self, audit: int) -> list[Record]:
        """[(idx, epoch, leaf, chunk, digest, outcome, detail, hash)] of an audit, in order."""
        return [Record._make(r) for r in self.db.execute(
            "SELECT %s FROM audit_records WHERE audit = ? ORDER BY idx"
            % ", ".join(RECORD_COLUMNS), (audit,))]

    # -- repairs -----------------------------------------------------------------------

    def add_repair(self, time: float, digest: bytes, good: int, outcome: str,
                   detail: str | None) -> None:
        self.db.execute("INSERT INTO repairs (time, digest, good, outcome, detail) "
                        "VALUES (?, ?, ?, ?, ?)", (time, digest, good, outcome, detail))

    def repair_count(self) -> int:
        n: int = self.db.execute("SELECT count(*) FROM repairs").fetchone()[0]
        return n

    def unrepairable(self) -> int:
        """Blobs still held whose last repair found them lost."""
        n: int = self.db.execute(
            "SELECT count(DISTINCT r.digest) FROM repairs r JOIN blobs b ON b.digest = r.digest "
            "WHERE r.outcome = 'lost' AND r.id = (SELECT max(id) FROM repairs WHERE digest = r.digest)"
        ).fetchone()[0]
        return n

    # -- the Keeper's counters ----------------------------------------------------------

    def state(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM keeper_state WHERE key = ?", (key,)).fetchone()
        value: int = row[0] if row else 0
        return value

    def set_state(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO keeper_state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key, value))
