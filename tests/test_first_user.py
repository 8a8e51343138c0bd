"""What a first user meets: `gateway demo` with no simulated devices is a gateway that waits
for a first device, and what it prints is enough to connect one (here a virtual device,
provisioned with the very command the demo printed) and to reach it with `ota push`."""
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration

FLASH = [sys.executable, os.path.join(REPO, "tools", "flash.py")]


def printed(log, pattern):
    """The first match of pattern in what the demo printed so far, or None."""
    return re.search(pattern, log.read_text(errors="replace"), re.M)


def command(line, **values):
    """A command the demo printed, runnable here: `edgekeep-flash` is tools/flash.py, and
    each placeholder (PORT, ...) gets its value."""
    words = shlex.split(line)
    words = [values.get(w, w) for w in words]
    if words[0] == "edgekeep-flash":
        return FLASH + words[1:]
    assert words[0] == "edgekeep", line
    return [sys.executable, "-m", "gateway"] + words[1:]


@pytest.fixture
def demo(tmp_path):
    """`gateway demo --trackers 0 --cameras 0`, no --duration; yields (process, its output)."""
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--trackers", "0",
                                 "--cameras", "0", "--data-dir", str(tmp_path / "demo"),
                                 "--block-time", "1", "--epoch-seconds", "3"],
                                cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_demo_without_devices_waits_for_a_first_device(tmp_path, demo):
    proc, log = demo
    wait_for(lambda: proc.poll() is not None or printed(log, "running until stopped"),
             timeout=120, what="the demo to be ready")
    assert proc.poll() is None, log.read_text()[-3000:]  # it did not exit at once

    broker = printed(log, r"^  broker +(mqtt://127\.0\.0\.1:\d+)$").group(1)
    admin = printed(log, r"^  admin page +(http://\S+) \(password in (\S+)\)$")
    assert admin and os.path.exists(admin.group(2))
    provision = printed(log, r"^  provision +(edgekeep-flash provision .*)$").group(1)
    assert "--gateway %s " % broker in provision
    update = printed(log, r"^  update +(edgekeep ota push .*)$").group(1)
    assert printed(log, r"^  no hardware\? +edgekeep-flash virtual-device --dir ")
    assert printed(log, r"^  deploy +edgekeep-flash deploy --port PORT ")

    # A virtual device, provisioned with the command as printed: the running demo registers
    # it and gives it a broker account.
    with open(tmp_path / "device.log", "ab") as dlog, \
            VirtualDevice(str(tmp_path / "device"), board="esp32", log=dlog) as dev:
        r = subprocess.run(command(provision, PORT=dev.port), cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "own MQTT account" in r.stdout
        device = re.search(r"provisioned device (\w+)", r.stdout).group(1)

    # `ota push` as printed reaches the demo's broker with the gateway's own account; the
    # device (no agent deployed) does not answer, which it says with what to do.
    key = str(tmp_path / "release.key")
    for args in (["keygen", "--out", key],
                 ["build", "--board", "esp32", "--sign-key", key, "--out", str(tmp_path / "b")]):
        r = subprocess.run([sys.executable, "-m", "firmware", *args], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(command(update, ID=device, BUNDLE=str(tmp_path / "b"),
                               **{"release.key.pub": key + ".pub"}) + ["--timeout", "3"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "%s: offered" % device in r.stdout, r.stdout + r.stderr
    assert "no answer within 3 s (last: offered)" in r.stderr and "  fix: " in r.stderr

    assert proc.poll() is None  # still waiting for devices
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert printed(log, r"^stored \d+ messages from 1 devices")
