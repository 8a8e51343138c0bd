"""A simulated nRF91 Serial LTE Modem on a pty, its socket bridged to a real TCP connection.

It speaks the SLM v2.x dialect documented in agent/modem.py byte for byte (no echo, responses
framed "\\r\\n...\\r\\n", finals "\\r\\nOK\\r\\n" / "\\r\\nERROR\\r\\n", data mode ended by "+++" and
answered "#XDATAMODE: <status>", raw #XRECV data), one socket at a time, and these faults:

- registration: the first `registers_after` AT+CEREG? queries report `searching_stat` (2),
  later ones 1; None never registers. lose_registration() drops to stat 2 (URC "+CEREG: 2") and the socket.
- drop_socket(): the network closes the TCP connection; #XPOLL then reports POLLERR|POLLHUP,
  #XRECV and string #XSEND fail with ERROR, data mode ends with a negative #XDATAMODE.
- hang(seconds): the modem stops answering, ignoring whatever it is sent meanwhile.

The device side talks to uart(): a machine.UART-like object (write, read, readline, any) on
the pty's other end.
"""
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time
import tty

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
TERMINATOR = b"+++"
ENOTCONN = 128      # Zephyr's errno values, as the nRF91 reports them
ECONNRESET = 104
RECV_MAX = 2048     # bytes one #XRECV returns at most


class PtyUART:
    """machine.UART's read side semantics over a pty fd: read/readline return None on
    timeout (seconds, like UART(timeout=ms)), any() counts the bytes waiting."""

    def __init__(self, fd, timeout=0):
        self.fd = fd
        self.timeout = timeout

    def any(self):
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]

    def read(self, n=-1):
        if not select.select([self.fd], [], [], self.timeout)[0]:
            return None
        return os.read(self.fd, n if n and n > 0 else max(1, self.any()))

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            c = self.read(1)
            if not c:
                break
            line += c
        return line or None

    def write(self, buf):
        view = memoryview(buf)
        while view:
            view = view[os.write(self.fd, view):]
        return len(buf)


