"""The Updates page (issue 18, point 4) in Debian's Chromium, driving a staged rollout to ten
devices that run the real agent on MicroPython (the WebAssembly build; each restarted after a
reset or a crash, as a board and its watchdog would: tests/test_ota.py's Board), over
Mosquitto, with `gateway run` sending the updates from its lease holder.

Three of the ten carry a marker file on their flash on which release 0.3.0 does not start
(its main.py raises after the agent's OTA boot count). Rolled out with a canary group of two
(one of them marked), the canary stage sees the marked device roll back after three boots,
the rollout halts by itself, and the eight other devices never get 0.3.0. The owner aborts it
and rolls out 0.3.1, which every device confirms. Everything is done on the page: the
release key, the uploads (one forged bundle refused), the plans, Abort; the test reads the
devices' flash and the gateway's store to check.

Screenshots go to test-artifacts/updates/ (git-ignored).
"""
import json
import os
import shutil
import tarfile
import time

import pytest
from playwright.sync_api import expect

from agent.identity import Identity
from firmware import bundle, signing
from gateway.store.database import Store
from tests.helpers.browser import GatewayProcess, artifacts, launch
from tests.helpers.wait import wait_for
from tests.test_ota import Board, bundle_files, derive, flash_files

pytestmark = pytest.mark.browser

PASSWORD = "updates page password"
MARKER = "fragile"        # release 0.3.0 does not start on a device with this file
FRAGILE = (1, 4, 7)       # which of the ten carry it
SHOTS = artifacts("updates")
CRASHING_MAIN = (b"import agent.boot\nimport os\ntry:\n    os.stat('%s')\n    fragile = True\n"
                 b"except OSError:\n    fragile = False\nif fragile:\n"
                 b"    raise RuntimeError('release 0.3.0 does not start on this device')\n"
                 b"agent.boot.main()\n" % MARKER.encode())


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """0.1.0 as built; 0.3.0 (crashes on fragile devices) and 0.3.1 change only main.py, so
    each transfer is a few chunks; 0.3.1 signed by another key too (forged)."""
    d = str(tmp_path_factory.mktemp("releases"))
    key, rogue = (os.path.join(d, name) for name in ("release.key", "rogue.key"))
    for k in (key, rogue):
        signing.keygen(k)
    v1 = os.path.join(d, "v0.1.0")
    bundle.build("esp32", v1, "0.1.0", key)
    good_main = bundle.MAIN_PY + b"# release 0.3.1\n"
    return {"key": key + ".pub", "v1": v1,
            "bad": derive(v1, os.path.join(d, "v0.3.0"), "0.3.0", key, {"main.py": CRASHING_MAIN}),
            "good": derive(v1, os.path.join(d, "v0.3.1"), "0.3.1", key, {"main.py": good_main}),
            "forged": derive(v1, os.path.join(d, "forged"), "0.3.1", rogue, {"main.py": good_main})}


def packed(bundle_dir, out):
    with tarfile.open(out, "w:gz") as tar:
        tar.add(bundle_dir, arcname=os.path.basename(bundle_dir))
    return out


@pytest.fixture
def fleet(tmp_path, broker, releases):
    """`gateway run` and ten devices on release 0.1.0; yields (gateway, {index: device id},
    {device id: flash dir})."""
    gw = GatewayProcess(tmp_path, broker.url, PASSWORD)
    store = Store.open(gw.data)
    flashes = {}
    ids = {}
    for i in range(10):
        flash = tmp_path / ("flash%d" % i)
        shutil.copytree(releases["v1"], flash, ignore=shutil.ignore_patterns(bundle.SIGNATURE))
        ident = Identity.create(os.urandom)
        ident.save(str(flash / "identity.json"))
        shutil.copy(releases["key"], flash / "release.pub")
        (flash / "config.json").write_text(json.dumps({
            "broker": broker.url, "board": "sim", "sample_interval": 3, "upload_interval": 3,
            "status_every": 100}))
        if i in FRAGILE:
            (flash / MARKER).write_text("")
        store.add_device(ident.hex, ident.public, "node-%d" % i)
        ids[i], flashes[ident.hex] = ident.hex, str(flash)
    store.close()
    gw.start()
    boards = [Board(flashes[ids[i]], str(tmp_path / ("device%d.log" % i))).start()
              for i in range(10)]
    try:
        yield gw, ids, flashes
    finally:
        for b in boards:
            b.stop()
        gw.stop()


def firmware(gw):
    store = Store.connect(gw.data)
    try:
        return {d["id"]: (d["health"] or {}).get("fw") for d in store.devices()}
    finally:
        store.close()


def runs(flash, release):
    """Whether the flash holds every file of the release as its signed manifest lists it."""
    files = flash_files(flash)
    return {p: files.get(p) for p in bundle_files(release)} == bundle_files(release)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def start_rollout(page, version, canary):
    form = page.locator("#rollout-form")
    option = form.locator("select[name=bundle] option", has_text=version)
    form.locator("select[name=bundle]").select_option(option.get_attribute("value"))
    for box in form.locator("input[name=canary]").all():
        box.set_checked(box.get_attribute("value") in canary)
    form.locator("input[name=stages]").fill("50, 100")
    form.locator("input[name=max_failed]").fill("20")
    form.locator("input[name=confirm_seconds]").fill("240")
    form.locator("button[type=submit]").click()
    expect(form.locator(".error")).to_be_hidden()


