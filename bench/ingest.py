"""Gateway ingest rate (verified + durably stored) vs mosquitto_sub draining the same stream.

Both consumers hold persistent QoS 1 sessions on one Mosquitto; N signed messages are
published while both are offline, then each drains its queue alone and is timed.

    .venv/bin/python bench/ingest.py [--messages 20000] [--devices 50] [--runs 3]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

import paho.mqtt.client as mqtt
from common import make_devices, median, signed_batches, use_openssl_for_preload

from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import Mosquitto
from gateway.store.database import Store

SUB_ID = "bench-mosquitto-sub"


def publish_all(url_port, messages):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def sub_cmd(port, count):
    return ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", SUB_ID, "-c", "-q", "1",
            "-t", "ek/+/up/#", "-C", str(count), "-F", "%l"]


def register_sessions(broker, data_dir):
    """Create both persistent sessions so the broker queues for them while they are away."""
    subprocess.run(sub_cmd(broker.port, 1) + ["-W", "1"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    ing = Ingest(data_dir, broker.url, epoch_seconds=3600)
    ing.start()
    ing.stop()


def time_mosquitto_sub(broker, n):
    t0 = time.perf_counter()
    subprocess.run(sub_cmd(broker.port, n), stdout=subprocess.DEVNULL, check=True, timeout=600)
    return n / (time.perf_counter() - t0)


def time_gateway(broker, data_dir, n):
    ing = Ingest(data_dir, broker.url, epoch_seconds=3600)
    before = ing.stats["stored"]
    t0 = time.perf_counter()
    ing.start()
    while ing.stats["stored"] - before < n:
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("gateway stored only %d of %d" % (ing.stats["stored"] - before, n))
        time.sleep(0.005)
    rate = n / (time.perf_counter() - t0)
    ing.stop()
    return rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    use_openssl_for_preload()
    tmp = tempfile.mkdtemp(prefix="ek-bench-")
    per_device = args.messages // args.devices
    n = per_device * args.devices
    gw_rates, sub_rates = [], []
    try:
        with Mosquitto(os.path.join(tmp, "broker")) as broker:
            for run in range(args.runs):
                data = os.path.join(tmp, "gw%d" % run)
                devices = make_devices(args.devices)
                store = Store.open(data)
                for d in devices:
                    store.add_device(d.hex, d.public)
                register_sessions(broker, data)
                publish_all(broker.port, signed_batches(devices, per_device))
                sub_rates.append(time_mosquitto_sub(broker, n))
                gw_rates.append(time_gateway(broker, data, n))
                assert store.message_count() == n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gw, sub = median(gw_rates), median(sub_rates)
    print("bench/ingest: %d msgs x %d runs (32 readings each): gateway %.0f msg/s "
          "(%.0f readings/s), mosquitto_sub %.0f msg/s, ratio %.2f (median)"
          % (n, args.runs, gw, gw * 32, sub, gw / sub))


if __name__ == "__main__":
    main()
