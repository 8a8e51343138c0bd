"""The device page's telemetry (issue 19, point 3) in Debian's Chromium against a gateway
that holds a tracker's ten days of history (real sealed messages, tests/helpers/telemetry.py):
charts with axes and units for every field (light too) and a tooltip with a reading's value;
1 h / 24 h / 7 d / all / custom ranges that change what is shown; every message paged in
(more than one API page) down to the oldest; the GPS track drawn bare without internet (the
test browser has none), also when map tiles are asked for; a CSV made in the browser equal to
`edgekeep export`'s; and no sideways scroll at 390 px.

Screenshots go to test-artifacts/charts/ (git-ignored).
"""
import io
import os
import re
import struct
import time
import zlib

import pytest
from playwright.sync_api import expect

from gateway.config import Config
from gateway.owner import export
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from gateway.web import auth
from gateway.web.app import WebServer, create_app
from tests.helpers.browser import artifacts, chromium, unlock
from tests.helpers.telemetry import store_history, store_messages

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
PASSPHRASE = "chart keyring passphrase"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
SHOTS = artifacts("charts")
MINUTE, HOUR, DAY = 60, 3600, 86400
UNITS = {"Temperature": "°C", "Humidity": "%RH", "Pressure": "hPa", "Gas resistance": "kΩ",
         "Light": "lux", "Acceleration": "g", "Battery": "mV"}


def history_times(now):
    """Message times, oldest first, with 20 minutes or more of nothing around each range's
    start (1 h, 24 h, 7 d ago), so a range holds the same messages however long the test takes."""
    ages = ([30 + MINUTE * k for k in range(50)]                        # 0.5 ... 49.5 min
            + [70 * MINUTE + 5 * MINUTE * k for k in range(263)]        # 70 min ... 23 h
            + [25 * HOUR + 10 * MINUTE * k for k in range(835)]         # 25 h ... 6 d 20 h
            + [7 * DAY + 4 * HOUR + HOUR * k for k in range(69)])       # 7 d 4 h ... 10 d
    return sorted(now - a for a in ages)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    base = tmp_path_factory.mktemp("charts")
    data = str(base / "gw")
    now = int(time.time())
    store = Store.open(data)
    ident, messages = store_history(store, history_times(now))
    store.close()
    auth.set_password(data, PASSWORD)
    keyring = str(base / "owner.keyring")
    ring = Keyring(keyring, PASSPHRASE)
    ring.add(ident.hex, ident.data_key)
    ring.save()
    server = WebServer(create_app(Config(data_dir=data)), port=0).start()
    try:
        yield {"url": server.url.rstrip("/"), "data": data, "device": ident.hex, "ident": ident,
               "key": ident.data_key, "keyring": keyring, "passphrase": PASSPHRASE,
               "messages": messages, "now": now}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def device_page(browser, gw, problems, viewport=DESKTOP):
    """A new context (UTC, so custom ranges are typed in UTC), logged in, on the device page
    with the keyring unlocked; `problems` collects CSP refusals and page errors."""
    context = browser.new_context(viewport=viewport, timezone_id="UTC", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60000)
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
            and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    path = "/devices/" + gw["device"]
    page.goto(gw["url"] + "/login?next=" + path)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(gw["url"] + path)
    unlock(page, gw)
    return page


def in_range(gw, since=None, until=None):
    """The messages a range holds (by message time, until exclusive), and their readings."""
    msgs = [m for m in gw["messages"] if (since is None or m["time"] >= since)
            and (until is None or m["time"] < until)]
    return msgs, [r for m in msgs for r in m["readings"]]


def loaded(page, msgs):
    """Wait until the page says every message of the range is in."""
    readings = sum(len(m["readings"]) for m in msgs)
    expect(page.locator("#telemetry-state")).to_have_text(
        "%d readings from %d messages, decrypted in this browser" % (readings, len(msgs)),
        timeout=60000)


def choose(page, label):
    page.locator("#range fieldset label", has_text=re.compile("^ *%s *$" % re.escape(label))).click()


def chart(page, title):
    return page.locator('figure.chart[data-title="%s"]' % title)


def chart_state(page, title):
    """What the chart draws: its axes' tick labels and unit, and its data."""
    return chart(page, title).evaluate("""f => ({
        x: f.ekChart.axes[0]._values, y: f.ekChart.axes[1]._values, unit: f.ekChart.axes[1].label,
        times: Array.from(f.ekChart.data[0]),
        values: f.ekChart.data.slice(1).map((s) => Array.from(s))})""")


def fits(page):
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], "%s is %d px wide in a %d px window" % (page.url, *width)