def device_state(page, dev):
    return page.locator('#rollouts .rollout').first.locator('tr[data-dev="%s"]' % dev)


@pytest.mark.timeout(1200)
def test_staged_rollout_halts_on_the_canary_then_a_good_release_reaches_all(
        fleet, releases, tmp_path):
    gw, ids, flashes = fleet
    wait_for(lambda: set(firmware(gw).values()) == {"0.1.0"}, timeout=180,
             what="ten devices reporting release 0.1.0")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(30000)
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(gw.url + "/login?next=/updates")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(gw.url + "/updates")

        # The release key, once; then a forged bundle is refused, the bad one taken.
        with open(releases["key"]) as f:
            page.fill("#release-key-form textarea[name=key]", f.read())
        page.click("#release-key-form button[type=submit]")
        expect(page.locator("#release-key .key-state")).to_contain_text("checked against release key")
        upload = page.locator("#bundle-form")
        upload.locator("input[type=file]").set_input_files(
            packed(releases["forged"], str(tmp_path / "forged.tar.gz")))
        upload.locator("button[type=submit]").click()
        expect(upload.locator(".error")).to_contain_text("signature is not the release key's")
        expect(upload.locator(".error")).to_contain_text("fix:")
        upload.locator("input[type=file]").set_input_files(
            packed(releases["bad"], str(tmp_path / "bad.tar.gz")))
        upload.locator("button[type=submit]").click()
        expect(page.locator("#bundles tbody tr")).to_have_count(1)

        # 0.3.0 with a canary group of two, one of them fragile: it rolls back, the rollout halts.
        fragile, sturdy = ids[FRAGILE[0]], ids[0]
        start_rollout(page, "0.3.0", [sturdy, fragile])
        card = page.locator("#rollouts .rollout").first
        expect(card).to_have_attribute("data-status", "halted", timeout=300000)
        expect(device_state(page, fragile)).to_have_attribute("data-state", "rolled back",
                                                              timeout=60000)
        expect(card.locator(".reason")).to_contain_text("of this stage failed")
        shot(page, "halted")
        wait_for(lambda: firmware(gw)[sturdy] == "0.3.0" and firmware(gw)[fragile] == "0.1.0",
                 timeout=120, what="the canary devices' status: 0.3.0 and 0.1.0 again")
        store = Store.connect(gw.data)
        assert store.device(fragile)["health"]["ota"] == "rolled back from 0.3.0"
        store.close()
        others = [dev for i, dev in ids.items() if dev not in (sturdy, fragile)]
        for dev in others:
            expect(device_state(page, dev)).to_have_attribute("data-state", "waiting")
            assert runs(flashes[dev], releases["v1"])
        assert runs(flashes[fragile], releases["v1"])

        card.locator("button[data-action=abort]").click()
        expect(card).to_have_attribute("data-status", "aborted")

        # 0.3.1 to all ten, in stages: every device confirms it.
        upload.locator("input[type=file]").set_input_files(
            packed(releases["good"], str(tmp_path / "good.tar.gz")))
        upload.locator("button[type=submit]").click()
        expect(page.locator("#bundles tbody tr")).to_have_count(2)
        start_rollout(page, "0.3.1", [ids[2], ids[FRAGILE[1]]])
        card = page.locator("#rollouts .rollout").first
        expect(card).to_have_attribute("data-status", "done", timeout=480000)
        expect(card.locator("tr[data-state=confirmed]")).to_have_count(10)
        shot(page, "done")
        assert problems == []
        browser.close()
    wait_for(lambda: set(firmware(gw).values()) == {"0.3.1"}, timeout=120,
             what="every device's status saying 0.3.1")
    for flash in flashes.values():
        assert runs(flash, releases["good"])


def test_the_devices_page_issues_an_enrollment_token_shown_once(tmp_path, broker):
    gw = GatewayProcess(tmp_path, broker.url, PASSWORD).start()
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(30000)
            page.goto(gw.url + "/login?next=/devices")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(gw.url + "/devices")
            box = page.locator("#enroll")
            expect(box.locator(".token")).to_be_hidden()
            box.locator("select[name=ttl]").select_option("3600")
            box.locator("button[data-action=issue-token]").click()
            expect(box.locator(".token")).to_be_visible()
            token = box.locator(".token-value").text_content().strip()
            command = box.locator(".provision").text_content()
            assert command == ("edgekeep-flash provision --port PORT --gateway %s "
                               "--token-file TOKEN-FILE" % gw.url)
            expect(box.locator(".expires")).not_to_be_empty()
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], "the page is %d px wide at %d" % tuple(width)
            shot(page, "enrollment-token")
            # the token works (checked, not spent) and is in no URL or page the gateway serves
            r = page.request.post(gw.url + "/api/enroll", data="{}", headers={
                "authorization": "Bearer " + token, "content-type": "application/json"})
            assert r.status == 200 and r.json()["valid"] is True, r.text()
            assert 3500 < r.json()["expires"] - time.time() <= 3600
            page.reload()
            assert token not in page.content()
            # the Updates page fits a phone too
            page.goto(gw.url + "/updates")
            expect(page.locator("#release-key-form")).to_be_visible()
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], "/updates is %d px wide at %d" % tuple(width)
            shot(page, "updates-phone")
            browser.close()
    finally:
        gw.stop()
