"""Verification of the stored messages that needs no trust in the gateway: each message
through the one verification path (gateway/wire/verify.py) with the device key registered on
chain and the epoch root anchored on chain."""
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.proto import up_topic
from gateway.wire import merkle, verify
from gateway.wire.verify import Verdict


class Store(Protocol):
    """What the Verifier reads from the gateway's store."""

    def epoch_leaves(self, epoch: int) -> Sequence[bytes]: ...


class Chain(Protocol):
    """What the Verifier reads from the chain (a ChainReader)."""

    def anchor_of(self, epoch: int) -> Mapping[str, Any] | None: ...

    def device_key(self, device: str) -> bytes | None: ...

    def revoked_in(self, device: str) -> int | None: ...


@dataclass
class Result:
    counts: Counter[str] = field(default_factory=Counter)  # verdict status -> messages
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)  # those not ok, by message id

    @property
    def checked(self) -> int:
        return sum(self.counts.values())

    def add(self, message_id: str, verdict: Verdict) -> None:
        self.counts[verdict.status] += 1
        if not verdict.ok:
            self.verdicts.append((message_id, verdict))


def message_id(device: str, seq: int) -> str:
    return "%s-%d" % (device, seq)


def parse_message_id(text: str) -> tuple[str, int]:
    device, _, seq = text.partition("-")
    if len(device) != 16 or not seq.isdigit():
        raise ValueError("message id must look like <16 hex device id>-<seq>, got %r" % text)
    return device, int(seq)


class Verifier:
    """Verdicts on stored messages (store rows: device, seq, kind, raw, epoch, leaf) against
    `chain`, a ChainReader; device keys, anchors and epoch trees are read once each."""

    def __init__(self, store: Store, chain: Chain) -> None:
        self.store = store
        self.chain = chain
        self._keys: dict[str, tuple[bytes | None, int | None]] = {}  # key, revoked_in
        self._trees: dict[int, list[list[bytes]]] = {}

    def run(self, messages: Iterable[Mapping[str, Any]]) -> Result:
        result = Result()
        for m in messages:
            result.add(message_id(m["device"], m["seq"]), self.check(m))
        return result

    def check(self, m: Mapping[str, Any]) -> Verdict:
        epoch, leaf = m["epoch"], m["leaf"]
        anchor = self.chain.anchor_of(epoch) if epoch is not None else None
        path = merkle.proof_from_levels(self._tree(epoch), leaf) if anchor else []
        key, revoked_in = self._device(m["device"])
        return verify.verify(up_topic(m["device"], m["kind"]), m["raw"], key, epoch, leaf, path,
                             anchor, revoked_in)

    def _device(self, device: str) -> tuple[bytes | None, int | None]:
        if device not in self._keys:
            self._keys[device] = (self.chain.device_key(device), self.chain.revoked_in(device))
        return self._keys[device]

    def _tree(self, epoch: int) -> list[list[bytes]]:
        if epoch not in self._trees:
            self._trees[epoch] = merkle.levels(self.store.epoch_leaves(epoch))
        return self._trees[epoch]
