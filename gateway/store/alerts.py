"""The alerts' rows (tables alerts, alert_outbox, alert_marks, alert_optin, alert_counts), on
the Store's connection (`store.alerts`); gateway/alerts/ runs them.

An alert is one condition (a rule about one subject) from when it started to when it
cleared: at most one active row per (rule, subject), so a condition that holds round after
round is one alert, and the set of active rows is what survives a restart. Each start and
each end puts one notice per channel in the outbox, in the same transaction, with the JSON
that goes out; the couriers send what is due and mark it sent, or try again later.
"""
import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

Row = dict[str, Any]
COLUMNS = ("id", "rule", "subject", "device", "title", "message", "priority", "detail",
           "started_at", "resolved_at")
OUTBOX_COLUMNS = ("id", "alert", "event", "channel", "payload", "created_at", "attempts",
                  "next_at", "sent_at", "last_error")
FIRED, RESOLVED = "fired", "resolved"


class Notice(NamedTuple):
    """A row of alert_outbox."""
    id: int
    alert: int
    event: str
    channel: str
    payload: str
    created_at: float
    attempts: int
    next_at: float
    sent_at: float | None
    last_error: str | None


class Alerts:
    def __init__(self, db: Connection) -> None:
        self.db = db

    def _rows(self, where: str, args: Sequence[Any] = ()) -> list[Row]:
        cur = self.db.execute("SELECT %s FROM alerts %s" % (", ".join(COLUMNS), where), args)
        out = []
        for row in cur:
            a = dict(zip(COLUMNS, row))
            a["detail"] = json.loads(a["detail"]) if a["detail"] else {}
            out.append(a)
        return out

    # -- alerts ------------------------------------------------------------------------

    def active(self) -> list[Row]:
        """The alerts whose condition holds, newest first."""
        return self._rows("WHERE resolved_at IS NULL ORDER BY started_at DESC, id DESC")

    def resolved_since(self, since: float, limit: int = 50) -> list[Row]:
        """Alerts that cleared at or after `since`, the latest first."""
        return self._rows("WHERE resolved_at >= ? ORDER BY resolved_at DESC, id DESC LIMIT ?",
                          (since, limit))

    def get(self, alert: int) -> Row | None:
        found = self._rows("WHERE id = ?", (alert,))
        return found[0] if found else None

    def fire(self, rule: str, subject: str, device: str | None, title: str, message: str,
             priority: int, detail: dict[str, Any], now: float) -> int:
        """A new active alert; its id. IntegrityError if (rule, subject) is active already."""
        alert: int = self.db.execute(
            "INSERT INTO alerts (rule, subject, device, title, message, priority, detail, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (rule, subject, device, title, message, priority,
             json.dumps(detail) if detail else None, now)).fetchone()[0]
        return alert

    def resolve(self, alert: int, now: float) -> bool:
        cur = self.db.execute("UPDATE alerts SET resolved_at = ? WHERE id = ? AND "
                              "resolved_at IS NULL", (now, alert))
        return cur.rowcount == 1

    def prune(self, before: float) -> int:
        """Forget alerts resolved before `before`, and their notices."""
        self.db.execute("DELETE FROM alert_outbox WHERE alert IN (SELECT id FROM alerts WHERE "
                        "resolved_at < ?)", (before,))
        return self.db.execute("DELETE FROM alerts WHERE resolved_at < ?", (before,)).rowcount

    def summary(self, since: float, recent: int = 5) -> Row:
        """The admin monitor's view: count and rows of the active alerts, the `recent` latest
        resolved since `since`, active alerts by rule, delivery counters, notices waiting."""
        active = self.active()
        return {"count": len(active), "active": active,
                "recent": self.resolved_since(since, recent), "by_rule": self.active_counts(),
                "counts": self.counts(), "pending": self.pending()}

    def active_counts(self) -> dict[str, int]:
        """rule -> active alerts."""
        return dict(self.db.execute("SELECT rule, count(*) FROM alerts WHERE resolved_at IS NULL "
                                    "GROUP BY rule").fetchall())

    # -- the outbox ----------------------------------------------------------------------

    def enqueue(self, alert: int, event: str, channel: str, payload: str, now: float) -> None:
        self.db.execute("INSERT INTO alert_outbox (alert, event, channel, payload, created_at, "
                        "next_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (alert, event, channel, payload, now, now))

    def due(self, channel: str, now: float, limit: int = 20) -> list[Notice]:
        """The channel's unsent notices whose time has come, oldest first."""
        # one alert's notices go out in order: its end never before its start
        return [Notice._make(r) for r in self.db.execute(
            "SELECT %s FROM alert_outbox o WHERE channel = ? AND sent_at IS NULL AND next_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM alert_outbox e WHERE e.alert = o.alert AND "
            "e.channel = o.channel AND e.sent_at IS NULL AND e.id < o.id) ORDER BY id LIMIT ?"
            % ", ".join(OUTBOX_COLUMNS), (channel, now, limit))]

    def next_due(self, channel: str) -> float | None:
        """When the channel's next unsent notice is due (None: nothing waits)."""
        at: float | None = self.db.execute(
            "SELECT min(next_at) FROM alert_outbox WHERE channel = ? AND sent_at IS NULL",
            (channel,)).fetchone()[0]
        return at

    def notices(self, alert: int) -> list[Notice]:
        return [Notice._make(r) for r in self.db.execute(
            "SELECT %s FROM alert_outbox WHERE alert = ? ORDER BY id" % ", ".join(OUTBOX_COLUMNS),
            (alert,))]

    def sent(self, notice: int, now: float) -> None:
        self.db.execute("UPDATE alert_outbox SET sent_at = ?, attempts = attempts + 1, "
                        "last_error = NULL WHERE id = ?", (now, notice))

    def retry(self, notice: int, next_at: float, error: str) -> None:
        self.db.execute("UPDATE alert_outbox SET attempts = attempts + 1, next_at = ?, "
                        "last_error = ? WHERE id = ?", (next_at, error[:500], notice))

    def pending(self) -> dict[str, int]:
        """channel -> unsent notices."""
        return dict(self.db.execute("SELECT channel, count(*) FROM alert_outbox WHERE sent_at "
                                    "IS NULL GROUP BY channel").fetchall())

    # -- what the rules read of other tables ------------------------------------------------

    def recent_events(self, since: float) -> dict[str, tuple[float, str]]:
        """camera -> (when the gateway got it, label) of its newest object since `since`."""
        return {device: (at, event or "") for device, event, at in self.db.execute(
            "SELECT device, event, created_at FROM objects WHERE created_at >= ? "
            "ORDER BY created_at", (since,))}

    def unanchored(self) -> tuple[float | None, int]:
        """(sealed_at of the oldest epoch not mined yet, how many are not)."""
        oldest, count = self.db.execute("SELECT min(sealed_at), count(*) FROM epochs WHERE "
                                        "status != 'mined'").fetchone()
        return oldest, count

    # -- what rules remember, who opted in, counters ---------------------------------------

    def marks(self, prefix: str) -> dict[str, tuple[float, float]]:
        """name -> (value, since) of the marks whose name starts with prefix."""
        return {name: (value, since) for name, value, since in self.db.execute(
            "SELECT name, value, since FROM alert_marks WHERE name LIKE ?",
            (prefix.replace("%", "") + "%",))}

    def set_marks(self, marks: Iterable[tuple[str, float, float]]) -> None:
        self.db.executemany("INSERT INTO alert_marks (name, value, since) VALUES (?, ?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                            "since = excluded.since", list(marks))

    def opted_in(self) -> set[str]:
        """The devices whose alerts may carry their values out of the gateway."""
        return {d for (d,) in self.db.execute("SELECT device FROM alert_optin")}

    def set_optin(self, device: str, values: bool, now: float) -> None:
        if values:
            self.db.execute("INSERT INTO alert_optin (device, since) VALUES (?, ?) "
                            "ON CONFLICT (device) DO NOTHING", (device, now))
        else:
            self.db.execute("DELETE FROM alert_optin WHERE device = ?", (device,))

    def count(self, name: str, n: int = 1) -> None:
        self.db.execute("INSERT INTO alert_counts (name, count) VALUES (?, ?) ON CONFLICT (name) "
                        "DO UPDATE SET count = alert_counts.count + excluded.count", (name, n))

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, count FROM alert_counts").fetchall())
