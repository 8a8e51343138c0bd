"""Home Assistant MQTT discovery: one device-based config per EdgeKeep device, via the gateway.

Home Assistant's device discovery (HA 2024.11+) takes one retained JSON document per device
on `homeassistant/device/<id>/config`: `dev` (the device), `o` (origin), `cmps` (its
entities, each with a platform `p` and a `uniq_id`), and shared options such as availability.
An empty retained payload removes the device. Keys are HA's documented abbreviations.

What HA sees of a device is only what its owner opted to share in plaintext (per device,
default none; kept in `<data_dir>/homeassistant.json`), plus a motion sensor for cameras.
Everything else stays encrypted for the owner. Topics the gateway publishes for HA:

    edgekeep/gateway/<gw>/availability   online / offline (the gateway's MQTT will), retained
    edgekeep/<id>/availability           online / offline, retained
    edgekeep/<id>/state                  JSON of the shared readings in HA units, retained
    edgekeep/<id>/position               {"latitude", "longitude"} if position is shared
    edgekeep/<id>/motion                 ON / OFF (cameras)
    edgekeep/gateway/<gw>/alert          each alert's start and end (JSON, gateway/alerts/)
    edgekeep/gateway/<gw>/alerts/<rule>  ON while an alert of the rule is active, retained
"""
import json
import logging
import os
import re
import threading

from gateway.mqtt.client import new_client

log = logging.getLogger("edgekeep.discovery")

PREFIX = "homeassistant"
HA_STATUS = PREFIX + "/status"      # HA's birth message; configs are re-sent on "online"
ORIGIN = {"name": "EdgeKeep"}
PUBLISH_WAIT = 10   # seconds a publish waits for the broker's PUBACK
STOP_WAIT = 2       # ... once stopping: stop() takes at most about this long
SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")   # what HA accepts as a discovery object id

# Readings an owner may share: field -> (entity name, device class, unit, scale from the
# wire unit of docs/protocol.md to the HA unit).
SENSORS = {
    "temp": ("Temperature", "temperature", "°C", 0.01),
    "hum": ("Humidity", "humidity", "%", 0.01),
    "pres": ("Pressure", "atmospheric_pressure", "hPa", 0.01),
    "gas": ("Gas resistance", None, "Ω", 1),
    "light": ("Illuminance", "illuminance", "lx", 0.01),
    "batt": ("Battery voltage", "voltage", "V", 0.001),
}
POSITION = "position"               # lat + lon, as a device_tracker
SHAREABLE = tuple(SENSORS) + (POSITION,)


def config_topic(object_id):
    return "%s/device/%s/config" % (PREFIX, object_id)


def gateway_availability_topic(gateway_id):
    return "edgekeep/gateway/%s/availability" % gateway_id


def device_topic(dev_hex, what):
    return "edgekeep/%s/%s" % (dev_hex, what)


def alert_topic(gateway_id):
    return "edgekeep/gateway/%s/alert" % gateway_id


def alert_state_topic(gateway_id, rule):
    return "edgekeep/gateway/%s/alerts/%s" % (gateway_id, rule)


def alert_components(gateway_id, rules):
    """The gateway's alert entities: an event entity (each alert's start and end, with its
    notice as attributes) and a problem binary sensor per rule."""
    ident = gateway_identifier(gateway_id)
    cmps = {"alert": {"p": "event", "name": "Alert", "uniq_id": ident + "_alert",
                      "evt_typ": ["fired", "resolved"], "stat_t": alert_topic(gateway_id)}}
    for rule in rules:
        cmps["alert_" + rule] = {
            "p": "binary_sensor", "name": "Alert " + rule.replace("_", " "),
            "uniq_id": "%s_alert_%s" % (ident, rule), "dev_cla": "problem",
            "stat_t": alert_state_topic(gateway_id, rule), "pl_on": "ON", "pl_off": "OFF"}
    return cmps


def gateway_identifier(gateway_id):
    return "edgekeep-gw-" + gateway_id


def gateway_config(gateway_id):
    """The gateway itself, so that devices can name it as their `via_device`."""
    ident = gateway_identifier(gateway_id)
    return {
        "dev": {"ids": [ident], "name": "EdgeKeep gateway %s" % gateway_id, "mf": "EdgeKeep",
                "mdl": "gateway"},
        "o": ORIGIN,
        "cmps": {"status": {
            "p": "binary_sensor", "name": "Gateway", "uniq_id": ident + "_status",
            "dev_cla": "connectivity", "stat_t": gateway_availability_topic(gateway_id),
            "pl_on": "online", "pl_off": "offline", "ent_cat": "diagnostic"}},
    }


