"""Camera tests' two sides: a provisioned camera whose agent runs in a thread, and the
owner's keyring that opens its data and exports an object through the gateway's CLI."""
import os
import subprocess
import sys
import threading

from agent.camera import CameraAgent
from agent.identity import Identity
from agent.motion import FrameDiff
from agent.mqtt import MQTTClient
from agent.objects import ObjectQueue
from agent.simcamera import Scene
from agent.spool import Spool
from gateway.owner.keyring import Keyring
from tests.helpers.paths import ENV, REPO


def keyring_for(tmp_path, ident):
    (tmp_path / "pass").write_text("owner passphrase\n")
    ring = Keyring.open_or_create(str(tmp_path / "keyring.json"), "owner passphrase")
    ring.add(ident.hex, ident.data_key)
    ring.save()
    return str(tmp_path / "keyring.json"), str(tmp_path / "pass")


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def export(tmp_path, data, ident, oid):
    key, passfile = keyring_for(tmp_path, ident)
    out = tmp_path / ("%s.out" % oid)
    cli("export", "--data-dir", data, "--object", oid, "--key", key,
        "--passphrase-file", passfile, "--out", str(out))
    return out.read_bytes()


SMALL = Scene(size=(320, 240))


class StillCamera:
    """Hands out the scene's JPEGs at successive times; records what it captured."""

    def __init__(self, scene):
        self.scene = scene
        self.t = 0.0
        self.captured = []

    def gray(self):
        return self.scene.gray(self.t)

    def capture(self):
        self.t += 0.3
        jpeg = self.scene.jpeg(self.t)
        self.captured.append(jpeg)
        return jpeg


class ClipCamera(StillCamera):
    """A camera at `fps` in scene time: each gray() is the next frame, frame() its JPEG;
    `times` lists the scene time of every clip frame handed out."""

    def __init__(self, scene, fps):
        StillCamera.__init__(self, scene)
        self.fps = fps
        self.index = -1
        self.times = []

    def gray(self):
        self.index += 1
        self.t = self.index / self.fps
        return self.scene.gray(self.t)

    def frame(self):
        self.times.append(self.t)
        return self.scene.jpeg(self.t)


class Device:
    """A provisioned camera's flash (keys, spool, object queue) and its agent loop."""

    def __init__(self, tmp_path, broker_port, scene=SMALL, camera=None, **config):
        self.dir = tmp_path / "camera"
        self.dir.mkdir(exist_ok=True)
        self.ident = Identity.create(os.urandom)
        self.camera = camera or StillCamera(scene)
        self.port = broker_port
        self.config = dict({"ack_timeout": 5, "reconnect_max": 1, "frame_interval": 3600}, **config)
        self.stop = threading.Event()
        self.thread = None
        self.agent = self._agent()

    def _agent(self):
        transport = MQTTClient("ek-" + self.ident.hex, "127.0.0.1", self.port, keepalive=5)
        return CameraAgent(self.ident, transport, self.camera, FrameDiff(self.camera),
                           Spool(str(self.dir / "spool")), ObjectQueue(str(self.dir / "objects")),
                           self.config, os.urandom, log=lambda m: None)

    def start(self):
        self.thread = threading.Thread(target=self.agent.run, args=(None, self.stop.is_set, 0))
        self.thread.start()

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(20)
        self.agent.transport.close()


def register(store, ingest, dev):
    store.add_device(dev.ident.hex, dev.ident.public, "cam", "camera")
    ingest.reload_devices()


def run_on_micropython(tmp_path, broker, scene, times, main, heap, timeout, **fields):
    """A camera's flash (its keys, `scene` rendered at `times`) and the agent script `main`
    ({port}: the broker's; other fields from `fields`) run on MicroPython with the heap
    capped at `heap`, uploading to a gateway on that broker: (flash, identity, data dir,
    store, the script's output lines)."""
    import textwrap

    from agent.runtime.micropython import MicroPythonDevice
    from agent.simcamera import write_frames
    from gateway.ingest.pipeline import Ingest
    from gateway.store.database import Store
    flash = tmp_path / "flash"
    flash.mkdir()
    ident = Identity.create(os.urandom)
    ident.save(str(flash / "identity.json"))
    write_frames(str(flash / "frames"), scene, times)
    data = str(tmp_path / "gw")
    store = Store.open(data)
    store.add_device(ident.hex, ident.public, "cam", "camera")
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    try:
        rc, out, err = MicroPythonDevice(str(flash), heap=heap).run(
            textwrap.dedent(main.format(port=broker.port, **fields)), timeout=timeout)
    finally:
        ingest.stop()
    assert (rc, err) == (0, ""), out + err
    return flash, ident, data, store, out.splitlines()
