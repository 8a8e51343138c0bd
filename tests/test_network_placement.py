"""Placing a gateway's blobs on its peers and committing them on chain (gateway/network/
placement.py, commits.py, store/placements.py): real HTTPS peers on loopback
(tests/helpers/network.py), a real local Provider, a real anvil for the commits."""
import hashlib
import logging
import os

import pytest

from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.health import Registry
from gateway.network import protocol
from gateway.network.commits import Committer
from gateway.network.placement import Placer, PlacerLoop
from gateway.store.database import Store
from gateway.store.placements import PLACED, SENDING, Placement
from gateway.store.provider import Provider
from gateway.wire import merkle
from tests.helpers.network import GB, PeerNode, pair
from tests.helpers.wait import wait_for

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
    return {h.slot: peer.server._read(h) for h in peer.store.peers.held_after(owner, -1, 10000)
            if not h.released}


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
    assert p1.store.peers.used(g.name) == 0 and all(
            h.released for h in p1.store.peers.held_after(g.name, -1, 99))
    assert {r.state for r in g.store.placements.of_peer(p1.name)} == {"released"}
    assert placer.release_to(p1.name) == 0


def test_a_blob_deleted_here_is_released_at_its_peers(gateway, nodes):
    """Retention deleted a clip's chunk: its shares do not stay on the peers for ever."""
    g, provider, digests = gateway
    three = peers(nodes, g, 3)
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    placer.queue_new()
    placer.step()
    used = {p.name: p.store.peers.used(g.name) for p in three}
    gone = {r.peer: r.length for r in g.store.placements.of_blob(digests[1])}
    with g.store.transaction():
        provider.delete(digests[1])
    assert placer.forget_deleted() == 1 and placer.forget_deleted() == 0
    assert g.store.placements.get(digests[1]) is None
    assert placer.queue_new() == 0                          # not placed again
    assert placer.release_pending() == 3
    for p in three:
        assert p.store.peers.used(g.name) == used[p.name] - gone[p.name]
    assert {r.state for r in g.store.placements.of_blob(digests[1])} == {"released"}
    assert all(len(holders(g, d)) == 3 for d in digests if d != digests[1])


def test_an_unreachable_peer_waits_then_is_replaced(gateway, nodes):
    g, provider, digests = gateway
    p1, p2, down = peers(nodes, g, 3)
    down.server.stop()                      # it does not answer from now on
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    placer.queue_new()
    stats = placer.step()
    assert stats["placed"] == 12
    [waiting] = g.store.placements.sending()           # one share waits for it, the rest skip it
    assert waiting.peer == down.name and waiting.slot == 0
    assert g.store.peers.get(down.name).unreachable_since is not None
    for d in digests:                       # durable (k placed), not complete
        st = g.store.placements.state(d)
        assert st.placed == 2 and st.offbox.durable_at and not st.offbox.complete_at
    assert placer.survival()["not_offbox_blobs"] == 0

    [spare] = peers(nodes, g, 1)
    out = placer.replace(down.name, "unreachable past its grace")
    assert (out["blobs"], out["shares"], out["left"], out["bytes_fetched"]) == (1, 1, 0, 0)
    assert out["bytes_sent"] == waiting.length
    assert not g.store.placements.sending()
    assert placer.step()["placed"] == 5     # the other blobs' third shares: the next step
    for d in digests:
        assert holders(g, d) == sorted((p1.name, p2.name, spare.name))
    assert placer.release_to(down.name) == 0           # still away: its slot stays 'failed'
    assert [r.state for r in g.store.placements.of_peer(down.name)] == ["failed"]


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


def test_the_placer_loop_places_what_the_provider_gets(gateway, nodes):
    g, provider, digests = gateway
    peers(nodes, g, 3)
    store = Store.connect(g.data_dir)           # the loop's own connection
    registry = Registry()
    loop = PlacerLoop(Placer(store, Provider.open(store), g.identity, k=2, m=3), period=60,
                      health=registry).start()
    try:
        wait_for(lambda: g.store.placements.counts()["complete"] == 6, 15, what="6 blobs placed")
        data = os.urandom(4000)
        provider.put(hashlib.sha256(data).digest(), data)
        loop.notify()                           # not the 60 s period
        wait_for(lambda: g.store.placements.counts()["complete"] == 7, 15, what="the new blob")
        assert registry.snapshot()["placer"]["state"] == "alive"
    finally:
        loop.stop()
        loop.placer.provider.close()
        store.close()
    assert registry.snapshot()["placer"]["state"] == "stopped"


