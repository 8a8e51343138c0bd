"""Canonical CBOR on the wire (RFC 8949 4.2.1; docs/protocol.md, "Canonical CBOR"): the
scanner's rules, the negative vectors rejected as `noncanonical` by the parser and by the
ingest over real Mosquitto, and the agent writing canonical bytes on CPython and on real
MicroPython alike."""
import contextlib
import hashlib
import io
import os
import random
import textwrap

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent import cbor
from agent.objects import manifest, wrap_key
from agent.proto import ACK_SEQ, ACK_VERSION, VERSION
from gateway.ingest.pipeline import Ingest
from gateway.store.database import Store
from gateway.wire import canonical, objects, protocol
from gateway.wire.canonical import Malformed, NotCanonical
from tests.helpers import vectors
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for
from tests.vectors import make_messages, make_noncanonical

# Pure tests are marked unit one by one; the MQTT and MicroPython ones are integration.
unit = pytest.mark.unit

NEG = vectors.load("noncanonical.json")
CASES = NEG["cases"]
BAD = [c for c in CASES if c["expect"] == "noncanonical"]
GOOD = [c for c in CASES if c["expect"] == "ok"]
MESSAGES = vectors.load("messages.json")["cases"]


def topic(case):
    return "ek/%s/up/%s" % (NEG["device_id"], case["kind"])


def read(case):
    """Through the gateway's parse/verify/open path, as the ingest does."""
    raw = bytes.fromhex(case["message"])
    if case["kind"] == "c":
        return objects.parse_chunk(topic(case), raw, 65536)
    signed = protocol.parse(topic(case), raw, 65536)
    protocol.verify_signature(signed, protocol.load_public_key(bytes.fromhex(NEG["public_key"])))
    return protocol.open_envelope(signed)


# -- the vectors --------------------------------------------------------------------------

@unit
def test_vector_file_is_what_the_script_writes():
    ident, cases = make_noncanonical.cases()
    assert (NEG["device_id"], NEG["public_key"]) == (ident.hex, ident.public.hex())
    assert NEG["device_id"] == MESSAGES[0]["device_id"]  # make_messages.py's vector device
    assert cases == CASES
    rules = {c["rule"] for c in BAD}
    assert set(canonical.RULES) <= rules, "a rule without a vector: %s" % (
        set(canonical.RULES) - rules)


@unit
@pytest.mark.parametrize("case", BAD, ids=[c["name"] for c in BAD])
def test_negative_vector_is_rejected_as_noncanonical(case):
    with pytest.raises(protocol.Reject) as e:
        read(case)
    assert e.value.reason == protocol.NONCANONICAL
    assert e.value.detail.endswith("(%s)" % case["rule"]), e.value.detail


@unit
@pytest.mark.parametrize("case", [c for c in BAD if c["kind"] != "c"],
                         ids=[c["name"] for c in BAD if c["kind"] != "c"])
def test_negative_vector_is_validly_signed(case):
    """Only the encoding is wrong: a lenient parser (cbor2) finds a valid ES256 signature."""
    sign1 = cbor2.loads(bytes.fromhex(case["message"]))  # ignores trailing bytes, too
    assert sign1.tag == 18
    protected, unprotected, payload, sig = sign1.value
    assert cbor2.loads(protected) == {1: -7}
    assert unprotected == {4: bytes.fromhex(NEG["device_id"])}
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                       bytes.fromhex(NEG["public_key"]))
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, cbor2.dumps(["Signature1", protected, b"", payload]),
               ec.ECDSA(hashes.SHA256()))
    env = cbor2.loads(payload)
    assert env[0] == 1 and env[4] == case["kind"]


@unit
def test_the_reviewers_duplicate_seq_reads_differently_by_parser():
    """Why the rule: cbor2 keeps the last of a duplicate key (1012), others the first (12)."""
    case = next(c for c in BAD if c["rule"] == "duplicate_key")
    payload = cbor2.loads(bytes.fromhex(case["message"])).value[2]
    assert cbor2.loads(payload)[2] == 1012
    assert b"\x02\x0c\x02\x19\x03\xf4" in payload  # 2: 12, 2: 1012


