"""Soak: a whole gateway (ingest, anchor on a local anvil, Keeper, web, Home Assistant bridge)
under steady load for a long time; its memory and CPU sampled from outside.

The gateway runs as a subprocess of its own (this file with --child), so /proc/<pid> measures
it alone; this process is the broker's owner and the load: N simulated devices, each sending
a signed batch of 32 readings every 1-2 s (uniformly at random) on one QoS 1 connection. The
broker has accounts like a Pi's; the load connects as the gateway's account, the one that
may write every device's uplink. Every --interval the gateway's RSS (/proc/<pid>/status
VmRSS) and CPU time (/proc/<pid>/stat utime+stime) are sampled; the RSS slope is a least
squares fit over the samples after the warm-up. At each sample the gateway also notes glibc
malloc's bytes in use and free-but-kept (mallinfo2) and Python's allocated blocks, which tell
a leak (in use grows) from memory held for reuse. Progress goes to stderr, one result line to
stdout.

    .venv/bin/python bench/soak.py [--minutes 60] [--devices 100] [--interval 60]
                                   [--warmup MIN] [--trace] [--keep DIR]

--trace runs the gateway under tracemalloc (slower, more memory: for finding what grows, not
for the figures) and writes, at every sample, the allocation sites that grew most since the
first sample to <dir>/trace-<n>.txt (the directory is kept and printed on stderr).
"""
import argparse
import heapq
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
from common import make_devices, use_openssl_for_preload

from agent import message
from gateway.chain import node
from gateway.localhost import free_port
from gateway.mqtt.broker import GATEWAY_USER, Mosquitto
from gateway.store.database import Store

HERE = os.path.abspath(__file__)
TICK = os.sysconf("SC_CLK_TCK")
READINGS = 32


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime, stime (fields 14, 15)


def slope_per_hour(samples):
    """Least squares slope of (seconds, MB) points, in MB per hour; None under 2 points."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if not var:
        return None
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 3600


# -- the gateway process ---------------------------------------------------------------------

def malloc_mb():
    """(in use, free but kept) by glibc's malloc in this process, in MB; None without mallinfo2.
    RSS that grows while "in use" does not is freed memory malloc keeps (gateway/ingest/malloc.py
    lets it keep up to 16 MB of heap top per arena), not a leak."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = Mallinfo2
    m = fn()
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def child(config, ready_file):
    """python bench/soak.py --child <gateway.toml> <ready-file>: the gateway, until SIGTERM."""
    import logging

    from gateway.config import Config
    from gateway.service import Gateway
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="gateway %(levelname)s %(name)s: %(message)s")
    stop, snap = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGUSR1, lambda *a: snap.set())
    gw = Gateway(Config.load(config)).start()
    trace = os.environ.get("EK_SOAK_TRACE")
    if trace:   # after the start: imports and set-up are not what grows
        import tracemalloc
        tracemalloc.start(int(trace))
    with open(ready_file, "w") as f:
        f.write("%d\n" % os.getpid())
    first, n = None, 0
    here = os.path.dirname(ready_file)
    while not stop.wait(0.2):
        if not snap.is_set():
            continue
        snap.clear()
        kept = malloc_mb() or (0.0, 0.0)
        with open(os.path.join(here, "malloc.txt"), "a") as f:
            f.write("%.2f %.2f %d\n" % (kept + (sys.getallocatedblocks(),)))
        if not trace:
            continue
        import gc
        gc.collect()
        now = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        if first is None:
            first = now
            continue
        n += 1
        with open(os.path.join(here, "trace-%d.txt" % n), "w") as f:
            f.write("traced %.1f MB\n" % (tracemalloc.get_traced_memory()[0] / 2**20))
            for st in now.compare_to(first, "traceback")[:15]:
                f.write("\n%+.1f KB (%+d blocks), %.1f KB now\n"
                        % (st.size_diff / 1024, st.count_diff, st.size / 1024))
                f.write("\n".join("    " + line for line in st.traceback.format()[-6:]) + "\n")
    gw.stop()
    return 0


def write_config(tmp, broker):
    data = os.path.join(tmp, "gw")
    path = os.path.join(tmp, "gateway.toml")
    with open(path, "w") as f:
        f.write('data_dir = "%s"\nbroker = "%s"\nbroker_username = "%s"\n'
                'broker_password_file = "%s"\nepoch_seconds = 10\nweb_port = %d\n'
                'homeassistant = true\n[chain]\nblock_time = 1\n'
                % (data, broker.url, GATEWAY_USER, broker.credentials.gateway_secret, free_port()))
    return path, data


def _span(rows, col):
    return "%.1f -> %.1f MB" % (rows[0][col], rows[-1][col]) if rows else "n/a"


# -- the load --------------------------------------------------------------------------------

