"""Device code on real MicroPython (WebAssembly build under Node): heap cap, sockets, flash."""
import resource
import socket
import textwrap
import threading

import pytest

from agent.runtime.micropython import EXIT_RESET, MicroPythonDevice
from gateway.localhost import free_port
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

HEAP = 65536


@pytest.fixture
def device_dir(tmp_path):
    path = tmp_path / "flash"
    path.mkdir()
    return path


def run(device_dir, code, heap=HEAP):
    return MicroPythonDevice(str(device_dir), heap=heap).run(textwrap.dedent(code), timeout=30)


class LineWaiter:
    """on_line callback that lets a test wait for a given line from the running device."""

    def __init__(self):
        self.lines = []
        self.cond = threading.Condition()

    def __call__(self, stream, line):
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def wait(self, line, timeout=20):
        with self.cond:
            assert self.cond.wait_for(lambda: line in self.lines, timeout), (line, self.lines)


ALLOCATE = """
    import gc
    gc.collect()
    print(gc.mem_free() + gc.mem_alloc())
    blocks = []
    for i in range(16):
        blocks.append(bytearray(8192))
    print("allocated", 16 * 8192)
"""


def test_heap_is_capped_at_the_device_size(device_dir):
    rc, out, err = run(device_dir, ALLOCATE)
    assert rc == 1
    assert "MemoryError" in err
    assert "allocated" not in out
    assert 0.9 * HEAP < int(out.split()[0]) <= HEAP  # gc sees the device's heap, not 128 MiB

    rc, out, err = run(device_dir, ALLOCATE, heap=4 * HEAP)
    assert (rc, err) == (0, "")
    assert "allocated 131072" in out


CONNECT_PUBLISH = """
    import usocket as socket

    def field(b):
        return bytes([len(b) >> 8, len(b) & 255]) + b

    addr = socket.getaddrinfo("127.0.0.1", {port})[0][-1]
    s = socket.socket()
    s.settimeout(5)
    s.connect(addr)
    body = field(b"MQTT") + b"\\x04\\x02\\x00\\x3c" + field(b"wasm-dev")
    s.write(bytes([0x10, len(body)]) + body)
    print("connack", s.read(4))
    body = field(b"ek/mp/test") + b"payload \\x00\\xff from MicroPython"
    s.sendall(bytes([0x30, len(body)]) + body)
    s.write(b"\\xc0\\x00\\xe0\\x00", 2)  # PINGREQ only
    print("pingresp", s.recv(2))
    s.write(b"\\xe0\\x00")  # DISCONNECT: the broker closes the connection
    print("eof", s.recv(1))
    s.close()
"""


def test_mqtt_publish_from_device_reaches_a_subscriber(broker, device_dir):
    sub = Subscriber(broker.port, "ek/mp/#")
    try:
        rc, out, err = run(device_dir, CONNECT_PUBLISH.format(port=broker.port))
        assert (rc, err) == (0, "")
        assert out.splitlines() == [
            r"connack b' \x02\x00\x00'", r"pingresp b'\xd0\x00'", "eof b''"]
        got = wait_for(lambda: sub.messages, timeout=10, what="the device's PUBLISH")
        assert got == [("ek/mp/test", b"payload \x00\xff from MicroPython")]
    finally:
        sub.close()


RECV_TIMEOUT = """
    import errno, socket
    s = socket.socket()
    s.connect(("127.0.0.1", {port}))
    s.settimeout(0.2)
    try:
        s.recv(10)
    except OSError as e:
        print("recv", e.args[0] == errno.ETIMEDOUT, e.args[0])
    s.setblocking(False)
    try:
        s.recv(10)
    except OSError as e:
        print("nonblocking", e.args[0] == errno.EAGAIN, e.args[0])
    print("read", s.read(1))
    s.settimeout(None)
    print("waiting")
    print("got", s.read(9))
    print("eof", s.recv(10))
    s.close()
    try:
        socket.socket().connect(("127.0.0.1", {closed_port}))
    except OSError as e:
        print("connect", e.args[0] == errno.ECONNREFUSED, e.args[0])
"""


def test_recv_times_out_then_gets_data_sent_later(device_dir):
    server = socket.create_server(("127.0.0.1", 0))
    code = RECV_TIMEOUT.format(port=server.getsockname()[1], closed_port=free_port())
    lines = LineWaiter()
    with MicroPythonDevice(str(device_dir), on_line=lines) as dev:
        dev.start(textwrap.dedent(code))
        conn, _ = server.accept()
        lines.wait("waiting")
        conn.sendall(b"late data")
        conn.close()
        assert dev.wait(20) == 0, dev.stderr
    server.close()
    assert lines.lines == [
        "recv True 110", "nonblocking True 11", "read None", "waiting",
        "got b'late data'", "eof b''", "connect True 111"]


