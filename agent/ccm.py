# AES-CCM (RFC 3610, NIST SP 800-38C): CBC-MAC then CTR, both composed from single AES
# blocks because device cryptolib builds have ECB and CBC only.
# COSE alg 30 (AES-CCM-16-128-128) is the main case: 16-byte key, 13-byte nonce, 16-byte tag.
from agent import aes


def seal(key, nonce, plaintext, aad=b"", tag_len=16):
    """Encrypt and authenticate: returns ciphertext || tag."""
    out = bytearray(len(plaintext) + tag_len)
    seal_into(out, key, nonce, plaintext, aad, tag_len)
    return bytes(out)


def seal_into(out, key, nonce, plaintext, aad=b"", tag_len=16):
    """seal() into the writable buffer out, of exactly len(plaintext) + tag_len bytes."""
    n = len(plaintext)
    if len(out) != n + tag_len:
        raise ValueError("ccm: out must hold the plaintext and the tag")
    size = _check(nonce, n, tag_len)
    e = aes.ecb(key)
    out = memoryview(out)
    plaintext = memoryview(plaintext)
    tag = _cbc_mac(e, nonce, size, plaintext, aad, tag_len)
    ctr = _counter(nonce, size)
    _ctr_xor(e, ctr, tag, out[n:], tag_len)  # counter 0 masks the tag
    _ctr_xor(e, ctr, plaintext, out, n)


def open_(key, nonce, data, aad=b"", tag_len=16):
    """Check and decrypt ciphertext || tag; ValueError if it was not sealed with this key,
    nonce and aad."""
    n = len(data) - tag_len
    if n < 0:
        raise ValueError("ccm: data shorter than the tag")
    size = _check(nonce, n, tag_len)
    e = aes.ecb(key)
    data = memoryview(data)
    out = bytearray(n)
    received = bytearray(tag_len)
    ctr = _counter(nonce, size)
    _ctr_xor(e, ctr, data[n:], received, tag_len)
    _ctr_xor(e, ctr, data, memoryview(out), n)
    expected = _cbc_mac(e, nonce, size, memoryview(out), aad, tag_len)
    diff = 0
    for i in range(tag_len):  # constant time: no early exit
        diff |= received[i] ^ expected[i]
    if diff:
        raise ValueError("ccm: authentication failed")
    return bytes(out)


def _check(nonce, n, tag_len):
    """Validate parameters; return L, the size in bytes of the length field."""
    if not 7 <= len(nonce) <= 13:
        raise ValueError("ccm: nonce must be 7..13 bytes")
    if tag_len not in (4, 6, 8, 10, 12, 14, 16):
        raise ValueError("ccm: tag_len must be even, 4..16")
    size = 15 - len(nonce)
    if n >> (8 * size):
        raise ValueError("ccm: message too long for a %d-byte nonce" % len(nonce))
    return size


def _cbc_mac(e, nonce, size, msg, aad, tag_len):
    """The unmasked tag T over B0, the length-prefixed aad and msg, each zero-padded."""
    x = bytearray(16)
    x[0] = (0x40 if len(aad) else 0) | ((tag_len - 2) // 2) << 3 | (size - 1)
    x[1:1 + len(nonce)] = nonce
    x[16 - size:] = len(msg).to_bytes(size, "big")
    blk = bytearray(16)
    e.encrypt_block(x, blk)
    x, blk = blk, x
    if len(aad):
        _absorb(e, x, blk, memoryview(_aad_length(len(aad)) + bytes(aad)))
    _absorb(e, x, blk, msg)
    return x


def _aad_length(la):
    if la < 0xFF00:
        return la.to_bytes(2, "big")
    if la >> 32 == 0:
        return b"\xff\xfe" + la.to_bytes(4, "big")
    return b"\xff\xff" + la.to_bytes(8, "big")


def _absorb(e, x, blk, data):
    """CBC-MAC data into the running value x, zero-padding the last block; blk is scratch."""
    n = len(data)
    for off in range(0, n, 16):
        for i in range(16):
            j = off + i
            blk[i] = x[i] ^ data[j] if j < n else x[i]
        e.encrypt_block(blk, x)


def _counter(nonce, size):
    """Counter block A0: flags, nonce, counter 0 in the last `size` bytes."""
    a = bytearray(16)
    a[0] = size - 1
    a[1:1 + len(nonce)] = nonce
    return a


def _ctr_xor(e, ctr, src, dst, n):
    """dst[:n] = src[:n] XOR keystream from the current counter on; leaves ctr advanced."""
    ks = bytearray(16)
    for off in range(0, n, 16):
        e.encrypt_block(ctr, ks)
        for i in range(min(16, n - off)):
            dst[off + i] = src[off + i] ^ ks[i]
        _increment(ctr)


def _increment(ctr):
    i = 15
    while True:
        ctr[i] = (ctr[i] + 1) & 0xFF
        if ctr[i]:
            return
        i -= 1
