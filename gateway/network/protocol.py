"""The peer protocol's pure core (docs/network.md): invitations, signed requests, sealed
blobs, share records, agreement trees and the check of a challenge's answer. No I/O: the
server, the client, the Keeper and `edgekeep audit --remote` all use these, so that what a
peer accepts and what an auditor proves is decided in one place.
"""
import base64
import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.wire import canonical, merkle

INVITATION_PREFIX = "ekinv1."
INVITATION_DOMAIN = b"edgekeep-invitation/1"
REQUEST_DOMAIN = "edgekeep-peer-request/1"
AUDIT_DOMAIN = b"edgekeep-network-audit/1"
REGISTRATION_DOMAIN = b"edgekeep-gateway-registration/1"
SEAL_AAD = b"edgekeep-network-blob/1"
CLOCK_SKEW = 300          # seconds a request's EK-Time may be off
NONCE_TTL = 600           # seconds a nonce is remembered (twice the skew)
MAX_BODY = 8 << 20
RECORD = struct.Struct(">4sBBBxQ32s")   # magic, k, m, share index, sealed size, sealed digest
RECORD_MAGIC = b"EKN1"
AGREEMENT_LEAF = struct.Struct(">32sQ32s")  # provider, slot count, agreement root
HEADERS = ("EK-From", "EK-To", "EK-Time", "EK-Nonce", "EK-Signature")


class Signer(Protocol):
    """What signs: a gateway's Identity (gateway/network/identity.py)."""
    public: bytes
    name: str

    def sign(self, message: bytes) -> bytes: ...


