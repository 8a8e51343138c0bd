"""The Provider network on the admin page (Peers, the dashboard's Off-box card), in
GET /api/network and in /metrics, over a real store with peers and placements; the Peers page
in Chromium at a phone's width."""
import hashlib
import os
import re
import time
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from gateway.config import Config
from gateway.network.identity import Identity
from gateway.store.database import Store
from gateway.store.placements import PLACED, Placement
from gateway.store.provider import Provider
from gateway.web import auth
from gateway.web.app import WebServer, create_app

PASSWORD = "correct horse battery"
MB = 1024 * 1024
GB = 1024 * MB
A, B, C, D = ("a1" * 32), ("b2" * 32), ("c3" * 32), ("d4" * 32)


def make_gateway(data_dir, peers=3):
    """A data directory whose store has `peers` of A (active, seen), B (active, unreachable),
    C (failed after audits), D (removed); three blobs in the local Provider, the first
    durable off-box (placed on A and B), the other two queued; 5000 bytes held for A; three
    refused forged requests."""
    store = Store.open(data_dir)
    provider = Provider.open(store)
    now = time.time()
    try:
        with store.transaction():
            for name, status in list(zip((A, B, C, D), ("active", "active", "failed", "removed")))[:peers]:
                store.peers.add(name, "https://%s.example:8443" % name[:4], 20 * GB, 10 * GB,
                                now - 86400, now + 86400 * 364)
                store.peers.update(name, status=status)
            store.peers.seen(A, now - 150)
            if peers > 1:
                store.peers.unreachable(B, now - 3600, "connect timeout (10 s)")
            if peers > 2:
                store.peers.audited(C, now - 7200, 2)
            store.peers.add_held(A, 0, b"\x01" * 32, 1, b"\x02" * 32, 5000, "p0", 0, now)
            store.add_counts({"peer_refused_forged": 3})
        digests = []
        for i in range(3):
            data = os.urandom(4000 + 1000 * i)
            digest = hashlib.sha256(data).digest()
            provider.put(digest, data)
            digests.append(digest)
            store.placements.queue(digest, hashlib.sha256(b"sealed" + data).digest(),
                                   len(data) + 28, 2, 3, now)
        for slot, peer in enumerate((A, B)[:peers]):
            store.placements.add(Placement(peer, 0, digests[0], slot, b"\x03" * 32, 2100,
                                           PLACED, now))
        store.placements.refresh(digests[0], now)
    finally:
        provider.close()
        store.close()
    auth.set_password(data_dir, PASSWORD)
    return digests


@pytest.fixture
def data_dir(tmp_path):
    d = str(tmp_path / "gw")
    make_gateway(d)
    return d


@pytest.fixture
def client(data_dir):
    with TestClient(create_app(Config(data_dir=data_dir)), follow_redirects=False) as c:
        yield c


def login(c):
    page = c.get("/login")
    csrf = page.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
    assert c.post("/login", data={"password": PASSWORD, "next": "/", "csrf": csrf}).status_code == 303


@pytest.mark.unit
def test_logged_out_the_network_is_not_shown(client):
    r = client.get("/peers")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/peers"
    r = client.get("/api/network")
    assert r.status_code == 401 and r.json() == {"error": "log in first"}


@pytest.mark.unit
def test_api_network_gives_this_gateway_the_survival_and_each_peer(client, data_dir):
    login(client)
    n = client.get("/api/network").json()
    me = Identity.load_or_create(data_dir)
    assert n["gateway"] == {"name": me.name, "short": me.short, "endpoint": None,
                            "endpoint_note": "peer port closed: set peer_port"}
    s = n["survival"]
    assert (s["peers"], s["k"], s["m"], s["survives"], s["level"]) == (
        2, 2, 3, "the loss of this gateway", "caution")
    assert s["statement"].startswith("with 2 peers, blobs survive the loss of this gateway but "
                                     "not of a peer as well")
    assert (s["not_offbox_blobs"], s["not_offbox_bytes"], s["durable"]) == (2, 5000 + 6000, 1)
    by = {p["short"]: p for p in n["peers"]}
    assert list(by) == [A[:16], B[:16], C[:16]]
    a, b, c = by[A[:16]], by[B[:16]], by[C[:16]]
    assert (a["status"], a["reachable"], a["reachable_text"]) == ("active", True, "yes, 2 min ago")
    assert (a["bytes_placed"], a["bytes_held"], a["capacity"], a["quota"]) == (2100, 5000, 20 * GB,
                                                                                10 * GB)
    assert b["reachable"] is False and b["reachable_text"].startswith("no, since ")
    assert b["last_error"] == "connect timeout (10 s)" and b["bytes_placed"] == 2100
    assert (c["status"], c["audit_failures"], c["reachable"], c["bytes_held"]) == ("failed", 2, None, 0)
    assert c["last_audit"] > 0
    assert n["refused"]["forged"] == 3 and n["refused"]["stale"] == 0


@pytest.mark.unit
def test_a_running_gateway_shows_its_own_identity_and_peer_endpoint(data_dir):
    ident = Identity.generate()
    gateway = SimpleNamespace(identity=ident, chain=None, ingest=None, health=None,
                              peer_server=SimpleNamespace(url="https://0.0.0.0:8443",
                                                          endpoint="https://pi.example:8443"))
    with TestClient(create_app(Config(data_dir=data_dir, peer_port=8443), gateway),
                    follow_redirects=False) as c:
        login(c)
        me = c.get("/api/network").json()["gateway"]
        assert me == {"name": ident.name, "short": ident.short,
                      "endpoint": "https://pi.example:8443", "endpoint_note": None}
        assert '<span class="mono" id="endpoint">https://pi.example:8443</span>' in c.get("/peers").text
        assert c.get("/api/status").json()["network"]["short"] == ident.short


