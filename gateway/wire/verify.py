"""The one verification path: what a third party's trust in a stored message rests on.

`check_message` checks a message by itself (parse, canonical form, the device's key,
ES256); `check_inclusion` checks that its digest is a leaf of an epoch root anchored on
chain; `verify` does both, in that order. The ingest, `edgekeep verify`, `check-proof`,
the gateway's Keeper and a remote Keeper all call these, so the same inputs give the same
verdict with the same reason text everywhere.

A message that is not sealed into an epoch yet, or sealed but not anchored yet, is
`pending`: young, not bad.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.wire import merkle, protocol

OK = "ok"
PENDING = "pending"
FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    status: str      # ok, pending or failed
    reason: str      # what was shown, or why not

    @property
    def ok(self) -> bool:
        return self.status == OK

    def __str__(self) -> str:
        return "%s: %s" % (self.status, self.reason)


# A device's registered key: the 65-byte point or the loaded key; None if it has none;
# protocol.REVOKED where new messages from it are refused (the ingest's view).
DeviceKey = bytes | ec.EllipticCurvePublicKey | Literal["revoked"] | None


def check_key(device: str, key: DeviceKey) -> ec.EllipticCurvePublicKey:
    """The device's key, loaded; Reject if it has none or is revoked."""
    if key is None:
        raise protocol.Reject(protocol.UNKNOWN_DEVICE, "device %s is not registered" % device)
    if isinstance(key, str):  # protocol.REVOKED, the only text a key can be
        raise protocol.Reject(protocol.REVOKED, "device %s is revoked" % device)
    if isinstance(key, bytes):
        return protocol.load_public_key(key)
    return key


def check_message(topic: str, raw: bytes, key: DeviceKey,
                  max_bytes: int | None = None) -> protocol.Signed:
    """The message's signed parts once its form and its device's ES256 signature check out.
    Raises protocol.Reject with the reason."""
    signed = protocol.parse(topic, raw, len(raw) if max_bytes is None else max_bytes)
    protocol.verify_signature(signed, check_key(signed.device, key))
    return signed


def check_inclusion(digest: bytes, epoch: int | None, index: int, path: Sequence[bytes],
                    anchor: Mapping[str, Any] | None, revoked_in: int | None = None) -> Verdict:
    """Is digest leaf `index` of the root anchored for `epoch`? anchor: the chain's record
    of the epoch (root, count, block_number), None if the chain has none. revoked_in: the
    block in which the signing device was revoked, if it was: only what was anchored
    before that block still counts."""
    if epoch is None or anchor is None:
        young = (Verdict(PENDING, "not sealed into an epoch yet") if epoch is None else
                 Verdict(PENDING, "epoch %d is sealed but has no root on chain yet" % epoch))
        if revoked_in is None:
            return young
        return Verdict(FAILED, "%s, and the device was revoked in block %d"
                       % (young.reason, revoked_in))
    if not merkle.verify_inclusion(digest, index, anchor["count"], list(path), anchor["root"]):
        return Verdict(FAILED, "not leaf %d of the root anchored for epoch %d" % (index, epoch))
    where = "leaf %d of %d in epoch %d, anchored in block %d" % (
        index, anchor["count"], epoch, anchor["block_number"])
    if revoked_in is None:
        return Verdict(OK, where)
    if anchor["block_number"] >= revoked_in:
        return Verdict(FAILED, "%s, not before the device was revoked in block %d"
                       % (where, revoked_in))
    return Verdict(OK, "%s; the device was revoked later, in block %d" % (where, revoked_in))


def verify(topic: str, raw: bytes, key: DeviceKey, epoch: int | None, index: int,
           path: Sequence[bytes], anchor: Mapping[str, Any] | None,
           revoked_in: int | None = None) -> Verdict:
    """check_message, then check_inclusion: the verdict on one stored message."""
    try:
        signed = check_message(topic, raw, key)
    except protocol.Reject as r:
        return Verdict(FAILED, str(r))
    return check_inclusion(signed.digest, epoch, index, path, anchor, revoked_in)