def test_charts_have_axes_units_and_a_tooltip_and_follow_the_range(browser, gateway):
    problems = []
    page = device_page(browser, gateway, problems)
    now = gateway["now"]
    msgs, readings = in_range(gateway, now - DAY)            # 24 h, the default
    loaded(page, msgs)
    expect(page.locator("figure.chart")).to_have_count(len(UNITS))
    for title, unit in UNITS.items():
        expect(chart(page, title).locator("figcaption")).to_contain_text("%s (%s)" % (title, unit))
        s = chart_state(page, title)
        assert s["unit"] == unit
        assert len(s["x"]) >= 2 and len(s["y"]) >= 2, (title, s["x"], s["y"])
        assert all(s["x"]) and all(s["y"]), (title, s["x"], s["y"])           # each tick labelled
        assert len(s["times"]) == len(readings)
    light = chart_state(page, "Light")
    assert sorted(light["values"][0]) == sorted(r["light"] * 0.01 for r in readings)
    accel = chart_state(page, "Acceleration")
    assert len(accel["values"]) == 3                        # x, y and z
    page.screenshot(path=os.path.join(SHOTS, "24h.png"), full_page=True)

    # The tooltip: the time and value of the reading under the cursor, in the chart's unit.
    over = chart(page, "Temperature").locator(".u-over")
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    tip = chart(page, "Temperature").locator(".chart-tip")
    expect(tip).to_be_visible()
    value = re.search(r"· (-?\d+\.\d\d) °C$", tip.inner_text())
    assert value, tip.inner_text()
    assert value.group(1) in {"%.2f" % (r["temp"] * 0.01) for r in readings}
    page.screenshot(path=os.path.join(SHOTS, "tooltip.png"))

    # Each range shows its own readings: the charts' data changes with it.
    for label, since in (("1 h", now - HOUR), ("7 d", now - 7 * DAY), ("24 h", now - DAY)):
        choose(page, label)
        msgs, readings = in_range(gateway, since)
        loaded(page, msgs)
        s = chart_state(page, "Light")
        assert len(s["times"]) == len(readings) and min(s["times"]) >= since, label
        assert sorted(s["values"][0]) == sorted(r["light"] * 0.01 for r in readings), label
    # A custom range: the readings of the days before the 7 d range only.
    choose(page, "Custom")
    since, until = now - 11 * DAY, now - 7 * DAY
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M", time.gmtime(t))  # noqa: E731
    page.fill("#range input[name=from]", stamp(since))
    page.fill("#range input[name=to]", stamp(until))
    page.click("#range .custom button[type=submit]")
    msgs, readings = in_range(gateway, since, until - until % 60)
    loaded(page, msgs)
    assert len(chart_state(page, "Temperature")["times"]) == len(readings) == 2 * 69
    page.screenshot(path=os.path.join(SHOTS, "custom.png"), full_page=True)
    assert not problems, problems
    page.context.close()


def test_the_gps_track_is_drawn_bare_without_internet(browser, gateway):
    problems, tile_requests = [], []
    page = device_page(browser, gateway, problems)
    page.on("request", lambda r: "tile.openstreetmap.org" in r.url and tile_requests.append(r.url))
    msgs, readings = in_range(gateway, gateway["now"] - DAY)
    loaded(page, msgs)
    track = page.locator("figure#track")
    fixes = [r for r in readings if r["lat"] is not None]
    assert 0 < len(fixes) < len(readings)                 # some readings have no fix
    expect(track).to_have_attribute("data-mode", "bare")   # tiles are off until asked for
    points = track.locator(".track polyline").get_attribute("points").split()
    assert len(points) == len(fixes)
    lat_labels = track.locator("text.lat").all_text_contents()
    lon_labels = track.locator("text.lon").all_text_contents()
    assert len(lat_labels) >= 2 and len(lon_labels) >= 2, (lat_labels, lon_labels)
    lats = [float(t.rstrip("°")) for t in lat_labels]
    lons = [float(t.rstrip("°")) for t in lon_labels]
    # the axes' ticks fall within the track's extent (which fills the plot, with a margin)
    for ticks, field in ((lats, "lat"), (lons, "lon")):
        lo, hi = (f(r[field] for r in fixes) * 1e-7 for f in (min, max))
        assert min(ticks) <= hi and max(ticks) >= lo, (field, ticks, lo, hi)
    expect(track.locator("figcaption")).to_contain_text("GPS track: %d positions" % len(fixes))
    assert not tile_requests
    page.screenshot(path=os.path.join(SHOTS, "track-bare.png"), full_page=True)

    # Asked for tiles, the page tries the tile host (the CSP lets it), fails offline and
    # keeps the bare track.
    track.locator("input.map-tiles").check()
    expect(track.locator("figcaption")).to_contain_text("map tiles could not be loaded", timeout=30000)
    expect(track).to_have_attribute("data-mode", "bare")
    assert tile_requests and track.locator(".map-tiles image").count() == 0
    assert len(track.locator(".track polyline").get_attribute("points").split()) == len(fixes)

    # With internet (here: the tile host answered by the test, the only way to have it), the
    # tiles lie under the track and the caption credits OpenStreetMap.
    tile_requests.clear()
    page.route("https://tile.openstreetmap.org/**", lambda route: route.fulfill(
        status=200, content_type="image/png", body=png_tile()))
    track.locator("input.map-tiles").uncheck()
    track.locator("input.map-tiles").check()
    expect(track.locator("figcaption")).to_contain_text("map © OpenStreetMap contributors", timeout=30000)
    expect(track).to_have_attribute("data-mode", "tiles")
    tiles = track.locator(".map-tiles image")
    assert tiles.count() == len(tile_requests) > 0
    assert all(re.fullmatch(r"https://tile\.openstreetmap\.org/\d+/\d+/\d+\.png", u) for u in tile_requests)
    page.screenshot(path=os.path.join(SHOTS, "track-tiles.png"), full_page=True)
    track.locator("input.map-tiles").uncheck()        # remembered in this browser: leave it off
    expect(track).to_have_attribute("data-mode", "bare")
    assert not problems, problems
    page.context.close()


