"""bench/network: a gateway's data on three peers, on this machine (docs/network.md).

An owner gateway (a data directory: Store, local Provider, identity, a local anvil for its
network commits) holds camera-chunk-sized random blobs (61,500 B: a 60 KiB chunk in its
COSE_Encrypt0) and one message-sized blob (1,262 B) per ten chunks; a Placer (k = 2, m = 3)
puts them on three peers: real PeerServers over HTTPS on loopback, in this process, each
with its own SQLite store and pack files. Then:

1. audit traffic: at a quarter, half and all of --gb stored, a network epoch is committed
   on chain and the RemoteKeeper audits every peer --audits times (network_samples = 4
   challenges each, a new TLS connection each, a block mined before each round), through a
   counting TCP relay: the bytes on the wire per peer per audit, times 24 audits a day
   (network_audit_seconds = 3600). The answers' JSON bodies and the Merkle paths in them
   are counted too;
2. restore: gateway.network.restore.Restore of the whole store into a new data directory
   from the three peers (the catalog of a metadata snapshot tells it where everything is;
   there are no message epochs, so the chain only gives the restored deployment), timed;
   alternating with
3. the baseline: the same bytes, one file per record the restore fetched (same sizes),
   served by `python -m http.server` and copied by one `curl` process fetching them one
   after the other into a directory (as the restore fetches one record after the other);
4. repair: a fourth peer is paired and Placer.replace(one of the three): bytes sent and
   fetched, and time, with the owner's local copy present; then, with the local copy
   deleted, the same for a second peer onto a fifth (every share rebuilt from k = 2 others).

    python bench/network.py [--gb 1] [--runs 3] [--audits 24] [--rate 0] [--profile FILE]
    python bench/network.py --quick     (the smoke test's size: 10 MB, one run, 2 audits)

The peers run without their rate limit unless --rate N gives one (--rate 50: the server's
own, 50 requests/s per peer, burst 200): at that limit a restore of more than a few hundred
blobs per peer loses blobs (docs/performance.md), which the result line then says.
Nothing is synced less than the gateway syncs it; the curl copy is not synced at all.
"""
import argparse
import cProfile
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import median

from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.network import restore as restore_mod
from gateway.network.audit import RemoteKeeper
from gateway.network.client import PeerClient
from gateway.network.commits import Committer
from gateway.network.identity import Identity
from gateway.network.metadata import Metadata
from gateway.network.placement import Placer
from gateway.network.server import BURST, RATE
from gateway.store.database import Store
from gateway.store.provider import Provider
from tests.helpers.network import PeerNode, pair

CHUNK = 61500           # a 60 KiB camera chunk in its COSE_Encrypt0
MESSAGE = 1262          # a signed batch of 32 readings (bench/wire_cost.py)
CHUNKS_PER_MESSAGE = 10
AUDITS_PER_DAY = 86400 // 3600   # network_audit_seconds default
SAMPLES = 4                      # network_samples default
K, M = 2, 3


# -- the owner's blobs ---------------------------------------------------------------------

def fill(store, provider, target, state):
    """Put random blobs into the Provider until it holds `target` bytes of them."""
    while state["bytes"] < target:
        with store.transaction():
            for _ in range(64):
                if state["bytes"] >= target:
                    break
                state["n"] += 1
                size = MESSAGE if state["n"] % (CHUNKS_PER_MESSAGE + 1) == 0 else CHUNK
                data = os.urandom(size)
                provider.put(hashlib.sha256(data).digest(), data, sync=False)
                state["bytes"] += size
                state["blobs"] += 1
            provider.flush()


def place_all(placer):
    """Queue and place every blob of the Provider, waiting out the peers' rate limits:
    (seconds, record bytes sent, record bytes fetched from peers)."""
    started = time.perf_counter()
    placer.queue_new()
    sent = fetched = idle = 0
    while True:
        stats = placer.step(256)
        sent += stats["bytes"]
        fetched += stats.get("fetched", 0)
        if stats["blobs"] == 0 and not placer.placements.sending():
            break
        if stats["placed"] == 0:
            idle += 1
            if idle > 600:
                raise RuntimeError("placement stuck: %r" % stats)
            time.sleep(0.1)   # rate limited: the tokens come back
        else:
            idle = 0
    return time.perf_counter() - started, sent, fetched


# -- bytes on the wire ---------------------------------------------------------------------

