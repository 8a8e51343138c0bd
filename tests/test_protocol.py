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
