"""The peer protocol's pure core (gateway/network/protocol.py) against the shipped vectors
(tests/vectors/network.json, made by tests/vectors/make_network.py) and every refusal."""
import base64
import hashlib

import pytest

from gateway.network import protocol
from gateway.network.identity import Identity
from gateway.store import erasure
from gateway.wire import merkle
from tests.helpers import vectors

pytestmark = pytest.mark.unit

V = vectors.load("network.json")
A = Identity.from_private_bytes(bytes.fromhex(V["identity"]["private"]))
B = Identity.from_private_bytes(bytes.fromhex(V["peer"]["private"]))
NOW = 1765000000


def test_the_vectors_are_what_the_code_makes():
    from tests.vectors.make_network import build
    assert build() == V


def test_identity_name_and_storage_key_follow_the_doc():
    assert A.name == V["identity"]["name"] == A.public.hex()
    assert A.storage_key.hex() == V["identity"]["storage_key"]


def test_an_invitation_round_trips_and_says_who_invites():
    inv = protocol.parse_invitation(V["invitation"]["text"], NOW)
    assert inv == (A.name, "https://a.example:8443", 20 * 10**9, 1800000000,
                   bytes.fromhex(V["invitation"]["token"]))


@pytest.mark.parametrize("mangle, reason", [
    (lambda t: t[:-3] + ("AAA" if t[-3:] != "AAA" else "BBB"), "bad_invitation"),   # signature
    (lambda t: t.replace("ekinv1.", "ekinv2."), "bad_invitation"),
    (lambda t: t.split(".")[0] + ".." + t.split(".")[2], "bad_invitation"),
    (lambda t: t[:20], "bad_invitation"),
])
def test_a_damaged_or_forged_invitation_is_refused(mangle, reason):
    with pytest.raises(protocol.Refused) as e:
        protocol.parse_invitation(mangle(V["invitation"]["text"]), NOW)
    assert e.value.reason == reason


def test_an_invitation_with_another_key_swapped_in_does_not_verify():
    _, payload, sig = V["invitation"]["text"].split(".")
    other = protocol.make_invitation(B, "https://a.example:8443", 1, 1800000000, bytes(16))
    forged = "ekinv1.%s.%s" % (other.split(".")[1], sig)
    with pytest.raises(protocol.Refused, match="signature"):
        protocol.parse_invitation(forged, NOW)


def test_an_expired_invitation_is_refused_with_what_to_do():
    with pytest.raises(protocol.Refused) as e:
        protocol.parse_invitation(V["invitation"]["text"], 1800000001)
    assert e.value.reason == "expired_invitation" and "peer invite" in e.value.detail


def request(**change):
    r = dict(V["request"])
    headers = dict(r["headers"])
    headers.update(change.pop("headers", {}))
    r.update(change)
    return headers, r


def check(headers, r, now=NOW, me=None):
    return protocol.check_request(headers, r["method"], r["path"], bytes.fromhex(r["body"]),
                                  me or A.name, now)


def test_a_signed_request_checks_and_names_its_sender():
    headers, r = request()
    assert protocol.request_string(r["method"], r["path"], r["to"], r["time"], r["nonce"],
                                   bytes.fromhex(r["body"])).decode() == r["string"]
    assert check(headers, r).sender == B.name


@pytest.mark.parametrize("change, now, reason", [
    ({"headers": {"EK-Nonce": "xyz"}}, NOW, "malformed"),
    ({"headers": {"EK-Time": "soon"}}, NOW, "malformed"),
    ({"headers": {"EK-From": "B"}}, NOW, "malformed"),
    ({}, NOW + 301, "stale"),
    ({}, NOW - 301, "stale"),
    ({"body": b"other bytes".hex()}, NOW, "forged"),
    ({"path": "/v1/slots/1"}, NOW, "forged"),
    ({"method": "DELETE"}, NOW, "forged"),
    ({"headers": {"EK-From": A.name}}, NOW, "forged"),
])
def test_a_request_that_is_not_what_was_signed_is_refused(change, now, reason):
    headers, r = request(**change)
    with pytest.raises(protocol.Refused) as e:
        check(headers, r, now)
    assert e.value.reason == reason


def test_a_request_for_another_peer_is_refused():
    headers, r = request()
    with pytest.raises(protocol.Refused) as e:
        check(headers, r, me=B.name)
    assert e.value.reason == "wrong_peer"


def test_a_missing_header_is_malformed():
    headers, r = request()
    del headers["EK-Signature"]
    with pytest.raises(protocol.Refused) as e:
        check(headers, r)
    assert e.value.reason == "malformed"


