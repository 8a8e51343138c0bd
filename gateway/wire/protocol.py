"""Parsing and checking EdgeKeep messages on the gateway (the device builds them in agent/).

`parse` splits a COSE_Sign1 without trusting it; `verify_signature` checks it against a
device key; `open_envelope` reads the signed envelope. Each failure raises Reject with
the reason the ingest counts. Every CBOR item a device sends must be in deterministic form
(RFC 8949 4.2.1, gateway/wire/canonical.py): `decode` rejects anything else as
`noncanonical`, so that what a stored message says does not depend on who parses it.
"""
import hashlib
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, overload

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.proto import (
    ALG_ES256,
    COSE_ALG,
    COSE_KID,
    DEVICE_ID_LEN,
    ENV_BASE,
    ENV_CIPHERTEXT,
    ENV_COUNT,
    ENV_DEVICE,
    ENV_HEALTH,
    ENV_KIND,
    ENV_SEQ,
    ENV_TIME,
    ENV_VERSION,
    TAG_SIGN1,
    VERSION,
)
from gateway.wire import canonical

MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_DEVICE = "unknown_device"
REVOKED: Final = "revoked"      # also the key the ingest holds for a revoked device
REPLAY = "replay"
OVERSIZE = "oversize"
UNSUPPORTED_VERSION = "unsupported_version"
NONCANONICAL = "noncanonical"   # well-formed CBOR, not in RFC 8949 deterministic encoding
# Refused although signed: an integer outside its range (below), a status health map that
# is not text keys to the values a device sends, a manifest's object map that is not one,
# and anything else that fails when storing that one message. The gateway acks past such a
# message and lists its sequence in the ack's ACK_REJECTED (docs/protocol.md, "Ack and
# sequence semantics"): the device drops it instead of resending it forever.
OUT_OF_RANGE = "out_of_range"
BAD_HEALTH = "bad_health"
BAD_MANIFEST = "bad_manifest"
UNSTORABLE = "unstorable"
REASONS = (MALFORMED, BAD_SIGNATURE, UNKNOWN_DEVICE, REVOKED, REPLAY, OVERSIZE,
           UNSUPPORTED_VERSION, NONCANONICAL, OUT_OF_RANGE, BAD_HEALTH, BAD_MANIFEST,
           UNSTORABLE)

# The envelope's integer ranges (docs/protocol.md, "Message"). The device's spool keeps a
# sequence in a u32, its clock is Unix seconds in a u32 (to 2106), and a telemetry message
# within the 64 KiB limit carries at most 1927 readings of 34 bytes.
MAX_SEQ: Final = 2**32 - 1
MAX_TIME: Final = 2**32 - 1
MAX_COUNT: Final = 2**16 - 1
HEALTH_DEPTH: Final = 3   # health > share > value; OTA report > need > [first, last] > int

UP_TOPIC = re.compile(r"^ek/([0-9a-f]{16})/up/([a-z]{1,8})$")
_ECDSA = ec.ECDSA(hashes.SHA256())
_SIGN1_TAGS = frozenset((TAG_SIGN1,))
# {1: -7}: the one protected header EdgeKeep signs with, in its only deterministic encoding.
_PROTECTED_ES256 = cbor2.dumps({COSE_ALG: ALG_ES256})


class Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


class Refused(Reject):
    """A message refused after its signature verified, with a sequence in range: the device
    did send it, so the gateway acks past `seq` and lists it as rejected. Raised only on
    authenticated content (open_envelope, and the ingest's storing)."""

    def __init__(self, reason: str, detail: str, device: str, seq: int, digest: bytes) -> None:
        super().__init__(reason, detail)
        self.device = device
        self.seq = seq
        self.digest = digest


def check_canonical(data: bytes, what: str, tags: Set[int] = canonical.NO_TAGS) -> None:
    """Reject unless data is one CBOR item in deterministic form: NONCANONICAL if it is
    well-formed but not deterministic, MALFORMED if it is not CBOR."""
    try:
        canonical.check(data, tags)
    except canonical.NotCanonical as e:
        raise Reject(NONCANONICAL, "%s: %s (%s)" % (what, e, e.rule))
    except canonical.Malformed as e:
        raise Reject(MALFORMED, "%s is not CBOR (%s)" % (what, e))


def decode(data: bytes, what: str, tags: Set[int] = canonical.NO_TAGS) -> Any:
    """The CBOR item a device sent, decoded once check_canonical passes."""
    check_canonical(data, what, tags)
    try:
        return cbor2.loads(data)
    except Exception as e:
        raise Reject(MALFORMED, "%s is not CBOR (%s)" % (what, type(e).__name__))


