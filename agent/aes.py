# AES block encryption (FIPS-197), forward direction only: CCM needs nothing else.
# Uses the port's cryptolib when it has one, else a byte-oriented pure-Python AES that
# keeps every value a small int (no bigints on 32-bit ports) and allocates nothing per block.
try:
    import cryptolib
    BACKEND = "cryptolib"
except ImportError:
    cryptolib = None
    BACKEND = "python"


def _tables():
    # S-box from the multiplicative inverse (walking GF(2^8) by powers of 3) plus the affine map;
    # also the S-box premultiplied by 2 and 3, the MixColumns coefficients.
    sbox = bytearray(256)
    p = q = 1
    while True:
        p ^= ((p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF  # p *= 3
        q ^= q << 1  # q /= 3
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ (q << 1) ^ (q << 2) ^ (q << 3) ^ (q << 4)
        sbox[p] = (x ^ (x >> 8) ^ 0x63) & 0xFF
        if p == 1:
            break
    sbox[0] = 0x63
    mul2 = bytearray(256)
    mul3 = bytearray(256)
    for i in range(256):
        s = sbox[i]
        s2 = ((s << 1) ^ (0x1B if s & 0x80 else 0)) & 0xFF
        mul2[i] = s2
        mul3[i] = s2 ^ s
    return bytes(sbox), bytes(mul2), bytes(mul3)


_SBOX, _MUL2, _MUL3 = _tables()


def _expand_key(key):
    nk = len(key) // 4
    nr = nk + 6
    w = bytearray(16 * (nr + 1))
    w[:len(key)] = key
    rcon = 1
    t = bytearray(4)
    for i in range(nk, 4 * (nr + 1)):
        j = 4 * i
        if i % nk == 0:  # RotWord, SubWord, Rcon
            t[0] = _SBOX[w[j - 3]] ^ rcon
            t[1] = _SBOX[w[j - 2]]
            t[2] = _SBOX[w[j - 1]]
            t[3] = _SBOX[w[j - 4]]
            rcon = ((rcon << 1) ^ (0x1B if rcon & 0x80 else 0)) & 0xFF
        elif nk > 6 and i % nk == 4:  # SubWord only (AES-256)
            for b in range(4):
                t[b] = _SBOX[w[j - 4 + b]]
        else:
            for b in range(4):
                t[b] = w[j - 4 + b]
        for b in range(4):
            w[j + b] = w[j - 4 * nk + b] ^ t[b]
    return w, nr


class _PythonECB:
    def __init__(self, key):
        self._rk, self._rounds = _expand_key(key)
        self._s = bytearray(16)
        self._t = bytearray(16)

    def encrypt_block(self, src, dst):
        rk = self._rk
        s = self._s
        t = self._t
        sb = _SBOX
        m2 = _MUL2
        m3 = _MUL3
        for i in range(16):
            s[i] = src[i] ^ rk[i]
        o = 16
        for _ in range(self._rounds - 1):
            # SubBytes, ShiftRows, MixColumns and AddRoundKey for one column at a time.
            # State byte i is row i % 4 of column i // 4; ShiftRows takes row r from column c + r.
            for c in range(0, 16, 4):
                a0 = s[c]
                a1 = s[(c + 5) & 15]
                a2 = s[(c + 10) & 15]
                a3 = s[(c + 15) & 15]
                k = o + c
                t[c] = m2[a0] ^ m3[a1] ^ sb[a2] ^ sb[a3] ^ rk[k]
                t[c + 1] = sb[a0] ^ m2[a1] ^ m3[a2] ^ sb[a3] ^ rk[k + 1]
                t[c + 2] = sb[a0] ^ sb[a1] ^ m2[a2] ^ m3[a3] ^ rk[k + 2]
                t[c + 3] = m3[a0] ^ sb[a1] ^ sb[a2] ^ m2[a3] ^ rk[k + 3]
            s, t = t, s
            o += 16
        for i in range(16):  # last round has no MixColumns
            dst[i] = sb[s[(5 * i) & 15]] ^ rk[o + i]


class _CryptolibECB:
    def __init__(self, key):
        # The C method itself, so a block costs one call. axTLS-based ports need dst
        # word-aligned: pass a whole bytearray, not a slice of one.
        self.encrypt_block = cryptolib.aes(key, 1).encrypt


def ecb(key):
    """AES encryptor for a 16- or 32-byte key: encrypt_block(src, dst) writes the
    encryption of the 16-byte block src into the 16-byte writable buffer dst."""
    if len(key) not in (16, 32):
        raise ValueError("aes: key must be 16 or 32 bytes")
    if cryptolib is None:
        return _PythonECB(key)
    return _CryptolibECB(key)
