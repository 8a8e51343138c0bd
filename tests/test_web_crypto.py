"""The admin page decrypts in the browser: its JS (CBOR, COSE, AES-CCM from WebCrypto's CTR and
CBC, the vendored scrypt, the keyring) checked under Node against the protocol vectors and
Python's own implementations."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from agent.proto import ENV_CIPHERTEXT
from gateway.export import envelope_of
from gateway.keyring import Keyring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "tests", "vectors")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def load(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webcrypto")
    telemetry = load("messages.json")["cases"][0]
    raw = bytes.fromhex(telemetry["message"])
    ring = Keyring(str(tmp / "ring.json"), "correct horse", {telemetry["device_id"]: bytes.fromhex(telemetry["data_key"])})
    ring.save()
    inputs = {
        "ccm": load("ccm.json")["vectors"],
        "encrypt0": {"key": telemetry["data_key"], "ciphertext": envelope_of(raw)[ENV_CIPHERTEXT].hex()},
        "message": {"raw": telemetry["message"], "keys": {telemetry["device_id"]: telemetry["data_key"]}},
        "scrypt": {"password": "pässword", "salt": "00112233445566778899aabbccddeeff", "n": 1024, "r": 8, "p": 1},
        "keyring": {"text": open(ring.path).read(), "passphrase": "correct horse"},
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
