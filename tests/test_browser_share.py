"""The Camera page's "Share as evidence" (docs/evidence.md), on a phone-sized screen (390×844),
in Debian's Chromium, against `gateway demo --camera-clips`.

The evidence file is signed with the owner's CA key, which never reaches the gateway, so the
button opens a dialog with the `edgekeep share` command to run on the owner's computer. The
dialog names the clip's device and object, from its row and from its events-grid tile; its
Copy button copies the command; nothing on the page scrolls sideways. Then the command runs,
as the owner would run it in an unpacked copy of the data directory (here the demo's own), and
writes an evidence file that `edgekeep check-evidence` holds against the chain.

Screenshots go to test-artifacts/screenshots/share-*.png.
"""
import os
import shlex
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from gateway.chain import node
from tests.helpers.browser import artifacts, demo_devices, running_demo, signed_in_page, unlock
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for
from tests.test_browser_clips import whole_clip

pytestmark = pytest.mark.browser

WIDTH = 390


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(str(tmp_path_factory.mktemp("share") / "data"), "--camera-clips",
                      "--trackers", "1") as d:
        yield d


@pytest.fixture(scope="module")
def clip(demo):
    """(camera, oid) of a whole MP4 clip, there before the page loads."""
    cam = sorted(demo_devices(demo["data"], "camera"))[0]
    return cam, wait_for(lambda: whole_clip(demo, cam), timeout=120, what="a whole MP4 clip")


@pytest.fixture(scope="module")
def page(demo, clip):
    with signed_in_page(demo, "/camera", {"width": WIDTH, "height": 844},
                        permissions=["clipboard-read", "clipboard-write"]) as pg:
        # app.js has set the page up (its keyring form too) once the events grid has loaded.
        expect(pg.locator("#events .events-state")).not_to_have_text("loading events…")
        unlock(pg, demo)
        yield pg


def expected_command(demo, cam, oid):
    return ("edgekeep share --data-dir %s --object %s-%s --key %s --out %s-%s.mp4"
            % (demo["data"], cam, oid, os.path.basename(demo["keyring"]), cam, oid))


def fits_the_screen(page, dialog):
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
    assert dialog.evaluate("d => d.scrollWidth <= d.clientWidth")
    command = dialog.locator("#share-command")
    assert command.evaluate("c => c.scrollWidth <= c.clientWidth")


def shot(page, name):
    page.screenshot(path=os.path.join(artifacts("screenshots"), "share-%s.png" % name))


def test_a_clip_row_s_share_button_gives_its_command_to_copy(page, demo, clip):
    cam, oid = clip
    dialog = page.locator("#share-dialog")
    expect(dialog).to_be_hidden()
    page.locator('section[data-device="%s"] tr[data-oid="%s"] [data-action=share]' % (cam, oid)).click()
    expect(dialog).to_be_visible()
    command = expected_command(demo, cam, oid)
    expect(dialog.locator("#share-command")).to_have_text(command)
    expect(dialog.locator("h2")).to_have_text("Share this clip as evidence")
    expect(dialog.locator(".share-device")).to_have_text(cam)
    expect(dialog).to_contain_text("never reaches the gateway")
    expect(dialog).to_contain_text("edgekeep check-evidence FILE")
    fits_the_screen(page, dialog)
    shot(page, "row")
    dialog.locator("button[data-copy]").click()
    expect(dialog.locator("button[data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == command
    dialog.locator("button[value=close]").click()
    expect(dialog).to_be_hidden()


def test_the_events_player_s_share_button_names_the_tile_s_clip(page, demo, clip):
    cam, oid = clip
    tile = page.locator('#events li.event[data-oid="%s"]' % oid)
    tile.locator("button.tile").click()
    share = page.locator("#events .player p.share")
    expect(share).to_be_visible()
    share.locator("button").click()
    dialog = page.locator("#share-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#share-command")).to_have_text(expected_command(demo, cam, oid))
    fits_the_screen(page, dialog)
    shot(page, "events")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_the_command_writes_evidence_that_holds(page, demo, clip):
    cam, oid = clip
    page.locator('section[data-device="%s"] tr[data-oid="%s"] [data-action=share]' % (cam, oid)).click()
    argv = shlex.split(page.locator("#share-command").text_content())
    page.keyboard.press("Escape")
    assert argv[:2] == ["edgekeep", "share"]
    # As the owner runs it: beside the keyring (the page knows its file name, not where it
    # is), against the gateway's data directory (here the demo's own, on this machine).
    where = os.path.dirname(demo["keyring"])
    env = dict(ENV, EDGEKEEP_PASSPHRASE=demo["passphrase"])

    def share():
        r = subprocess.run([sys.executable, "-m", "gateway", *argv[1:]], cwd=where, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 or "not anchored yet" in r.stderr, r.stderr
        return r.returncode == 0

    wait_for(share, timeout=120, interval=2, what="the clip's epoch to be anchored")
    out = os.path.join(where, argv[argv.index("--out") + 1])
    r = subprocess.run([sys.executable, "-m", "gateway", "check-evidence", out, "--rpc",
                        node.running_url(demo["data"])], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "evidence holds: device %s" % cam in r.stdout
