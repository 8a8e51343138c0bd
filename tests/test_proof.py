"""Portable proofs: built from a gateway's store, checked against the chain alone."""
import hashlib
import json
import os

import pytest

from agent import message
from agent.identity import Identity
from gateway.anchor import epochs as anchor
from gateway.anchor.epochs import Anchorer
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.keeper import proof
from gateway.store.database import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def anchored(tmp_path):
    data = str(tmp_path / "gw")
    with Anvil(data, block_time=0) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
        store = Store.open(data)
        ident = Identity.create(os.urandom)
        registry.register(store, chain, ident.public, "t1")
        nonces = message.Nonces(os.urandom)
        for seq in range(1, 6):
            raw = message.seal(ident, nonces, seq, 1790000000, "t", seq, b"\x82hpebble/1@", 0)
            store.db.execute(
                "INSERT INTO messages (device, seq, kind, time, count, digest, raw, received_at) "
                "VALUES (?, ?, 't', 0, 0, ?, ?, 0)", (ident.hex, seq, hashlib.sha256(raw).digest(), raw))
        Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))
        yield store, chain, anvil.rpc_url, ident


def test_a_proof_holds_against_the_chain_alone(anchored, tmp_path):
    store, chain, rpc, ident = anchored
    p = proof.build(store, chain, ident.hex, 4)
    path = str(tmp_path / "p.json")
    proof.dump(p, path)
    p = json.load(open(path))
    verdict = proof.check(p, proof.reader(p, rpc))
    assert verdict.ok, verdict
    assert "leaf %d of 5 in epoch 1" % p["index"] in verdict.reason


@pytest.mark.parametrize("tamper", ["message", "path", "index", "size"])
def test_a_tampered_proof_fails(anchored, tamper):
    store, chain, rpc, ident = anchored
    p = proof.build(store, chain, ident.hex, 2)
    if tamper == "message":
        raw = bytearray(bytes.fromhex(p["message"]))
        raw[-3] ^= 1
        p["message"] = raw.hex()
    elif tamper == "path":
        p["path"][0] = "00" * 32
    elif tamper == "index":
        p["index"] = (p["index"] + 1) % p["size"]
    else:
        p["size"] += 1
    assert proof.check(p, proof.reader(p, rpc)).status == "failed"
