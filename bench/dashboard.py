"""The admin page with a fleet's worth of data (target: < 1 s each, median).

Registers N devices (1,000) with status reports and stores M messages (1,000,000) over the
last 7 days in a fresh store: the first device a real tracker's week of signed, encrypted
batches (one every 5 min), the rest opaque rows over the others. Serves the admin app with
uvicorn, logs in, and times full loads (server time + transfer) of the dashboard, the device
list, and the 7-day chart's messages (every API page), then the 7-day chart in Chromium from
the click to every chart drawn. Prints one line.

    .venv/bin/python bench/dashboard.py [--devices 1000] [--messages 1000000] [--runs 5]
"""
import argparse
import hashlib
import os
import statistics
import tempfile
import time

import httpx2  # noqa: E402
from common import use_openssl_for_preload  # noqa: E402  (puts the repo on sys.path)

from agent.identity import Identity  # noqa: E402
from agent.message import Nonces, seal  # noqa: E402
from agent.proto import KIND_TELEMETRY  # noqa: E402
from agent.readings import Batch  # noqa: E402
from agent.simsensors import SimTracker  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.owner.keyring import Keyring  # noqa: E402
from gateway.store.database import Store  # noqa: E402
from gateway.web import auth  # noqa: E402
from gateway.web.app import WebServer, create_app  # noqa: E402

WEEK = 7 * 86400
UPLOAD_EVERY = 300          # s: the chart device uploads a batch of 5 readings every 5 min
BATCH = 5
INSERT_ROWS = 50000
PASSWORD = "bench password"


def populate(data_dir, n_devices, n_messages):
    """n_devices with status reports, and n_messages stored over the last 7 days: the first
    device (the one charted) a real tracker's week of signed, encrypted batches, the rest
    spread over the others as opaque rows (the dashboard and lists never open them).
    Returns the charted device's id and data key."""
    use_openssl_for_preload()
    store = Store.open(data_dir)
    now = time.time()
    ident = Identity.create(os.urandom)
    devices = [ident.hex] + [os.urandom(8).hex() for _ in range(n_devices - 1)]
    with store.transaction():
        for i, dev in enumerate(devices):
            key = ident.public if i == 0 else b"\x04" + os.urandom(64)
            store.add_device(dev, key, "device-%04d" % i)
            store.set_health(dev, {"fw": "0.1.0", "up": 3600, "q": i % 7, "qb": 2048,
                                   "drop": 0, "batt": 3900 + i % 200})
            store.set_acked({dev: 0}, now - (i % 300))
    chart = chart_rows(ident, int(now))
    rows = iter(chart + list(opaque_rows(devices[1:], n_messages - len(chart), int(now))))
    while batch := [r for _, r in zip(range(INSERT_ROWS), rows)]:
        with store.transaction():
            store.add_messages(batch)
    last = {}
    for dev, seq, *_ in chart:
        last[dev] = seq
    with store.transaction():
        store.set_acked(last, now)
    store.close()
    return ident.hex, ident.data_key


def chart_rows(ident, now):
    """A week of a tracker's batches, oldest first, as the ingest stores them."""
    nonces, sensors, batch, rows = Nonces(os.urandom), SimTracker(ident.hex), Batch(BATCH), []
    for seq, t0 in enumerate(range(now - WEEK, now, UPLOAD_EVERY), 1):
        batch.clear()
        for k in range(BATCH):
            batch.add(t0 + k * UPLOAD_EVERY / BATCH, sensors.read())
        raw = bytes(seal(ident, nonces, seq, t0, KIND_TELEMETRY, 0, batch.plaintext(),
                         count=BATCH))
        rows.append((ident.hex, seq, KIND_TELEMETRY, t0, BATCH, hashlib.sha256(raw).digest(),
                     raw, t0 + 1.0))
    return rows


def opaque_rows(devices, n, now):
    """n rows of the size of a tracker's batch, round-robin over devices, over the week."""
    per = max(1, n // len(devices))
    raw = os.urandom(260)
    for i in range(n):
        dev, seq = devices[i % len(devices)], i // len(devices) + 1
        t = now - WEEK + seq * WEEK // (per + 1)
        yield (dev, seq, KIND_TELEMETRY, t, BATCH, i.to_bytes(32, "big"), raw, t + 1.0)


def timed(fn, runs):
    """The median of runs calls of fn, in seconds."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def get(client, path):
    r = client.get(path)
    r.raise_for_status()
    return r


def week_of_messages(client, device):
    """Every page of the device's last 7 days of telemetry, as the device page's 7-day chart
    fetches them (following each page's Link header). Returns the message count."""
    now = int(time.time())
    url = "/api/devices/%s/messages?kind=t&limit=1000&from=%d&to=%d" % (device, now - WEEK,
                                                                         now + 1)
    n = 0
    while url:
        r = get(client, url)
        n += len(r.json())
        url = r.links.get("next", {}).get("url")
    return n


def chart_in_browser(url, device, keyring, expect_messages, runs):
    """The median time from choosing "7 d" on the device page to its charts drawn: every
    page fetched, every message verified and decrypted in Chromium, every chart drawn (the
    keyring unlocked first, not counted)."""
    from playwright.sync_api import expect

    from tests.helpers.browser import chromium, unlock
    done = "from %d messages, decrypted in this browser" % expect_messages
    times = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url + "/login?next=/devices/" + device)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/devices/" + device)
        unlock(page, keyring)
        state = page.locator("#telemetry-state")
        for _ in range(runs):
            page.locator("#range input[value='1h']").check()
            expect(state).not_to_contain_text(done, timeout=60000)
            t = time.perf_counter()
            page.locator("#range input[value='7d']").check()
            expect(state).to_contain_text(done, timeout=120000)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        t = time.perf_counter()
        chart, data_key = populate(data_dir, args.devices, args.messages)
        made = time.perf_counter() - t
        auth.set_password(data_dir, PASSWORD)
        keyring = {"keyring": os.path.join(data_dir, "owner.keyring"), "passphrase": PASSWORD}
        ring = Keyring(keyring["keyring"], PASSWORD)
        ring.add(chart, data_key)
        ring.save()
        server = WebServer(create_app(Config(data_dir=data_dir)), port=0).start()
        try:
            with httpx2.Client(base_url=server.url, timeout=60) as c:
                c.post("/api/session", json={"password": PASSWORD}).raise_for_status()
                dashboard = timed(lambda: get(c, "/"), args.runs)
                status = timed(lambda: get(c, "/api/status"), args.runs)
                devices = timed(lambda: get(c, "/devices"), args.runs)
                api = timed(lambda: get(c, "/api/devices"), args.runs)
                week = week_of_messages(c, chart)
                chart_api = timed(lambda: week_of_messages(c, chart), args.runs)
            browser = chart_in_browser(server.url.rstrip("/"), chart, keyring, week, args.runs)
        finally:
            server.stop()
    print("dashboard with %d devices and %d messages (made in %.0f s): dashboard %.1f ms "
          "(/api/status %.1f ms), device list %.1f ms (/api/devices %.1f ms), 7-day chart's "
          "%d messages %.1f ms (fetched, decrypted and drawn in Chromium %.1f ms); medians of %d; "
          "target < 1000 ms each"
          % (args.devices, args.messages, made, dashboard * 1e3, status * 1e3, devices * 1e3,
             api * 1e3, week, chart_api * 1e3, browser * 1e3, args.runs))


if __name__ == "__main__":
    main()
