"""Reviewing the cameras on a phone (390×844, Debian's Chromium): the Camera page's events grid.

`gateway demo --camera-clips` runs a simulated Pi camera recording MP4 clips, each with a
poster and a thumbnail sealed as the clip starts (agent/camera.py). A second camera, "yard",
is registered by the test through the admin API, its data key added to the owner's keyring,
and it uploads two snapshots through the demo's broker, one dated two days ago.

With the page open and the keyring unlocked, the test makes someone walk past the demo
camera (the sim's `motion` file): the new event appears in the grid without a reload, its
thumbnail decrypted there; once its clip is in, it plays in the page (currentTime advances, a
decoded frame is not blank) and downloads byte for byte as the camera recorded it (the sim
keeps its last clips in plaintext). The camera and day filters narrow the grid.

Screenshots go to test-artifacts/screenshots/camera-live-*.png.
"""
import os
import pathlib
import threading
import time

import pytest
from playwright.sync_api import expect

from agent import clock, sim
from agent.camera import CameraAgent
from agent.motion import FrameDiff
from agent.objects import ObjectQueue
from agent.spool import Spool
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from tests.helpers.browser import (
    artifacts,
    demo_devices,
    running_demo,
    signed_in_page,
    unlock,
    video_frame,
)
from tests.helpers.camera import SMALL, StillCamera
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 390, 844
DAY = 86400
BACK = 2 * DAY       # the yard camera's first snapshot is this old


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(str(tmp_path_factory.mktemp("live") / "data"), "--camera-clips",
                      "--trackers", "1") as d:
        yield d


@pytest.fixture(scope="module")
def page(demo):
    with signed_in_page(demo, "/camera", {"width": WIDTH, "height": HEIGHT},
                        timezone_id="UTC") as pg:
        yield pg


def shot(page, name):
    page.screenshot(path=os.path.join(artifacts("screenshots"), "camera-live-%s.png" % name),
                    full_page=True)


def register_camera(page, demo, path, name):
    """A new camera: keys made 'on the device', registered through POST /api/devices (on
    chain, with a broker account), its data key added to the owner's keyring."""
    ident = sim.provision_dir(str(path), name)
    status, out = page.evaluate("""async (body) => {
        const csrf = document.querySelector('meta[name="csrf"]').content;
        const r = await fetch('/api/devices', {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
        return [r.status, await r.json()];
    }""", {"public_key": ident.public.hex(), "name": name, "kind": "camera"})
    assert status == 201, out
    sim.save_credentials(str(path), out["mqtt_user"], out["mqtt_password"])
    ring = Keyring.open(demo["keyring"], demo["passphrase"])
    ring.add(ident.hex, ident.data_key)
    ring.save()
    return ident, out["broker"]


def upload_snapshots(path, ident, broker, demo):
    """Two snapshots of the yard, the first dated BACK seconds ago; returns their ids once
    the gateway holds both whole."""
    camera = StillCamera(SMALL)
    agent = CameraAgent(ident, sim.paho_transport(str(path), broker, ident), camera,
                        FrameDiff(camera), Spool(str(path / "spool")),
                        ObjectQueue(str(path / "objects")),
                        {"frame_interval": 3600, "ack_timeout": 5}, os.urandom, log=lambda m: None)
    real = clock.unix_time
    clock.unix_time = lambda: real() - BACK
    try:
        old = agent.capture().hex()
    finally:
        clock.unix_time = real
    new = agent.capture().hex()
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(None, stop.is_set, 0))
    thread.start()
    try:
        wait_for(lambda: whole(demo, ident.hex, old) and whole(demo, ident.hex, new),
                 timeout=60, what="the yard's snapshots at the gateway")
    finally:
        stop.set()
        thread.join(20)
        agent.transport.close()
    return old, new


def linked(demo, device, clip, event):
    """The id of the clip's whole poster or thumbnail (`event`), or None."""
    store = Store.open(demo["data"])
    try:
        row = store.db.execute("SELECT oid FROM objects WHERE device = ? AND parent = ? AND "
                               "event = ? AND stored = count", (device, clip, event)).fetchone()
    finally:
        store.close()
    return row and row[0]


def whole(demo, device, oid):
    store = Store.open(demo["data"])
    try:
        row = store.db.execute("SELECT stored = count FROM objects WHERE device = ? AND oid = ?",
                               (device, oid)).fetchone()
    finally:
        store.close()
    return bool(row and row[0])


def tiles(page):
    return page.locator("#events .event-grid li.event")


