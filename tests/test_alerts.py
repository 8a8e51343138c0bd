"""Alerts (issue 19, point 4): each rule at its threshold, values out only for devices whose
owner opted in, one notice when a condition starts and one when it clears (across a
restart too), a bad webhook retried with back-off and counted while nothing waits on it;
and end to end: a device that stops sending shows on the admin page (Chromium), Home
Assistant's topic on the real Mosquitto gets the event, a local webhook receiver gets one
POST with none of the device's values, and one more, "resolved", when it is back.
"""
import http.server
import json
import os
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from gateway.alerts import rules
from gateway.alerts.delivery import WEBHOOK, Courier, Webhook, retry_delay
from gateway.alerts.runner import Runner, reconcile
from gateway.config import AlertsConfig, Config
from gateway.health import Registry
from gateway.store.database import Store
from tests.helpers.wait import wait_for

DEV = "a1" * 8
CAM = "c3" * 8
NOW = 1_800_000_000.0


def device(dev=DEV, last_seen=NOW, health=None, kind="tracker", status="active"):
    return {"id": dev, "name": "garage", "kind": kind, "status": status, "last_seen": last_seen,
            "registered_at": NOW - 86400, "health": health or {}}


def held(cfg, **snap):
    """The (rule, subject) keys that hold in a Snapshot(now=NOW, **snap)."""
    return {c.key for c in rules.evaluate(rules.Snapshot(now=NOW, **snap), cfg)}


# -- the rules, at their thresholds ----------------------------------------------------------

@pytest.mark.unit
def test_device_offline_after_offline_minutes():
    cfg = AlertsConfig(offline_minutes=10)
    assert held(cfg, devices=[device(last_seen=NOW - 599)]) == set()
    assert held(cfg, devices=[device(last_seen=NOW - 600)]) == {("device_offline", DEV)}
    assert held(cfg, devices=[device(last_seen=None)]) == {("device_offline", DEV)}  # never heard
    assert held(cfg, devices=[device(last_seen=NOW - 9999, status="revoked")]) == set()
    assert held(AlertsConfig(off=["device_offline"]), devices=[device(last_seen=0)]) == set()


@pytest.mark.unit
def test_battery_low_below_battery_mv_and_clears_only_past_the_margin():
    cfg = AlertsConfig(battery_mv=3400)
    key = ("battery_low", DEV)
    assert held(cfg, devices=[device(health={"batt": 3400})]) == set()
    assert held(cfg, devices=[device(health={"batt": 3399})]) == {key}
    # active: it holds until battery_mv + the margin
    margin = 3400 + rules.BATTERY_MARGIN_MV
    assert held(cfg, devices=[device(health={"batt": margin - 1})], active=frozenset([key])) == {key}
    assert held(cfg, devices=[device(health={"batt": margin})], active=frozenset([key])) == set()
    assert held(cfg, devices=[device(health={})]) == set()       # not reported


@pytest.mark.unit
def test_queue_drops_when_the_count_rises_until_quiet():
    cfg = AlertsConfig(drops_quiet_minutes=60)
    first = rules.Snapshot(now=NOW, devices=[device(health={"drop": 3})])
    assert rules.drop_marks(first) == {DEV: (3.0, 0.0)}       # first sight: a mark, no alert
    assert held(cfg, devices=[device(health={"drop": 3})]) == set()
    marks = {DEV: (3.0, 0.0)}
    assert held(cfg, devices=[device(health={"drop": 3})], drops=marks) == set()
    assert held(cfg, devices=[device(health={"drop": 4})], drops=marks) == {("queue_drops", DEV)}
    rose = {DEV: (4.0, NOW - 3599)}
    assert held(cfg, devices=[device(health={"drop": 4})], drops=rose) == {("queue_drops", DEV)}
    quiet = {DEV: (4.0, NOW - 3600)}
    assert held(cfg, devices=[device(health={"drop": 4})], drops=quiet) == set()
    reflashed = rules.Snapshot(now=NOW, devices=[device(health={"drop": 0})], drops=quiet)
    assert rules.drop_marks(reflashed) == {DEV: (0.0, NOW - 3600)}


