"""Power cuts on a real MicroPython device: the spool loses nothing it committed.

tests/powercut_device.py runs on the MicroPython WebAssembly build (64 KiB heap). It seals
readings into batches, appends each to the spool, sends pending records to a gateway played
by this test over TCP and forgets them on the gateway's acks. The test cuts the power
(SIGKILL of the Node process: the flash is written through to the host on every write call,
so the host keeps exactly what the device had written) at a random point of each of RUNS
boots, then boots it once more to deliver what is left. The claim:

(a) every reading committed to the spool reaches the gateway: committed means spool.append
    returned (COMMIT) or the spool held the record at a boot (HELD);
(b) no reading reaches the gateway twice, under different seqs;
(c) a seq never stands for two different records, and no boot starts below a seq already
    committed;
(d) with a budget large enough nothing is dropped; with a small one (and no gateway in reach
    until the last boot) the drop count survives every power cut and accounts exactly for
    the committed records that never arrived.

Readings held only in RAM at a power cut are lost, as on any device; they were never
committed. The test also checks that power cuts do land in the middle of a record's writes.
"""
import os
import random
import socket
import struct
import threading
import time

import pytest

from agent.runtime.micropython import MicroPythonDevice

pytestmark = pytest.mark.integration

HEAP = 65536
DEVICE_CODE = open(os.path.join(os.path.dirname(__file__), "powercut_device.py")).read()
# The wasm build collects garbage only between calls from JS, never inside the device's
# loop: a boot has room for about 15 loops in 64 KiB, so power cuts come well before that.
MAX_COMMITS_BEFORE_CUT = 8


class Gateway:
    """The device's TCP peer: keeps records by seq, acks the longest run it has settled.

    A seq below the device's reported base is settled too (acked or dropped by the device).
    """

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.records = {}  # seq -> payload
        self.conflicts = []
        self.acked = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.server.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    seq, base, payload = line.split()
                    ack = self._store(int(seq), int(base), bytes.fromhex(payload.decode()))
                    conn.sendall(b"%d\n" % ack)
        except ConnectionError:
            pass  # the device lost power

    def _store(self, seq, base, payload):
        with self.lock:
            if self.records.setdefault(seq, payload) != payload:
                self.conflicts.append(("gateway", seq, self.records[seq], payload))
            self.acked = max(self.acked, base - 1)
            while self.acked + 1 in self.records:
                self.acked += 1
            return self.acked


class Console:
    """Reads the device's console: what it committed, what its boots report."""

    def __init__(self):
        self.committed = {}  # seq -> payload
        self.conflicts = []
        self.boots = []  # (last_seq, acked, drops)
        self.reused = []  # boots that started below a committed seq
        self.done = None
        self.lock = threading.Lock()
        self.commits = 0  # COMMIT lines this boot
        self.cut_at = None  # cut the power at this many COMMIT lines
        self.cut = threading.Event()

    def expect(self, cut_at):
        self.commits, self.cut_at = 0, cut_at
        self.cut.clear()

    def __call__(self, stream, line):
        words = line.split()
        if stream != "stdout" or not words:
            return
        with self.lock:
            if words[0] in ("HELD", "COMMIT"):
                self._commit(int(words[1]), bytes.fromhex(words[2]))
            elif words[0] == "BOOT":
                self._boot(*[int(w) for w in words[1:]])
            elif words[0] == "DONE":
                self.done = int(words[1])
        if words[0] == "COMMIT":
            self.commits += 1
            if self.commits == self.cut_at:
                self.cut.set()

    def _commit(self, seq, payload):
        if self.committed.setdefault(seq, payload) != payload:
            self.conflicts.append(("device", seq, self.committed[seq], payload))

    def _boot(self, last_seq, acked, drops):
        if self.committed and last_seq < max(self.committed):
            self.reused.append((len(self.boots), last_seq, max(self.committed)))
        self.boots.append((last_seq, acked, drops))


def torn_tail(spool_dir):
    """The newest segment's (name, bytes) if it ends in part of a record, else None."""
    names = sorted(n for n in os.listdir(spool_dir) if n.endswith(".seg"))
    if not names:
        return None
    with open(os.path.join(spool_dir, names[-1]), "rb") as f:
        data = f.read()
    off = 0
    while off + 13 <= len(data):  # header: magic, seq, length, check
        off += 13 + int.from_bytes(data[off + 5:off + 9], "big")
    return None if off == len(data) else (names[-1], data)


