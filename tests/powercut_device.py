"""Device side of tests/test_powercut.py: runs on MicroPython until the test cuts the power.

    argv: BOOT PORT MAX_BYTES SEGMENT_BYTES [flush]

Each loop seals a batch of new readings into the spool, sends the pending records to the
gateway at 127.0.0.1:PORT (PORT 0: no gateway in reach) and applies its acks. A reading is
BOOT << 16 | n, unique across boots without the device keeping a counter; readings still in
RAM at a power cut are gone, as on a real device. With "flush" it makes no readings and
stops once the gateway has acked everything.

The flash is slow, as real flash is: each write lands in two halves 1 ms apart, so that
power cuts tear records (a write call itself is atomic on the host's mirror).

Console, for the test's observer (the gateway never sees it):
    HELD seq hex      a record the spool holds unacked at boot
    BOOT last_seq acked drops
    COMMIT seq hex    spool.append returned: the record is committed
    DONE drops        flush: nothing pending
Gateway link, TCP lines: device -> "seq base hex" (base: all below it are acked or dropped),
gateway -> the seq up to which it has settled everything.
"""
import binascii
import errno
import socket
import struct
import sys
import time

from agent import spool as spool_module
from agent.spool import Spool

BATCH_MAX = 6  # readings per batch, 1..6: records of varying size


class SlowFile:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        half = len(data) // 2
        self.f.write(memoryview(data)[:half])
        time.sleep_ms(1)
        self.f.write(memoryview(data)[half:])


def slow_open(path, mode="r"):
    f = open(path, mode)
    return f if mode[0] == "r" else SlowFile(f)


def report(tag, seq, payload):
    print(tag, seq, binascii.hexlify(payload).decode())


class Link:
    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.sent = set()  # sent on this connection, which loses nothing while it lasts
        self.rest = b""

    def send(self, spool):
        self.sock.settimeout(None)
        for seq in spool.pending():
            if seq not in self.sent:
                payload = binascii.hexlify(spool.read(seq)).decode()
                line = "%d %d %s\n" % (seq, spool.base(), payload)
                self.sock.write(line.encode())
                self.sent.add(seq)

    def acked(self, until=0):
        """The highest ack received since the last call, 0 if none; waits for `until`."""
        best = 0
        self.sock.settimeout(10 if until else 0)
        while best < until or not until:
            try:
                data = self.sock.recv(64)
            except OSError as e:
                if until or e.args[0] != errno.EAGAIN:
                    raise
                break
            if not data:
                raise OSError("gateway closed the link")
            lines = (self.rest + data).split(b"\n")
            self.rest = lines.pop()
            best = max([best] + [int(x) for x in lines])
        return best


def batch(boot, n):
    k = 1 + n % BATCH_MAX
    return struct.pack(">%dI" % k, *[boot << 16 | (n + i) for i in range(k)])


def main(boot, port, max_bytes, segment_bytes, flush):
    spool_module.open = slow_open
    spool = Spool("spool", max_bytes, segment_bytes)
    for seq in spool.pending():
        report("HELD", seq, spool.read(seq))
    print("BOOT", spool.last_seq, spool.acked, spool.drops)
    link = Link(port) if port else None
    n = 0
    while not (flush and not spool.pending()):
        if not flush:
            payload = batch(boot, n)
            n += len(payload) // 4
            seq = spool.next_seq()
            spool.append(seq, payload)
            report("COMMIT", seq, payload)
        if link:
            link.send(spool)
            spool.ack(link.acked(spool.last_seq if flush else 0))
        if not flush:
            time.sleep_ms(1)
    print("DONE", spool.drops)


main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
     sys.argv[5:] == ["flush"])
