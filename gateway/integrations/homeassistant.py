"""Keeps Home Assistant's view in step with the gateway (discovery.py builds the payloads).

Every `interval` seconds: discovery configs for devices that were registered, an empty
retained config for those revoked, availability from when each device was last heard, and
the readings a device shares in plaintext (its status message's `share` map; docs/protocol.md)
when the owner also opted in for that device (`edgekeep broker share`). Only
changes are published.
"""
import logging
import threading
import time

from gateway.health import Registry, unreachable
from gateway.integrations import discovery
from gateway.store.database import Store

log = logging.getLogger("edgekeep.homeassistant")


class Bridge:
    def __init__(self, data_dir, broker, gateway_id, username=None, password=None,
                 interval=10.0, offline_after=120.0, health=None):
        self.data_dir = data_dir
        self.publisher = discovery.Publisher(broker, gateway_id, username, password)
        self.interval = interval
        self.offline_after = offline_after
        self.published = {}     # device id -> (status, shares) last published
        self.online = {}        # device id -> availability last published
        self.shared_at = {}     # device id -> last_seen of the status whose readings went out
        self._stop = threading.Event()
        registry = health or Registry()  # supervised: gateway/health.py
        self.health = registry.component("homeassistant")
        self.thread = registry.thread("homeassistant", self._run, self._stop)

    def start(self):
        self.publisher.start()
        self.thread.start()
        return self

    def stop(self, join=3.0):
        """Stop in about join + discovery.STOP_WAIT seconds at most, broker or no broker (a
        round still publishing ends with the process); never raises."""
        self._stop.set()
        self.publisher.closing.set()    # publishes from now on wait STOP_WAIT, not PUBLISH_WAIT
        if self.thread.is_alive():
            self.thread.join(join)
        self.publisher.stop()

    def _run(self):
        """The loop, supervised: an unexpected error is logged and counted by the supervisor
        and the loop restarts after a back-off; the broker away is waited out here."""
        store = Store.connect(self.data_dir)  # the service opened (migrated) it
        try:
            while not self._stop.is_set():
                try:
                    self.tick(store.devices(), discovery.load_shares(self.data_dir), time.time())
                except Exception as e:
                    if not unreachable(e):
                        raise
                    # the broker may be restarting: try again next round
                    log.warning("Home Assistant update failed: %s", e)
                    self.health.waiting("broker", "broker not reachable: %s" % str(e)[:200])
                else:
                    self.health.progress()
                self._stop.wait(self.interval)
        finally:
            store.close()

    def tick(self, devices, shares, now):
        for d in devices:
            dev = d["id"]
            shared = tuple(shares.get(dev, ()))
            if self.published.get(dev) != (d["status"], shared):
                if d["status"] == "active":
                    self.publisher.publish_device(d, shared)
                else:
                    self.publisher.remove_device(dev)
                self.published[dev] = (d["status"], shared)
            if d["status"] != "active":
                continue
            online = bool(d["last_seen"]) and now - d["last_seen"] < self.offline_after
            if self.online.get(dev) != online:
                self.publisher.publish_availability(dev, online)
                self.online[dev] = online
            reading = (d["health"] or {}).get("share")
            if shared and reading and self.shared_at.get(dev) != d["last_seen"]:
                self.publisher.publish_reading(dev, reading)
                self.shared_at[dev] = d["last_seen"]