FLASH = """
    import os, time
    with open("new.txt", "w") as f:
        f.write("written\\n")
    with open("log.txt", "a") as f:
        f.write("second\\n")
    with open("blob.bin", "r+b") as f:
        f.seek(2)
        f.write(b"\\x00\\x00")
    with open("state.tmp", "wb") as f:
        f.write(b"v2")
    os.rename("state.tmp", "state")
    os.remove("old.txt")
    os.mkdir("queue")
    with open("queue/0001", "wb") as f:
        f.write(bytes(range(256)))
    os.mkdir("gone")
    os.rmdir("gone")
    f = open("open.txt", "w")
    f.write("not closed yet")
    print("done")
    time.sleep(60)
"""


def test_flash_writes_survive_sigkill(device_dir):
    (device_dir / "log.txt").write_text("first\n")
    (device_dir / "blob.bin").write_bytes(b"\xff" * 6)
    (device_dir / "state").write_bytes(b"v1")
    (device_dir / "old.txt").write_text("stale")
    lines = LineWaiter()
    with MicroPythonDevice(str(device_dir), on_line=lines) as dev:
        dev.start(textwrap.dedent(FLASH))
        lines.wait("done")  # printed while the device still runs: output streams
        assert dev.kill() == -9

    files = sorted(str(p.relative_to(device_dir)) for p in device_dir.rglob("*"))
    assert files == ["blob.bin", "log.txt", "new.txt", "open.txt", "queue", "queue/0001", "state"]
    assert (device_dir / "new.txt").read_text() == "written\n"
    assert (device_dir / "log.txt").read_text() == "first\nsecond\n"
    assert (device_dir / "blob.bin").read_bytes() == b"\xff\xff\x00\x00\xff\xff"
    assert (device_dir / "state").read_bytes() == b"v2"
    assert (device_dir / "queue" / "0001").read_bytes() == bytes(range(256))
    assert (device_dir / "open.txt").read_text() == "not closed yet"

    rc, out, err = run(device_dir, """
        import os
        print(sorted(os.listdir()), os.listdir("queue"))
        print(open("log.txt").read().split(), open("state").read())
    """)
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "['blob.bin', 'log.txt', 'new.txt', 'open.txt', 'queue', 'state'] ['0001']",
        "['first', 'second'] v2"]


def test_urandom_and_unique_id(device_dir):
    code = """
        import os, machine, binascii
        a, b = os.urandom(16), os.urandom(16)
        print(len(a), a != b, binascii.hexlify(machine.unique_id()).decode())
    """
    rc, out, err = run(device_dir, code)
    assert (rc, err) == (0, "")
    size, differ, uid = out.split()
    assert (size, differ, len(uid)) == ("16", "True", 12)
    assert run(device_dir, code)[1].split()[2] == uid  # the same device, the same id


@pytest.mark.parametrize("code, status", [
    ("print('ok')", 0),
    ("import sys\nsys.exit(3)", 3),
    ("raise ValueError('boom')", 1),
    ("import machine\nmachine.reset()\nprint('not reached')", EXIT_RESET),
])
def test_exit_status(device_dir, code, status):
    rc, out, err = run(device_dir, code)
    assert rc == status
    assert "not reached" not in out
    assert ("ValueError: boom" in err) == (status == 1)


def test_main_module_from_flash_imports_repo_packages(device_dir):
    (device_dir / "lib").mkdir()
    (device_dir / "lib" / "helper.py").write_text("NAME = 'helper'\n")
    (device_dir / "main.py").write_text(
        "import sys, helper, agent.cbor\nprint(helper.NAME, agent.cbor.__name__, sys.argv)\n")
    dev = MicroPythonDevice(str(device_dir), args=["a1"])
    assert dev.run(timeout=30) == (0, "helper agent.cbor ['main', 'a1']\n", "")


def test_sleep_blocks_instead_of_spinning(device_dir):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc, out, err = run(device_dir, "import time\ntime.sleep(2)\ntime.sleep_ms(500)")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (rc, err) == (0, "")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert cpu < 1.5  # a spinning sleep burns the whole 2.5 s


def test_bad_arguments_are_refused(device_dir, tmp_path):
    with pytest.raises(ValueError):
        MicroPythonDevice(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        MicroPythonDevice(str(device_dir), heap=1024)
