"""The alert rules: pure functions from a Snapshot (what the store and this machine say at one
moment) to the Conditions that hold then. No I/O here: runner.py takes the snapshot and
turns conditions that start or stop holding into alerts.

A Condition's message is what may leave the gateway about it: names, ids, times and the
configured thresholds, never a device's readings. Its `detail` holds the values behind it
(a battery voltage, a drop count, a camera's event label): the admin page shows them, and
they go out in a notice only for a device whose owner opted it in (store.alerts.set_optin).
Rules about the gateway itself (disk, audits, anchors, peers) hold no sensor data.

Thresholds with a value that wavers around them (battery, disk) clear only a margin past the
threshold (hysteresis), so that a reading that flickers does not fire again and again.
"""
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

GATEWAY = "gateway"             # the subject of the rules about the gateway itself
BATTERY_MARGIN_MV = 100         # battery_low clears this far above battery_mv
DISK_MARGIN_PERCENT = 2         # disk_full clears this far below disk_percent


@dataclass(frozen=True)
class Condition:
    rule: str
    subject: str                # a device id, a peer name, or GATEWAY
    device: str | None          # the device it is about (its opt-in governs `detail`)
    title: str
    message: str                # no values: safe to send anywhere
    priority: int               # 1 (min) ... 5 (max), ntfy's scale
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)


@dataclass
class Snapshot:
    now: float
    devices: list[dict[str, Any]] = field(default_factory=list)   # store.devices() rows
    motion: dict[str, tuple[float, str]] = field(default_factory=dict)  # camera -> (at, label)
    last_audit: dict[str, Any] | None = None
    unanchored: tuple[float | None, int] = (None, 0)  # oldest unmined epoch's sealed_at, count
    disk: tuple[int, int] | None = None               # (used, total) bytes of data_dir's fs
    peers: list[Any] = field(default_factory=list)    # store.peers.all("active")
    drops: dict[str, tuple[float, float]] = field(default_factory=dict)  # device -> (count, rose_at)
    active: frozenset[tuple[str, str]] = frozenset()  # (rule, subject) of the active alerts


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def name_of(d: dict[str, Any]) -> str:
    return d.get("name") or d["id"]


def active_devices(s: Snapshot) -> list[dict[str, Any]]:
    return [d for d in s.devices if d["status"] == "active"]


# -- the rules -------------------------------------------------------------------------------