def test_sealing_is_deterministic_and_only_the_identity_opens_it():
    blob = bytes.fromhex(V["seal"]["blob"])
    sealed = A.seal(blob)
    assert sealed.hex() == V["seal"]["sealed"] and blob not in sealed
    assert A.open(sealed) == blob
    for bad in (B, ):
        with pytest.raises(protocol.Refused):
            bad.open(sealed)
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(protocol.Refused):
        A.open(bytes(flipped))


def test_records_rebuild_the_sealed_blob_and_make_the_agreement_root():
    r = V["records"]
    records = [protocol.parse_record(bytes.fromhex(x)) for x in r["records"]]
    assert {x.index for x in records} == {0, 1, 2}
    sealed = erasure.decode({x.index: x.body for x in records[1:]}, records[0].size, 2, 3)
    assert sealed.hex() == V["seal"]["sealed"]
    assert hashlib.sha256(sealed).hexdigest() == V["seal"]["sealed_digest"]
    leaves = [protocol.leaf(bytes.fromhex(x)) for x in r["records"]]
    assert [x.hex() for x in leaves] == r["leaves"]
    assert merkle.root(leaves).hex() == r["agreement_root"]


@pytest.mark.parametrize("raw", [b"", b"EKN1" + bytes(10), bytes.fromhex(
    V["records"]["records"][0])[:-1], b"XXXX" + bytes.fromhex(V["records"]["records"][0])[4:]])
def test_a_record_that_does_not_fit_its_header_is_a_bad_share(raw):
    with pytest.raises(protocol.Refused) as e:
        protocol.parse_record(raw)
    assert e.value.reason == "bad_share"


def test_audit_slots_come_from_the_seed_alone():
    a = V["audit"]
    slots = protocol.draw_slots(bytes.fromhex(a["seed"]), a["provider"], a["count"], a["n"])
    assert slots == a["slots"] and all(0 <= s < a["count"] for s in slots)
    assert protocol.draw_slots(bytes.fromhex(a["seed"]), a["provider"], 0, 4) == []


def answer_for(slot, record_hexes=None):
    """An answer as a provider makes it, and the owner's root on chain, for two agreements."""
    records = [bytes.fromhex(x) for x in (record_hexes or V["records"]["records"])]
    leaves = [protocol.leaf(x) for x in records]
    root = merkle.root(leaves)
    agreement = [protocol.agreement_leaf(A.name, 5, bytes(32)),
                 protocol.agreement_leaf(B.name, len(leaves), root)]
    answer = {"slot": slot, "record": records[slot], "release": None, "count": len(leaves),
              "root": root, "path": merkle.inclusion_proof(leaves, slot),
              "commit": {"epoch": 7, "index": 1, "size": 2,
                         "path": merkle.inclusion_proof(agreement, 1)}}
    return answer, merkle.root(agreement)


def test_a_good_answer_proves_into_the_root_on_chain():
    answer, owner_root = answer_for(1)
    assert protocol.check_answer(answer, 1, B.name, owner_root, 7) == "ok"


@pytest.mark.parametrize("spoil, reason", [
    (lambda a: a.update(record=a["record"][:-1] + b"\x00"), "wrong_bytes"),
    (lambda a: a["commit"].update(epoch=6), "old_root"),
    (lambda a: a.update(slot=2), "wrong_slot"),
    (lambda a: a.update(record=None), "no_data"),
    (lambda a: a["commit"].update(index=0), "wrong_root"),
])
def test_an_answer_that_does_not_prove_fails_with_its_reason(spoil, reason):
    answer, owner_root = answer_for(1)
    spoil(answer)
    with pytest.raises(protocol.Refused) as e:
        protocol.check_answer(answer, 1, B.name, owner_root, 7)
    assert e.value.reason == reason


def test_a_slot_released_by_its_owner_is_not_a_failure_and_a_made_up_release_is():
    answer, owner_root = answer_for(0)
    release = protocol.sign_request(A, B.name, "DELETE", "/v1/slots/0", b"", NOW, "ab" * 16)
    answer.update(record=None, release=release)
    assert protocol.check_answer(answer, 0, B.name, owner_root, 7, owner=A.name) == "released"
    for forged in (protocol.sign_request(B, B.name, "DELETE", "/v1/slots/0", b"", NOW, "ab" * 16),
                   protocol.sign_request(A, B.name, "DELETE", "/v1/slots/1", b"", NOW, "ab" * 16),
                   {"EK-From": A.name}):
        answer.update(release=forged)
        with pytest.raises(protocol.Refused) as e:
            protocol.check_answer(answer, 0, B.name, owner_root, 7, owner=A.name)
        assert e.value.reason == "no_data"


def test_signature_header_is_base64_of_64_bytes():
    assert len(base64.b64decode(V["request"]["headers"]["EK-Signature"])) == 64