def shown(page):
    """(device, oid) of every tile in the grid, in order."""
    return [tuple(x) for x in tiles(page).evaluate_all(
        "lis => lis.map((li) => [li.dataset.device, li.dataset.oid])")]


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def day(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def test_events_arrive_live_play_download_and_filter_on_a_phone(page, demo, tmp_path):
    cam = sorted(demo_devices(demo["data"], "camera"))[0]
    cam_dir = pathlib.Path(demo["data"]) / "sim" / demo_devices(demo["data"], "camera")[cam]
    yard, broker = register_camera(page, demo, tmp_path / "yard", "yard")
    old, new = upload_snapshots(tmp_path / "yard", yard, broker, demo)

    page.goto(demo["url"] + "/camera")
    unlock(page, demo)
    expect(page.locator('#events li.event[data-oid="%s"][data-thumb=decrypted]' % new)).to_have_count(1)
    page.evaluate("window.stillThisPage = true")
    before = set(shown(page))

    # Someone walks past the demo camera: its event appears, thumbnail decrypted, no reload.
    (cam_dir / "motion").touch()
    wait_for(lambda: [k for k in shown(page) if k[0] == cam and k not in before
                      and page.locator('#events li.event[data-oid="%s"][data-thumb=decrypted]'
                                       % k[1]).count()],
             timeout=90, interval=0.5, what="a new event with its thumbnail decrypted")
    oid = next(k[1] for k in shown(page) if k[0] == cam and k not in before)
    tile = page.locator('#events li.event[data-oid="%s"]' % oid)
    assert page.evaluate("window.stillThisPage") is True
    # Its poster may show first; the thumbnail takes its place once whole.
    thumb = wait_for(lambda: linked(demo, cam, oid, "thumbnail"), timeout=60, what="a thumbnail")
    expect(tile).to_have_attribute("data-source", thumb)
    expect(tile).to_have_attribute("data-thumb", "decrypted")
    size = tile.locator("img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert size == [160, 120], size
    captured = tiles(page).evaluate_all("lis => lis.map((li) => +li.dataset.captured)")
    assert captured == sorted(captured, reverse=True)      # newest first
    no_sideways_scroll(page)
    shot(page, "new-event")

    # Its clip arrives (the tile says so), plays in the page and downloads as recorded.
    expect(tile).to_have_attribute("data-complete", "", timeout=90000)
    tile.locator("button").click()
    fig = page.locator('#events .player figure[data-oid="%s"]' % oid)
    expect(fig).to_have_attribute("data-type", "video/mp4", timeout=60000)
    video = fig.locator("video")
    video.evaluate("v => v.play()")
    page.wait_for_function("v => v.currentTime > 0.5", arg=video.element_handle(), timeout=30000)
    stats = video_frame(video)
    assert stats["w"] > 0 and 20 < stats["mean"] < 235 and stats["variance"] > 100, stats
    box = video.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH
    no_sideways_scroll(page)
    shot(page, "playing")
    with page.expect_download() as d:
        fig.locator("a.save").click()
    recorded = (cam_dir / "clips" / (oid + ".mp4")).read_bytes()
    assert open(d.value.path(), "rb").read() == recorded
    assert d.value.suggested_filename == oid + ".mp4"

    # Filters: by camera, by day (the browser's time zone, UTC here), and both.
    camera, date = page.locator("#events select[name=camera]"), page.locator("#events input[name=day]")
    camera.select_option(yard.hex)
    wait_for(lambda: {k[0] for k in shown(page)} == {yard.hex}, what="the yard's events only")
    assert [k[1] for k in shown(page)] == [new, old]     # newest first
    date.fill(day(time.time() - BACK))
    wait_for(lambda: [k[1] for k in shown(page)] == [old], what="the yard's events of that day")
    expect(page.locator('#events li.event[data-oid="%s"][data-thumb=decrypted]' % old)).to_have_count(1)
    camera.select_option(cam)
    wait_for(lambda: shown(page) == [], what="no demo camera events two days ago")
    expect(page.locator("#events .events-state")).to_contain_text("no events for these filters")
    date.fill(day(time.time()))
    wait_for(lambda: shown(page) and {k[0] for k in shown(page)} == {cam}, what="today's clips")
    assert (cam, oid) in shown(page)
    camera.select_option("")
    wait_for(lambda: {(yard.hex, new), (cam, oid)} <= set(shown(page))
             and (yard.hex, old) not in shown(page), what="today's events of every camera")
    no_sideways_scroll(page)
    shot(page, "filtered")
    assert page.evaluate("window.stillThisPage") is True
