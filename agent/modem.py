"""A TCP socket through a Nordic Serial LTE Modem (nRF91 SLM) on a UART, for MQTTClient.

The stock MicroPython nrf port has no LTE sockets, so a cellular tracker talks to an nRF91
running Nordic's SLM application over a UART (anything with machine.UART's write, read, any):

    modem = SLM(machine.UART(1, 115200))
    client = MQTTClient(cid, host, connect_socket=modem.connect_socket)

The AT dialect is the one documented in the nRF Connect SDK v2.x SLM pages
(nrfconnect/sdk-nrf, applications/serial_lte_modem/doc/SOCKET_AT_commands.rst and
slm_data_mode.rst; source slm_at_socket.c, slm_at_host.c), plus 3GPP TS 27.007 +CEREG/+CFUN
as in Nordic's nRF91 AT Commands reference:

    AT+CEREG=1            OK                  then URCs "+CEREG: <stat>"
    AT+CEREG?             +CEREG: <n>,<stat>[,...]   stat 1 home, 5 roaming
    AT+CFUN? / AT+CFUN=1  +CFUN: <fun>
    AT#XSOCKET=1,1,0      #XSOCKET: <handle>,1,6     (IPv4, TCP, client)
    AT#XCONNECT="h",p     #XCONNECT: 1
    AT#XSEND              OK, then raw data and "+++"; the modem answers #XDATAMODE: <status>
    AT#XSEND="+++"        #XSEND: <size>
    AT#XPOLL=<ms>,<h>     [#XPOLL: <h>,"0x<revents>"]   POLLIN 1, POLLERR 8, POLLHUP 0x10
    AT#XRECV=<s>          #XRECV: <size> CRLF <size raw bytes> CRLF OK; a bare OK at end of stream
    AT#XSOCKET=0          #XSOCKET: 0,"closed"

Every response line is framed by CRLF; the final result is OK, ERROR or +CME ERROR: <n>.

Binary safety: data mode ends at the first "+++" anywhere in the stream, and a "+" at the end
of the data would merge with the terminator. So runs of three or more "+" and a trailing run
of "+" go out with the quoted form AT#XSEND="+..." instead; everything else in data mode.

Receiving: AT#XPOLL waits with millisecond resolution (AT#XRECV's timeout is whole seconds
and fails with ERROR on a timeout, indistinguishable from a broken socket), then AT#XRECV
collects what is ready. A socket whose peer or network went away reads b"", so MQTTClient sees
a disconnect. A failed AT exchange (ERROR, or no reply in time: OSError ETIMEDOUT naming the
command) leaves the socket unusable; the next connect_socket closes it on the modem first.
SLM v2.x has no unsolicited notice for a socket the network closed, but v1.x sent
'#XSOCKET: <err>,"closed"'; either is honoured, as is a "+CEREG: <stat>" registration loss.
"""
import errno
import time

from agent import clock

POLLIN = 0x0001      # any other #XPOLL event (POLLERR, POLLHUP, POLLNVAL) ends the socket
TERMINATOR = b"+++"
_MAX_STRING = 1024   # bytes of AT#XSEND="..." at most
_RECV_WAIT = 1       # s for AT#XRECV once AT#XPOLL said data is ready


def _name(cmd):
    return cmd.split("=")[0]


def _fields(line):
    """'#XSOCKET: 3,1,6' -> ['3', '1', '6']"""
    return line.split(": ", 1)[1].split(",")


def _field(lines, prefix, i=0):
    for line in lines:
        if isinstance(line, str) and line.startswith(prefix):
            return int(_fields(line)[i])
    raise OSError(errno.EIO, "modem: no %s in the reply" % prefix.strip(": "))


