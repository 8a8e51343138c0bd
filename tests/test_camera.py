"""Camera objects over real Mosquitto: capture -> encrypted chunks -> signed manifest ->
resumable upload -> gateway object store -> events, export, rejects and retention."""
import io
import json
import os
import signal
import subprocess
import sys

import cbor2
import pytest
from PIL import Image

from agent import cbor, cose
from agent.identity import Identity
from agent.objects import (
    CACK_ID,
    CACK_RANGES,
    CACK_STATE,
    CACK_VERSION,
    MAX_CHUNK_SIZE,
    UNKNOWN,
    manifest,
    wrap_key,
)
from agent.proto import ACK_SEQ, ACK_VERSION
from agent.simcamera import Scene
from gateway.ingest.objects import ObjectStore
from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import Mosquitto
from gateway.store.database import Store
from tests.helpers.camera import (
    SMALL,
    ClipCamera,
    Device,
    StillCamera,
    cli,
    export,
    register,
)
from tests.helpers.mqtt import Subscriber
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

@pytest.fixture
def gateway(tmp_path, broker):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ingest = Ingest(data, broker.url, epoch_seconds=3600)
    ingest.start()
    yield data, store, ingest
    ingest.stop()
    store.close()


def test_snapshot_is_uploaded_announced_listed_and_exported_byte_identical(
        tmp_path, broker, gateway):
    data, store, ingest = gateway
    dev = Device(tmp_path, broker.port, chunk_size=4096)
    register(store, ingest, dev)
    events = Subscriber(broker.port, "ek/+/event")
    uplinks = Subscriber(broker.port, "ek/%s/up/c" % dev.ident.hex)
    oid = dev.agent.capture().hex()
    dev.start()
    try:
        objects = ObjectStore.open(store)
        done = wait_for(lambda: (objects.list() or [{}])[0].get("completed_at"), what="complete")
        assert done
        wait_for(lambda: not dev.agent.objects.entries, what="the device to drop the upload")
    finally:
        dev.close()
    jpeg = dev.camera.captured[0]
    assert export(tmp_path, data, dev.ident, oid) == jpeg
    assert jpeg[:2] == b"\xff\xd8"
    o = objects.get(dev.ident.hex, oid)
    assert (o["count"], o["stored"], o["size"], o["type"]) == (
        -(-len(jpeg) // 4096), o["count"], len(jpeg), "image/jpeg")
    assert os.listdir(str(dev.dir / "objects")) == []
    wait_for(lambda: len(uplinks.messages) >= o["count"], what="the chunks at a subscriber")
    sent = [cbor2.loads(p) for _, p in uplinks.messages]
    uplinks.close()
    assert all(len(m) == 3 for m in sent)                   # a fresh object: no query first
    assert sorted(m[1] for m in sent) == list(range(o["count"]))

    wait_for(lambda: len(events.messages) == 2, what="new and end events")
    (t1, new), (t2, end) = [(t, json.loads(p)) for t, p in events.messages]
    events.close()
    assert t1 == t2 == "ek/%s/event" % dev.ident.hex
    assert (new["type"], new["after"]["has_snapshot"]) == ("new", False)
    assert (end["type"], end["after"]["id"], end["after"]["has_snapshot"],
            end["after"]["has_clip"]) == ("end", oid, True, False)

    listed = cli("objects", "list", "--data-dir", data).stdout.split()
    assert listed[:2] == [oid, dev.ident.hex]
    assert listed[3:] == [str(len(jpeg)), "%d/%d" % (o["count"], o["count"])]
    manifest_msg = [m for m in store.messages(device=dev.ident.hex) if m["kind"] == "m"]
    assert [m["seq"] for m in manifest_msg] == [o["seq"]]  # sealed into epochs like any message


def record_clip(dev):
    """Run the camera agent frame by frame until its first clip is sealed; its id."""
    for _ in range(400):
        oid = dev.agent.clip_frame()
        if oid:
            return oid
    pytest.fail("no clip")


def test_a_clip_s_poster_and_thumbnail_go_first_and_update_its_event(tmp_path, broker, gateway):
    data, store, ingest = gateway
    scene = Scene(size=(320, 240), offset=2.0, period=600.0, walk=3.0)
    dev = Device(tmp_path, broker.port, camera=ClipCamera(scene, 5), clip="avi", clip_fps=5,
                 preroll=1, postroll=1, chunk_size=2048)
    register(store, ingest, dev)
    events = Subscriber(broker.port, "ek/+/event")
    clip = record_clip(dev).hex()
    queued = dev.agent.objects.entries
    # Queued before the clip, each naming it: the motion frame, and a smaller JPEG of it.
    assert [e.of and e.of.hex() for e in queued] == [clip, clip, None]
    poster, thumb = [e.oid.hex() for e in queued[:2]]
    dev.start()
    try:
        objects = ObjectStore.open(store)
        wait_for(lambda: (objects.get(dev.ident.hex, clip) or {}).get("completed_at"),
                 what="the clip whole")
        wait_for(lambda: any(json.loads(p)["type"] == "end" for _, p in events.messages),
                 what="the end event")
    finally:
        dev.close()
        events.close()
    rows = {o: objects.get(dev.ident.hex, o) for o in (poster, thumb, clip)}
    assert [(rows[o]["event"], rows[o]["parent"]) for o in (poster, thumb, clip)] == [
        ("poster", clip), ("thumbnail", clip), ("motion", None)]
    jpegs = [export(tmp_path, data, dev.ident, o) for o in (poster, thumb)]
    sizes = [Image.open(io.BytesIO(j)).size for j in jpegs]
    assert sizes == [(320, 240), (160, 120)]
    assert jpegs[0] in [scene.jpeg(t) for t in dev.camera.times]  # a frame of the clip
    # The feed: one event, the clip's; the poster makes it has_snapshot before it ends.
    feed = [json.loads(p) for _, p in events.messages]
    assert {e["after"]["id"] for e in feed} == {clip}
    kinds = [e["type"] for e in feed]
    assert kinds[0] == "new" and kinds[-1] == "end" and "update" in kinds[1:-1], kinds
    assert set(kinds[1:-1]) == {"update"} and len(kinds) <= 4, kinds
    new, update, end = feed[0], feed[kinds.index("update")], feed[-1]
    assert (new["after"]["has_snapshot"], new["after"]["has_clip"]) == (False, False)
    assert (update["before"]["has_snapshot"], update["after"]["has_snapshot"],
            update["after"]["has_clip"], update["after"]["poster"]) == (False, True, False, poster)
    assert (end["after"]["has_snapshot"], end["after"]["has_clip"], end["after"]["poster"],
            end["after"]["thumbnail"]) == (True, True, poster, thumb)


def test_chunks_follow_the_manifest_without_waiting_for_its_ack(tmp_path, broker):
    dev = Device(tmp_path, broker.port, chunk_size=1024, chunk_window=4)  # no gateway here
    uplinks = Subscriber(broker.port, "ek/%s/up/#" % dev.ident.hex)
    dev.agent.capture()
    dev.start()
    try:
        wait_for(lambda: len(uplinks.messages) >= 6, what="the manifest and a window of chunks")
    finally:
        dev.close()
        uplinks.close()
    kinds = [t.rsplit("/", 1)[1] for t, _ in uplinks.messages if not t.endswith("/s")]
    assert kinds[:5] == ["m", "c", "c", "c", "c"]       # the manifest first, then chunks
    assert dev.agent.spool.acked < dev.agent.objects.oldest().seq  # none of it acked


def test_unknown_object_before_the_manifest_is_acked_keeps_the_object(tmp_path, broker):
    dev = Device(tmp_path, broker.port, chunk_size=1024)
    agent = dev.agent
    oid = agent.capture()
    seq = agent.objects.oldest().seq
    unknown = cbor.dumps({CACK_VERSION: 1, CACK_ID: oid, CACK_RANGES: [], CACK_STATE: UNKNOWN})
    agent.on_message(agent.chunks_topic, unknown)   # chunks overtook a manifest still in flight
    assert agent.objects.oldest().oid == oid and agent.objects.drops == 0
    agent.on_message(agent.ack_topic, cbor.dumps({ACK_VERSION: 1, ACK_SEQ: seq}))
    agent.on_message(agent.chunks_topic, unknown)   # the gateway has the manifest, not the object
    assert agent.objects.oldest() is None and agent.objects.drops == 1
    agent.transport.close()


class NoiseCamera(StillCamera):
    """Incompressible frames of a given size (chunk boundaries, not pictures, under test)."""

    def __init__(self, size):
        StillCamera.__init__(self, SMALL)
        self.size = size

    def capture(self):
        self.captured.append(os.urandom(self.size))
        return self.captured[-1]


def test_the_largest_chunk_size_passes_the_gateway_and_a_larger_one_is_refused_at_boot(
        tmp_path, broker, gateway):
    with pytest.raises(ValueError, match="chunk_size must be 1..%d" % MAX_CHUNK_SIZE):
        Device(tmp_path, broker.port, chunk_size=MAX_CHUNK_SIZE + 1)
    data, store, ingest = gateway
    dev = Device(tmp_path, broker.port, chunk_size=MAX_CHUNK_SIZE)
    dev.camera = dev.agent.camera = NoiseCamera(2 * MAX_CHUNK_SIZE + 1)
    register(store, ingest, dev)
    oid = dev.agent.capture().hex()
    dev.start()
    try:
        wait_for(lambda: not dev.agent.objects.entries, what="the device to finish the upload")
    finally:
        dev.close()
    assert ObjectStore.open(store).get(dev.ident.hex, oid)["stored"] == 3
    assert not ingest.rejects
    assert export(tmp_path, data, dev.ident, oid) == dev.camera.captured[0]


GATEWAY = """
import sys, threading
from gateway.ingest.pipeline import Ingest
Ingest(sys.argv[1], sys.argv[2], epoch_seconds=3600).start()
print("ready", flush=True)
threading.Event().wait()
"""


def start_gateway(data, url):
    p = subprocess.Popen([sys.executable, "-c", GATEWAY, data, url], cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_500_chunk_clip_survives_broker_restart_and_gateway_sigkill(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    data = str(tmp_path / "gw")
    store = Store.open(data)
    dev = Device(tmp_path, broker.port, Scene(), chunk_size=512, frames=6, frame_gap=0)
    store.add_device(dev.ident.hex, dev.ident.public, "cam", "camera")
    oid = dev.agent.capture().hex()
    count = dev.agent.objects.oldest().count
    assert count >= 500
    objects = ObjectStore.open(store)

    def stored():
        return (objects.get(dev.ident.hex, oid) or {"stored": 0})["stored"]

    gw = start_gateway(data, broker.url)
    try:
        dev.start()
        wait_for(lambda: stored() >= 150, what="a third of the chunks")
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        broker.stop()
        broker.start()
        gw = start_gateway(data, broker.url)
        wait_for(lambda: stored() == count, timeout=60, what="every chunk after the restarts")
        wait_for(lambda: not dev.agent.objects.entries, what="the device to drop the upload")
    finally:
        dev.close()
        gw.kill()
        gw.wait()
        broker.stop()
    assert store.db.execute("SELECT count(*) FROM object_chunks").fetchone()[0] == count
    assert export(tmp_path, data, dev.ident, oid) == b"".join(dev.camera.captured)


def forged_manifest(dev, other, seq, hashes):
    """A manifest for dev's object, signed with another device's key."""
    good = manifest(dev.ident, seq, seq, 1790000000, os.urandom(8), "motion", "image/jpeg",
                    10, 4096, hashes, wrap_key(dev.ident.data_key, os.urandom(13), os.urandom(16)),
                    os.urandom(32))
    payload = cbor2.loads(good).value[2]
    return cose.sign1(other.secret, dev.ident.device_id, payload)


def test_duplicates_bad_hashes_and_foreign_manifests_are_rejected_and_counted(
        tmp_path, broker, gateway):
    data, store, ingest = gateway
    dev = Device(tmp_path, broker.port, chunk_size=4096)
    register(store, ingest, dev)
    oid = dev.agent.capture()
    entry = dev.agent.objects.oldest()
    raw_manifest = dev.agent.spool.read(entry.seq)[1:]
    peer = Subscriber(broker.port, "ek/%s/down/#" % dev.ident.hex)
    up = "ek/%s/up/" % dev.ident.hex
    peer.publish(up + "m", raw_manifest)
    chunk0 = dev.agent.objects.read(entry, 0)
    peer.publish(up + "c", chunk0)
    peer.publish(up + "c", chunk0)                          # duplicate
    idx, enc = cbor.loads(chunk0)[1:]
    tampered = bytearray(enc)
    tampered[-1] ^= 1
    peer.publish(up + "c", cbor.dumps([oid, idx, bytes(tampered)]))   # hash not in manifest
    peer.publish(up + "c", cbor.dumps([oid, 99, enc]))                # index out of range
    peer.publish(up + "c", cbor.dumps([os.urandom(8)]))               # no such object
    other = Identity.create(os.urandom)
    peer.publish(up + "m", forged_manifest(dev, other, entry.seq + 1, bytes(32)))
    want = {"duplicate_chunk": 1, "bad_chunk": 2, "unknown_object": 1, "bad_signature": 1}
    wait_for(lambda: dict(ingest.rejects) == want, what="reject counters %s" % want)
    assert store.reject_counts() == want
    o = ObjectStore.open(store).get(dev.ident.hex, oid.hex())
    assert o["stored"] == 1
    acks = [cbor2.loads(p) for t, p in peer.messages if t.endswith("/down/chunks")]
    assert {0: 1, 1: oid, 2: [0, 0], 3: 0} in acks          # the duplicate is acked again
    peer.close()


def test_retention_deletes_oldest_objects_first_when_over_budget(tmp_path, broker, gateway):
    data, store, ingest = gateway
    dev = Device(tmp_path, broker.port, chunk_size=4096)
    register(store, ingest, dev)
    oids = []
    for _ in range(4):
        oids.append(dev.agent.capture().hex())
    incomplete = dev.agent.objects.entries[-1]
    dev.agent.objects.entries.remove(incomplete)   # its chunks never leave the device
    dev.start()
    objects = ingest.objects                       # the gateway's own, as its epochs run it
    try:
        wait_for(lambda: len([o for o in objects.list() if o["completed_at"]]) == 3,
                 what="three objects complete")
        wait_for(lambda: len(objects.list()) == 4, what="the fourth's manifest")
    finally:
        dev.close()
    ingest.stop()
    sizes = {o["oid"]: o["bytes"] for o in objects.list()}

    def disk():
        return sum(os.path.getsize(os.path.join(d, f))
                   for d, _, fs in os.walk(os.path.join(data, "objects")) for f in fs)

    before = disk()
    objects.max_bytes = sizes[oids[1]] + sizes[oids[2]]
    assert objects.retain() == [(dev.ident.hex, oids[0])]
    assert [o["oid"] for o in objects.list()] == oids[1:]
    objects.max_bytes = 0  # everything must go, but not the object still being uploaded
    assert objects.retain() == [(dev.ident.hex, oids[1]), (dev.ident.hex, oids[2])]
    assert [o["oid"] for o in objects.list()] == [oids[3]]
    assert before > 0 and disk() == 0              # the packs are compacted away
