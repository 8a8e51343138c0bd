"""Clips with pre-roll (docs/camera.md): the camera agent records the simulated scene as an
MJPEG AVI (ESP32-CAM profile) or H.264 MP4 (Pi profile), from `preroll` seconds before the
motion to `postroll` seconds after it calms; PyAV reads both with the expected frames and
duration, and a clip goes through the gateway and exports byte for byte."""
import io

import av
import cbor2
import pytest
from PIL import ImageChops, ImageStat

from agent import cbor
from agent.avi import AviWriter, jpeg_size
from agent.clip import ClipRecorder
from agent.objects import ENV_OBJECT, OBJ_TYPE
from agent.simcamera import Scene
from gateway.ingest.objects import ObjectStore
from gateway.ingest.pipeline import Ingest
from gateway.owner.export import decrypt_encrypt0
from gateway.store.database import Store
from tests.helpers.camera import ClipCamera, Device, export, register
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.unit

FPS = 5
# Nobody until 6 s, then someone walks through for 4 s; no one again for a minute.
SCENE = Scene(size=(320, 240), offset=6.0, period=60.0, walk=4.0)


def decode(data):
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = [f.to_image() for f in c.decode(v)]
        return frames, v.frames, c.duration / 1e6, v.average_rate


def difference(a, b):
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b)).mean) / 3


def record(tmp_path, kind, **config):
    """Run a camera agent (no broker needed to record) frame by frame until its first clip
    (alone in its queue: posters and thumbnails are tests/test_camera.py's)."""
    cam = ClipCamera(SCENE, FPS)
    dev = Device(tmp_path, 1, camera=cam, clip=kind, clip_fps=FPS, poster=False, **config)
    for _ in range(400):
        if dev.agent.clip_frame():
            break
    else:
        pytest.fail("no clip")
    dev.agent.transport.close()
    return dev, cam


def check_clip(data, rec, times, preroll=3, postroll=5):
    """rec: the recorder after the clip; times: the scene time of every frame recorded."""
    frames, count, duration, rate = decode(data)
    assert len(frames) == count == rec.frames
    assert duration == pytest.approx(count / FPS, abs=0.01) and rate == FPS
    times = times[-count:]                          # the scene times of the clip's frames
    motion = times[rec.motion_at]
    assert SCENE.offset <= motion <= SCENE.offset + 1      # the walker, seen as they enter
    assert times[0] == pytest.approx(motion - preroll)      # the pre-roll
    assert SCENE.walker(times[0]) is None                   # an empty room before the motion
    assert times[-1] == pytest.approx(SCENE.offset + SCENE.walk + postroll, abs=0.5)
    for f, t in zip(frames, times):                          # each frame is the scene at t
        assert difference(f, SCENE.render(t)) < 2.5, t
        if 0.1 < (SCENE.walker(t) or 0) < 0.9:              # in view: not a moment later
            assert difference(f, SCENE.render(t + 1 / FPS)) > difference(f, SCENE.render(t))


@pytest.mark.parametrize("kind, ctype, magic", [
    ("avi", "video/x-msvideo", b"RIFF"), ("mp4", "video/mp4", b"ftyp")])
def test_clip_starts_preroll_before_the_motion_and_ends_after_it_calms(
        tmp_path, kind, ctype, magic):
    dev, cam = record(tmp_path, kind)
    entry = dev.agent.objects.oldest()
    data = b"".join(_plaintext(dev, entry))
    assert magic in data[:12]
    signed = cbor2.loads(dev.agent.spool.read(entry.seq)[1:]).value[2]
    assert cbor2.loads(signed)[ENV_OBJECT][OBJ_TYPE] == ctype     # the manifest's type
    check_clip(data, dev.agent.recorder, cam.times)
    assert not (tmp_path / "camera" / "objects.clip").exists()  # the scratch file is gone


def _plaintext(dev, entry):
    """The object as queued on the device, decrypted chunk by chunk with its content key."""
    key = decrypt_encrypt0(dev.ident.data_key, entry.wrapped_key)
    for i in range(entry.count):
        enc = cbor.loads(dev.agent.objects.read(entry, i))[2]
        yield decrypt_encrypt0(key, enc)


