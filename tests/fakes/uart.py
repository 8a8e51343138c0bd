"""Fake machine.UART (receive side) and machine.ADC.

Bytes "arrive" when the test calls arrive(); read(n) returns at most n of the bytes that have
arrived (None when none have, like MicroPython's UART after its timeout), so the reader sees the
stream in whatever chunks the test chooses.
"""


class FakeUART:
    def __init__(self, max_read=None):
        self.rx = bytearray()
        self.max_read = max_read  # cap per read(), like a small hardware FIFO
        self.fail = False  # raise OSError on the next access

    def arrive(self, data):
        self.rx += data

    def _check(self):
        if self.fail:
            raise OSError(5, "EIO")

    def any(self):
        self._check()
        return len(self.rx)

    def read(self, n=-1):
        self._check()
        if not self.rx:
            return None
        n = len(self.rx) if n is None or n < 0 else n
        if self.max_read:
            n = min(n, self.max_read)
        data, self.rx = bytes(self.rx[:n]), self.rx[n:]
        return data


class FakeADC:
    def __init__(self, u16=0):
        self.u16 = u16

    def read_u16(self):
        return self.u16
