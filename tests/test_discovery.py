"""Home Assistant discovery: payloads checked against HA's documented schema, publishing over Mosquitto.

`ha_expand_and_validate` re-states the rules of HA core's MQTT integration
(homeassistant/components/mqtt): abbreviations.py (ABBREVIATIONS, DEVICE_ABBREVIATIONS,
ORIGIN_ABBREVIATIONS: only the keys listed there are expanded), discovery.py
(TOPIC_MATCHER, _replace_all_abbreviations), schemas.py (DEVICE_DISCOVERY_SCHEMA: `device`,
`components`, `origin` required, no other root keys than the shared options; a device needs
`identifiers` or `connections`; an origin needs `name`; each component needs `platform`, and
entity platforms a `unique_id`), and the platform schemas (sensor and binary_sensor require
`state_topic`; unknown component keys are dropped silently, so they are errors here).
"""
import json
import re
import subprocess
import sys

import pytest

from gateway.integrations import discovery
from gateway.mqtt.broker import GATEWAY_USER, HOMEASSISTANT_USER
from tests.helpers.mqtt import Client
from tests.helpers.paths import REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

# HA core mqtt/abbreviations.py, the entries for the options used below.
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "cmps": "components", "dev": "device", "dev_cla": "device_class",
    "ent_cat": "entity_category", "json_attr_t": "json_attributes_topic", "name": "name",
    "o": "origin", "p": "platform", "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available", "pl_off": "payload_off", "pl_on": "payload_on",
    "src_type": "source_type", "stat_cla": "state_class", "stat_t": "state_topic", "t": "topic",
    "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {"cns": "connections", "cu": "configuration_url", "ids": "identifiers",
                        "name": "name", "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id",
                        "hw": "hw_version", "sw": "sw_version", "sa": "suggested_area",
                        "sn": "serial_number"}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}
TOPIC_MATCHER = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)"
                           r"?(?P<object_id>[a-zA-Z0-9_-]+)/config")

# schemas.py: MQTT_ENTITY_DEVICE_INFO_SCHEMA, MQTT_ORIGIN_INFO_SCHEMA, DEVICE_DISCOVERY_SCHEMA.
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "model_id", "name",
               "hw_version", "serial_number", "sw_version", "via_device", "suggested_area",
               "configuration_url"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"availability_topic", "availability_template", "payload_available",
                     "payload_not_available", "availability_mode", "availability"}
ROOT_KEYS = AVAILABILITY_KEYS | {"device", "components", "origin", "state_topic", "command_topic",
                                 "message_expiry_interval", "qos", "encoding"}
ENTITY_KEYS = AVAILABILITY_KEYS | {"platform", "name", "unique_id", "entity_category", "icon",
                                   "enabled_by_default", "json_attributes_topic", "qos"}
PLATFORM_KEYS = {  # sensor.py, binary_sensor.py, device_tracker.py (discovery schema)
    "sensor": ENTITY_KEYS | {"state_topic", "value_template", "unit_of_measurement",
                             "device_class", "state_class", "expire_after"},
    "binary_sensor": ENTITY_KEYS | {"state_topic", "value_template", "payload_on", "payload_off",
                                    "device_class", "expire_after", "off_delay"},
    "device_tracker": ENTITY_KEYS | {"state_topic", "value_template", "source_type",
                                     "payload_home", "payload_not_home"},
}
STATE_TOPIC_REQUIRED = {"sensor", "binary_sensor"}
# HA sensor/binary_sensor device classes used here, with the units HA accepts for them.
SENSOR_UNITS = {"temperature": {"°C", "°F", "K"}, "humidity": {"%"},
                "atmospheric_pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
                "illuminance": {"lx"}, "voltage": {"V", "mV", "µV", "kV", "MV"}}
BINARY_CLASSES = {"motion", "connectivity"}


def expand(d, table):
    return {table.get(k, k): v for k, v in d.items()}


def ha_expand_and_validate(topic, payload):
    """What HA would build from a device discovery message; AssertionError where HA would refuse."""
    m = TOPIC_MATCHER.fullmatch(topic[len("homeassistant/"):])
    assert topic.startswith("homeassistant/") and m and m["component"] == "device", topic
    cfg = expand(json.loads(payload), ABBREVIATIONS)
    assert set(cfg) <= ROOT_KEYS, set(cfg) - ROOT_KEYS
    assert {"device", "components", "origin"} <= set(cfg)
    cfg["device"] = expand(cfg["device"], DEVICE_ABBREVIATIONS)
    assert set(cfg["device"]) <= DEVICE_KEYS, set(cfg["device"]) - DEVICE_KEYS
    assert cfg["device"].get("identifiers") or cfg["device"].get("connections")
    assert all(isinstance(i, str) for i in cfg["device"]["identifiers"])
    cfg["origin"] = expand(cfg["origin"], ORIGIN_ABBREVIATIONS)
    assert set(cfg["origin"]) <= ORIGIN_KEYS and isinstance(cfg["origin"].get("name"), str)
    check_availability(cfg)
    comps = {}
    for cid, comp in cfg["components"].items():
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", cid), cid
        comp = expand(comp, ABBREVIATIONS)
        check_availability(comp)
        platform = comp.get("platform")
        assert platform in PLATFORM_KEYS, (cid, platform)
        assert set(comp) <= PLATFORM_KEYS[platform], (cid, set(comp) - PLATFORM_KEYS[platform])
        assert isinstance(comp.get("unique_id"), str), cid
        if platform in STATE_TOPIC_REQUIRED:
            assert comp.get("state_topic") or cfg.get("state_topic"), cid
        if platform == "sensor" and "device_class" in comp:
            assert comp["unit_of_measurement"] in SENSOR_UNITS[comp["device_class"]], cid
        if platform == "binary_sensor":
            assert comp["device_class"] in BINARY_CLASSES, cid
        if platform == "device_tracker":
            assert comp["source_type"] in ("gps", "router", "bluetooth", "bluetooth_le")
        comps[cid] = comp
    cfg["components"] = comps
    return cfg


