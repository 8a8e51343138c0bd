"""The agent on real MicroPython (the WebAssembly build) with a 64 KB heap: protocol vectors,
the heap one batch needs, and trackers running against Mosquitto and a gateway."""
import json
import os
import subprocess
import sys
import textwrap

import cbor2
import pytest

from agent.runtime.micropython import MicroPythonDevice
from gateway.chain import node
from gateway.wire import protocol
from tests.helpers.e2e import (
    assert_stored_exactly_once,
    assert_verify_all,
    cli,
    ledger,
    simulated_trackers,
    start_gateway,
    write_config,
)
from tests.helpers.paths import ENV, REPO
from tests.helpers.vectors import load as load_vectors

pytestmark = pytest.mark.integration

HEAP = 65536

# tests/vectors/make_messages.py's construction, on the device.
VECTOR_CODE = """
    import hashlib, json
    from binascii import hexlify
    from agent import message
    from agent.identity import Identity
    from agent.readings import Batch

    def fixed(label, n):
        return hashlib.sha256(label.encode()).digest()[:n]

    with open("cases.json") as f:
        cases = json.load(f)["cases"]
    tele = cases[0]
    ident = Identity(fixed("edgekeep vector device secret", 32), fixed("edgekeep vector data key", 16))
    boot = fixed("edgekeep vector boot id", 8)
    nonces = message.Nonces(lambda n: boot)
    batch = Batch(8)
    t0 = 1790000000
    for i, r in enumerate(tele["readings"]):
        batch.add(t0 + 10 * i + 0.5 * i, r)
    plain = batch.plaintext()
    print("plaintext", hexlify(plain).decode())
    print("telemetry", hexlify(message.seal(ident, nonces, 7, batch.t0, "t", 5, plain,
                                            batch.count)).decode())
    print("status", hexlify(message.seal(ident, nonces, 8, t0 + 60, "s", 5, None, None,
                                         cases[1]["health"])).decode())
"""


def run_on_device(tmp_path, code, timeout=60):
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    dev = MicroPythonDevice(str(flash), heap=HEAP, compiled=True)
    rc, out, err = dev.run(textwrap.dedent(code), timeout=timeout)
    assert (rc, err) == (0, ""), out + err
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_device_reproduces_the_protocol_vectors(tmp_path):
    (tmp_path / "flash").mkdir()
    vectors = load_vectors("messages.json")
    (tmp_path / "flash" / "cases.json").write_text(json.dumps(vectors))
    out = run_on_device(tmp_path, VECTOR_CODE)
    telemetry, status = vectors["cases"]
    assert out["plaintext"] == telemetry["plaintext"]
    assert out["telemetry"] == telemetry["message"]
    # agent/cbor.py writes map keys in the dict's order, which MicroPython does not keep: the
    # status health map comes out in another key order. Same content, validly signed.
    got, want = cbor2.loads(bytes.fromhex(out["status"])), cbor2.loads(bytes.fromhex(status["message"]))
    assert cbor2.loads(got.value[2]) == cbor2.loads(want.value[2])
    signed = protocol.parse("ek/%s/up/s" % status["device_id"], bytes.fromhex(out["status"]), 4096)
    protocol.verify_signature(signed, protocol.load_public_key(bytes.fromhex(status["public_key"])))


