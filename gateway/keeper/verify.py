"""Verification of the stored messages that needs no trust in the gateway: each message
through the one verification path (gateway/wire/verify.py) with the device key registered on
chain and the epoch root anchored on chain."""
from collections import Counter
from dataclasses import dataclass, field

from agent.proto import up_topic
from gateway.wire import merkle, verify
from gateway.wire.verify import Verdict


@dataclass
class Result:
    counts: Counter = field(default_factory=Counter)       # verdict status -> messages
    verdicts: list = field(default_factory=list)           # (message id, Verdict) not ok

    @property
    def checked(self):
        return sum(self.counts.values())

    def add(self, message_id, verdict):
        self.counts[verdict.status] += 1
        if not verdict.ok:
            self.verdicts.append((message_id, verdict))


def message_id(device, seq):
    return "%s-%d" % (device, seq)


def parse_message_id(text):
    device, _, seq = text.partition("-")
    if len(device) != 16 or not seq.isdigit():
        raise ValueError("message id must look like <16 hex device id>-<seq>, got %r" % text)
    return device, int(seq)


class Verifier:
    """Verdicts on stored messages (store rows: device, seq, kind, raw, epoch, leaf) against
    `chain`, a ChainReader; device keys, anchors and epoch trees are read once each."""

    def __init__(self, store, chain):
        self.store = store
        self.chain = chain
        self._keys = {}
        self._trees = {}

    def run(self, messages):
        result = Result()
        for m in messages:
            result.add(message_id(m["device"], m["seq"]), self.check(m))
        return result

    def check(self, m) -> Verdict:
        epoch, leaf = m["epoch"], m["leaf"]
        anchor = self.chain.anchor_of(epoch) if epoch is not None else None
        path = merkle.proof_from_levels(self._tree(epoch), leaf) if anchor else []
        key, revoked_in = self._device(m["device"])
        return verify.verify(up_topic(m["device"], m["kind"]), m["raw"], key, epoch, leaf, path,
                             anchor, revoked_in)

    def _device(self, device):
        if device not in self._keys:
            self._keys[device] = (self.chain.device_key(device), self.chain.revoked_in(device))
        return self._keys[device]

    def _tree(self, epoch):
        if epoch not in self._trees:
            self._trees[epoch] = merkle.levels(self.store.epoch_leaves(epoch))
        return self._trees[epoch]
