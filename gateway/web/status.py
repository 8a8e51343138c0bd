"""The gateway's state at a glance: one snapshot a second, shared by the dashboard, SSE and /metrics.

A thread owns its own store connection and, every TICK seconds, rebuilds the snapshot and
publishes it, plus one `message` event per newly stored message and what its feeds say (the
Camera page's `object` events, gateway/web/camera.py). Pages therefore never wait on the
chain or walk the disk; they read the latest snapshot.
"""
import logging
import os
import shutil
import threading
import time
from collections import deque

from gateway.health import Registry
from gateway.store.database import Store
from gateway.store.workers import LEASE
from gateway.workers import REPORT

log = logging.getLogger("edgekeep.web")

TICK = 1.0
ONLINE_SECONDS = 120      # a device heard from within this is online (4 default Pebble uplinks)
RATE_WINDOW = 10          # seconds of history behind messages per second
RESOLVED_SHOWN = 86400    # seconds a resolved alert stays on the dashboard
SLOW_EVERY = 5            # chain, broker, disk and network checks every this many ticks


def device_row(d, now):
    """A device as the pages and the API show it: registry fields plus its last status health."""
    h = d["health"] or {}
    return {
        "id": d["id"], "name": d["name"], "kind": d["kind"], "status": d["status"],
        "online": d["status"] == "active" and bool(d["last_seen"]) and now - d["last_seen"] < ONLINE_SECONDS,
        "last_seen": d["last_seen"], "seq": d["acked"], "firmware": h.get("fw"),
        "battery_mv": h.get("batt"), "rssi": h.get("rssi"), "snr": h.get("snr"),
        "queue": h.get("q"), "queue_bytes": h.get("qb"), "drops": h.get("drop"),
        "uptime": h.get("up"), "public_key": d["public_key"].hex(),
        "registered_at": d["registered_at"],
    }


class WorkerRates:
    """Each ingest worker's row (gateway/store/workers.py) as the dashboard and /metrics
    show it: alive (reported within three periods), msg/s between its last two reports,
    inflight and lag, and whether it holds the lease."""

    def __init__(self):
        self.last = {}   # name -> (seen_at, stored, rate)

    def view(self, store, now):
        lease = store.workers.lease(LEASE)
        holder = lease.holder if lease and lease.expires > now else None
        out = []
        for w in store.workers.list():
            seen, stored, rate = self.last.get(w.name, (None, None, 0.0))
            if seen is not None and w.seen_at > seen and w.stored >= stored:
                rate = (w.stored - stored) / (w.seen_at - seen)
            self.last[w.name] = (w.seen_at, w.stored, rate)
            alive = now - w.seen_at < 3 * REPORT
            out.append({"name": w.name, "host": w.host, "pid": w.pid, "alive": alive,
                        "seen_at": w.seen_at, "rate": rate if alive else 0.0,
                        "received": w.received, "stored": w.stored,
                        "inflight": w.inflight if alive else 0,
                        "lag": (w.oldest or 0.0) if alive else 0.0,
                        "lease": w.name == holder})
        return out


def disk_usage(data_dir):
    used = 0
    for root, _, files in os.walk(data_dir):
        for name in files:
            try:
                used += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return {"used": used, "free": shutil.disk_usage(data_dir).free}


class Monitor:
    def __init__(self, data_dir, gateway, broadcaster, network=None, feeds=()):
        """network: a gateway.web.network.Network, for the snapshot's "network" entry (the
        Off-box card, the network's /metrics), read with the slow checks. feeds: each
        feed(store) -> [(event, data)] to publish, every tick."""
        self.feeds = feeds
        self.data_dir = data_dir
        self.gateway = gateway
        self.network = network
        self.broadcaster = broadcaster
        self.snapshot = None
        self.samples = deque(maxlen=int(RATE_WINDOW / TICK) + 1)
        self.worker_rates = WorkerRates()
        self.slow = {}
        self.ticks = 0
        self.last_id = None
        self._stop = threading.Event()
        # the gateway's components (ingest, anchor, ...) and this thread, supervised
        self.health = getattr(gateway, "health", None) or Registry()
        self.thread = self.health.thread("web-monitor", self._run, self._stop)

    def start(self):
        self.store = Store.connect(self.data_dir)
        self.last_id = self.store.latest_message_id()
        self.tick()
        self.thread.start()

    def stop(self):
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.store.close()

    def _run(self):
        """Supervised (gateway/health.py): a tick that raises is logged and counted, and the
        loop restarts after a back-off."""
        while not self._stop.wait(TICK):
            self.tick()
            self.health.component("web-monitor").progress()

    def tick(self):
        if self.ticks % SLOW_EVERY == 0:
            self.slow = self.slow_checks()
        self.ticks += 1
        for m in self.store.messages_after(self.last_id):
            self.last_id = m["id"]
            self.broadcaster.publish("message", m)
        for feed in self.feeds:
            for event, data in feed(self.store):
                self.broadcaster.publish(event, data)
        self.snapshot = self.build()
        self.broadcaster.publish("status", self.snapshot)

    def build(self):
        store, now = self.store, time.time()
        self.samples.append((time.monotonic(), self.last_id))
        (t0, id0), (t1, id1) = self.samples[0], self.samples[-1]
        rows = [device_row(d, now) for d in store.devices()]
        active = [r for r in rows if r["status"] == "active"]
        anchor = store.last_anchor()
        if anchor:
            anchor = {"epoch": anchor["epoch"], "tx_hash": anchor["tx_hash"], "block": anchor["block"],
                      "gas": anchor["gas"], "count": anchor["count"], "mined_at": anchor["mined_at"],
                      "latency": anchor["mined_at"] - anchor["sealed_at"]}
        return {
            "time": now,
            "devices": {"total": len(rows), "online": sum(r["online"] for r in rows),
                        "offline": sum(not r["online"] for r in active),
                        "revoked": len(rows) - len(active)},
            "messages": store.message_count(),
            "rate": (id1 - id0) / (t1 - t0) if t1 > t0 else 0.0,
            "rejects": store.reject_counts(),
            "duplicates": store.counts()["duplicates"],
            "queued": sum(r["queue"] or 0 for r in active),
            "drops": sum(r["drops"] or 0 for r in active),
            "anchor": anchor,
            "pending_epochs": store.pending_epochs(),
            "audit": store.last_audit(),
            "components": self.health.snapshot(),
            "workers": self.worker_rates.view(store, now),
            "alerts": store.alerts.summary(now - RESOLVED_SHOWN),
            **self.slow,
        }

    def slow_checks(self):
        return {"storage": disk_usage(self.data_dir), "broker": self.broker_health(),
                "chain": self.chain_health(),
                "network": self.network.summary(self.store) if self.network else None}

    def broker_health(self):
        if not self.gateway or not self.gateway.ingest:
            return {"ok": None, "detail": "no ingest in this process"}
        ok = self.gateway.ingest.is_connected()
        return {"ok": ok, "detail": "connected" if ok else "disconnected, retrying"}

    def chain_health(self):
        if not self.gateway:
            return {"ok": None, "detail": "no chain in this process"}
        if not self.gateway.chain:  # not connected yet: the anchor outbox keeps trying
            error = getattr(self.gateway, "chain_error", None)
            return {"ok": False, "detail": "not reachable: %s" % str(error)[:200] if error
                    else "connecting"}
        try:
            block = self.gateway.chain.latest_block()["number"]
        except Exception as e:
            return {"ok": False, "detail": str(e)[:200]}
        return {"ok": True, "detail": "block %d" % block, "block": block}