class SLM:
    def __init__(self, uart, timeout=5, connect_timeout=60):
        self.uart = uart
        self.timeout = timeout                  # s for an AT command's final result
        self.connect_timeout = connect_timeout  # s for AT#XCONNECT
        self.started = False
        self.stat = None      # last known CEREG registration status
        self.socket = None    # the open SLMSocket
        self.stale = False    # a socket may be open on the modem: close it before the next
        self._rx = b""

    # -- sockets -----------------------------------------------------------------

    def connect_socket(self, host, port):
        """Open a TCP connection through the modem (the MQTTClient connect_socket hook)."""
        if self.socket is not None or self.stale:
            self.command("AT#XSOCKET=0")
            self.socket = None
            self.stale = False
        if not self.started:
            self.start()
        self.check_registration()
        handle = _field(self.command("AT#XSOCKET=1,1,0"), "#XSOCKET: ")
        if handle < 0:
            raise OSError(errno.EIO, "AT#XSOCKET: the modem could not open a socket (%d)" % handle)
        self.socket = SLMSocket(self, handle)
        self.stale = True
        try:
            cmd = 'AT#XCONNECT="%s",%d' % (host, port)
            if _field(self.command(cmd, self.connect_timeout), "#XCONNECT: ") != 1:
                raise OSError(errno.ECONNREFUSED, "AT#XCONNECT: not connected")
        except OSError:
            self.close_socket()
            raise
        return self.socket

    def close_socket(self):
        self.socket = None
        try:
            self.command("AT#XSOCKET=0")
            self.stale = False
        except OSError:
            pass  # stays stale: closed before the next connect

    def start(self):
        """Probe the modem, ask for registration URCs and switch the radio on if it is off."""
        self.command("AT")
        self.command("AT+CEREG=1")
        if _field(self.command("AT+CFUN?"), "+CFUN: ") != 1:
            self.command("AT+CFUN=1")
        self.started = True

    def check_registration(self):
        self.stat = _field(self.command("AT+CEREG?"), "+CEREG: ", 1)
        if self.stat not in (1, 5):
            raise OSError(errno.EHOSTUNREACH,
                          "no network registration (CEREG stat %d)" % self.stat)

    # -- AT commands -------------------------------------------------------------

    def command(self, cmd, timeout=None):
        """Send one AT command; returns its information lines (str), with the raw bytes of
        a #XRECV after its line. Raises OSError on ERROR, +CME ERROR or no final result."""
        self._discard_stale()
        self.uart.write(cmd.encode() + b"\r\n")
        if timeout is None:
            timeout = self.timeout
        deadline = clock.monotonic() + timeout
        lines = []
        while True:
            line = self._line(deadline)
            if line is None:
                raise OSError(errno.ETIMEDOUT, "%s: no reply from the modem within %s s"
                              % (_name(cmd), timeout))
            if line == "OK":
                return lines
            if line == "ERROR" or line.startswith("+CME ERROR") or line.startswith("+CMS ERROR"):
                raise OSError(errno.EIO, "%s: %s" % (_name(cmd), line))
            if self._urc(line):
                continue
            lines.append(line)
            if line.startswith("#XRECV: "):
                lines.append(self._read_raw(int(_fields(line)[0]), deadline, cmd))

    def send_data(self, data):
        """Send bytes free of "+++" (and not ending in "+") in data mode."""
        self.command("AT#XSEND")
        self.uart.write(data)
        self.uart.write(TERMINATOR)
        deadline = clock.monotonic() + self.timeout
        while True:
            line = self._line(deadline)
            if line is None:
                raise OSError(errno.ETIMEDOUT, "AT#XSEND: no #XDATAMODE from the modem within %s s"
                              % self.timeout)
            if line.startswith("#XDATAMODE: "):
                status = int(_fields(line)[0])
                if status < 0:
                    raise OSError(errno.EIO, "AT#XSEND: data mode failed (%s)" % line)
                return
            self._urc(line)

    def send_string(self, data):
        """Send printable bytes without quotes or commas (here: runs of "+") as AT#XSEND="..."."""
        for i in range(0, len(data), _MAX_STRING):
            chunk = data[i:i + _MAX_STRING]
            sent = _field(self.command('AT#XSEND="%s"' % str(chunk, "ascii")), "#XSEND: ")
            if sent != len(chunk):
                raise OSError(errno.EIO, "AT#XSEND: sent %d of %d bytes" % (sent, len(chunk)))

    # -- unsolicited result codes ------------------------------------------------

    def _urc(self, line):
        """Act on a URC; False when the line is not one."""
        if line.startswith("+CEREG: ") and "," not in line:
            self.stat = int(_fields(line)[0])
            if self.stat not in (1, 5):
                self._lose_socket("network registration lost (CEREG stat %d)" % self.stat)
            return True
        if line.startswith("#XSOCKET: ") and line.endswith('"closed"'):
            self._lose_socket("socket closed by the modem (%s)" % line)
            return True
        return False

    def _lose_socket(self, reason):
        if self.socket is not None:
            self.socket.error = reason

    # -- UART reading ------------------------------------------------------------

    def _read_some(self, deadline):
        while True:
            n = self.uart.any()
            if n:
                data = self.uart.read(n)
                if data:
                    self._rx += data
                    return True
            if clock.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _line(self, deadline):
        """The next non-empty line as str; None if none is complete by the deadline."""
        while True:
            i = self._rx.find(b"\n")
            if i < 0:
                if not self._read_some(deadline):
                    return None
                continue
            raw = self._rx[:i].strip()
            self._rx = self._rx[i + 1:]
            if raw:
                try:
                    return str(raw, "utf-8")
                except UnicodeError:
                    continue  # line noise, e.g. the tail of data after a desync

    def _read_raw(self, n, deadline, cmd):
        while len(self._rx) < n:
            if not self._read_some(deadline):
                raise OSError(errno.ETIMEDOUT, "%s: %d bytes of data did not arrive in time"
                              % (_name(cmd), n))
        data = self._rx[:n]
        self._rx = self._rx[n:]
        return data

    def _discard_stale(self):
        """Before a command: act on the URCs that came in, drop anything else (late replies)."""
        self._read_some(0)
        while True:
            i = self._rx.find(b"\n")
            if i < 0:
                break
            raw = self._rx[:i].strip()
            self._rx = self._rx[i + 1:]
            try:
                self._urc(str(raw, "utf-8"))
            except (UnicodeError, ValueError, IndexError):
                pass
        self._rx = b""