class Refused(Exception):
    """A peer's request or answer refused; reason is the counted name (docs/network.md)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__("%s: %s" % (reason, detail))
        self.reason, self.detail = reason, detail


# -- names -------------------------------------------------------------------------------

def check_name(name: Any) -> str:
    """name if it is a peer name (64 lowercase hex), else Refused malformed."""
    if not isinstance(name, str) or len(name) != 64 or name.strip("0123456789abcdef"):
        raise Refused("malformed", "a peer name is 64 lowercase hex characters")
    return name


def verify_signature(name: str, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(name)).verify(signature, message)
        return True
    except Exception:
        return False


def registration_statement(chain_id: int, contract: str, account: str) -> bytes:
    """What a gateway's identity signs to register its roles on StorageNetwork: the domain,
    the chain id (u64), the contract's and the registering account's 20-byte addresses."""
    return (REGISTRATION_DOMAIN + chain_id.to_bytes(8, "big") + bytes.fromhex(contract[2:])
            + bytes.fromhex(account[2:]))


# -- invitations ---------------------------------------------------------------------------

class Invitation(NamedTuple):
    name: str          # the inviter
    endpoint: str
    capacity: int      # bytes the inviter holds for the invitee
    expires: int
    token: bytes


def make_invitation(identity: Signer, endpoint: str, capacity: int, expires: int,
                    token: bytes) -> str:
    payload = cbor2.dumps({"v": 1, "id": identity.public, "ep": endpoint, "cap": capacity,
                           "exp": expires, "tok": token}, canonical=True)
    return "%s%s.%s" % (INVITATION_PREFIX, _b64(payload),
                        _b64(identity.sign(INVITATION_DOMAIN + payload)))


def parse_invitation(text: str, now: float) -> Invitation:
    """The Invitation in text; Refused bad_invitation (malformed or forged) or
    expired_invitation."""
    text = text.strip()
    if not text.startswith(INVITATION_PREFIX) or text.count(".") != 2:
        raise Refused("bad_invitation", "an invitation is one line starting %s (from "
                      "`edgekeep peer invite` on the other gateway)" % INVITATION_PREFIX)
    try:
        _, p, s = text.split(".")
        payload, sig = _unb64(p), _unb64(s)
        d = canonical.loads(payload)
        inv = Invitation(d["id"].hex(), d["ep"], d["cap"], d["exp"], d["tok"])
        ok = (d["v"] == 1 and len(d) == 6 and len(d["id"]) == 32 and len(inv.token) == 16
              and isinstance(inv.endpoint, str) and inv.endpoint.startswith("https://")
              and isinstance(inv.capacity, int) and isinstance(inv.expires, int))
    except Exception as e:
        raise Refused("bad_invitation", "the invitation is damaged (%s): copy the whole line"
                      % type(e).__name__) from None
    if not ok:
        raise Refused("bad_invitation", "the invitation's fields are not EdgeKeep's v1")
    if not verify_signature(inv.name, sig, INVITATION_DOMAIN + payload):
        raise Refused("bad_invitation", "the invitation's signature does not verify: it was "
                      "altered; ask for a new one")
    if inv.expires < now:
        raise Refused("expired_invitation", "the invitation expired; ask the other gateway's "
                      "owner for a new one (`edgekeep peer invite`)")
    return inv


# -- signed requests -------------------------------------------------------------------------

def request_string(method: str, path: str, to: str, time: int, nonce: str,
                   body: bytes) -> bytes:
    return ("%s\n%s\n%s\n%s\n%s\n%s\n%s" % (REQUEST_DOMAIN, method.upper(), path, to, time, nonce,
                                            hashlib.sha256(body).hexdigest())).encode()


def sign_request(identity: Signer, to: str, method: str, path: str, body: bytes, time: int,
                 nonce: str) -> dict[str, str]:
    """The EK-* headers of a request from identity to peer `to` (docs/network.md)."""
    sig = identity.sign(request_string(method, path, to, time, nonce, body))
    return {"EK-From": identity.name, "EK-To": to, "EK-Time": str(time), "EK-Nonce": nonce,
            "EK-Signature": base64.b64encode(sig).decode()}


class SignedRequest(NamedTuple):
    sender: str
    time: int
    nonce: str
    headers: dict[str, str]


def check_request(headers: Mapping[str, str], method: str, path: str, body: bytes, me: str,
                  now: float) -> SignedRequest:
    """The SignedRequest if the headers sign this request to `me` at about `now`; Refused
    malformed, wrong_peer, stale or forged. Whether the sender is paired and the nonce new is
    the caller's (it has the tables)."""
    try:
        h = {k: headers[k] for k in HEADERS}
        sender, time, nonce = check_name(h["EK-From"]), int(h["EK-Time"]), h["EK-Nonce"]
        sig = base64.b64decode(h["EK-Signature"], validate=True)
        if len(nonce) != 32 or nonce.strip("0123456789abcdef"):
            raise ValueError("nonce")
    except (KeyError, ValueError, Refused):
        raise Refused("malformed", "a signed peer request needs headers %s" % ", ".join(HEADERS)) \
            from None
    if h["EK-To"] != me:
        raise Refused("wrong_peer", "the request is for peer %s, this is %s" % (
            h["EK-To"][:16], me[:16]))
    if abs(time - now) > CLOCK_SKEW:
        raise Refused("stale", "the request's time is %d s off this gateway's clock (at most "
                      "%d): set both clocks (NTP)" % (time - now, CLOCK_SKEW))
    if not verify_signature(sender, sig, request_string(method, path, me, time, nonce, body)):
        raise Refused("forged", "the request's signature does not verify")
    return SignedRequest(sender, time, nonce, h)


# -- sealed blobs --------------------------------------------------------------------------------

def seal(key: bytes, blob: bytes, digest: bytes | None = None) -> bytes:
    """nonce || AES-256-GCM(key, nonce, blob), nonce = HMAC-SHA256(key, SHA-256(blob))[:12]."""
    digest = digest or hashlib.sha256(blob).digest()
    nonce = hmac.new(key, digest, "sha256").digest()[:12]
    return nonce + AESGCM(key).encrypt(nonce, bytes(blob), SEAL_AAD)


def open_sealed(key: bytes, sealed: bytes) -> bytes:
    """The blob in sealed bytes; Refused not_ours if the key or the bytes do not fit."""
    nonce = bytes(sealed[:12])
    try:
        blob = AESGCM(key).decrypt(nonce, bytes(sealed[12:]), SEAL_AAD)
    except (InvalidTag, ValueError):
        raise Refused("not_ours", "sealed bytes that this identity's storage key does not "
                      "open (another gateway's, or damaged)") from None
    if hmac.new(key, hashlib.sha256(blob).digest(), "sha256").digest()[:12] != nonce:
        raise Refused("not_ours", "the sealed blob's nonce does not match its contents")
    return blob


