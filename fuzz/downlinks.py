"""The device's downlink handlers with a fake transport and a real spool, object queue and OTA
receiver on a temporary flash directory: the tracker (agent/boot.py Device, with OTA), the
camera (agent/camera.py CameraAgent). Used by fuzz/targets.py and tests/test_downlinks.py.

The process's working directory becomes the flash (agent/ota.py uses relative paths)."""
import hashlib
import json
import os
import tempfile

from agent import cbor, p256
from agent.identity import Identity
from agent.objects import ObjectQueue
from agent.ota_receive import OFFER_CHUNK, OFFER_MANIFEST, OFFER_SIGNATURE, OFFER_VERSION
from agent.spool import Spool

from .corpus import OID

RELEASE = "9.9.9"
OTA_CHUNK = 16
OTA_FILE = bytes(range(100))


class Transport:
    connected = True
    session = 1

    def __init__(self):
        self.on_message = None
        self.published = 0

    def subscribe(self, topic):
        pass

    def connect(self):
        pass

    def poll(self, timeout):
        pass

    def publish(self, topic, payload):
        self.published += 1


class Sensors:
    def read(self):
        return {"temp": 2000, "hum": 4000, "batt": 4000}


class Frames:
    def capture(self):
        return bytes(300)


class Never:
    def check(self):
        return False


def fixed_random(n):
    """The camera's object ids are OID (fuzz/corpus.py), so chunk acks can name them."""
    return OID[:n] if n <= len(OID) else bytes(n)


def release_offer(secret):
    manifest = json.dumps({"version": RELEASE, "files": {"lib/x.py": {
        "size": len(OTA_FILE), "sha256": hashlib.sha256(OTA_FILE).hexdigest()}}}).encode()
    sig = p256.sign(secret, hashlib.sha256(manifest).digest())
    return cbor.dumps({OFFER_VERSION: 1, OFFER_MANIFEST: manifest, OFFER_SIGNATURE: sig,
                       OFFER_CHUNK: OTA_CHUNK})


class Harness:
    def __init__(self, flash=None):
        self.flash = flash or tempfile.mkdtemp(prefix="ek-fuzz-flash-")
        os.chdir(self.flash)
        from agent.boot import Device  # imported here: agent.boot runs ota.boot() in the cwd
        from agent.camera import CameraAgent
        self.logs = []
        log = self.logs.append
        ident = Identity.create(os.urandom)
        release_secret = p256.new_secret(os.urandom)
        with open("release.pub", "w") as f:
            f.write(p256.public_key(release_secret).hex())
        self.tracker = Device(ident, Transport(), Sensors(), Spool("spool"), {}, os.urandom)
        self.tracker.log = log
        self.tracker.updater.log = log
        for _ in range(3):
            self.tracker.seal_status()
        self.tracker.updater.receive(release_offer(release_secret))  # a transfer under way
        self.camera = CameraAgent(ident, Transport(), Frames(), Never(), Spool("cspool"),
                                  ObjectQueue("objects"), {"chunk_size": 64}, fixed_random,
                                  log=log)
        self.camera.seal_status()
        self.recapture()

    def recapture(self):
        """Queue object OID again (a complete chunk ack removes it) and start its upload."""
        if self.camera.objects.find(OID) is None:
            self.camera.capture()
            self.camera.pump(0)
            self.camera.pump_chunks(0)

    # The handlers themselves, unguarded: the fuzzers call these, and any exception is a bug.
    def ack(self, payload):
        return self.tracker.on_ack(payload)

    def chunk_ack(self, payload):
        why = self.camera.on_chunk_ack(payload)
        self.recapture()
        return why

    def ota(self, payload):
        return self.tracker.updater._receiver().receive(payload)

    HANDLERS = ("ack", "chunk_ack", "ota")
