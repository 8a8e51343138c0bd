"""One verification path: the ingest's check, `edgekeep verify`, `edgekeep check-proof` and a
remote Keeper's check give the same verdict, with the same reason, on the same messages."""
import hashlib
import json
import os

import pytest

from agent import message
from agent.identity import Identity
from agent.proto import up_topic
from gateway.anchor import epochs as anchor
from gateway.anchor.epochs import Anchorer
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.chain.reader import ChainReader
from gateway.cli import main as cli
from gateway.ingest.pipeline import Ingest
from gateway.keeper import challenges, proof
from gateway.store import provider
from gateway.store.database import Store
from gateway.wire import merkle
from gateway.wire.protocol import Reject

pytestmark = pytest.mark.integration

PLAINTEXT = b"\x82hpebble/1@"


def seal(ident, nonces, seq):
    return message.seal(ident, nonces, seq, 1790000000 + seq, "t", seq, PLAINTEXT, 0)


def store_raw(store, ident_hex, seq, raw, digest=None):
    store.db.execute("INSERT INTO messages (device, seq, kind, time, count, digest, raw, "
                     "received_at) VALUES (?, ?, 't', 0, 0, ?, ?, 0)",
                     (ident_hex, seq, digest or hashlib.sha256(raw).digest(), raw))


@pytest.fixture
def cases(tmp_path):
    """A store holding one message of each kind a verifier must tell apart, on a live chain:
    name -> (device hex, seq)."""
    data = str(tmp_path / "gw")
    with Anvil(data, block_time=0) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY,
                      os.path.join(data, "chain", "deployment.json"))
        store = Store.open(data)
        dev, stranger, gone = (Identity.create(os.urandom) for _ in range(3))
        registry.register(store, chain, dev.public, "d")
        registry.register(store, chain, gone.public, "revoked later")
        nonces = message.Nonces(os.urandom)
        good = seal(dev, nonces, 1)
        bad_signature = bytearray(seal(dev, nonces, 2))
        bad_signature[-5] ^= 1
        store_raw(store, dev.hex, 1, good)
        store_raw(store, dev.hex, 2, bytes(bad_signature))
        store_raw(store, stranger.hex, 1, seal(stranger, nonces, 1))
        swapped = seal(dev, nonces, 3)   # replaced below by another signed message
        store_raw(store, dev.hex, 3, swapped)
        store_raw(store, gone.hex, 1, seal(gone, nonces, 1))
        Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))
        other = seal(dev, nonces, 3)
        store.db.execute("UPDATE messages SET raw = ? WHERE device = ? AND seq = 3",
                         (other, dev.hex))
        registry.revoke(store, chain, gone.hex)
        store_raw(store, gone.hex, 2, seal(gone, nonces, 2))
        Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))  # after revoking
        store_raw(store, dev.hex, 4, seal(dev, nonces, 4))
        anchor.seal_epoch(store)       # epoch 3: sealed, never anchored
        store_raw(store, dev.hex, 5, seal(dev, nonces, 5))   # not sealed
        yield data, store, chain, anvil.rpc_url, {
            "good": (dev.hex, 1), "bad signature": (dev.hex, 2),
            "unknown device": (stranger.hex, 1), "swapped after anchoring": (dev.hex, 3),
            "sealed, not anchored": (dev.hex, 4), "not sealed": (dev.hex, 5),
            "anchored before its device was revoked": (gone.hex, 1),
            "anchored after its device was revoked": (gone.hex, 2)}


def by_ingest(data, m):
    """The ingest's check (message only: inclusion comes after it stores)."""
    ingest = Ingest(data, "mqtt://127.0.0.1:1", epoch_seconds=3600)
    try:
        ingest.check(up_topic(m["device"], m["kind"]), m["raw"])
        return None
    except Reject as r:
        return ("failed", str(r))


def by_verify(data, rpc, capsys, mid):
    code = cli.main(["verify", "--data-dir", data, "--rpc", rpc, mid])
    out = capsys.readouterr().out
    for line in out.splitlines():
        if line.startswith(("FAILED %s: " % mid, "PENDING %s: " % mid)):
            status, _, reason = line.partition(" %s: " % mid)
            assert code == (1 if status == "FAILED" else 0), out
            return (status.lower(), reason)
    assert code == 0 and "verified 1/1" in out, out
    return ("ok", None)


