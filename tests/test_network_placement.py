"""Placing a gateway's blobs on its peers and committing them on chain (gateway/network/
placement.py, commits.py, store/placements.py): real HTTPS peers on loopback
(tests/helpers/network.py), a real local Provider, a real anvil for the commits."""
import hashlib
import logging
import os

import pytest

from gateway.network import protocol
from gateway.network.placement import Placer
from gateway.store.placements import PLACED, SENDING, Placement
from gateway.store.provider import Provider
from tests.helpers.network import GB, PeerNode, pair

pytestmark = pytest.mark.integration

MARKER = b"EDGEKEEP-PLAINTEXT-MARKER-0123456789"


@pytest.fixture
def nodes(tmp_path):
    made = []

    def make(name, **options):
        node = PeerNode(tmp_path / name, **options)
        made.append(node)
        return node
    yield make
    for node in made:
        node.close()


@pytest.fixture
def gateway(nodes):
    """The gateway whose blobs are placed: a node (store, identity) with its local Provider
    holding six blobs, one with MARKER in it; (node, provider, digests)."""
    g = nodes("gw")
    provider = Provider.open(g.store)
    digests = []
    for i in range(6):
        data = os.urandom(3000 + 977 * i)
        if i == 2:
            data = data[:100] + MARKER * 40 + data[100:]
        digest = hashlib.sha256(data).digest()
        provider.put(digest, data)
        digests.append(digest)
    yield g, provider, digests
    provider.close()


def peers(nodes, g, n, capacity=GB, **options):
    """n new nodes that each hold up to `capacity` bytes of g's (options: their PeerServer's)."""
    out = []
    for _ in range(n):
        p = nodes("peer-%s" % os.urandom(3).hex(), **options)
        pair(p, g, capacity)
        out.append(p)
    return out


def holders(g, digest):
    return sorted(p.peer for p in g.store.placements.of_blob(digest) if p.state == PLACED)


def held_records(peer, owner):
    """{slot: record} of what `peer` holds of owner's, read from its own store and packs."""
    return {h.slot: peer.server._read(h) for h in peer.store.peers.held_after(owner, -1, 10000)}


