"""The camera agent on real MicroPython (WebAssembly build, heap capped): motion by frame
difference on replayed frames, capture, chunk encryption, signed manifest, upload to the
gateway over the device's own MQTT client; the export is the captured JPEG, byte for byte."""
import os
import textwrap

import pytest

from agent.identity import Identity
from agent.runtime.micropython import MicroPythonDevice
from agent.simcamera import Scene, write_frames
from gateway.ingest.objects import ObjectStore
from gateway.ingest.pipeline import Ingest
from gateway.store.database import Store
from tests.helpers.camera import export

pytestmark = pytest.mark.integration

# The camera's heap cap (docs/protocol.md, "Objects"): the agent's modules take ~90 KB once
# imported; capture needs the frame (8 KB here) plus a few chunk-sized buffers; signing the
# manifest needs the rest, since this build collects garbage only at gc.collect() calls.
HEAP = 192 * 1024

MAIN = """
import gc, os
from agent.camera import CameraAgent
from agent.identity import Identity
from agent.motion import FrameDiff
from agent.mqtt import MQTTClient
from agent.objects import ObjectQueue
from agent.simcamera import Playback
from agent.spool import Spool

ident = Identity.load("identity.json")
cam = Playback("frames")
agent = CameraAgent(ident, MQTTClient("ek-" + ident.hex, "127.0.0.1", {port}), cam,
                    FrameDiff(cam), Spool("spool"), ObjectQueue("objects"),
                    {{"frame_interval": 0, "chunk_size": 2048, "cooldown": 3600}}, os.urandom)
while not agent.captures and cam.index < cam.count - 1:
    agent.step()
    gc.collect()
print("captured frame", cam.index)
agent.flush(60)
print("queued", len(agent.objects.entries))
"""


def test_camera_agent_runs_on_micropython_under_its_heap_cap(tmp_path, broker):
    flash = tmp_path / "flash"
    flash.mkdir()
    ident = Identity.create(os.urandom)
    ident.save(str(flash / "identity.json"))
    scene = Scene(size=(320, 240), offset=1.0)
    write_frames(str(flash / "frames"), scene, [0.5 * i for i in range(6)])
    data = str(tmp_path / "gw")
    store = Store.open(data)
    store.add_device(ident.hex, ident.public, "cam", "camera")
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    try:
        rc, out, err = MicroPythonDevice(str(flash), heap=HEAP).run(
            textwrap.dedent(MAIN.format(port=broker.port)), timeout=120)
    finally:
        ingest.stop()
    assert (rc, err) == (0, ""), out + err
    lines = out.splitlines()
    frame = int(lines[0].split()[-1])
    assert lines == ["captured frame %d" % frame, "queued 0"]
    assert scene.walker(0.5 * frame) is not None  # motion, not a timer, chose the frame
    (obj,) = ObjectStore.open(store).list()
    assert obj["completed_at"] and obj["count"] > 1
    jpeg = (flash / "frames" / ("%04d.jpg" % frame)).read_bytes()
    assert export(tmp_path, data, ident, obj["oid"]) == jpeg
