"""The device entry point on every board. A device's main.py is just:

    import agent.boot
    agent.boot.main()

main() reads two files from the current directory (the device's flash) and runs the agent:

identity.json   the device's keys (agent/identity.py: sk, dk, pk as hex)
config.json     a JSON object:
    broker          "mqtt://HOST:PORT" (required)
    mqtt_user       MQTT user name (optional)
    mqtt_password   MQTT password (optional)
    client_id       MQTT client id (default "ek-" + the device id in hex)
    board           "sim" (simulated sensors, the default), "pebble" or "esp32" (the sensors
                    of hw/pebble/board.py's PEBBLE or ESP32_DEVKIT, on machine.I2C/UART/ADC)
    transport       "socket" (MQTT over the port's TCP sockets, the default) or "slm" (over
                    a Nordic Serial LTE Modem on the board's modem_uart; needs a real board)
    sample_interval, upload_interval, batch_max, spool_bytes, ack_timeout, window,
    status_every, reconnect_max
                    the agent's settings (agent/device.py DEFAULTS)
    duration        seconds to run, then deliver what is queued and return (optional; for
                    tests: main() returns, so the device exits 0)
    echo_readings   print each reading as a line "READING {json}" (optional, for tests)

For settings over the air (agent/config_update.py) it reads gateway.pub (hex of the
gateway's config public key; without it, config messages are refused), config_trial (s a new
config has to reach the gateway, default 120) and keeps config.prev, config.trial and
config.seen beside config.json.

For OTA updates (agent/ota.py) it also reads manifest.json (the installed bundle's; its
version is the status message's `fw`) and release.pub (hex of the owner's release public
key, as `python -m firmware keygen` writes KEY.pub); without release.pub, offers are refused.

It also prints "HEAP peak=<bytes>" after every sealed batch: the most heap in use so far
(agent/heap.py), collected before each batch.
"""
import json
import os

from agent import ota

ota.boot()  # before the agent's other modules load: a release that cannot load is counted too

from agent import clock, heap  # noqa: E402
from agent.device import DEFAULTS, Agent  # noqa: E402
from agent.identity import Identity  # noqa: E402
from agent.mqtt import MQTTClient  # noqa: E402
from agent.proto import down_topic  # noqa: E402
from agent.spool import Spool  # noqa: E402


class Device(Agent):
    """The agent, reporting the heap after every batch it seals, and taking OTA updates
    (agent/ota.py): it runs the version of the manifest on its flash."""

    def __init__(self, *args):
        Agent.__init__(self, *args)
        self.ota_topic = down_topic(self.identity.hex, "ota")
        self.updater = ota.Updater(self.seal_ota, self.notes)
        self.firmware = self.updater.version or self.firmware

    def seal_batch(self):
        heap.collect()
        Agent.seal_batch(self)
        heap.note()
        print("HEAP peak=%d" % heap.peak)

    def seal_ota(self, report):
        self._spool(ota.KIND, int(clock.unix_time()), None, None, report)

    def step(self):
        self.updater.poll(self.transport.session)
        return Agent.step(self)

    def on_message(self, topic, payload):
        if topic == self.ota_topic:
            self.updater.receive(payload)
            return
        if topic.endswith("/config"):  # settings: agent/config_update.py, loaded now
            from agent.config_update import take
            self.status_due |= take(self, payload)
            return
        if Agent.on_message(self, topic, payload) and self.updater.acked():
            self.status_due = True  # a status with the confirmed version (or config)


class Echo:
    """Sensors that also print each reading, for a launcher to record."""

    def __init__(self, sensors):
        self.sensors = sensors

    def read(self):
        reading = self.sensors.read()
        print("READING " + json.dumps(reading))
        return reading


def main():
    heap.collect()  # what loading the code left behind
    cfg = load_json("config.json")
    ident = Identity.load("identity.json")
    transport = open_transport(cfg, cfg.get("client_id") or "ek-" + ident.hex)
    sensors = open_sensors(cfg.get("board", "sim"), ident.hex)
    if cfg.get("echo_readings"):
        sensors = Echo(sensors)
    spool = Spool("spool", cfg.get("spool_bytes", DEFAULTS["spool_bytes"]))
    settings = {}
    for key in DEFAULTS:
        if key in cfg:
            settings[key] = cfg[key]
    heap.collect()
    agent = Device(ident, transport, sensors, spool, settings, os.urandom)
    if ota.exists("config.trial"):  # a config on trial, or rolled back: agent/config_update.py
        from agent.config_update import take
        take(agent, None)
    try:
        agent.run(cfg.get("duration"))
    finally:
        transport.close()


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise OSError("boot: no %s on the flash" % path)
    except ValueError:
        raise ValueError("boot: %s is not valid JSON" % path)


def parse_broker(url):
    """'mqtt://host:port' -> (host, port); the port defaults to 1883."""
    if not isinstance(url, str) or not url.startswith("mqtt://"):
        raise ValueError("boot: broker must be mqtt://HOST:PORT, not %r" % (url,))
    host, _, port = url[7:].rstrip("/").partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError("boot: broker must be mqtt://HOST:PORT, not %r" % (url,))
    return host, int(port) if port else 1883


def board_config(name):
    from hw.pebble import board
    if name == "pebble":
        return board.PEBBLE
    if name == "esp32":
        return board.ESP32_DEVKIT
    raise ValueError("boot: unknown board %r (sim, pebble or esp32)" % (name,))


def open_transport(cfg, client_id):
    host, port = parse_broker(cfg.get("broker"))
    kind = cfg.get("transport", "socket")
    connect_socket = None
    if kind == "slm":
        import machine

        from agent.modem import SLM
        u = board_config(cfg.get("board"))["modem_uart"]
        uart = machine.UART(u["id"], u["baud"], tx=machine.Pin(u["tx"]), rx=machine.Pin(u["rx"]))
        connect_socket = SLM(uart).connect_socket
    elif kind != "socket":
        raise ValueError("boot: unknown transport %r (socket or slm)" % (kind,))
    return MQTTClient(client_id, host, port, cfg.get("mqtt_user"), cfg.get("mqtt_password"),
                      connect_socket=connect_socket)


def open_sensors(name, seed):
    if name == "sim":
        from agent.simsensors import SimTracker
        return SimTracker(seed)
    import machine

    from hw.pebble.board import open_sensors as open_board
    b = board_config(name)
    i = b["i2c"]
    i2c = machine.I2C(i["id"], scl=machine.Pin(i["scl"]), sda=machine.Pin(i["sda"]), freq=i["freq"])
    if b["gps_enable"] is not None:
        machine.Pin(b["gps_enable"], machine.Pin.OUT, value=1)
    g = b["gps_uart"]
    uart = machine.UART(g["id"], g["baud"], tx=machine.Pin(g["tx"]), rx=machine.Pin(g["rx"]))
    return open_board(i2c, uart, machine.ADC(b["battery"]["adc"]), board=b)
