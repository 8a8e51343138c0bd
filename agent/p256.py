# ECDSA over NIST P-256 with SHA-256 digests (FIPS 186-4), deterministic k (RFC 6979).
# Points are Jacobian (X, Y, Z), x = X/Z^2, y = Y/Z^3, Z == 0 at infinity, so a scalar
# multiplication needs one field inversion. k*G uses a 4-tooth comb over a 15-point table
# built on first use: 64 doublings and at most 64 additions per signature. The table is
# kept as bytes (960 B): as 30 bigints and their tuples it would take 3.5 KB of heap.
# Timing depends on the scalar: acceptable for a sensor's key on an MCU, nothing more.
# Each step of the comb makes about 3.5 KB of bigint garbage: the loops collect it (twice
# a step), so a signature needs little heap even where the GC runs only when asked (the
# wasm runtime).
from agent.heap import collect
from agent.sha256hmac import hmac_sha256

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_INFINITY = (1, 1, 0)
_comb = None  # entry i (1..15): sum of bit t of i times 2^(64 t) G, affine (see _entry)


def public_key(secret):
    """65-byte uncompressed SEC1 public key (0x04 || X || Y) for a 32-byte secret."""
    x, y = _affine(_mul_g(_scalar(secret)))
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def sign(secret, digest):
    """64-byte r || s over a 32-byte SHA-256 digest; k from RFC 6979, s not normalised."""
    d = _scalar(secret)
    if len(digest) != 32:
        raise ValueError("p256: digest must be 32 bytes")
    e = int.from_bytes(digest, "big")
    for k in _rfc6979(d, e % N):
        pt = _mul_g(k)
        collect()
        r = _affine(pt)[0] % N
        s = _inverse(k, N) * (e + r * d) % N
        if r and s:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(pub, digest, sig):
    """True if sig (r || s) is a valid signature of digest by the key pub (65 bytes)."""
    q = _decode_point(pub)
    if len(digest) != 32 or len(sig) != 64:
        raise ValueError("p256: digest must be 32 bytes and signature 64")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    w = _inverse(s, N)
    u1 = int.from_bytes(digest, "big") * w % N
    u2 = r * w % N
    # Q has order N (cofactor 1, checked on the curve), so u2 * Q is never infinity.
    pt = _add(_mul_g(u1), _affine(_mul(u2, q)))
    return pt[2] != 0 and _affine(pt)[0] % N == r


def new_secret(urandom):
    """32 uniformly random bytes that are a valid secret (1..N-1), by rejection sampling."""
    while True:
        b = bytes(urandom(32))
        if 0 < int.from_bytes(b, "big") < N:
            return b


def _scalar(secret):
    if len(secret) != 32:
        raise ValueError("p256: secret must be 32 bytes")
    d = int.from_bytes(secret, "big")
    if not 0 < d < N:
        raise ValueError("p256: secret out of range")
    return d


def _decode_point(pub):
    if len(pub) != 65 or pub[0] != 4:
        raise ValueError("p256: public key must be 65 bytes, uncompressed (0x04)")
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:], "big")
    if x >= P or y >= P or (y * y - x * x * x + 3 * x - B) % P:
        raise ValueError("p256: public key is not a point on the curve")
    return x, y


def _rfc6979(d, h):
    """Candidate nonces k for secret d and digest h (already reduced mod N), RFC 6979 3.2."""
    x = d.to_bytes(32, "big")
    m = h.to_bytes(32, "big")
    v = b"\x01" * 32
    k = hmac_sha256(b"\x00" * 32, v, b"\x00", x, m)
    v = hmac_sha256(k, v)
    k = hmac_sha256(k, v, b"\x01", x, m)
    v = hmac_sha256(k, v)
    collect()
    while True:
        v = hmac_sha256(k, v)
        t = int.from_bytes(v, "big")  # qlen == hlen == 256: bits2int is the plain integer
        if 0 < t < N:
            collect()  # the HMACs' garbage, about 3 KB
            yield t
        k = hmac_sha256(k, v, b"\x00")
        v = hmac_sha256(k, v)


def _inverse(a, m):
    """a^-1 mod m by Fermat's little theorem (m prime, a not 0 mod m): the 3-argument pow
    runs in C without garbage, where Euclid's algorithm in Python makes ~25 KB."""
    return pow(a, m - 2, m)


def _affine(pt):
    zi = _inverse(pt[2], P)
    zi2 = zi * zi % P
    return pt[0] * zi2 % P, pt[1] * zi2 * zi % P


def _double(pt):
    # dbl-2001-b (a = -3). Infinity (Z = 0) maps to infinity: Z3 = (Y+Z)^2 - Y^2 - Z^2 = 0.
    x, y, z = pt
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    collect()  # halfway: the peak is half a step's garbage
    z3 = ((y + z) * (y + z) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add(pt, q):
    """Jacobian pt plus affine q (madd-2007-bl), including pt == q, pt == -q and infinity."""
    x1, y1, z1 = pt
    if not z1:
        return q[0], q[1], 1
    zz = z1 * z1 % P
    h = (q[0] * zz - x1) % P
    r = 2 * (q[1] * z1 * zz - y1) % P
    if not h:
        return _double(pt) if not r else _INFINITY
    hh = h * h % P
    i = 4 * hh % P
    j = h * i % P
    v = x1 * i % P
    collect()
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * y1 * j) % P
    z3 = ((z1 + h) * (z1 + h) - zz - hh) % P
    return x3, y3, z3


def _mul(k, q):
    """k * q for an affine point q: plain double-and-add (verification only)."""
    pt = _INFINITY
    for byte in k.to_bytes(32, "big"):  # MicroPython ints have no bit_length()
        for i in range(7, -1, -1):
            pt = _double(pt)
            if (byte >> i) & 1:
                pt = _add(pt, q)
    return pt


def _mul_g(k):
    """k * G with the comb: column j gathers bits j, j+64, j+128, j+192 of k."""
    table = _comb or _build_comb()
    kb = k.to_bytes(32, "big")
    pt = _INFINITY
    for j in range(63, -1, -1):
        collect()
        pt = _double(pt)
        i = 0
        for t in range(4):
            bit = j + 64 * t
            i |= ((kb[31 - (bit >> 3)] >> (bit & 7)) & 1) << t
        if i:
            collect()
            pt = _add(pt, _entry(table, i))
    return pt


def _entry(table, i):
    """Comb entry i as an affine (x, y): 64 bytes at 64 (i - 1)."""
    at = 64 * (i - 1)
    return (int.from_bytes(table[at:at + 32], "big"),
            int.from_bytes(table[at + 32:at + 64], "big"))


def _build_comb():
    global _comb
    table = bytearray(64 * 15)
    top = (GX, GY)
    pt = (GX, GY, 1)
    for t in range(4):
        if t:
            for _ in range(64):
                collect()
                pt = _double(pt)
            top = _affine(pt)  # 2^(64 t) G
        for i in range(1 << t):
            collect()
            q = top if not i else _affine(_add((top[0], top[1], 1), _entry(table, i)))
            at = 64 * ((1 << t) + i - 1)
            table[at:at + 32] = q[0].to_bytes(32, "big")
            table[at + 32:at + 64] = q[1].to_bytes(32, "big")
    _comb = table
    return table
