"""One key per object (docs/protocol.md, "Objects"): each camera object is sealed under its own
random content key, carried wrapped under the device's data key in the signed manifest with a
commitment to the plaintext. The agent (CPython and the real MicroPython), the gateway's
parser, the owner's unwrap and the browser's ekcrypto.js all agree with
tests/vectors/objects.json; sharing one object's key opens that object and nothing else."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from cryptography.exceptions import InvalidTag

from agent import cbor, cose, message
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import (
    CONTENT_KEY_LEN,
    ObjectQueue,
    manifest,
    merkle_root,
)
from agent.proto import ENV_CIPHERTEXT, up_topic
from agent.readings import Batch
from gateway.ingest.objects import ObjectStore
from gateway.owner.export import decrypt_encrypt0, envelope_of
from gateway.owner.objects import (
    LegacyObject,
    chunk_key,
    decrypt_chunks,
    stored_manifest,
    unwrap_content_key,
)
from gateway.store.database import Store
from gateway.wire import objects, protocol
from gateway.wire.objects import CommitmentMismatch
from tests.helpers.camera import keyring_for
from tests.helpers.paths import ENV, REPO
from tests.helpers.vectors import load
from tests.vectors import make_objects

CASES = load("objects.json")["cases"]
CLIP, POSTER = CASES
T = 1790000000


def _hex(c, name):
    return bytes.fromhex(c[name])


def _capture(queue, ident, nonces, seq, plain, chunk_size=128, commit=None, of=None):
    """One object as the camera agent makes it: (oid, signed manifest, its chunks)."""
    oid = os.urandom(8)
    w = queue.begin(oid, chunk_size, ident.data_key, nonces)
    w.write(plain)
    hashes = w.close()
    raw = bytes(manifest(ident, seq, 1, T + seq, oid, "motion", "image/jpeg", w.size, chunk_size,
                         hashes, w.wrapped_key, commit or w.commit, of))
    queue.commit(w, seq, of)
    entry = queue.find(oid)
    return oid, raw, [cbor.loads(queue.read(entry, i))[2] for i in range(entry.count)]


def _legacy(ident, seq, plain, chunk_size=128):
    """An object as the agent made it before content keys: its chunks under the data key, a
    manifest without object keys 8 and 9. (oid, signed manifest, its chunks)."""
    oid, nonces = os.urandom(8), Nonces(os.urandom)
    encs = [bytes(cose.encrypt0(ident.data_key, nonces.next(), plain[i:i + chunk_size]))
            for i in range(0, len(plain), chunk_size)]
    hashes = b"".join(hashlib.sha256(e).digest() for e in encs)
    obj = {0: oid, 1: "motion", 2: "image/jpeg", 3: len(plain), 4: chunk_size, 5: len(encs),
           6: merkle_root(hashes), 7: hashes}
    env = {0: 1, 1: ident.device_id, 2: seq, 3: T + seq, 4: "m", 5: 1, 9: obj}
    return oid, bytes(cose.sign1(ident.secret, ident.device_id, cbor.dumps(env))), encs


# -- the vectors: agent, gateway, owner ---------------------------------------------------------

@pytest.mark.unit
def test_the_agent_makes_the_object_vectors_byte_for_byte():
    assert make_objects.cases() == CASES


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_gateway_reads_each_vector_manifest_as_signed(case):
    raw = _hex(case, "manifest")
    signed = protocol.parse(up_topic(case["device_id"], "m"), raw, len(raw))
    protocol.verify_signature(signed, protocol.load_public_key(_hex(case, "public_key")))
    m = objects.parse_manifest(signed.payload)
    assert (m.oid, m.type, m.size, m.chunk_size, m.count) == (
        case["oid"], case["type"], case["size"], case["chunk_size"], len(case["chunks"]))
    assert m.hashes.hex() == case["hashes"] == "".join(
        hashlib.sha256(bytes.fromhex(c)).hexdigest() for c in case["chunks"])
    assert (m.wrapped_key.hex(), m.commit.hex()) == (case["wrapped_key"], case["commit"])
    assert (m.of.hex() if m.of else None) == case["of"] and not m.legacy


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_owner_unwraps_each_vector_and_its_plaintext_meets_the_commitment(case):
    m = stored_manifest(case["device_id"], _hex(case, "manifest"))
    key = unwrap_content_key(_hex(case, "data_key"), m)
    assert key.hex() == case["content_key"] and len(key) == CONTENT_KEY_LEN
    assert cbor.loads(_hex(case, "wrapped_key")).value[1][5].hex() == case["wrap_nonce"]
    assert [cbor.loads(bytes.fromhex(c)).value[1][5].hex() for c in case["chunks"]] == \
        case["chunk_nonces"]
    chunks = [bytes.fromhex(c) for c in case["chunks"]]
    assert b"".join(decrypt_chunks(_hex(case, "data_key"), m, chunks)).hex() == case["plaintext"]
    opening = objects.opening_for(key)
    assert opening.hex() == case["opening"]
    assert objects.commitment(opening, _hex(case, "plaintext")).hex() == case["commit"]
    objects.check_commitment(m, opening, _hex(case, "plaintext"))


@pytest.mark.unit
def test_a_plaintext_or_opening_other_than_the_committed_one_fails_the_commitment():
    m = stored_manifest(CLIP["device_id"], _hex(CLIP, "manifest"))
    plain, opening = _hex(CLIP, "plaintext"), _hex(CLIP, "opening")
    with pytest.raises(CommitmentMismatch, match="commits to"):
        objects.check_commitment(m, opening, plain[:-1] + bytes([plain[-1] ^ 1]))
    with pytest.raises(CommitmentMismatch, match="commits to"):
        objects.check_commitment(m, _hex(POSTER, "opening"), plain)
    # another object's chunks do not open under this object's key
    with pytest.raises(InvalidTag):
        list(decrypt_chunks(_hex(CLIP, "data_key"), m, [bytes.fromhex(POSTER["chunks"][0])]))


# -- the must-show: sharing one object ------------------------------------------------------------

@pytest.mark.unit
def test_sharing_one_objects_key_does_not_decrypt_any_other_object_of_that_device(tmp_path):
    """Two objects and a telemetry batch from one device: the first object's content key (what
    sharing it reveals) opens its own chunks, and fails AES-CCM authentication on every chunk
    of the other object, on the other's wrapped key and on the readings."""
    ident = Identity.create(os.urandom)
    nonces = Nonces(os.urandom)
    queue = ObjectQueue(str(tmp_path / "objects"))
    shared_plain, other_plain = os.urandom(700), os.urandom(900)
    _, shared_raw, shared_chunks = _capture(queue, ident, nonces, 1, shared_plain)
    _, other_raw, other_chunks = _capture(queue, ident, nonces, 2, other_plain)
    batch = Batch(4)
    batch.add(T, {"temp": 2100, "batt": 4000})
    readings = envelope_of(bytes(message.seal(ident, nonces, 3, T, "t", 1, batch.plaintext(),
                                              batch.count)))[ENV_CIPHERTEXT]

    shared_m = stored_manifest(ident.hex, shared_raw)
    other_m = stored_manifest(ident.hex, other_raw)
    shared_key = unwrap_content_key(ident.data_key, shared_m)  # the owner shares this, only
    assert b"".join(decrypt_encrypt0(shared_key, c) for c in shared_chunks) == shared_plain
    objects.check_commitment(shared_m, objects.opening_for(shared_key), shared_plain)
    assert len(other_chunks) == 8
    for c in other_chunks:
        with pytest.raises(InvalidTag):
            decrypt_encrypt0(shared_key, c)
    with pytest.raises(InvalidTag):
        decrypt_encrypt0(shared_key, other_m.wrapped_key)
    with pytest.raises(InvalidTag):
        decrypt_encrypt0(shared_key, readings)
    # the device's data key, which stays with the owner, opens all of it
    assert b"".join(decrypt_chunks(ident.data_key, other_m, other_chunks)) == other_plain
    assert decrypt_encrypt0(ident.data_key, readings) == batch.plaintext()


