# COSE_Encrypt0 (AES-CCM-16-128-128) and COSE_Sign1 (ES256) as RFC 9052 lays them out.
import hashlib

from agent import cbor, ccm, p256
from agent.heap import collect
from agent.proto import (
    ALG_AES_CCM_16_128_128,
    ALG_ES256,
    COSE_ALG,
    COSE_IV,
    COSE_KID,
    TAG_ENCRYPT0,
    TAG_SIGN1,
)

PROTECTED_CCM = cbor.dumps({COSE_ALG: ALG_AES_CCM_16_128_128})
PROTECTED_ES256 = cbor.dumps({COSE_ALG: ALG_ES256})
# Enc_structure ["Encrypt0", protected, external_aad = h''] is the CCM associated data.
ENC0_AAD = cbor.dumps(["Encrypt0", PROTECTED_CCM, b""])
# Sig_structure ["Signature1", protected, external_aad = h'', payload] up to the payload.
SIG1_PREFIX = bytes(cbor.encode_into(bytearray(b"\x84"), "Signature1")
                    + cbor.encode_into(bytearray(), PROTECTED_ES256) + b"\x40")


def encrypt0(key, nonce, plaintext):
    """Tagged COSE_Encrypt0 (a bytearray): the payload sealed for the owner's data key."""
    n = len(plaintext) + 16
    head = _head(TAG_ENCRYPT0, 3, PROTECTED_CCM, COSE_IV, nonce, n)
    out = bytearray(len(head) + n)
    out[:len(head)] = head
    ccm.seal_into(memoryview(out)[len(head):], key, nonce, plaintext, ENC0_AAD, 16)
    return out


def sig1_digest(payload):
    """SHA-256 of the Sig_structure, hashed in pieces so the payload is not copied."""
    h = hashlib.sha256(SIG1_PREFIX)
    h.update(cbor.head(2, len(payload)))
    h.update(payload)
    return h.digest()


def sign1(secret, kid, payload):
    """Tagged COSE_Sign1 (a bytearray) over payload, signed with the device key."""
    signature = p256.sign(secret, sig1_digest(payload))
    collect()  # the signature's garbage, before the message is allocated
    head = _head(TAG_SIGN1, 4, PROTECTED_ES256, COSE_KID, kid, len(payload))
    n = len(head) + len(payload)
    out = bytearray(n + 2 + 64)
    out[:len(head)] = head
    out[len(head):n] = payload
    out[n:] = cbor.head(2, 64) + signature
    return out


def _head(tag, items, protected, label, value, n):
    """Tag, array head, protected and unprotected headers, and the head of an n-byte bstr:
    everything before a message's payload, so the message is allocated once at its size."""
    out = bytearray(cbor.head(6, tag))
    out.extend(cbor.head(4, items))
    cbor.encode_into(out, protected)
    cbor.encode_into(out, {label: value})
    out.extend(cbor.head(2, n))
    return out
