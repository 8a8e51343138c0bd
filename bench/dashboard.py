"""Admin dashboard load time with many registered devices (target: < 1 s with 1,000).

Registers N devices with status reports in a fresh store, serves the admin app with uvicorn,
logs in, and times full page loads (server time + transfer) of the dashboard and the device
list. Prints one line.

    .venv/bin/python bench/dashboard.py [--devices 1000] [--runs 5]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx2  # noqa: E402

from gateway.config import Config  # noqa: E402
from gateway.store.database import Store  # noqa: E402
from gateway.web import auth  # noqa: E402
from gateway.web.app import WebServer, create_app  # noqa: E402


def populate(data_dir, n):
    store = Store.open(data_dir)
    now = time.time()
    with store.transaction():
        for i in range(n):
            dev = os.urandom(8).hex()
            store.add_device(dev, b"\x04" + os.urandom(64), "device-%04d" % i)
            store.set_health(dev, {"fw": "0.1.0", "up": 3600, "q": i % 7, "qb": 2048, "drop": 0,
                                   "batt": 3900 + i % 200})
            store.set_acked({dev: i}, now - (i % 300))
    store.close()


def timed_get(client, path, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(path)
        r.raise_for_status()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        populate(data_dir, args.devices)
        auth.set_password(data_dir, "bench password")
        server = WebServer(create_app(Config(data_dir=data_dir)), port=0).start()
        try:
            with httpx2.Client(base_url=server.url) as c:
                c.post("/api/session", json={"password": "bench password"}).raise_for_status()
                dashboard = timed_get(c, "/", args.runs)
                devices = timed_get(c, "/devices", args.runs)
                api = timed_get(c, "/api/devices", args.runs)
        finally:
            server.stop()
    print("dashboard with %d devices: %.1f ms (device list page %.1f ms, /api/devices %.1f ms), "
          "median of %d; target < 1000 ms" % (args.devices, dashboard * 1e3, devices * 1e3,
                                              api * 1e3, args.runs))


if __name__ == "__main__":
    main()
