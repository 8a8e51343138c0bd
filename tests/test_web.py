"""The admin web app over a real store: auth on every route, CSRF, login limits, the API, /metrics."""
import base64
import hashlib
import json
import os
import re
import time

import cbor2
import httpx2
import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from agent.camera import SNAPSHOT
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import KIND_CHUNK, KIND_MANIFEST, ObjectQueue, manifest
from agent.proto import up_topic
from gateway.cli.main import main as cli_main
from gateway.config import Config
from gateway.ingest.pipeline import Ingest
from gateway.store.database import Store
from gateway.web import auth, openapi
from gateway.web.app import PUBLIC, WebServer, create_app
from gateway.wire import merkle
from tests.helpers.vectors import load as load_vectors

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
CASE = load_vectors("messages.json")["cases"][0]
DEV = CASE["device_id"]


def store_vector_message(data_dir):
    """The telemetry vector as the ingest would have stored it, sealed into epoch 1."""
    store = Store.open(data_dir)
    store.add_device(DEV, bytes.fromhex(CASE["public_key"]), "tracker-1")
    raw = bytes.fromhex(CASE["message"])
    store.db.execute("INSERT INTO messages (device, seq, kind, time, count, digest, raw, received_at) "
                     "VALUES (?, ?, 't', ?, 3, ?, ?, ?)",
                     (DEV, CASE["seq"], CASE["time"], hashlib.sha256(raw).digest(), raw, time.time()))
    store.add_rejects({"bad_signature": 2})
    store.add_counts({"duplicates": 3})
    store.close()
    Ingest(data_dir, "mqtt://127.0.0.1:1").seal_epoch()


@pytest.fixture
def data_dir(tmp_path):
    d = str(tmp_path / "gw")
    store_vector_message(d)
    auth.set_password(d, PASSWORD)
    return d


@pytest.fixture
def client(data_dir):
    with TestClient(create_app(Config(data_dir=data_dir)), follow_redirects=False) as c:
        yield c


def csrf_of(html):
    return html.split('name="csrf" content="', 1)[1].split('"', 1)[0]


def login(c, password=PASSWORD):
    page = c.get("/login")
    return c.post("/login", data={"password": password, "next": "/devices", "csrf": csrf_of(page.text)})


def logged_in(c):
    assert login(c).status_code == 303
    return csrf_of(c.get("/").text)


def concrete(path):
    return (path.replace("{device}", DEV).replace("{seq:int}", str(CASE["seq"]))
            .replace("{oid}", "00" * 8).replace("{index:int}", "0"))


def test_every_page_and_api_route_needs_a_session(client):
    checked = []
    for route in client.app.router.routes:
        if isinstance(route, Mount) or route.path in PUBLIC:
            continue
        assert isinstance(route, Route)
        for method in route.methods - {"HEAD"}:
            r = client.request(method, concrete(route.path))
            if route.path.startswith("/api/"):
                assert r.status_code == 401, (method, route.path)
                assert r.json() == {"error": "log in first"}
            else:
                assert r.status_code == 303, (method, route.path)
                assert r.headers["location"].startswith("/login?next=")
            checked.append((method, route.path))
    assert ("GET", "/") in checked and ("POST", "/api/devices/{device}/revoke") in checked
    assert len(checked) >= 20