class SLMSocket:
    """The socket-like end of an SLM TCP connection: settimeout, recv, sendall, close."""

    def __init__(self, modem, handle):
        self.modem = modem
        self.handle = handle
        self.timeout = None
        self.error = None     # why the socket is gone; None while it is usable
        self._buf = b""

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, n):
        """Up to n bytes; b"" once the connection is gone; OSError ETIMEDOUT if none came
        within the timeout; OSError EIO when the modem failed (the socket is then gone)."""
        if not self._buf and self.error is None:
            self._buf = self._fetch()
        data = self._buf[:n]
        self._buf = self._buf[n:]
        return data

    def sendall(self, data):
        if self.error is not None:
            raise OSError(errno.ENOTCONN, "modem socket: %s" % self.error)
        data = bytes(data)  # bytes.find below; memoryview has none
        mv = memoryview(data)
        start = 0
        try:
            i = data.find(b"+")
            while i >= 0:
                j = i
                while j < len(data) and data[j] == 0x2B:
                    j += 1
                if j - i >= 3 or j == len(data):
                    if i > start:
                        self.modem.send_data(mv[start:i])
                    self.modem.send_string(data[i:j])
                    start = j
                i = data.find(b"+", j)
            if start < len(data):
                self.modem.send_data(mv[start:])
        except OSError as e:
            self.error = str(e)
            raise

    def close(self):
        if self.modem.socket is self:
            self.modem.close_socket()
        self.error = self.error or "closed"

    def _fetch(self):
        wait = 86400 if self.timeout is None else self.timeout
        try:
            events = self._poll(wait)
            if self.error is None and events & POLLIN:
                lines = self.modem.command("AT#XRECV=%d" % _RECV_WAIT,
                                           _RECV_WAIT + self.modem.timeout)
                if len(lines) == 2:
                    return lines[1]
                self.error = "connection closed by the peer"
            elif self.error is None and events:
                self.error = "socket error (#XPOLL events 0x%04x)" % events
        except OSError as e:
            self.error = str(e)
            raise OSError(errno.EIO, self.error)
        if self.error is None:
            raise OSError(errno.ETIMEDOUT, "timed out")
        return b""

    def _poll(self, wait):
        cmd = "AT#XPOLL=%d,%d" % (int(wait * 1000), self.handle)
        events = 0
        for line in self.modem.command(cmd, wait + self.modem.timeout):
            if line.startswith("#XPOLL: "):
                events |= int(_fields(line)[1].strip('"')[2:], 16)
        return events