class Relay:
    """A TCP relay in front of a peer's port counting the bytes each way (TLS records, as
    they cross the network: no TCP/IP headers)."""

    def __init__(self, port):
        self.target = port
        self.up = self.down = 0
        self.open = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "https://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            out = socket.create_connection(("127.0.0.1", self.target))
            out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.open += 2
            threading.Thread(target=self._pump, args=(conn, out, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(out, conn, "down"), daemon=True).start()

    def _pump(self, src, dst, way):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def idle(self):
        with self.lock:
            return self.open == 0

    def close(self):
        self.sock.close()


class Tally:
    """PeerClient.raw wrapped (while entered) to note every exchange: [(method, path,
    request body bytes, status, answer body bytes)]. Nothing else changes."""

    def __init__(self):
        self.calls = []

    def __enter__(self):
        self.original = PeerClient.raw
        original, calls = self.original, self.calls

        def raw(client, method, path, body=b"", headers=None):
            out = original(client, method, path, body, headers)
            calls.append((method, path, len(body), out[0], len(out[2]), out[2]
                          if path == "/v1/challenge" else None))
            return out
        PeerClient.raw = raw
        return self

    def __exit__(self, *exc):
        PeerClient.raw = self.original


# -- audits --------------------------------------------------------------------------------

def audit_day(keeper, current, chain, peers, relays, audits):
    """`audits` audits of every peer, each on a new connection through the peer's relay, a
    block mined before each round: {"wire": TLS bytes both ways, "audits": n, "requests":
    challenge request bodies' bytes (and refusals'), "errors": the refusals, kind ("chunk"
    or "message"): [answers, answer JSON bytes, bytes of the hex Merkle paths in them]}.
    Every challenge must be ok in the end."""
    out = {"wire": 0, "audits": 0, "requests": 0, "chunk": [0, 0, 0], "message": [0, 0, 0],
           "errors": []}
    committed = keeper.committed()
    for _ in range(audits):
        chain.w3.provider.make_request("evm_mine", [])
        for p in peers:
            relay = relays[p.name]
            before = relay.up + relay.down
            client = current[p.name] = PeerClient(keeper.identity, p.name, relay.url)
            with Tally() as t:
                audit = keeper.audit(p.name, committed[p.name])
            client.close()
            bad = [r for r in keeper.store.audits.records(audit) if r.outcome != "ok"]
            if bad:
                raise RuntimeError("audit %d of %s: %r" % (audit, p.short, bad))
            for _ in range(100):    # the relay's last bytes
                time.sleep(0.005)
                if relay.idle():
                    break
            out["wire"] += relay.up + relay.down - before
            out["audits"] += 1
            for _, path, sent, status, size, body in t.calls:
                if path != "/v1/challenge":
                    continue
                out["requests"] += sent
                a = json.loads(body)
                if status != 200:     # e.g. a peer not told of the latest commit yet
                    out["errors"].append("%d %s" % (status, a.get("error")))
                    print("audit of %s: %d %s" % (p.short, status, a), file=sys.stderr)
                    out["requests"] += size
                    continue
                row = out["chunk" if len(a["record"] or "") > 4 * MESSAGE else "message"]
                row[0] += 1
                row[1] += size
                row[2] += sum(len(x) + 3 for x in a["path"] + a["commit"]["path"])  # "..",
    return out


# -- restore and its baseline --------------------------------------------------------------

def restore_once(tmp, identity, first, rpc_url, profile=None):
    """A restore into a new data directory: (seconds, its report, the sizes of the records
    it fetched, how many of its requests were refused rate_limited)."""
    data = os.path.join(tmp, "restored")
    shutil.rmtree(data, ignore_errors=True)
    me = Identity.from_private_bytes(identity.private_bytes())   # as from the keyring
    with Tally() as t:
        started = time.perf_counter()
        store = Store.open(data)
        me.save(data)
        r = restore_mod.Restore(store, me, rpc_url)
        client = PeerClient(me, first.name, first.url)
        if profile is not None:
            profile.enable()
        report = r.run(client)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - started
    r.provider.close()
    store.close()
    client.close()
    records = [c[4] for c in t.calls if c[0] == "GET" and c[1].startswith("/v1/slots/")
               and c[3] == 200]
    shutil.rmtree(data)
    return seconds, report, records, sum(c[3] == 429 for c in t.calls)


def curl_baseline(tmp, sizes):
    """Seconds for one curl process to copy len(sizes) files of these sizes, one after the
    other, from `python -m http.server` into a directory."""
    src, dst = os.path.join(tmp, "www"), os.path.join(tmp, "copied")
    if not os.path.isdir(src):
        os.makedirs(src)
        for i, size in enumerate(sizes):
            with open(os.path.join(src, str(i)), "wb") as f:
                f.write(os.urandom(size))
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", src], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "--fail", "-o", os.path.join(dst, "#1"),
                        "http://127.0.0.1:%d/[0-%d]" % (port, len(sizes) - 1)], check=True)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
    copied = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    if copied != sum(sizes):
        raise RuntimeError("curl copied %d bytes of %d" % (copied, sum(sizes)))
    shutil.rmtree(dst)
    return seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the bench -----------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=1.0, help="blob bytes stored at the end (GB)")
    p.add_argument("--runs", type=int, default=3, help="restores (and curl copies), alternating")
    p.add_argument("--audits", type=int, default=AUDITS_PER_DAY,
                   help="audits of each peer at each size (a day's: 24)")
    p.add_argument("--rate", type=float, default=0,
                   help="the peers' rate limit, requests/s per peer, the burst in proportion "
                        "(the server's own: %g, burst %d); 0, the default: none" % (RATE, BURST))
    p.add_argument("--profile", help="write the cProfile stats of the last restore here")
    p.add_argument("--quick", action="store_true", help="10 MB, one run, 2 audits")
    p.add_argument("--tmp", default=None, help="where the data directories go")
    args = p.parse_args()
    if args.quick:
        args.gb, args.runs, args.audits = 0.01, 1, 2
    options = ({"rate": 1e9, "burst": 10 ** 9} if args.rate == 0
               else {"rate": args.rate, "burst": max(1, int(args.rate * BURST / RATE))})
    total = int(args.gb * 1e9)
    capacity = 4 * total + (1 << 26)

    with tempfile.TemporaryDirectory(prefix="ek-bench-network-", dir=args.tmp) as tmp:
        nodes = []
        try:
            owner = PeerNode(os.path.join(tmp, "owner"))
            nodes.append(owner)
            anvil = Anvil(owner.data_dir, block_time=0).start()
            try:
                chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY,
                              os.path.join(owner.data_dir, "chain", "deployment.json"))
                result = run(args, tmp, owner, nodes, chain, anvil.rpc_url, options, total,
                             capacity)
            finally:
                anvil.stop()
        finally:
            for n in nodes:
                n.close()
    print(result)


