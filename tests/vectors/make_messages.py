"""Regenerate tests/vectors/messages.json from fixed keys (deterministic: RFC 6979 + fixed nonce).

    .venv/bin/python tests/vectors/make_messages.py
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from agent import message  # noqa: E402
from agent.identity import Identity  # noqa: E402
from agent.readings import Batch  # noqa: E402

READINGS = [
    {"temp": 2345, "hum": 4512, "pres": 101325, "gas": 123456, "light": 30000, "ax": -12,
     "ay": 8, "az": 1002, "lat": 473977420, "lon": 85455940, "batt": 4012},
    {"temp": 2351, "hum": 4498, "pres": 101321, "gas": 124001, "light": 29950, "ax": 3,
     "ay": -5, "az": 998, "lat": None, "lon": None, "batt": 4011},
    {"temp": -1250, "hum": 9990, "pres": 87000, "gas": None, "light": 0, "ax": 0,
     "ay": 0, "az": -1000, "lat": -338688200, "lon": 1512092900, "batt": 3650},
]


def fixed(label, n):
    return hashlib.sha256(label.encode()).digest()[:n]


def identity():
    return Identity(fixed("edgekeep vector device secret", 32), fixed("edgekeep vector data key", 16))


def cases():
    ident = identity()
    boot = fixed("edgekeep vector boot id", 8)
    nonces = message.Nonces(lambda n: boot)
    batch = Batch(8)
    t0 = 1790000000
    for i, r in enumerate(READINGS):
        batch.add(t0 + 10 * i + 0.5 * i, r)
    plain = batch.plaintext()
    telemetry = message.seal(ident, nonces, 7, batch.t0, "t", 5, plain, batch.count)
    health = {"fw": "0.1.0", "up": 3600, "q": 2, "qb": 2048, "drop": 0, "batt": 4011}
    status = message.seal(ident, nonces, 8, t0 + 60, "s", 5, None, None, health)
    common = {"device_secret": ident.secret.hex(), "public_key": ident.public.hex(),
              "device_id": ident.hex, "data_key": ident.data_key.hex(), "boot_id": boot.hex()}
    return [
        dict(common, name="telemetry batch of 3 readings", seq=7, time=batch.t0, kind="t", base=5,
             count=3, nonce=(boot + (1).to_bytes(5, "big")).hex(), readings=READINGS,
             reading_times=[t0, t0 + 10.5, t0 + 21], plaintext=plain.hex(),
             message=telemetry.hex()),
        dict(common, name="status message, no ciphertext", seq=8, time=t0 + 60, kind="s", base=5,
             health=health, message=status.hex()),
    ]


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(__file__), "messages.json")
    with open(out, "w") as f:
        json.dump({"description": "EdgeKeep protocol v1 messages (docs/protocol.md). "
                   "COSE_Sign1(ES256, RFC 6979) over a CBOR envelope holding a "
                   "COSE_Encrypt0(AES-CCM-16-128-128).", "cases": cases()}, f, indent=1)
    print("wrote", out)