def readings(payload):
    return struct.unpack(">%dI" % (len(payload) // 4), payload)


def boot(flash, console, args, rng):
    """One boot until the power is cut; returns a description if the device ended first."""
    device = MicroPythonDevice(flash, heap=HEAP, args=args, on_line=console)
    console.expect(rng.randint(1, MAX_COMMITS_BEFORE_CUT))
    device.start(DEVICE_CODE)
    if rng.random() < 0.25:  # at a random time: in start-up, recovery or the loop
        wait_for_cut(device, console, rng.uniform(0.05, 0.25))
    else:  # at a random point after a random number of records
        wait_for_cut(device, console, 10)
        time.sleep(rng.uniform(0.0, 0.006))
    ended = device.returncode
    device.kill()
    return None if ended is None else (args, ended, device.stderr)


def wait_for_cut(device, console, timeout):
    """Wait until the console calls for the cut or timeout passes, unless the device ends."""
    end = time.monotonic() + timeout
    while device.running and not console.cut.is_set() and time.monotonic() < end:
        console.cut.wait(min(0.005, max(0.0, end - time.monotonic())))


def campaign(tmp_path, seed, runs, max_bytes, segment_bytes, online):
    """Cut the power `runs` times, then deliver everything; returns what was seen."""
    flash = str(tmp_path)
    spool_dir = os.path.join(flash, "spool")
    console, gateway = Console(), Gateway()
    rng = random.Random(seed)
    ended, torn = [], set()
    try:
        for run in range(1, runs + 1):
            port = gateway.port if online else 0
            args = [str(run), str(port), str(max_bytes), str(segment_bytes)]
            outcome = boot(flash, console, args, rng)
            if outcome:
                ended.append(outcome)
            tail = os.path.isdir(spool_dir) and torn_tail(spool_dir)
            if tail:
                torn.add(tail)
        args = [str(runs + 1), str(gateway.port), str(max_bytes), str(segment_bytes), "flush"]
        device = MicroPythonDevice(flash, heap=HEAP, args=args, on_line=console)
        rc, out, err = device.run(DEVICE_CODE, timeout=30)
    finally:
        gateway.close()
    assert (rc, err) == (0, ""), err
    assert ended == [], "the device stopped by itself before the power cut: %r" % ended
    left = sorted(os.listdir(spool_dir))
    print("%d power cuts, %d torn tails, %d records committed, %d delivered, %d dropped"
          % (runs, len(torn), len(console.committed), len(gateway.records), console.done))
    return console, gateway, len(torn), left


def check_delivery(console, gateway):
    assert console.conflicts == [] and gateway.conflicts == []  # (c)
    assert console.reused == []  # (c)
    assert set(gateway.records) <= set(console.committed)
    for seq, payload in gateway.records.items():
        assert console.committed[seq] == payload  # (c)
    delivered = [r for payload in gateway.records.values() for r in readings(payload)]
    assert len(delivered) == len(set(delivered))  # (b)
    return set(delivered)


def test_power_cuts_lose_nothing_committed_and_deliver_nothing_twice(tmp_path):
    console, gateway, torn, left = campaign(tmp_path, seed=1, runs=200, max_bytes=65536,
                                            segment_bytes=256, online=True)
    delivered = check_delivery(console, gateway)
    committed = {r for payload in console.committed.values() for r in readings(payload)}
    assert delivered == committed  # (a)
    assert set(gateway.records) == set(range(1, max(console.committed) + 1))
    assert console.done == 0 and all(drops == 0 for _, _, drops in console.boots)  # (d)
    assert left == ["state"]  # every acked segment deleted from flash
    assert torn > 0, "no power cut landed inside a record: the test shows nothing"


def test_power_cuts_keep_the_drop_count_when_the_budget_overflows(tmp_path):
    console, gateway, torn, left = campaign(tmp_path, seed=2, runs=40, max_bytes=512,
                                            segment_bytes=128, online=False)
    delivered = check_delivery(console, gateway)
    lost = set(console.committed) - set(gateway.records)
    assert console.done == len(lost) > 0  # (d): counted exactly, across every power cut
    drops = [d for _, _, d in console.boots]
    assert drops == sorted(drops)
    committed = {r for payload in console.committed.values() for r in readings(payload)}
    dropped = {r for seq in lost for r in readings(console.committed[seq])}
    assert delivered | dropped == committed and not delivered & dropped
    assert min(gateway.records) > max(lost)  # the oldest go first
    assert left == ["state"]
    assert torn > 0
