"""Chunks before their manifest (docs/protocol.md, "Chunks: kind c"): a clip's chunks flow
while it still records; the gateway holds them pending (budget per device, an age limit) and
binds them when the signed manifest comes, or refuses those it does not list as bad_chunk."""
import io
import os
import signal
import socket
import time

import av
import cbor2
import pytest

from agent import cbor, cose
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import (
    COMPLETE,
    KIND_CHUNK,
    KIND_MANIFEST,
    PARTIAL,
    PENDING,
    UNKNOWN,
    ObjectQueue,
    manifest,
)
from agent.proto import up_topic
from agent.simcamera import Scene
from gateway.ingest.pipeline import Ingest
from gateway.owner.export import decrypt_encrypt0
from gateway.store.database import Store
from tests.helpers.camera import ClipCamera, Device, export, register, run_on_micropython
from tests.helpers.wait import wait_for
from tests.test_camera import start_gateway

pytestmark = pytest.mark.unit

CHUNK = 1024


class Camera:
    """A provisioned camera's object, made as the agent makes it, and the gateway's view."""

    def __init__(self, tmp_path, size=5000):
        self.data = str(tmp_path / "gw")
        self.tmp_path = tmp_path
        self.ident = Identity.create(os.urandom)
        store = Store.open(self.data)
        store.add_device(self.ident.hex, self.ident.public, "porch", "camera")
        store.close()
        queue = ObjectQueue(str(tmp_path / "flash"))
        self.oid, self.plain = os.urandom(8), os.urandom(size)
        w = queue.begin(self.oid, CHUNK, self.ident.data_key, Nonces(os.urandom))
        w.write(self.plain)
        hashes = w.close()
        queue.commit(w, 1)
        entry = queue.find(self.oid)
        self.count = entry.count
        self.manifest = (up_topic(self.ident.hex, KIND_MANIFEST),
                         manifest(self.ident, 1, 1, int(time.time()), self.oid, "motion",
                                  "video/mp4", size, CHUNK, hashes, w.wrapped_key, w.commit))
        self.chunks = [(up_topic(self.ident.hex, KIND_CHUNK), queue.read(entry, i))
                       for i in range(entry.count)]

    def forged(self, index):
        """Chunk `index` with a ciphertext the manifest does not list."""
        enc = cose.encrypt0(os.urandom(16), os.urandom(13), os.urandom(CHUNK))
        return up_topic(self.ident.hex, KIND_CHUNK), cbor.dumps([self.oid, index, enc])

    def query(self):
        return up_topic(self.ident.hex, KIND_CHUNK), cbor.dumps([self.oid])


@pytest.fixture
def cam(tmp_path):
    return Camera(tmp_path)


def gateway(cam, **objects):
    gw = Ingest(cam.data, "mqtt://127.0.0.1:1", epoch_seconds=3600)
    for k, v in objects.items():
        setattr(gw.objects, k, v)
    return gw


def close(*gws):
    for gw in gws:
        gw.pool.shutdown()
        gw.objects.provider.close()
        gw.store.close()


def feed(gw, messages):
    gw.process([(topic, raw, 0, 1) for topic, raw in messages])


def ack(gw, cam):
    """The chunk ack the gateway sends now for cam's object: (state, ranges)."""
    a = cbor2.loads(gw.objects.chunk_ack(cam.ident.hex, cam.oid.hex()))
    return a[3], a[2]


def state(gw, cam):
    """(pending indexes, the objects row or None)."""
    rows = gw.store.objects
    return (rows.pending_indexes(cam.ident.hex, cam.oid.hex()),
            rows.get(cam.ident.hex, cam.oid.hex()))


def test_chunks_before_the_manifest_are_held_pending_then_bound_by_it(cam):
    gw = gateway(cam)
    try:
        feed(gw, cam.chunks[1:3])                       # the clip still records
        assert state(gw, cam) == ([1, 2], None)
        assert ack(gw, cam) == (PENDING, [1, 2])
        feed(gw, [cam.query()])                         # a device resuming asks: no reject
        feed(gw, cam.chunks[1:2])                       # sent again: held once
        assert gw.store.reject_counts() == {"duplicate_chunk": 1}
        feed(gw, [cam.manifest] + cam.chunks[3:])       # the manifest closes the object
        pending, obj = state(gw, cam)
        assert pending == [] and obj["stored"] == cam.count - 1 and obj["completed_at"] is None
        assert ack(gw, cam) == (PARTIAL, [1, cam.count - 1])
        feed(gw, cam.chunks[:1])                        # the header chunk, sealed last
        pending, obj = state(gw, cam)
        assert obj["completed_at"] and obj["bytes"] == sum(
            len(cbor.loads(raw)[2]) for _, raw in cam.chunks)
        assert ack(gw, cam) == (COMPLETE, [0, cam.count - 1])
    finally:
        close(gw)
    assert export(cam.tmp_path, cam.data, cam.ident, cam.oid.hex()) == cam.plain


