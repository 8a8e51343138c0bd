# Blocking TCP sockets with MicroPython's semantics, served by the host (net.mjs): IPv4
# streams only. A timeout raises OSError(ETIMEDOUT), a non-blocking socket without data
# OSError(EAGAIN), a closed peer gives b"". connect() always completes or fails before it
# returns, even on a non-blocking socket. select.poll() does not see these sockets.
import errno

import _ekhost
import uctypes

AF_INET = 2
SOCK_STREAM = 1
IPPROTO_TCP = 6

_FOREVER = -1


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if isinstance(host, bytes):  # a port's getaddrinfo takes either
        host = host.decode()
    ip = _ekhost.resolve(host)
    if not isinstance(ip, str):
        raise OSError(ip)  # -202, as lwIP reports a name that does not resolve
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (ip, port))]


def _check(result):
    if result < 0:
        raise OSError(-result)
    return result


def _head(buf, n):
    return bytes(buf) if n == len(buf) else bytes(memoryview(buf)[:n])


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=IPPROTO_TCP):
        if af != AF_INET or type != SOCK_STREAM:
            raise OSError(errno.EINVAL)
        self._id = 0
        self._timeout = _FOREVER

    def settimeout(self, seconds):
        # in whole ms, rounded up: a small positive timeout must not become non-blocking
        self._timeout = _FOREVER if seconds is None else int(seconds * 1000 + 0.999)

    def setblocking(self, flag):
        self._timeout = _FOREVER if flag else 0

    def connect(self, addr):
        self._id = _check(_ekhost.sock_connect(addr[0], addr[1], self._timeout))

    def send(self, buf):
        if not len(buf):
            return 0
        return _check(_ekhost.sock_send(self._id, uctypes.addressof(buf), len(buf), self._timeout))

    def sendall(self, buf):
        self.send(buf)  # the host takes all of it or raises

    def write(self, buf, n=None):
        """Stream write: all of buf (or its first n bytes); None if it would block."""
        if n is not None:
            buf = memoryview(buf)[:n]
        try:
            return self.send(buf)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return None
            raise

    def recv(self, n):
        buf = bytearray(n)
        return _head(buf, self._recv_into(uctypes.addressof(buf), n))

    def read(self, n):
        """Stream read: n bytes, fewer only at end of stream; None if it would block."""
        buf = bytearray(n)
        got = self.readinto(buf)
        return None if got is None else _head(buf, got)

    def readinto(self, buf, n=None):
        """Stream readinto: fills buf (or its first n bytes) unless the stream ends first."""
        n = len(buf) if n is None else min(n, len(buf))
        addr = uctypes.addressof(buf)
        got = 0
        try:
            while got < n:
                k = self._recv_into(addr + got, n - got)
                if not k:
                    break
                got += k
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                return None  # even after some bytes, as MicroPython's streams do
            raise
        return got

    def _recv_into(self, addr, n):
        if not n:
            return 0
        return _check(_ekhost.sock_recv(self._id, addr, n, self._timeout))

    def close(self):
        if self._id:
            _ekhost.sock_close(self._id)
            self._id = 0