def device_config(gateway_id, device, shared=()):
    """Discovery document for a device row ({id, name, kind, health}) and its shared readings."""
    dev = device["id"]
    check_shared(shared)
    info = {"ids": ["edgekeep-" + dev], "name": device.get("name") or dev, "mf": "EdgeKeep",
            "mdl": device.get("kind") or "tracker", "via_device": gateway_identifier(gateway_id)}
    fw = (device.get("health") or {}).get("fw")
    if fw:
        info["sw"] = str(fw)
    # Whether the device is in touch: operational, not sensor data, so always there. Its own
    # availability is the gateway's alone, so that it reads "off", not "unavailable".
    cmps = {"online": {"p": "binary_sensor", "name": "Online", "uniq_id": "edgekeep_%s_online" % dev,
                       "dev_cla": "connectivity", "stat_t": device_topic(dev, "availability"),
                       "pl_on": "online", "pl_off": "offline", "ent_cat": "diagnostic",
                       "avty": [{"t": gateway_availability_topic(gateway_id)}]}}
    for field in shared:
        uid = "edgekeep_%s_%s" % (dev, field)
        if field == POSITION:
            cmps[field] = {"p": "device_tracker", "name": "Position", "uniq_id": uid,
                           "src_type": "gps", "json_attr_t": device_topic(dev, "position")}
            continue
        name, device_class, unit, _ = SENSORS[field]
        cmps[field] = {"p": "sensor", "name": name, "uniq_id": uid,
                       "stat_t": device_topic(dev, "state"),
                       "val_tpl": "{{ value_json.%s }}" % field,
                       "unit_of_meas": unit, "stat_cla": "measurement"}
        if device_class:
            cmps[field]["dev_cla"] = device_class
    if device.get("kind") == "camera":
        cmps["motion"] = {"p": "binary_sensor", "name": "Motion", "uniq_id": "edgekeep_%s_motion" % dev,
                          "dev_cla": "motion", "stat_t": device_topic(dev, "motion"),
                          "pl_on": "ON", "pl_off": "OFF"}
    return {
        "dev": info,
        "o": ORIGIN,
        "cmps": cmps,
        # Available only while both the gateway and the device are.
        "avty": [{"t": gateway_availability_topic(gateway_id)},
                 {"t": device_topic(dev, "availability")}],
        "avty_mode": "all",
    }


def state_payload(reading, shared):
    """The shared readings of one decoded reading (wire units, None if absent) in HA units."""
    out = {}
    for field in shared:
        if field in SENSORS and reading.get(field) is not None:
            out[field] = round(reading[field] * SENSORS[field][3], 3)
    return out


def position_payload(reading):
    if reading.get("lat") is None or reading.get("lon") is None:
        return None
    return {"latitude": reading["lat"] / 1e7, "longitude": reading["lon"] / 1e7}


def check_shared(shared):
    unknown = set(shared) - set(SHAREABLE)
    if unknown:
        raise ValueError("cannot share %s: shareable readings are %s"
                         % (", ".join(sorted(unknown)), ", ".join(SHAREABLE)))


# -- the owner's choices -------------------------------------------------------------------

def shares_path(data_dir):
    return os.path.join(data_dir, "homeassistant.json")