# One 32-reading batch: encode, encrypt, sign (message.seal, as the agent seals it), with the
# agent's code loaded as at boot; then the encryption and the signature timed on their own.
BATCH_CODE = """
    import gc, os, time
    gc.collect()  # this snippet's compilation; the build collects only when asked
    import agent.boot
    from agent import cose, heap, message, p256
    from agent.identity import Identity
    from agent.readings import Batch
    from agent.simsensors import SimTracker

    gc.collect()
    print("code", gc.mem_alloc())
    ident = Identity.create(os.urandom)
    p256.sign(ident.secret, bytes(32))  # the comb table, built once per boot
    sensors = SimTracker("heap test")
    batch = Batch(32)
    for i in range(32):
        batch.add(1790000000 + i, sensors.read())
        gc.collect()  # as the agent's loop does after every reading
    nonces = message.Nonces(os.urandom)
    gc.collect()
    print("live", gc.mem_alloc())
    heap.peak = 0
    msg = message.seal(ident, nonces, 1, batch.t0, "t", 1, batch.plaintext(), batch.count)
    heap.note()
    print("peak", heap.peak)
    print("bytes", len(msg))
    msg = None
    gc.collect()
    t = time.ticks_ms()
    ct = cose.encrypt0(ident.data_key, nonces.next(), batch.plaintext())
    print("encrypt_ms", time.ticks_diff(time.ticks_ms(), t))
    t = time.ticks_ms()
    cose.sign1(ident.secret, ident.device_id, ct)
    print("sign_ms", time.ticks_diff(time.ticks_ms(), t))
"""


def test_one_32_reading_batch_fits_a_64k_heap(tmp_path):
    out = run_on_device(tmp_path, BATCH_CODE)
    print("\n32-reading batch on MicroPython, %d-byte heap: code %s B, live %s B before, "
          "peak %s B, message %s B; encrypt %s ms, sign %s ms"
          % (HEAP, out["code"], out["live"], out["peak"], out["bytes"], out["encrypt_ms"],
             out["sign_ms"]))
    assert int(out["live"]) < int(out["peak"]) < HEAP
    assert int(out["bytes"]) > 32 * 34  # the readings, encrypted, are all in it


def test_micropython_trackers_60s_against_a_gateway(tmp_path, broker):
    data = str(tmp_path / "gw")
    keys = str(tmp_path / "devices")
    record = str(tmp_path / "produced.jsonl")
    simulated_trackers(keys, 2)
    log = open(tmp_path / "run.log", "ab")
    gw = None
    try:
        r = cli("gateway", "devices", "import", "--data-dir", data, "--file",
                os.path.join(keys, "devices.json"))
        assert r.returncode == 0, r.stderr
        env = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")
        r = cli("gateway", "keyring", "--keyring", str(tmp_path / "owner.keyring"),
                "--from-dir", keys, env=env)
        assert r.returncode == 0, r.stderr
        gw = start_gateway(write_config(str(tmp_path / "gateway.toml"), data, broker.url), log)
        trackers = subprocess.run(
            [sys.executable, "-m", "agent", "sim", "--runtime", "micropython", "--heap",
             str(HEAP), "--trackers", "2", "--broker", broker.url, "--keys", keys,
             "--duration", "60", "--sample-interval", "1", "--upload-interval", "4",
             "--record", record],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=150)
        out = trackers.stdout + trackers.stderr
        log.write(out.encode())
        assert trackers.returncode == 0, out[-3000:]
        assert "exited with status" not in out, out[-3000:]
        peaks = [int(line.rsplit("=", 1)[1]) for line in out.splitlines() if "HEAP peak=" in line]
        assert peaks and max(peaks) < HEAP
        print("\nheap peak over 60 s: %d bytes" % max(peaks))
        gw.terminate()
        assert gw.wait(60) == 0
        gw = None

        produced = ledger(record)
        assert len(produced) == 2 and all(len(v) >= 50 for v in produced.values())
        pf = tmp_path / "pass"
        pf.write_text("owner secret\n")
        assert_stored_exactly_once(data, produced, str(tmp_path / "owner.keyring"), str(pf))
        assert_verify_all(data)
    finally:
        if gw is not None:
            gw.kill()
            gw.wait()
        node.stop_running(data)


def test_demo_with_micropython_trackers(tmp_path):
    data = str(tmp_path / "demo")
    try:
        r = cli("gateway", "demo", "--runtime", "micropython", "--trackers", "1", "--duration",
                "20", "--data-dir", data, "--block-time", "1", "--epoch-seconds", "5",
                "--sample-interval", "1", "--upload-interval", "4", timeout=180)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        assert "exited with status" not in r.stdout, r.stdout[-3000:]
        assert_verify_all(data)
    finally:
        node.stop_running(data)
