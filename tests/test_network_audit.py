"""The Keeper across peers (gateway/network/audit.py) and `edgekeep audit --remote PEER`
(gateway/cli/network_audit.py): real HTTPS peers on loopback (tests/helpers/network.py), a
real local Provider, placement and commits on a real anvil, audits anchored on StorageAudit."""
import contextlib
import hashlib
import os
import subprocess
import sys
import time

import pytest

from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.health import Registry
from gateway.keeper.records import check_audit
from gateway.network import protocol
from gateway.network.audit import RemoteKeeper, RemoteKeeperLoop
from gateway.network.commits import Committer
from gateway.network.placement import Placer
from gateway.network.server import PeerServer
from gateway.store.database import Store
from gateway.store.placements import FAILED, PLACED, RELEASED
from gateway.store.provider import Provider
from tests.helpers.network import PeerNode, pair
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOBS = 6
SAMPLES = 4


class Net:
    """A gateway `g` (local Provider with BLOBS blobs, anvil under its data dir) whose blobs are
    placed 2 of 3 on peers p1..p3 and committed as network epoch 1; `spare`, a fourth peer
    paired after, holds nothing yet. `keeper` is its RemoteKeeper (grace 1 s)."""

    def __init__(self, tmp_path, stack):
        self.nodes = []
        self.g = self.node(tmp_path / "gw")
        anvil = stack.enter_context(Anvil(self.g.data_dir, block_time=0))
        self.rpc = anvil.rpc_url
        self.chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, anvil.chain_dir / "deployment.json")
        self.provider = Provider.open(self.g.store)
        stack.callback(self.provider.close)
        for i in range(BLOBS):
            data = os.urandom(2000 + 700 * i)
            self.provider.put(hashlib.sha256(data).digest(), data)
        self.peers = []
        for i in range(3):
            p = self.node(tmp_path / ("p%d" % i))
            pair(p, self.g)
            self.peers.append(p)
        self.placer = Placer(self.g.store, self.provider, self.g.identity, k=2, m=3)
        self.placer.queue_new()
        assert self.placer.step()["placed"] == 3 * BLOBS
        self.spare = self.node(tmp_path / "spare")
        pair(self.spare, self.g)
        self.chain.register_gateway(self.g.identity.public, 3, "",
                                    self.g.identity.sign(b"edgekeep-test-registration"))
        self.committer = Committer(self.g.store, self.g.identity, self.chain)
        assert self.committer.commit_now().epoch == 1
        self.keeper = RemoteKeeper(self.g.store, self.g.identity, self.chain, None, self.placer,
                                   grace=1, samples=SAMPLES)

    def node(self, path):
        n = PeerNode(path)
        self.nodes.append(n)
        return n

    def close(self):
        for n in self.nodes:
            n.close()

    def cli(self, peer, *more):
        """`edgekeep audit --remote PEER` in a process of its own: (exit status, output). A
        later --rpc in `more` wins."""
        r = subprocess.run([sys.executable, "-m", "gateway", "audit", "--remote", peer,
                            "--data-dir", self.g.data_dir, "--rpc", self.rpc, *more],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def states(self, peer):
        return {p.state for p in self.g.store.placements.of_peer(peer.name)}


@pytest.fixture
def net(tmp_path):
    with contextlib.ExitStack() as stack:
        n = Net(tmp_path, stack)
        stack.callback(n.close)
        yield n


def lie_about_every_record(peer, owner):
    """The provider rewrites every record it holds for owner, and their leaves with them (a
    provider that lies consistently: its server's own check of the bytes still passes)."""
    for h in peer.store.peers.held_after(owner, -1, 1000):
        path = peer.server.packs.path(h.pack)
        with open(path, "r+b") as f:
            f.seek(h.offset + h.length - 1)
            b = f.read(1)[0]
            f.seek(h.offset + h.length - 1)
            f.write(bytes([b ^ 0x5A]))
            f.seek(h.offset)
            leaf = hashlib.sha256(f.read(h.length)).digest()
        peer.store.db.execute("UPDATE held SET leaf = ? WHERE owner = ? AND slot = ?",
                              (leaf, owner, h.slot))


def check_on_chain(net, audit, provider, count):
    """The anchored audit checked with the chain alone, as `verify --audit` would: the slots
    drawn again from the seed hash StorageAudit read itself, every record's hash made again
    from its fields and proven into the root on chain."""
    k = net.keeper
    row = k.anchor(audit)
    assert row["status"] == "anchored", row
    on_chain = net.chain.audit_of(audit)
    records = net.g.store.audits.records(audit)
    assert (on_chain["challenges"], on_chain["failed"]) == (len(records), row["failed"])
    assert [r.leaf for r in records] == protocol.draw_slots(on_chain["seed_hash"], provider,
                                                            count, SAMPLES)
    checked, problems = check_audit(net.chain, audit, records)
    assert problems == [] and checked == [(r.idx, None) for r in records]
    return records


def test_audits_pass_then_a_lying_peer_fails_is_replaced_and_its_audit_anchored(net):
    g, k = net.g, net.keeper
    p1, b, p3 = net.peers

    audits = k.audit_all()                      # the spare is in no commit yet: not audited
    assert len(audits) == 3
    for audit, p in zip(audits, sorted(net.peers, key=lambda p: p.name)):
        row = g.store.audits.get(audit)
        assert (row["mode"], row["challenges"], row["failed"], row["ok"]) == ("remote", SAMPLES,
                                                                              0, 1)
        records = check_on_chain(net, audit, p.name, BLOBS)
        for r in records:                       # each proven digest is the record p holds
            assert r.outcome == "ok" and r.epoch == 1
            assert r.digest == p.store.peers.held(g.name, r.leaf).leaf
        peer = g.store.peers.get(p.name)
        assert peer.status == "active" and peer.last_audit and peer.audit_failures == 0

    lie_about_every_record(b, g.name)
    code, out = net.cli(b.short, "--samples", "3")
    assert code == 1, out
    assert "FAILED  slot" in out and "wrong_bytes" in out and "verdict: FAILED" in out

    audit = k.audit(b.name)
    row = g.store.audits.get(audit)
    assert (row["challenges"], row["failed"], row["repaired"], row["ok"]) == (SAMPLES, SAMPLES,
                                                                              BLOBS, 1)
    peer = g.store.peers.get(b.name)
    assert peer.status == "failed" and peer.audit_failures == SAMPLES
    assert "wrong_bytes" in peer.last_error
    assert net.states(b) == {FAILED}
    assert net.states(net.spare) == {PLACED}    # B's shares rebuilt and placed on the spare
    assert len(g.store.placements.of_peer(net.spare.name)) == BLOBS
    records = check_on_chain(net, audit, b.name, BLOBS)
    assert {r.outcome for r in records} == {"failed"}
    assert all("wrong_bytes" in r.detail and r.digest is None for r in records)
    r = subprocess.run([sys.executable, "-m", "gateway", "verify", "--data-dir", g.data_dir,
                        "--rpc", net.rpc, "--audit", str(audit)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PROVEN record") == SAMPLES and "failed: peer %s: wrong_bytes" % b.short \
        in r.stdout
    assert "%d record(s) proven on chain, %d failed challenge(s)" % (SAMPLES, SAMPLES) in r.stdout
    # a record altered in the store after it was anchored no longer proves
    g.store.db.execute("UPDATE audit_records SET outcome = 'ok' WHERE audit = ? AND idx = 0",
                       (audit,))
    checked, problems = check_audit(net.chain, audit, g.store.audits.records(audit))
    assert checked[0] == (0, "its fields do not give its hash") and problems
    g.store.db.execute("UPDATE audit_records SET outcome = 'failed' WHERE audit = ? AND idx = 0",
                       (audit,))

    # the next commit has the spare's agreement; p1, down at the time, does not hear of it
    port = p1.server.port
    p1.server.stop()
    assert net.committer.commit_now().epoch == 2
    p1.server = PeerServer(p1.data_dir, p1.identity, "127.0.0.1", port).start()
    assert p1.store.peers.commit(g.name).epoch == 1
    audit = k.audit(net.spare.name)
    assert g.store.audits.get(audit)["failed"] == 0
    assert {r.epoch for r in check_on_chain(net, audit, net.spare.name, BLOBS)} == {2}
    code, out = net.cli(net.spare.name[:10])
    assert code == 0, out
    assert out.count("OK      slot") == 16 and "verdict: OK (16 challenge(s): 16 ok" in out
    assert "proven into the root on chain" in out

    # B answers hello: it is told to drop what was placed elsewhere (audit_all does); p1
    # answers from epoch 1: it is told of epoch 2 and challenged again, and passes
    audits = k.audit_all()
    assert len(audits) == 3                     # p1, p3 and the spare; B only released
    assert net.states(b) == {RELEASED}
    assert p1.store.peers.commit(g.name).epoch == 2
    [mine] = [a for a in audits if g.store.audits.records(a)[0].detail.startswith(
        "peer %s:" % p1.short)]
    assert {(r.outcome, r.epoch) for r in g.store.audits.records(mine)} == {("ok", 2)}
    assert g.store.peers.get(p1.name).status == "active"
    assert b.store.peers.used(g.name) == 0
    code, out = net.cli(b.name)     # it refused epoch 2 (its tree is not the committed one)
    assert code == 1 and "old_root" in out, out

    code, out = net.cli("ffff")
    assert code == 2 and "no peer ffff here" in out
    code, out = net.cli(p1.short, "--rpc", "http://127.0.0.1:9")      # the chain down
    assert code == 2 and "the chain does not answer" in out, out


def test_an_unreachable_peer_is_failed_only_after_its_grace_and_dropped_when_back(net):
    g, k = net.g, net.keeper
    c = net.peers[2]
    port = c.server.port
    c.server.stop()

    audit = k.audit(c.name)
    row = g.store.audits.get(audit)
    assert (row["failed"], row["repaired"], row["ok"]) == (SAMPLES, 0, 0)
    assert "unreachable since" in row["alarm"]
    assert all(r.detail.startswith("peer %s: unreachable" % c.short)
               for r in g.store.audits.records(audit))
    peer = g.store.peers.get(c.name)
    assert peer.status == "active" and peer.unreachable_since and peer.audit_failures == 0
    assert net.states(c) == {PLACED}            # not replaced within the grace
    check_on_chain(net, audit, c.name, BLOBS)   # the failed audit is on chain too

    code, out = net.cli(c.short)
    assert code == 2 and "verdict: UNREACHABLE" in out, out

    time.sleep(1.1)                             # past the grace (1 s)
    audit = k.audit(c.name)
    assert g.store.audits.get(audit)["repaired"] == BLOBS
    assert g.store.peers.get(c.name).status == "failed"
    assert net.states(c) == {FAILED}
    assert net.states(net.spare) == {PLACED}
    assert len(g.store.placements.of_peer(net.spare.name)) == BLOBS

    c.server = PeerServer(c.data_dir, c.identity, "127.0.0.1", port).start()   # back
    assert {h.released is None for h in c.store.peers.held_after(g.name, -1, 99)} == {True}
    k.audit_all()
    assert net.states(c) == {RELEASED}
    held = c.store.peers.held_after(g.name, -1, 99)
    assert len(held) == BLOBS and all(h.released for h in held)
    assert c.store.peers.used(g.name) == 0
    assert g.store.peers.get(c.name).unreachable_since is None
    code, out = net.cli(c.name)                 # every slot released by its owner
    assert code == 0, out
    assert "SKIPPED slot" in out and "verdict: OK, nothing held" in out

    # the running gateway's loop, on a connection of its own: audits and anchors by itself
    store = Store.connect(g.data_dir)
    registry = Registry()
    before = g.store.audits.last()["id"]
    loop = RemoteKeeperLoop(RemoteKeeper(store, g.identity, net.chain, None, net.placer,
                                         samples=2), period=0.2, health=registry).start()
    try:
        def anchored():
            rows = [g.store.audits.get(a) for a in range(before + 1, before + 3)]
            return all(r and r["status"] == "anchored" for r in rows)
        wait_for(anchored, 20, what="two audits anchored by the loop")   # p1 and p2
        assert registry.snapshot()["network-keeper"]["state"] == "alive"
    finally:
        loop.stop()
        store.close()
    assert registry.snapshot()["network-keeper"]["state"] == "stopped"