def check_availability(cfg):
    for entry in cfg.get("availability", []):
        entry.update(expand(entry, ABBREVIATIONS))
        for k in [k for k in entry if k not in ("topic", "payload_available",
                                                "payload_not_available", "value_template")]:
            entry.pop(k)
        assert isinstance(entry.get("topic"), str)
    assert cfg.get("availability_mode", "latest") in ("all", "any", "latest")


GW = "pi-1"
A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


def tracker(dev=A, **kw):
    return dict({"id": dev, "name": "van-3", "kind": "tracker", "status": "active",
                 "health": {"fw": "0.4.1"}}, **kw)


def test_gateway_is_a_device_that_devices_route_through():
    gw = ha_expand_and_validate(discovery.config_topic(discovery.gateway_identifier(GW)),
                                json.dumps(discovery.gateway_config(GW)))
    dev = ha_expand_and_validate(discovery.config_topic(A),
                                 json.dumps(discovery.device_config(GW, tracker())))
    assert dev["device"]["via_device"] in gw["device"]["identifiers"]
    assert gw["components"]["status"]["state_topic"] == discovery.gateway_availability_topic(GW)


def test_a_device_shares_nothing_by_default():
    cfg = ha_expand_and_validate(discovery.config_topic(A),
                                 json.dumps(discovery.device_config(GW, tracker())))
    assert list(cfg["components"]) == ["online"]
    assert cfg["components"]["online"]["device_class"] == "connectivity"
    assert cfg["device"] == {"identifiers": ["edgekeep-" + A], "name": "van-3",
                             "manufacturer": "EdgeKeep", "model": "tracker",
                             "via_device": "edgekeep-gw-" + GW, "sw_version": "0.4.1"}
    # Unavailable when either the gateway or the device is.
    assert cfg["availability_mode"] == "all"
    assert [a["topic"] for a in cfg["availability"]] == [
        "edgekeep/gateway/%s/availability" % GW, "edgekeep/%s/availability" % A]


def test_shared_readings_become_sensors_with_ha_units():
    shared = ["temp", "hum", "pres", "gas", "light", "batt", "position"]
    cfg = ha_expand_and_validate(discovery.config_topic(A),
                                 json.dumps(discovery.device_config(GW, tracker(), shared)))
    comps = cfg["components"]
    assert set(comps) == set(shared) | {"online"}
    assert {c["unique_id"] for c in comps.values()} == {"edgekeep_%s_%s" % (A, f) for f in comps}
    assert (comps["temp"]["device_class"], comps["temp"]["unit_of_measurement"]) == ("temperature", "°C")
    assert comps["temp"]["value_template"] == "{{ value_json.temp }}"
    assert comps["position"]["platform"] == "device_tracker"
    assert comps["position"]["json_attributes_topic"] == "edgekeep/%s/position" % A


def test_cameras_get_a_motion_sensor():
    cam = tracker(B, kind="camera", name=None, health=None)
    cfg = ha_expand_and_validate(discovery.config_topic(B),
                                 json.dumps(discovery.device_config(GW, cam)))
    assert cfg["components"]["motion"]["device_class"] == "motion"
    assert cfg["components"]["motion"]["state_topic"] == "edgekeep/%s/motion" % B
    assert cfg["device"]["name"] == B and "sw_version" not in cfg["device"]


def test_only_known_readings_can_be_shared(tmp_path):
    with pytest.raises(ValueError, match="cannot share ax"):
        discovery.device_config(GW, tracker(), ["temp", "ax"])
    with pytest.raises(ValueError, match="cannot share"):
        discovery.set_shares(tmp_path, A, ["secret"])
    discovery.set_shares(tmp_path, A, ["temp"])
    discovery.set_shares(tmp_path, B, ["hum", "position"])
    discovery.set_shares(tmp_path, B, [])
    assert discovery.load_shares(tmp_path) == {A: ["temp"]}


