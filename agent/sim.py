"""Simulated trackers: the real agent loop, one thread per device, over paho-mqtt."""
import json
import os
import signal
import threading
import time

from agent.device import Agent
from agent.identity import Identity
from agent.mqtt_paho import PahoTransport
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

    def wrap(self, sensors, dev_hex):
        read = sensors.read
        recorder = self

        class Recorded:
            def read(self):
                r = read()
                with recorder.lock:
                    recorder.f.write(json.dumps({"device": dev_hex, "reading": r}) + "\n")
                return r
        return Recorded()


def run_tracker(path, broker, config, duration, stopped, recorder=None, log=print):
    ident = Identity.load(os.path.join(path, "identity.json"))
    sensors = SimTracker(ident.hex)
    if recorder:
        sensors = recorder.wrap(sensors, ident.hex)
    transport = PahoTransport(broker, "ek-" + ident.hex)
    spool = Spool(os.path.join(path, "spool"), config.get("spool_bytes", 65536))
    agent = Agent(ident, transport, sensors, spool, config, os.urandom,
                  log=lambda m: log("[%s] %s" % (ident.hex, m)))
    try:
        agent.run(duration, stopped)
    finally:
        transport.close()


def run(args):
    os.makedirs(args.keys, exist_ok=True)
    for i, path in enumerate(tracker_dirs(args.keys, args.trackers)):
        provision_dir(path, "tracker-%d" % (i + 1))
    devices = write_device_list(args.keys, args.trackers)
    print("simulating %d trackers against %s (device list: %s)" % (
        len(devices), args.broker, os.path.join(args.keys, "devices.json")), flush=True)
    config = {"sample_interval": args.sample_interval, "upload_interval": args.upload_interval}
    recorder = Recorder(args.record) if args.record else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    threads = [threading.Thread(target=run_tracker, daemon=True,
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