class Load:
    """N devices on one connection, each sending its next signed batch 1-2 s after the last."""

    def __init__(self, broker, devices):
        from agent.readings import Batch
        batch = Batch(READINGS)
        for i in range(READINGS):
            batch.add(time.time() + i, {"temp": 2100 + i, "hum": 4000, "pres": 101000,
                                         "gas": 50000, "light": 1000, "ax": 1, "ay": 2,
                                         "az": 1000, "lat": 1, "lon": 2, "batt": 4000})
        self.plain = batch.plaintext()
        self.devices = devices
        self.nonces = [message.Nonces(os.urandom) for _ in devices]
        self.seq = [0] * len(devices)
        self.sent = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-load")
        self.client.username_pw_set(GATEWAY_USER, broker.gateway_password())
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        now = time.monotonic()
        self.due = [(now + random.uniform(0, 2), i) for i in range(len(devices))]
        heapq.heapify(self.due)

    def run_until(self, deadline):
        """Send what is due until deadline (monotonic)."""
        while True:
            at, i = self.due[0]
            if at > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            heapq.heapreplace(self.due, (at + random.uniform(1, 2), i))
            ident = self.devices[i]
            self.seq[i] += 1
            seq = self.seq[i]
            msg = message.seal(ident, self.nonces[i], seq, int(time.time()), "t", seq,
                               self.plain, READINGS)
            self.last = self.client.publish("ek/%s/up/t" % ident.hex, msg, qos=1)
            self.sent += 1

    def close(self):
        if self.sent:
            self.last.wait_for_publish(30)   # QoS 1 in order: all of them are at the broker
        self.client.disconnect()
        self.client.loop_stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--interval", type=float, default=60, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="minutes left out of the slope (default: a quarter of the run, at most 5)")
    ap.add_argument("--trace", action="store_true", help="tracemalloc in the gateway")
    ap.add_argument("--keep", help="run in this directory and keep it")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))   # stop the gateway and broker too
    warmup = min(5.0, args.minutes / 4) if args.warmup is None else args.warmup
    use_openssl_for_preload()
    tmp = args.keep or tempfile.mkdtemp(prefix="ek-soak-")
    os.makedirs(tmp, exist_ok=True)
    keep = bool(args.keep or args.trace)
    proc = None
    load = None
    samples = []     # (seconds since the load began, RSS MB, CPU seconds)
    broker = Mosquitto(os.path.join(tmp, "broker"), auth=True).start()
    try:
        config, data = write_config(tmp, broker)
        devices = make_devices(args.devices)
        store = Store.open(data)
        for d in devices:
            store.add_device(d.hex, d.public)
        store.close()
        ready = os.path.join(tmp, "ready")
        env = dict(os.environ, **({"EK_SOAK_TRACE": "10"} if args.trace else {}))
        proc = subprocess.Popen([sys.executable, HERE, "--child", config, ready], env=env)
        end = time.monotonic() + 180
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the gateway did not start (exit %s)" % proc.poll())
            time.sleep(0.2)
        load = Load(broker, devices)
        t0 = time.monotonic()
        stop_at = t0 + args.minutes * 60
        k = 0
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError("the gateway exited (%s) during the soak" % proc.returncode)
            samples.append((now - t0, rss_mb(proc.pid), cpu_seconds(proc.pid)))
            proc.send_signal(signal.SIGUSR1)   # the child notes its malloc figures
            print("soak %5.1f min: gateway RSS %.1f MB, CPU %.1f s, %d sent, mosquitto RSS %.1f MB"
                  % (samples[-1][0] / 60, samples[-1][1], samples[-1][2], load.sent,
                     rss_mb(broker.proc.pid)), file=sys.stderr, flush=True)
            if now >= stop_at:
                break
            k += 1
            load.run_until(min(stop_at, t0 + k * args.interval))
        broker_rss = rss_mb(broker.proc.pid)
        sent = load.sent
        time.sleep(0.5)   # the child's note of this last sample
        load.close()
        load = None
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        stored = Store.connect(data).message_count()
        malloc = []
        if os.path.exists(os.path.join(tmp, "malloc.txt")):
            with open(os.path.join(tmp, "malloc.txt")) as f:
                malloc = [tuple(map(float, line.split())) for line in f if line.strip()]
    finally:
        if load:
            load.close()
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        node.stop_running(os.path.join(tmp, "gw"))
        broker.stop()
        if keep:
            print("soak: files kept in %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    span = samples[-1][0] - samples[0][0]
    after = [(t, r) for t, r, _ in samples if t >= warmup * 60]
    slope = slope_per_hour(after)
    cpu = (samples[-1][2] - samples[0][2]) / span * 100 if span else 0.0
    print("bench/soak: %.1f min, %d devices, %d msgs sent, %d stored (%.1f/s), %d samples; "
          "gateway RSS %.1f -> %.1f MB (peak %.1f), slope %s after %.1f min warm-up "
          "(%d samples), CPU %.1f%% of a core; malloc in use %s, free kept %s, Python blocks %s; "
          "mosquitto RSS %.1f MB"
          % (span / 60, args.devices, sent, stored, stored / span if span else 0.0, len(samples),
             samples[0][1], samples[-1][1],
             max(r for _, r, _ in samples),
             "%+.1f MB/h" % slope if slope is not None else "n/a", warmup, len(after), cpu,
             _span(malloc, 0), _span(malloc, 1),
             "%dk -> %dk" % (malloc[0][2] / 1000, malloc[-1][2] / 1000) if malloc else "n/a",
             broker_rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
