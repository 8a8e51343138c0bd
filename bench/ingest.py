"""Gateway ingest rate (verified + durably stored) vs mosquitto_sub draining the same stream.

Both consumers hold persistent QoS 1 sessions on one Mosquitto; N signed messages are
published while both are offline, then each drains its queue alone and is timed.

    .venv/bin/python bench/ingest.py [--messages 20000] [--devices 50] [--runs 3]

With --workers N [N ...] it times N ingest worker processes instead (one MQTT v5 shared
subscription group, gateway/workers.py) on --db sqlite or postgresql (a PostgreSQL server
the bench starts in a temporary directory, as the tests do). Each worker's session is made
first, the messages published while they are away, then all are started and timed from
the moment every one is connected until the database holds every message. Against it, in
the same run: the verify bound, the same messages' ES256 signatures checked by OpenSSL
(`cryptography`) in a bare loop, one process per core the workers can use
(min(N, cores)). Memory per worker is its peak RSS (VmHWM). Where the cores went: the CPU
time (/proc/PID/stat) of the workers, Mosquitto and PostgreSQL's processes while they
drained, per message, next to a signature check's (one core's bound): if the cores are
busy, the ratio to the bound is the check's share of a message's CPU time. And the floor of
an ingest on paho: a client with the workers' session settings that only PUBACKs the same
messages (its own queued copy), its CPU time per message.

    .venv/bin/python bench/ingest.py --workers 1 2 4 --db postgresql [--messages 20000]
"""
import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt
from common import make_devices, median, signed_batches, use_openssl_for_preload

from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import Mosquitto
from gateway.store.database import Store
from gateway.wire import protocol

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


# One ingest worker process: connects, says "up", ingests until its stdin closes.
WORKER = """
import sys
from gateway.ingest.pipeline import Ingest
ing = Ingest(sys.argv[1], sys.argv[2], epoch_seconds=3600, client_id=sys.argv[3], group="bench")
ing.start()
print("up", flush=True)
sys.stdin.read()
ing.stop()
"""


# The floor of any ingest on paho: a client with the workers' session settings that only
# PUBACKs. It has a session of its own, so it gets its own copy of the stream.
FLOOR = """
import sys, threading
from gateway.ingest.pipeline import RECEIVE_MAXIMUM
from gateway.mqtt.client import new_client, v5_session
n, got, done, subscribed = int(sys.argv[2]), [0], threading.Event(), threading.Event()
c, b = new_client(sys.argv[1], "bench-floor", v5=True)
c.on_subscribe = lambda *a: subscribed.set()
c.manual_ack_set(True)
def on_message(client, userdata, m):
    client.ack(m.mid, m.qos)
    got[0] += 1
    if got[0] == n:
        done.set()
c.on_message = on_message
c.on_connect = lambda client, *a: client.subscribe("ek/+/up/#", qos=1)
c.connect(b.host, b.port, clean_start=False, properties=v5_session(RECEIVE_MAXIMUM))
c.loop_start()
subscribed.wait(30)
print("up", flush=True)
if n:
    done.wait(600)
    print("done", flush=True)
c.disconnect()
c.loop_stop()
"""


def paho_floor(broker, n):
    """CPU seconds per message of a paho v5 client that only PUBACKs its n queued messages."""
    p = subprocess.Popen([sys.executable, "-c", FLOOR, broker.url, str(n)],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "up":
        raise RuntimeError("the floor client did not start")
    if p.stdout.readline().strip() != "done":
        raise RuntimeError("the floor client did not get its %d messages" % n)
    cpu = cpu_seconds([p.pid])[p.pid]
    p.wait(60)
    return cpu / n


def floor_session(broker):
    subprocess.run([sys.executable, "-c", FLOOR, broker.url, "0"], stdout=subprocess.DEVNULL,
                   check=True, timeout=60)


def start_workers(data, broker, count):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, data, broker.url, "bench-w%d" % i],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(count)]
    for p in procs:
        if p.stdout.readline().strip() != "up":
            raise RuntimeError("a worker did not start")
    return procs


