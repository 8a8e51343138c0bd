"""The admin page decrypts in the browser: its JS (CBOR, COSE, AES-CCM from WebCrypto's CTR and
CBC, the vendored scrypt, the keyring) checked under Node against the protocol vectors and
Python's own implementations."""
import hashlib
import json
import os
import shutil
import subprocess

import cbor2
import pytest

from agent.camera import CLIP
from agent.identity import Identity
from agent.message import Nonces
from agent.objects import ObjectQueue, manifest
from agent.proto import ENV_CIPHERTEXT
from agent.simcamera import Scene
from gateway.owner.export import envelope_of
from gateway.owner.keyring import Keyring
from tests.helpers.vectors import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")]


def clip_frames():
    """Two JPEGs for a clip; the first carries a JPEG thumbnail in an APP1 segment, so its
    bytes hold an EOI marker before the real one."""
    scene = Scene(size=(160, 120), offset=0, walk=4)
    thumb, first, second = scene.jpeg(100), scene.jpeg(1), scene.jpeg(2)
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    return [first[:2] + app1 + first[2:], second]


def camera_object(tmp):
    """A clip as the camera agent makes it: chunks encrypted on 'flash', a signed manifest."""
    ident = Identity.create(os.urandom)
    queue = ObjectQueue(str(tmp / "objects"))
    oid = os.urandom(8)
    w = queue.begin(oid, 1024, ident.data_key, Nonces(os.urandom))
    frames = clip_frames()
    for f in frames:
        w.write(f)
    hashes = w.close()
    queue.commit(w, 7)
    entry = queue.find(oid)
    chunks = [cbor2.loads(queue.read(entry, i))[2] for i in range(entry.count)]
    signed = manifest(ident, 7, 1, 1700000000, oid, "motion", CLIP, w.size, 1024, hashes,
                      w.wrapped_key, w.commit)
    return {"manifest": signed.hex(), "public_key": ident.public.hex(), "key": ident.data_key.hex(),
            "chunks": [c.hex() for c in chunks], "id": oid.hex(), "frames": [f.hex() for f in frames]}


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webcrypto")
    telemetry = load("messages.json")["cases"][0]
    raw = bytes.fromhex(telemetry["message"])
    ring = Keyring(str(tmp / "ring.json"), "correct horse",
                   {telemetry["device_id"]: bytes.fromhex(telemetry["data_key"])})
    ring.save()
    inputs = {
        "ccm": load("ccm.json")["vectors"],
        "encrypt0": {"key": telemetry["data_key"], "ciphertext": envelope_of(raw)[ENV_CIPHERTEXT].hex()},
        "message": {"raw": telemetry["message"], "keys": {telemetry["device_id"]: telemetry["data_key"]}},
        "scrypt": {"password": "pässword", "salt": "00112233445566778899aabbccddeeff", "n": 1024,
                   "r": 8, "p": 1},
        "keyring": {"text": open(ring.path).read(), "passphrase": "correct horse"},
        "object": camera_object(tmp),
    }
    path = tmp / "inputs.json"
    path.write_text(json.dumps(inputs))
    run = subprocess.run(["node", os.path.join(ROOT, "tests", "web_crypto_check.mjs"), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return inputs, json.loads(run.stdout)


def test_aes_ccm_matches_rfc3610_and_nist_vectors(js):
    inputs, out = js
    assert [r.get("ok") for r in out["ccm"]] == [v["plaintext"] for v in inputs["ccm"]]


def test_aes_ccm_rejects_an_altered_tag(js):
    _, out = js
    assert all("authentication failed" in r.get("error", "") for r in out["ccm_tampered"])


def test_encrypt0_of_the_telemetry_vector_opens_to_its_plaintext(js):
    _, out = js
    assert out["encrypt0"] == {"ok": load("messages.json")["cases"][0]["plaintext"]}


def test_a_stored_message_decrypts_to_the_vector_readings(js):
    _, out = js
    case = load("messages.json")["cases"][0]
    got = out["message"]["ok"]
    assert [r["time"] for r in got] == case["reading_times"]
    assert [{k: v for k, v in r.items() if k not in ("time", "seq")} for r in got] == case["readings"]
    assert {r["seq"] for r in got} == {case["seq"]}
    assert "authentication failed" in out["message_wrong_key"]["error"]


def test_vendored_scrypt_matches_hashlib(js):
    inputs, out = js
    s = inputs["scrypt"]
    assert out["scrypt"] == hashlib.scrypt(s["password"].encode(), salt=bytes.fromhex(s["salt"]),
                                           n=s["n"], r=s["r"], p=s["p"], dklen=32).hex()


def test_keyring_written_by_python_opens_in_js_only_with_its_passphrase(js):
    _, out = js
    case = load("messages.json")["cases"][0]
    assert out["keyring"] == {"ok": {case["device_id"]: case["data_key"]}}
    assert "wrong passphrase" in out["keyring_wrong"]["error"]


def test_a_camera_clip_from_the_agent_decrypts_to_its_frames(js):
    inputs, out = js
    obj, frames = inputs["object"], [bytes.fromhex(f) for f in inputs["object"]["frames"]]
    assert len(obj["chunks"]) > 2
    assert out["object"]["ok"] == {
        "id": obj["id"], "type": CLIP, "event": "motion", "chunks": len(obj["chunks"]),
        "sha256": hashlib.sha256(b"".join(frames)).hexdigest(),
        "frames": [hashlib.sha256(f).hexdigest() for f in frames]}


def test_a_camera_object_is_checked_against_its_signed_manifest(js):
    _, out = js
    assert "signature does not verify" in out["object_forged_manifest"]["error"]
    assert "signature does not verify" in out["object_other_device"]["error"]
    assert "not the one its signed manifest lists" in out["object_swapped_chunks"]["error"]
    assert "authentication failed" in out["object_wrong_key"]["error"]
