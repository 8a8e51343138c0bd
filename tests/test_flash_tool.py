"""tools/flash.py against the virtual device: info, re-provisioning, and every error path
the user can meet, each with its message and its fix."""
import json
import os
import shutil
import subprocess
import sys
import threading
import tty

import pytest
import serial

from firmware.bundle import agent_version
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, EDGEKEEP_PASSPHRASE="owner secret")


def flash(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "flash.py"), *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def assert_error(r, message, fix):
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: " in r.stderr and message in r.stderr, r.stderr
    assert "fix: " in r.stderr and fix in r.stderr, r.stderr


@pytest.fixture
def device(tmp_path):
    with open(tmp_path / "vd.log", "ab") as log:
        with VirtualDevice(str(tmp_path / "flash"), board="esp32", log=log) as dev:
            yield dev


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    key = str(d / "release.key")
    out = {"pub": key + ".pub"}
    for args in (["keygen", "--out", key],
                 ["build", "--board", "esp32", "--sign-key", key, "--out", str(d / "esp32")],
                 ["build", "--board", "pebble", "--sign-key", key, "--out", str(d / "pebble")]):
        r = subprocess.run([sys.executable, "-m", "firmware", *args], cwd=REPO, env=ENV,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    out["esp32"], out["pebble"] = str(d / "esp32"), str(d / "pebble")
    return out


def provision(device, tmp_path, *extra):
    return flash("provision", "--port", device.port, "--gateway", "mqtt://127.0.0.1:1883",
                 "--owner-keyring", str(tmp_path / "keyring.json"), "--wifi", "home", *extra)


def test_provision_then_info_and_deploy_copies_only_changes(tmp_path, device, bundles):
    r = provision(device, tmp_path)
    assert r.returncode == 0, r.stderr
    dev_hex = r.stdout.split("provisioned device ")[1].split()[0]
    config = json.load(open(os.path.join(device.directory, "config.json")))
    assert config["broker"] == "mqtt://127.0.0.1:1883" and config["board"] == "sim"
    assert config["wifi"] == {"ssid": "home", "password": ""}
    from gateway.owner.keyring import Keyring
    ring = Keyring.open(str(tmp_path / "keyring.json"), "owner secret")
    identity = json.load(open(os.path.join(device.directory, "identity.json")))
    assert ring.get(dev_hex).hex() == identity["dk"]  # the owner has the device's data key

    r = flash("deploy", "--port", device.port, "--release-key", bundles["pub"], "--no-reset",
              bundles["esp32"])
    assert r.returncode == 0, r.stderr
    n = len(json.load(open(os.path.join(bundles["esp32"], "manifest.json")))["files"])
    assert "%d of %d files changed" % (n, n) in r.stdout
    assert "deploy [" in r.stderr  # the progress bar
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", device.port, "cat",
                        ":release.pub"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == open(bundles["pub"]).read().strip()  # trusted for OTA from now on
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", device.port, "rm",
                        ":agent/cbor.mpy"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = flash("deploy", "--port", device.port, "--release-key", bundles["pub"], "--no-reset",
              bundles["esp32"])
    assert r.returncode == 0 and "1 of %d files changed" % n in r.stdout, r.stderr

    r = flash("info", "--port", device.port)
    assert r.returncode == 0, r.stderr
    assert "device id:     %s" % dev_hex in r.stdout
    assert "agent version: %s" % agent_version() in r.stdout
    assert "free flash:" in r.stdout and "free heap:" in r.stdout
    assert identity["sk"] not in r.stdout


def test_provisioned_device_is_not_silently_reprovisioned(tmp_path, device):
    assert provision(device, tmp_path).returncode == 0
    assert_error(provision(device, tmp_path), "already provisioned", "--force")


def test_missing_port():
    assert_error(flash("info", "--port", "/dev/ttyUSB97"), "/dev/ttyUSB97 does not exist",
                 "flash.py ports")


def test_busy_port(device):
    holder = serial.Serial(device.port, exclusive=True)
    try:
        assert_error(flash("info", "--port", device.port), "is busy", "close the other program")
    finally:
        holder.close()


def test_board_that_is_not_micropython():
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def echo():  # a device that only echoes, as a modem in command mode does
        while not stop.is_set():
            try:
                data = os.read(master, 1024)
            except OSError:
                return
            os.write(master, data)

    threading.Thread(target=echo, daemon=True).start()
    try:
        assert_error(flash("info", "--port", os.ttyname(slave)), "is not MicroPython",
                     "flash.py firmware --port")
    finally:
        stop.set()
        os.close(slave)
        os.close(master)


def test_board_mismatch(device, bundles):
    assert_error(flash("deploy", "--port", device.port, "--release-key", bundles["pub"],
                       bundles["pebble"]),
                 "the board does not match: expected pebble", "bundle for this one")


def test_flash_full(tmp_path, bundles):
    with open(tmp_path / "vd.log", "ab") as log, \
            VirtualDevice(str(tmp_path / "flash"), board="pebble", log=log) as dev:
        fill = "b = bytes(4096)\nf = open('photos.bin', 'wb')\nfor i in range(50): f.write(b)\nf.close()"
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", dev.port, "exec", fill],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert_error(flash("deploy", "--port", dev.port, "--release-key", bundles["pub"],
                           bundles["pebble"]), "the flash is full", "remove files")
        # the device's own refusal, when a write meets the end of the flash
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", dev.port, "exec",
                            "b = bytes(4096)\nf = open('more.bin', 'wb')\nfor i in range(16): f.write(b)"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "OSError: 28" in r.stdout + r.stderr


def test_bad_signature(tmp_path, device, bundles):
    tampered = str(tmp_path / "tampered")
    shutil.copytree(bundles["esp32"], tampered)
    path = os.path.join(tampered, "manifest.json")
    manifest = json.load(open(path))
    manifest["version"] = "6.6.6"
    json.dump(manifest, open(path, "w"), indent=1, sort_keys=True)
    assert_error(flash("deploy", "--port", device.port, "--release-key", bundles["pub"], tampered),
                 "bundle signature is bad", "--sign-key")


def test_nrf_boards_get_their_route():
    assert_error(flash("firmware", "--port", "/dev/null", "--board", "pebble"),
                 "not flashed with esptool", "docs/flashing.md")


def test_unpinned_image_is_refused_before_anything_is_written(device):
    assert_error(flash("firmware", "--port", device.port, "--board", "esp32"),
                 "no pinned sha256", "python -m firmware pin --board esp32")