# --- commits on chain ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    with Anvil(tmp_path_factory.mktemp("chain"), block_time=0) as anvil:
        yield Chain(anvil.rpc_url, DEFAULT_DEV_KEY, anvil.chain_dir / "deployment.json")


def registered(chain, identity):
    chain.register_gateway(identity.public, 3, "https://127.0.0.1:1",
                           identity.sign(b"edgekeep-test-registration"))


def root_from_providers(g, providers):
    """The owner's epoch root recomputed from what each provider lists and returns of ours."""
    leaves = []
    for p in sorted(providers, key=lambda p: p.name):
        c = g.client_to(p)
        slots = [s["slot"] for s in c.slots()]
        assert slots == list(range(len(slots)))
        records = [c.get_slot(n) for n in slots]
        leaves.append(protocol.agreement_leaf(p.name, len(records),
                                              merkle.root([protocol.leaf(r) for r in records])))
    return merkle.root(leaves)


def test_commit_is_mined_and_proves_challenges(gateway, nodes, chain):
    g, provider, digests = gateway
    ps = peers(nodes, g, 3)
    placer = Placer(g.store, provider, g.identity, k=2, m=3)
    placer.queue_new()
    placer.step()
    registered(chain, g.identity)
    seen = []
    committer = Committer(g.store, g.identity, chain, on_commit=seen.append)
    owner = g.identity.public

    row = committer.commit_now()
    assert row.status == "mined" and row.epoch == 1 and seen == [1] and row.gas
    on_chain = chain.commit_of(owner, 1)
    assert on_chain["root"] == row.root == root_from_providers(g, ps)
    assert on_chain["agreements"] == 3
    for p in ps:                          # the agreements went with it
        a = chain.agreement_of(owner, bytes.fromhex(p.name))
        assert a["capacity"] == GB and a["since_epoch"] == 1
    # each provider accepted its place in the epoch, and proves a slot into the chain's root
    for p in ps:
        held = p.store.peers.commit(g.name)
        assert (held.epoch, held.count) == (1, 6)
        answer = g.client_to(p).challenge(3)
        assert protocol.check_answer(answer, 3, p.name, on_chain["root"], 1) == "ok"

    assert committer.close(force=True) is None          # nothing changed: no epoch

    # more blobs placed: epoch 2, sent once even across a crash after the send
    data = os.urandom(5000)
    provider.put(hashlib.sha256(data).digest(), data)
    placer.queue_new()
    placer.step()
    assert committer.close(force=True) == 2
    pending = g.store.placements.commit(2)
    tx = chain.send_commit(owner, 2, pending.root, 3, [])     # the send, then the "crash"
    g.store.placements.commit_sent(2, tx)
    chain.wait_receipt(tx, 30)
    nonce = chain.w3.eth.get_transaction_count(chain.address)
    again = Committer(g.store, g.identity, chain)               # the next start
    assert again.step()
    assert chain.w3.eth.get_transaction_count(chain.address) == nonce    # not sent twice
    row = g.store.placements.commit(2)
    assert row.status == "mined" and row.tx_hash == tx
    assert chain.commit_of(owner, 2)["root"] == row.root == root_from_providers(g, ps)
    assert chain.latest_network_epoch(owner) == 2
    for p in ps:
        assert (p.store.peers.commit(g.name).epoch, p.store.peers.commit(g.name).count) == (2, 7)

    # the running gateway's thread: connects, closes and commits by itself
    more = os.urandom(2000)
    provider.put(hashlib.sha256(more).digest(), more)
    placer.queue_new()
    placer.step()
    store = Store.connect(g.data_dir)
    thread = Committer(store, g.identity, lambda: chain, period=0.2, health=Registry()).start()
    try:
        wait_for(lambda: chain.latest_network_epoch(owner) == 3, 20, what="epoch 3 mined")
        wait_for(lambda: all(p.store.peers.commit(g.name).epoch == 3 for p in ps), 10,
                 what="providers told of epoch 3")
    finally:
        thread.stop()
        store.close()
    assert chain.commit_of(owner, 3)["root"] == root_from_providers(g, ps)