@pytest.mark.unit
def test_motion_within_motion_minutes():
    cfg = AlertsConfig(motion_minutes=5)
    cam = [device(CAM, kind="camera")]
    assert held(cfg, devices=cam, motion={CAM: (NOW - 299, "person")}) == {("motion", CAM)}
    assert held(cfg, devices=cam, motion={CAM: (NOW - 300, "person")}) == set()


@pytest.mark.unit
def test_gateway_rules_audit_anchors_disk_peers():
    cfg = AlertsConfig(anchor_minutes=30, disk_percent=90, peer_minutes=30)
    g = rules.GATEWAY
    failed = {"id": 7, "time": NOW, "ok": 0, "failed": 2, "challenges": 16}
    assert held(cfg, last_audit=failed) == {("audit_failed", g)}
    assert held(cfg, last_audit=dict(failed, ok=1)) == set()
    assert held(cfg, last_audit=dict(failed, ok=None)) == set()          # still open
    assert held(AlertsConfig(audit=False), last_audit=failed) == set()
    assert held(cfg, unanchored=(NOW - 1799, 3)) == set()
    assert held(cfg, unanchored=(NOW - 1800, 3)) == {("anchors_behind", g)}
    assert held(cfg, disk=(89, 100)) == set()
    assert held(cfg, disk=(90, 100)) == {("disk_full", g)}
    margin = 90 - rules.DISK_MARGIN_PERCENT
    assert held(cfg, disk=(margin, 100), active=frozenset([("disk_full", g)])) == {("disk_full", g)}
    assert held(cfg, disk=(margin - 1, 100), active=frozenset([("disk_full", g)])) == set()
    peer = SimpleNamespace(name="p1", unreachable_since=NOW - 1800)
    assert held(cfg, peers=[peer]) == {("peer_unreachable", "p1")}
    assert held(cfg, peers=[SimpleNamespace(name="p1", unreachable_since=NOW - 1799)]) == set()
    assert held(cfg, peers=[SimpleNamespace(name="p1", unreachable_since=None)]) == set()


@pytest.mark.unit
def test_unknown_rule_or_webhook_scheme_in_the_config_is_refused(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[alerts]\noff = ["no_such_rule"]\n')
    with pytest.raises(ValueError, match="no rule no_such_rule; the rules are device_offline"):
        Runner(Config.load(str(path)))
    path.write_text('[alerts]\nwebhook_url = "ftp://example/x"\n')
    with pytest.raises(ValueError, match="http:// or https://"):
        Config.load(str(path))
    path.write_text('[alerts]\noffline_minutes = 3\n')
    assert Config.load(str(path)).alerts.offline_minutes == 3


# -- the store: once per start and end, values only when opted in ----------------------------

def new_store(tmp_path, health=None):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    store.add_device(DEV, b"\x04" + os.urandom(64), "garage")
    store.db.execute("UPDATE devices SET last_seen = ?, health = ? WHERE id = ?",
                     (time.time() - 3600, json.dumps(health or {}), DEV))
    return data, store


def notices(store, channel=WEBHOOK):
    return [json.loads(n) for (n,) in store.db.execute(
        "SELECT payload FROM alert_outbox WHERE channel = ? ORDER BY id", (channel,))]


@pytest.mark.unit
def test_values_leave_the_gateway_only_for_a_device_opted_in(tmp_path):
    data, store = new_store(tmp_path, {"batt": 3312})
    cfg = Config(data_dir=data, alerts=AlertsConfig(off=["device_offline", "disk_full"]))
    runner = Runner(cfg)
    now = time.time()
    assert runner.round(store, now) == (1, 0)            # battery_low
    # no channel configured: the alert is on the page, nothing queued
    assert store.alerts.active()[0]["detail"] == {"battery_mv": 3312}
    store.alerts.resolve(store.alerts.active()[0]["id"], now)

    with store.transaction():
        c = rules.Condition("battery_low", DEV, DEV, "garage: battery low", "below", 3,
                            {"battery_mv": 3312})
        reconcile(store, [c], now, [WEBHOOK], "gw")
    (fired,) = notices(store)
    assert "values" not in fired and "3312" not in json.dumps(fired)

    store.alerts.set_optin(DEV, True, now)
    with store.transaction():
        reconcile(store, [], now + 1, [WEBHOOK], "gw")                  # resolved
        reconcile(store, [c], now + 2, [WEBHOOK], "gw")                 # fired again
    resolved, again = notices(store)[1:]
    assert resolved["event"] == "resolved" and again["values"] == {"battery_mv": 3312}
    store.alerts.set_optin(DEV, False, now)
    assert store.alerts.opted_in() == set()
    store.close()


@pytest.mark.unit
def test_an_alert_fires_once_and_clears_once_across_a_restart(tmp_path):
    data, store = new_store(tmp_path)
    cfg = Config(data_dir=data, alerts=AlertsConfig(off=["disk_full"], offline_minutes=10))
    now = time.time()
    cfg.alerts.webhook_url = refused_url()      # a channel (its courier not started)
    first = Runner(cfg)
    assert first.round(store, now) == (1, 0)
    assert first.round(store, now + 30) == (0, 0)
    store.close()

    store = Store.connect(data)                 # a restart: a new runner, the same rows
    second = Runner(cfg)
    assert second.round(store, now + 60) == (0, 0)
    assert [n["event"] for n in notices(store)] == ["fired"]
    store.db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now + 61, DEV))
    assert second.round(store, now + 62) == (0, 1)
    assert second.round(store, now + 90) == (0, 0)
    assert [n["event"] for n in notices(store)] == ["fired", "resolved"]
    assert store.alerts.active() == [] and len(store.alerts.resolved_since(0)) == 1
    store.close()