@unit
@pytest.mark.parametrize("case", GOOD, ids=[c["name"] for c in GOOD])
def test_control_vector_verifies(case):
    env = read(case)
    assert (env.device, env.seq, env.kind) == (NEG["device_id"], case["seq"], case["kind"])


@unit
@pytest.mark.parametrize("case", MESSAGES, ids=[c["name"] for c in MESSAGES])
def test_protocol_vectors_are_canonical(case):
    raw = bytes.fromhex(case["message"])
    canonical.check(raw, {18})
    protected, _, payload, _ = cbor2.loads(raw).value
    canonical.check(protected)
    canonical.check(payload)
    env = cbor2.loads(payload)
    if 7 in env:
        canonical.check(env[7], {16})  # the ciphertext's COSE_Encrypt0
        canonical.check(cbor2.loads(env[7]).value[0])  # its protected header
    assert canonical.loads(payload) == cbor2.loads(payload)


# -- the scanner --------------------------------------------------------------------------

OK = [
    "00", "17", "1818", "18ff", "190100", "19ffff", "1a00010000", "1affffffff",
    "1b0000000100000000", "1bffffffffffffffff",
    "20", "37", "3818", "38ff", "390100", "3b0000000100000000",
    "40", "57" + "00" * 23, "5818" + "00" * 24, "60", "6161", "7818" + "61" * 24,
    "80", "8301820203a0", "a0", "f4", "f5", "f6",
    "a20000016100",                # {0: 0, 1: "\x00"}
    "a3000001000200",              # {0, 1, 2}
    "a2" "1818" "00" "20" "00",    # {24: 0, -1: 0}: bytewise, 0x18 < 0x20
    "a2" "1903e8" "00" "6161" "00",  # {1000: 0, "a": 0}: 0x19 < 0x61
    "a2" "6162" "00" "626161" "00",  # {"b": 0, "aa": 0}: shorter first within a type
    "a3" "20" "00" "37" "00" "3818" "00",  # {-1, -24, -25}
    "a2" "4161" "00" "6161" "00",  # {h'61': 0, "a": 0}: bstr keys before tstr keys
    "a1" "00" "a2" "00" "00" "01" "a1" "00" "00",  # nested maps, each sorted
    "d2" "80",                     # tag 18, allowed by the caller below
]

BAD_CASES = [
    # (hex, rule or "malformed")
    ("1817", "shortest"), ("1900ff", "shortest"), ("1a0000ffff", "shortest"),
    ("1b00000000ffffffff", "shortest"), ("3817", "shortest"), ("3900ff", "shortest"),
    ("5801" + "00", "shortest"), ("7801" + "61", "shortest"), ("980100", "shortest"),
    ("b8010000", "shortest"), ("d81280", "shortest"), ("1800", "shortest"),
    ("5fff", "indefinite"), ("7fff", "indefinite"), ("9fff", "indefinite"), ("bfff", "indefinite"),
    ("5f4100ff", "indefinite"), ("a1009f00ff", "indefinite"),
    ("a2" "01" "00" "00" "00", "key_order"), ("a2" "20" "00" "1818" "00", "key_order"),
    ("a2" "6161" "00" "1903e8" "00", "key_order"), ("a2" "626161" "00" "6162" "00", "key_order"),
    ("a2" "37" "00" "20" "00", "key_order"), ("a2" "6161" "00" "4161" "00", "key_order"),
    ("a1" "00" "a2" "01" "00" "00" "00", "key_order"),  # nested
    ("81" "a2" "01" "00" "00" "00", "key_order"),       # in an array
    ("a2" "00" "00" "00" "01", "duplicate_key"), ("a2" "6161" "00" "6161" "01", "duplicate_key"),
    ("a1" "00" "a2" "05" "00" "05" "00", "duplicate_key"),  # nested
    ("0000", "trailing"), ("a000", "trailing"), ("8000", "trailing"),
    ("f93c00", "float"), ("fa3f800000", "float"), ("fb3ff0000000000000", "float"),
    ("f7", "simple"), ("f0", "simple"), ("f820", "simple"),
    ("c100", "tag"), ("a100c100", "tag"), ("d9d9f700", "tag"),
    ("a1f500", "key_type"), ("a1f600", "key_type"), ("a18000", "key_type"), ("a1a000", "key_type"),
    ("a1c10000", "key_type"),
    ("", "malformed"), ("18", "malformed"), ("1901", "malformed"), ("4261", "malformed"),
    ("8201", "malformed"), ("a101", "malformed"), ("a2010203", "malformed"), ("1c", "malformed"),
    ("ff", "malformed"), ("1f", "malformed"), ("3f", "malformed"), ("df00", "malformed"),
    ("fc", "malformed"), ("5affffffff", "malformed"),
    ("9b" + "ff" * 8, "malformed"), ("bb" + "ff" * 8, "malformed"),
    ("81" * 40 + "00", "malformed"), ("a1" + "00" * 1, "malformed"), ("a16161", "malformed"),
]