def stop_workers(procs):
    """Stop them; the largest peak RSS among them (MB)."""
    peak = 0
    for p in procs:
        with open("/proc/%d/status" % p.pid) as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        peak = max(peak, int(hwm.split()[1]) // 1024)
        p.stdin.close()
    for p in procs:
        p.wait(120)
    return peak


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU seconds of each live process in pids: {pid: seconds}."""
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def postgres_pids():
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/comm" % name) as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(name))
            except OSError:
                pass
    return pids


def cpu_used(before, after):
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def drain(broker, data, count, n, db):
    """(msg/s of `count` workers draining the n queued messages, a worker's peak RSS in MB,
    CPU seconds {workers, mosquitto, postgresql} they took)."""
    store = Store.connect(data)
    procs = start_workers(data, broker, count)
    groups = {"workers": [p.pid for p in procs], "mosquitto": [broker.proc.pid],
              "postgresql": postgres_pids() if db == "postgresql" else []}
    cpu0 = {g: cpu_seconds(pids) for g, pids in groups.items()}
    t0, before = time.perf_counter(), store.message_count()
    while store.message_count() < n:
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("the workers stored only %d of %d" % (store.message_count(), n))
        time.sleep(0.02)
    rate = (n - before) / (time.perf_counter() - t0)
    if db == "postgresql":
        groups["postgresql"] = postgres_pids()
    cpu = {g: cpu_used(cpu0[g], cpu_seconds(pids)) / (n - before) for g, pids in groups.items()}
    store.close()
    return rate, stop_workers(procs), cpu


def _verify_loop(items, seconds, out):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    algorithm = ec.ECDSA(hashes.SHA256())
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for key, der, tbs in items:
            key.verify(der, tbs, algorithm)
        done += len(items)
    out.put(done / (time.perf_counter() - t0))


def verify_bound(devices, messages, procs, seconds=3.0):
    """Signatures per second that `procs` processes check together in a bare loop."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    keys = {d.hex: protocol.load_public_key(d.public) for d in devices}
    items = []
    for topic, raw in messages[:2000]:
        signed = protocol.parse(topic, raw, len(raw))
        der = encode_dss_signature(int.from_bytes(signed.signature[:32], "big"),
                                   int.from_bytes(signed.signature[32:], "big"))
        items.append((signed.device, der, signed.to_be_signed()))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def run(part):
        _verify_loop([(keys[d], der, tbs) for d, der, tbs in part], seconds, out)
    workers = [ctx.Process(target=run, args=(items,)) for _ in range(procs)]
    for w in workers:
        w.start()
    rates = [out.get(timeout=seconds * 10 + 60) for _ in workers]
    for w in workers:
        w.join()
    return sum(rates)


def workers_main(args):
    cores = os.cpu_count() or 1
    tmp = tempfile.mkdtemp(prefix="ek-bench-")
    per_device = args.messages // args.devices
    n = per_device * args.devices
    results = []
    server = None
    try:
        if args.db == "postgresql":
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from tests.helpers.postgres import PostgresServer
            server = PostgresServer()
            server.start()
        with Mosquitto(os.path.join(tmp, "broker")) as broker:
            devices = make_devices(args.devices)
            messages = list(signed_batches(devices, per_device))
            for count in args.workers:
                rates, peaks, cpus = [], [], []
                for run in range(args.runs):
                    data = os.path.join(tmp, "gw%d-%d" % (count, run))
                    url = server.create_database()[1] if server else None
                    store = Store.open(data, url)
                    for d in devices:
                        store.add_device(d.hex, d.public)
                    stop_workers(start_workers(data, broker, count))  # their sessions
                    floor_session(broker)
                    publish_all(broker.port, messages)
                    rate, peak, cpu = drain(broker, data, count, n, args.db)
                    cpu["paho"] = paho_floor(broker, n)
                    assert store.message_count() == n
                    store.close()
                    rates.append(rate)
                    peaks.append(peak)
                    cpus.append(cpu)
                used = min(count, cores)
                bound = verify_bound(devices, messages, used)
                cpu = {g: median([c[g] for c in cpus]) * 1e6 for g in cpus[0]}
                results.append((count, median(rates), bound, max(peaks), cpu, used / bound * 1e6))
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("bench/ingest: %d msgs x %d runs (32 readings each) on %s, %d cores, medians: %s"
          % (n, args.runs, args.db, cores, "; ".join(
              "%d worker(s) %.0f msg/s (%.0f readings/s), verify bound %.0f msg/s, ratio %.2f, "
              "peak RSS %d MB/worker, CPU us/msg: workers %.0f, mosquitto %.0f, postgresql "
              "%.0f, a check %.0f, paho receiving and acking %.0f"
              % (c, r, r * 32, b, r / b, m, cpu["workers"], cpu["mosquitto"],
                 cpu["postgresql"], check, cpu["paho"])
              for c, r, b, m, cpu, check in results)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+",
                    help="time this many worker processes (several counts: one after another)")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()
    use_openssl_for_preload()
    if args.workers:
        return workers_main(args)
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
