"""firmware/: bundles (mpy-cross, manifest, ES256 signature), release keys, the freeze
manifest and the pinned image table."""
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from agent.runtime.micropython import MicroPythonDevice
from firmware import bundle, images, signing
from firmware.boards import ROOT, source_files

pytestmark = pytest.mark.integration


def firmware_cli(*args):
    return subprocess.run([sys.executable, "-m", "firmware", *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("fw")
    key = str(d / "release.key")
    r = firmware_cli("keygen", "--out", key)
    assert r.returncode == 0, r.stderr
    r = firmware_cli("build", "--board", "pebble", "--version", "1.2.3", "--sign-key", key,
                     "--out", str(d / "pebble"))
    assert r.returncode == 0, r.stderr
    return {"dir": str(d / "pebble"), "key": key, "public": signing.load_public(key + ".pub")}


def test_bundle_holds_compiled_modules_listed_with_their_sha256(built):
    manifest = bundle.load(built["dir"], built["public"])
    assert manifest["board"] == "pebble" and manifest["version"] == "1.2.3"
    assert manifest["min_micropython"] and manifest["mpy_version"] == 6
    expected = {p[:-3] + ".mpy" for p in source_files("pebble")} | {"main.py", "board.json"}
    assert set(manifest["files"]) == expected
    assert "hw/pebble/bme680.mpy" in expected and "agent/sim.mpy" not in expected
    with open(os.path.join(built["dir"], "board.json")) as f:
        assert json.load(f) == {"board": "pebble", "transport": "slm"}


def test_compiled_modules_run_on_the_micropython_build(built):
    # the bundle as a device's flash: its .mpy come first on sys.path, before the sources
    rc, out, err = MicroPythonDevice(built["dir"], heap=65536).run(
        "import agent.cbor, hw.pebble.nmea\nprint(agent.cbor.__file__, hw.pebble.nmea.__file__)\n"
        "print(agent.cbor.dumps({1: [2, b'x']}))")
    assert rc == 0, err
    assert out.split("\n")[0] == "agent/cbor.mpy hw/pebble/nmea.mpy"
    assert out.split("\n")[1] == repr(b"\xa1\x01\x82\x02Ax")


def test_signature_covers_the_manifest_and_the_files(built, tmp_path):
    import shutil
    copy = str(tmp_path / "b")
    shutil.copytree(built["dir"], copy)
    with open(os.path.join(copy, "agent", "cbor.mpy"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(bundle.BundleError, match="agent/cbor.mpy does not match"):
        bundle.load(copy, built["public"])
    signing.keygen(str(tmp_path / "k"))
    other = signing.load_public(str(tmp_path / "k.pub"))
    with pytest.raises(bundle.BundleError, match="signature is bad"):
        bundle.load(built["dir"], other)
    os.remove(os.path.join(copy, bundle.SIGNATURE))
    with pytest.raises(bundle.BundleError, match="not signed"):
        bundle.load(copy, built["public"])


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(built):
    assert stat.S_IMODE(os.stat(built["key"]).st_mode) == 0o600
    assert signing.load_public(built["key"]) == built["public"]
    r = firmware_cli("keygen", "--out", built["key"])
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr


def test_unsigned_build_says_so(tmp_path):
    r = firmware_cli("build", "--board", "esp32", "--out", str(tmp_path / "u"))
    assert r.returncode == 0, r.stderr
    assert "UNSIGNED" in r.stdout
    assert not os.path.exists(tmp_path / "u" / bundle.SIGNATURE)


def test_freeze_manifest_freezes_what_a_bundle_holds():
    frozen = []
    cwd = os.getcwd()
    os.chdir(os.path.join(ROOT, "firmware"))  # as MicroPython's manifest tool runs it
    try:
        with open("manifest.py") as f:
            exec(f.read(), {"options": type("Options", (), {"board": "pebble"})(),
                            "module": lambda path, base_path, opt: frozen.append(path)})
    finally:
        os.chdir(cwd)
    assert frozen == source_files("pebble")


def test_pinned_images_are_official_and_checked(tmp_path):
    table = images.table()
    for image in table.values():
        assert image["url"] is None or re.match(r"https://micropython\.org/resources/firmware/", image["url"])
        assert image["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", image["sha256"])
    fake = tmp_path / "image.bin"
    fake.write_bytes(b"not the image")
    with pytest.raises(images.ImageError, match="do not flash it"):
        images.check(str(fake), "0" * 64)
    with pytest.raises(images.ImageError, match="no official MicroPython image"):
        images.entry("pebble")
