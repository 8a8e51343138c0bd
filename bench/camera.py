"""bench/camera: a 2 MB clip from the camera agent (in its own process, as on the camera)
over the device's MQTT client and Mosquitto to the gateway's ingest, once with a Pi camera's
settings and once with the agent's defaults (an ESP32-CAM's). The baseline is
`mosquitto_pub -f` of the same bytes through the same broker, timed until a
`mosquitto_sub` has them. Two times per upload, both from the device's first step:

- delivered: until a `mosquitto_sub` on the chunk topic has every chunk (like for like with
  the baseline: the same broker and subscriber, our device and protocol as the publisher);
- durable: until the device has the gateway's chunk ack for the whole clip, i.e. every chunk
  verified, erasure-coded, written, fdatasynced and committed.

Then an upload with its connection cut a third of the way: how many chunks are sent again.

Last, the real-time factor of a clip of the same size recorded at its frame rate (MJPEG in
AVI, incompressible frames), whose chunks go out while it records (docs/camera.md): how long
after the clip ends the gateway has it whole (the device's chunk ack for the whole object),
and the upload's whole time, from the clip's first frame, over the clip's duration.

    python bench/camera.py [--mb 2] [--runs 5] [--clip-seconds 4]
"""
import argparse
import json
import os
import socket
import struct
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


CLIP_FPS = 10


class RecordingCamera:
    """Frames of `size` bytes at the clip's rate: a JPEG's start-of-frame, then incompressible
    bytes; motion on the first frame only, so the clip is that frame and `postroll` s more."""

    SOF = b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 600, 800) + bytes(10)

    def __init__(self, size):
        self.size = size
        self.first = None       # perf_counter of the clip's first frame

    def frame(self):
        if self.first is None:
            self.first = time.perf_counter()
        return self.SOF + os.urandom(self.size - len(self.SOF))

    def check(self):
        return self.first is None


def clip_device(args):
    """The device process for the real-time factor: record one clip at CLIP_FPS, its chunks
    sent as it records; print when it started, ended and was whole at the gateway."""
    use_openssl_for_preload()
    ident = Identity.load(args.device + "/identity.json")
    frames = int(args.clip_seconds * CLIP_FPS)
    cam = RecordingCamera(args.size // (frames + 1))
    ended = []

    count = []

    class Agent(CameraAgent):
        def seal_clip(self, enc, seconds):
            ended.append(time.perf_counter())
            oid = CameraAgent.seal_clip(self, enc, seconds)
            count.append(self.objects.find(oid).count)
            return oid

    agent = Agent(ident, MQTTClient("ek-" + ident.hex, "127.0.0.1", args.port), cam, cam,
                  Spool(args.device + "/spool"), ObjectQueue(args.device + "/objects", 4 * args.size),
                  {"chunk_size": args.chunk, "chunk_window": args.window, "reconnect_max": 1,
                   "ack_timeout": 5, "clip": "avi", "clip_fps": CLIP_FPS, "preroll": 0,
                   "postroll": args.clip_seconds, "clip_max": 2 * args.clip_seconds,
                   "poster": False}, os.urandom, log=lambda m: None)
    agent.run(None, lambda: bool(ended) and not agent.objects.entries, 0)
    whole = time.perf_counter()
    agent.transport.close()
    print(json.dumps({"first": cam.first, "ended": ended[0], "whole": whole,
                      "duration": (frames + 1) / CLIP_FPS, "frame": cam.size,
                      "sent": agent.chunks_sent, "count": count[0]}))


def clip_upload(workdir, broker, store, ingest, size, chunk, window, seconds):
    """{after_end, rtf, duration, frame} of one clip recorded in real time by a fresh device."""
    os.makedirs(workdir)
    ident = Identity.create(os.urandom)
    ident.save(workdir + "/identity.json")
    store.add_device(ident.hex, ident.public, os.path.basename(workdir), "camera")
    ingest.reload_devices()
    out = subprocess.run([sys.executable, __file__, "--device", workdir, "--port",
                          str(broker.port), "--size", str(size), "--chunk", str(chunk),
                          "--window", str(window), "--clip-seconds", str(seconds), "--clip"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    r = json.loads(out)
    return dict(r, after_end=r["whole"] - r["ended"], rtf=(r["whole"] - r["first"]) / r["duration"])


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
    p.add_argument("--clip-seconds", type=float, default=4)
    p.add_argument("--cut", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--clip", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device:
        return clip_device(args) if args.clip else device(args)
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
        cut_duplicates = ingest.rejects["duplicate_chunk"]
        clips = {name: [clip_upload("%s/%s%dclip" % (tmp, name[:3], run), broker, store, ingest,
                                    size, cfg["chunk_size"], cfg["chunk_window"],
                                    args.clip_seconds) for run in range(args.runs)]
                 for name, cfg in PROFILES}
        ingest.stop()
    parts = []
    for name, cfg in PROFILES:
        r = runs[name]
        parts.append("%s (%d chunks of %d B, window %d): delivered %.2f, durable %.2f (%.1f MB/s)"
                     % (name, r[0]["count"], cfg["chunk_size"], cfg["chunk_window"],
                        median([p / u["delivered"] for p, u in zip(pub, r)]),
                        median([p / u["durable"] for p, u in zip(pub, r)]),
                        size / median([u["durable"] for u in r]) / 1e6))
    rtf = []
    for name, _ in PROFILES:
        c = clips[name]
        rtf.append("%s: whole %.2f s after the clip ends, RTF %.2f, %d chunk(s) sent twice" % (
            name, median([u["after_end"] for u in c]), median([u["rtf"] for u in c]),
            sum(u["sent"] - u["count"] for u in c)))
    c = clips[PROFILES[0][0]][0]
    print("bench/camera: %.1f MB clip, medians of %d runs, ratios to mosquitto_pub -f (%.1f MB/s; "
          "target >= 0.8): %s; connection cut at 1/3: %d chunk(s) resent, %d duplicate(s) at the "
          "gateway (target <= 1); clip recorded in real time (%.1f s, %d frames of %d KB at %d "
          "fps), chunks sent as it records: %s" % (
              size / 1e6, args.runs, size / median(pub) / 1e6, "; ".join(parts),
              cut["sent"] - cut["count"], cut_duplicates, c["duration"],
              round(c["duration"] * CLIP_FPS), c["frame"] // 1024, CLIP_FPS, "; ".join(rtf)))


if __name__ == "__main__":
    main()