def png_tile():
    """A 256 x 256 grey PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\xd0" * 256 for _ in range(256))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 256, 256, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_paging_reaches_the_oldest_message_and_the_csv_is_the_exports(browser, gateway):
    problems, api_pages = [], []
    page = device_page(browser, gateway, problems)
    page.on("request", lambda r: "/messages?" in r.url and api_pages.append(r.url))
    loaded(page, in_range(gateway, gateway["now"] - DAY)[0])
    api_pages.clear()
    choose(page, "All")
    msgs, readings = in_range(gateway)
    loaded(page, msgs)
    assert len(msgs) > 1000 and len(api_pages) == 2 and "cursor=" in api_pages[1], api_pages

    # The table, newest first a hundred at a time, down to the oldest reading (seq 1).
    pager = page.locator("#readings-pager")
    expect(pager.locator(".where")).to_have_text("readings 1–100 of %d, newest first" % len(readings))
    first = page.locator("#readings tbody tr").first
    assert first.locator("td[data-label=Seq]").inner_text() == str(len(msgs))
    pager.get_by_role("button", name="Older").click()
    expect(pager.locator(".where")).to_have_text("readings 101–200 of %d, newest first" % len(readings))
    pager.get_by_role("button", name="Oldest").click()
    expect(pager.locator(".where")).to_have_text(
        "readings %d–%d of %d, newest first" % (len(readings) // 100 * 100 + 1, len(readings), len(readings)))
    last = page.locator("#readings tbody tr").last
    assert last.locator("td[data-label=Seq]").inner_text() == "1"
    oldest = msgs[0]["readings"][0]
    assert last.locator("td[data-label='Temp °C']").inner_text() == "%.2f" % (oldest["temp"] * 0.01)
    expect(pager.get_by_role("button", name="Older")).to_be_disabled()

    # The CSV, made in this page: the same bytes `edgekeep export --format csv` writes.
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    download = info.value
    name = download.suggested_filename
    assert name.startswith(gateway["device"] + "-") and name.endswith(".csv"), name
    with open(download.path(), newline="") as f:
        ours = f.read()
    store = Store.open(gateway["data"])
    try:
        out = io.StringIO()
        export.write(export.readings(store, gateway["device"], gateway["key"]), "csv", out)
    finally:
        store.close()
    assert ours.splitlines()[0] == "device,seq,time,temp,hum,pres,gas,light,ax,ay,az,lat,lon,batt"
    assert len(ours.splitlines()) == 1 + len(readings)
    assert ours == out.getvalue()
    assert not problems, problems
    page.context.close()


def test_the_device_page_fits_a_phone(browser, gateway):
    problems = []
    page = device_page(browser, gateway, problems, PHONE)
    loaded(page, in_range(gateway, gateway["now"] - DAY)[0])
    fits(page)
    for title in UNITS:
        box = chart(page, title).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (title, box)
    page.screenshot(path=os.path.join(SHOTS, "390x844.png"), full_page=True)
    choose(page, "Custom")
    expect(page.locator("#range .custom")).to_be_visible()
    fits(page)
    page.screenshot(path=os.path.join(SHOTS, "390x844-custom.png"), full_page=True)
    assert not problems, problems
    page.context.close()


def test_new_messages_are_decrypted_as_they_arrive(browser, gateway):
    """A range that reaches now takes in a message stored after the page loaded (the live
    `message` event), fetched from the newest it has and decrypted in the page."""
    problems = []
    page = device_page(browser, gateway, problems)
    loaded(page, in_range(gateway, gateway["now"] - DAY)[0])
    store = Store.open(gateway["data"])
    try:
        now = int(time.time())
        gateway["messages"] += store_messages(store, gateway["ident"], [now, now + 1],
                                              len(gateway["messages"]) + 1)
    finally:
        store.close()
    msgs, readings = in_range(gateway, gateway["now"] - DAY)
    loaded(page, msgs)
    first = page.locator("#readings tbody tr").first
    assert first.locator("td[data-label=Seq]").inner_text() == str(msgs[-1]["seq"])
    assert len(chart_state(page, "Light")["times"]) == len(readings)
    assert not problems, problems
    page.context.close()