# -- share records -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """A share record: its header's fields and its body."""
    k: int
    m: int
    index: int
    size: int          # sealed bytes
    sealed: bytes      # SHA-256 of the sealed bytes
    body: bytes


def make_record(k: int, m: int, index: int, size: int, sealed_digest: bytes,
                body: bytes) -> bytes:
    return RECORD.pack(RECORD_MAGIC, k, m, index, size, sealed_digest) + bytes(body)


def parse_record(raw: bytes) -> Record:
    """The Record in raw bytes; Refused bad_share if it is not one."""
    if len(raw) < RECORD.size:
        raise Refused("bad_share", "a share record is at least %d bytes" % RECORD.size)
    magic, k, m, index, size, sealed = RECORD.unpack_from(raw)
    body = bytes(raw[RECORD.size:])
    if magic != RECORD_MAGIC or not 1 <= k <= m or index >= m or len(body) != -(-size // k):
        raise Refused("bad_share", "the share record's header does not fit its body")
    return Record(k, m, index, size, sealed, body)


def leaf(record_bytes: bytes) -> bytes:
    return hashlib.sha256(record_bytes).digest()


# -- agreement trees and commits -------------------------------------------------------------------

def agreement_leaf(provider: str, count: int, root: bytes) -> bytes:
    """The 72-byte leaf of an agreement in a network epoch's tree."""
    return AGREEMENT_LEAF.pack(bytes.fromhex(provider), count, root)


def draw_slots(seed: bytes, provider: str, count: int, n: int) -> list[int]:
    """n slots of an agreement with `count` slots, from a 32-byte block hash."""
    out = []
    for i in range(n if count else 0):
        h = hashlib.sha256(AUDIT_DOMAIN + seed + bytes.fromhex(provider)
                           + i.to_bytes(4, "big")).digest()
        out.append(int.from_bytes(h[:8], "big") % count)
    return out


def check_answer(answer: Mapping[str, Any], slot: int, provider: str, owner_root: bytes,
                 epoch: int, owner: str | None = None) -> str:
    """Whether a challenge's answer proves slot `slot` of provider's agreement into
    `owner_root`, the root on chain of owner's latest epoch `epoch`: "ok", "released" (the
    owner's own signed DELETE of that slot, so owner is needed to accept it) or Refused with
    the reason the provider fails."""
    c = answer["commit"]
    if c["epoch"] != epoch:
        raise Refused("old_root", "the answer proves against epoch %d, the latest on chain is %d"
                      % (c["epoch"], epoch))
    if answer["slot"] != slot or not 0 <= slot < answer["count"]:
        raise Refused("wrong_slot", "asked for slot %d, answered slot %s of %s"
                      % (slot, answer["slot"], answer["count"]))
    if answer["record"] is None:
        if answer.get("release") and owner and _released_by(answer["release"], owner, provider,
                                                             slot):
            return "released"
        raise Refused("no_data", "no record, and no release of slot %d signed by its owner"
                      % slot)
    root = answer["root"]
    if not merkle.verify_inclusion(leaf(answer["record"]), slot, answer["count"], answer["path"],
                                   root):
        raise Refused("wrong_bytes", "slot %d's bytes do not prove into the agreement's root"
                      % slot)
    if not merkle.verify_inclusion(agreement_leaf(provider, answer["count"], root), c["index"],
                                   c["size"], c["path"], owner_root):
        raise Refused("wrong_root", "the agreement's root does not prove into the root on chain")
    return "ok"


def _released_by(headers: Mapping[str, str], owner: str, provider: str, slot: int) -> bool:
    """Whether headers are owner's signed DELETE of this slot at provider."""
    try:
        signed = check_request(headers, "DELETE", "/v1/slots/%d" % slot, b"", provider,
                               int(headers["EK-Time"]))
    except (Refused, KeyError, ValueError, TypeError):
        return False
    return signed.sender == owner


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
