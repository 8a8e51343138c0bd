"""The Camera page's API and live feed (gateway/web/camera.py) over a real store and ingest:
GET /api/camera/events groups each clip with its poster and thumbnail, shows a poster whose
clip is not in yet as a pending event, filters by camera and time, refuses bad parameters
with a clear error; the `object` feed announces each upload's moves once."""
import os
import time

import pytest
from starlette.testclient import TestClient

from agent.camera import POSTER, SNAPSHOT, THUMBNAIL
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import KIND_CHUNK, KIND_MANIFEST, ObjectQueue, manifest
from agent.proto import up_topic
from gateway.config import Config
from gateway.store.database import Store
from gateway.web import auth
from gateway.web.app import create_app
from gateway.web.camera import ObjectFeed
from tests.test_web import ingest  # the ingest's own batch processing, no broker

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
NOW = int(time.time())


class Camera:
    """A camera's objects as its agent seals them (agent/objects.py), each uploaded by
    handing its manifest and chunks to the ingest."""

    def __init__(self, data_dir, flash, name):
        self.ident = Identity.create(os.urandom)
        store = Store.open(data_dir)
        store.add_device(self.ident.hex, self.ident.public, name, "camera")
        store.close()
        self.queue, self.nonces, self.seq = ObjectQueue(flash), Nonces(os.urandom), 0

    def seal(self, t, event, ctype, of=None, size=2000):
        """(oid hex, [(topic, manifest)], [(topic, chunk)])."""
        self.seq += 1
        oid = os.urandom(8)
        w = self.queue.begin(oid, 1024, self.ident.data_key, self.nonces)
        w.write(os.urandom(size))
        hashes = w.close()
        self.queue.commit(w, self.seq, of)
        signed = manifest(self.ident, self.seq, 1, t, oid, event, ctype, size, 1024, hashes,
                          w.wrapped_key, w.commit, of)
        entry = self.queue.find(oid)
        chunks = [(up_topic(self.ident.hex, KIND_CHUNK), self.queue.read(entry, i))
                  for i in range(entry.count)]
        return oid.hex(), [(up_topic(self.ident.hex, KIND_MANIFEST), signed)], chunks


@pytest.fixture
def data_dir(tmp_path):
    d = str(tmp_path / "gw")
    Store.open(d).close()
    auth.set_password(d, PASSWORD)
    return d


@pytest.fixture
def client(data_dir):
    with TestClient(create_app(Config(data_dir=data_dir)), follow_redirects=False) as c:
        page = c.get("/login")
        csrf = page.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
        assert c.post("/login", data={"password": PASSWORD, "next": "/", "csrf": csrf}
                      ).status_code == 303
        yield c


def events(client, **query):
    r = client.get("/api/camera/events", params=query)
    assert r.status_code == 200, r.text
    return [(e["device"], e["oid"]) for e in r.json()], r.json()


def test_events_group_posters_with_their_clip_and_filter_by_camera_and_time(
        client, data_dir, tmp_path):
    porch = Camera(data_dir, str(tmp_path / "porch"), "porch")
    yard = Camera(data_dir, str(tmp_path / "yard"), "yard")
    clip = porch.seal(NOW - 60, "motion", "video/mp4")
    poster = porch.seal(NOW - 58, POSTER, SNAPSHOT, bytes.fromhex(clip[0]))
    thumb = porch.seal(NOW - 58, THUMBNAIL, SNAPSHOT, bytes.fromhex(clip[0]), size=300)
    recording = os.urandom(8)        # a clip still being recorded: only its poster is in
    early = porch.seal(NOW - 5, POSTER, SNAPSHOT, recording)
    old = yard.seal(NOW - 3 * 86400, "motion", SNAPSHOT)
    snap = yard.seal(NOW - 30, "motion", SNAPSHOT)
    # The poster and thumbnail are sent before the clip, as the agent queues them; the clip's
    # last chunk is still on its way.
    ingest(data_dir, poster[1] + poster[2] + thumb[1] + thumb[2] + clip[1] + clip[2][:-1]
           + early[1] + early[2] + old[1] + old[2] + snap[1] + snap[2])

    keys, body = events(client)
    assert keys == [(porch.ident.hex, recording.hex()), (yard.ident.hex, snap[0]),
                    (porch.ident.hex, clip[0]), (yard.ident.hex, old[0])]   # newest first
    pending, _, movie, _ = body
    assert pending["pending"] and pending["poster"]["oid"] == early[0]
    assert pending["has_snapshot"] and not pending["complete"] and pending["thumbnail"] is None
    assert (movie["type"], movie["complete"], movie["has_snapshot"]) == ("video/mp4", False, True)
    assert (movie["poster"]["oid"], movie["thumbnail"]["oid"]) == (poster[0], thumb[0])
    assert movie["poster"]["parent"] == clip[0] and movie["poster"]["complete"]
    # Posters and thumbnails are no events of their own.
    assert not {poster[0], thumb[0], early[0]} & {oid for _, oid in keys}

    assert events(client, device=yard.ident.hex)[0] == [(yard.ident.hex, snap[0]),
                                                        (yard.ident.hex, old[0])]
    assert events(client, since=NOW - 86400, until=NOW + 1, device=yard.ident.hex)[0] == [
        (yard.ident.hex, snap[0])]
    assert events(client, until=NOW - 86400)[0] == [(yard.ident.hex, old[0])]
    assert events(client, since=NOW - 10)[0] == [(porch.ident.hex, recording.hex())]
    assert events(client, limit=1)[0] == [(porch.ident.hex, recording.hex())]

    ingest(data_dir, clip[2][-1:])
    movie = next(e for e in events(client)[1] if e["oid"] == clip[0])
    assert (movie["complete"], movie["has_clip"]) == (True, True)


@pytest.mark.parametrize("query, error", [
    ({"device": "porch"}, "device must be a device id (16 hex digits)"),
    ({"since": "yesterday"}, "since must be a Unix time in seconds"),
    ({"until": "nan"}, "until must be a Unix time in seconds"),
    ({"until": "-1"}, "until must be a Unix time in seconds"),
    ({"limit": "0"}, "limit must be between 1 and 1000"),
])
def test_bad_event_queries_are_refused_saying_why(client, query, error):
    r = client.get("/api/camera/events", params=query)
    assert (r.status_code, r.json()) == (400, {"error": error})


def test_the_object_feed_announces_each_upload_move_once(data_dir, tmp_path):
    porch = Camera(data_dir, str(tmp_path / "porch"), "porch")
    clip = porch.seal(NOW, "motion", "video/mp4", size=3000)
    poster = porch.seal(NOW, POSTER, SNAPSHOT, bytes.fromhex(clip[0]))
    ingest(data_dir, clip[1] + clip[2][:1])
    feed, store = ObjectFeed(), Store.open(data_dir)
    try:
        said = [(e, o["oid"], o["stored"], o["parent"]) for e, o in feed(store)]
        assert said == [("object", clip[0], 1, None)]
        assert feed(store) == []                                  # nothing moved since
        ingest(data_dir, poster[1] + poster[2] + clip[2][1:])
        said = sorted((o["oid"], o["stored"], o["complete"], o["parent"]) for _, o in feed(store))
        assert said == sorted([(clip[0], 3, True, None), (poster[0], 2, True, clip[0])])
        assert feed(store) == []
        assert feed(store, now=time.time() + 3600) == []          # out of its window: forgotten
        assert feed.seen == {}
    finally:
        store.close()
