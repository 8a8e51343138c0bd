"""bench/camera: a 2 MB clip through the camera agent, the device's MQTT client, Mosquitto and
the gateway's ingest (durably stored, acked), against `mosquitto_pub -f` of the same bytes
through the same broker. Then the same upload with its connection cut a third of the way:
how many chunks are sent again.

    python bench/camera.py [--mb 2] [--chunk 4096]
"""
import argparse
import os
import socket
import subprocess
import tempfile
import threading
import time

from common import use_openssl_for_preload

from agent.camera import CameraAgent
from agent.identity import Identity
from agent.mqtt import MQTTClient
from agent.objects import ObjectQueue
from agent.spool import Spool
from gateway.broker import Mosquitto
from gateway.ingest import Ingest
from gateway.objects import ObjectStore
from gateway.store import Store


class ClipCamera:
    def __init__(self, size):
        self.size = size

    def capture(self):
        return os.urandom(self.size)  # incompressible, like JPEG data

    def check(self):
        return False


def device(workdir, ident, port, size, chunk):
    os.makedirs(workdir)
    cam = ClipCamera(size)
    agent = CameraAgent(ident, MQTTClient("ek-" + ident.hex, "127.0.0.1", port), cam, cam,
                        Spool(workdir + "/spool"), ObjectQueue(workdir + "/objects", 4 * size),
                        {"chunk_size": chunk, "frame_interval": 3600, "chunk_window": 256,  # the Pi camera's window; the agent's default (16) suits a slow link
                         "reconnect_max": 1, "ack_timeout": 5}, os.urandom, log=lambda m: None)
    oid = agent.capture().hex()
    return agent, oid


def upload(agent, objects, dev, oid, cut_at=None):
    """Seconds from the first publish to the gateway's last stored chunk."""
    count = agent.objects.oldest().count
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(None, stop.is_set, 0))
    start = time.perf_counter()
    t.start()
    cut = False
    while True:
        o = objects.get(dev, oid)
        stored = o["stored"] if o else 0
        if stored == count:
            break
        if cut_at is not None and not cut and stored >= cut_at * count:
            agent.transport.sock.shutdown(socket.SHUT_RDWR)  # the Wi-Fi drops
            cut = True
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    stop.set()
    t.join(30)
    agent.transport.close()
    return elapsed, count


def mosquitto_pub(broker, nbytes, workdir):
    path = workdir + "/blob"
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", "bench/blob",
                            "-q", "1", "-C", "1"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)  # subscribed
    start = time.perf_counter()
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", "bench/blob", "-q", "1",
                    "-f", path], check=True)
    sub.wait(30)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=2)
    p.add_argument("--chunk", type=int, default=4096)
    args = p.parse_args()
    size = int(args.mb * 1024 * 1024)
    use_openssl_for_preload()  # capture-side AES in pure Python is not what is measured
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(tmp + "/broker") as broker:
        data = tmp + "/gw"
        store = Store(data)
        ingest = Ingest(data, broker.url, epoch_seconds=3600)
        ingest.start()
        objects = ObjectStore(data, store.db)
        results = []
        for run, cut_at in (("full", None), ("cut", 1 / 3)):
            ident = Identity.create(os.urandom)
            store.add_device(ident.hex, ident.public, run, "camera")
            ingest.reload_devices()
            agent, oid = device("%s/%s" % (tmp, run), ident, broker.port, size, args.chunk)
            elapsed, count = upload(agent, objects, ident.hex, oid, cut_at)
            results.append((elapsed, count, agent.chunks_sent - count,
                            objects.get(ident.hex, oid)["bytes"]))
        ingest.stop()
        (ours, count, _, nbytes), (_, _, resent, _) = results
        pub = mosquitto_pub(broker, nbytes, tmp)
    dupes = ingest.rejects["duplicate_chunk"]
    print("bench/camera: %.1f MB clip, %d chunks of %d B: agent->gateway %.1f MB/s (durable, "
          "acked), mosquitto_pub -f %.1f MB/s, ratio %.2f (target >= 0.8); connection cut at 1/3: "
          "%d chunk(s) resent, %d duplicate(s) at the gateway (target <= 1)" % (
              size / 1e6, count, args.chunk, nbytes / ours / 1e6, nbytes / pub / 1e6, pub / ours,
              resent, dupes))


if __name__ == "__main__":
    main()
