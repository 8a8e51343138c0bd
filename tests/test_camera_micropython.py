"""The camera agent on real MicroPython (WebAssembly build, heap capped): motion by frame
difference on replayed frames, capture, chunk encryption, signed manifest, upload to the
gateway over the device's own MQTT client; the export is the captured JPEG, byte for byte."""

import pytest

from agent.simcamera import Scene
from gateway.ingest.objects import ObjectStore
from tests.helpers.camera import export, run_on_micropython

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
    scene = Scene(size=(320, 240), offset=1.0)
    flash, ident, data, store, lines = run_on_micropython(
        tmp_path, broker, scene, [0.5 * i for i in range(6)], MAIN, HEAP, 120)
    frame = int(lines[0].split()[-1])
    assert lines == ["captured frame %d" % frame, "queued 0"]
    assert scene.walker(0.5 * frame) is not None  # motion, not a timer, chose the frame
    (obj,) = ObjectStore.open(store).list()
    assert obj["completed_at"] and obj["count"] > 1
    jpeg = (flash / "frames" / ("%04d.jpg" % frame)).read_bytes()
    assert export(tmp_path, data, ident, obj["oid"]) == jpeg


# An MJPEG clip (docs/camera.md): the pre-roll ring holds preroll * clip_fps + 1 JPEGs (7 of
# ~3 KB at 160x120 here), the AVI writer 16 bytes of index a frame and a 1 KB copy buffer.
CLIP_HEAP = 192 * 1024
CLIP_FPS = 2

CLIP_MAIN = """
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
                    {{"clip": "avi", "clip_fps": {fps}, "postroll": 2, "chunk_size": 2048,
                     "cooldown": 3600}}, os.urandom)
while not agent.captures and cam.index < cam.count - 1:
    agent.clip_frame()
    gc.collect()
rec = agent.recorder
print("clip", cam.index, rec.frames, rec.motion_at)
agent.flush(60)
print("queued", len(agent.objects.entries))
"""


def test_camera_records_and_uploads_an_mjpeg_clip_on_micropython(tmp_path, broker):
    import io

    import av
    scene = Scene(size=(160, 120), offset=4.0, walk=4.0, period=60.0)
    times = [i / CLIP_FPS for i in range(30)]
    flash, ident, data, store, lines = run_on_micropython(
        tmp_path, broker, scene, times, CLIP_MAIN, CLIP_HEAP, 180, fps=CLIP_FPS)
    last, frames, motion_at = [int(x) for x in lines[0].split()[1:]]
    assert lines[1:] == ["queued 0"]
    first = last - frames + 1
    assert motion_at == 3 * CLIP_FPS and first >= 0                     # 3 s of pre-roll
    assert scene.walker(times[first + motion_at]) is not None           # motion chose it
    assert scene.walker(times[first]) is None
    assert scene.walker(times[last - 2 * CLIP_FPS]) is None             # 2 s calm ended it
    objs = {o["event"]: o for o in ObjectStore.open(store).list()}
    assert sorted(objs) == ["motion", "poster", "thumbnail"]
    obj = objs["motion"]
    assert obj["completed_at"] and obj["type"] == "video/x-msvideo"
    # The poster is the frame that started the clip, the thumbnail the same moment at the
    # sensor's smallest size (Playback's pre-rendered QQVGA frames), both naming the clip.
    assert objs["poster"]["parent"] == objs["thumbnail"]["parent"] == obj["oid"]
    at = flash / "frames" / ("%04d" % (first + motion_at))
    assert export(tmp_path, data, ident, objs["poster"]["oid"]) == at.with_suffix(".jpg").read_bytes()
    assert export(tmp_path, data, ident, objs["thumbnail"]["oid"]) == \
        at.with_suffix(".thumb.jpg").read_bytes()
    clip = export(tmp_path, data, ident, obj["oid"])
    with av.open(io.BytesIO(clip)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.frames, v.average_rate) == ("mjpeg", frames, CLIP_FPS)
        assert c.duration / 1e6 == pytest.approx(frames / CLIP_FPS)
        decoded = [f.to_image().tobytes() for f in c.decode(v)]
    assert len(decoded) == frames
    jpegs = [(flash / "frames" / ("%04d.jpg" % i)).read_bytes() for i in range(first, last + 1)]
    pos = clip.index(b"movi") + 4
    for j in jpegs:                                  # the movi list: the camera's JPEGs as is
        n = int.from_bytes(clip[pos + 4:pos + 8], "little")
        assert (clip[pos:pos + 4], clip[pos + 8:pos + 8 + n]) == (b"00dc", j)
        pos += 8 + n + (n & 1)
    assert clip[pos:pos + 4] == b"idx1" and len(clip) == pos + 8 + 16 * frames
