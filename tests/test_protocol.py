"""Protocol v1: the shipped vectors, checked by the agent, the gateway and pycose."""
import json
import os

import cbor2
import pytest
from pycose.headers import IV, KID
from pycose.keys import EC2Key, SymmetricKey
from pycose.keys.curves import P256
from pycose.messages import CoseMessage, Enc0Message, Sign1Message

from agent import cbor
from agent.readings import unpack
from gateway.wire import protocol
from tests.vectors import make_messages

pytestmark = pytest.mark.unit

VECTORS = json.load(open(os.path.join(os.path.dirname(__file__), "vectors", "messages.json")))
CASES = VECTORS["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_agent_reproduces_vector_byte_for_byte(case):
    fresh = {c["name"]: c for c in make_messages.cases()}[case["name"]]
    assert fresh["message"] == case["message"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_pycose_verifies_signature(case):
    msg = CoseMessage.decode(bytes.fromhex(case["message"]))
    assert isinstance(msg, Sign1Message)
    pub = bytes.fromhex(case["public_key"])
    msg.key = EC2Key(crv=P256, x=pub[1:33], y=pub[33:])
    assert msg.verify_signature()
    assert msg.uhdr[KID] == bytes.fromhex(case["device_id"])


def test_pycose_rejects_tampered_signature():
    case = CASES[0]
    raw = bytearray(bytes.fromhex(case["message"]))
    raw[-1] ^= 1
    msg = CoseMessage.decode(bytes(raw))
    pub = bytes.fromhex(case["public_key"])
    msg.key = EC2Key(crv=P256, x=pub[1:33], y=pub[33:])
    assert not msg.verify_signature()


def test_pycose_decrypts_ciphertext_to_the_readings():
    case = CASES[0]
    sign1 = CoseMessage.decode(bytes.fromhex(case["message"]))
    env = cbor2.loads(sign1.payload)
    enc0 = CoseMessage.decode(env[7])
    assert isinstance(enc0, Enc0Message)
    assert enc0.uhdr[IV] == bytes.fromhex(case["nonce"])
    enc0.key = SymmetricKey(k=bytes.fromhex(case["data_key"]))
    plain = enc0.decrypt()
    assert plain.hex() == case["plaintext"]
    rows = unpack(plain, case["time"])
    for row, want, t in zip(rows, case["readings"], case["reading_times"]):
        assert row["time"] == t
        for k, v in want.items():
            assert row[k] == v, k


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_gateway_accepts_vector(case):
    raw = bytes.fromhex(case["message"])
    topic = "ek/%s/up/%s" % (case["device_id"], case["kind"])
    signed = protocol.parse(topic, raw, 65536)
    protocol.verify_signature(signed, protocol.load_public_key(bytes.fromhex(case["public_key"])))
    env = protocol.open_envelope(signed)
    assert (env.device, env.seq, env.time, env.kind, env.base) == (
        case["device_id"], case["seq"], case["time"], case["kind"], case["base"])
    if "health" in case:
        assert dict(env.health) == case["health"]


def test_device_id_is_sha256_prefix_of_public_key():
    import hashlib
    case = CASES[0]
    assert hashlib.sha256(bytes.fromhex(case["public_key"])).hexdigest()[:16] == case["device_id"]


def test_agent_cbor_matches_cbor2_both_ways():
    values = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, -1, -24, -25, -2**32,
              b"", b"\x00" * 300, "", "h\u00e9llo", [], [1, [2, [3]]], {}, {1: b"x", 2: "y"},
              True, False, None]
    for v in values:
        assert cbor.dumps(v) == cbor2.dumps(v), v
        assert cbor.loads(cbor2.dumps(v)) == v


@pytest.mark.parametrize("bad", [b"", b"\x18", b"\x19\x01", b"\x42a", b"\x82\x01",
                                 b"\x5a\xff\xff\xff\xff", b"\x9b" + b"\xff" * 8, b"\x01\x02",
                                 b"\xa1\x80\x01", b"\x1c", b"\xf7", b"\x81" * 40 + b"\x00"])
def test_agent_cbor_rejects_malformed(bad):
    with pytest.raises(ValueError):
        cbor.loads(bad)


def test_agent_cbor_map_keys_are_in_deterministic_order():
    """RFC 8949 4.2.1: keys sorted by the bytewise order of their encodings."""
    for d in ({"qb": 1, "q": 2, "fw": "x", "up": 3, "drop": 0}, {10: 1, 2: 2, -1: 3, 300: 4}):
        ordered = dict(sorted(d.items(), key=lambda kv: cbor2.dumps(kv[0])))
        assert cbor.dumps(d) == cbor2.dumps(ordered)
        assert cbor.dumps(dict(reversed(list(d.items())))) == cbor.dumps(d)


# -- the ranges open_envelope and parse_manifest check (docs/protocol.md) -------------------

def _signed_envelope(env, kind="t"):
    """env (a dict, keys 1 and 4 filled in) signed by a fresh device, through parse and
    verify_signature as the ingest does."""
    import hashlib as _hashlib
    import os as _os

    from agent import cose
    from agent.identity import Identity
    ident = Identity.create(_os.urandom)
    env = {0: 1, 1: ident.device_id, 2: 5, 3: 1790000000, 4: kind, 5: 5, **env}
    raw = bytes(cose.sign1(ident.secret, ident.device_id, cbor.dumps(env)))
    signed = protocol.parse("ek/%s/up/%s" % (ident.hex, kind), raw, 65536)
    protocol.verify_signature(signed, protocol.load_public_key(ident.public))
    assert signed.digest == _hashlib.sha256(raw).digest()
    return signed


@pytest.mark.parametrize("fields", [
    {2: 1, 5: 1}, {2: protocol.MAX_SEQ, 5: 1}, {2: protocol.MAX_SEQ, 5: protocol.MAX_SEQ},
    {3: 0}, {3: protocol.MAX_TIME}, {6: 0}, {6: protocol.MAX_COUNT},
])
def test_open_envelope_accepts_the_ends_of_every_range(fields):
    env = protocol.open_envelope(_signed_envelope(fields))
    assert (env.seq, env.time, env.base) == (fields.get(2, 5), fields.get(3, 1790000000),
                                             fields.get(5, 5))


@pytest.mark.parametrize("fields", [{2: 0, 5: 0}, {2: 2**32}, {2: 2**63}, {2: 2**64 - 1}])
def test_a_sequence_out_of_range_is_out_of_range_and_never_acked(fields):
    """No sequence the gateway could record or ack past: a plain Reject, not Refused."""
    with pytest.raises(protocol.Reject) as e:
        protocol.open_envelope(_signed_envelope(fields))
    assert e.value.reason == protocol.OUT_OF_RANGE
    assert not isinstance(e.value, protocol.Refused)


@pytest.mark.parametrize("fields", [
    {5: 0}, {5: 6}, {5: 2**63}, {3: 2**32}, {3: 2**63}, {3: 2**64 - 1}, {6: 2**16},
    {6: 2**63},
])
def test_other_integers_out_of_range_refuse_the_signed_sequence(fields):
    signed = _signed_envelope(fields)
    with pytest.raises(protocol.Refused) as e:
        protocol.open_envelope(signed)
    assert e.value.reason == protocol.OUT_OF_RANGE
    assert (e.value.device, e.value.seq, e.value.digest) == (signed.device, 5, signed.digest)


def test_a_negative_count_is_out_of_range():
    """A CBOR negative integer is an int: the uint fields' ranges refuse it."""
    with pytest.raises(protocol.Refused) as e:
        protocol.open_envelope(_signed_envelope({6: -1}))
    assert e.value.reason == protocol.OUT_OF_RANGE


@pytest.mark.parametrize("health", [
    {"fw": "0.1.0", "up": 3600, "q": 2, "qb": 2048, "drop": 0, "batt": 4011,
     "share": {"temp": -1250, "lat": None}, "ota": "updated from 0.1.0", "ok": True},
    {"ota": "0.2.0", "st": "need", "need": [[0, 3], [5, 300]]},   # an OTA report (kind o)
    {}, {"big": 2**64 - 1},
])
def test_health_maps_a_device_sends_pass(health):
    env = protocol.open_envelope(_signed_envelope({8: health}, kind="s"))
    assert dict(env.health) == health


@pytest.mark.parametrize("health", [
    {1: 2}, {"fw": "x", 1: 2}, {"share": {1: 2}}, {"fw": b"bytes"},
    {"a": {"b": {"c": {"d": 1}}}}, {"need": [[[[1]]]]}, {"share": [{-1: 0}]},
])
def test_a_health_map_of_other_keys_or_values_is_bad_health(health):
    with pytest.raises(protocol.Refused) as e:
        protocol.open_envelope(_signed_envelope({8: health}, kind="s"))
    assert e.value.reason == protocol.BAD_HEALTH


def _object(**changes):
    import hashlib as _hashlib

    from agent.objects import merkle_root, wrap_key
    hashes = b"".join(_hashlib.sha256(b"chunk %d" % i).digest() for i in range(3))
    obj = {0: b"objectid", 1: "motion", 2: "image/jpeg", 3: 10000, 4: 4096, 5: 3,
           6: merkle_root(hashes), 7: hashes, 8: wrap_key(bytes(16), bytes(13), bytes(16)),
           9: bytes(32)}
    for k, v in changes.items():
        key = int(k[1:])
        if v is None:
            del obj[key]
        else:
            obj[key] = v
    return obj


def _manifest_payload(obj):
    return cbor.dumps({0: 1, 1: b"deviceid", 2: 5, 3: 1790000000, 4: "m", 5: 5, 9: obj})


def test_parse_manifest_reads_a_good_object_map():
    from gateway.wire import objects
    m = objects.parse_manifest(_manifest_payload(_object()))
    assert (m.oid, m.size, m.chunk_size, m.count) == (b"objectid".hex(), 10000, 4096, 3)
    ends = _object(k3=0, k4=1, k5=3)  # size 0, one-byte chunks: the ends of their ranges
    assert objects.parse_manifest(_manifest_payload(ends)).chunk_size == 1


@pytest.mark.parametrize("obj", [
    [], [b"objectid"], [b"objectid", "motion", "image/jpeg"], "x", b"", 5, None, {},
    _object(k7=None), _object(k0=None), _object(k3="10000"), _object(k3=True),
    _object(k3=2**63), _object(k3=2**64 - 1), _object(k3=12289), _object(k3=-1),
    _object(k4=0), _object(k4=65281), _object(k4=2**63), _object(k5=0), _object(k5=2**63),
    _object(k5=4), _object(k0=b"short"), _object(k6=b"\0" * 32), _object(k6=b"\0"),
    {0: b"objectid", 1: "motion"},                       # an object map cut short
], ids=lambda o: repr(o)[:40])
def test_a_bad_object_map_is_bad_manifest_and_nothing_else(obj):
    from gateway.wire import objects
    with pytest.raises(protocol.Reject) as e:
        objects.parse_manifest(_manifest_payload(obj))
    assert e.value.reason == protocol.BAD_MANIFEST


def test_parse_manifest_raises_only_reject_on_any_cut_or_changed_byte():
    """Every prefix of a manifest envelope and every single-byte change of it: a Reject or a
    Manifest, never cbor2's CBORDecodeEOF, an IndexError or any other exception."""
    from gateway.wire import objects
    payload = _manifest_payload(_object())
    variants = [payload[:i] for i in range(len(payload))]
    variants += [payload[:i] + bytes([b]) + payload[i + 1:]
                 for i in range(0, 60) for b in (0x00, 0x18, 0x1b, 0x40, 0x80, 0xa0, 0xff)]
    for v in variants:
        try:
            objects.parse_manifest(v)
        except protocol.Reject:
            pass