def scan(data_dir, needle):
    """Files under data_dir holding needle."""
    found = []
    for root, _, files in os.walk(data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if needle in fh.read():
                    found.append(os.path.join(root, f))
    return found


# --- the rows ------------------------------------------------------------------------------------

def test_placement_rows_slots_leaves_and_bytes(tmp_path):
    from gateway.store.database import Store
    store = Store.open(str(tmp_path / "s"))
    try:
        pl = store.placements
        d1, d2 = b"\x01" * 32, b"\x02" * 32
        assert pl.queue(d1, b"\xaa" * 32, 1028, 2, 3, 1.0) and not pl.queue(d1, b"x", 1, 2, 3, 2.0)
        pl.queue(d2, b"\xbb" * 32, 2028, 2, 3, 2.0)
        peer = "ab" * 32
        assert pl.next_slot(peer) == 0 and pl.leaves(peer) == []
        pl.add(Placement(peer, 0, d1, 0, b"L0" * 16, 562, PLACED, 5.0))
        pl.add(Placement(peer, 1, d2, 0, b"L1" * 16, 1062, SENDING, None))
        pl.add(Placement(peer, 2, d1, 1, b"L2" * 16, 562, PLACED, 6.0))
        assert pl.next_slot(peer) == 3
        assert pl.leaves(peer) == [b"L0" * 16]      # up to the first slot still being sent
        assert pl.bytes_on(peer) == 562 * 2 + 1062
        assert [p.slot for p in pl.sending()] == [1]
        # the blob with fewer shares comes first
        assert [o.digest for o in pl.incomplete(10)] == [d2, d1]
        s = pl.refresh(d1, 7.0)
        assert s.placed == 2 and s.offbox.durable_at == 7.0 and s.offbox.complete_at is None
        assert pl.not_offbox() == (1, 2028)
        pl.forget(peer, 1)
        assert pl.leaves(peer) == [b"L0" * 16]      # a gap: slot 1 is gone, slot 2 not counted
        assert sorted(pl.mark_failed(peer)) == [d1]
        assert pl.refresh(d1, 8.0).offbox.durable_at is None
        assert pl.bytes_on(peer) == 562 * 2
    finally:
        store.close()


# --- placing -------------------------------------------------------------------------------------

def test_one_share_per_peer_durable_complete_and_sealed(gateway, nodes):
    g, provider, digests = gateway
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    [p1] = peers(nodes, g, 1)

    s = placer.survival()
    assert s["peers"] == 1 and s["survives"] is None
    assert s["statement"] == ("with 1 peer, blobs are not restorable without this gateway: pair "
                              "at least 2 (k) peers; 3 (m) to also survive a peer's loss")
    assert s["not_offbox_blobs"] == 6

    assert placer.queue_new() == 6 and placer.queue_new() == 0
    stats = placer.step()
    assert stats["placed"] == 6 and stats["left"] == 12     # one share each: p1 takes no other
    assert all(holders(g, d) == [p1.name] for d in digests)
    assert placer.survival()["not_offbox_blobs"] == 6      # one share is not k

    p2, p3 = peers(nodes, g, 2)
    stats = placer.step()
    assert stats["placed"] == 12 and stats["left"] == 0
    names = sorted(p.name for p in (p1, p2, p3))
    for d in digests:
        rows = g.store.placements.of_blob(d)
        assert sorted(r.peer for r in rows) == names         # one share on each peer
        assert sorted(r.idx for r in rows) == [0, 1, 2]
        st = g.store.placements.state(d)
        assert st.placed == 3 and st.offbox.durable_at and st.offbox.complete_at
        assert st.offbox.durable_at <= st.offbox.complete_at
    s = placer.survival()
    assert s["survives"] == "the loss of this gateway and 1 peer"
    assert (s["not_offbox_blobs"], s["not_offbox_bytes"], s["complete"]) == (0, 0, 6)

    for p in (p1, p2, p3):
        held = held_records(p, g.name)
        mine = g.store.placements.of_peer(p.name)
        assert sorted(held) == [r.slot for r in mine] == list(range(len(mine)))
        for r in mine:                      # what it holds is what we think we placed
            assert protocol.leaf(held[r.slot]) == r.leaf
            rec = protocol.parse_record(held[r.slot])
            assert rec.sealed == g.store.placements.get(r.digest).sealed
        assert g.store.placements.bytes_on(p.name) == p.store.peers.used(g.name)
        assert scan(p.data_dir, MARKER[:16]) == []     # sealed: no plaintext on peers
    assert scan(g.data_dir, MARKER[:16])                # (it is there, in the local Provider)
    # any k shares open to the blob
    d = digests[2]
    off = g.store.placements.get(d)
    recs = {}
    for r in g.store.placements.of_blob(d)[1:]:
        node = next(p for p in (p1, p2, p3) if p.name == r.peer)
        recs[r.idx] = protocol.parse_record(held_records(node, g.name)[r.slot]).body
    from gateway.store import erasure
    sealed = erasure.decode(recs, off.size, 2, 3)
    assert MARKER in g.identity.open(sealed)

    assert placer.step()["placed"] == 0                  # nothing left to do


def test_a_full_peer_refuses_and_the_share_goes_to_another(gateway, nodes, caplog):
    g, provider, digests = gateway
    p1, p2 = peers(nodes, g, 2)
    [tight] = peers(nodes, g, 1, quota_default=5000)      # takes one share, then refuses
    [spare] = peers(nodes, g, 1, capacity=GB - 10 ** 6)   # chosen last: least free
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    placer.queue_new()
    with caplog.at_level(logging.WARNING, "edgekeep.network"):
        stats = placer.step()
    assert stats["left"] == 0 and stats["placed"] == 18
    assert g.store.peers.get(tight.name).status == "full"
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    assert "granted" in next(r.getMessage() for r in caplog.records if "is full" in r.getMessage())
    assert tight.refused("over_quota") == 1
    on_tight = g.store.placements.of_peer(tight.name)
    assert on_tight and tight.store.peers.used(g.name) == sum(r.length for r in on_tight)
    for d in digests:
        hs = holders(g, d)
        assert len(hs) == 3 and len(set(hs)) == 3
    assert sum(spare.name in holders(g, d) for d in digests) == 6 - len(on_tight)


def test_replace_a_lost_peer_then_release_to_it(gateway, nodes):
    g, provider, digests = gateway
    p1, p2, p3 = peers(nodes, g, 3)
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    placer.queue_new()
    placer.step()
    [spare] = peers(nodes, g, 1)
    provider.delete(digests[0])             # its local copy lost too: rebuilt from 2 peers
    lost = {r.slot: r for r in g.store.placements.of_peer(p1.name)}
    moved = sum(r.length for r in lost.values())

    out = placer.replace(p1.name, "failed an audit")
    assert (out["blobs"], out["shares"], out["left"]) == (6, 6, 0)
    assert out["bytes_sent"] == moved
    assert out["bytes_fetched"] >= 2 * (g.store.placements.get(digests[0]).size // 2)
    assert out["bytes"] == out["bytes_sent"] + out["bytes_fetched"]
    assert g.store.peers.get(p1.name).status == "failed"
    assert {r.state for r in g.store.placements.of_peer(p1.name)} == {"failed"}
    for d in digests:
        assert holders(g, d) == sorted((p2.name, p3.name, spare.name))
        assert g.store.placements.state(d).offbox.complete_at
    assert placer.survival()["peers"] == 3

    assert p1.store.peers.used(g.name) == moved
    assert placer.release_to(p1.name) == 6
    assert p1.store.peers.used(g.name) == 0 and p1.store.peers.held_after(g.name, -1, 99) == []
    assert {r.state for r in g.store.placements.of_peer(p1.name)} == {"released"}
    assert placer.release_to(p1.name) == 0


class Crash(Exception):
    pass


class Crashing:
    """A client that dies (like the process) around its first PUT: before it, or after it
    went through."""

    def __init__(self, real, after):
        self.real, self.after, self.crashed = real, after, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def put_slot(self, n, record):
        if not self.crashed:
            self.crashed = True
            if self.after:
                self.real.put_slot(n, record)
            raise Crash("power cut")
        return self.real.put_slot(n, record)


@pytest.mark.parametrize("after", [False, True], ids=["before-put", "after-put"])
def test_a_crash_between_sending_and_placed_resumes_with_the_same_slot(gateway, nodes, after):
    g, provider, digests = gateway
    ps = peers(nodes, g, 3)
    real = {p.name: g.client_to(p) for p in ps}
    crashing = {name: Crashing(c, after) for name, c in real.items()}
    placer = Placer(g.store, provider, g.identity, k=2, m=3, clients=crashing)
    placer.queue_new()
    with pytest.raises(Crash):
        placer.step()
    [row] = g.store.placements.sending()
    assert row.slot == 0 and holders(g, row.digest) == []
    node = next(p for p in ps if p.name == row.peer)
    assert sorted(held_records(node, g.name)) == ([0] if after else [])

    again = Placer(g.store, provider, g.identity, k=2, m=3, clients=real)   # the next start
    stats = again.step()
    assert stats["left"] == 0 and not g.store.placements.sending()
    resent = next(r for r in g.store.placements.of_peer(row.peer) if r.slot == 0)
    assert (resent.digest, resent.idx, resent.leaf, resent.state) == (row.digest, row.idx,
                                                                      row.leaf, PLACED)
    assert protocol.leaf(held_records(node, g.name)[0]) == row.leaf
    for d in digests:
        assert len(set(holders(g, d))) == 3
    assert all(p.refused("slot_gap") == p.refused("slot_taken") == 0 for p in ps)