def device_offline(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A device not heard from for offline_minutes (counted from its registration if never)."""
    for d in active_devices(s):
        heard = d["last_seen"] or d["registered_at"]
        if s.now - heard >= cfg.offline_minutes * 60:
            since = "since %s" % utc(d["last_seen"]) if d["last_seen"] else "ever (registered %s)" \
                % utc(d["registered_at"])
            yield Condition("device_offline", d["id"], d["id"], "%s is offline" % name_of(d),
                            "%s (%s) has not been heard from %s." % (name_of(d), d["id"], since), 4)


def battery_low(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A device's last status reported its battery below battery_mv."""
    for d in active_devices(s):
        batt = (d["health"] or {}).get("batt")
        if batt is None:
            continue
        limit = cfg.battery_mv + (BATTERY_MARGIN_MV if ("battery_low", d["id"]) in s.active else 0)
        if batt < limit:
            yield Condition("battery_low", d["id"], d["id"], "%s: battery low" % name_of(d),
                            "%s (%s) reports its battery below %d mV." % (
                                name_of(d), d["id"], cfg.battery_mv), 3, {"battery_mv": batt})


def drop_marks(s: Snapshot) -> dict[str, tuple[float, float]]:
    """Each device's drop count as the rules remember it: (count, when it last rose). A device
    seen the first time sets its mark without an alert: when its drops happened is unknown.
    A count that went down (the device was reflashed) is the new mark, not a rise."""
    marks = {}
    for d in active_devices(s):
        count = (d["health"] or {}).get("drop")
        if count is None:
            continue
        before = s.drops.get(d["id"])
        if before is None:
            marks[d["id"]] = (float(count), 0.0)
        elif count > before[0]:
            marks[d["id"]] = (float(count), s.now)
        elif count < before[0]:
            marks[d["id"]] = (float(count), before[1])
    return marks


def queue_drops(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A device dropped batches from its full queue (its drop count rose) within the last
    drops_quiet_minutes."""
    marks = {**s.drops, **drop_marks(s)}
    for d in active_devices(s):
        mark = marks.get(d["id"])
        if mark and mark[1] and s.now - mark[1] < cfg.drops_quiet_minutes * 60:
            yield Condition("queue_drops", d["id"], d["id"], "%s dropped data" % name_of(d),
                            "%s (%s) dropped queued batches: its queue was full (since %s)." % (
                                name_of(d), d["id"], utc(mark[1])), 4, {"drops": int(mark[0])})


def motion(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A camera sent an event (motion) within the last motion_minutes."""
    by_id = {d["id"]: d for d in active_devices(s)}
    for camera, (at, label) in sorted(s.motion.items()):
        d = by_id.get(camera)
        if d and s.now - at < cfg.motion_minutes * 60:
            yield Condition("motion", camera, camera, "Motion on %s" % name_of(d),
                            "%s (%s) recorded an event at %s." % (name_of(d), camera, utc(at)), 4,
                            {"label": label})


def audit_failed(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """The Keeper's last storage audit failed (until one passes)."""
    a = s.last_audit
    if cfg.audit and a and a.get("ok") == 0:
        yield Condition("audit_failed", GATEWAY, None, "Storage audit failed",
                        "The storage audit of %s failed: %s of %s challenge(s) (see Storage & "
                        "audits)." % (utc(a["time"]), a.get("failed"), a.get("challenges")), 5,
                        {"audit": a.get("id"), "failed": a.get("failed")})


def anchors_behind(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A sealed epoch has waited anchor_minutes for its anchor to be mined."""
    oldest, count = s.unanchored
    if oldest is not None and s.now - oldest >= cfg.anchor_minutes * 60:
        yield Condition("anchors_behind", GATEWAY, None, "Anchors are behind",
                        "%d sealed epoch(s) are not anchored on chain, the oldest since %s." % (
                            count, utc(oldest)), 4, {"epochs": count})


def disk_full(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """The filesystem of the data directory is disk_percent full."""
    if not s.disk or not s.disk[1]:
        return
    percent = 100.0 * s.disk[0] / s.disk[1]
    limit = cfg.disk_percent - (DISK_MARGIN_PERCENT if ("disk_full", GATEWAY) in s.active else 0)
    if percent >= limit:
        yield Condition("disk_full", GATEWAY, None, "Disk almost full",
                        "The data directory's filesystem is %.0f%% full (alert at %g%%)." % (
                            percent, cfg.disk_percent), 4, {"percent": round(percent, 1)})


def peer_unreachable(s: Snapshot, cfg: Any) -> Iterable[Condition]:
    """A Provider network peer has not answered for peer_minutes."""
    for p in s.peers:
        if p.unreachable_since and s.now - p.unreachable_since >= cfg.peer_minutes * 60:
            yield Condition("peer_unreachable", p.name, None, "Peer %s unreachable" % p.name,
                            "Peer %s has not answered since %s." % (p.name, utc(p.unreachable_since)),
                            3)


Rule = Callable[[Snapshot, Any], Iterable[Condition]]
RULES: dict[str, Rule] = {r.__name__: r for r in (
    device_offline, battery_low, queue_drops, motion, audit_failed, anchors_behind, disk_full,
    peer_unreachable)}


def check_off(names: Iterable[str]) -> None:
    unknown = set(names) - set(RULES)
    if unknown:
        raise ValueError("[alerts] off: no rule %s; the rules are %s" % (
            ", ".join(sorted(unknown)), ", ".join(RULES)))


def evaluate(s: Snapshot, cfg: Any) -> list[Condition]:
    """Every condition that holds in s, by the rules cfg (an AlertsConfig) does not turn off."""
    return [c for name, rule in RULES.items() if name not in cfg.off for c in rule(s, cfg)]
