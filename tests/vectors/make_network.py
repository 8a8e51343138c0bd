"""Writes tests/vectors/network.json: the peer protocol's formats (docs/network.md) for fixed
keys and inputs, so another implementation can check itself byte for byte. Ed25519 and the
sealing are deterministic; nothing here is random.

    .venv/bin/python tests/vectors/make_network.py
"""
import hashlib
import json
import os

from gateway.network import protocol
from gateway.network.identity import Identity
from gateway.store import erasure
from gateway.wire import merkle

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "network.json")


def build():
    a = Identity.from_private_bytes(bytes(range(32)))
    b = Identity.from_private_bytes(bytes(range(32, 64)))
    token = bytes(range(16))
    invitation = protocol.make_invitation(a, "https://a.example:8443", 20 * 10**9, 1800000000,
                                          token)
    body = b"record bytes"
    headers = protocol.sign_request(b, a.name, "PUT", "/v1/slots/0", body, 1765000000,
                                    "00112233445566778899aabbccddeeff")
    blob = b"a stored message's bytes"
    sealed = a.seal(blob)
    k, m = 2, 3
    shares = erasure.encode(sealed, k, m)
    sealed_digest = hashlib.sha256(sealed).digest()
    records = [protocol.make_record(k, m, j, len(sealed), sealed_digest, bytes(s))
               for j, s in enumerate(shares)]
    leaves = [protocol.leaf(r) for r in records]
    agreement_root = merkle.root(leaves)
    agreement_leaf = protocol.agreement_leaf(b.name, len(leaves), agreement_root)
    seed = hashlib.sha256(b"block").digest()
    return {
        "identity": {"private": a.private_bytes().hex(), "name": a.name,
                     "storage_key": a.storage_key.hex()},
        "peer": {"private": b.private_bytes().hex(), "name": b.name},
        "invitation": {"endpoint": "https://a.example:8443", "capacity": 20 * 10**9,
                       "expires": 1800000000, "token": token.hex(), "text": invitation},
        "request": {"method": "PUT", "path": "/v1/slots/0", "to": a.name,
                    "body": body.hex(), "time": 1765000000,
                    "nonce": "00112233445566778899aabbccddeeff",
                    "string": protocol.request_string("PUT", "/v1/slots/0", a.name, 1765000000,
                                                      "00112233445566778899aabbccddeeff",
                                                      body).decode(),
                    "headers": headers},
        "seal": {"blob": blob.hex(), "sealed": sealed.hex(), "sealed_digest": sealed_digest.hex()},
        "records": {"k": k, "m": m, "records": [r.hex() for r in records],
                    "leaves": [x.hex() for x in leaves],
                    "agreement_root": agreement_root.hex(),
                    "agreement_leaf": agreement_leaf.hex()},
        "audit": {"seed": seed.hex(), "provider": b.name, "count": 1000, "n": 4,
                  "slots": protocol.draw_slots(seed, b.name, 1000, 4)},
    }


if __name__ == "__main__":
    with open(OUT, "w") as f:
        json.dump(build(), f, indent=1)
        f.write("\n")
    print("wrote", OUT)
