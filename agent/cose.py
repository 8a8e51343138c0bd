# COSE_Encrypt0 (AES-CCM-16-128-128) and COSE_Sign1 (ES256) as RFC 9052 lays them out.
import hashlib

from agent import cbor, ccm, p256
from agent.proto import (ALG_AES_CCM_16_128_128, ALG_ES256, COSE_ALG, COSE_IV, COSE_KID,
                         TAG_ENCRYPT0, TAG_SIGN1)

PROTECTED_CCM = cbor.dumps({COSE_ALG: ALG_AES_CCM_16_128_128})
PROTECTED_ES256 = cbor.dumps({COSE_ALG: ALG_ES256})
# Enc_structure ["Encrypt0", protected, external_aad = h''] is the CCM associated data.
ENC0_AAD = cbor.dumps(["Encrypt0", PROTECTED_CCM, b""])
# Sig_structure ["Signature1", protected, external_aad = h'', payload] up to the payload.
SIG1_PREFIX = bytes(cbor.encode_into(bytearray(b"\x84"), "Signature1")
                    + cbor.encode_into(bytearray(), PROTECTED_ES256) + b"\x40")


def encrypt0(key, nonce, plaintext):
    """Tagged COSE_Encrypt0 bytes: the payload sealed for the owner's data key."""
    sealed = ccm.seal(key, nonce, plaintext, ENC0_AAD, 16)
    out = bytearray(cbor.head(6, TAG_ENCRYPT0))
    out.append(0x83)
    cbor.encode_into(out, PROTECTED_CCM)
    cbor.encode_into(out, {COSE_IV: nonce})
    cbor.encode_into(out, sealed)
    return bytes(out)


def sig1_digest(payload):
    """SHA-256 of the Sig_structure, hashed in pieces so the payload is not copied."""
    h = hashlib.sha256(SIG1_PREFIX)
    h.update(cbor.head(2, len(payload)))
    h.update(payload)
    return h.digest()


def sign1(secret, kid, payload):
    """Tagged COSE_Sign1 bytes over payload, signed with the device key."""
    signature = p256.sign(secret, sig1_digest(payload))
    out = bytearray(cbor.head(6, TAG_SIGN1))
    out.append(0x84)
    cbor.encode_into(out, PROTECTED_ES256)
    cbor.encode_into(out, {COSE_KID: kid})
    cbor.encode_into(out, payload)
    cbor.encode_into(out, signature)
    return bytes(out)
