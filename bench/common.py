"""Shared bench plumbing: fast message preloading and result lines."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESCCM  # noqa: E402

from agent import cose, message  # noqa: E402
from agent.identity import Identity  # noqa: E402


class _OpenSSLSigner:
    """Same ES256 bytes (r||s) as agent.p256, via OpenSSL: preloading 10^4 messages in pure
    Python would take minutes and measure the wrong thing."""

    @staticmethod
    def sign(secret, digest):
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class _OpenSSLCCM:
    @staticmethod
    def seal_into(out, key, nonce, plaintext, aad=b"", tag_len=16):
        out[:] = AESCCM(key, tag_length=tag_len).encrypt(nonce, bytes(plaintext), bytes(aad))


def use_openssl_for_preload():
    cose.p256 = _OpenSSLSigner
    cose.ccm = _OpenSSLCCM


def make_devices(n):
    return [Identity.create(os.urandom) for _ in range(n)]


def signed_batches(devices, per_device, readings=32):
    """[(topic, payload)]: per_device telemetry batches of `readings` readings each."""
    from agent.readings import Batch
    batch = Batch(readings)
    now = time.time()
    for i in range(readings):
        batch.add(now + i, {"temp": 2100 + i, "hum": 4000, "pres": 101000, "gas": 50000,
                            "light": 1000, "ax": 1, "ay": 2, "az": 1000, "lat": 1, "lon": 2,
                            "batt": 4000})
    plain = batch.plaintext()
    out = []
    for ident in devices:
        nonces = message.Nonces(os.urandom)
        for seq in range(1, per_device + 1):
            # base 1: nothing dropped, all still queued on the device (as when it was offline)
            msg = message.seal(ident, nonces, seq, int(now), "t", 1, plain, readings)
            out.append(("ek/%s/up/t" % ident.hex, msg))
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]