@pytest.mark.unit
def test_the_peers_page_shows_the_gateway_its_survival_and_a_card_per_peer(client, data_dir):
    login(client)
    page = client.get("/peers")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script>" not in html and "style=" not in html      # CSP: nothing inline
    me = Identity.load_or_create(data_dir)
    assert '<code class="copyable" id="full-name"' in html and me.name in html
    assert "peer port closed: set peer_port" in html
    assert '<p class="statement survival caution">' in html and "not of a peer as well" in html
    cards = re.findall(r'<article class="card peer (\w+)" data-peer="(\w+)">', html)
    assert cards == [("active", A), ("active", B), ("failed", C)]
    a = html.split('data-peer="%s"' % A, 1)[1].split("</article>", 1)[0]
    assert A[:16] in a and "https://a1a1.example:8443" in a and "yes, 2 min ago" in a
    assert "2.1 KiB of 20.0 GiB" in a and "4.9 KiB of 10.0 GiB" in a
    b = html.split('data-peer="%s"' % B, 1)[1].split("</article>", 1)[0]
    assert 'class="reachable error">no, since ' in b and "connect timeout (10 s)" in b
    c = html.split('data-peer="%s"' % C, 1)[1].split("</article>", 1)[0]
    assert "2 h ago" in c and '<dd class="error">2</dd>' in c
    assert "forged: 3" in html
    assert '<a href="/peers" aria-current="page">Peers</a>' in html


@pytest.mark.unit
def test_with_fewer_than_k_peers_the_page_warns(tmp_path):
    d = str(tmp_path / "lonely")
    make_gateway(d, peers=1)
    with TestClient(create_app(Config(data_dir=d)), follow_redirects=False) as c:
        login(c)
        s = c.get("/api/network").json()["survival"]
        assert (s["peers"], s["survives"], s["level"]) == (1, None, "bad")
        assert "not restorable without this gateway" in s["statement"]
        html = c.get("/peers").text
        assert '<p class="statement survival bad">' in html
        assert "with 1 peer, blobs are not restorable without this gateway" in html
        dash = c.get("/").text
        assert 'class="survival bad" id="offbox-statement"' in dash


@pytest.mark.unit
def test_the_dashboard_off_box_card_and_the_status_snapshot(client):
    login(client)
    html = client.get("/").text
    card = html.split('id="offbox"', 1)[1].split("</div>", 1)[0]
    assert '<span data-stat="network.not_offbox_blobs">2</span> blob(s) not yet' in card
    assert '<span data-stat="network.not_offbox_bytes" data-format="size">10.7 KiB</span>' in card
    assert '<span data-stat="network.durable">1</span> blob(s) durable off-box' in card
    assert "with 2 peers, blobs survive the loss of this gateway" in card
    assert '<span data-stat="network.peers">2</span> peer(s) in use' in card
    n = client.get("/api/status").json()["network"]
    assert (n["not_offbox_blobs"], n["durable"], n["peers"], n["paired"]) == (2, 1, 2, 3)


@pytest.mark.unit
def test_metrics_of_the_network(client):
    text = client.get("/metrics").text      # public, like the other metrics
    assert 'edgekeep_peer_refused_total{reason="forged"} 3.0' in text
    assert 'edgekeep_peer_refused_total{reason="over_quota"} 0.0' in text
    assert "edgekeep_network_not_offbox_bytes 11000.0" in text
    assert "edgekeep_network_not_offbox_blobs 2.0" in text
    for status, n in (("active", 2), ("failed", 1), ("full", 0), ("removed", 0)):
        assert 'edgekeep_peers{status="%s"} %d.0' % (status, n) in text
    assert 'edgekeep_peer_bytes_placed{peer="%s"} 2100.0' % A[:16] in text
    assert 'edgekeep_peer_bytes_placed{peer="%s"} 0.0' % C[:16] in text
    assert 'edgekeep_peer_bytes_held{peer="%s"} 5000.0' % A[:16] in text
    assert 'edgekeep_peer_bytes_held{peer="%s"} 0.0' % B[:16] in text
    assert A not in text        # short names only


@pytest.mark.browser
def test_the_peers_page_fits_a_phone(tmp_path):
    from playwright.sync_api import expect, sync_playwright
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("browser tests need Debian's chromium at %s: run `make setup-test`" % chromium)
    d = str(tmp_path / "gw")
    make_gateway(d, peers=4)
    store = Store.open(d)   # a long error must wrap, not widen the page
    store.peers.unreachable(B, time.time(), "x" * 300)
    store.close()
    server = WebServer(create_app(Config(data_dir=d)), port=0).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
                page.set_default_timeout(15000)
                page.goto(server.url + "peers")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                expect(page).to_have_url(server.url + "peers")
                expect(page.locator("article.peer")).to_have_count(4)
                expect(page.locator('article[data-peer="%s"]' % A)).to_contain_text(A[:16])
                expect(page.locator("#survival")).to_contain_text("survive the loss of this gateway")
                page.click("button[data-copy=full-name]")   # app.js runs under the CSP
                expect(page.locator("button[data-copy=full-name]")).to_have_text(
                    re.compile("^(Copied|Selected)$"))
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
                shots = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "test-artifacts", "screenshots")
                os.makedirs(shots, exist_ok=True)
                page.screenshot(path=os.path.join(shots, "peers-390.png"), full_page=True)
                page.goto(server.url)
                expect(page.locator("#offbox")).to_contain_text("blob(s) not yet")
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
            finally:
                browser.close()
    finally:
        server.stop()