@pytest.mark.unit
def test_alert_rows_on_both_backends(tmp_path, database_url):
    store = Store.open(str(tmp_path / "gw"), database_url)
    try:
        a = store.alerts.fire("disk_full", "gateway", None, "Disk", "93%", 4, {"percent": 93}, 10.0)
        with pytest.raises(Exception, match="(?i)unique"):   # one active per (rule, subject)
            with store.transaction():
                store.alerts.fire("disk_full", "gateway", None, "Disk", "93%", 4, {}, 11.0)
        assert len(store.alerts.active()) == 1
        store.alerts.enqueue(a, "fired", WEBHOOK, "{}", 10.0)
        assert store.alerts.resolve(a, 20.0) and not store.alerts.resolve(a, 21.0)
        store.alerts.enqueue(a, "resolved", WEBHOOK, "{}", 20.0)
        b = store.alerts.fire("disk_full", "gateway", None, "Disk", "95%", 4, {}, 30.0)
        # the start is due again later (its back-off): its end waits behind it
        first = store.alerts.due(WEBHOOK, 25.0)[0]
        store.alerts.retry(first.id, 100.0, "refused")
        assert store.alerts.due(WEBHOOK, 50.0) == [] and store.alerts.next_due(WEBHOOK) == 20.0
        assert [n.event for n in store.alerts.due(WEBHOOK, 100.0)] == ["fired"]
        store.alerts.sent(first.id, 101.0)
        assert [n.event for n in store.alerts.due(WEBHOOK, 101.0)] == ["resolved"]
        assert store.alerts.pending() == {WEBHOOK: 1}
        store.alerts.count("webhook_sent")
        store.alerts.count("webhook_sent", 2)
        assert store.alerts.counts() == {"webhook_sent": 3}
        store.alerts.set_marks([("drops:x", 3.0, 0.0), ("other", 1.0, 1.0)])
        assert store.alerts.marks("drops:") == {"drops:x": (3.0, 0.0)}
        store.alerts.set_optin(DEV, True, 1.0)
        store.alerts.set_optin(DEV, True, 2.0)
        assert store.alerts.opted_in() == {DEV}
        summary = store.alerts.summary(0.0)
        assert summary["count"] == 1 and summary["active"][0]["id"] == b
        assert [r["id"] for r in summary["recent"]] == [a] and summary["by_rule"] == {"disk_full": 1}
        assert store.alerts.prune(21.0) == 1 and store.alerts.get(a) is None
        assert store.alerts.pending() == {}
    finally:
        store.close()


# -- a bad webhook -------------------------------------------------------------------------