def test_clip_length_is_capped(tmp_path):
    dev, cam = record(tmp_path, "avi", preroll=1, clip_max=2)
    frames, count, duration, _ = decode(b"".join(_plaintext(dev, dev.agent.objects.oldest())))
    assert count == len(frames) == 2 * FPS and duration == pytest.approx(2)


def test_recorder_ring_holds_only_the_preroll():
    made = []

    class Enc:
        def __init__(self):
            self.frames = []
            made.append(self)

        def add(self, f):
            self.frames.append(f)

    rec = ClipRecorder(Enc, 2, preroll=1.5, postroll=1, max_len=60)
    for i in range(10):
        assert rec.add(i, False) is None
        assert len(rec.ring) <= 4
    assert rec.add(10, True) is None and rec.recording()
    assert rec.ring == [] and made[0].frames == [7, 8, 9, 10]
    assert rec.add(11, False) is None
    assert rec.add(12, True) is None                    # motion again: calm starts over
    assert rec.add(13, False) is None
    assert rec.add(14, False) is made[0] and not rec.recording()
    assert made[0].frames == list(range(7, 15)) and rec.frames == 8 and rec.motion_at == 3


def test_avi_writer_reads_its_size_from_the_jpeg_and_pads_odd_frames(tmp_path):
    jpeg = SCENE.jpeg(0)
    assert jpeg_size(jpeg) == (320, 240)
    w = AviWriter(str(tmp_path / "x.avi"), 2.5)
    w.add(jpeg + b"\x00" if len(jpeg) % 2 == 0 else jpeg)   # an odd length
    w.add(jpeg)
    w.close()
    out = bytearray()
    w.stream(out.extend, bytearray(100))
    assert len(out) % 2 == 0 and int.from_bytes(out[4:8], "little") == len(out) - 8
    frames, count, duration, rate = decode(bytes(out))
    assert (len(frames), count, rate) == (2, 2, 2.5) and duration == pytest.approx(0.8)
    w.remove()
    assert not (tmp_path / "x.avi").exists()


@pytest.mark.integration
def test_mp4_clip_is_uploaded_and_exported_byte_identical(tmp_path, broker):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    try:
        cam = ClipCamera(SCENE, FPS)
        dev = Device(tmp_path, broker.port, camera=cam, clip="mp4", clip_fps=FPS,
                     chunk_size=8192, poster=False)
        register(store, ingest, dev)
        oid = None
        while oid is None:
            oid = dev.agent.clip_frame()
        clip = b"".join(_plaintext(dev, dev.agent.objects.oldest()))
        check_clip(clip, dev.agent.recorder, list(cam.times))
        dev.start()
        try:
            objects = ObjectStore.open(store)
            wait_for(lambda: (objects.list() or [{}])[0].get("completed_at"), what="complete")
        finally:
            dev.close()
        o = objects.get(dev.ident.hex, oid.hex())
        assert (o["type"], o["size"]) == ("video/mp4", len(clip))
        assert export(tmp_path, data, dev.ident, oid.hex()) == clip
    finally:
        ingest.stop()
        store.close()


@pytest.mark.integration
def test_simulated_pi_camera_records_in_real_time_and_uploads_an_mp4_clip(tmp_path, broker):
    from agent.simcamera import SimCamera
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    scene = Scene(size=(320, 240), offset=1.5, walk=2.0, period=600.0)
    dev = Device(tmp_path, broker.port, camera=SimCamera(scene), clip="mp4", clip_fps=FPS,
                 preroll=1, postroll=1, chunk_size=16384, poster=False)
    register(store, ingest, dev)
    dev.start()                              # the agent's own loop, frames by the clock
    try:
        objects = ObjectStore.open(store)
        wait_for(lambda: (objects.list() or [{}])[0].get("completed_at"), timeout=60,
                 what="a clip")
        (o,) = objects.list()
        clip = export(tmp_path, data, dev.ident, o["oid"])
    finally:
        dev.close()
        ingest.stop()
        store.close()
    assert o["type"] == "video/mp4"
    frames, count, duration, rate = decode(clip)
    # 1 s of pre-roll, the walk seen for a little under 2 s, 1 s of calm: about 4 s
    assert len(frames) == count and rate == FPS and duration == pytest.approx(count / FPS)
    assert 3 * FPS <= count <= 5 * FPS
    assert difference(frames[0], scene.render(0)) < 2.5       # the empty room, before
