"""StorageNetwork on a real anvil, through gateway.chain: identities, commits, agreements."""
import json
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.chain.client import DEFAULT_DEV_KEY, Chain, ChainError
from gateway.chain.node import Anvil
from gateway.chain.reader import ChainReader

pytestmark = pytest.mark.integration

# anvil's well-known dev accounts 1 and 2 (account 0 is DEFAULT_DEV_KEY, the deployer).
STRANGER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OWNER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"

PROVIDER, KEEPER = 1, 2
ENDPOINT = "https://a.example:8443"


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


def reverts_with(reason, fn, *args):
    with pytest.raises(ChainError) as e:
        fn(*args)
    assert e.value.reason == reason, str(e.value)


def statement(chain):
    """What the identity signs for this test: chain id, contract, account. (The contract only
    emits the signature; the statement's encoding is the off-chain protocol's.)"""
    return (b"edgekeep-test-registration" + chain.chain_id.to_bytes(8, "big")
            + bytes.fromhex(chain.storage_network.address[2:]) + bytes.fromhex(chain.address[2:]))


def new_identity():
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def registered(chain, roles=PROVIDER | KEEPER, endpoint=ENDPOINT):
    """A fresh identity registered from `chain`'s account; (identity32, receipt)."""
    key, identity = new_identity()
    return identity, chain.register_gateway(identity, roles, endpoint, key.sign(statement(chain)))


def commit(chain, owner32, epoch, root, agreements=1, changed=()):
    return chain.wait_receipt(chain.send_commit(owner32, epoch, root, agreements, list(changed)),
                              timeout=30)


def events(contract_event, receipt):
    return contract_event().get_logs(from_block=receipt["block_number"],
                                     to_block=receipt["block_number"])


# --- deployment ------------------------------------------------------------------------------

def test_deployment_without_storage_network_gets_it_added(node, chain, tmp_path):
    old = dict(chain.deployment)
    old["contracts"] = {name: address for name, address in chain.deployment["contracts"].items()
                        if name != "StorageNetwork"}
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(old))
    upgraded = Chain(node.rpc_url, DEFAULT_DEV_KEY, path)
    recorded = json.loads(path.read_text())
    assert recorded == upgraded.deployment
    assert set(recorded["contracts"]) == set(chain.deployment["contracts"])
    for name, address in old["contracts"].items():
        assert recorded["contracts"][name] == address
    assert recorded["contracts"]["StorageNetwork"] != chain.deployment["contracts"]["StorageNetwork"]
    assert upgraded.w3.eth.get_code(recorded["contracts"]["StorageNetwork"])
    assert recorded["deploy_block"] == old["deploy_block"]
    assert upgraded.latest_network_epoch(os.urandom(32)) == 0


def test_reader_on_contracts_that_predate_storage_network(node, chain):
    """A proof file written before StorageNetwork names three contracts: it still reads."""
    old = {name: address for name, address in chain.deployment["contracts"].items()
           if name != "StorageNetwork"}
    reader = ChainReader(node.rpc_url, old)
    assert reader.anchor_of(10**9) is None
    with pytest.raises(LookupError):
        reader.gateway_of(bytes(32))
    with pytest.raises(ValueError):
        ChainReader(node.rpc_url, {"StorageNetwork": chain.storage_network.address})


# --- identities ------------------------------------------------------------------------------

def test_register_binds_identity_to_account_and_emits_signature(chain, owner):
    key, identity = new_identity()
    signature = key.sign(statement(owner))
    receipt = owner.register_gateway(identity, PROVIDER, ENDPOINT, signature)
    timestamp = chain.w3.eth.get_block(receipt["block_number"])["timestamp"]
    assert chain.gateway_of(identity) == {"account": owner.address, "roles": PROVIDER,
                                          "endpoint": ENDPOINT, "registered_at": timestamp}
    [event] = events(chain.storage_network.events.GatewayRegistered, receipt)
    assert event["args"] == {"identity": identity, "account": owner.address, "roles": PROVIDER,
                             "endpoint": ENDPOINT, "signature": signature}
    # anyone checks the signature off chain, with the identity as the key
    Ed25519PublicKey.from_public_bytes(identity).verify(event["args"]["signature"],
                                                       statement(owner))
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(identity).verify(signature, statement(chain))