def by_check_proof(store, chain, rpc, capsys, tmp_path, device, seq):
    path = str(tmp_path / ("%s-%d.json" % (device, seq)))
    proof.dump(proof.build(store, chain, device, seq), path)
    code = cli.main(["check-proof", path, "--rpc", rpc])
    line = capsys.readouterr().out.strip()
    for prefix, status, expected_code in (("proof holds: ", "ok", 0),
                                          ("proof pending: ", "pending", 3),
                                          ("proof does NOT hold: ", "failed", 1)):
        if line.startswith(prefix):
            assert code == expected_code, line
            return (status, line[len(prefix):])
    raise AssertionError(line)


def by_remote_keeper(store, rpc, contracts, m):
    """The check `edgekeep audit --remote` runs on a gateway's answer, after the wire."""
    tree = merkle.levels(store.epoch_leaves(m["epoch"]))
    answer = {"epoch": m["epoch"], "leaf": m["leaf"], "size": len(tree[0]),
              "device": m["device"], "kind": m["kind"], "message": m["raw"],
              "path": merkle.proof_from_levels(tree, m["leaf"]), "chunk": None, "skipped": None}
    wire = json.loads(json.dumps(provider.answer_to_wire(answer)))
    o = challenges.check(challenges.Challenge(0, m["epoch"], m["leaf"], 0),
                         provider.answer_from_wire(wire), ChainReader(rpc, contracts))
    # An audit records a challenge it cannot decide yet as skipped, never as failed.
    return ({"skipped": "pending"}.get(o.outcome, o.outcome),
            None if o.outcome == "ok" else o.detail)


EXPECTED = {"good": "ok", "bad signature": "failed", "unknown device": "failed",
            "swapped after anchoring": "failed", "sealed, not anchored": "pending",
            "not sealed": "pending", "anchored before its device was revoked": "ok",
            "anchored after its device was revoked": "failed"}


def test_every_path_gives_the_same_verdict_and_reason(cases, capsys, tmp_path):
    data, store, chain, rpc, named = cases
    contracts = chain.deployment["contracts"]
    for name, (device, seq) in named.items():
        m = store.message(device, seq)
        verdicts = {"verify": by_verify(data, rpc, capsys, "%s-%d" % (device, seq))}
        if m["epoch"] is not None:
            verdicts["check-proof"] = by_check_proof(store, chain, rpc, capsys, tmp_path,
                                                     device, seq)
            verdicts["remote keeper"] = by_remote_keeper(store, rpc, contracts, m)
        if verdicts["verify"][0] == "ok":   # ok verdicts word their evidence differently
            verdicts = {k: (v[0], None) for k, v in verdicts.items()}
        ingest = by_ingest(data, m)
        if ingest is not None and "revoked" not in name:  # the ingest refuses anything new
            # from a revoked device; what was anchored before still counts
            verdicts["ingest"] = ingest
        assert len(set(verdicts.values())) == 1, (name, verdicts)
        assert verdicts["verify"][0] == EXPECTED[name], (name, verdicts)
    assert by_ingest(data, store.message(*named["good"])) is None


def test_verify_all_reports_young_messages_as_pending_not_failed(cases, capsys):
    data, store, chain, rpc, named = cases
    gone = named["anchored after its device was revoked"][0]
    code = cli.main(["verify", "--data-dir", data, "--rpc", rpc, "--all"])
    out = capsys.readouterr().out
    assert "PENDING %s-5: not sealed into an epoch yet" % named["not sealed"][0] in out
    assert "PENDING %s-4: epoch 3 is sealed but has no root on chain yet" % named["good"][0] in out
    assert "FAILED %s-2: leaf 0 of 1 in epoch 2, anchored in block" % gone in out
    assert "not before the device was revoked in block" in out
    assert "verified 2/8, 2 pending (not anchored yet), 4 FAILED" in out
    assert code == 1