def test_every_chunk_before_the_manifest_completes_the_object_when_it_comes(cam):
    gw = gateway(cam)
    try:
        feed(gw, cam.chunks[::-1])                      # any order: bound by index and hash
        feed(gw, [cam.manifest])
        assert state(gw, cam)[1]["completed_at"] and ack(gw, cam) == (COMPLETE, [0, cam.count - 1])
        assert gw.store.reject_counts() == {}
    finally:
        close(gw)
    assert export(cam.tmp_path, cam.data, cam.ident, cam.oid.hex()) == cam.plain


def test_a_chunk_and_its_manifest_on_different_workers_in_either_order(cam, tmp_path):
    a, b = gateway(cam), gateway(cam)
    try:
        feed(a, cam.chunks[:2])                          # worker a: chunks, no manifest yet
        feed(b, [cam.manifest])                          # worker b: the manifest binds them
        feed(a, cam.chunks[2:])                          # worker a: the object is known now
        assert state(a, cam)[1]["completed_at"] and state(a, cam)[0] == []
    finally:
        close(a, b)
    assert export(cam.tmp_path, cam.data, cam.ident, cam.oid.hex()) == cam.plain


def test_a_forged_pending_chunk_is_refused_as_bad_chunk_when_the_manifest_comes(cam):
    gw = gateway(cam)
    try:
        feed(gw, [cam.forged(0), cam.chunks[1], cam.forged(cam.count + 3), cam.forged(2**64 - 1)])
        assert gw.store.reject_counts() == {"bad_chunk": 1}  # past any object: at once
        assert ack(gw, cam) == (PENDING, [0, 1, cam.count + 3, cam.count + 3])
        blobs = set(gw.objects.provider.digests())
        feed(gw, [cam.manifest])
        assert gw.store.reject_counts() == {"bad_chunk": 3}
        assert ack(gw, cam) == (PARTIAL, [1, 1])         # the device sends 0 again
        assert len(set(gw.objects.provider.digests())) == len(blobs) - 2  # forged blobs gone
        feed(gw, cam.chunks[:1] + cam.chunks[2:])
        assert state(gw, cam)[1]["completed_at"]
    finally:
        close(gw)
    assert export(cam.tmp_path, cam.data, cam.ident, cam.oid.hex()) == cam.plain


def test_pending_chunks_over_the_device_budget_are_refused_and_counted(cam):
    per_chunk = len(cbor.loads(cam.chunks[0][1])[2])
    gw = gateway(cam, pending_max_bytes=2 * per_chunk + 10)
    try:
        feed(gw, cam.chunks[:4])                         # two fit, two do not
        assert gw.store.reject_counts() == {"pending_over_budget": 2}
        assert ack(gw, cam) == (PENDING, [0, 1])
        feed(gw, [cam.manifest] + cam.chunks[2:])        # after the manifest: no budget
        assert state(gw, cam)[1]["completed_at"]
        assert gw.store.reject_counts() == {"pending_over_budget": 2}
    finally:
        close(gw)


def test_pending_chunks_whose_manifest_never_comes_are_dropped_and_counted(cam):
    gw = gateway(cam, pending_max_age=3600)
    try:
        feed(gw, cam.chunks[:2])
        blobs = len(list(gw.objects.provider.digests()))
        gw.objects.retain(time.time() + 1800)            # not yet: kept
        assert state(gw, cam)[0] == [0, 1]
        gw.objects.retain(time.time() + 3700)            # an hour without its manifest
        assert state(gw, cam) == ([], None) and ack(gw, cam) == (UNKNOWN, [])
        assert gw.store.reject_counts() == {"pending_expired": 2}
        assert len(list(gw.objects.provider.digests())) == blobs - 2
        feed(gw, [cam.manifest])                         # late: an object with nothing yet
        assert state(gw, cam)[1]["stored"] == 0 and ack(gw, cam) == (PARTIAL, [])
    finally:
        close(gw)


# -- the camera streaming a clip as it records, over Mosquitto ----------------------------

FPS = 5
SCENE = Scene(size=(320, 240), offset=6.0, period=60.0, walk=4.0)


def clip_device(tmp_path, port, kind):
    return Device(tmp_path, port, camera=ClipCamera(SCENE, FPS), clip=kind, clip_fps=FPS,
                  poster=False, chunk_size=2048, chunk_window=64)


def frame(agent):
    """One clip frame with the agent's upload work around it, as its loop does."""
    now = time.monotonic()
    agent.pump(now)
    oid = agent.clip_frame()
    agent.pump_chunks(now)
    agent.transport.poll(0.02)
    return oid


def record_until(agent, done, limit=400):
    for _ in range(limit):
        oid = frame(agent)
        if done(oid):
            return oid
    pytest.fail("the clip did not get that far")


def plaintext(dev, oid):
    """The clip as queued on the device, decrypted chunk by chunk with its content key."""
    entry = dev.agent.objects.find(oid)
    key = decrypt_encrypt0(dev.ident.data_key, entry.wrapped_key)
    return b"".join(decrypt_encrypt0(key, cbor.loads(dev.agent.objects.read(entry, i))[2])
                    for i in range(entry.count))


