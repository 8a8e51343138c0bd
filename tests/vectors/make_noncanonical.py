"""Regenerate tests/vectors/noncanonical.json: messages that break one rule of canonical CBOR
(RFC 8949 4.2.1 core deterministic encoding, EdgeKeep's profile: docs/protocol.md,
"Canonical CBOR"), each validly signed with the vector device's key (make_messages.py), so
that only the encoding is wrong; and the canonical control message, which is accepted.

    .venv/bin/python tests/vectors/make_noncanonical.py

Deterministic (RFC 6979): running it again writes the same file.
"""
import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from agent import cbor, p256  # noqa: E402
from agent.cose import PROTECTED_ES256  # noqa: E402
from agent.objects import merkle_root  # noqa: E402
from tests.vectors.make_messages import identity  # noqa: E402

T = 1790000100
HEALTH = {"fw": "0.1.0", "up": 3600, "q": 2, "qb": 2048, "drop": 0, "batt": 4011}


def h(x):
    """The deterministic encoding of x (agent/cbor.py)."""
    return cbor.dumps(x)


def tstr(s):
    return h(s)


def cmap(pairs, head=None):
    """A map from already-encoded (key, value) pairs, in the order given."""
    return (head if head is not None else cbor.head(5, len(pairs))) + b"".join(
        k + v for k, v in pairs)


def envelope_pairs(dev, seq, kind="s", base=None, health=HEALTH):
    return [(h(0), h(1)), (h(1), h(dev)), (h(2), h(seq)), (h(3), h(T + seq)), (h(4), h(kind)),
            (h(5), h(base or seq)), (h(8), h(health))]


def replace(pairs, key, value):
    return [(k, value if k == h(key) else v) for k, v in pairs]


def sign1(ident, payload, protected=PROTECTED_ES256, tag_head=b"\xd2", array_head=b"\x84",
          end=b"", trailing=b""):
    """A COSE_Sign1 over payload (bytes as given), its signature valid whatever the encoding:
    the Sig_structure is always built in deterministic form from the protected and payload
    bytes. tag_head/array_head/end let a case encode the outer structure its own way."""
    sig_structure = h(["Signature1", protected, b"", payload])
    signature = p256.sign(ident.secret, hashlib.sha256(sig_structure).digest())
    return (tag_head + array_head + h(protected) + h({4: ident.device_id}) + h(payload)
            + h(signature) + end + trailing)


def manifest_pairs(dev, seq, order=None):
    hashes = b"".join(hashlib.sha256(b"chunk %d" % i).digest() for i in range(3))
    obj = [(h(0), h(hashlib.sha256(b"object").digest()[:8])), (h(1), h("motion")),
           (h(2), h("image/jpeg")), (h(3), h(10000)), (h(4), h(4096)), (h(5), h(3)),
           (h(6), h(merkle_root(hashes))), (h(7), h(hashes))]
    if order:
        obj = order(obj)
    return [(h(0), h(1)), (h(1), h(dev)), (h(2), h(seq)), (h(3), h(T + seq)), (h(4), h("m")),
            (h(5), h(seq)), (h(9), cmap(obj))]