@dataclass
class Signed:
    device: str          # hex device id (the COSE kid)
    kind: str            # from the topic
    protected: bytes
    payload: bytes
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def to_be_signed(self) -> bytes:
        return cbor2.dumps(["Signature1", self.protected, b"", self.payload])


@dataclass
class Envelope:
    device: str
    seq: int
    time: int
    kind: str
    base: int
    count: int | None
    ciphertext: bytes | None
    health: Mapping[Any, Any] | None


def parse(topic: str, raw: bytes, max_bytes: int) -> Signed:
    """Split an uplink into its signed parts; nothing in it is trusted yet."""
    if len(raw) > max_bytes:
        raise Reject(OVERSIZE, "%d bytes > %d" % (len(raw), max_bytes))
    m = UP_TOPIC.match(topic)
    if not m:
        raise Reject(MALFORMED, "topic %r is not ek/<device>/up/<kind>" % topic[:80])
    parts = _split_sign1(raw)
    if parts is None:
        parts = _decode_sign1(raw)
    protected, kid, payload, signature = parts
    if kid.hex() != m.group(1):
        raise Reject(MALFORMED, "kid does not match the topic's device")
    # The envelope is checked here, before the signature: stored messages are re-read
    # through parse() alone (verify, proofs, the Keeper), and junk costs no ECDSA.
    check_canonical(payload, "envelope")
    return Signed(m.group(1), m.group(2), protected, payload, signature, raw)


# A COSE_Sign1 as EdgeKeep's devices write it, up to the kid: tag 18, an array of 4, the
# protected header {1: -7} as a 3-byte string, the unprotected header {4: <8 bytes>}.
_SIGN1_HEAD = b"\xd2\x84\x43" + _PROTECTED_ES256 + b"\xa1\x04\x48"
_SIGNATURE_HEAD = b"\x58\x40"  # a 64-byte string