# -- the gateway's checks -------------------------------------------------------------------------

def _object_map(**changes):
    raw = _hex(CLIP, "manifest")
    obj = dict(cbor.loads(cbor.loads(raw).value[2])[9])
    for k, v in changes.items():
        if v is None:
            del obj[int(k[1:])]
        else:
            obj[int(k[1:])] = v
    return obj


def _payload(obj):
    return cbor.dumps({0: 1, 1: bytes(8), 2: 5, 3: T, 4: "m", 5: 5, 9: obj})


GOOD_WRAP = _hex(CLIP, "wrapped_key")


@pytest.mark.unit
@pytest.mark.parametrize("obj,why", [
    (_object_map(k8=None), "without key (key 8)"),
    (_object_map(k9=None), "without commit (key 9)"),
    (_object_map(k8=None, k9=None), "without key (key 8)"),
    (_object_map(k8=GOOD_WRAP.hex()), "key has type str"),
    (_object_map(k8=GOOD_WRAP[:-1]), "key of 56 bytes, not 57"),
    (_object_map(k8=GOOD_WRAP + b"\0"), "key of 58 bytes, not 57"),
    (_object_map(k8=bytes(57)), "wrapped key"),
    (_object_map(k8=GOOD_WRAP.replace(b"\x18\x1e", b"\x18\x1f", 1)), "not {1: 30}"),
    (_object_map(k8=GOOD_WRAP.replace(b"\xa1\x05\x4d", b"\xa1\x04\x4d", 1)), "13-byte nonce"),
    (_object_map(k9=bytes(31)), "commit of 31 bytes, not 32"),
    (_object_map(k9=1), "commit has type int"),
    (_object_map(k10=bytes(7)), "of of 7 bytes, not 8"),
    (_object_map(k10="clip"), "of has type str"),
    (_object_map(k10=_hex(CLIP, "oid")), "of itself"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_new_manifest_without_a_good_key_or_commitment_is_bad_manifest(obj, why):
    # a stored manifest with key 8 or 9 is checked as strictly; one with neither is legacy
    for stored in (False, True) if 8 in obj or 9 in obj else (False,):
        with pytest.raises(protocol.Reject) as e:
            objects.parse_manifest(_payload(obj), stored=stored)
        assert e.value.reason == protocol.BAD_MANIFEST and why in e.value.detail


@pytest.mark.unit
def test_a_legacy_manifest_is_read_from_the_store_but_refused_when_new():
    ident = Identity.create(os.urandom)
    plain = os.urandom(300)
    _, raw, encs = _legacy(ident, 4, plain)
    payload = cbor.loads(raw).value[2]
    with pytest.raises(protocol.Reject) as e:
        objects.parse_manifest(payload)
    assert e.value.reason == protocol.BAD_MANIFEST and "key 8" in e.value.detail
    m = objects.parse_manifest(payload, stored=True)
    assert m.legacy and (m.wrapped_key, m.commit, m.of) == (b"", b"", None)
    assert chunk_key(ident.data_key, m) == ident.data_key
    assert b"".join(decrypt_chunks(ident.data_key, m, encs)) == plain
    with pytest.raises(LegacyObject):  # sharing it would share the data key
        unwrap_content_key(ident.data_key, m)
    with pytest.raises(CommitmentMismatch, match="legacy"):
        objects.check_commitment(m, bytes(32), plain)


# -- the agent's queue -----------------------------------------------------------------------------

@pytest.mark.unit
def test_the_queue_keeps_only_the_wrapped_key_with_the_object_across_a_reboot(tmp_path):
    ident = Identity.create(os.urandom)
    key = os.urandom(16)
    queue = ObjectQueue(str(tmp_path / "objects"))
    oid, of = os.urandom(8), os.urandom(8)
    w = queue.begin(oid, 100, ident.data_key, Nonces(os.urandom), lambda n: key)
    plain = os.urandom(1234)
    for i in range(0, len(plain), 77):  # written in pieces: the commitment streams over them
        w.write(plain[i:i + 77])
    w.close()
    assert w.key is None and w.commit == objects.commitment(objects.opening_for(key), plain)
    queue.commit(w, 3, of)
    old = ObjectQueue(str(tmp_path / "objects")).find(oid)  # after a reboot
    assert (old.seq, old.wrapped_key, old.commit, old.of) == (3, w.wrapped_key, w.commit, of)
    assert decrypt_encrypt0(ident.data_key, old.wrapped_key) == key
    for name in os.listdir(w.dir):
        data = open(os.path.join(w.dir, name), "rb").read()
        assert key not in data and objects.opening_for(key) not in data and plain[:16] not in data


@pytest.mark.unit
def test_an_object_queued_by_an_older_firmware_still_loads(tmp_path):
    ident = Identity.create(os.urandom)
    queue = ObjectQueue(str(tmp_path / "objects"))
    oid = os.urandom(8)
    w = queue.begin(oid, 100, ident.data_key, Nonces(os.urandom))
    w.write(os.urandom(250))
    w.close()
    queue.commit(w, 9)
    fields = (9).to_bytes(4, "big") + (3).to_bytes(4, "big")  # the old meta: seq | count | check
    with open(w.dir + "/meta", "wb") as f:
        f.write(fields + hashlib.sha256(fields).digest()[:4])
    old = ObjectQueue(str(tmp_path / "objects")).find(oid)
    assert (old.seq, old.count, old.wrapped_key, old.commit, old.of) == (9, 3, None, None, None)


# -- the owner's export, end to end ---------------------------------------------------------------

def _store_object(store, objs, ident, raw, encs):
    signed = protocol.parse(up_topic(ident.hex, "m"), raw, len(raw))
    env = protocol.open_envelope(signed)
    m = objects.parse_manifest(signed.payload, stored=True)
    with store.transaction():
        store.add_message(ident.hex, env.seq, "m", env.time, None, signed.digest, raw, 0)
        objs.register(env, m, 0)
        for i, c in enumerate(encs):
            objs.add_chunk(objects.Chunk(ident.hex, m.oid, i, c, hashlib.sha256(c).digest()), 0)
        objs.flush()


def _export(tmp_path, data, ident, oid):
    ring, passfile = keyring_for(tmp_path, ident)
    out = tmp_path / ("%s.jpg" % oid.hex())
    run = subprocess.run([sys.executable, "-m", "gateway", "export", "--data-dir", data,
                          "--object", oid.hex(), "--key", ring, "--passphrase-file", passfile,
                          "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=60)
    return run, out


@pytest.mark.integration
def test_export_checks_the_commitment_and_still_opens_legacy_objects(tmp_path):
    data = str(tmp_path / "gw")
    ident = Identity.create(os.urandom)
    store = Store.open(data)
    store.add_device(ident.hex, ident.public, "porch", "camera")
    objs = ObjectStore.open(store)
    queue = ObjectQueue(str(tmp_path / "flash"))
    nonces = Nonces(os.urandom)
    good_plain, bad_plain, old_plain = os.urandom(500), os.urandom(300), os.urandom(200)
    good, good_raw, good_encs = _capture(queue, ident, nonces, 1, good_plain)
    bad, bad_raw, bad_encs = _capture(queue, ident, nonces, 2, bad_plain, commit=bytes(32),
                                      of=good)
    old, old_raw, old_encs = _legacy(ident, 3, old_plain)
    for raw, encs in ((good_raw, good_encs), (bad_raw, bad_encs), (old_raw, old_encs)):
        _store_object(store, objs, ident, raw, encs)
    assert store.objects.get(ident.hex, bad.hex())["parent"] == good.hex()
    store.close()

    run, out = _export(tmp_path, data, ident, good)
    assert run.returncode == 0 and "commitment checked" in run.stderr, run.stderr
    assert out.read_bytes() == good_plain

    run, out = _export(tmp_path, data, ident, bad)  # signed, but not this plaintext's commitment
    assert run.returncode == 1 and "not the one its manifest commits to" in run.stderr
    assert "\nfix: " in run.stderr
    assert not out.exists() and not os.path.exists(str(out) + ".part")

    (tmp_path / "wrong").mkdir()  # a keyring with another key for this device
    run, out = _export(tmp_path / "wrong", data, Identity(ident.secret, os.urandom(16)), good)
    assert run.returncode == 1 and "does not open with the keyring's data key" in run.stderr
    assert "\nfix: pass the owner keyring" in run.stderr and not out.exists()

    run, out = _export(tmp_path, data, ident, old)
    assert run.returncode == 0 and "legacy" in run.stderr, run.stderr
    assert out.read_bytes() == old_plain

    # what the gateway holds opens nothing: no content key, no data key, anywhere in its data
    keys = [unwrap_content_key(ident.data_key, stored_manifest(ident.hex, r))
            for r in (good_raw, bad_raw)] + [ident.data_key]
    for root, _, files in os.walk(data):
        for name in files:
            blob = open(os.path.join(root, name), "rb").read()
            assert not any(k in blob for k in keys), name


# -- the same bytes on MicroPython and in the browser -----------------------------------------------

MP_CODE = """
from binascii import hexlify, unhexlify
from agent import message
from agent.identity import Identity
from agent.objects import ObjectQueue, manifest

ident = Identity(unhexlify("{secret}"), unhexlify("{data_key}"))
nonces = message.Nonces(lambda n: unhexlify("{boot}"))
queue = ObjectQueue("objects")
for c in {cases}:
    oid, key = unhexlify(c["oid"]), unhexlify(c["content_key"])
    of = unhexlify(c["of"]) if c["of"] else None
    w = queue.begin(oid, c["chunk_size"], ident.data_key, nonces, lambda n: key)
    w.write(unhexlify(c["plaintext"]))
    hashes = w.close()
    msg = manifest(ident, c["seq"], c["base"], c["time"], oid, c["event"], c["type"], w.size,
                   c["chunk_size"], hashes, w.wrapped_key, w.commit, of)
    queue.commit(w, c["seq"], of)
    e = queue.find(oid)
    print("manifest", hexlify(msg).decode())
    for i in range(e.count):
        print("chunk", hexlify(queue.read(e, i)).decode())
"""


@pytest.mark.integration
def test_the_micropython_agent_makes_the_object_vectors(tmp_path):
    from agent.runtime.micropython import MicroPythonDevice
    flash = tmp_path / "flash"
    flash.mkdir()
    fields = ("oid", "content_key", "of", "chunk_size", "plaintext", "seq", "base", "time",
              "event", "type")
    code = MP_CODE.format(secret=CLIP["device_secret"], data_key=CLIP["data_key"],
                          boot=CLIP["boot_id"],
                          cases=repr([{k: c[k] for k in fields} for c in CASES]))
    dev = MicroPythonDevice(str(flash), heap=128 * 1024, compiled=True)
    rc, stdout, err = dev.run(textwrap.dedent(code), timeout=300)
    assert (rc, err) == (0, ""), stdout + err
    expected = []
    for c in CASES:
        expected += [("manifest", c["manifest"])] + [("chunk", m) for m in c["chunk_messages"]]
    assert [tuple(line.split(" ", 1)) for line in stdout.splitlines()] == expected


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_agrees_with_the_object_vectors(tmp_path):
    ident = Identity.create(os.urandom)
    old_plain = os.urandom(300)
    _, old_raw, old_encs = _legacy(ident, 4, old_plain)
    inputs = {"cases": CASES, "legacy": {
        "manifest": old_raw.hex(), "public_key": ident.public.hex(),
        "data_key": ident.data_key.hex(), "chunks": [e.hex() for e in old_encs]}}
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(inputs))
    run = subprocess.run(["node", os.path.join(REPO, "tests", "object_keys_check.mjs"), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for case, got in zip(CASES, out["cases"]):
        assert got["manifest"] == {"id": case["oid"], "type": case["type"], "size": case["size"],
                                   "of": case["of"], "wrapped_key": case["wrapped_key"],
                                   "commit": case["commit"]}
        assert got["content_key"] == {"ok": case["content_key"]}
        assert got["plaintext"] == {"ok": case["plaintext"]}
        assert "not the one its device committed to" in got["other_commit"]["error"]
        assert "authentication failed" in got["wrong_data_key"]["error"]
    assert len(out["shared_key_on_other"]) == len(POSTER["chunks"])
    assert all("authentication failed" in r["error"] for r in out["shared_key_on_other"])
    legacy = out["legacy"]
    assert (legacy["wrapped_key"], legacy["commit"]) == (None, None)
    assert legacy["plaintext"] == {"ok": old_plain.hex()}
    assert "predates" in legacy["content_key"]["error"]


@pytest.mark.unit
def test_a_posters_parent_survives_a_backup_replay_and_an_older_delta_has_none(tmp_path):
    from gateway.store.backup import Mark
    source = Store.open(str(tmp_path / "source"))
    with source.transaction():
        for oid, parent in (("00aa", None), ("00bb", "00aa")):
            source.objects.register("bb" * 8, oid, 4, T, "motion", "image/jpeg", 100, 50, 2,
                                    bytes(32), bytes(64), T + 1.0, parent)
    delta, _ = source.backup.delta(Mark(0, 0, 0.0), T + 50.0)
    source.close()
    older = dict(delta, objects=[r[:-1] for r in delta["objects"]])  # before the column
    for n, d in enumerate((delta, older)):
        restored = Store.open(str(tmp_path / ("restored%d" % n)))
        with restored.transaction():
            restored.backup.apply(d, {}.get)
        parents = {o["oid"]: o["parent"] for o in restored.objects.list()}
        assert parents == ({"00aa": None, "00bb": "00aa"} if d is delta else
                           {"00aa": None, "00bb": None})
        restored.close()