def test_state_carries_only_shared_readings_in_ha_units():
    reading = {"time": 1.0, "temp": 2150, "hum": 4012, "pres": 101325, "gas": 52000,
               "light": None, "ax": 5, "ay": -3, "az": 1000, "lat": 523456789, "lon": 134567890,
               "batt": 3712}
    assert discovery.state_payload(reading, ["temp", "pres", "batt", "light"]) == {
        "temp": 21.5, "pres": 1013.25, "batt": 3.712}
    assert discovery.state_payload(reading, []) == {}
    assert discovery.position_payload(reading) == {"latitude": 52.3456789, "longitude": 13.456789}
    assert discovery.position_payload(dict(reading, lat=None)) is None


@pytest.fixture
def broker_options():
    return {"auth": True}


def test_publisher_over_a_locked_down_broker(broker):
    ha = Client(broker.port, HOMEASSISTANT_USER, broker.credentials.set_password(HOMEASSISTANT_USER))
    ha.subscribe("homeassistant/#", "edgekeep/#")
    pub = discovery.Publisher(broker.url, GW, GATEWAY_USER, broker.gateway_password()).start()
    try:
        revoked = tracker(B, status="revoked")
        pub.sync([tracker(), revoked], {A: ["temp", "position"], B: ["temp"]})
        wait_for(lambda: ("homeassistant/device/%s/config" % B, b"") in ha.messages,
                 what="the revoked device's empty config")
        got = dict(ha.messages)
        assert got["edgekeep/gateway/%s/availability" % GW] == b"online"
        cfg = ha_expand_and_validate("homeassistant/device/%s/config" % A,
                                     got["homeassistant/device/%s/config" % A])
        assert set(cfg["components"]) == {"temp", "position", "online"}
        ha_expand_and_validate("homeassistant/device/edgekeep-gw-%s/config" % GW,
                               got["homeassistant/device/edgekeep-gw-%s/config" % GW])

        pub.publish_availability(A, True)
        pub.publish_reading(A, {"temp": 2150, "hum": 4000, "lat": 10, "lon": 20})
        pub.publish_reading(B, {"temp": 1})       # revoked: nothing shared any more
        wait_for(lambda: "edgekeep/%s/position" % A in dict(ha.messages), what="position")
        got = dict(ha.messages)
        assert json.loads(got["edgekeep/%s/state" % A]) == {"temp": 21.5}
        assert got["edgekeep/%s/availability" % A] == b"online"
        assert "edgekeep/%s/state" % B not in got

        # Home Assistant restarted: it announces itself and gets every config again.
        ha.messages.clear()
        ha.publish("homeassistant/status", b"online")
        wait_for(lambda: "homeassistant/device/%s/config" % A in dict(ha.messages),
                 what="configs re-sent after HA's birth message")

        pub.remove_device(A)
        wait_for(lambda: ("homeassistant/device/%s/config" % A, b"") in ha.messages,
                 what="the empty config on revoke")
    finally:
        pub.stop()
    wait_for(lambda: ("edgekeep/gateway/%s/availability" % GW, b"offline") in ha.messages,
             what="the gateway going offline")
    # The broker forgot A's config: a new subscriber gets only what is published after.
    gw = Client(broker.port, GATEWAY_USER, broker.gateway_password())
    gw.subscribe("homeassistant/device/%s/config" % A)
    gw.publish("homeassistant/device/%s/config" % A, b"marker")
    wait_for(lambda: gw.messages, what="the marker")
    assert gw.messages == [("homeassistant/device/%s/config" % A, b"marker")]
    gw.close()
    ha.close()


def test_home_assistant_account_cannot_write_discovery_or_device_topics(broker):
    ha = Client(broker.port, HOMEASSISTANT_USER, broker.credentials.set_password(HOMEASSISTANT_USER))
    gw = Client(broker.port, GATEWAY_USER, broker.gateway_password())
    gw.subscribe("#")
    for topic in ("homeassistant/device/%s/config" % A, "ek/%s/down/ack" % A, "edgekeep/%s/state" % A):
        ha.publish(topic, b"forged")
    ha.publish("homeassistant/status", b"online")
    wait_for(lambda: gw.messages, what="HA's status message")
    assert gw.messages == [("homeassistant/status", b"online")]
    gw.close()
    ha.close()


def test_cli_records_shares_and_publishes_discovery(broker, tmp_path):
    from gateway.store.database import Store
    data = str(tmp_path / "data")
    store = Store.open(data)
    store.add_device(A, b"\x04" + bytes(64), "van-3", "tracker")
    store.close()

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "gateway", "broker", *args], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "shares temp, hum" in cli("share", "--data-dir", data, "--device", A, "--readings", "temp,hum")
    assert "published discovery for 1 device(s)" in cli(
        "discovery", "--data-dir", data, "--broker", broker.url, "--username", GATEWAY_USER,
        "--password-file", broker.credentials.gateway_secret, "--gateway-id", GW)
    ha = Client(broker.port, HOMEASSISTANT_USER, broker.credentials.set_password(HOMEASSISTANT_USER))
    ha.subscribe("homeassistant/device/%s/config" % A)     # retained: there for a later subscriber
    wait_for(lambda: ha.messages, what="the retained config")
    cfg = ha_expand_and_validate(*ha.messages[0])
    assert set(cfg["components"]) == {"temp", "hum", "online"}
    ha.close()
