"""OTA rollouts' rows (tables update_bundles, rollouts, rollout_devices): `Rollouts(store.db)`.
gateway/updates/ decides what happens; this module only reads and writes.

A bundle row describes a signed bundle the admin page took (its files are under
<data dir>/updates/, gateway/updates/bundles.py). A rollout sends one bundle to devices in
stages; each device's row says how far its update got.
"""
from collections.abc import Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

# A device's update, in order; the last five are where it ends.
WAITING, OFFERED, CHUNKS, VERIFYING, REBOOTING = "waiting", "offered", "chunks", "verifying", \
    "rebooting"
CONFIRMED, CURRENT = "confirmed", "current"
REFUSED, ROLLED_BACK, TIMED_OUT, SKIPPED = "refused", "rolled back", "timed out", "skipped"
SUCCEEDED = (CONFIRMED, CURRENT)
FAILED = (REFUSED, ROLLED_BACK, TIMED_OUT)
IN_FLIGHT = (OFFERED, CHUNKS, VERIFYING, REBOOTING)
DEVICE_STATES = (WAITING,) + IN_FLIGHT + SUCCEEDED + FAILED + (SKIPPED,)

RUNNING, HALTED, ABORTED, DONE = "running", "halted", "aborted", "done"
ROLLOUT_STATES = (RUNNING, HALTED, ABORTED, DONE)


class Bundle(NamedTuple):
    digest: str
    version: str
    board: str
    files: int
    size: int
    uploaded_at: float


class Rollout(NamedTuple):
    id: str
    bundle: str
    status: str
    stage: int
    stages: int
    max_failed: float
    confirm_seconds: float
    force: bool
    accepted: int
    created_at: float
    updated_at: float
    reason: str | None


class DeviceUpdate(NamedTuple):
    rollout: str
    device: str
    stage: int
    state: str
    chunks: int
    sent: int
    why: str | None
    offered_at: float | None
    updated_at: float


_BUNDLE = "SELECT " + ", ".join(Bundle._fields) + " FROM update_bundles"
_ROLLOUT = "SELECT " + ", ".join(Rollout._fields) + " FROM rollouts"
_DEVICE = "SELECT " + ", ".join(DeviceUpdate._fields) + " FROM rollout_devices"


def _rollout(row: Sequence[Any]) -> Rollout:
    r = Rollout._make(row)
    return r._replace(force=bool(r.force))


class Rollouts:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- bundles ---------------------------------------------------------------

    def add_bundle(self, b: Bundle) -> None:
        """Record a bundle (again: the same digest is the same signed bundle, kept once)."""
        self.db.execute("DELETE FROM update_bundles WHERE digest = ?", (b.digest,))
        self.db.execute("INSERT INTO update_bundles (" + ", ".join(Bundle._fields) + ") "
                        "VALUES (?, ?, ?, ?, ?, ?)", tuple(b))

    def bundle(self, digest: str) -> Bundle | None:
        row = self.db.execute(_BUNDLE + " WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else Bundle._make(row)

    def bundles(self) -> Sequence[Bundle]:
        return [Bundle._make(r) for r in self.db.execute(_BUNDLE + " ORDER BY uploaded_at DESC")]

    # -- rollouts --------------------------------------------------------------

    def add(self, r: Rollout, stages: Sequence[Sequence[str]], now: float) -> None:
        """A new rollout and one waiting row per device of each stage."""
        self.db.execute("INSERT INTO rollouts (" + ", ".join(Rollout._fields) + ") VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        tuple(r[:7]) + (int(r.force),) + tuple(r[8:]))
        self.db.executemany(
            "INSERT INTO rollout_devices (rollout, device, stage, state, chunks, sent, "
            "updated_at) VALUES (?, ?, ?, ?, 0, 0, ?)",
            [(r.id, dev, n, WAITING, now) for n, devs in enumerate(stages) for dev in devs])

    def get(self, rollout_id: str) -> Rollout | None:
        row = self.db.execute(_ROLLOUT + " WHERE id = ?", (rollout_id,)).fetchone()
        return None if row is None else _rollout(row)

    def all(self, limit: int = 50) -> Sequence[Rollout]:
        return [_rollout(r) for r in self.db.execute(
            _ROLLOUT + " ORDER BY created_at DESC LIMIT ?", (limit,))]

    def open(self) -> Sequence[Rollout]:
        """Rollouts not finished: running or halted (a halted one may have devices still
        installing, and may be resumed)."""
        return [_rollout(r) for r in self.db.execute(
            _ROLLOUT + " WHERE status IN (?, ?) ORDER BY created_at", (RUNNING, HALTED))]

    def set_status(self, rollout_id: str, expect: Sequence[str], status: str, now: float,
                   reason: str | None = None, stage: int | None = None,
                   accepted: int | None = None) -> bool:
        """Change a rollout that is in one of the `expect` states (so that the engine and
        the admin page, each acting on what it read, never undo the other); True if it was."""
        cur = self.db.execute(
            "UPDATE rollouts SET status = ?, reason = ?, updated_at = ?, "
            "stage = COALESCE(?, stage), accepted = COALESCE(?, accepted) "
            "WHERE id = ? AND status IN (%s)" % ", ".join("?" * len(expect)),
            (status, reason, now, stage, accepted, rollout_id, *expect))
        return cur.rowcount == 1

    # -- devices ---------------------------------------------------------------

    def devices(self, rollout_id: str) -> Sequence[DeviceUpdate]:
        return [DeviceUpdate._make(r) for r in self.db.execute(
            _DEVICE + " WHERE rollout = ? ORDER BY stage, device", (rollout_id,))]

    def set_device(self, rollout_id: str, device: str, state: str, now: float,
                   why: str | None = None, offered: bool = False) -> None:
        self.db.execute(
            "UPDATE rollout_devices SET state = ?, why = ?, updated_at = ?, "
            "offered_at = CASE WHEN ? = 1 THEN ? ELSE offered_at END "
            "WHERE rollout = ? AND device = ?",
            (state, why, now, int(offered), now, rollout_id, device))

    def set_chunks(self, rollout_id: str, device: str, chunks: int, sent: int, now: float) -> None:
        self.db.execute("UPDATE rollout_devices SET chunks = ?, sent = ?, updated_at = ? "
                        "WHERE rollout = ? AND device = ?",
                        (chunks, sent, now, rollout_id, device))

    def skip_waiting(self, rollout_id: str, now: float) -> None:
        """An aborted rollout: the devices it had not offered yet are skipped."""
        self.db.execute("UPDATE rollout_devices SET state = ?, updated_at = ? "
                        "WHERE rollout = ? AND state = ?", (SKIPPED, now, rollout_id, WAITING))

    def counts(self) -> dict[str, dict[str, int]]:
        """{rollout status: count} under "rollouts", {device state: count} of open rollouts
        under "devices" (for /metrics)."""
        rollouts = dict.fromkeys(ROLLOUT_STATES, 0)
        for status, n in self.db.execute("SELECT status, count(*) FROM rollouts GROUP BY status"):
            rollouts[status] = n
        devices = dict.fromkeys(DEVICE_STATES, 0)
        for state, n in self.db.execute(
                "SELECT d.state, count(*) FROM rollout_devices d JOIN rollouts r "
                "ON r.id = d.rollout WHERE r.status IN (?, ?) GROUP BY d.state",
                (RUNNING, HALTED)):
            devices[state] = n
        return {"rollouts": rollouts, "devices": devices}