class FakeSLM:
    def __init__(self, registers_after=0, searching_stat=2):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.cfun = 0
        self.cereg_n = 0
        self.stat = 0
        self.searching = registers_after   # CEREG? queries left before registering
        self.searching_stat = searching_stat
        self.handle = None                 # the open socket
        self.next_handle = 0
        self.conn = None                   # its real TCP connection
        self.dropped = False
        self.hung_until = 0
        self.datamode = False
        self.commands = []                 # every AT command received, for tests
        self._in = b""
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._write(b"Ready\r\n")

    def uart(self, timeout=0):
        return PtyUART(self.slave, timeout)

    # -- faults ------------------------------------------------------------------

    def drop_socket(self, notify=False):
        """The network closes the connection under the modem's socket. SLM v2.x says nothing
        until asked (#XPOLL, #XRECV); notify=True also sends v1.x's '#XSOCKET: <-errno>,"closed"'."""
        self.dropped = True
        if notify:
            self._write(b'\r\n#XSOCKET: %d,"closed"\r\n' % -ECONNRESET)
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def lose_registration(self, queries=1):
        self.searching = queries
        self._set_stat(self.searching_stat)
        self.drop_socket()

    def hang(self, seconds):
        self.hung_until = time.monotonic() + seconds

    def close(self):
        self._stop = True
        self._thread.join(5)
        self._close_conn()
        os.close(self.master)
        os.close(self.slave)

    # -- the modem ---------------------------------------------------------------

    def _run(self):
        while not self._stop:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            data = os.read(self.master, 4096)
            if time.monotonic() < self.hung_until:
                self._in = b""
                self.datamode = False
                continue
            self._in += data
            self._process()

    def _process(self):
        while True:
            if self.datamode:
                i = self._in.find(TERMINATOR)
                if i < 0:
                    return
                payload, self._in = self._in[:i], self._in[i + len(TERMINATOR):]
                self.datamode = False
                self._write(b"\r\n#XDATAMODE: %d\r\n" % self._send(payload))
            else:
                i = self._in.find(b"\r\n")
                if i < 0:
                    return
                line, self._in = self._in[:i], self._in[i + 2:]
                at = line.upper().find(b"AT")  # SLM skips noise before "AT"
                if at < 0:
                    self._write(ERROR)
                    continue
                cmd = line[at:].decode("latin-1")
                self.commands.append(cmd)
                self._write(self._command(cmd))

    def _command(self, cmd):
        name, _, arg = cmd.partition("=")
        name = name.upper()
        if name == "AT":
            return OK
        if name == "AT+CFUN?":
            return b"\r\n+CFUN: %d\r\n" % self.cfun + OK
        if name == "AT+CFUN":
            self.cfun = int(arg)
            self._set_stat(0 if self.cfun != 1 else self.searching_stat if self.searching != 0 else 1)
            return OK
        if name == "AT+CEREG":
            self.cereg_n = int(arg)
            return OK
        if name == "AT+CEREG?":
            return self._cereg_read()
        if name == "AT#XSOCKET":
            return self._socket(arg)
        if name == "AT#XCONNECT":
            return self._connect(arg)
        if name == "AT#XSEND":
            return self._send_command(arg)
        if name == "AT#XPOLL":
            return self._poll(arg)
        if name == "AT#XRECV":
            return self._recv(arg)
        return ERROR

    def _cereg_read(self):
        if self.cfun == 1 and self.searching is not None:
            if self.searching == 0:
                self._set_stat(1)
            else:
                self.searching -= 1
        if self.stat in (1, 5):
            return b'\r\n+CEREG: %d,%d,"0A0B","01020304",7\r\n' % (self.cereg_n, self.stat) + OK
        return b"\r\n+CEREG: %d,%d\r\n" % (self.cereg_n, self.stat) + OK

    def _set_stat(self, stat):
        if stat != self.stat and self.cereg_n:
            self._write(b"\r\n+CEREG: %d\r\n" % stat)
        self.stat = stat

    def _socket(self, arg):
        args = arg.split(",")
        if args == ["0"]:
            if self.handle is None:
                return OK
            self.handle = None
            self._close_conn()
            return b'\r\n#XSOCKET: 0,"closed"\r\n' + OK
        if args == ["1", "1", "0"] and self.handle is None and self.cfun == 1:
            self.handle = self.next_handle
            self.next_handle = (self.next_handle + 1) % 8
            return b"\r\n#XSOCKET: %d,1,6\r\n" % self.handle + OK
        return ERROR

    def _connect(self, arg):
        host, _, port = arg.rpartition(",")
        if self.handle is None or self.conn is not None or self.stat not in (1, 5):
            return ERROR
        try:
            self.conn = socket.create_connection((host.strip('"'), int(port)), timeout=5)
        except OSError:
            return ERROR
        self.dropped = False
        return b"\r\n#XCONNECT: 1\r\n" + OK

    def _send_command(self, arg):
        if self.conn is None:
            return ERROR
        if not arg:
            self.datamode = True
            return OK
        data = arg.strip('"').encode("latin-1")
        if self._send(data) < 0:
            return ERROR
        return b"\r\n#XSEND: %d\r\n" % len(data) + OK

    def _send(self, data):
        """Send over the TCP connection: 0, or a negative errno."""
        if self.conn is None or self.dropped:
            return -ENOTCONN
        try:
            self.conn.sendall(data)
        except OSError:
            return -ENOTCONN
        return 0

    def _poll(self, arg):
        ms, handle = (int(a) for a in arg.split(","))
        if handle != self.handle:
            return ERROR
        if self.conn is None or self.dropped:
            revents = select.POLLERR | select.POLLHUP
        else:
            p = select.poll()
            p.register(self.conn, select.POLLIN)
            events = p.poll(ms)
            revents = events[0][1] if events else 0
            if self.dropped:
                revents = select.POLLERR | select.POLLHUP
        if not revents:
            return OK
        return b'\r\n#XPOLL: %d,"0x%04x"\r\n' % (handle, revents) + OK

    def _recv(self, arg):
        if self.conn is None or self.dropped:
            return ERROR
        timeout = int(arg.split(",")[0])
        if not select.select([self.conn], [], [], timeout or None)[0] or self.dropped:
            return ERROR  # EAGAIN after SO_RCVTIMEO, as slm_at_socket.c reports it
        try:
            data = self.conn.recv(RECV_MAX)
        except OSError:
            return ERROR
        if not data:
            return OK  # end of stream: SLM answers a bare OK
        return b"\r\n#XRECV: %d\r\n" % len(data) + data + OK

    def _close_conn(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _write(self, data):
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.master, view):]