class Receiver:
    """A local HTTP server that answers POSTs with `status` after `delay` s, keeping bodies."""

    def __init__(self, status=200, delay=0.0):
        self.bodies, self.status, self.delay, self.started = [], status, delay, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.started += 1
                time.sleep(outer.delay)
                outer.bodies.append((self.path, dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads, self.server.block_on_close = True, False
        self.url = "http://127.0.0.1:%d" % self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def refused_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d/hook" % s.getsockname()[1]  # closed once we return


@pytest.mark.unit
def test_a_bad_webhook_is_retried_with_backoff_and_counted(tmp_path, caplog):
    data, store = new_store(tmp_path)
    broken, slow = Receiver(500), Receiver(200, delay=3)
    good = Receiver(200)
    now = time.time()
    with store.transaction():
        c = rules.Condition("device_offline", DEV, DEV, "garage is offline", "not heard", 4)
        reconcile(store, [c], now, [WEBHOOK], "gw")
    try:
        attempts = 0
        for url in (refused_url(), broken.url + "/secret-topic?token=hunter2", slow.url):
            courier = Courier(data, WEBHOOK, Webhook(url, timeout=0.5), Registry())
            assert courier.round(store, time.time() + 10 ** 6) == 0     # due whatever the back-off
            attempts += 1
            (n,) = store.alerts.notices(store.alerts.active()[0]["id"])
            assert n.sent_at is None and n.attempts == attempts and n.last_error
            assert "hunter2" not in n.last_error and "secret-topic" not in n.last_error
            assert n.next_at >= time.time() + retry_delay(attempts) - 1
        assert retry_delay(1) < retry_delay(2) < retry_delay(3) <= retry_delay(100)
        assert store.alerts.counts() == {"webhook_failed": 3}
        assert store.alerts.due(WEBHOOK, time.time()) == []     # waiting out its back-off
        assert "hunter2" not in caplog.text and "secret-topic" not in caplog.text

        courier = Courier(data, WEBHOOK, Webhook(good.url + "/", topic="t0p", token="tok"),
                          Registry())
        assert courier.round(store, time.time() + 10 ** 6) == 1
        path, headers, body = good.bodies[0]
        assert json.loads(body)["topic"] == "t0p" and headers["Authorization"] == "Bearer tok"
        assert store.alerts.counts() == {"webhook_failed": 3, "webhook_sent": 1}
        assert store.alerts.pending() == {}
    finally:
        for r in (broken, slow, good):
            r.close()
        store.close()


@pytest.mark.unit
def test_a_hanging_webhook_holds_up_neither_the_rules_nor_the_store(tmp_path):
    """The runner queues; the courier's thread waits on the webhook (here: for ever, until
    stopped) while rounds go on and fire and resolve alerts."""
    data, store = new_store(tmp_path)
    hanging = Receiver(200, delay=30)
    cfg = Config(data_dir=data, alerts=AlertsConfig(off=["disk_full"], webhook_url=hanging.url,
                                                   webhook_timeout=30))
    runner = Runner(cfg)
    courier = runner.couriers[WEBHOOK].start()
    try:
        now = time.time()
        assert runner.round(store, now) == (1, 0)
        wait_for(lambda: hanging.started == 1, what="the courier's POST")
        store.db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now + 1, DEV))
        assert runner.round(store, now + 2) == (0, 1)
        assert store.alerts.pending() == {WEBHOOK: 2}
    finally:
        courier.stop(join=0.1)
        hanging.close()
        store.close()


# -- the admin page and its API --------------------------------------------------------------