def test_owner_updates_roles_and_endpoint_others_cannot(chain, owner, stranger):
    key, identity = new_identity()
    first = owner.register_gateway(identity, PROVIDER, ENDPOINT, key.sign(statement(owner)))
    registered_at = chain.gateway_of(identity)["registered_at"]
    chain.w3.provider.make_request("evm_increaseTime", [100])
    update = owner.register_gateway(identity, PROVIDER | KEEPER, "https://b.example:9443",
                                    key.sign(statement(owner)))
    assert update["block_number"] > first["block_number"]
    assert chain.gateway_of(identity) == {"account": owner.address, "roles": PROVIDER | KEEPER,
                                          "endpoint": "https://b.example:9443",
                                          "registered_at": registered_at}
    # the identity's signature does not help another account: the first binding holds
    reverts_with("NotIdentityOwner", stranger.register_gateway, identity, KEEPER,
                 "https://evil.example:8443", key.sign(statement(stranger)))
    assert chain.gateway_of(identity)["account"] == owner.address


def test_register_checks_roles_and_lengths(chain):
    key, identity = new_identity()
    reverts_with("UnknownRoles", chain.register_gateway, identity, 4, ENDPOINT,
                 key.sign(statement(chain)))
    assert chain.gateway_of(identity) is None
    with pytest.raises(ValueError):
        chain.register_gateway(identity[:31], PROVIDER, ENDPOINT, key.sign(statement(chain)))
    with pytest.raises(ValueError):
        chain.register_gateway(identity, PROVIDER, ENDPOINT, b"\x00" * 63)
    with pytest.raises(ValueError):
        chain.gateway_of(identity.hex())
    # roles 0: still bound to its account, offering nothing
    assert chain.register_gateway(identity, 0, "", key.sign(statement(chain)))["status"] == 1
    assert chain.gateway_of(identity)["roles"] == 0


# --- commits ---------------------------------------------------------------------------------

def test_commits_in_order_record_root_and_emit_event(chain, owner):
    identity, _ = registered(owner)
    assert owner.latest_network_epoch(identity) == 0 and owner.commit_of(identity, 1) is None
    roots = [os.urandom(32) for _ in range(3)]
    for epoch, root in enumerate(roots, start=1):
        receipt = commit(owner, identity, epoch, root, agreements=epoch + 1)
        assert receipt["status"] == 1
        block = chain.w3.eth.get_block(receipt["block_number"])
        assert chain.commit_of(identity, epoch) == {
            "root": root, "agreements": epoch + 1, "block_number": receipt["block_number"],
            "timestamp": block["timestamp"]}
        assert chain.latest_network_epoch(identity) == epoch
        [event] = events(chain.storage_network.events.Committed, receipt)
        assert event["args"] == {"owner": identity, "epoch": epoch, "root": root,
                                 "agreements": epoch + 1}
    assert chain.commit_of(identity, 4) is None


def test_resend_of_a_committed_epoch_is_a_no_op(chain, owner):
    identity, _ = registered(owner)
    root = os.urandom(32)
    provider = os.urandom(32)
    first = commit(owner, identity, 1, root, 1, [(provider, 10**9, 2_000_000_000)])
    retry = commit(owner, identity, 1, root, 1, [(provider, 10**9, 2_000_000_000)])
    assert retry["status"] == 1 and retry["block_number"] > first["block_number"]
    assert chain.commit_of(identity, 1)["block_number"] == first["block_number"]
    assert not events(chain.storage_network.events.Committed, retry)
    assert not events(chain.storage_network.events.AgreementRecorded, retry)
    # also once the next epoch is in
    commit(owner, identity, 2, os.urandom(32))
    assert commit(owner, identity, 1, root, 1)["status"] == 1
    assert chain.latest_network_epoch(identity) == 2


def test_out_of_order_and_conflicting_epochs_revert(chain, owner):
    identity, _ = registered(owner)
    reverts_with("EpochOutOfOrder", owner.send_commit, identity, 0, os.urandom(32), 1, [])
    reverts_with("EpochOutOfOrder", owner.send_commit, identity, 2, os.urandom(32), 1, [])
    root = os.urandom(32)
    commit(owner, identity, 1, root, 3)
    reverts_with("EpochOutOfOrder", owner.send_commit, identity, 3, os.urandom(32), 1, [])
    reverts_with("EpochConflict", owner.send_commit, identity, 1, os.urandom(32), 3, [])
    reverts_with("EpochConflict", owner.send_commit, identity, 1, root, 4, [])
    reverts_with("ZeroRoot", owner.send_commit, identity, 2, bytes(32), 1, [])
    assert chain.commit_of(identity, 1)["root"] == root
    assert chain.latest_network_epoch(identity) == 1
    with pytest.raises(ChainError) as e:
        owner.send_commit(identity, 5, os.urandom(32), 1, [])
    assert "EpochOutOfOrder(0x%s, 5, 2)" % identity.hex() in str(e.value)


