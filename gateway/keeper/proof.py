"""Portable proofs: one JSON file per message that anyone can check against the chain alone.

    python -m gateway proof --data-dir DIR DEVICE-SEQ --out proof.json
    python -m gateway check-proof proof.json --rpc URL

The checker reads nothing from the gateway: the device key comes from DeviceRegistry, the
root from ProofAnchor, and the contract's own verifyAnchored must agree.
"""
import json

from web3 import Web3

from gateway.wire import merkle
from gateway.wire import protocol
from gateway.chain.compile import load_artifact

FORMAT = "edgekeep-proof/1"


def build(store, chain, device, seq):
    m = store.message(device, seq)
    if m is None:
        raise LookupError("no message %s-%d in the store" % (device, seq))
    if m["epoch"] is None:
        raise LookupError("message %s-%d is not sealed into an epoch yet" % (device, seq))
    tree = merkle.levels(store.epoch_leaves(m["epoch"]))
    return {
        "format": FORMAT,
        "message": m["raw"].hex(),
        "topic": "ek/%s/up/%s" % (device, m["kind"]),
        "epoch": m["epoch"],
        "index": m["leaf"],
        "size": len(tree[0]),
        "path": [h.hex() for h in merkle.proof_from_levels(tree, m["leaf"])],
        "chain_id": chain.chain_id,
        "contracts": dict(chain.deployment["contracts"]),
    }


def check(proof, rpc_url):
    """A list of (check, ok, detail); every ok must be True for the proof to hold."""
    if proof.get("format") != FORMAT:
        raise ValueError("not an EdgeKeep proof (format %r)" % proof.get("format"))
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
    registry = _contract(w3, "DeviceRegistry", proof["contracts"]["DeviceRegistry"])
    anchor = _contract(w3, "ProofAnchor", proof["contracts"]["ProofAnchor"])
    raw = bytes.fromhex(proof["message"])
    path = [bytes.fromhex(h) for h in proof["path"]]
    results = [("chain id", w3.eth.chain_id == proof["chain_id"],
                "%d (proof says %d)" % (w3.eth.chain_id, proof["chain_id"]))]

    signed = protocol.parse(proof["topic"], raw, len(raw))
    pubkey, _, _, registered_at = registry.functions.deviceKey(bytes.fromhex(signed.device)).call()
    if not registered_at:
        return results + [("device registered on chain", False, signed.device)]
    try:
        protocol.verify_signature(signed, protocol.load_public_key(bytes(pubkey)))
        results.append(("device signature", True, "ES256 by %s" % signed.device))
    except protocol.Reject as r:
        results.append(("device signature", False, str(r)))

    root, count, block, timestamp = anchor.functions.anchorOf(proof["epoch"]).call()
    digest = signed.digest
    included = merkle.verify_inclusion(digest, proof["index"], proof["size"], path, bytes(root))
    results.append(("Merkle inclusion in the on-chain root", included and count == proof["size"],
                    "epoch %d, leaf %d of %d" % (proof["epoch"], proof["index"], count)))
    on_chain = anchor.functions.verifyAnchored(proof["epoch"], digest, proof["index"],
                                               proof["size"], path).call()
    results.append(("ProofAnchor.verifyAnchored", on_chain, "evaluated by the contract"))
    results.append(("anchored by", block > 0, "block %d, unix time %d" % (block, timestamp)))
    return results


def _contract(w3, name, address):
    return w3.eth.contract(address=Web3.to_checksum_address(address),
                           abi=load_artifact(name)["abi"])


def dump(proof, path):
    with open(path, "w") as f:
        json.dump(proof, f, indent=1)
