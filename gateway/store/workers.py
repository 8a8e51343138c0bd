"""The ingest workers' rows (tables leases and workers), on the Store's connection
(`store.workers`); gateway/workers.py runs them.

A lease is a deployment-wide job that exactly one worker does at a time (epoch sealing,
anchoring, the Keepers: LEASE). A worker holds it while it renews it before `expires`;
once expired, any worker may take it. Taking and renewing is one statement, atomic on both
backends; `holds` is asked inside the write transaction that does the job, so a worker
that lost its lease while it paused (a long GC, a SIGSTOP) writes nothing (fencing: the
write transactions of every worker are serialized, gateway/store/dialect.py). Times are
the workers' clocks: workers on several machines keep them with NTP, far within TTL.

A worker writes its own row of workers every few seconds; the admin page and /metrics read
them all.
"""
from collections.abc import Sequence
from typing import NamedTuple

from gateway.store.dialect import Connection

LEASE = "singletons"


class Lease(NamedTuple):
    name: str
    holder: str
    expires: float
    since: float


class Worker(NamedTuple):
    """A row of workers."""
    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    received: int
    stored: int
    inflight: int
    oldest: float | None


class Workers:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- leases ----------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take the lease, or renew it if holder has it, until now + ttl: True; False while
        another holder's lease runs."""
        row = self.db.execute(
            "INSERT INTO leases (name, holder, expires, since) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires = excluded.expires, since = CASE WHEN leases.holder = excluded.holder "
            "THEN leases.since ELSE excluded.since END "
            "WHERE leases.holder = excluded.holder OR leases.expires <= ? RETURNING holder",
            (name, holder, now + ttl, now, now)).fetchone()
        return row is not None

    def holds(self, name: str, holder: str, now: float) -> bool:
        """Whether holder's lease runs at now."""
        return self.db.execute(
            "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND expires > ?",
            (name, holder, now)).fetchone() is not None

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (a clean stop), so another worker takes it at once."""
        self.db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease(self, name: str) -> Lease | None:
        row = self.db.execute("SELECT name, holder, expires, since FROM leases WHERE name = ?",
                              (name,)).fetchone()
        return None if row is None else Lease._make(row)

    # -- reports ---------------------------------------------------------------------

    def report(self, w: Worker) -> None:
        self.db.execute(
            "INSERT INTO workers (name, host, pid, started_at, seen_at, received, stored, "
            "inflight, oldest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at, "
            "seen_at = excluded.seen_at, received = excluded.received, "
            "stored = excluded.stored, inflight = excluded.inflight, oldest = excluded.oldest",
            tuple(w))

    def list(self) -> Sequence[Worker]:
        return [Worker._make(r) for r in self.db.execute(
            "SELECT name, host, pid, started_at, seen_at, received, stored, inflight, oldest "
            "FROM workers ORDER BY name")]

    def forget(self, name: str) -> None:
        self.db.execute("DELETE FROM workers WHERE name = ?", (name,))