@unit
@pytest.mark.parametrize("hexed", OK)
def test_scanner_accepts_deterministic_encodings(hexed):
    data = bytes.fromhex(hexed)
    canonical.check(data, {18})
    assert canonical.loads(data, {18}) == cbor2.loads(data)


@unit
@pytest.mark.parametrize("hexed, rule", BAD_CASES, ids=[h for h, _ in BAD_CASES])
def test_scanner_rejects(hexed, rule):
    data = bytes.fromhex(hexed)
    if rule == "malformed":
        with pytest.raises(Malformed):
            canonical.check(data)
    else:
        with pytest.raises(NotCanonical) as e:
            canonical.check(data)
        assert e.value.rule == rule


@unit
def test_tags_are_allowed_only_where_the_caller_says():
    canonical.check(b"\xc1\x00", tags={1})
    with pytest.raises(NotCanonical):
        canonical.check(b"\xd2\x80")


@unit
def test_cbor2_canonical_is_length_first_and_not_deterministic():
    """cbor2's canonical=True is RFC 7049's length-first order: not what RFC 8949 4.2.1
    (and the gateway) want where keys of several major types meet."""
    d = {-1: 0, 24: 0}
    assert cbor2.dumps(d, canonical=True) == bytes.fromhex("a2200018180" "0")
    with pytest.raises(NotCanonical) as e:
        canonical.check(cbor2.dumps(d, canonical=True))
    assert e.value.rule == "key_order"
    assert cbor.dumps(d) == bytes.fromhex("a2181800" "2000")
    canonical.check(cbor.dumps(d))


def _value(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                           -1, -24, -25, -256, -257, -2**32, -2**64, rng.randrange(-2**40, 2**40)])
    if kind == 1:
        return os.urandom(rng.choice([0, 1, 23, 24, 255, 256, 300]))
    if kind == 2:
        return "".join(rng.choice("ab\u00e9\u20ac") for _ in range(rng.choice([0, 1, 5, 30])))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = [rng.choice([rng.randrange(-300, 70000), "k%d" % rng.randrange(300), "",
                        os.urandom(rng.randrange(3))]) for _ in range(rng.randrange(8))]
    return {k: _value(rng, depth + 1) for k in keys}


def _maps(v):
    if isinstance(v, dict):
        yield v
        for x in v.values():
            yield from _maps(x)
    elif isinstance(v, list):
        for x in v:
            yield from _maps(x)


@unit
def test_agent_encoder_output_is_canonical_and_reads_back():
    rng = random.Random(8949)
    for _ in range(400):
        v = _value(rng)
        data = cbor.dumps(v)
        canonical.check(data)
        assert canonical.loads(data) == v


@unit
def test_swapping_two_keys_of_a_canonical_map_is_caught():
    rng = random.Random(7049)
    swapped = 0
    for _ in range(400):
        v = {"top": _value(rng)}
        for m in _maps(v):
            if len(m) >= 2:
                items = sorted(m.items(), key=lambda kv: cbor.dumps(kv[0]))
                items[0], items[1] = items[1], items[0]
                raw = cbor.head(5, len(items)) + b"".join(cbor.dumps(k) + cbor.dumps(x)
                                                          for k, x in items)
                with pytest.raises(NotCanonical) as e:
                    canonical.check(raw)
                assert e.value.rule == "key_order"
                swapped += 1
    assert swapped > 50


