"""The Camera page plays clips, on a phone-sized screen (390×844), in Debian's Chromium.

- MP4 (H.264): `gateway demo --camera-clips` makes its simulated camera record MP4 clips with
  pre-roll. The page decrypts one, plays it in a <video> (currentTime advances, a decoded frame
  is not blank), scrubs it, and its save link downloads exactly what `gateway export --object`
  writes, named <oid>.mp4.
- AVI (MJPEG): an AVI made by the ESP32 profile's writer (agent/avi.py) is sealed as an object
  of the demo camera (its identity and data key, agent/objects.py) and served to the page in
  place of the gateway's answer (Playwright routes): the page checks and decrypts it as any
  object, then plays it frame by frame on a canvas at the AVI's frame rate; the slider shows
  the frame asked for; the save link gives the AVI as it was, named <oid>.avi.

Screenshots go to test-artifacts/screenshots/clips-*.png.
"""
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys

import cbor2
import pytest
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import expect

from agent.avi import AviWriter
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import ObjectQueue, manifest
from agent.simcamera import Scene
from gateway.store.database import Store
from tests.helpers.browser import (
    artifacts,
    demo_devices,
    running_demo,
    signed_in_page,
    unlock,
    video_frame,
)
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.browser

WIDTH = 390


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(str(tmp_path_factory.mktemp("clips") / "data"), "--camera-clips",
                      "--trackers", "1") as d:
        yield d


@pytest.fixture(scope="module")
def page(demo):
    with signed_in_page(demo, "/camera", {"width": WIDTH, "height": 844}) as pg:
        yield pg


def shot(page, name):
    page.screenshot(path=os.path.join(artifacts("screenshots"), "clips-%s.png" % name), full_page=True)


def camera(demo):
    return sorted(demo_devices(demo["data"], "camera"))[0]


def whole_clip(demo, cam):
    """The newest MP4 clip of the camera that the gateway holds whole, or None."""
    store = Store.open(demo["data"])
    try:
        row = store.db.execute("SELECT oid FROM objects WHERE device = ? AND stored = count "
                               "AND type = 'video/mp4' ORDER BY time DESC LIMIT 1", (cam,)).fetchone()
    finally:
        store.close()
    return row and row[0]