def run(args, tmp, owner, nodes, chain, rpc_url, options, total, capacity):
    provider = Provider.open(owner.store)
    peers = []
    for i in range(3):
        node = PeerNode(os.path.join(tmp, "peer%d" % i), **options)
        nodes.append(node)
        pair(node, owner, capacity)
        peers.append(node)
    relays = {p.name: Relay(p.server.port) for p in peers}
    placer = Placer(owner.store, provider, owner.identity, k=K, m=M)
    committer = Committer(owner.store, owner.identity, chain)
    current = {}    # the keeper's client of each peer: a new one per audit, through its relay
    keeper = RemoteKeeper(owner.store, owner.identity, chain,
                          lambda name, endpoint: current[name], placer, samples=SAMPLES)
    state = {"n": 0, "bytes": 0, "blobs": 0}

    # 1. audit traffic as the data grows
    audit_parts, placing = [], 0.0
    for fraction in (0.25, 0.5, 1.0):
        fill(owner.store, provider, int(total * fraction), state)
        placing += place_all(placer)[0]
        epoch = committer.commit_now().epoch
        day = audit_day(keeper, current, chain, peers, relays, args.audits)
        per_audit = day["wire"] / day["audits"]
        chunk, msg = day["chunk"], day["message"]
        answers = chunk[1] + msg[1] + day["requests"]
        audit_parts.append(
            "%.0f MB (%d blobs, epoch %d): %.2f MB/peer/day (%.0f B per audit on the wire, of "
            "which %.0f B TLS and HTTP around the JSON; answer to a chunk share's challenge "
            "%s B, to a message's %s B, Merkle paths in them %.0f B)" % (
                state["bytes"] / 1e6, state["blobs"], epoch,
                per_audit * AUDITS_PER_DAY / 1e6, per_audit,
                (day["wire"] - answers) / day["audits"],
                "%.0f" % (chunk[1] / chunk[0]) if chunk[0] else "-",
                "%.0f" % (msg[1] / msg[0]) if msg[0] else "-",
                (chunk[2] + msg[2]) / (chunk[0] + msg[0]))
            + ("; %d challenge(s) refused first (%s), answered once the peer was told the "
               "commit" % (len(day["errors"]), ", ".join(sorted(set(day["errors"]))))
               if day["errors"] else ""))
    for r in relays.values():
        r.close()

    # the catalog: a metadata snapshot placed on the peers, then published
    meta = Metadata(owner.store, provider, owner.identity)
    meta.snapshot()
    placing += place_all(placer)[0]
    if meta.publish(lambda peer: placer.client(peer.name, peer.endpoint)) != 3:
        raise RuntimeError("the catalog did not reach the three peers")
    blobs = len(list(provider.digests()))

    # 2, 3. restore, alternating with curl
    restores, curls, ratios, lost, limited, fetched = [], [], [], 0, 0, None
    profile = cProfile.Profile() if args.profile else None
    for i in range(args.runs):
        seconds, report, records, refused = restore_once(
            tmp, owner.identity, peers[i % 3], rpc_url,
            profile if i == args.runs - 1 else None)
        if report.epochs_failed or report.messages_lost or report.blobs + len(report.lost) \
                != blobs:
            raise RuntimeError("restore: %s" % "; ".join(report.lines()))
        lost, limited = max(lost, len(report.lost)), max(limited, refused)
        if fetched is None:
            fetched, restored = records, report.bytes
        restores.append(seconds)
        curls.append(curl_baseline(tmp, fetched))
        ratios.append(curls[-1] / restores[-1])
    if profile is not None:
        profile.dump_stats(args.profile)
    shutil.rmtree(os.path.join(tmp, "www"), ignore_errors=True)

    # 4. repair: one peer lost, a spare takes its shares (local copy present, then gone)
    repairs = []
    for n, local in ((3, True), (4, False)):
        spare = PeerNode(os.path.join(tmp, "spare%d" % n), **options)
        nodes.append(spare)
        pair(spare, owner, capacity)
        if not local:
            with owner.store.transaction():
                for d in list(provider.digests()):
                    provider.delete(d)
        started = time.perf_counter()
        out = placer.replace(peers[n - 3].name, "bench")
        _, sent, got = place_all(placer)     # what a rate limit left for later
        seconds = time.perf_counter() - started
        repairs.append("%s: %d shares, %.3f GB sent + %.3f GB fetched per GB stored, %.1f s"
                       % ("local copy" if local else "no local copy", out["blobs"],
                          (out["bytes_sent"] + sent) / state["bytes"],
                          (out["bytes_fetched"] + got) / state["bytes"], seconds))
    provider.close()

    down = sum(fetched)
    speeds = sorted(restored / t / 1e6 for t in restores)
    copies = sorted(down / t / 1e6 for t in curls)
    return ("bench/network: %.2f GB in %d blobs on 3 peers (k=%d, m=%d; peers' rate limit %s; "
            "placed in %.0f s); restore %.1f MB/s (%.1f-%.1f; %.1f s; %.0f MB of records in %d "
            "GETs%s), curl %.1f MB/s (%.1f-%.1f; %.1f s), ratio %.2f (medians of %d, "
            "alternating); audit traffic per peer per day (%d audits a day of %d challenges; "
            "%d audits of each peer measured at each size): %s; repair of one peer: %s" % (
                state["bytes"] / 1e9, blobs, K, M, limit_text(options), placing,
                restored / median(restores) / 1e6, speeds[0], speeds[-1], median(restores),
                down / 1e6, len(fetched),
                "; %d blob(s) LOST, %d GETs refused rate_limited" % (lost, limited)
                if lost or limited else "",
                down / median(curls) / 1e6, copies[0], copies[-1], median(curls),
                median(ratios), args.runs, AUDITS_PER_DAY, SAMPLES, args.audits,
                "; ".join(audit_parts), "; ".join(repairs)))


def limit_text(options):
    rate = options.get("rate", RATE)
    return "none" if rate >= 1e9 else "%g/s, burst %d" % (rate, options.get("burst", BURST))


if __name__ == "__main__":
    main()
