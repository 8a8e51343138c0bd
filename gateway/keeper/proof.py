"""Portable proofs: one JSON file per message that anyone can check against the chain alone.

    edgekeep proof --data-dir DIR DEVICE-SEQ --out proof.json
    edgekeep check-proof proof.json --rpc URL

The checker reads nothing from the gateway: the device key comes from DeviceRegistry, the
root from ProofAnchor (through the one verification path, gateway/wire/verify.py), and the
contract's own verifyAnchored must agree. docs/protocol.md describes every field.
"""
import json

from agent.proto import up_topic
from gateway.chain.reader import ChainReader
from gateway.wire import merkle, protocol, verify
from gateway.wire.verify import FAILED, Verdict

FORMAT = "edgekeep-proof/1"


def build(store, chain, device, seq):
    m = store.message(device, seq)
    if m is None:
        raise LookupError("no message %s-%d in the store" % (device, seq))
    if m["epoch"] is None:
        raise LookupError("message %s-%d is not sealed into an epoch yet: try again after the "
                          "next epoch is sealed and anchored" % (device, seq))
    tree = merkle.levels(store.epoch_leaves(m["epoch"]))
    return {
        "format": FORMAT,
        "message": m["raw"].hex(),
        "topic": up_topic(device, m["kind"]),
        "epoch": m["epoch"],
        "index": m["leaf"],
        "size": len(tree[0]),
        "path": [h.hex() for h in merkle.proof_from_levels(tree, m["leaf"])],
        "chain_id": chain.chain_id,
        "contracts": dict(chain.deployment["contracts"]),
    }


def reader(proof, rpc_url):
    """A ChainReader on the proof's contracts."""
    if proof.get("format") != FORMAT:
        raise ValueError("not an EdgeKeep proof (format %r)" % proof.get("format"))
    return ChainReader(rpc_url, proof["contracts"])


def check(proof, chain) -> Verdict:
    """The verdict on a proof file against `chain` (a ChainReader on its contracts)."""
    if chain.chain_id != proof["chain_id"]:
        return Verdict(FAILED, "the node is chain %d, the proof is for chain %d"
                       % (chain.chain_id, proof["chain_id"]))
    raw = bytes.fromhex(proof["message"])
    path = [bytes.fromhex(h) for h in proof["path"]]
    topic = proof["topic"]
    device = topic.split("/")[1] if topic.count("/") == 3 else ""
    try:
        signed = verify.check_message(topic, raw, chain.device_key(device))
    except protocol.Reject as r:
        return Verdict(FAILED, str(r))
    anchor = chain.anchor_of(proof["epoch"])
    v = verify.check_inclusion(signed.digest, proof["epoch"], proof["index"], path, anchor,
                               chain.revoked_in(device))
    if not v.ok:
        return v
    if anchor["count"] != proof["size"]:
        return Verdict(FAILED, "the proof says epoch %d has %d leaves, the chain says %d"
                       % (proof["epoch"], proof["size"], anchor["count"]))
    if not chain.verify_anchored(proof["epoch"], signed.digest, proof["index"], proof["size"],
                                 path):
        return Verdict(FAILED, "ProofAnchor.verifyAnchored disagrees")
    return v


def dump(proof, path):
    with open(path, "w") as f:
        json.dump(proof, f, indent=1)
