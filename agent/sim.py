"""Simulated trackers: the real agent loop, one thread per device, over paho-mqtt (CPython),
or each device a real MicroPython process with a capped heap running agent/boot.py."""
import json
import os
import signal
import threading
import time

from agent.device import Agent
from agent.identity import Identity
from agent.mqtt_paho import PahoTransport
from agent.runtime.micropython import MicroPythonDevice
from agent.simsensors import SimTracker
from agent.spool import Spool


def provision_dir(path, name):
    """Create a simulated device's flash directory with keys made 'on the device'."""
    os.makedirs(path, exist_ok=True)
    ident_path = os.path.join(path, "identity.json")
    if not os.path.exists(ident_path):
        ident = Identity.create(os.urandom)
        fd = os.open(ident_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        ident.save(ident_path)
        with open(os.path.join(path, "device.json"), "w") as f:
            json.dump({"name": name, "device_id": ident.hex,
                       "public_key": ident.public.hex()}, f)
    return Identity.load(ident_path)


def tracker_dirs(keys_dir, n):
    return [os.path.join(keys_dir, "tracker-%d" % (i + 1)) for i in range(n)]


def write_device_list(keys_dir, n):
    """keys_dir/devices.json: what the gateway needs to register the devices (no secrets)."""
    devices = []
    for path in tracker_dirs(keys_dir, n):
        with open(os.path.join(path, "device.json")) as f:
            devices.append(json.load(f))
    with open(os.path.join(keys_dir, "devices.json"), "w") as f:
        json.dump(devices, f, indent=1)
    return devices


class Recorder:
    """Appends every reading a simulated device produced to a JSON-lines ledger (for tests)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def record(self, dev_hex, reading):
        with self.lock:
            self.f.write(json.dumps({"device": dev_hex, "reading": reading}) + "\n")

    def wrap(self, sensors, dev_hex):
        return RecordedSensors(sensors, self, dev_hex)


class RecordedSensors:
    """Sensors whose every reading also goes to a Recorder."""

    def __init__(self, sensors, recorder, dev_hex):
        self.sensors = sensors
        self.recorder = recorder
        self.dev_hex = dev_hex

    def read(self):
        reading = self.sensors.read()
        self.recorder.record(self.dev_hex, reading)
        return reading


def save_credentials(path, user, password):
    """The device's own MQTT account, kept on its flash (credentials.json, 0600)."""
    fd = os.open(os.path.join(path, "credentials.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"mqtt_user": user, "mqtt_password": password}, f)


def device_credentials(path):
    """{"mqtt_user", "mqtt_password"} from the device's flash, or {} for an open broker."""
    try:
        with open(os.path.join(path, "credentials.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def paho_transport(path, broker, ident):
    creds = device_credentials(path)
    return PahoTransport(broker, "ek-" + ident.hex, creds.get("mqtt_user"),
                         creds.get("mqtt_password"))


def run_tracker(path, broker, config, duration, stopped, recorder=None, log=print):
    ident = Identity.load(os.path.join(path, "identity.json"))
    sensors = SimTracker(ident.hex)
    if recorder:
        sensors = recorder.wrap(sensors, ident.hex)
    transport = paho_transport(path, broker, ident)
    spool = Spool(os.path.join(path, "spool"), config.get("spool_bytes", 65536))
    agent = Agent(ident, transport, sensors, spool, config, os.urandom,
                  log=lambda m: log("[%s] %s" % (ident.hex, m)))
    try:
        agent.run(duration, stopped)
    finally:
        transport.close()


MP_MAIN = "import agent.boot\nagent.boot.main()\n"
MP_CONFIG = {"batch_max": 32}  # a 32-reading batch buffer: 1 KB less of a 64 KB heap
READING = "READING "


def run_mp_tracker(path, broker, config, duration, stopped, recorder=None, log=print,
                   heap=65536):
    """One tracker as a MicroPython process: its directory is the flash, agent/boot.py runs."""
    ident = Identity.load(os.path.join(path, "identity.json"))
    device_cfg = dict(MP_CONFIG, **config)
    device_cfg.update(broker=broker, board="sim", transport="socket",
                      echo_readings=recorder is not None)
    device_cfg.update(device_credentials(path))
    if duration is not None:
        device_cfg["duration"] = duration
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(device_cfg, f)
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write(MP_MAIN)

    def on_line(stream, line):
        if recorder is not None and line.startswith(READING):
            recorder.record(ident.hex, json.loads(line[len(READING):]))
        else:
            log("[%s] %s" % (ident.hex, line))

    dev = MicroPythonDevice(path, main="main", heap=heap, on_line=on_line, compiled=True)
    dev.start()
    while dev.running and not stopped():
        time.sleep(0.2)
    rc = dev.stop(30) if dev.running else dev.wait()
    if rc != 0:
        log("[%s] device exited with status %s" % (ident.hex, rc))
    return rc


def runner(runtime="cpython", heap=65536):
    """The function that runs one tracker: run_tracker, or run_mp_tracker with this heap."""
    if runtime == "cpython":
        return run_tracker
    return lambda *a, **kw: run_mp_tracker(*a, heap=heap, **kw)


def run(args):
    os.makedirs(args.keys, exist_ok=True)
    for i, path in enumerate(tracker_dirs(args.keys, args.trackers)):
        provision_dir(path, "tracker-%d" % (i + 1))
    devices = write_device_list(args.keys, args.trackers)
    print("simulating %d trackers on %s against %s (device list: %s)" % (
        len(devices), args.runtime, args.broker, os.path.join(args.keys, "devices.json")),
        flush=True)
    config = {"sample_interval": args.sample_interval, "upload_interval": args.upload_interval}
    recorder = Recorder(args.record) if args.record else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    target = runner(args.runtime, args.heap)
    threads = [threading.Thread(target=target, daemon=True,
                                args=(p, args.broker, config, args.duration, stop.is_set, recorder))
               for p in tracker_dirs(args.keys, args.trackers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop.set()
    for t in threads:
        t.join()
    return 0