def export(demo, cam, oid, out):
    run = subprocess.run([sys.executable, "-m", "gateway", "export", "--data-dir", demo["data"],
                          "--object", "%s-%s" % (cam, oid), "--key", demo["keyring"], "--out", str(out)],
                         cwd=REPO, env=dict(ENV, EDGEKEEP_PASSPHRASE=demo["passphrase"]),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return out.read_bytes()


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def canvas_image(locator):
    url = locator.evaluate("c => c.toDataURL('image/png')")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_an_mp4_clip_plays_scrubs_and_downloads(page, demo, tmp_path):
    cam = camera(demo)
    oid = wait_for(lambda: whole_clip(demo, cam), timeout=120, what="a whole MP4 clip")
    page.goto(demo["url"] + "/camera")
    unlock(page, demo)
    page.locator('tr[data-oid="%s"] [data-action=show]' % oid).click()
    fig = page.locator('section[data-device="%s"] figure[data-oid="%s"]' % (cam, oid))
    expect(fig).to_have_attribute("data-sha256", re.compile("^[0-9a-f]{64}$"), timeout=60000)
    video = fig.locator("video")
    expect(video).to_have_count(1)
    assert video.evaluate("v => v.src").startswith("blob:")
    # Playing: its time advances (muted, so no autoplay policy stands in the way).
    video.evaluate("v => v.play()")
    page.wait_for_function("v => v.currentTime > 0.5", arg=video.element_handle(), timeout=30000)
    # A decoded frame is the room, not a blank: its pixels vary.
    stats = video_frame(video)
    assert stats["w"] > 0 and stats["h"] > 0, stats
    assert 20 < stats["mean"] < 235 and stats["variance"] > 100, stats
    # Scrubbing: a seek lands where asked.
    video.evaluate("v => v.pause()")
    target = round(min(1.0, stats["duration"] / 2), 2)
    video.evaluate("(v, t) => new Promise((ok) => { v.addEventListener('seeked', ok, {once: true}); "
                   "v.currentTime = t; })", target)
    assert abs(video.evaluate("v => v.currentTime") - target) < 0.25
    no_sideways_scroll(page)
    box = video.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH
    shot(page, "mp4")
    # The save link: the decrypted file, named .mp4, byte-identical to the owner's export.
    save = fig.locator("a.save")
    with page.expect_download() as d:
        save.click()
    download = d.value
    assert download.suggested_filename == oid + ".mp4"
    saved = open(download.path(), "rb").read()
    plain = export(demo, cam, oid, tmp_path / "export.mp4")
    assert saved == plain
    assert fig.get_attribute("data-sha256") == hashlib.sha256(plain).hexdigest()
    assert plain[4:8] == b"ftyp"


def sealed_avi(demo, cam, tmp_path, frames):
    """An MJPEG AVI of `frames` JPEGs (agent/avi.py) sealed as the demo camera's object:
    (oid hex, signed manifest, chunks as stored, the AVI's bytes)."""
    ident = Identity.load(os.path.join(demo["data"], "sim", demo_devices(demo["data"], "camera")[cam],
                                       "identity.json"))
    avi = AviWriter(str(tmp_path / "clip.scratch"), 5)
    for f in frames:
        avi.add(f)
    avi.close()
    out = io.BytesIO()
    avi.stream(out.write)
    data = out.getvalue()
    queue = ObjectQueue(str(tmp_path / "objects"), 8 << 20)
    oid = os.urandom(8)
    w = queue.begin(oid, 4096, ident.data_key, Nonces(os.urandom))
    w.write(data)
    hashes = w.close()
    queue.commit(w, 1)
    entry = queue.find(oid)
    chunks = [cbor2.loads(queue.read(entry, i))[2] for i in range(entry.count)]
    signed = manifest(ident, 4000000000, 1, 1700000000, oid, "motion", "video/x-msvideo",
                      len(data), 4096, hashes, w.wrapped_key, w.commit)
    return oid.hex(), signed, chunks, data


def test_an_avi_clip_plays_frame_by_frame(page, demo, tmp_path):
    cam = camera(demo)
    scene = Scene(size=(320, 240), offset=0, walk=4, period=100)
    jpegs = [scene.jpeg(0.25 * i) for i in range(12)]   # the walker crosses the room
    oid, signed, chunks, data = sealed_avi(demo, cam, tmp_path, jpegs)
    base = "/api/devices/%s/objects/%s" % (cam, oid)
    info = {"oid": oid, "manifest": base64.b64encode(signed).decode(), "complete": True,
            "count": len(chunks), "stored": len(chunks), "type": "video/x-msvideo"}
    page.route("**" + base, lambda r: r.fulfill(status=200, content_type="application/json",
                                                body=json.dumps(info)))
    page.route(re.compile(re.escape(base) + r"/chunks/\d+$"), lambda r: r.fulfill(
        status=200, content_type="application/octet-stream",
        body=chunks[int(r.request.url.rsplit("/", 1)[1])]))
    page.goto(demo["url"] + "/camera")
    unlock(page, demo)
    # A row for it, as the page lists a camera's objects, and its Show button.
    page.evaluate("""([cam, oid]) => {
        const body = document.querySelector(`section[data-device="${cam}"] table.objects tbody`);
        const tr = document.createElement('tr');
        tr.dataset.oid = oid; tr.dataset.complete = '';
        const td = document.createElement('td');
        td.append(Object.assign(document.createElement('button'), {textContent: 'Show'}));
        td.firstChild.dataset.action = 'show';
        tr.append(td); body.prepend(tr);
    }""", [cam, oid])
    page.locator('tr[data-oid="%s"] [data-action=show]' % oid).click()
    fig = page.locator('section[data-device="%s"] figure[data-oid="%s"]' % (cam, oid))
    expect(fig).to_have_attribute("data-sha256", hashlib.sha256(data).hexdigest(), timeout=60000)
    player = fig.locator(".clip.frames")
    expect(player).to_have_attribute("data-frames", str(len(jpegs)))
    expect(player).to_have_attribute("data-fps", "5")
    expect(player).to_have_attribute("data-drawn", "0")
    canvas = player.locator("canvas")
    decoded = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]

    def nearest():
        img = canvas_image(canvas)
        assert img.size == (320, 240)
        diffs = [sum(ImageStat.Stat(ImageChops.difference(img, d)).mean) for d in decoded]
        return diffs.index(min(diffs))

    assert nearest() == 0
    # Play: the frames follow each other at 5 fps, to the last.
    page.evaluate("window.clipStart = performance.now()")
    player.locator("button").click()
    page.wait_for_function("el => +el.dataset.drawn >= 3", arg=player.element_handle())
    elapsed = page.evaluate("performance.now() - window.clipStart") / 1000
    assert elapsed >= 3 / 5 * 0.8, elapsed
    expect(player).to_have_attribute("data-drawn", str(len(jpegs) - 1), timeout=10000)
    expect(player).to_have_attribute("data-playing", "")
    assert nearest() == len(jpegs) - 1
    # Scrub: the slider shows the frame asked for.
    player.locator("input[type=range]").evaluate(
        "s => { s.value = 5; s.dispatchEvent(new Event('input', {bubbles: true})); }")
    expect(player).to_have_attribute("data-drawn", "5")
    assert nearest() == 5
    no_sideways_scroll(page)
    shot(page, "avi")
    with page.expect_download() as d:
        fig.locator("a.save").click()
    assert d.value.suggested_filename == oid + ".avi"
    assert open(d.value.path(), "rb").read() == data