@pytest.mark.unit
def test_the_page_and_api_show_alerts_and_set_the_opt_in(tmp_path):
    from starlette.testclient import TestClient

    from gateway.web import auth
    from gateway.web.app import create_app
    data, store = new_store(tmp_path, {"batt": 3312})
    auth.set_password(data, "pw-for-alerts")
    with store.transaction():
        c = rules.Condition("battery_low", DEV, DEV, "garage: battery low", "below 3400 mV", 3,
                            {"battery_mv": 3312})
        reconcile(store, [c], time.time(), [], "gw")
    store.close()
    cfg = Config(data_dir=data, alerts=AlertsConfig(
        webhook_url="https://ntfy.example/private-topic?auth=s3cret", webhook_topic="t0p1c"))
    with TestClient(create_app(cfg), follow_redirects=False) as client:
        assert client.get("/api/alerts").status_code == 401
        csrf = client.post("/api/session", json={"password": "pw-for-alerts"}).json()["csrf"]
        got = client.get("/api/alerts").json()
        (alert,) = got["active"]
        assert alert["rule"] == "battery_low" and alert["detail"] == {"battery_mv": 3312}
        assert got["resolved"] == [] and got["optin"] == []
        assert client.get("/api/alerts?limit=0").status_code == 400
        dashboard = client.get("/").text
        assert 'data-rule="battery_low"' in dashboard and "garage: battery low" in dashboard
        assert 'id="alert-badge" class="count-badge" data-stat="alerts.count" ' \
               'aria-label="active alerts">1<' in dashboard
        page = client.get("/alerts").text
        assert "battery_mv 3312" in page and 'data-optin="%s">' % DEV in page   # unticked

        url = "/api/alerts/optin/" + DEV
        assert client.put(url, json={"values": True}).status_code == 403          # no CSRF
        headers = {"X-CSRF-Token": csrf}
        r = client.put(url, json={"values": "yes"}, headers=headers)
        assert r.status_code == 400 and "true or false" in r.json()["error"]
        assert client.put("/api/alerts/optin/" + "ff" * 8, json={"values": True},
                          headers=headers).status_code == 404
        assert client.put(url, json={"values": True}, headers=headers).json() == {
            "device": DEV, "values": True}
        assert client.get("/api/alerts").json()["optin"] == [DEV]
        assert 'data-optin="%s" checked>' % DEV in client.get("/alerts").text

        settings = client.get("/api/settings").json()
        assert settings["alerts.webhook_url"] == "https://ntfy.example/..."
        assert "s3cret" not in json.dumps(settings) and "t0p1c" not in json.dumps(settings)
        assert "s3cret" not in client.get("/settings").text
        metrics = client.get("/metrics").text
        assert 'edgekeep_alerts_active{rule="battery_low"} 1.0' in metrics
        assert 'edgekeep_alerts_active{rule="device_offline"} 0.0' in metrics


# -- end to end: a device stops sending, and comes back ------------------------------------

@pytest.fixture
def browser():
    from tests.helpers.browser import chromium
    with chromium() as b:
        yield b


def tracker(tmp_path, broker_url, ident, name):
    from agent.device import Agent
    from agent.mqtt_paho import PahoTransport
    from agent.simsensors import SimTracker
    from agent.spool import Spool
    transport = PahoTransport(broker_url, "ek-" + ident.hex)
    agent = Agent(ident, transport, SimTracker(1), Spool(str(tmp_path / name)),
                  {"share": ["temp", "hum"], "sample_interval": 0.2, "upload_interval": 0.5,
                   "status_every": 1}, os.urandom)
    return agent, transport


def reading_values(data, dev):
    """The values of the device's last status the gateway holds: battery and shared readings."""
    store = Store.connect(data)
    try:
        health = store.device(dev)["health"]
    finally:
        store.close()
    values = [health["batt"]] + list(health["share"].values())
    return [str(v) for v in values if v is not None]


