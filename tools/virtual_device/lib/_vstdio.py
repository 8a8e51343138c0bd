# sys.stdin and sys.stdout.buffer as on a board's UART. This build's stdin always reads 0
# and always polls ready (so mpremote's `mount`, which reads its replies from stdin, spins
# for ever), and its stdout has no raw side: repl_host.mjs writes text with CRLF line endings
# as a board does, so binary writes need their own path. sys's attributes cannot be set, so
# this module stands in for sys (sys.modules["sys"]) and passes every other name through.
import io
import sys as _sys

import _ekhost
import uctypes

_MP_STREAM_POLL = 3
_POLL_SLICE_MS = 20  # a poll waits this long at most; select's loop calls it again


class _Stdin(io.IOBase):
    def __init__(self):
        self.buffer = self

    def readinto(self, buf, n=None):
        """Blocks until n (default len(buf)) bytes have arrived, as a board's stdin does."""
        n = len(buf) if n is None else min(n, len(buf))
        return _ekhost.stdin_read(uctypes.addressof(buf), n)

    def read(self, n=1):
        buf = bytearray(n)
        return bytes(buf[:self.readinto(buf, n)])

    def ioctl(self, request, arg):
        if request == _MP_STREAM_POLL:
            return arg & 1 if _ekhost.stdin_ready(_POLL_SLICE_MS) else 0
        return 0


class _RawStdout:
    def write(self, buf, n=None):
        n = len(buf) if n is None else min(n, len(buf))
        _ekhost.stdout_raw(uctypes.addressof(buf), n)
        return n


class _Stdout:
    buffer = _RawStdout()

    def write(self, text):
        return _sys.stdout.write(text)

    def flush(self):
        pass


stdin = _Stdin()
stdout = _Stdout()


def __getattr__(name):
    return getattr(_sys, name)


_sys.modules["sys"] = _sys.modules[__name__]
