"""The Devices page (issue 19, point 5) in Debian's Chromium against a running `gateway demo`
(3 trackers, 1 camera): search, filter and sort in the page, rename and revoke through
<dialog>s (the revoke one saying it is final; Cancel changes nothing), RSSI/SNR "not
reported" (the demo's devices do not send them), and no sideways scroll at 390 px.

Screenshots go to test-artifacts/devices/ (git-ignored).
"""
import os

import pytest
from playwright.sync_api import expect

from tests.helpers.browser import artifacts, chromium, demo_devices, running_demo

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
SHOTS = artifacts("devices")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(str(tmp_path_factory.mktemp("devices") / "data")) as d:
        yield d


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def open_devices(browser, demo, problems, viewport, query=""):
    """A new context, logged in, on /devices; `problems` collects CSP refusals, page errors
    and any native prompt()/confirm()/alert() (there must be none)."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(20000)
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
            and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append("native %s: %s" % (d.type, d.message)), d.dismiss()))
    page.goto(demo["url"] + "/login?next=/devices" + query)
    page.fill("input[name=password]", demo["password"])
    page.click("button[type=submit]")
    expect(page).to_have_url(demo["url"] + "/devices" + query)
    expect(page.locator("#device-filter")).to_be_visible()
    return page


def visible_ids(page):
    return page.eval_on_selector_all(
        "#devices tbody tr[data-device]:not([hidden])", "rows => rows.map(r => r.dataset.device)")


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def no_sideways_scroll(page):
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], "the page is %d px wide at %d" % tuple(width)


def api_device(page, demo, dev):
    r = page.request.get(demo["url"] + "/api/devices/" + dev)
    assert r.ok, r.status
    return r.json()


def test_search_filter_sort_rename_revoke(browser, demo):
    devices = demo_devices(demo["data"])             # {id: name}
    trackers = sorted(demo_devices(demo["data"], "tracker"))
    cameras = sorted(demo_devices(demo["data"], "camera"))
    assert len(trackers) == 3 and cameras
    problems = []
    page = open_devices(browser, demo, problems, DESKTOP)
    search = page.locator("#device-filter input[name=q]")
    count = page.locator("#device-filter .count")
    assert sorted(visible_ids(page)) == sorted(devices)
    expect(count).to_have_text("%d device(s)" % len(devices))

    # RSSI/SNR: the demo's devices do not report them, and the page says so.
    expect(page.locator('tr[data-device="%s"] td.radio' % trackers[0])).to_have_text("not reported")

    # Search narrows the list: by name, then by part of an id.
    name = devices[trackers[1]]
    search.fill(name.upper())                   # case does not matter
    expect(count).to_have_text("1 of %d device(s) shown" % len(devices))
    assert visible_ids(page) == [trackers[1]]
    search.fill(trackers[2][3:11])
    assert trackers[2] in visible_ids(page)
    assert all(trackers[2][3:11] in d for d in visible_ids(page))
    search.fill("no such device")
    expect(page.locator("#no-match")).to_be_visible()
    page.click('#no-match [data-action="clear"]')
    expect(page.locator("#no-match")).to_be_hidden()
    assert sorted(visible_ids(page)) == sorted(devices)

    # A filter: kind.
    page.select_option("#device-filter select[name=kind]", "camera")
    expect(count).to_have_text("%d of %d device(s) shown" % (len(cameras), len(devices)))
    assert sorted(visible_ids(page)) == cameras
    page.select_option("#device-filter select[name=kind]", "tracker")
    assert sorted(visible_ids(page)) == trackers
    assert "kind=tracker" in page.url                       # kept in the address
    page.select_option("#device-filter select[name=kind]", "")

    # Sort: by name (the default), by kind, by last seen (newest first).
    assert visible_ids(page) == sorted(devices, key=lambda d: (devices[d].lower(), d))
    page.select_option("#device-filter select[name=sort]", "kind")
    order = visible_ids(page)
    assert order[:len(cameras)] == sorted(cameras, key=lambda d: devices[d].lower())
    page.select_option("#device-filter select[name=sort]", "seen")
    seen = page.eval_on_selector_all(
        "#devices tbody tr[data-device]:not([hidden]) .last-seen",
        "cells => cells.map(c => Number(c.dataset.time) || 0)")
    assert seen == sorted(seen, reverse=True)
    page.select_option("#device-filter select[name=sort]", "name")
    shot(page, "desktop-list")

    # Rename through the dialog: Cancel changes nothing, Save does (and the API shows it).
    dev = trackers[0]
    row = page.locator('tr[data-device="%s"]' % dev)
    dialog = page.locator("#rename-dialog")
    row.locator("[data-action=rename]").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("input[name=name]")).to_have_value(devices[dev])
    dialog.locator("input[name=name]").fill("should not stick")
    dialog.locator('button[value="cancel"]').click()
    expect(dialog).to_be_hidden()
    expect(row.locator(".name")).to_have_text(devices[dev])
    row.locator("[data-action=rename]").click()
    dialog.locator("input[name=name]").fill("  Kitchen window  ")
    shot(page, "desktop-rename")
    dialog.locator("input[name=name]").press("Enter")      # Enter saves
    expect(dialog).to_be_hidden()
    expect(row.locator(".name")).to_have_text("Kitchen window")
    assert api_device(page, demo, dev)["name"] == "Kitchen window"
    search.fill("kitchen")                                  # the new name is searchable
    assert visible_ids(page) == [dev]
    search.fill("")

    # Revoke through the dialog: it says plainly that it is final; Cancel does nothing.
    victim = trackers[2]
    row = page.locator('tr[data-device="%s"]' % victim)
    dialog = page.locator("#revoke-dialog")
    row.locator("[data-action=revoke]").click()
    expect(dialog).to_be_visible()
    text = dialog.inner_text()
    for words in ("final", "cannot be undone", "revoked on chain", "stays verifiable",
                  "never send again", "new identity", victim, devices[victim]):
        assert words in text, (words, text)
    expect(dialog.locator('button[value="cancel"]')).to_be_focused()   # the safe default
    shot(page, "desktop-revoke-dialog")
    dialog.locator('button[value="cancel"]').click()
    expect(dialog).to_be_hidden()
    page.wait_for_timeout(500)
    expect(row).to_have_class("active")
    assert api_device(page, demo, victim)["status"] == "active"
    row.locator("[data-action=revoke]").click()             # Esc cancels too
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert api_device(page, demo, victim)["status"] == "active"

    # Confirm revokes.
    row.locator("[data-action=revoke]").click()
    dialog.locator('button[value="revoke"]').click()
    expect(dialog).to_be_hidden(timeout=30000)
    expect(row).to_have_class("revoked")
    expect(row.locator(".status")).to_have_text("revoked")
    expect(row.locator("[data-action]")).to_have_count(0)
    assert api_device(page, demo, victim)["status"] == "revoked"

    # Status filter: revoked shows just it; active and online/offline leave it out.
    page.select_option("#device-filter select[name=status]", "revoked")
    assert visible_ids(page) == [victim]
    page.select_option("#device-filter select[name=status]", "active")
    assert victim not in visible_ids(page) and len(visible_ids(page)) == len(devices) - 1
    page.select_option("#device-filter select[name=status]", "")
    page.select_option("#device-filter select[name=online]", "offline")
    assert victim not in visible_ids(page)
    page.select_option("#device-filter select[name=online]", "")
    shot(page, "desktop-revoked")

    # The filters survive a reload (they are in the address), and the server agrees.
    page.select_option("#device-filter select[name=status]", "revoked")
    page.reload()
    expect(page.locator("#device-filter select[name=status]")).to_have_value("revoked")
    assert visible_ids(page) == [victim]
    assert problems == []
    page.context.close()


def test_phone_layout(browser, demo):
    problems = []
    page = open_devices(browser, demo, problems, PHONE)
    expect(page.locator("#devices tbody tr[data-device]").first).to_be_visible()
    no_sideways_scroll(page)
    # Rows are cards: the table's head is out of sight, every value labelled.
    assert page.eval_on_selector("#devices thead", "h => h.getBoundingClientRect().width") <= 1
    shot(page, "phone-list")
    page.select_option("#device-filter select[name=kind]", "tracker")
    page.fill("#device-filter input[name=q]", "tracker")
    no_sideways_scroll(page)
    page.fill("#device-filter input[name=q]", "")
    page.select_option("#device-filter select[name=kind]", "")
    active = page.locator("#devices tbody tr[data-device]:not(.revoked)").first
    active.locator("[data-action=revoke]").click()
    dialog = page.locator("#revoke-dialog")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    no_sideways_scroll(page)
    shot(page, "phone-revoke-dialog")
    dialog.locator('button[value="cancel"]').click()
    expect(dialog).to_be_hidden()
    expect(active).not_to_have_class("revoked")
    active.locator("[data-action=rename]").click()
    expect(page.locator("#rename-dialog")).to_be_visible()
    no_sideways_scroll(page)
    shot(page, "phone-rename-dialog")
    page.locator('#rename-dialog button[value="cancel"]').click()
    assert problems == []
    page.context.close()