@pytest.mark.browser
def test_a_device_that_stops_sending_alerts_everywhere_once_and_clears(tmp_path, broker, browser):
    from playwright.sync_api import expect

    from agent.identity import Identity
    from gateway.integrations import discovery
    from tests.helpers.browser import GatewayProcess, artifacts
    from tests.helpers.mqtt import Subscriber

    hook = Receiver(200)
    password = "alerts-test-password"
    gw = GatewayProcess(tmp_path, broker.url, password)
    with open(gw.config) as f:
        toml = f.read().replace("homeassistant = false\n", "homeassistant = true\n")
    with open(gw.config, "w") as f:
        f.write(toml.replace("[chain]", '[alerts]\ninterval_seconds = 1\noffline_minutes = 0.2\n'
                               'off = ["disk_full", "anchors_behind"]\nwebhook_url = "%s/hook"\n'
                               '[chain]' % hook.url))
    ident = Identity.create(os.urandom)
    ha = Subscriber(broker.port, discovery.alert_topic("edgekeep"))
    state = Subscriber(broker.port, discovery.alert_state_topic("edgekeep", "device_offline"))
    discovered = Subscriber(broker.port,
                            discovery.config_topic(discovery.gateway_identifier("edgekeep")))
    agent, transport = tracker(tmp_path, broker.url, ident, "spool")
    gw.start()
    try:
        # registered only now: a device never heard from is offline offline_minutes after it
        # was registered, and the gateway's start must not count
        store = Store.connect(gw.data)
        store.add_device(ident.hex, ident.public, "garage")
        store.close()
        agent.run(duration=3, flush_timeout=5)
        transport.close()                                   # the device stops sending
        wait_for(lambda: hook.bodies, timeout=60, what="the webhook's POST")
        time.sleep(3)                                       # rounds go on: no second POST
        assert len(hook.bodies) == 1
        path, headers, raw = hook.bodies[0]
        body = json.loads(raw)
        assert path == "/hook" and headers["Content-Type"] == "application/json"
        assert body["rule"] == "device_offline" and body["event"] == "fired"
        assert body["device"] == ident.hex and "garage" in body["title"]
        assert {"title", "message", "priority"} <= set(body) and "values" not in body
        for value in reading_values(gw.data, ident.hex):
            assert value not in raw.decode(), "a reading value (%s) left in the alert" % value

        wait_for(lambda: ha.messages, timeout=30, what="Home Assistant's alert event")
        event = json.loads(ha.messages[0][1])
        assert event["event_type"] == "fired" and event["rule"] == "device_offline"
        assert "values" not in event
        wait_for(lambda: state.messages and state.messages[-1][1] == b"ON", timeout=30,
                 what="the device_offline binary sensor on")
        entities = json.loads(discovered.messages[-1][1])["cmps"]
        assert entities["alert"]["p"] == "event" and entities["alert"]["evt_typ"] == ["fired", "resolved"]
        assert entities["alert_device_offline"]["dev_cla"] == "problem"

        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(30000)
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(gw.url + "/login?next=/")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        alert = page.locator('#alerts-active li[data-rule="device_offline"][data-subject="%s"]'
                             % ident.hex)
        expect(alert).to_be_visible()
        expect(alert).to_contain_text("garage is offline")
        expect(page.locator("#alert-badge")).to_have_text("1")

        agent, transport = tracker(tmp_path, broker.url, ident, "spool")   # it is back
        agent.run(duration=3, flush_timeout=5)
        transport.close()
        wait_for(lambda: len(hook.bodies) == 2, timeout=60, what="the 'resolved' POST")
        resolved = json.loads(hook.bodies[1][2])
        assert resolved["event"] == "resolved" and resolved["alert"] == body["alert"]
        expect(alert).to_have_count(0)
        expect(page.locator("#alert-badge")).to_be_hidden()
        expect(page.locator("#alerts-recent li").first).to_contain_text("resolved: garage is offline")
        wait_for(lambda: len(ha.messages) == 2, timeout=30, what="Home Assistant's resolved event")
        assert json.loads(ha.messages[1][1])["event_type"] == "resolved"
        wait_for(lambda: state.messages[-1][1] == b"OFF", timeout=30,
                 what="the device_offline binary sensor off")
        time.sleep(2)
        assert len(hook.bodies) == 2

        # The Alerts page, on a phone: the resolved alert, and the opt-in by a tick.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(gw.url + "/alerts")
        expect(page.locator('#alerts-resolved tr[data-rule="device_offline"]')).to_be_visible()
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], "the page is %d px wide at %d" % tuple(width)
        page.screenshot(path=os.path.join(artifacts("alerts"), "alerts-390.png"), full_page=True)
        expect(page.locator('input[data-optin="%s"]' % ident.hex)).not_to_be_checked()
        page.check('input[data-optin="%s"]' % ident.hex)
        expect(page.locator("#optin-note")).to_have_text("Its alerts now carry its values.")
        store = Store.connect(gw.data)
        assert store.alerts.opted_in() == {ident.hex}
        store.close()
        assert problems == []
        context.close()
    finally:
        gw.stop()
        for sub in (ha, state, discovered):
            sub.close()
        hook.close()
