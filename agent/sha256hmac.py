# HMAC-SHA256 (RFC 2104) on hashlib.sha256 alone: MicroPython core has no hmac module.
import hashlib

_BLOCK = 64


class HmacSha256:
    """Streaming HMAC-SHA256: update() as the message goes by, digest() once at the end."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        pad = bytearray(_BLOCK)
        pad[:len(key)] = key
        for i in range(_BLOCK):
            pad[i] ^= 0x36
        self.inner = hashlib.sha256(pad)
        for i in range(_BLOCK):
            pad[i] ^= 0x36 ^ 0x5C
        self.outer_pad = pad

    def update(self, data):
        self.inner.update(data)

    def digest(self):
        outer = hashlib.sha256(self.outer_pad)
        outer.update(self.inner.digest())
        return outer.digest()


def hmac_sha256(key, *parts):
    """HMAC-SHA256 of the concatenation of parts, without concatenating them."""
    mac = HmacSha256(key)
    for p in parts:
        mac.update(p)
    return mac.digest()
