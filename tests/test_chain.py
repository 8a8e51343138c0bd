"""DeviceRegistry and ProofAnchor on a real anvil, through gateway.chain."""
import hashlib
import json
import os
import signal
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.chain.client import DEFAULT_DEV_KEY, Chain, ChainError
from gateway.chain.node import (
    Anvil,
    AnvilError,
    ensure_running,
    rpc_call,
    running_url,
    stop_running,
)
from gateway.localhost import free_port
from tests.helpers.vectors import load as load_vectors

pytestmark = pytest.mark.integration

# anvil's well-known dev accounts 1..3 (account 0 is DEFAULT_DEV_KEY, the deployer).
STRANGER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OWNER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
HELPER_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"


# --- RFC 9162 section 2.1 reference, written independently of the contract -----------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    """Largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_hash(leaves):
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def audit_path(m, leaves):
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return audit_path(m, leaves[:k]) + [tree_hash(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [tree_hash(leaves[:k])]


def digests(n):
    return [hashlib.sha256(b"reading %d" % i).digest() for i in range(n)]


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with Anvil(tmp_path_factory.mktemp("chain"), block_time=0) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def chain(node):
    return Chain(node.rpc_url, DEFAULT_DEV_KEY, node.chain_dir / "deployment.json")


@pytest.fixture(scope="module")
def stranger(node, chain):
    return Chain(node.rpc_url, STRANGER_KEY, chain.deployment_file)


@pytest.fixture(scope="module")
def owner(node, chain):
    return Chain(node.rpc_url, OWNER_KEY, chain.deployment_file)


def new_device_key():
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pubkey = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(pubkey).digest()[:8], pubkey


def reverts_with(reason, fn, *args):
    with pytest.raises(ChainError) as e:
        fn(*args)
    assert e.value.reason == reason, str(e.value)


# --- deployment ------------------------------------------------------------------------------

def test_second_client_reuses_the_recorded_deployment(chain, stranger):
    assert stranger.deployment == chain.deployment
    assert json.loads(chain.deployment_file.read_text())["chain_id"] == chain.chain_id


def test_deployment_without_code_on_this_chain_is_replaced(node, tmp_path):
    stale = tmp_path / "deployment.json"
    stale.write_text(json.dumps({"chain_id": 31337, "deploy_block": 0, "contracts": {
        "DeviceRegistry": "0x" + "11" * 20, "ProofAnchor": "0x" + "22" * 20}}))
    fresh = Chain(node.rpc_url, DEFAULT_DEV_KEY, stale)
    recorded = json.loads(stale.read_text())["contracts"]
    assert recorded == fresh.deployment["contracts"]
    assert all(fresh.w3.eth.get_code(a) for a in recorded.values())


# --- DeviceRegistry --------------------------------------------------------------------------

def test_register_device_records_key_owner_and_event(chain, owner):
    id8, pubkey = new_device_key()
    receipt = chain.register_device(id8, pubkey, owner.address)
    device = chain.device(id8)
    assert device["pubkey"] == pubkey and device["owner"] == owner.address and device["active"]
    assert device["registered_at"] == chain.w3.eth.get_block(receipt["block_number"])["timestamp"]
    [event] = chain.registry.events.DeviceRegistered().get_logs(
        from_block=receipt["block_number"], to_block=receipt["block_number"])
    assert event["args"]["id"] == id8 and event["args"]["owner"] == owner.address
    assert event["args"]["pubkey"] == pubkey


def test_unknown_device_is_none(chain):
    assert chain.device(b"\x00" * 8) is None


def test_id_must_be_sha256_prefix_of_pubkey(chain):
    id8, pubkey = new_device_key()
    other_id, _ = new_device_key()
    reverts_with("IdMismatch", chain.register_device, other_id, pubkey, chain.address)
    assert chain.device(other_id) is None and chain.device(id8) is None


def test_pubkey_must_be_uncompressed_sec1(chain):
    not_sec1 = b"\x05" + os.urandom(64)
    reverts_with("BadPublicKey", chain.register_device, hashlib.sha256(not_sec1).digest()[:8],
                 not_sec1, chain.address)
    with pytest.raises(ValueError):
        chain.register_device(b"\x00" * 8, b"\x02" + os.urandom(32), chain.address)


def test_only_registrars_register(chain, stranger, node):
    id8, pubkey = new_device_key()
    reverts_with("NotRegistrar", stranger.register_device, id8, pubkey, stranger.address)
    helper = Chain(node.rpc_url, HELPER_KEY, chain.deployment_file)
    reverts_with("NotAdmin", helper.add_registrar, helper.address)
    chain.add_registrar(helper.address)
    helper.register_device(id8, pubkey, stranger.address)
    assert chain.device(id8)["owner"] == stranger.address


def test_duplicate_registration_rejected_even_after_revoke(chain, owner):
    id8, pubkey = new_device_key()
    chain.register_device(id8, pubkey, owner.address)
    reverts_with("AlreadyRegistered", chain.register_device, id8, pubkey, chain.address)
    chain.revoke_device(id8)
    reverts_with("AlreadyRegistered", chain.register_device, id8, pubkey, chain.address)
    assert chain.device(id8)["owner"] == owner.address and not chain.device(id8)["active"]


def test_owner_revokes_own_device(chain, owner):
    id8, pubkey = new_device_key()
    chain.register_device(id8, pubkey, owner.address)
    receipt = owner.revoke_device(id8)
    assert chain.device(id8)["active"] is False
    [event] = chain.registry.events.DeviceRevoked().get_logs(
        from_block=receipt["block_number"], to_block=receipt["block_number"])
    assert event["args"]["id"] == id8
    reverts_with("AlreadyRevoked", owner.revoke_device, id8)


def test_stranger_cannot_revoke(chain, owner, stranger):
    id8, pubkey = new_device_key()
    chain.register_device(id8, pubkey, owner.address)
    reverts_with("NotOwnerOrRegistrar", stranger.revoke_device, id8)
    assert chain.device(id8)["active"] is True
    reverts_with("UnknownDevice", chain.revoke_device, b"\x00" * 8)


# --- ProofAnchor: anchoring rules ------------------------------------------------------------

def anchor(chain, epoch, root, count):
    return chain.wait_receipt(chain.send_anchor(epoch, root, count), timeout=30)


def test_anchor_records_root_and_emits_event(chain):
    root = os.urandom(32)
    receipt = anchor(chain, 100, root, 42)
    assert receipt["status"] == 1
    block = chain.w3.eth.get_block(receipt["block_number"])
    assert chain.anchor_of(100) == {"root": root, "count": 42, "block_number": receipt["block_number"],
                                    "timestamp": block["timestamp"]}
    [event] = chain.proof_anchor.events.Anchored().get_logs(
        from_block=receipt["block_number"], to_block=receipt["block_number"])
    assert event["args"] == {"epoch": 100, "root": root, "count": 42}
    assert chain.anchor_of(101) is None


def test_same_root_again_is_a_harmless_no_op(chain):
    root = os.urandom(32)
    first = anchor(chain, 200, root, 7)
    retry = anchor(chain, 200, root, 7)
    assert retry["status"] == 1 and retry["block_number"] > first["block_number"]
    assert chain.anchor_of(200)["block_number"] == first["block_number"]
    assert not chain.proof_anchor.events.Anchored().get_logs(
        from_block=retry["block_number"], to_block=retry["block_number"])


def test_conflicting_anchor_for_an_epoch_reverts(chain):
    root = os.urandom(32)
    anchor(chain, 300, root, 7)
    reverts_with("EpochConflict", chain.send_anchor, 300, os.urandom(32), 7)
    reverts_with("EpochConflict", chain.send_anchor, 300, root, 8)
    reverts_with("ZeroRoot", chain.send_anchor, 301, bytes(32), 1)
    assert chain.anchor_of(300)["root"] == root


def test_only_anchorers_anchor(chain, stranger, node):
    reverts_with("NotAnchorer", stranger.send_anchor, 400, os.urandom(32), 1)
    reverts_with("NotAdmin", stranger.add_anchorer, stranger.address)
    assert chain.anchor_of(400) is None
    helper = Chain(node.rpc_url, HELPER_KEY, chain.deployment_file)
    chain.add_anchorer(helper.address)
    assert anchor(helper, 400, b"\x01" * 32, 1)["status"] == 1


def test_anchor_gas_is_flat_in_the_leaf_count(chain, record_property):
    gas = {}
    for epoch, count in enumerate([1, 17, 65_536, 2**32 - 1], start=500):
        gas[count] = anchor(chain, epoch, os.urandom(32), count)["gas_used"]
    record_property("anchor_gas_by_count", gas)
    print("anchor gas by leaf count:", gas)
    # Only calldata bytes differ (16 gas per non-zero byte).
    assert max(gas.values()) - min(gas.values()) <= 200
    # 21000 tx + two new slots (2 x 22100) + cold reads + one log: one slot pair, nothing more.
    assert max(gas.values()) < 75_000


# --- ProofAnchor: RFC 9162 inclusion proofs --------------------------------------------------

def test_verify_inclusion_accepts_every_leaf_of_trees_1_to_17(chain):
    for size in range(1, 18):
        leaves = digests(size)
        root = tree_hash(leaves)
        for index in range(size):
            proof = audit_path(index, leaves)
            assert chain.verify_inclusion(root, leaves[index], index, size, proof), (size, index)


def test_verify_inclusion_rejects_forged_proofs(chain):
    for size in range(1, 18):
        leaves = digests(size)
        root = tree_hash(leaves)
        for index in range(size):
            proof = audit_path(index, leaves)
            forged_leaf = hashlib.sha256(leaves[index]).digest()
            assert not chain.verify_inclusion(root, forged_leaf, index, size, proof)
            other_index = (index + 1) % size if size > 1 else size
            assert not chain.verify_inclusion(root, leaves[index], other_index, size, proof)
            assert not chain.verify_inclusion(root, leaves[index], index, size, proof + [root])
            if proof:
                assert not chain.verify_inclusion(root, leaves[index], index, size, proof[:-1])


def test_verify_anchored_checks_epoch_root_and_size(chain):
    leaves = digests(11)
    anchor(chain, 600, tree_hash(leaves), 11)
    proof = audit_path(4, leaves)
    assert chain.verify_anchored(600, leaves[4], 4, 11, proof)
    assert not chain.verify_anchored(600, leaves[5], 4, 11, proof)
    assert not chain.verify_anchored(600, leaves[4], 4, 12, proof)
    assert not chain.verify_anchored(601, leaves[4], 4, 11, proof)


def test_shared_vectors_match_reference_and_contract(chain):
    """tests/vectors/merkle_onchain.json is the contract the gateway's Merkle code must meet."""
    vectors = load_vectors("merkle_onchain.json")
    assert vectors["trees"], "no vectors"
    for tree in vectors["trees"]:
        leaves = [bytes.fromhex(x) for x in tree["leaves"]]
        root = bytes.fromhex(tree["root"])
        assert tree_hash(leaves) == root
        for index, proof_hex in enumerate(tree["proofs"]):
            proof = [bytes.fromhex(p) for p in proof_hex]
            assert proof == audit_path(index, leaves)
            assert chain.verify_inclusion(root, leaves[index], index, len(leaves), proof)


# --- the node: interval mining and persistence ----------------------------------------------

def test_anchor_with_one_second_blocks(tmp_path):
    with Anvil(tmp_path, block_time=1) as node:
        chain = Chain(node.rpc_url, DEFAULT_DEV_KEY, tmp_path / "deployment.json")
        roots = [os.urandom(32) for _ in range(4)]
        sent = [chain.send_anchor(epoch, root, 1) for epoch, root in enumerate(roots)]
        receipts = [chain.wait_receipt(tx, timeout=30) for tx in sent]
        assert [r["status"] for r in receipts] == [1, 1, 1, 1]
        for epoch, (root, receipt) in enumerate(zip(roots, receipts)):
            assert chain.anchor_of(epoch)["root"] == root
            assert chain.block_is_mined(receipt["block_number"], receipt["block_hash"])
            assert chain.block_hash(receipt["block_number"]) == receipt["block_hash"]
        assert not chain.block_is_mined(receipts[0]["block_number"], "0x" + "00" * 32)
        assert not chain.block_is_mined(chain.latest_block()["number"] + 1000, receipts[0]["block_hash"])
        assert chain.block_hash(chain.latest_block()["number"] + 1000) is None


def test_transaction_lost_in_a_node_restart_does_not_wedge_later_sends(tmp_path):
    port = free_port()
    with Anvil(tmp_path, port=port, block_time=0) as node:
        chain = Chain(node.rpc_url, DEFAULT_DEV_KEY, tmp_path / "deployment.json")
        rpc_call(node.rpc_url, "evm_setAutomine", [False])
        chain.send_anchor(1, os.urandom(32), 1)  # still pending when the node stops
    with Anvil(tmp_path, port=port, block_time=0):
        root = os.urandom(32)
        assert chain.wait_receipt(chain.send_anchor(2, root, 1), timeout=10)["status"] == 1
        assert chain.anchor_of(2)["root"] == root and chain.anchor_of(1) is None


def record_anchor_and_device(chain):
    id8, pubkey = new_device_key()
    chain.register_device(id8, pubkey, chain.address)
    receipt = anchor(chain, 1, os.urandom(32), 3)
    return {"device": (id8, chain.device(id8)), "anchor": chain.anchor_of(1), "receipt": receipt}


def assert_still_recorded(chain, before):
    id8, device = before["device"]
    assert chain.device(id8) == device
    assert chain.anchor_of(1) == before["anchor"]
    assert chain.block_is_mined(before["receipt"]["block_number"], before["receipt"]["block_hash"])


def test_restart_from_persisted_state_keeps_anchors_and_devices(tmp_path):
    deployment = tmp_path / "deployment.json"
    with Anvil(tmp_path, block_time=0) as node:
        chain = Chain(node.rpc_url, DEFAULT_DEV_KEY, deployment)
        before = record_anchor_and_device(chain)
    assert not (tmp_path / "chain" / "anvil.json").exists()
    with Anvil(tmp_path, block_time=0) as node:
        chain = Chain(node.rpc_url, DEFAULT_DEV_KEY, deployment)
        assert chain.deployment["deploy_block"] == json.loads(deployment.read_text())["deploy_block"]
        assert_still_recorded(chain, before)


def test_crash_loses_nothing_already_dumped(tmp_path):
    deployment = tmp_path / "deployment.json"
    node = Anvil(tmp_path, block_time=0).start()
    try:
        chain = Chain(node.rpc_url, DEFAULT_DEV_KEY, deployment)
        before = record_anchor_and_device(chain)
        wait_for_dump(node.state_file, before["receipt"]["block_number"])
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
    finally:
        node.stop()
    with Anvil(tmp_path, block_time=0) as node:
        assert_still_recorded(Chain(node.rpc_url, DEFAULT_DEV_KEY, deployment), before)


def wait_for_dump(state_file, block_number, timeout=15):
    """Poll until the interval dump (every 1 s) contains block_number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(state_file.read_text())["best_block_number"] >= block_number:
                return
        except (FileNotFoundError, ValueError):
            pass  # not written yet, or caught mid-write
        time.sleep(0.1)
    raise AssertionError("anvil did not dump block %d to %s" % (block_number, state_file))


def test_ensure_running_reuses_or_restarts_from_state(tmp_path):
    deployment = tmp_path / "deployment.json"
    try:
        url = ensure_running(tmp_path, block_time=0)
        assert ensure_running(tmp_path) == url == running_url(tmp_path)
        info = json.loads((tmp_path / "chain" / "anvil.json").read_text())
        assert info["url"] == url
        before = record_anchor_and_device(Chain(url, DEFAULT_DEV_KEY, deployment))
        assert stop_running(tmp_path)
        assert running_url(tmp_path) is None
        url = ensure_running(tmp_path, block_time=0)
        assert_still_recorded(Chain(url, DEFAULT_DEV_KEY, deployment), before)
        with pytest.raises(AnvilError, match="already runs"):
            Anvil(tmp_path).start()
    finally:
        stop_running(tmp_path)
    assert running_url(tmp_path) is None


def test_start_failure_reports_the_log_tail(tmp_path):
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "anvil-state.json").write_text('{"block": {"num')  # torn write
    node = Anvil(tmp_path, block_time=0)
    with pytest.raises(AnvilError, match="anvil exited") as e:
        node.start()
    assert "anvil-state.json" in str(e.value) and node.log_tail() in str(e.value)


def test_busy_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(AnvilError, match="already in use"):
            Anvil(tmp_path, port=busy.getsockname()[1], block_time=0).start()


def test_many_devices_register_in_a_few_blocks_not_one_each(tmp_path):
    """`devices import` and the demo send every registration before waiting for any: 30
    devices on a chain mining a block a second take a few blocks, and a second run (some
    on chain already) only adds them locally."""
    from gateway.chain import registry
    from gateway.store.database import Store
    with Anvil(tmp_path / "chain", block_time=1) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, anvil.chain_dir / "deployment.json")
        store = Store.open(str(tmp_path / "gw"))
        keys = [new_device_key()[1] for _ in range(30)]
        first = chain.w3.eth.block_number
        ids = registry.register_many(store, chain, [(k, "t%d" % i, "tracker")
                                                    for i, k in enumerate(keys)])
        assert chain.w3.eth.block_number - first <= 4
        assert [chain.device(bytes.fromhex(d))["pubkey"] for d in ids] == keys
        assert [store.device(d)["name"] for d in ids] == ["t%d" % i for i in range(30)]
        nonce = chain.w3.eth.get_transaction_count(chain.address)
        other = Store.open(str(tmp_path / "gw2"))
        assert registry.register_many(other, chain, [(keys[0], "again", "tracker")]) == ids[:1]
        assert chain.w3.eth.get_transaction_count(chain.address) == nonce
        assert other.device(ids[0])["name"] == "again"
        with pytest.raises(registry.RegistryError, match="uncompressed"):
            registry.register_many(store, chain, [(b"\x02" + keys[0][1:33], None, "tracker")])
