"""What the browser tests share: Debian's Chromium through Playwright, a running `gateway demo`,
and a `gateway run` on a fixed port that a test can kill and start again.

    CHROMIUM, FLAGS, launch(playwright)   headless Chromium as shared/DESIGN.md says
    chromium()                            launch() in a block of its own (a fixture's body)
    signed_in_page(demo, path, viewport)  a page of its own Chromium, signed in, on path
    artifacts(*parts)                     a directory under test-artifacts/ (git-ignored)
    running_demo(data_dir)                `gateway demo`, yielding its URL, password, keyring
    demo_devices(data_dir, prefix)        {device id: name} of the demo's simulated devices
    complete_object(data_dir, camera)     the newest object the gateway holds whole
    unlock(page, demo)                    open the demo's keyring on the page
    video_frame(video)                    the frame a <video> shows: size, mean and variance
    GatewayProcess                        `gateway run` on one port and data dir: start, kill,
                                          pause (SIGSTOP) and resume
"""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from gateway.store.database import Store
from tests.helpers.paths import ENV, REPO

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def launch(playwright):
    if not os.path.exists(CHROMIUM):
        pytest.fail("browser tests need Debian's chromium at %s: run `make setup-test` "
                    "(it installs the chromium package)" % CHROMIUM)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@contextlib.contextmanager
def chromium():
    """A launched Chromium (launch) until the block ends."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def signed_in_page(demo, path, viewport, **context):
    """A page of its own Chromium, signed in to the demo and on path, downloads accepted,
    until the block ends."""
    from playwright.sync_api import expect
    with chromium() as browser:
        page = browser.new_context(viewport=viewport, accept_downloads=True,
                                   **context).new_page()
        page.set_default_timeout(20000)
        page.goto(demo["url"] + path)
        page.fill("input[name=password]", demo["password"])
        page.click("button[type=submit]")
        expect(page).to_have_url(demo["url"] + path)
        yield page


def artifacts(*parts):
    """REPO/test-artifacts/<parts>, made if missing (the directory is in .gitignore)."""
    path = os.path.join(REPO, "test-artifacts", *parts)
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def running_demo(data_dir, *args):
    """`gateway demo` in data_dir until the block ends; yields {url, password, data, keyring,
    passphrase} once it printed where everything is."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--trackers", "3", "--data-dir", data_dir,
         "--epoch-seconds", "2", "--block-time", "1", "--sample-interval", "1",
         "--upload-interval", "2", *args],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("verify with:"):
                break
        text = "".join(out)
        m = re.search(r"admin page +(\S+) \(password in (\S+)\)", text)
        k = re.search(r"owner keyring (\S+) \(passphrase in (\S+)\)", text)
        assert m and k, text
        with open(m.group(2)) as f:
            password = f.read().strip()
        with open(k.group(2)) as f:
            passphrase = f.read().strip()
        yield {"url": m.group(1).rstrip("/"), "password": password, "data": data_dir,
               "keyring": k.group(1), "passphrase": passphrase}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """`python -m gateway run` on a fixed web port and data directory, against `broker_url`,
    with a chain that never answers (the anchor waits; nothing to clean up after a kill).
    kill() is SIGKILL: the gateway dies as in a crash or power cut; start() again serves the
    same port and data (sessions, kept in memory, are gone)."""

    def __init__(self, tmp_path, broker_url, password):
        from gateway.web import auth
        self.data = str(tmp_path / "gw")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.config = str(tmp_path / "gateway.toml")
        self.log_path = str(tmp_path / "gateway.log")
        key = tmp_path / "chain.key"
        key.write_text("0x" + "11" * 32 + "\n")
        with open(self.config, "w") as f:
            f.write('data_dir = "%s"\nbroker = "%s"\nepoch_seconds = 2\nweb_port = %d\n'
                    'homeassistant = false\n[chain]\nrpc_url = "http://127.0.0.1:%d"\n'
                    'private_key_file = "%s"\n'
                    % (self.data, broker_url, self.port, free_port(), key))
        os.makedirs(self.data, exist_ok=True)
        auth.set_password(self.data, password)
        self.proc = None

    def start(self, timeout=60):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config",
                                      self.config], cwd=REPO, env=ENV, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited %s:\n%s" % (self.proc.returncode, self.log()))
            if self.answers():
                return self
            time.sleep(0.2)
        raise AssertionError("gateway did not serve %s within %d s:\n%s"
                             % (self.url, timeout, self.log()))

    def answers(self):
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True         # 503: up, the ingest not (yet) taking messages
        except OSError:
            return False

    def pause(self):
        """SIGSTOP: the gateway hangs (connections are taken, nothing is answered)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]


def complete_object(data_dir, camera):
    """The newest object of a camera that the gateway holds whole, or None."""
    store = Store.open(data_dir)
    try:
        row = store.db.execute("SELECT oid FROM objects WHERE device = ? AND stored = count "
                               "ORDER BY time DESC LIMIT 1", (camera,)).fetchone()
    finally:
        store.close()
    return row and row[0]


def demo_devices(data_dir, prefix=""):
    """{device id: name} of a demo's simulated devices (each has sim/<name>/device.json)."""
    sim = os.path.join(data_dir, "sim")
    out = {}
    for name in sorted(os.listdir(sim)):
        path = os.path.join(sim, name, "device.json")
        if name.startswith(prefix) and os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            out[d["device_id"]] = d["name"]
    return out


def unlock(page, demo):
    """Open the demo owner's keyring in the page's keyring form."""
    from playwright.sync_api import expect
    page.set_input_files("#keyring input[type=file]", demo["keyring"])
    page.fill("#keyring input[name=passphrase]", demo["passphrase"])
    page.click("#keyring button[type=submit]")
    expect(page.locator("#keyring .state")).to_contain_text("unlocked:", timeout=60000)


def video_frame(video):
    """The frame a <video> (a Playwright locator) shows, drawn to a canvas: {w, h, mean,
    variance, duration} of its brightness; a blank frame has no variance."""
    return video.evaluate("""v => {
        const c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let n = 0, s = 0, s2 = 0;
        for (let i = 0; i < d.length; i += 4) {
            const y = (d[i] + d[i + 1] + d[i + 2]) / 3; n++; s += y; s2 += y * y;
        }
        const mean = s / n;
        return {w: c.width, h: c.height, mean, variance: s2 / n - mean * mean, duration: v.duration};
    }""")
