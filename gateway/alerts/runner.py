"""The alerts runner: every interval_seconds, a snapshot of the store and this machine, the
rules over it (rules.py), and the alerts that start or clear because of it, each with its
notices queued for the channels (delivery.py) in the same transaction.

It is one of the deployment's singletons (gateway/service.py): it runs in the worker that
holds the lease, and writes only while that worker does (`fence`). An alert fires once when
its condition starts and once when it clears, however many rounds it holds: the active
alerts are rows (gateway/store/alerts.py), so a restart neither repeats nor forgets them.
Home Assistant also gets one binary sensor per rule, on while any alert of it is active.
"""
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.alerts import rules
from gateway.alerts.delivery import HOMEASSISTANT, WEBHOOK, Courier, Webhook, notice
from gateway.health import Registry
from gateway.store.alerts import FIRED, RESOLVED
from gateway.store.database import Store

log = logging.getLogger("edgekeep.alerts")
DROPS = "drops:"        # alert_marks name prefix of the queue_drops marks


def snapshot(store: Store, data_dir: str, settings: Any, now: float) -> rules.Snapshot:
    """What the rules look at, read now."""
    usage = shutil.disk_usage(data_dir)
    return rules.Snapshot(
        now=now, devices=store.devices(),
        motion=store.alerts.recent_events(now - settings.motion_minutes * 60),
        last_audit=store.last_audit(), unanchored=store.alerts.unanchored(),
        disk=(usage.total - usage.free, usage.total), peers=store.peers.all("active"),
        drops={name[len(DROPS):]: mark for name, mark in store.alerts.marks(DROPS).items()},
        active=frozenset((a["rule"], a["subject"]) for a in store.alerts.active()))


def reconcile(store: Store, conditions: list[rules.Condition], now: float,
              channels: list[str], gateway_id: str) -> tuple[int, int]:
    """Fire an alert for each condition not active yet and resolve each active alert whose
    condition no longer holds, queueing their notices; inside the caller's transaction.
    Returns (fired, resolved)."""
    active = {(a["rule"], a["subject"]): a for a in store.alerts.active()}
    holding = {c.key: c for c in conditions}
    opted_in = store.alerts.opted_in()
    fired = resolved = 0
    for key, c in holding.items():
        if key not in active:
            alert = store.alerts.fire(c.rule, c.subject, c.device, c.title, c.message,
                                      c.priority, c.detail, now)
            _queue(store, alert, FIRED, channels, gateway_id, opted_in, now)
            fired += 1
    for key, a in active.items():
        if key not in holding:
            store.alerts.resolve(a["id"], now)
            _queue(store, a["id"], RESOLVED, channels, gateway_id, opted_in, now)
            resolved += 1
    return fired, resolved


def _queue(store: Store, alert_id: int, event: str, channels: list[str], gateway_id: str,
           opted_in: set[str], now: float) -> None:
    alert = store.alerts.get(alert_id)
    assert alert is not None
    body = notice(alert, event, gateway_id, alert["device"] is None or alert["device"] in opted_in)
    for channel in channels:
        payload = dict(body, event_type=event) if channel == HOMEASSISTANT else body
        store.alerts.enqueue(alert_id, event, channel, json.dumps(payload), now)


class Runner:
    def __init__(self, cfg: Any, health: Registry | None = None, publisher: Any = None,
                 fence: Callable[[Store], bool] | None = None) -> None:
        """cfg: the gateway's Config (its [alerts] table: cfg.alerts); publisher: the Home
        Assistant bridge's discovery.Publisher, or None; fence(store): whether this worker
        still holds the lease (checked inside the write)."""
        self.cfg, self.settings = cfg, cfg.alerts
        rules.check_off(self.settings.off)
        self.health = health or Registry()
        self.publisher, self.fence = publisher, fence
        self.couriers: dict[str, Courier] = {}
        if self.settings.webhook_url:
            hook = Webhook(self.settings.webhook_url, self.settings.webhook_topic,
                           self.settings.webhook_token(), self.settings.webhook_timeout)
            self.couriers[WEBHOOK] = Courier(cfg.data_dir, WEBHOOK, hook, self.health,
                                             cfg.database_url)
        if publisher is not None:
            self.couriers[HOMEASSISTANT] = Courier(cfg.data_dir, HOMEASSISTANT,
                                                   publisher.publish_alert, self.health,
                                                   cfg.database_url)
        self.published: dict[str, bool] = {}     # rule -> Home Assistant's binary sensor
        self._stop = threading.Event()
        self.component = self.health.component("alerts")
        self.thread = self.health.thread("alerts", self._run, self._stop)

    @property
    def rules(self) -> list[str]:
        return [r for r in rules.RULES if r not in self.settings.off]

    def start(self) -> "Runner":
        if self.publisher is not None:
            try:
                self.publisher.add_alerts(self.rules)
            except Exception as e:  # kept in its configs: sent again when the broker is back
                log.warning("alerts: Home Assistant entities not published yet: %s", e)
        for courier in self.couriers.values():
            courier.start()
        self.thread.start()
        log.info("alerts: %s; notices to %s", ", ".join(self.rules) or "no rules",
                 ", ".join(self.couriers) or "the admin page only")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        for courier in self.couriers.values():
            courier.stop()

    def _run(self) -> None:
        store = Store.connect(self.cfg.data_dir, self.cfg.database_url)
        try:
            while not self._stop.is_set():
                self.round(store, time.time())
                self.component.progress()
                self._stop.wait(self.settings.interval_seconds)
        finally:
            store.close()

    def round(self, store: Store, now: float) -> tuple[int, int]:
        """One evaluation: (alerts fired, alerts resolved)."""
        snap = snapshot(store, self.cfg.data_dir, self.settings, now)
        conditions = rules.evaluate(snap, self.settings)
        marks = rules.drop_marks(snap)
        with store.transaction():
            if self.fence and not self.fence(store):
                return 0, 0
            store.alerts.set_marks((DROPS + d, count, at) for d, (count, at) in marks.items())
            changed = reconcile(store, conditions, now, list(self.couriers), self.cfg.gateway_id)
            store.alerts.prune(now - self.settings.keep_days * 86400)
        if any(changed):
            log.info("alerts: %d fired, %d resolved", *changed)
            for courier in self.couriers.values():
                courier.wake.set()
        self.publish_states(store)
        return changed

    def publish_states(self, store: Store) -> None:
        """Home Assistant's binary sensor of each rule, where it changed; a broker away is
        tried again next round."""
        if self.publisher is None:
            return
        counts = store.alerts.active_counts()
        for rule in self.rules:
            on = counts.get(rule, 0) > 0
            if self.published.get(rule) == on:
                continue
            try:
                self.publisher.publish_alert_state(rule, on)
            except Exception as e:
                log.warning("alerts: Home Assistant state of %s not published: %s", rule, e)
                return
            self.published[rule] = on
