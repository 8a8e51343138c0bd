"""A virtual device whose agent runs is reached as a board is: every mpremote command and
flash.py command interrupts the agent with Ctrl-C and works, a second deploy fits in the
heap, and the data the agent sent before and after still verifies (issue #18)."""
import os
import select
import subprocess
import termios
import time

import pytest

from tests.helpers.deployed import MPREMOTE, Gateway, flash, mpremote, release
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration


@pytest.fixture
def device(tmp_path):
    with open(tmp_path / "virtual-device.log", "ab") as log:
        with VirtualDevice(str(tmp_path / "flash"), board="esp32", log=log) as dev:
            yield dev


def restart_agent(dev, gateway):
    """Hard-resets the device and waits for a new message: the agent runs again."""
    before = gateway.message_count()
    r = mpremote(dev.port, "reset")
    assert r.returncode == 0, r.stderr
    gateway.wait_for_messages(before, "the agent to run again after a reset")


def repl_answers(port, typed):
    """`mpremote repl` on a terminal: Ctrl-C, then `typed` and Enter; returns what it showed."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*MPREMOTE, "connect", port, "repl"], cwd=REPO, env=ENV,
                            stdin=slave, stdout=slave, stderr=slave)
    shown = bytearray()

    def read_until(text, timeout=30):
        end = time.monotonic() + timeout
        while text not in shown and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                shown.extend(os.read(master, 4096))
        return text in shown

    try:
        assert read_until(b"to exit this shell"), shown
        # Typed keys go to the board only once mpremote has made the terminal raw.
        wait_for(lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, what="a raw terminal")
        os.write(master, b"\x03")
        assert read_until(b">>> "), shown
        shown.clear()
        os.write(master, typed + b"\r")
        read_until(b"\r\n>>> ")
        os.write(master, b"\x1d")  # Ctrl-]: leave mpremote
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    return bytes(shown)


def test_a_running_agent_lets_every_tool_in(tmp_path, device, broker):
    bundles = release(str(tmp_path), ["9.9.1", "9.9.2"])
    gateway = Gateway(str(tmp_path / "gateway"), broker)
    gateway.provision(device.port)
    gateway.start()
    try:
        r = flash("deploy", "--port", device.port, "--release-key", bundles["pub"],
                  bundles["9.9.1"])
        assert r.returncode == 0, r.stdout + r.stderr
        gateway.wait_for_messages(0, "the deployed agent's first message")

        main_size = os.path.getsize(os.path.join(bundles["9.9.1"], "main.py"))
        r = mpremote(device.port, "ls", ":")
        assert r.returncode == 0, r.stderr
        assert "%12d main.py" % main_size in r.stdout and " agent/" in r.stdout, r.stdout

        restart_agent(device, gateway)
        extra = tmp_path / "extra"
        (extra / "pkg").mkdir(parents=True)
        (extra / "pkg" / "note.py").write_text("TEXT = 'copied'\n")
        r = mpremote(device.port, "cp", "-r", str(extra / "pkg"), ":")
        assert r.returncode == 0, r.stderr
        assert open(os.path.join(device.directory, "pkg", "note.py")).read() == "TEXT = 'copied'\n"

        restart_agent(device, gateway)
        mounted = tmp_path / "mounted"
        mounted.mkdir()
        (mounted / "probe.py").write_text("VALUE = 6 * 7\n")
        r = mpremote(device.port, "mount", str(mounted), "exec",
                     "import probe; print('probe', probe.VALUE)")
        assert r.returncode == 0 and "probe 42" in r.stdout, r.stdout + r.stderr

        restart_agent(device, gateway)
        r = mpremote(device.port, "exec", "print('sum', 1 + 1)", text=False)
        assert r.returncode == 0 and r.stdout == b"sum 2\r\n", r.stdout + r.stderr  # CRLF

        restart_agent(device, gateway)
        r = mpremote(device.port, "df")
        assert r.returncode == 0 and "%d" % (2048 * 1024) in r.stdout, r.stdout + r.stderr

        restart_agent(device, gateway)
        r = mpremote(device.port, "soft-reset", "exec", "import sys; print(sorted(sys.modules))")
        assert r.returncode == 0 and "agent.boot" not in r.stdout, r.stdout + r.stderr

        restart_agent(device, gateway)
        shown = repl_answers(device.port, b"1+1")
        assert shown.startswith(b"1+1\r\n2\r\n>>> "), shown  # echoed, answered, CRLF endings

        restart_agent(device, gateway)
        r = flash("info", "--port", device.port)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the agent is running on %s; interrupting it" % device.port in r.stderr
        assert "agent version: 9.9.1" in r.stdout

        restart_agent(device, gateway)
        r = flash("deploy", "--port", device.port, "--release-key", bundles["pub"],
                  bundles["9.9.2"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "deployed esp32 9.9.2" in r.stdout and "the agent is running" in r.stderr
        gateway.wait_for_messages(gateway.message_count(), "a message from the new release")
        r = flash("info", "--port", device.port)
        assert r.returncode == 0 and "agent version: 9.9.2" in r.stdout, r.stdout + r.stderr

        restart_agent(device, gateway)
        time.sleep(5)  # the last epoch closes and is anchored (epoch 3 s, blocks 1 s)
    finally:
        gateway.stop()
    gateway.verify_all()


def test_ctrl_c_stops_a_loop_that_only_reads_the_clock(tmp_path):
    flash_dir = tmp_path / "flash"
    flash_dir.mkdir()
    (flash_dir / "main.py").write_text("import time\nwhile True:\n    time.ticks_ms()\n")
    with open(tmp_path / "log", "ab") as log, VirtualDevice(str(flash_dir), log=log) as dev:
        r = mpremote(dev.port, "exec", "print('in')")
        assert r.returncode == 0 and r.stdout == "in\n", r.stdout + r.stderr


def test_code_that_ignores_ctrl_c_is_named_not_taken_for_another_chip(tmp_path):
    flash_dir = tmp_path / "flash"
    flash_dir.mkdir()
    (flash_dir / "main.py").write_text("while True:\n    pass\n")  # no call out: no interrupt
    with open(tmp_path / "log", "ab") as log, VirtualDevice(str(flash_dir), log=log) as dev:
        r = flash("info", "--port", dev.port)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "runs code that ignores Ctrl-C" in r.stderr and "reset it and retry" in r.stderr