def test_only_the_identity_account_commits(chain, owner, stranger):
    identity, _ = registered(owner)
    reverts_with("NotIdentityOwner", stranger.send_commit, identity, 1, os.urandom(32), 1, [])
    reverts_with("NotIdentityOwner", chain.send_commit, os.urandom(32), 1, os.urandom(32), 1, [])
    assert chain.latest_network_epoch(identity) == 0
    with pytest.raises(ValueError):
        owner.send_commit(identity, 1, os.urandom(31), 1, [])
    with pytest.raises(ValueError):
        owner.send_commit(identity, 1, os.urandom(32), 1, [(os.urandom(31), 1, 1)])


# --- agreements ------------------------------------------------------------------------------

def test_changed_agreements_are_recorded_and_readable(chain, owner, stranger):
    identity, _ = registered(owner)
    p1, p2 = os.urandom(32), os.urandom(32)
    assert chain.agreement_of(identity, p1) is None
    receipt = commit(owner, identity, 1, os.urandom(32), 2,
                     [(p1, 20 * 10**9, 1_900_000_000), (p2, 5 * 10**9, 1_800_000_000)])
    # a third party reads them with the chain alone
    reader = ChainReader(chain.rpc_url, chain.deployment["contracts"])
    assert reader.agreement_of(identity, p1) == {"capacity": 20 * 10**9,
                                                 "term_end": 1_900_000_000, "since_epoch": 1}
    assert reader.agreement_of(identity, p2) == {"capacity": 5 * 10**9,
                                                 "term_end": 1_800_000_000, "since_epoch": 1}
    logged = [e["args"] for e in events(chain.storage_network.events.AgreementRecorded, receipt)]
    assert logged == [
        {"owner": identity, "provider": p1, "capacity": 20 * 10**9, "termEnd": 1_900_000_000,
         "epoch": 1},
        {"owner": identity, "provider": p2, "capacity": 5 * 10**9, "termEnd": 1_800_000_000,
         "epoch": 1}]
    # an epoch that changes only p2 leaves p1 as it was
    commit(owner, identity, 2, os.urandom(32), 2, [(p2, 0, 1_800_000_000)])
    assert reader.agreement_of(identity, p1)["since_epoch"] == 1
    assert reader.agreement_of(identity, p2) == {"capacity": 0, "term_end": 1_800_000_000,
                                                 "since_epoch": 2}
    # agreements are per owner
    assert reader.agreement_of(p1, identity) is None
    assert reader.agreement_of(os.urandom(32), p1) is None


# --- gas -------------------------------------------------------------------------------------

def test_commit_gas_is_flat_per_epoch(owner, record_property):
    identity, _ = registered(owner)
    # Roots without zero bytes, so that calldata costs the same in every epoch.
    gas = {epoch: commit(owner, identity, epoch, bytes([0x10 + epoch]) * 32, 7)["gas_used"]
           for epoch in range(1, 6)}
    providers = [os.urandom(32) for _ in range(4)]
    changes = {"1 new": [(providers[0], 10**9, 2_000_000_000)],
               "3 new": [(p, 10**9, 2_000_000_000) for p in providers[1:]],
               "3 updated": [(p, 2 * 10**9, 2_100_000_000) for p in providers[1:]]}
    with_changes = {what: commit(owner, identity, epoch, bytes([0x20 + epoch]) * 32, 7,
                                 changed)["gas_used"]
                    for epoch, (what, changed) in enumerate(changes.items(), start=6)}
    record_property("commit_gas_by_epoch", gas)
    record_property("commit_gas_by_changed_agreements", with_changes)
    print("commit gas by epoch (0 changed agreements):", gas)
    print("commit gas with changed agreements:", with_changes)
    # Epoch 1 also sets the owner's latest epoch from zero; from then on, each epoch writes
    # the same two new slots whatever it is.
    assert gas[2] == gas[3] == gas[4] == gas[5]
    assert gas[1] > gas[2]
    # 21000 tx + two new slots (2 x 22100) + the latest epoch (5000) + the identity's account
    # (cold read) + one log: nothing that grows with the owner's data.
    assert gas[2] < 80_000
    # each agreement recorded: one slot and one log
    assert with_changes["3 new"] - gas[2] < 3 * 27_000