def cases():
    ident = identity()
    dev = ident.device_id
    out = []

    def case(name, rule, kind, seq, message, expect="noncanonical"):
        out.append({"name": name, "rule": rule, "kind": kind, "seq": seq,
                    "expect": expect, "message": message.hex()})

    control = cmap(envelope_pairs(dev, 1))
    assert control == h({0: 1, 1: dev, 2: 1, 3: T + 1, 4: "s", 5: 1, 8: HEALTH})
    case("canonical control: status message, seq 1", None, "s", 1, sign1(ident, control), "ok")

    # The reviewer's case: cbor2 keeps the last value (1012), others the first (12).
    pairs = envelope_pairs(dev, 12)
    i = [k for k, _ in pairs].index(h(2))
    dup = pairs[:i + 1] + [(h(2), h(1012))] + pairs[i + 1:]
    case("duplicate key: seq twice, 12 then 1012", "duplicate_key", "s", 12,
         sign1(ident, cmap(dup)))
    case("unsorted keys: envelope keys in descending order", "key_order", "s", 13,
         sign1(ident, cmap(list(reversed(envelope_pairs(dev, 13))))))
    health = cmap(sorted(((h(k), h(v)) for k, v in HEALTH.items()), reverse=True))
    case("unsorted keys: health map's text keys in descending order", "key_order", "s", 14,
         sign1(ident, cmap(replace(envelope_pairs(dev, 14), 8, health))))
    # Length-first ("canonical" in RFC 7049 and cbor2's canonical=True) puts the 1-byte key
    # 0x20 (-1) before 0x18 0x18 (24); bytewise order puts 24 first.
    lf = cmap([(h("a"), h(1)), (h(-1), h(2)), (h(24), h(3))])  # length-first, not bytewise
    case("unsorted keys: health map in length-first order (-1 before 24)", "key_order", "s", 15,
         sign1(ident, cmap(replace(envelope_pairs(dev, 15), 8, lf))))
    case("non-shortest integer: seq as 0x1a 0000000c", "shortest", "s", 12,
         sign1(ident, cmap(replace(envelope_pairs(dev, 12), 2, b"\x1a\x00\x00\x00\x0c"))))
    case("non-shortest length: device id as bstr head 0x58 08", "shortest", "s", 16,
         sign1(ident, cmap(replace(envelope_pairs(dev, 16), 1, b"\x58\x08" + dev))))
    case("non-shortest tag head: COSE_Sign1 tag 18 as 0xd8 12", "shortest", "s", 17,
         sign1(ident, cmap(envelope_pairs(dev, 17)), tag_head=b"\xd8\x12"))
    case("non-shortest integer in the protected header: alg -7 as 0x38 06", "shortest", "s", 18,
         sign1(ident, cmap(envelope_pairs(dev, 18)), protected=b"\xa1\x01\x38\x06"))
    case("indefinite-length map: the envelope", "indefinite", "s", 19,
         sign1(ident, cmap(envelope_pairs(dev, 19), head=b"\xbf") + b"\xff"))
    case("indefinite-length byte string: device id in two chunks", "indefinite", "s", 20,
         sign1(ident, cmap(replace(envelope_pairs(dev, 20), 1,
                                   b"\x5f" + h(dev[:4]) + h(dev[4:]) + b"\xff"))))
    case("indefinite-length array: the COSE_Sign1 array", "indefinite", "s", 21,
         sign1(ident, cmap(envelope_pairs(dev, 21)), array_head=b"\x9f", end=b"\xff"))
    case("trailing bytes: 0x00 after the COSE_Sign1", "trailing", "s", 22,
         sign1(ident, cmap(envelope_pairs(dev, 22)), trailing=b"\x00"))
    case("float: time as a float64 (EdgeKeep uses none)", "float", "s", 23,
         sign1(ident, cmap(replace(envelope_pairs(dev, 23), 3,
                                   b"\xfb" + struct.pack(">d", T + 23)))))
    case("simple value: undefined in the health map", "simple", "s", 24,
         sign1(ident, cmap(replace(envelope_pairs(dev, 24), 8, cmap([(h("q"), b"\xf7")])))))
    case("tag: time as tag 1 (epoch time)", "tag", "s", 25,
         sign1(ident, cmap(replace(envelope_pairs(dev, 25), 3, b"\xc1" + h(T + 25)))))
    case("map key type: true as a key, next to 1, in the health map", "key_type", "s", 26,
         sign1(ident, cmap(replace(envelope_pairs(dev, 26), 8,
                                   cmap([(h(1), h(1)), (b"\xf5", h(2))])))))
    case("unsorted keys: manifest object map in descending order", "key_order", "m", 27,
         sign1(ident, cmap(manifest_pairs(dev, 27, order=lambda o: list(reversed(o))))))
    report = cmap([(h("st"), h("need")), (h("ota"), h("0.2.0")),
                   (h("need"), b"\x81\x82\x00\x19\x00\x05")])  # [[0, 5]], 5 in three bytes
    assert h("ota") < h("need") and h("st") < h("ota")  # bytewise: "st" < "ota" < "need"
    case("non-shortest integer: OTA report need range end as 0x19 0005", "shortest", "o", 28,
         sign1(ident, cmap(replace(envelope_pairs(dev, 28, kind="o"), 8, report))))
    oid = hashlib.sha256(b"object").digest()[:8]
    case("non-shortest integer: chunk index as 0x18 01 (chunk message, not signed)", "shortest",
         "c", None, b"\x83" + h(oid) + b"\x18\x01" + h(b"\xd0" + b"\x00" * 40))
    return ident, out


if __name__ == "__main__":
    ident, cs = cases()
    out = os.path.join(os.path.dirname(__file__), "noncanonical.json")
    with open(out, "w") as f:
        json.dump({"description": "EdgeKeep canonical CBOR (RFC 8949 4.2.1, docs/protocol.md "
                   "'Canonical CBOR'): each case breaks one rule and is otherwise valid, "
                   "signed with this device's key; a gateway rejects it as `expect`. The "
                   "control case is canonical and accepted. Publish on "
                   "ek/<device_id>/up/<kind>.",
                   "device_id": ident.hex, "public_key": ident.public.hex(),
                   "device_secret": ident.secret.hex(), "cases": cs}, f, indent=1)
    print("wrote", out, len(cs), "cases")
