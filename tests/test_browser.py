"""The admin page in a real browser (Debian's Chromium, headless) against a running `gateway demo`.

Screenshots go to test-artifacts/screenshots/.
"""
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from gateway.mqtt.broker import managed_credentials
from gateway.owner.export import readings
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from tests.helpers.browser import complete_object, demo_devices, launch, running_demo
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.browser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "test-artifacts", "screenshots")



@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(str(tmp_path_factory.mktemp("demo") / "data")) as d:
        yield d


@pytest.fixture(scope="module")
def page(demo):
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(20000)
        pg.sent = []  # every request the page makes: (url, body)
        pg.on("request", lambda r: pg.sent.append((r.url, r.post_data_buffer or b"")))
        yield pg
        browser.close()


def unlock(page, demo):
    page.set_input_files("#keyring input[type=file]", demo["keyring"])
    page.fill("#keyring input[name=passphrase]", demo["passphrase"])
    page.click("#keyring button[type=submit]")
    expect(page.locator("#keyring .state")).to_contain_text(
        "unlocked: %d device key(s)" % len(demo_devices(demo["data"])))


def assert_no_secret_sent(page, demo, plaintexts=()):
    """No request the page made carried the passphrase, the keyring, a data key or plaintext."""
    ring = open(demo["keyring"], "rb").read()
    secrets = [demo["passphrase"].encode(), json.loads(ring)["ct"].encode()]
    secrets += [k.hex().encode() for k in Keyring.open(demo["keyring"], demo["passphrase"]).keys.values()]
    for url, body in page.sent:
        assert not any(s in body or s.decode() in url for s in secrets), url
        assert not any(p in body for p in plaintexts), url


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def test_login(page, demo):
    page.goto(demo["url"] + "/devices")
    expect(page).to_have_url(re.compile(r"/login\?next=/devices$"))
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("wrong password")
    page.fill("input[name=password]", demo["password"])
    shot(page, "01-login")
    page.click("button[type=submit]")
    expect(page).to_have_url(demo["url"] + "/devices")


def test_device_list_matches_the_demo(page, demo):
    page.goto(demo["url"] + "/devices")
    expected = demo_devices(demo["data"])
    rows = page.locator("tr[data-device]")
    expect(rows).to_have_count(len(expected))
    shown = {r.get_attribute("data-device"): r.locator(".name").inner_text() for r in rows.all()}
    assert shown == expected
    shot(page, "02-devices")


def test_dashboard_updates_live(page, demo):
    page.goto(demo["url"] + "/")
    expect(page.locator("#live.on")).to_have_count(1)
    stored = page.locator('[data-stat="messages"]')
    before = int(stored.inner_text())
    page.evaluate("window.notReloaded = true")
    page.wait_for_function("(n) => +document.querySelector('[data-stat=messages]').textContent > n",
                           arg=before)
    assert page.evaluate("window.notReloaded") is True  # it came over SSE, not by a reload
    expect(page.locator('[data-stat="devices.online"]')).to_have_text(str(len(demo_devices(demo["data"]))))
    expect(page.locator('[data-stat="chain.detail"]')).to_contain_text("block")
    for name in ("ingest", "anchor", "keeper"):   # redrawn from each status event
        expect(page.locator("#components li.alive", has_text=re.compile(r"^%s: alive" % name))
               ).to_have_count(1)       # (not network-keeper: alive)
    shot(page, "03-dashboard")


def test_unlock_keyring_and_see_decrypted_readings(page, demo):
    dev = sorted(demo_devices(demo["data"], "tracker"))[0]
    page.goto(demo["url"] + "/devices/" + dev)
    unlock(page, demo)
    first = page.locator("#readings tbody tr").first
    expect(first).to_be_visible()
    # The newest reading on the page is one the owner's own tool decrypts from the store.
    store = Store.open(demo["data"])
    owner = readings(store, dev, Keyring.open(demo["keyring"], demo["passphrase"]).get(dev))
    store.close()
    cells = first.locator("td").all_inner_texts()
    assert any("%.2f" % (r["temp"] / 100) == cells[1] and str(r["seq"]) == cells[-1] for r in owner)
    expect(page.locator(".charts figure")).to_have_count(7)   # every quantity: test_browser_charts.py
    shot(page, "04-decrypted-readings")
    assert_no_secret_sent(page, demo)


def test_decrypted_camera_image(page, demo, tmp_path):
    cam = sorted(demo_devices(demo["data"], "camera"))[0]
    oid = wait_for(lambda: complete_object(demo["data"], cam), timeout=60, what="a whole camera object")
    page.goto(demo["url"] + "/camera")
    unlock(page, demo)
    page.locator('tr[data-oid="%s"] [data-action=show]' % oid).click()
    fig = page.locator('section[data-device="%s"] figure[data-oid="%s"]' % (cam, oid))
    expect(fig).to_have_attribute("data-sha256", re.compile("^[0-9a-f]{64}$"))
    fig.locator("img").first.evaluate("img => img.decode()")  # rejects if the JPEG is broken
    sizes = fig.locator("img").evaluate_all("imgs => imgs.map((i) => [i.naturalWidth, i.naturalHeight])")
    shot(page, "05-camera-decrypted")
    # The page shows exactly what the owner's own tool decrypts from the store.
    out = tmp_path / "export"
    run = subprocess.run([sys.executable, "-m", "gateway", "export", "--data-dir", demo["data"],
                          "--object", "%s-%s" % (cam, oid), "--key", demo["keyring"], "--out", str(out)],
                         cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT, EDGEKEEP_PASSPHRASE=demo["passphrase"]),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    plain = out.read_bytes()
    assert fig.get_attribute("data-sha256") == hashlib.sha256(plain).hexdigest()
    assert sizes == [list(Image.open(io.BytesIO(plain)).size)] and sizes[0][0] > 0
    assert_no_secret_sent(page, demo, [plain[len(plain) // 2:][:64]])


def test_revoke_a_device(page, demo):
    dev = sorted(demo_devices(demo["data"], "tracker"))[-1]
    page.goto(demo["url"] + "/devices")
    page.locator('tr[data-device="%s"] [data-action=revoke]' % dev).click()
    page.click('#revoke-dialog button[value="revoke"]')     # the <dialog> (test_browser_devices.py)
    expect(page.locator('tr[data-device="%s"]' % dev)).to_have_class("revoked", timeout=30000)
    expect(page.locator('tr[data-device="%s"] .status' % dev)).to_have_text("revoked")
    shot(page, "06-revoked")
    store = Store.open(demo["data"])
    assert store.device(dev)["status"] == "revoked"
    # The device's broker account is gone too: the broker dropped the still-running device,
    # so nothing more of it is stored.
    assert dev not in managed_credentials(demo["data"]).users()
    stored = len(store.messages(device=dev))
    time.sleep(5)
    assert len(store.messages(device=dev)) == stored
    store.close()
    page.goto(demo["url"] + "/")
    shot(page, "07-dashboard-after-revoke")
