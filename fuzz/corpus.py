"""Inputs shared by the fuzz targets and the tests: the malformed downlinks found by testing
(docs/reliability.md), valid encodings to start from, and a deterministic mutated corpus."""
import random

from agent import cbor

OID = bytes(range(8))

# Each is malformed on every downlink handler: the ack (ek/<id>/down/ack), the chunk ack
# (down/chunks) and the OTA receiver (down/ota).
MALFORMED = {
    "tag as a map key": bytes.fromhex("a1c10000"),
    "empty array": bytes.fromhex("80"),
    "{2: b''}": bytes.fromhex("a10240"),
    "a text string": cbor.dumps("hello"),
    "not CBOR": b"hello, device",
    "empty payload": b"",
    "truncated map": bytes.fromhex("a30001"),
    "huge length head": bytes.fromhex("5bffffffffffffffff"),
    "huge array head": bytes.fromhex("9bffffffffffffffff00"),
    "deeply nested arrays": bytes.fromhex("81" * 200 + "00"),
    "ack far beyond what was sent": cbor.dumps({0: 1, 2: 10 ** 9}),
    "ack with a negative seq": cbor.dumps({0: 1, 2: -1}),
    "ack of a 64-bit seq": cbor.dumps({0: 1, 2: (1 << 64) - 1}),
    "ack with rejected not a list": cbor.dumps({0: 1, 2: 0, 3: 5}),
    "ack with rejected beyond acked": cbor.dumps({0: 1, 2: 0, 3: [1]}),
    "ack of a list seq": cbor.dumps({0: 1, 2: [1]}),
    "ack of version 2": cbor.dumps({0: 2, 2: 0}),
    "chunk ack with negative range": cbor.dumps({0: 1, 1: OID, 2: [-1, 3], 3: 0}),
    "chunk ack with odd ranges": cbor.dumps({0: 1, 1: OID, 2: [0], 3: 0}),
    "chunk ack with a short id": cbor.dumps({0: 1, 1: b"abc", 2: [], 3: 1}),
    "chunk ack with state 7": cbor.dumps({0: 1, 1: OID, 2: [], 3: 7}),
    "ota chunk with a negative index": cbor.dumps(["0.2.0", -1, b""]),
    "ota offer without fields": cbor.dumps({0: 1, 3: 0}),
    "float": bytes.fromhex("fb3ff8000000000000"),
    "indefinite map": bytes.fromhex("bf00ff"),
    "invalid UTF-8 text": bytes.fromhex("62c328"),
}

# Valid encodings the mutations start from.
SEEDS = [
    cbor.dumps({0: 1, 2: 5}),
    cbor.dumps({0: 1, 2: 5, 3: [2, 4]}),
    cbor.dumps({0: 1, 1: OID, 2: [0, 3, 5, 9], 3: 0}),
    cbor.dumps({0: 1, 1: OID, 2: [], 3: 2}),
    cbor.dumps({0: 1, 1: b"{}", 2: bytes(64), 3: 2048, 4: True}),
    cbor.dumps(["0.2.0", 3, b"x" * 40]),
    cbor.dumps([OID]),
    cbor.dumps({"fw": "0.1.0", "up": 3600, "q": 2, "ota": None, "share": {"temp": -12}}),
    cbor.dumps(cbor.Tag(18, [b"\xa1\x01&", {4: b"12345678"}, b"payload", bytes(64)])),
    cbor.dumps([1 << 63, -(1 << 63), 0, -1, 23, 24, 255, 256, 65535, 65536, False, None]),
] + list(MALFORMED.values())


def mutate(rng, data):
    """One random mutation of data: flip, insert, delete, truncate, splice or repeat."""
    b = bytearray(data)
    op = rng.randrange(6)
    if op == 0 and b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        b.insert(rng.randrange(len(b) + 1), rng.choice((0x00, 0x18, 0x1b, 0x5b, 0x7f, 0x9b,
                                                        0xa1, 0xbf, 0xc1, 0xf7, 0xff,
                                                        rng.randrange(256))))
    elif op == 2 and b:
        del b[rng.randrange(len(b))]
    elif op == 3 and b:
        del b[rng.randrange(len(b)):]
    elif op == 4:
        other = rng.choice(SEEDS)
        i = rng.randrange(len(other) + 1)
        b[rng.randrange(len(b) + 1):] = other[i:]
    elif b:
        i = rng.randrange(len(b))
        b[i:i] = b[i:i + rng.randrange(1, 8)] * rng.randrange(1, 5)
    return bytes(b)


def corpus(n=3000, seed=7):
    """n deterministic inputs: the seeds, mutations of them (1 to 4 each), random bytes."""
    rng = random.Random(seed)
    out = list(SEEDS)
    while len(out) < n:
        if rng.randrange(5):
            data = rng.choice(SEEDS)
            for _ in range(rng.randrange(1, 5)):
                data = mutate(rng, data)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        out.append(data)
    return out
