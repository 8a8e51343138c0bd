"""Enrollment tokens' rows (table enrollments), on a Store's connection:
`store.enrollments`. gateway/chain/registry.py issues and spends them.

A token is short-lived and single-use. Only its SHA-256 (hex) is stored, so a copy of the
database enrolls nothing. Spending is one statement on both backends (`claim`: an UPDATE
that only succeeds while the token is unspent and unexpired), so two requests with the same
token cannot both pass; a claim whose enrollment then fails before changing anything is
given back (`release`), the token usable again until it expires.
"""
from collections.abc import Sequence
from typing import NamedTuple

from gateway.store.dialect import Connection

COLUMNS = ("digest", "created_at", "expires", "issued_by", "broker", "used_at", "used_by",
           "device", "retired")
KEEP_SECONDS = 7 * 86400   # expired or spent tokens are forgotten this long after they expire


class Enrollment(NamedTuple):
    """A row of enrollments."""
    digest: str              # hex SHA-256 of the token
    created_at: float
    expires: float
    issued_by: str           # 'cli' or 'admin page'
    broker: str | None       # the broker URL devices use, if the issuer said
    used_at: float | None
    used_by: str | None
    device: str | None       # the device it enrolled
    retired: str | None      # the device it revoked


_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM enrollments"


class Enrollments:
    def __init__(self, db: Connection) -> None:
        self.db = db

    def add(self, digest: str, created_at: float, expires: float, issued_by: str,
            broker: str | None = None) -> None:
        """A new unspent token (by its digest); rows long expired are dropped on the way."""
        self.db.execute("DELETE FROM enrollments WHERE expires < ?",
                        (created_at - KEEP_SECONDS,))
        self.db.execute("INSERT INTO enrollments (digest, created_at, expires, issued_by, broker) "
                        "VALUES (?, ?, ?, ?, ?)", (digest, created_at, expires, issued_by, broker))

    def get(self, digest: str) -> Enrollment | None:
        row = self.db.execute(_SELECT + " WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else Enrollment._make(row)

    def claim(self, digest: str, now: float, client: str) -> Enrollment | None:
        """Spend the token: its row, now marked used; None if it is unknown, spent or expired
        (get() tells which)."""
        row = self.db.execute(
            "UPDATE enrollments SET used_at = ?, used_by = ? "
            "WHERE digest = ? AND used_at IS NULL AND expires > ? RETURNING " + ", ".join(COLUMNS),
            (now, client, digest, now)).fetchone()
        return None if row is None else Enrollment._make(row)

    def release(self, digest: str) -> bool:
        """Give back a claim that changed nothing (no device enrolled nor revoked)."""
        cur = self.db.execute("UPDATE enrollments SET used_at = NULL, used_by = NULL "
                              "WHERE digest = ? AND device IS NULL AND retired IS NULL",
                              (digest,))
        return cur.rowcount == 1

    def finish(self, digest: str, device: str | None, retired: str | None) -> None:
        """Record what a claimed token did."""
        self.db.execute("UPDATE enrollments SET device = ?, retired = ? WHERE digest = ?",
                        (device, retired, digest))

    def pending(self, now: float) -> Sequence[Enrollment]:
        """Unspent, unexpired tokens (their digests only), soonest to expire first."""
        return [Enrollment._make(r) for r in self.db.execute(
            _SELECT + " WHERE used_at IS NULL AND expires > ? ORDER BY expires", (now,))]