def test_login_gives_a_fresh_session_and_pages_render(client):
    anonymous = client.get("/login").cookies[auth.COOKIE]
    r = login(client)
    assert r.status_code == 303 and r.headers["location"] == "/devices"
    assert r.cookies[auth.COOKIE] != anonymous
    for path in ("/", "/devices", "/devices/" + DEV, "/camera", "/storage", "/chain", "/settings"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "tracker-1" in client.get("/devices").text
    assert "no cameras yet" in client.get("/camera").text
    assert "no audits yet" in client.get("/storage").text
    page = client.get("/settings").text
    assert "epoch_seconds" in page and "audit_seconds" in page and "retention_days" in page
    assert client.get("/devices/0000000000000000").status_code == 404


def test_wrong_password_and_login_rate_limit(client):
    for _ in range(auth.FAILURES_ALLOWED):
        r = login(client, "wrong")
        assert r.status_code == 401 and "wrong password" in r.text
    r = login(client)  # even the right password waits now
    assert r.status_code == 429 and "too many failed logins" in r.text


def test_unsafe_requests_need_the_csrf_token(client):
    token = logged_in(client)
    url = "/api/devices/" + DEV
    assert client.patch(url, json={"name": "porch"}).status_code == 403
    assert client.patch(url, json={"name": "porch"}, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    r = client.patch(url, json={"name": "porch"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert client.get(url).json()["name"] == "porch"
    assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/api/devices").status_code == 401


def test_api_session_login_for_scripts(client):
    assert client.post("/api/session", data={"password": PASSWORD}).status_code == 415
    assert client.post("/api/session", json={"password": "nope"}).status_code == 401
    r = client.post("/api/session", json={"password": PASSWORD})
    assert r.status_code == 200
    token = r.json()["csrf"]
    assert client.get("/api/status").json()["devices"]["total"] == 1
    assert client.delete("/api/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/api/status").status_code == 401


def test_api_hands_out_stored_ciphertext_and_inclusion_proofs(client, data_dir):
    token = logged_in(client)
    msgs = client.get("/api/devices/%s/messages?kind=t" % DEV).json()
    assert [base64.b64decode(m["raw"]).hex() for m in msgs] == [CASE["message"]]
    p = client.get("/api/devices/%s/messages/%d" % (DEV, CASE["seq"])).json()
    root = bytes.fromhex(p["anchor"]["root"])
    assert merkle.verify_inclusion(hashlib.sha256(base64.b64decode(p["raw"])).digest(), p["leaf"],
                                   p["anchor"]["count"], [bytes.fromhex(x) for x in p["proof"]], root)
    assert client.get("/api/devices/%s/messages?limit=0" % DEV).status_code == 400
    assert client.get("/api/anchors").json()[0]["epoch"] == 1
    r = client.post("/api/devices", json={"public_key": "04" + "00" * 64}, headers={"X-CSRF-Token": token})
    assert r.status_code == 503 and "no chain" in r.json()["error"]


def camera_upload(data_dir, flash):
    """A camera's snapshot as its agent makes it (chunks encrypted on flash, a signed
    manifest), registered with the gateway; returns (identity, oid, plaintext, messages to
    ingest: the manifest and then each chunk, as they arrive over MQTT)."""
    ident = Identity.create(os.urandom)
    store = Store.open(data_dir)
    store.add_device(ident.hex, ident.public, "porch", "camera")
    store.close()
    queue = ObjectQueue(flash)
    oid, plain = os.urandom(8), os.urandom(3000)
    w = queue.begin(oid, 1024, ident.data_key, Nonces(os.urandom))
    w.write(plain)
    hashes = w.close()
    queue.commit(w, 1)
    signed = manifest(ident, 1, 1, int(time.time()), oid, "motion", SNAPSHOT, len(plain), 1024, hashes,
                      w.wrapped_key, w.commit)
    entry = queue.find(oid)
    uploads = [(up_topic(ident.hex, KIND_MANIFEST), signed)]
    uploads += [(up_topic(ident.hex, KIND_CHUNK), queue.read(entry, i)) for i in range(entry.count)]
    return ident, oid.hex(), plain, uploads


def ingest(data_dir, messages):
    gw = Ingest(data_dir, "mqtt://127.0.0.1:1")
    try:
        gw.process([(topic, raw, 0, 0) for topic, raw in messages])
    finally:
        gw.pool.shutdown()
        gw.store.close()


def test_api_hands_out_a_camera_objects_signed_manifest_and_stored_chunks(client, data_dir, tmp_path):
    ident, oid, plain, uploads = camera_upload(data_dir, str(tmp_path / "flash"))
    ingest(data_dir, uploads[:-1])  # the last chunk is still on its way
    logged_in(client)
    cam = "/api/devices/" + ident.hex
    listed = client.get(cam + "/objects").json()
    assert [(o["oid"], o["type"], o["event"], o["size"], o["stored"], o["count"], o["complete"])
            for o in listed] == [(oid, SNAPSHOT, "motion", len(plain), 2, 3, False)]
    r = client.get(cam + "/objects/" + oid + "/chunks/2")
    assert r.status_code == 404 and "not uploaded yet" in r.json()["error"]
    page = client.get("/camera").text
    assert oid in page and "2/3 uploading" in page

    ingest(data_dir, uploads[-1:])
    o = client.get(cam + "/objects/" + oid).json()
    assert (o["complete"], o["has_snapshot"], o["has_clip"]) == (True, True, False)
    assert base64.b64decode(o["manifest"]) == uploads[0][1]  # as signed on the device
    for i, (_, chunk) in enumerate(uploads[1:]):
        r = client.get(cam + "/objects/%s/chunks/%d" % (oid, i))
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.content == cbor2.loads(chunk)[2]  # the COSE_Encrypt0 as the device sealed it
        assert plain[i * 1024:(i + 1) * 1024] not in r.content
    assert client.get(cam + "/objects/%s/chunks/3" % oid).status_code == 404
    assert client.get(cam + "/objects/" + "00" * 8).status_code == 404
    assert client.get(cam + "/objects/not-an-id").status_code == 404
    assert 'data-action="show"' in client.get("/camera").text


def test_openapi_documents_every_api_route(client):
    logged_in(client)
    doc = client.get("/api/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for route in client.app.router.routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
            assert {(m, path) for m in route.methods - {"HEAD"}} <= documented
    assert doc["paths"]["/api/session"]["post"]["security"] == []
    assert openapi.undescribed(client.app.router.routes) == []   # each has its schemas


def test_the_dashboard_shows_each_component_and_why_one_is_paused(client):
    logged_in(client)
    monitor = client.app.state.monitor
    monitor.health.component("ingest", critical=True).pause(
        "disk_full", "disk full: 12 MB free, needs 64 MB")
    monitor.tick()
    page = client.get("/").text
    assert '<li class="alive">web-monitor: alive' in page
    assert '<li class="paused">ingest: paused · disk full: 12 MB free, needs 64 MB</li>' in page


def test_metrics_are_public_aggregates(client):
    text = client.get("/metrics").text
    assert "edgekeep_messages_stored_total 1.0" in text
    assert 'edgekeep_rejects_total{reason="bad_signature"} 2.0' in text
    assert "edgekeep_duplicates_total 3.0" in text
    assert 'edgekeep_storage_bytes{kind="used"}' in text
    assert 'edgekeep_devices{state="offline"} 1.0' in text
    assert DEV not in text


def test_live_update_over_sse_from_a_real_server(data_dir):
    server = WebServer(create_app(Config(data_dir=data_dir)), port=0).start()
    try:
        with httpx2.Client(base_url=server.url) as c:
            r = c.post("/api/session", json={"password": PASSWORD})
            c.cookies.set(auth.COOKIE, r.cookies[auth.COOKIE])
            with c.stream("GET", "/api/events", timeout=10) as events:
                lines = events.iter_lines()
                assert next(lines) == "event: status"
                store = Store.open(data_dir)
                store.db.execute("INSERT INTO messages (device, seq, kind, time, digest, raw, received_at) "
                                 "VALUES (?, 9, 's', 0, x'00', x'00', 0)", (DEV,))
                store.close()
                next(line for line in lines if line == "event: message")
                assert json.loads(next(lines)[len("data: "):])["seq"] == 9
    finally:
        server.stop()


def test_admin_set_password_command(tmp_path, capsys):
    d = str(tmp_path / "gw")
    generated = auth.ensure_password(d)
    first = open(generated).read().strip()
    assert auth.check_password(d, first)
    pw = tmp_path / "pw"
    pw.write_text("short")
    assert cli_main(["admin", "set-password", "--data-dir", d, "--password-file", str(pw)]) == 1
    pw.write_text("a much better password\n")
    assert cli_main(["admin", "set-password", "--data-dir", d, "--password-file", str(pw)]) == 0
    assert auth.check_password(d, "a much better password") and not auth.check_password(d, first)
    assert auth.ensure_password(d) is None
