"""tools/flash.py against the virtual device: info, re-provisioning, `ports`, progress on a
terminal and off it, and every error path the user can meet, each with its message and its
fix."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import tty

import pytest
import serial
import serial.tools.list_ports
from serial.tools.list_ports_common import ListPortInfo

from firmware.bundle import agent_version
from tools.flashlib import ports
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, EDGEKEEP_PASSPHRASE="owner secret")


def flash(*args, timeout=120, env=ENV):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "flash.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


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
    assert_plain_progress(r.stderr)
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


# -- progress: a bar on a terminal, a few plain lines in a log ----------------------------

def assert_plain_progress(stderr):
    """Not a terminal: a line at the start, at each quarter and at the end; no redraws."""
    assert "\r" not in stderr and "deploy [" not in stderr, stderr[:500]
    lines = [line for line in stderr.splitlines() if line.startswith("deploy: ")]
    assert lines[0].startswith("deploy: 0 of ") and lines[-1].startswith("deploy: done, ")
    assert [q for q in ("(25%)", "(50%)", "(75%)") if any(q in line for line in lines)] \
        == ["(25%)", "(50%)", "(75%)"], lines
    assert len(lines) == 5, lines


def test_deploy_draws_its_progress_bar_only_on_a_terminal(device, bundles):
    master, slave = os.openpty()
    drawn = bytearray()

    def drain():  # the terminal's side: it must keep reading, or the bar blocks on a full pty
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            drawn.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "flash.py"), "deploy",
                            "--port", device.port, "--release-key", bundles["pub"], "--no-reset",
                            bundles["esp32"]], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                           stderr=slave, text=True, timeout=120)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert r.returncode == 0, drawn.decode(errors="replace")[-2000:]
    text = drawn.decode(errors="replace")
    assert "\rdeploy [" in text and "#" * 30 in text  # redrawn in place, up to full
    assert "deploy: 0 of " not in text and "(25%)" not in text


# -- ports: virtual devices listed, likely boards marked, plain UARTs hidden -----------------

def usb_port(device, vid, pid, description):
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description = vid, pid, description
    return p


def test_ports_marks_usb_bridges_of_boards_as_likely():
    found = ports.all_ports([usb_port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART"),
                             usb_port("/dev/ttyUSB1", 0x1A86, 0x7523, "USB Serial"),
                             usb_port("/dev/ttyUSB2", 0x0403, 0x6001, "FT232R USB UART"),
                             usb_port("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG/serial debug unit"),
                             usb_port("/dev/ttyACM1", 0x1234, 0x5678, "a modem"),
                             usb_port("/dev/ttyS0", None, None, "n/a")], [])
    kinds = {p.device: p.kind for p in found}
    assert kinds["/dev/ttyUSB0"] == "likely a board: CP210x (ESP32 boards)"
    assert kinds["/dev/ttyUSB1"] == "likely a board: CH340 (ESP32 boards)"
    assert kinds["/dev/ttyUSB2"] == "likely a board: FTDI"
    assert kinds["/dev/ttyACM0"] == "likely a board: Espressif native USB"
    assert kinds["/dev/ttyACM1"] == "USB serial, unknown chip"
    assert kinds["/dev/ttyS0"] == "unlikely: no USB device"
    lines = ports.listing(found, show_all=False)
    assert [line.split()[0] for line in lines[1:5]] == ["/dev/ttyACM0", "/dev/ttyUSB0",
                                                         "/dev/ttyUSB1", "/dev/ttyUSB2"]
    assert not any(line.startswith("/dev/ttyS0") for line in lines)
    assert "(/dev/ttyS0)" in lines[-1] and "--all" in lines[-1]
    assert any(line.startswith("/dev/ttyS0") and "unlikely" in line
               for line in ports.listing(found, show_all=True))


def table(stdout):
    """`ports`' rows, by port."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.startswith("/dev/")}


def test_ports_lists_running_virtual_devices_and_hides_plain_serial_ports(tmp_path):
    env = dict(ENV, EDGEKEEP_VIRTUAL_DEVICES=str(tmp_path / "registry"))
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "flash.py"),
                             "virtual-device", "--dir", str(tmp_path / "d"), "--board", "pebble"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        port = proc.stdout.readline().strip()
        r = flash("ports", env=env)
        assert r.returncode == 0, r.stderr
        row = table(r.stdout)[port]
        assert "virtual pebble board" in row and str(tmp_path / "d") in row
        plain = [p.device for p in serial.tools.list_ports.comports() if p.vid is None]
        assert not set(plain) & set(table(r.stdout)), r.stdout  # e.g. /dev/ttyS0, not a board
        r = flash("ports", "--all", env=env)
        assert all("unlikely: no USB device" in table(r.stdout)[p] for p in plain), r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert port not in table(flash("ports", env=env).stdout)  # it unregistered as it stopped
    assert os.listdir(tmp_path / "registry") == []


def test_ports_drops_a_virtual_device_that_was_killed(tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (registry / ("%s-5.json" % dead)).write_text(json.dumps(
        {"port": "/dev/pts/0", "board": "esp32", "flash": "/gone", "pid": int(dead)}))
    r = flash("ports", env=dict(ENV, EDGEKEEP_VIRTUAL_DEVICES=str(registry)))
    assert r.returncode == 0 and "/dev/pts/0" not in table(r.stdout), r.stdout
    assert os.listdir(registry) == []
