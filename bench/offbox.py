"""bench/offbox: does placing shares on peers slow the ingest? A camera clip's upload (the
camera agent in its own process, Mosquitto, the gateway's ingest, as bench/camera.py) timed
until the device has the gateway's ack for every chunk, with the gateway's placer idle and
with it busy placing the previous clip's chunks on three peers (each peer a process of its
own, as on other machines; here they share this machine's cores), alternating; and how long
after the ack the new clip is durable off the box too (2 of 3 shares of every chunk on peers,
the backlog before it included).

    python bench/offbox.py [--mb 2] [--runs 5]
"""
import argparse
import subprocess
import sys
import tempfile
import time

from camera import upload
from common import median

from agent.identity import Identity as DeviceIdentity
from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import Mosquitto
from gateway.network import pairing
from gateway.network.identity import Identity
from gateway.network.placement import Placer, PlacerLoop
from gateway.store.database import Store
from gateway.store.provider import Provider
from hw.rpi.camera import AGENT_CONFIG as PI_CAMERA

# A peer: its store and identity, its peer port on a free port, an invitation printed for
# the bench; it serves until its stdin closes.
PEER = """
import sys
from gateway.network import pairing
from gateway.network.identity import Identity
from gateway.network.server import PeerServer
from gateway.store.database import Store
store = Store.open(sys.argv[1])
me = Identity.load_or_create(sys.argv[1])
server = PeerServer(sys.argv[1], me, "127.0.0.1", 0).start()
print(pairing.invite(store, me, server.url, 10 ** 10, 3600), flush=True)
sys.stdin.read()
server.stop()
"""


def start_peers(tmp, n):
    procs, invitations = [], []
    for i in range(n):
        p = subprocess.Popen([sys.executable, "-c", PEER, "%s/peer%d" % (tmp, i)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        invitations.append(p.stdout.readline().strip())
    return procs, invitations


def offbox_after(store, digests, timeout=120):
    """Seconds until every digest has k shares placed on peers."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        states = [store.placements.get(d) for d in digests]
        if all(s is not None and s.durable_at for s in states):
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError("the clip was not off the box within %d s" % timeout)


def clip_digests(store, device):
    [obj] = [o for o in store.objects.list() if o["device"] == device]
    return [obj["hashes"][i:i + 32] for i in range(0, len(obj["hashes"]), 32)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    size = int(args.mb * 1024 * 1024)
    chunk, window = PI_CAMERA["chunk_size"], PI_CAMERA["chunk_window"]
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(tmp + "/broker") as broker:
        gw = tmp + "/gw"
        store = Store.open(gw)
        me = Identity.load_or_create(gw)
        peers, invitations = start_peers(tmp, 3)
        try:
            for inv in invitations:
                pairing.add(store, me, inv, "https://127.0.0.1:1", 10 ** 10)
            ingest = Ingest(gw, broker.url, epoch_seconds=3600)
            ingest.start()
            placer_store = Store.connect(gw)
            placer = Placer(placer_store, Provider.open(placer_store), me, 2, 3)
            off, on, after = [], [], []
            for run in range(args.runs):
                off.append(upload("%s/off%d" % (tmp, run), broker, store, ingest, size, chunk,
                                  window)["durable"])
                # The placer starts on the idle run's clip, a backlog it is busy with while
                # the next clip comes in.
                loop = PlacerLoop(placer, period=0.2).start()
                time.sleep(0.1)
                workdir = "%s/on%d" % (tmp, run)
                on.append(upload(workdir, broker, store, ingest, size, chunk, window)["durable"])
                device = DeviceIdentity.load(workdir + "/identity.json").hex
                after.append(offbox_after(store, clip_digests(store, device)))
                loop.stop()
            ingest.stop()
        finally:
            for proc in peers:
                proc.stdin.close()
                proc.wait(30)
    print("bench/offbox: %.1f MB clip (Pi camera, %d-byte chunks), medians of %d runs: durable "
          "at the gateway %.3f s with the placer idle, %.3f s while it places a clip's backlog on 3 "
          "peers (ratio %.2f); the clip durable off the box %.2f s after the device's ack"
          % (size / 1e6, chunk, args.runs, median(off), median(on), median(on) / median(off),
             median(after)))


if __name__ == "__main__":
    main()
