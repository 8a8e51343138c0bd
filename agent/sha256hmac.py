# HMAC-SHA256 (RFC 2104) on hashlib.sha256 alone: MicroPython core has no hmac module.
import hashlib

_BLOCK = 64


def hmac_sha256(key, *parts):
    """HMAC-SHA256 of the concatenation of parts, without concatenating them."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    pad = bytearray(_BLOCK)
    pad[:len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = hashlib.sha256(pad)
    for p in parts:
        inner.update(p)
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(pad)
    outer.update(inner.digest())
    return outer.digest()
