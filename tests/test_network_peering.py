"""The peer transport, pairing and the provider side (docs/network.md): gateways
(tests/helpers/network.py) over real HTTPS on loopback, real SQLite. Every refusal of the
spec's table is refused with its status, counted (peer_refused_<reason>), and the server
serves on after it."""
import hashlib
import json
import os
import time

import pytest

from gateway.cli import main as cli
from gateway.network import pairing, protocol
from gateway.network.client import PeerClient, PeerError
from gateway.network.server import PeerServer
from gateway.wire import merkle
from tests.helpers.network import PeerNode, pair

pytestmark = pytest.mark.integration


def record(i, size=100, k=2, m=3):
    """A share record: share i % m of a made-up sealed blob numbered i (48 + 50 bytes)."""
    body = bytes([i % 256]) * -(-size // k)
    return protocol.make_record(k, m, i % m, size, hashlib.sha256(b"blob %d" % i).digest(),
                                body)


def nonce():
    return os.urandom(16).hex()


@pytest.fixture
def nodes(tmp_path):
    made = []

    def node(name, **options):
        n = PeerNode(tmp_path / name, **options)
        made.append(n)
        return n
    yield node
    for n in made:
        n.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """a and b paired (a holds up to 1 GB of b's and b of a's), c paired with nobody."""
    root = tmp_path_factory.mktemp("net")
    a, b, c = (PeerNode(root / n) for n in "abc")
    pair(a, b)
    yield a, b, c
    for n in (a, b, c):
        n.close()


def serves_on(server, via):
    """server still answers a paired peer (via) at once."""
    assert via.client_to(server).hello()["name"] == server.name


def refused(server, via, reason, status, call):
    """call() (a client method) is refused by server with reason and status, counted once;
    the server serves on."""
    before = server.refused(reason)
    with pytest.raises(PeerError) as e:
        call()
    assert (e.value.reason, e.value.status) == (reason, status), e.value
    assert e.value.detail
    assert server.refused(reason) == before + 1
    serves_on(server, via)
    return e.value


def raw_refused(server, via, client, reason, status, method, path, body=b"", headers=None):
    """The same for one raw request (headers: the EK-* ones as given)."""
    before = server.refused(reason)
    got, head, data = client.raw(method, path, body, headers)
    answer = json.loads(data)
    assert (got, answer["error"]) == (status, reason), answer
    assert answer["detail"]
    assert server.refused(reason) == before + 1
    serves_on(server, via)
    return answer


# -- pairing ---------------------------------------------------------------------------------

def test_pairing_records_both_sides(nodes):
    a, b = nodes("a"), nodes("b")
    row = pair(a, b, capacity=5 * 10 ** 9, back=3 * 10 ** 9)
    # b's view: a holds up to 5 GB of ours, we hold up to 3 GB of a's
    assert (row.name, row.endpoint, row.capacity, row.quota, row.status) == (
        a.name, a.url, 5 * 10 ** 9, 3 * 10 ** 9, "active")
    assert row.term_end - row.paired_at == pytest.approx(365 * 86400)
    mine = a.store.peers.get(b.name)   # a's view, written by its server's /v1/pair
    assert (mine.endpoint, mine.capacity, mine.quota) == (b.url, 3 * 10 ** 9, 5 * 10 ** 9)
    assert a.store.peers.invitations()[0].used_by == b.name
    # each can call the other now
    assert b.client_to(a).hello() == {"name": a.name, "quota": 5 * 10 ** 9, "used": 0,
                                      "slots": 0}
    assert a.client_to(b).hello()["quota"] == 3 * 10 ** 9
    # a restored gateway's peers come from its catalog; a known one is left as it is
    catalog = [{"name": b.name, "endpoint": "https://elsewhere:1"},
               {"name": "ab" * 32, "endpoint": "https://c.example:8443", "capacity": 7,
                "quota": 8, "term_end": 123}]
    with a.store.transaction():
        assert a.store.peers.restore(catalog, now=100) == 1
    assert a.store.peers.get(b.name).endpoint == b.url
    assert a.store.peers.get("ab" * 32)[1:6] == ("https://c.example:8443", 7, 8, 100, 123)


def test_cli_invite_add_list_remove(nodes, capsys):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    # a invites b
    assert cli.main(["peer", "invite", "--data-dir", a.data_dir, "--endpoint", a.url,
                     "--capacity", "20GB", "--expires", "24h"]) == 0
    invitation = capsys.readouterr().out.strip()
    assert invitation.startswith("ekinv1.")
    assert cli.main(["peer", "add", invitation, "--data-dir", b.data_dir, "--endpoint", b.url,
                     "--capacity", "512MB"]) == 0
    out = capsys.readouterr().out
    assert "paired with %s at %s: it holds up to 20.0 GB of ours, we hold up to 512.0 MB" % (
        a.short, a.url) in out
    # c invites a: a is paired both ways
    assert cli.main(["peer", "invite", "--data-dir", c.data_dir, "--endpoint", c.url,
                     "--capacity", "1GiB", "--expires", "1h"]) == 0
    assert cli.main(["peer", "add", capsys.readouterr().out.strip(), "--data-dir", a.data_dir,
                     "--endpoint", a.url, "--capacity", "2GB"]) == 0
    capsys.readouterr()
    b.client_to(a).put_slot(0, record(0))
    assert cli.main(["peer", "list", "--data-dir", a.data_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PEER", "ENDPOINT", "STATUS", "REACHABLE", "PLACED", "HELD",
                                "LAST", "AUDIT", "FAILURES"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows[b.short][1:4] == [b.url, "active", "yes"]
    assert rows[b.short][6:8] == ["98", "B"]          # held for b
    assert rows[c.short][1:4] == [c.url, "active", "yes"]
    assert "2 peer(s)" in lines[3]
    # what two peers give with the default 2 of 3: the loss of this gateway, not of a peer too
    assert "blobs survive the loss of this gateway but not of a peer" in lines[4]
    assert "pair 1 more peer" in lines[4]
    # the invitation is good once: a second add is refused by a
    with pytest.raises(SystemExit) as e:
        cli.main(["peer", "add", invitation, "--data-dir", c.data_dir, "--endpoint", c.url,
                  "--capacity", "1GB"])
    assert "bad_invitation" in str(e.value) and "fix: ask" in str(e.value)
    # remove: b's requests are refused from now on
    assert cli.main(["peer", "remove", b.short[:8], "--data-dir", a.data_dir]) == 0
    assert "removed %s" % b.short in capsys.readouterr().out
    with pytest.raises(PeerError) as e:
        b.client_to(a).hello()
    assert e.value.reason == "unknown_peer"


def test_cli_errors_say_what_to_do(nodes, capsys):
    a = nodes("a")
    with pytest.raises(SystemExit) as e:
        cli.main(["peer", "invite", "--data-dir", a.data_dir, "--capacity", "1GB"])
    assert "fix: pass --endpoint" in str(e.value)
    with pytest.raises(SystemExit) as e:
        cli.main(["peer", "add", "ekinv1.nonsense.x", "--data-dir", a.data_dir, "--endpoint",
                  a.url, "--capacity", "1GB"])
    assert "error: " in str(e.value) and "fix: ask" in str(e.value)
    with pytest.raises(SystemExit) as e:
        cli.main(["peer", "remove", "ffff", "--data-dir", a.data_dir])
    assert "fix: `edgekeep peer list`" in str(e.value)
    with pytest.raises(SystemExit):   # argparse: not a size
        cli.main(["peer", "invite", "--data-dir", a.data_dir, "--endpoint", a.url,
                  "--capacity", "lots"])
    assert "not a size" in capsys.readouterr().err


# -- the provider side -----------------------------------------------------------------------

def test_put_get_list_release_challenge(nodes):
    a, b = nodes("a"), nodes("b")
    pair(a, b)
    to_a = b.client_to(a)
    recs = [record(i) for i in range(5)]
    for i, r in enumerate(recs):
        to_a.put_slot(i, r)
    to_a.put_slot(2, recs[2])                     # the same record again: idempotent
    assert [to_a.get_slot(i) for i in range(5)] == recs
    assert to_a.get_slot(5) is None
    listed = list(to_a.slots(limit=2))            # three pages
    assert [s["slot"] for s in listed] == [0, 1, 2, 3, 4]
    assert listed[1] == {"slot": 1, "digest": protocol.parse_record(recs[1]).sealed,
                         "index": 1, "size": len(recs[1]), "leaf": protocol.leaf(recs[1]),
                         "released": False}
    assert to_a.hello() == {"name": a.name, "quota": 10 ** 9, "used": 5 * 98, "slots": 5}

    # the owner commits its agreement: its root over the 5 slots, the agreement's leaf 1 of
    # 2 in its epoch tree (the other agreement made up)
    leaves = [protocol.leaf(r) for r in recs]
    root = merkle.root(leaves)
    epoch_leaves = [protocol.agreement_leaf("00" * 32, 7, b"\x01" * 32),
                    protocol.agreement_leaf(a.name, 5, root)]
    owner_root = merkle.root(epoch_leaves)
    to_a.commit(3, 5, root, 1, 2, merkle.inclusion_proof(epoch_leaves, 1))

    # release slot 3: its bytes are gone, its leaf and the signed DELETE stay
    to_a.release(3)
    to_a.release(3)                               # again: the first release stays
    assert to_a.get_slot(3) is None
    assert [(s["slot"], s["released"]) for s in to_a.slots()] == [
        (0, False), (1, False), (2, False), (3, True), (4, False)]   # its leaf stays listed
    assert to_a.hello()["used"] == 4 * 98
    with pytest.raises(PeerError) as e:           # a released slot is not filled again
        to_a.put_slot(3, recs[3])
    assert e.value.reason == "slot_taken"

    for slot in range(5):
        answer = to_a.challenge(slot)
        assert (answer["slot"], answer["count"], answer["root"]) == (slot, 5, root)
        assert answer["commit"] == {"epoch": 3, "index": 1, "size": 2,
                                    "path": merkle.inclusion_proof(epoch_leaves, 1)}
        assert merkle.verify_inclusion(leaves[slot], slot, 5, answer["path"], root)
        if slot == 3:
            assert answer["record"] is None
            assert answer["release"]["EK-From"] == b.name
            assert protocol.check_answer(answer, 3, a.name, owner_root, 3, b.name) == "released"
        else:
            assert answer["record"] == recs[slot] and answer["release"] is None
            assert protocol.check_answer(answer, slot, a.name, owner_root, 3, b.name) == "ok"
    with pytest.raises(PeerError) as e:           # past the commit's count
        to_a.challenge(5)
    assert (e.value.status, e.value.reason) == (404, "not_found")

    # the catalog: newest kept
    assert to_a.get_catalog() is None
    to_a.put_catalog(b"sealed catalog 1")
    to_a.put_catalog(b"sealed catalog 2")
    assert to_a.get_catalog() == b"sealed catalog 2"

    # what a holds is b's alone: a's own view of b holds nothing of a's
    assert a.client_to(b).hello()["used"] == 0
    # and it survives a restart of a's server (packs and rows on disk)
    a.server.stop()
    a2 = PeerNode(a.data_dir)
    try:
        assert PeerClient(b.identity, a.name, a2.url).get_slot(4) == recs[4]
    finally:
        a2.close()


def test_challenge_before_any_commit(nodes):
    a, b = nodes("a"), nodes("b")
    pair(a, b)
    with pytest.raises(PeerError) as e:
        b.client_to(a).challenge(0)
    assert (e.value.status, e.value.reason) == (404, "no_commit")
    assert "commit" in e.value.detail


# -- every refusal ---------------------------------------------------------------------------

def test_unpaired_key(net):
    a, b, c = net
    refused(a, b, "unknown_peer", 401, c.client_to(a).hello)


def test_expired_invitation(net):
    a, b, c = net
    text = pairing.invite(a.store, a.identity, a.url, 1000, 60, now=time.time() - 3600)
    with pytest.raises(protocol.Refused) as e:    # refused before any call
        pairing.add(c.store, c.identity, text, c.url, 1000)
    assert e.value.reason == "expired_invitation"
    token = protocol.parse_invitation(text, 0).token   # and by the inviter, if sent anyway
    to_a = PeerClient(c.identity, a.name, a.url)
    refused(a, b, "expired_invitation", 403, lambda: to_a.pair(token, c.url, 1000))
    refused(a, b, "bad_invitation", 403, lambda: to_a.pair(os.urandom(16), c.url, 1000))
    assert a.store.peers.get(c.name) is None


def test_used_invitation(net, tmp_path):
    a, b, c = net
    text = pairing.invite(a.store, a.identity, a.url, 1000, 60)
    with PeerNode(tmp_path / "d") as d:
        pairing.add(d.store, d.identity, text, d.url, 1000)
        before = a.refused("bad_invitation")
        with pytest.raises(PeerError) as e:
            pairing.add(c.store, c.identity, text, c.url, 1000)
        assert (e.value.reason, e.value.status) == ("bad_invitation", 403)
        assert a.refused("bad_invitation") == before + 1
        assert a.store.peers.get(c.name) is None
        serves_on(a, d)


def test_forged_signature(net):
    a, b, c = net
    to_a = b.client_to(a)
    headers = to_a.sign("PUT", "/v1/slots/0", record(1))
    raw_refused(a, b, to_a, "forged", 401, "PUT", "/v1/slots/0", record(2), headers)
    headers = to_a.sign("GET", "/v1/hello")
    headers["EK-From"] = c.name                   # another's name on b's signature
    raw_refused(a, b, to_a, "forged", 401, "GET", "/v1/hello", b"", headers)


def test_wrong_to(net):
    a, b, c = net
    headers = protocol.sign_request(b.identity, c.name, "GET", "/v1/hello", b"",
                                    int(time.time()), nonce())
    raw_refused(a, b, b.client_to(a), "wrong_peer", 401, "GET", "/v1/hello", b"", headers)


def test_stale_time(net):
    a, b, c = net
    for off in (-400, 400):
        headers = protocol.sign_request(b.identity, a.name, "GET", "/v1/hello", b"",
                                        int(time.time()) + off, nonce())
        raw_refused(a, b, b.client_to(a), "stale", 401, "GET", "/v1/hello", b"", headers)


def test_malformed(net):
    a, b, c = net
    to_a = b.client_to(a)
    raw_refused(a, b, to_a, "malformed", 400, "GET", "/v1/hello", b"", {"X-Nothing": "1"})
    refused(a, b, "malformed", 400, lambda: to_a.call("POST", "/v1/commit", b"not json"))


def test_replayed_request(net):
    a, b, c = net
    to_a = b.client_to(a)
    headers = to_a.sign("GET", "/v1/hello")
    status, _, data = to_a.raw("GET", "/v1/hello", b"", headers)
    assert status == 200 and json.loads(data)["name"] == a.name
    raw_refused(a, b, to_a, "replayed", 409, "GET", "/v1/hello", b"", headers)


def test_too_large(net):
    a, b, c = net
    to_a = b.client_to(a)
    refused(a, b, "too_large", 413, lambda: to_a.put_slot(10 ** 6, b"\0" * (8 << 20 | 1)))
    refused(a, b, "too_large", 413, lambda: to_a.put_catalog(b"\0" * ((1 << 20) + 1)))


def test_bad_share(net):
    a, b, c = net
    to_a = b.client_to(a)
    refused(a, b, "bad_share", 409, lambda: to_a.put_slot(0, b"EKN1 not a record"))
    refused(a, b, "bad_share", 409, lambda: to_a.put_slot(0, record(0)[:-1]))


def test_slot_gap_and_taken(net):
    a, b, c = net
    to_a = b.client_to(a)
    first = to_a.hello()["slots"]
    e = refused(a, b, "slot_gap", 409, lambda: to_a.put_slot(first + 5, record(0)))
    assert e.next == first and "next slot here is %d" % first in e.detail
    to_a.put_slot(first, record(first))
    to_a.put_slot(first, record(first))           # the same again: fine
    refused(a, b, "slot_taken", 409, lambda: to_a.put_slot(first, record(first + 1)))
    assert to_a.get_slot(first) == record(first)


def test_over_quota(nodes):
    a, b = nodes("a"), nodes("b")
    pair(a, b, capacity=250)                      # a holds up to 250 bytes of b's
    to_a = b.client_to(a)
    to_a.put_slot(0, record(0))
    to_a.put_slot(1, record(1))                   # 196 bytes held
    e = refused(a, b, "over_quota", 507, lambda: to_a.put_slot(2, record(2)))
    assert "holds 196 bytes of yours of the 250 granted" in e.detail
    assert to_a.hello()["used"] == 196
    to_a.release(0)                               # a release makes room
    to_a.put_slot(2, record(2))


def test_quota_default_caps_every_peer(nodes):
    a, b = nodes("a", quota_default=100), nodes("b")
    pair(a, b)
    to_a = b.client_to(a)
    assert to_a.hello()["quota"] == 100
    to_a.put_slot(0, record(0))
    refused(a, b, "over_quota", 507, lambda: to_a.put_slot(1, record(1)))


def test_root_mismatch(net):
    a, b, c = net
    to_a = b.client_to(a)
    n = to_a.hello()["slots"]
    if n == 0:
        to_a.put_slot(0, record(0))
        n = 1
    refused(a, b, "root_mismatch", 409, lambda: to_a.commit(1, n, b"\0" * 32, 0, 1, []))
    e = refused(a, b, "root_mismatch", 409,
                lambda: to_a.commit(1, n + 3, b"\0" * 32, 0, 1, []))
    assert "holds %d" % n in e.detail


def test_rate_limited(nodes):
    a, b, c = nodes("a", rate=2, burst=4), nodes("b"), nodes("c")
    pair(a, b)
    pair(a, c)
    to_a = b.client_to(a)
    before = a.refused("rate_limited")
    with pytest.raises(PeerError) as e:
        for _ in range(20):
            to_a.hello()
    assert (e.value.reason, e.value.status) == ("rate_limited", 429)
    assert e.value.retry_after >= 1
    assert a.refused("rate_limited") == before + 1
    serves_on(a, c)                               # the bucket is b's alone
    time.sleep(e.value.retry_after)
    assert to_a.hello()["name"] == a.name         # and it fills again


def test_default_rate_allows_a_burst(nodes):
    a, b = nodes("a"), nodes("b")
    pair(a, b)
    to_a = b.client_to(a)
    for _ in range(199):                          # 200 at once, the pairing's call included
        to_a.hello()
    assert a.refused("rate_limited") == 0


def test_client_refuses_a_server_with_another_key(net):
    a, b, c = net
    wrong = PeerClient(b.identity, c.name, a.url)   # expects c, reaches a
    with pytest.raises(PeerError) as e:
        wrong.hello()
    assert e.value.reason == "wrong_key"
    assert "is not %s" % c.short in str(e.value) and a.name in str(e.value)
    serves_on(a, b)


def test_trust_on_first_use(net):
    a, b, c = net
    tofu = PeerClient(b.identity, None, a.url)
    assert tofu.hello()["name"] == a.name
    assert tofu.name == tofu.seen == a.name


def test_unreachable(net, tmp_path):
    from gateway.localhost import free_port
    a, b, c = net
    with pytest.raises(PeerError) as e:
        PeerClient(b.identity, a.name, "https://127.0.0.1:%d" % free_port(), 2).hello()
    assert e.value.reason == "unreachable" and e.value.status is None


def test_a_kept_connection_the_peer_dropped_is_made_again(nodes):
    """An idle kept connection the server has closed (its keep-alive is 30 s; an hourly audit
    finds it dead, ssl.SSLEOFError) costs a reconnect, not an unreachable peer."""
    a, b = nodes("a"), nodes("b")
    pair(a, b)
    to_a = b.client_to(a)
    assert to_a.hello()["name"] == a.name
    port = a.server.port
    a.server.stop()                               # every connection to it is gone
    a.server = PeerServer(a.data_dir, a.identity, "127.0.0.1", port).start()
    assert to_a.hello()["name"] == a.name
    to_a.used -= 3600                             # idle for an hour: not even tried
    first = to_a.conn
    assert to_a.hello()["name"] == a.name and to_a.conn is not first


def test_a_patient_client_waits_out_the_rate_limit(nodes):
    a, b = nodes("a", rate=2, burst=4), nodes("b")
    pair(a, b)
    patient = PeerClient(b.identity, a.name, a.url, patience=3)
    started = time.monotonic()
    for _ in range(6):
        assert patient.hello()["name"] == a.name
    assert time.monotonic() - started >= 0.5      # it waited, and was not refused
    assert a.refused("rate_limited") >= 1
    patient.close()
