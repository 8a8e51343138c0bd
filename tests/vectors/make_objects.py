"""Regenerate tests/vectors/objects.json: camera objects as the agent makes them (agent/objects.py),
from fixed keys and nonces (docs/protocol.md, "Objects"). Deterministic: RFC 6979 signatures,
the content keys and the boot id fixed.

    .venv/bin/python tests/vectors/make_objects.py
"""
import hashlib
import json
import os
import sys
import tempfile

import cbor2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from agent import message  # noqa: E402
from agent.objects import ObjectQueue, manifest, opening_for  # noqa: E402
from tests.vectors.make_messages import fixed, identity  # noqa: E402

BOOT = fixed("edgekeep vector object boot id", 8)
# (name, seq, oid label, content key label, content type, plaintext bytes, chunk size, of)
OBJECTS = [
    ("clip of 3 chunks", 11, "clip oid", "clip content key", "video/x-motion-jpeg", 300, 128, None),
    ("its poster, of the clip", 12, "poster oid", "poster content key", "image/jpeg", 40, 128,
     "clip oid"),
]


def plaintext(label, n):
    out = b""
    while len(out) < n:
        out += hashlib.sha256(b"%s %d" % (label.encode(), len(out))).digest()
    return out[:n]


def nonce(counter):
    return BOOT + counter.to_bytes(5, "big")


def cases():
    ident = identity()
    nonces = message.Nonces(lambda n: BOOT)
    common = {"device_secret": ident.secret.hex(), "public_key": ident.public.hex(),
              "device_id": ident.hex, "data_key": ident.data_key.hex(), "boot_id": BOOT.hex()}
    out = []
    with tempfile.TemporaryDirectory() as d:
        queue = ObjectQueue(d + "/objects")
        for name, seq, oid_label, key_label, ctype, size, chunk_size, of_label in OBJECTS:
            oid, key = fixed(oid_label, 8), fixed(key_label, 16)
            of = fixed(of_label, 8) if of_label else None
            plain = plaintext(name, size)
            first = nonces.counter + 1
            w = queue.begin(oid, chunk_size, ident.data_key, nonces, lambda n, key=key: key)
            w.write(plain)
            hashes = w.close()
            msg = manifest(ident, seq, 5, 1790000100 + seq, oid, "motion", ctype, w.size,
                           chunk_size, hashes, w.wrapped_key, w.commit, of)
            queue.commit(w, seq, of)
            entry = queue.find(oid)
            chunk_msgs = [queue.read(entry, i) for i in range(entry.count)]
            out.append(dict(
                common, name=name, seq=seq, base=5, time=1790000100 + seq, oid=oid.hex(),
                of=of.hex() if of else None, event="motion", type=ctype, size=size,
                chunk_size=chunk_size, plaintext=plain.hex(), content_key=key.hex(),
                wrap_nonce=nonce(first).hex(), wrapped_key=w.wrapped_key.hex(),
                opening=opening_for(key).hex(), commit=w.commit.hex(),
                chunk_nonces=[nonce(first + 1 + i).hex() for i in range(entry.count)],
                chunks=[cbor2.loads(m)[2].hex() for m in chunk_msgs],
                chunk_messages=[m.hex() for m in chunk_msgs], hashes=hashes.hex(),
                manifest=msg.hex()))
    return out


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(__file__), "objects.json")
    with open(path, "w") as f:
        json.dump({"description": "EdgeKeep camera objects (docs/protocol.md, Objects): each "
                   "under its own content key, wrapped in the signed manifest (object key 8) "
                   "with a commitment to the plaintext (key 9) and, for a poster, its clip "
                   "(key 10).", "cases": cases()}, f, indent=1)
    print("wrote", path)