def load_shares(data_dir):
    """device id -> readings its owner shares with Home Assistant (absent: none)."""
    try:
        with open(shares_path(data_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def set_shares(data_dir, dev_hex, shared):
    check_shared(shared)
    shares = load_shares(data_dir)
    if shared:
        shares[dev_hex] = list(shared)
    else:
        shares.pop(dev_hex, None)
    tmp = shares_path(data_dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(shares, f, indent=1, sort_keys=True)
    os.replace(tmp, shares_path(data_dir))


# -- publishing ------------------------------------------------------------------------------

class Publisher:
    """The gateway's connection for Home Assistant: discovery, availability and shared state.

    Its MQTT will marks the gateway (and so every device behind it) unavailable if the
    gateway dies; configs are retained and re-sent whenever HA announces itself online.
    """

    def __init__(self, broker, gateway_id, username=None, password=None):
        if not SAFE_ID.match(gateway_id):
            raise ValueError("gateway id must match [a-zA-Z0-9_-]+: %r" % gateway_id)
        self.gateway_id = gateway_id
        self.configs = {}       # object id -> config, for re-sending on HA's birth
        self.shares = {}        # device id -> shared readings
        self.lock = threading.Lock()
        self.client, b = new_client(broker, "edgekeep-ha-" + gateway_id, username, password)
        self.host, self.port = b.host, b.port
        self.client.will_set(gateway_availability_topic(gateway_id), "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.message_callback_add(HA_STATUS, self._on_ha_status)
        self.connected = threading.Event()
        self.closing = threading.Event()
        self.configs[gateway_identifier(gateway_id)] = gateway_config(gateway_id)

    def start(self, timeout=15):
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("discovery: no CONNACK from broker %s:%d" % (self.host, self.port))
        return self

    def stop(self):
        """Mark the gateway offline and disconnect, in about STOP_WAIT seconds at most; never
        raises. With the broker gone the mark cannot go out: a broker that comes back has
        the gateway's will ("offline") or HA's own timeout to show it."""
        self.closing.set()
        try:
            self._publish(gateway_availability_topic(self.gateway_id), "offline")
        except Exception as e:  # the broker is gone, or the connection with it
            log.warning("discovery: could not mark the gateway offline (%s)", e)
        try:
            self.client.disconnect()
        except Exception as e:
            log.warning("discovery: disconnect failed (%s)", e)
        self.client.loop_stop()

    def sync(self, devices, shares):
        """Publish every active device's config and remove every revoked one's."""
        for d in devices:
            if d["status"] == "active":
                self.publish_device(d, shares.get(d["id"], ()))
            else:
                self.remove_device(d["id"])

    def publish_device(self, device, shared=()):
        config = device_config(self.gateway_id, device, shared)
        with self.lock:
            self.configs[device["id"]] = config
            self.shares[device["id"]] = tuple(shared)
        self._publish(config_topic(device["id"]), json.dumps(config, ensure_ascii=False))

    def remove_device(self, dev_hex):
        """An empty retained config: HA removes the device and the broker forgets the config."""
        with self.lock:
            self.configs.pop(dev_hex, None)
            self.shares.pop(dev_hex, None)
        self._publish(config_topic(dev_hex), "")
        self._publish(device_topic(dev_hex, "availability"), "offline")

    def publish_availability(self, dev_hex, online):
        self._publish(device_topic(dev_hex, "availability"), "online" if online else "offline")

    def publish_reading(self, dev_hex, reading):
        """Publish what the owner shares of one decoded reading; nothing if nothing is shared."""
        shared = self.shares.get(dev_hex, ())
        state = state_payload(reading, shared)
        if state:
            self._publish(device_topic(dev_hex, "state"), json.dumps(state))
        position = position_payload(reading) if POSITION in shared else None
        if position:
            self._publish(device_topic(dev_hex, "position"), json.dumps(position))

    def publish_motion(self, dev_hex, detected):
        self._publish(device_topic(dev_hex, "motion"), "ON" if detected else "OFF", retain=False)

    def add_alerts(self, rules):
        """Add the alert entities (alert_components) to the gateway's config and send it."""
        ident = gateway_identifier(self.gateway_id)
        with self.lock:
            old = self.configs[ident]
            config = self.configs[ident] = dict(
                old, cmps={**old["cmps"], **alert_components(self.gateway_id, rules)})
        self._publish(config_topic(ident), json.dumps(config, ensure_ascii=False))

    def publish_alert(self, payload):
        """One alert notice (JSON text with event_type) for the event entity; raises unless
        the broker took it."""
        self._publish(alert_topic(self.gateway_id), payload, retain=False, confirm=True)

    def publish_alert_state(self, rule, on):
        self._publish(alert_state_topic(self.gateway_id, rule), "ON" if on else "OFF",
                      confirm=True)

    def _publish(self, topic, payload, retain=True, confirm=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(STOP_WAIT if self.closing.is_set() else PUBLISH_WAIT)
        if confirm and not info.is_published():
            raise ConnectionError("the broker did not take %s" % topic)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the discovery client: %s", reason_code)
            return
        client.subscribe(HA_STATUS, qos=1)
        client.publish(gateway_availability_topic(self.gateway_id), "online", qos=1, retain=True)
        self._resend(client)
        self.connected.set()

    def _on_ha_status(self, client, userdata, msg):
        if msg.payload == b"online":
            self._resend(client)

    def _resend(self, client):
        with self.lock:
            configs = list(self.configs.items())
        for object_id, config in configs:
            client.publish(config_topic(object_id), json.dumps(config, ensure_ascii=False),
                           qos=1, retain=True)
