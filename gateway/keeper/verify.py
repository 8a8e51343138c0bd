"""Verification that needs no trust in the gateway: for each stored message, the device's
signature under the key registered on chain, its Merkle inclusion, and the epoch root
anchored on chain in a mined block."""
from dataclasses import dataclass, field

from gateway.wire import merkle
from gateway.wire import protocol


@dataclass
class Result:
    checked: int = 0
    verified: int = 0
    failures: list = field(default_factory=list)

    def fail(self, message_id, why):
        self.failures.append((message_id, why))


def message_id(device, seq):
    return "%s-%d" % (device, seq)


def parse_message_id(text):
    device, _, seq = text.partition("-")
    if len(device) != 16 or not seq.isdigit():
        raise ValueError("message id must look like <16 hex device id>-<seq>, got %r" % text)
    return device, int(seq)


class Verifier:
    def __init__(self, store, chain):
        self.store = store
        self.chain = chain
        self._keys = {}
        self._trees = {}
        self._anchors = {}

    def run(self, messages):
        result = Result()
        for m in messages:
            mid = message_id(m["device"], m["seq"])
            result.checked += 1
            why = self.check(m)
            if why:
                result.fail(mid, why)
            else:
                result.verified += 1
        return result

    def check(self, m):
        """None if the message verifies, else the reason it does not."""
        key = self._device_key(m["device"])
        if key is None:
            return "device %s is not in the on-chain registry" % m["device"]
        try:
            signed = protocol.parse("ek/%s/up/%s" % (m["device"], m["kind"]), m["raw"], 1 << 30)
            protocol.verify_signature(signed, key)
        except protocol.Reject as r:
            return "signature: %s" % r
        if m["epoch"] is None:
            return "not sealed into an epoch yet"
        anchor = self._anchor(m["epoch"])
        if anchor is None:
            return "epoch %d has no root on chain" % m["epoch"]
        tree = self._tree(m["epoch"])
        proof = merkle.proof_from_levels(tree, m["leaf"])
        size = len(tree[0])
        if not merkle.verify_inclusion(signed.digest, m["leaf"], size, proof, anchor["root"]):
            return "Merkle proof does not reach the on-chain root of epoch %d" % m["epoch"]
        if not anchor["mined"]:
            return "anchor block %d of epoch %d is not on the canonical chain" % (
                anchor["block_number"], m["epoch"])
        return None

    def _device_key(self, device):
        if device not in self._keys:
            rec = self.chain.device(bytes.fromhex(device))
            self._keys[device] = protocol.load_public_key(rec["pubkey"]) if rec else None
        return self._keys[device]

    def _anchor(self, epoch):
        if epoch not in self._anchors:
            a = self.chain.anchor_of(epoch)
            if a is not None:
                latest = self.chain.latest_block()["number"]
                a["mined"] = 0 < a["block_number"] <= latest
            self._anchors[epoch] = a
        return self._anchors[epoch]

    def _tree(self, epoch):
        if epoch not in self._trees:
            self._trees[epoch] = merkle.levels(self.store.epoch_leaves(epoch))
        return self._trees[epoch]