def _split_sign1(raw: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """(protected, kid, payload, signature) when raw is laid out exactly as the devices
    write it, which is deterministic CBOR by construction (every head here is the shortest,
    the payload's length head is checked to be); None for anything else, which
    _decode_sign1 then reads and judges. Slicing instead of decoding saves a fifth of the
    Python time per uplink."""
    if raw[:9] != _SIGN1_HEAD or len(raw) < 18:
        return None
    ib = raw[17]
    if 0x40 <= ib <= 0x57:
        size, start = ib - 0x40, 18
    elif ib == 0x58:
        size, start = raw[18] if len(raw) > 18 else 0, 19
        if size < 24:
            return None
    elif ib == 0x59:
        size, start = int.from_bytes(raw[18:20], "big"), 20
        if size < 0x100:
            return None
    else:
        return None
    end = start + size
    if len(raw) != end + 66 or raw[end:end + 2] != _SIGNATURE_HEAD:
        return None
    return _PROTECTED_ES256, raw[9:17], raw[start:end], raw[end + 2:]


def _decode_sign1(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(protected, kid, payload, signature) of any deterministic COSE_Sign1 with an ES256
    protected header and an 8-byte kid; Reject otherwise."""
    msg = decode(raw, "message", _SIGN1_TAGS)
    if not (isinstance(msg, cbor2.CBORTag) and msg.tag == TAG_SIGN1
            and isinstance(msg.value, (list, tuple)) and len(msg.value) == 4):
        raise Reject(MALFORMED, "not a tagged COSE_Sign1")
    protected, unprotected, payload, signature = msg.value
    if not (isinstance(protected, bytes) and isinstance(unprotected, Mapping)
            and isinstance(payload, bytes) and isinstance(signature, bytes)):
        raise Reject(MALFORMED, "COSE_Sign1 fields have the wrong types")
    if protected != _PROTECTED_ES256:  # the common case, checked without decoding
        header = decode(protected, "protected header")
        if not (isinstance(header, Mapping) and header.get(COSE_ALG) == ALG_ES256):
            raise Reject(MALFORMED, "protected header must say ES256")
    kid = unprotected.get(COSE_KID)
    if not isinstance(kid, bytes) or len(kid) != DEVICE_ID_LEN:
        raise Reject(MALFORMED, "kid must be the 8-byte device id")
    if len(signature) != 64:
        raise Reject(MALFORMED, "ES256 signature must be 64 bytes")
    return protected, kid, payload, signature


def load_public_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)


def verify_signature(signed: Signed, public_key: ec.EllipticCurvePublicKey) -> None:
    """public_key: a cryptography EC public key (see load_public_key)."""
    r = int.from_bytes(signed.signature[:32], "big")
    s = int.from_bytes(signed.signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signed.to_be_signed(), _ECDSA)
    except InvalidSignature:
        raise Reject(BAD_SIGNATURE, "signature does not verify with device %s's key" % signed.device)


def open_envelope(signed: Signed) -> Envelope:
    """Read the signed envelope; call only after verify_signature. parse() has checked
    that it is canonical CBOR."""
    try:
        env = cbor2.loads(signed.payload)
    except Exception:
        raise Reject(MALFORMED, "envelope is not CBOR")
    if not isinstance(env, Mapping):
        raise Reject(MALFORMED, "envelope is not a map")
    if env.get(ENV_VERSION) != VERSION:
        raise Reject(UNSUPPORTED_VERSION, "envelope version %r (this gateway speaks %d)"
                     % (env.get(ENV_VERSION), VERSION))
    try:
        e = Envelope(
            device=_typed(env, ENV_DEVICE, bytes).hex(),
            seq=_typed(env, ENV_SEQ, int),
            time=_typed(env, ENV_TIME, int),
            kind=_typed(env, ENV_KIND, str),
            base=_typed(env, ENV_BASE, int),
            count=_typed(env, ENV_COUNT, int, optional=True),
            ciphertext=_typed(env, ENV_CIPHERTEXT, bytes, optional=True),
            health=_typed(env, ENV_HEALTH, _MAPPING, optional=True),
        )
    except (KeyError, TypeError) as exc:
        raise Reject(MALFORMED, "envelope field %s" % exc)
    if e.device != signed.device or e.kind != signed.kind:
        raise Reject(MALFORMED, "envelope device/kind differ from the topic")
    if not 1 <= e.seq <= MAX_SEQ:  # no sequence to ack past: counted, never acked
        raise Reject(OUT_OF_RANGE, "sequence %s is not 1..%d" % (_short(e.seq), MAX_SEQ))
    why = _out_of_range(e)
    if why:
        raise Refused(OUT_OF_RANGE, why, e.device, e.seq, signed.digest)
    if e.health is not None:
        why = _bad_health(e.health, HEALTH_DEPTH)
        if why:
            raise Refused(BAD_HEALTH, "health map: %s" % why, e.device, e.seq, signed.digest)
    return e


def _out_of_range(e: Envelope) -> str | None:
    """What of a signed envelope (its sequence in range) is outside the protocol's ranges."""
    if not 1 <= e.base <= e.seq:
        return "base %s is not 1..seq %d" % (_short(e.base), e.seq)
    if not 0 <= e.time <= MAX_TIME:
        return "time %s is not 0..%d" % (_short(e.time), MAX_TIME)
    if e.count is not None and not 0 <= e.count <= MAX_COUNT:
        return "count %s is not 0..%d" % (_short(e.count), MAX_COUNT)
    return None


def _bad_health(value: Any, depth: int) -> str | None:
    """Why a health value (status, OTA report) is not what a device sends, or None: maps
    with text keys, lists, text, integers, booleans and null, nested at most `depth` deep.
    Canonical CBOR has already ruled out floats, tags and other simple values."""
    if isinstance(value, (Mapping, list)):
        if depth == 0:
            return "nested deeper than %d" % HEALTH_DEPTH
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for k, v in items:
            if isinstance(value, Mapping) and not isinstance(k, str):
                return "key %s is not text" % _short(k)
            why = _bad_health(v, depth - 1)
            if why:
                return "%s: %s" % (str(k)[:40], why)
        return None
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return None
    return "a value of type %s" % type(value).__name__


def _short(value: Any) -> str:
    """A value for a reject's detail, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_T = TypeVar("_T")
# _typed only isinstance()s typ; mypy refuses an abstract class where type[_T] is expected.
_MAPPING: type[Mapping[Any, Any]] = Mapping  # type: ignore[type-abstract]


@overload
def _typed(env: Mapping[Any, Any], key: int, typ: type[_T]) -> _T: ...
@overload
def _typed(env: Mapping[Any, Any], key: int, typ: type[_T],
           optional: Literal[True]) -> _T | None: ...
def _typed(env: Mapping[Any, Any], key: int, typ: type[_T],
           optional: bool = False) -> _T | None:
    if key not in env:
        if optional:
            return None
        raise KeyError(key)
    v = env[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        raise TypeError("%d has type %s" % (key, type(v).__name__))
    return v