@unit
def test_what_the_gateway_sends_is_canonical():
    """The ack (pipeline), the OTA offer and chunk (gateway/ingest/ota.py) use agent/cbor.py;
    the chunk ack's map goes through cbor2 with keys 0..3 inserted in order, which is
    canonical too (the MQTT test below checks one on the wire)."""
    for seq in (0, 1, 23, 24, 255, 256, 65536, 2**32, 2**40):
        canonical.check(cbor.dumps({ACK_VERSION: VERSION, ACK_SEQ: seq}))
    from gateway.ingest.ota import Release
    release = Release.__new__(Release)
    release.manifest_bytes, release.signature, release.chunk_size = b"{}" * 40, bytes(64), 2048
    for force in (False, True):
        canonical.check(release.offer(force))
    canonical.check(cbor.dumps(["0.2.0", 300, bytes(2048)]))


# -- over real MQTT -----------------------------------------------------------------------

def test_ingest_rejects_every_negative_vector_and_stores_the_control(tmp_path, broker):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ident, _ = make_noncanonical.cases()
    store.add_device(ident.hex, ident.public, "vector device")
    ingest = Ingest(data, broker.url, max_bytes=65536, epoch_seconds=3600)
    ingest.start()
    client = Subscriber(broker.port, "ek/+/down/#")
    try:
        for case in BAD:
            client.publish(topic(case), bytes.fromhex(case["message"]))
        wait_for(lambda: ingest.rejects.get("noncanonical") == len(BAD),
                 what="%d noncanonical rejects" % len(BAD))
        assert store.message_count() == 0
        for case in GOOD:
            client.publish(topic(case), bytes.fromhex(case["message"]))
        wait_for(lambda: ingest.stats["stored"] == len(GOOD), what="the control stored")

        def downlinks(kind):
            with client.lock:
                return [p for t, p in client.messages if t == "ek/%s/down/%s" % (ident.hex, kind)]
        wait_for(lambda: downlinks("ack"), what="an ack")
        assert [cbor.loads(p)[ACK_SEQ] for p in downlinks("ack")] == [1]

        # A canonical manifest and a chunk query: the chunk ack on the wire is canonical too.
        oid = hashlib.sha256(b"canonical test object").digest()[:8]
        hashes = hashlib.sha256(b"chunk").digest()
        client.publish("ek/%s/up/m" % ident.hex,
                       bytes(manifest(ident, 2, 1, 1790000200, oid, "motion", "image/jpeg",
                                      10, 4096, hashes, wrap_key(ident.data_key, bytes(13),
                                                                 bytes(16)), bytes(32))))
        wait_for(lambda: ingest.stats["stored"] == len(GOOD) + 1, what="the manifest stored")
        client.publish("ek/%s/up/c" % ident.hex, cbor.dumps([oid]))
        wait_for(lambda: downlinks("chunks"), what="a chunk ack")
        wait_for(lambda: len(downlinks("ack")) >= 2, what="the manifest's ack")
        for payload in downlinks("ack") + downlinks("chunks"):
            canonical.check(payload)
        assert cbor.loads(downlinks("chunks")[0])[1] == oid

        assert dict(ingest.rejects) == {"noncanonical": len(BAD)}
        assert store.reject_counts() == {"noncanonical": len(BAD)}
        assert [m["seq"] for m in store.messages(device=ident.hex)] == [1, 2]
    finally:
        client.close()
        ingest.stop()

    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.integrations.metrics import SnapshotCollector

    class Monitor:
        snapshot = {"messages": 2, "rejects": Store.open(data).reject_counts(), "duplicates": 0,
                    "devices": {"online": 1, "offline": 0, "revoked": 0}, "queued": 0,
                    "drops": 0, "pending_epochs": 0, "anchor": None, "audit": None,
                    "storage": {"used": 0, "free": 0}, "broker": {"ok": None},
                    "chain": {"ok": None}}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(Monitor()))
    assert ('edgekeep_rejects_total{reason="noncanonical"} %.1f' % len(BAD)
            in generate_latest(registry).decode())