def frames_of(data):
    with av.open(io.BytesIO(data)) as c:
        return len(list(c.decode(c.streams.video[0])))


def pending_of(store, dev, oid):
    return store.objects.pending_indexes(dev.ident.hex, oid.hex())


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_a_clip_s_chunks_reach_the_gateway_before_its_manifest_is_signed(tmp_path, broker, kind):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    dev = clip_device(tmp_path, broker.port, kind)
    register(store, ingest, dev)
    agent = dev.agent
    try:
        record_until(agent, lambda _: agent.live is not None and agent.live.w.count >= 4)
        oid = agent.live.w.oid
        wait_for(lambda: pending_of(store, dev, oid), what="chunks held pending")
        # Still recording, no manifest signed: the gateway holds chunks of it already.
        assert agent.recorder.recording() and agent.objects.find(oid) is None
        assert store.objects.get(dev.ident.hex, oid.hex()) is None
        assert 0 not in pending_of(store, dev, oid)         # the header's chunk goes last
        assert record_until(agent, lambda o: o is not None) == oid
        clip = plaintext(dev, oid)
        entry = agent.objects.find(oid)
        agent.flush(60)
        assert not agent.objects.entries
    finally:
        dev.close()
        ingest.stop()
    obj = store.objects.get(dev.ident.hex, oid.hex())
    assert obj["completed_at"] and obj["size"] == len(clip) and pending_of(store, dev, oid) == []
    assert store.reject_counts() == {}                       # no chunk refused, none twice
    assert agent.chunks_sent < entry.count + 4               # each went out about once
    assert frames_of(clip) == agent.recorder.frames
    assert export(tmp_path, data, dev.ident, oid.hex()) == clip
    store.close()


@pytest.mark.integration
def test_a_clip_survives_the_gateway_killed_while_it_records(tmp_path, broker):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    dev = clip_device(tmp_path, broker.port, "avi")
    store.add_device(dev.ident.hex, dev.ident.public, "cam", "camera")
    agent = dev.agent
    gw = start_gateway(data, broker.url)
    try:
        record_until(agent, lambda _: agent.live is not None and agent.live.w.count >= 3)
        oid = agent.live.w.oid
        wait_for(lambda: pending_of(store, dev, oid), what="chunks held pending")
        gw.send_signal(signal.SIGKILL)                       # mid-capture
        gw.wait()
        held = pending_of(store, dev, oid)
        record_until(agent, lambda _: agent.live.w.count >= 8)   # sent to a gateway that is down
        agent.transport.sock.shutdown(socket.SHUT_RDWR)      # and the device's link drops
        gw = start_gateway(data, broker.url)
        assert record_until(agent, lambda o: o is not None) == oid
        clip = plaintext(dev, oid)
        agent.flush(60)
        assert not agent.objects.entries                     # it asked, sent the rest
    finally:
        dev.close()
        gw.kill()
        gw.wait()
    obj = store.objects.get(dev.ident.hex, oid.hex())
    assert obj["completed_at"] and held and pending_of(store, dev, oid) == []
    assert "bad_chunk" not in store.reject_counts()
    assert export(tmp_path, data, dev.ident, oid.hex()) == clip
    store.close()


# The ESP32-CAM profile on real MicroPython under the camera's heap cap
# (tests/test_camera_micropython.py): the MJPEG clip's chunks go out while it records.
LIVE_MAIN = """
import gc, os
from agent import clock
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
                    {{"clip": "avi", "clip_fps": 2, "postroll": 2, "chunk_size": 2048,
                     "cooldown": 3600, "poster": False}}, os.urandom)
oid = None
while oid is None and cam.index < cam.count - 1:
    agent.pump(clock.monotonic())
    oid = agent.clip_frame()
    agent.transport.poll(0.05)
    gc.collect()
print("live", agent.chunks_sent, agent.objects.find(oid).count)
agent.flush(60)
print("queued", len(agent.objects.entries))
"""


@pytest.mark.integration
def test_the_esp32_profile_streams_a_clip_on_micropython_under_its_heap_cap(tmp_path, broker):
    scene = Scene(size=(160, 120), offset=4.0, walk=4.0, period=60.0)
    _, ident, data, store, lines = run_on_micropython(
        tmp_path, broker, scene, [i / 2 for i in range(30)], LIVE_MAIN, 192 * 1024, 180)
    live, count = [int(x) for x in lines[0].split()[1:]]
    assert lines[1:] == ["queued 0"]
    assert count // 2 <= live < count          # most went out as it recorded, not the first
    (obj,) = store.objects.list()
    assert obj["completed_at"] and obj["type"] == "video/x-msvideo" and obj["count"] == count
    assert store.reject_counts() == {}
    assert frames_of(export(tmp_path, data, ident, obj["oid"])) > 8
    store.close()
