"""bench/camera: a 2 MB clip from the camera agent (in its own process, as on the camera)
over the device's MQTT client and Mosquitto to the gateway's ingest, once with a Pi camera's
settings and once with the agent's defaults (an ESP32-CAM's). The baseline is
`mosquitto_pub -f` of the same bytes through the same broker, timed until a
`mosquitto_sub` has them. Two times per upload, both from the device's first step:

- delivered: until a `mosquitto_sub` on the chunk topic has every chunk (like for like with
  the baseline: the same broker and subscriber, our device and protocol as the publisher);
- durable: until the device has the gateway's chunk ack for the whole clip, i.e. every chunk
  verified, erasure-coded, written, fdatasynced and committed.

Last, an upload with its connection cut a third of the way: how many chunks are sent again.

    python bench/camera.py [--mb 2] [--runs 5]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import median, use_openssl_for_preload

from agent.camera import CAMERA_DEFAULTS, CameraAgent
from agent.identity import Identity
from agent.mqtt import MQTTClient
from agent.objects import ObjectQueue
from agent.spool import Spool
from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import Mosquitto
from gateway.store.database import Store
from hw.rpi.camera import AGENT_CONFIG as PI_CAMERA

PROFILES = (("Pi camera", PI_CAMERA), ("ESP32-CAM, agent defaults", CAMERA_DEFAULTS))


class ClipCamera:
    def __init__(self, size):
        self.size = size

    def capture(self):
        return os.urandom(self.size)  # incompressible, like JPEG data

    def check(self):
        return False


def device(args):
    """The device process: capture one clip, upload it, print what it measured as JSON."""
    use_openssl_for_preload()  # capture-side AES in pure Python is not what is measured
    ident = Identity.load(args.device + "/identity.json")
    cam = ClipCamera(args.size)
    agent = CameraAgent(ident, MQTTClient("ek-" + ident.hex, "127.0.0.1", args.port), cam, cam,
                        Spool(args.device + "/spool"),
                        ObjectQueue(args.device + "/objects", 4 * args.size),
                        {"chunk_size": args.chunk, "chunk_window": args.window,
                         "frame_interval": 3600, "reconnect_max": 1, "ack_timeout": 5},
                        os.urandom, log=lambda m: None)
    agent.capture()
    count = agent.objects.oldest().count
    cut = [args.cut]

    def done():
        up = agent.upload
        if cut[0] and up and up.have and sum(up.have) >= count / 3:
            agent.transport.sock.shutdown(socket.SHUT_RDWR)  # the Wi-Fi drops
            cut[0] = False
        return not agent.objects.entries

    start = time.perf_counter()  # CLOCK_MONOTONIC: the bench compares it with its own
    agent.run(None, done, 0)
    elapsed = time.perf_counter() - start
    agent.transport.close()
    print(json.dumps({"start": start, "seconds": elapsed, "count": count,
                      "sent": agent.chunks_sent}))


def upload(workdir, broker, store, ingest, size, chunk, window, cut=False, watch=False):
    """{durable, delivered (if watch): seconds, count, sent: chunks} of one upload by a fresh
    device."""
    os.makedirs(workdir)
    ident = Identity.create(os.urandom)
    ident.save(workdir + "/identity.json")
    store.add_device(ident.hex, ident.public, os.path.basename(workdir), "camera")
    ingest.reload_devices()
    if watch:
        got_all = subscriber(broker, "ek/%s/up/c" % ident.hex, -(-size // chunk))
    out = subprocess.run([sys.executable, __file__, "--device", workdir, "--port",
                          str(broker.port), "--size", str(size), "--chunk", str(chunk),
                          "--window", str(window)] + (["--cut"] if cut else []),
                         check=True, capture_output=True, text=True, timeout=300).stdout
    r = dict(json.loads(out))
    r["durable"] = r["seconds"]
    if watch:
        got_all.join(30)
        r["delivered"] = got_all.at - r["start"]
    return r


def subscriber(broker, topic, count):
    """A thread waiting for a mosquitto_sub that exits after count messages on topic; its
    `at` is when it did (perf_counter)."""
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", topic, "-q", "1",
                            "-C", str(count)], stdout=subprocess.DEVNULL)

    def wait():
        sub.wait()
        waiter.at = time.perf_counter()
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.3)  # subscribed
    return waiter


def mosquitto_pub(broker, nbytes, workdir):
    path = workdir + "/blob"
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))
    got = subscriber(broker, "bench/blob", 1)
    start = time.perf_counter()
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", "bench/blob", "-q", "1",
                    "-f", path], check=True)
    got.join(30)
    return got.at - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--device", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    p.add_argument("--window", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cut", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device:
        return device(args)
    size = int(args.mb * 1024 * 1024)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(tmp + "/broker") as broker:
        store = Store.open(tmp + "/gw")
        ingest = Ingest(tmp + "/gw", broker.url, epoch_seconds=3600)
        ingest.start()
        runs = {name: [] for name, _ in PROFILES}
        pub = []
        for run in range(args.runs):
            for name, cfg in PROFILES:  # a second subscriber would slow the gateway down
                args_ = (broker, store, ingest, size, cfg["chunk_size"], cfg["chunk_window"])
                durable = upload("%s/%s%d" % (tmp, name[:3], run), *args_)
                watched = upload("%s/%s%dw" % (tmp, name[:3], run), *args_, watch=True)
                runs[name].append(dict(durable, delivered=watched["delivered"]))
            pub.append(mosquitto_pub(broker, size, tmp))
        cfg = CAMERA_DEFAULTS
        cut = upload(tmp + "/cut", broker, store, ingest, size, cfg["chunk_size"],
                     cfg["chunk_window"], cut=True)
        ingest.stop()
    parts = []
    for name, cfg in PROFILES:
        r = runs[name]
        parts.append("%s (%d chunks of %d B, window %d): delivered %.2f, durable %.2f (%.1f MB/s)"
                     % (name, r[0]["count"], cfg["chunk_size"], cfg["chunk_window"],
                        median([p / u["delivered"] for p, u in zip(pub, r)]),
                        median([p / u["durable"] for p, u in zip(pub, r)]),
                        size / median([u["durable"] for u in r]) / 1e6))
    print("bench/camera: %.1f MB clip, medians of %d runs, ratios to mosquitto_pub -f (%.1f MB/s; "
          "target >= 0.8): %s; connection cut at 1/3: %d chunk(s) resent, %d duplicate(s) at the "
          "gateway (target <= 1)" % (
              size / 1e6, args.runs, size / median(pub) / 1e6, "; ".join(parts),
              cut["sent"] - cut["count"], ingest.rejects["duplicate_chunk"]))


if __name__ == "__main__":
    main()
