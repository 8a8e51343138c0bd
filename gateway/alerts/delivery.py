"""Getting alerts out: the notice each channel gets, the webhook POST, and the couriers that
send the outbox (gateway/store/alerts.py) in threads of their own.

The notice (docs/operations.md, "Alerts") is one JSON object, made when the alert starts or
clears and kept in the outbox until sent:

    {"title", "message", "priority" (1-5), "tags", "event" ("fired" | "resolved"),
     "alert", "rule", "subject", "device", "gateway", "started_at", "resolved_at",
     "values" (only for a device whose owner opted in), "topic" (webhook_topic, if set)}

ntfy takes it as a JSON publish (POSTed to the server's root URL, `topic` in the body),
Gotify as a message (POST /message?token=...: title, message, priority), a Home Assistant
webhook as its trigger's `json`. Home Assistant over MQTT gets the same object, with
`event_type` for its event entity.

A courier never holds up anything else: each channel sends in its own thread, each POST
has a timeout, and a notice that fails is tried again later (RETRY_FIRST s, doubling to
RETRY_MAX s), counted in alert_counts (<channel>_sent, <channel>_failed). The webhook URL
and token may be secrets: logs and errors name only the URL's scheme and host.
"""
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gateway.store.alerts import FIRED
from gateway.store.database import Store

log = logging.getLogger("edgekeep.alerts")

WEBHOOK, HOMEASSISTANT = "webhook", "homeassistant"
RETRY_FIRST = 5.0       # seconds before a failed notice is tried again, doubling ...
RETRY_MAX = 3600.0      # ... up to this
IDLE = 5.0              # seconds between looks at the outbox when nothing is due
RESOLVED_PRIORITY = 2


class DeliveryError(Exception):
    """A notice did not go out; the message names no secret."""


def notice(alert: dict[str, Any], event: str, gateway_id: str, values: bool) -> dict[str, Any]:
    """The notice of an alert row (store.alerts) that started (FIRED) or cleared. values: the
    alert's detail may leave the gateway (a gateway rule, or a device that opted in)."""
    fired = event == FIRED
    out = {
        "title": alert["title"] if fired else "Resolved: " + alert["title"],
        "message": alert["message"],
        "priority": alert["priority"] if fired else RESOLVED_PRIORITY,
        "tags": ["warning"] if fired else ["white_check_mark"],
        "event": event, "alert": alert["id"], "rule": alert["rule"],
        "subject": alert["subject"], "device": alert["device"], "gateway": gateway_id,
        "started_at": alert["started_at"], "resolved_at": alert["resolved_at"],
    }
    if values and alert["detail"]:
        out["values"] = alert["detail"]
    return out


def redact(url: str) -> str:
    """What a log may say of a URL that may carry a token: scheme and host only."""
    parts = urlsplit(url)
    return "%s://%s/..." % (parts.scheme, parts.hostname or "?")


class Webhook:
    """POSTs a notice as JSON to a URL (webhook_url), with webhook_topic added for ntfy and
    webhook_token_file's token as Authorization: Bearer."""

    def __init__(self, url: str, topic: str = "", token: str | None = None,
                 timeout: float = 10) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("[alerts] webhook_url must be http:// or https://, not %s"
                             % redact(url))
        self.url, self.topic, self.token, self.timeout = url, topic, token, timeout
        self.where = redact(url)

    def __call__(self, payload: str) -> None:
        body = json.loads(payload)
        if self.topic:
            body["topic"] = self.topic
        headers = {"Content-Type": "application/json", "User-Agent": "EdgeKeep"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                r.read(65536)
        except urllib.error.HTTPError as e:
            raise DeliveryError("%s answered %d %s" % (self.where, e.code, e.reason)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DeliveryError("%s: %s" % (self.where, reason)) from None
        except Exception as e:  # e.g. a malformed URL: its text would quote the URL
            raise DeliveryError("%s: %s" % (self.where, type(e).__name__)) from None


def retry_delay(attempts: int) -> float:
    """Seconds before the next try of a notice that failed `attempts` times."""
    return float(min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MAX))


class Courier:
    """Sends one channel's notices from the outbox, in order per alert, in a supervised thread
    (gateway/health.py) on a store connection of its own."""

    def __init__(self, data_dir: str, channel: str, send: Callable[[str], None],
                 health: Any, database_url: str | None = None) -> None:
        self.data_dir, self.database_url = data_dir, database_url
        self.channel, self.send = channel, send
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.health = health.component("alerts-" + channel)
        self.thread = health.thread("alerts-" + channel, self._run, self._stop)

    def start(self) -> "Courier":
        self.thread.start()
        return self

    def stop(self, join: float = 5.0) -> None:
        """Stop within join s plus one send's timeout at most; what is unsent stays queued."""
        self._stop.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(join)

    def _run(self) -> None:
        store = Store.connect(self.data_dir, self.database_url)
        try:
            while not self._stop.is_set():
                self.round(store, time.time())
                self.health.progress()
                self.wake.wait(self._idle(store))
                self.wake.clear()
        finally:
            store.close()

    def _idle(self, store: Store) -> float:
        due = store.alerts.next_due(self.channel)
        return IDLE if due is None else min(IDLE, max(0.05, due - time.time()))

    def round(self, store: Store, now: float) -> int:
        """Send what is due, until one fails; the notices sent."""
        sent = 0
        for n in store.alerts.due(self.channel, now):
            if self._stop.is_set():
                break
            try:
                self.send(n.payload)
            except Exception as e:  # DeliveryError, or the broker gone for Home Assistant
                delay = retry_delay(n.attempts + 1)
                log.warning("alert %d (%s) not delivered by %s, try %d; again in %.0f s: %s",
                            n.alert, n.event, self.channel, n.attempts + 1, delay, e)
                with store.transaction():
                    store.alerts.retry(n.id, time.time() + delay, str(e))
                    store.alerts.count(self.channel + "_failed")
                break  # the others wait for the next round: the endpoint is failing
            with store.transaction():
                store.alerts.sent(n.id, time.time())
                store.alerts.count(self.channel + "_sent")
            sent += 1
        return sent
