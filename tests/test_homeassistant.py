"""The gateway's Home Assistant bridge over real Mosquitto: configs, removal on revoke,
availability, and only the readings both the device and its owner chose to share."""
import json
import os
import time

import pytest

from gateway.integrations import discovery
from gateway.integrations.homeassistant import Bridge
from gateway.store.database import Store
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

A = "a1" * 8
B = "b2" * 8


def test_bridge_publishes_changes_only(tmp_path, broker):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    store.add_device(A, b"\x04" + os.urandom(64), "garage")
    store.add_device(B, b"\x04" + os.urandom(64), "attic")
    health = {"fw": "0.1.0", "share": {"temp": 2345, "hum": 4500, "pres": 101325}}
    store.db.execute("UPDATE devices SET last_seen = ?, health = ? WHERE id = ?",
                     (time.time(), json.dumps(health), A))
    store.revoke_device(B)
    discovery.set_shares(data, A, ["temp"])

    sub = Subscriber(broker.port, "#")
    bridge = Bridge(data, broker.url, "gw1")
    bridge.publisher.start()
    try:
        bridge.tick(store.devices(), discovery.load_shares(data), time.time())
        topics = lambda: {t: p for t, p in sub.messages}  # noqa: E731
        wait_for(lambda: "edgekeep/%s/state" % A in topics(), what="shared state")
        config = json.loads(topics()["homeassistant/device/%s/config" % A])
        assert config["dev"]["via_device"] == discovery.gateway_identifier("gw1")
        assert topics()["homeassistant/device/%s/config" % B] == b""
        assert topics()["edgekeep/%s/availability" % A] == b"online"
        assert json.loads(topics()["edgekeep/%s/state" % A]) == {"temp": 23.45}  # hum not opted in

        before = len(sub.messages)
        bridge.tick(store.devices(), discovery.load_shares(data), time.time())
        time.sleep(0.5)
        assert len(sub.messages) == before, "an unchanged tick must publish nothing"

        bridge.tick(store.devices(), discovery.load_shares(data), time.time() + 3600)
        wait_for(lambda: topics()["edgekeep/%s/availability" % A] == b"offline", what="offline")
    finally:
        bridge.publisher.stop()
        sub.close()


def test_device_shares_only_the_fields_its_config_names(tmp_path, broker):
    import cbor2

    from agent.device import Agent
    from agent.identity import Identity
    from agent.mqtt_paho import PahoTransport
    from agent.simsensors import SimTracker
    from agent.spool import Spool

    ident = Identity.create(os.urandom)
    sub = Subscriber(broker.port, "ek/+/up/s")
    transport = PahoTransport(broker.url, "ek-" + ident.hex)
    agent = Agent(ident, transport, SimTracker(1), Spool(str(tmp_path / "spool")),
                  {"share": ["temp", "hum"], "sample_interval": 0.2}, os.urandom)
    try:
        agent.sample()
        agent.seal_status()
        agent.run(duration=1, flush_timeout=1)
        wait_for(lambda: sub.messages, what="a status message")
        health = [cbor2.loads(cbor2.loads(p).value[2])[8] for _, p in sub.messages]
        shared = [h["share"] for h in health if "share" in h]
        assert shared and set(shared[0]) == {"temp", "hum"}
        assert all(isinstance(v, int) for v in shared[0].values())
    finally:
        transport.close()
        sub.close()