# -- the agent on MicroPython writes the same canonical bytes -----------------------------

# Runs on MicroPython and on CPython; prints `name hex` lines.
AGENT_CODE = """
import hashlib
from binascii import hexlify
from agent import cbor, message
from agent.identity import Identity
from agent.objects import manifest, wrap_key

def fixed(label, n):
    return hashlib.sha256(label.encode()).digest()[:n]

def out(name, b):
    print(name, hexlify(bytes(b)).decode())

ident = Identity(fixed("edgekeep vector device secret", 32), fixed("edgekeep vector data key", 16))
nonces = message.Nonces(lambda n: fixed("edgekeep vector boot id", 8))
health = {"fw": "0.1.0", "up": 3600, "q": 2, "qb": 2048, "drop": 0, "batt": 4011,
          "share": {"temp": -1250, "hum": 9990, "lat": None, "lon": None, "gas": 4294967295},
          "ota": "updated from 0.1.0", "zz": True, "a": False, "longer key than 23 bytes!": -24}
out("envelope", message.envelope(ident.device_id, 7, 1790000000, "t", 5, 3, b"ct" * 20))
out("status", message.seal(ident, nonces, 8, 1790000060, "s", 5, None, None, health))
hashes = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(3))
out("manifest", manifest(ident, 9, 5, 1790000070, fixed("oid", 8), "motion",
                         "video/x-motion-jpeg", 10000, 4096, hashes,
                         wrap_key(ident.data_key, nonces.next(), fixed("content key", 16)),
                         fixed("commit", 32), fixed("clip", 8)))
out("report", message.seal(ident, nonces, 10, 1790000080, "o", 5, None, None,
                           {"ota": "0.2.0", "st": "need", "need": [[0, 3], [5, 300]]}))
out("chunk", cbor.dumps([fixed("oid", 8), 2, bytes(100)]))
out("mixed", cbor.dumps({-1: 0, 24: 1, 1000: 2, "a": 3, "": 4, b"x": 5, -25: 6, 0: [{"b": 1, "aa": 2}],
                         65536: -65537, 2**32: -2**32 - 1}))
"""


def test_micropython_agent_writes_the_same_canonical_bytes_as_cpython(tmp_path):
    from agent.runtime.micropython import MicroPythonDevice
    flash = tmp_path / "flash"
    flash.mkdir()
    dev = MicroPythonDevice(str(flash), heap=128 * 1024, compiled=True)
    rc, stdout, err = dev.run(AGENT_CODE, timeout=300)
    assert (rc, err) == (0, ""), stdout + err
    on_device = dict(line.split(" ", 1) for line in stdout.splitlines())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(textwrap.dedent(AGENT_CODE), "agent_code", "exec"), {})
    on_cpython = dict(line.split(" ", 1) for line in buf.getvalue().splitlines())
    assert set(on_device) == {"envelope", "status", "manifest", "report", "chunk", "mixed"}
    for name, hexed in on_device.items():
        raw = bytes.fromhex(hexed)
        if name in ("status", "manifest", "report"):
            kind = {"status": "s", "manifest": "m", "report": "o"}[name]
            signed = protocol.parse("ek/%s/up/%s" % (NEG["device_id"], kind), raw, 65536)
            protocol.verify_signature(signed, protocol.load_public_key(
                bytes.fromhex(NEG["public_key"])))
            protocol.open_envelope(signed)
            if name == "manifest":
                objects.parse_manifest(signed.payload)
        elif name == "chunk":
            objects.parse_chunk("ek/%s/up/c" % NEG["device_id"], raw, 65536)
        else:
            canonical.check(raw)
        assert hexed == on_cpython[name], name
    assert make_messages.identity().hex == NEG["device_id"]
