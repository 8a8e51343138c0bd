# MQTT 3.1.1 client for the device, in the manner of micropython-lib's umqtt.simple, plus
# what umqtt leaves to the app: a keepalive timer, dead-link detection and re-subscribing.
# It is the agent's transport (see agent/device.py): connect, subscribe, publish (QoS 1),
# poll, close; `session` counts successful connects so the agent knows when to resend.
#
# No retransmission inside the client: a PUBACK only means the broker has the message, the
# agent resends whatever the gateway has not acked once a new session starts.
#
# The socket comes from connect_socket(host, port): plain TCP by default, or the cellular
# modem's (agent/modem.py). It needs settimeout, recv, sendall and close; a recv timeout
# must raise OSError with errno EAGAIN or ETIMEDOUT (CPython's socket.timeout is accepted too).
import errno

from agent import clock

try:
    import socket
except ImportError:  # a port without sockets (the nrf port): pass a modem's connect_socket
    socket = None

# CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
REFUSED = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_TIMEOUT = getattr(socket, "timeout", ())  # CPython raises this without an errno
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_MAX_TOPIC = 256


def tcp_connect(host, port, timeout=10):
    """A connected TCP socket (CPython, MicroPython ports with sockets, the wasm shim)."""
    ai = socket.getaddrinfo(_ascii_bytes(host), port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.settimeout(timeout)
        _no_delay(s)
        s.connect(ai[-1])
    except OSError:
        s.close()
        raise
    return s


def _ascii_bytes(host):
    """An ASCII host name as bytes: for a str, CPython imports its IDNA codec (1-2 ms of a
    waking camera's first connect). Bytes, or a name that needs the codec, as given."""
    try:
        return host.encode("ascii")
    except (AttributeError, UnicodeError):
        return host


def _no_delay(s):
    """Turn Nagle off: a PUBLISH is two writes (header, payload), and with Nagle the second
    waits for the peer's delayed ACK of the first, 40 ms a message on Linux. Ports without
    the option (lwIP builds leave it out) keep their default."""
    level = getattr(socket, "IPPROTO_TCP", None)
    opt = getattr(socket, "TCP_NODELAY", None)
    if level is not None and opt is not None:
        try:
            s.setsockopt(level, opt, 1)
        except OSError:
            pass  # the stack refuses it: Nagle stays, slower but correct


def _timed_out(e):
    return isinstance(e, _TIMEOUT) or e.errno in (errno.EAGAIN, errno.ETIMEDOUT)


def put_header(buf, first, length):
    """Write a fixed header (type byte, remaining-length varint) into buf; returns its size."""
    if length > 268435455:
        raise ValueError("MQTT packet too large: %d bytes" % length)
    buf[0] = first
    i = 1
    while True:
        digit = length & 0x7F
        length >>= 7
        buf[i] = digit | 0x80 if length else digit
        i += 1
        if not length:
            return i


def _put_str(buf, i, s):
    """Write a 2-byte length and the bytes s at buf[i:]; returns the index after them."""
    n = len(s)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    buf[i + 2:i + 2 + n] = s
    return i + 2 + n


class MQTTClient:
    max_packet = 16384   # bytes an incoming packet may have; larger drops the connection
    timeout = 10         # s to wait for CONNACK/SUBACK and for the rest of a started packet

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 connect_socket=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        if connect_socket is None and socket is None:
            raise ValueError("no socket module on this port: pass connect_socket "
                             "(e.g. agent.modem.SLM(uart).connect_socket)")
        self.connect_socket = connect_socket or tcp_connect
        self.on_message = None
        self.session = 0
        self.topics = []
        self.inflight = set()      # packet ids of QoS 1 publishes awaiting PUBACK
        self.disconnect_reason = None
        self.sock = None
        self._pid = 0
        self._last_tx = 0
        self._ping_sent = None     # when the unanswered PINGREQ went out
        self._hdr = bytearray(5 + 2 + _MAX_TOPIC + 2)
        self._hdr_mv = memoryview(self._hdr)
        self._puback = bytearray(b"\x40\x02\x00\x00")

    @property
    def connected(self):
        return self.sock is not None

    # -- the transport interface -------------------------------------------------

    def connect(self):
        """Open the socket, CONNECT (clean session) and restore the subscriptions. Their
        SUBSCRIBEs follow the CONNECT at once (MQTT lets a client send before its CONNACK):
        connecting takes one round trip, not one more per topic."""
        self.close()
        self.sock = self.connect_socket(self.host, self.port)
        try:
            self.sock.settimeout(self.timeout)
            self._send(self._connect_packet())
            subscribing = [(self._send_subscribe(topic), topic) for topic in self.topics]
            first, body = self._read_packet()
            if first != 0x20 or len(body) != 2:
                raise OSError("MQTT: expected CONNACK, got packet type 0x%02x" % first)
            if body[1]:
                raise OSError("MQTT: broker refused the connection: %s (CONNACK %d)"
                              % (REFUSED.get(body[1], "unknown reason"), body[1]))
            self.inflight = set()
            self._ping_sent = None
            for pid, topic in subscribing:
                self._await_suback(pid, topic)
        except OSError as e:
            self._drop(str(e))
            raise
        self.disconnect_reason = None
        self.session += 1

    def subscribe(self, topic):
        """Subscribe at QoS 1 now (if connected, returning once the broker has confirmed it)
        and at every connect."""
        if topic in self.topics:
            return
        self.topics.append(topic)
        if self.sock is not None:
            self._await_suback(self._send_subscribe(topic), topic)

    def publish(self, topic, payload, qos=1, retain=False):
        """Send PUBLISH: the header in one write, the payload (any buffer) in another."""
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "MQTT: not connected")
        t = topic.encode()
        if len(t) > _MAX_TOPIC:
            raise ValueError("MQTT topic longer than %d bytes" % _MAX_TOPIC)
        pid = self._next_pid() if qos else 0
        hdr = self._hdr
        i = put_header(hdr, 0x30 | qos << 1 | retain,
                       2 + len(t) + (2 if qos else 0) + len(payload))
        i = _put_str(hdr, i, t)
        if qos:
            hdr[i] = pid >> 8
            hdr[i + 1] = pid & 0xFF
            i += 2
        self._send(self._hdr_mv[:i])
        self._send(payload)
        if qos:
            self.inflight.add(pid)
        return pid

    def poll(self, timeout):
        """Dispatch incoming packets for up to timeout s, returning early once messages have
        been delivered and no more are waiting (the caller reacts to them at once); keeps the
        link alive. Never raises for a broken link: it sets connected False (see
        disconnect_reason)."""
        end = clock.monotonic() + timeout
        delivered = False
        while self.sock is not None:
            now = clock.monotonic()
            if not self._keep_alive(now):
                return
            wait = 0 if delivered else max(0, min(end, self._next_ping(now)) - now)
            kind = self._receive(wait)
            if kind == 3:
                delivered = True
            elif kind is None and (delivered or clock.monotonic() >= end):
                return

    def close(self):
        """Say DISCONNECT (best effort) and close the socket."""
        if self.sock is not None:
            try:
                self.sock.sendall(_DISCONNECT)
            except OSError:
                pass
            self._drop("closed by the client")

    # -- keepalive ---------------------------------------------------------------

    def _next_ping(self, now):
        """When poll must wake up next for the keepalive's sake."""
        if not self.keepalive:
            return now + 3600
        if self._ping_sent is not None:
            return self._ping_sent + self.keepalive
        return self._last_tx + self.keepalive

    def _keep_alive(self, now):
        """Send PINGREQ when idle for keepalive s; give up when it goes unanswered as long."""
        if not self.keepalive:
            return True
        if self._ping_sent is not None:
            if now - self._ping_sent >= self.keepalive:
                self._drop("no PINGRESP within %d s" % self.keepalive)
                return False
        elif now - self._last_tx >= self.keepalive:
            try:
                self._send(_PINGREQ)
            except OSError:
                return False
            self._ping_sent = now
        return True

    # -- packets -----------------------------------------------------------------

    def _connect_packet(self):
        flags = 0x02  # clean session
        body = bytearray(10)
        body[0:8] = b"\x00\x04MQTT\x04\x00"
        body[8] = self.keepalive >> 8
        body[9] = self.keepalive & 0xFF
        fields = [self.client_id]
        if self.user is not None:
            flags |= 0x80
            fields.append(self.user)
        if self.password is not None:
            flags |= 0x40
            fields.append(self.password)
        body[7] = flags
        for f in fields:
            if isinstance(f, str):
                f = f.encode()
            n = len(body)
            body.extend(bytes(2 + len(f)))
            _put_str(body, n, f)
        packet = bytearray(5)
        n = put_header(packet, 0x10, len(body))
        return packet[:n] + body

    def _send_subscribe(self, topic):
        """SUBSCRIBE at QoS 1; its packet id."""
        t = topic.encode()
        if len(t) > _MAX_TOPIC:
            raise ValueError("MQTT topic longer than %d bytes" % _MAX_TOPIC)
        pid = self._next_pid()
        hdr = self._hdr
        i = put_header(hdr, 0x82, 2 + 2 + len(t) + 1)
        hdr[i] = pid >> 8
        hdr[i + 1] = pid & 0xFF
        i = _put_str(hdr, i + 2, t)
        hdr[i] = 1
        self._send(self._hdr_mv[:i + 1])
        return pid

    def _await_suback(self, pid, topic):
        """Wait for SUBACK pid, dispatching what arrives meanwhile."""
        deadline = clock.monotonic() + self.timeout
        while True:
            self.sock.settimeout(max(0, deadline - clock.monotonic()))
            first, body = self._read_packet()
            if first == 0x90 and len(body) == 3 and (body[0] << 8 | body[1]) == pid:
                if body[2] == 0x80:
                    raise OSError("MQTT: broker refused the subscription to %s" % topic)
                return
            self._handle(first, body)

    def _receive(self, wait):
        """Wait up to wait s for one packet and handle it; its type, or None when none came."""
        sock = self.sock
        try:
            sock.settimeout(wait)
            first = sock.recv(1)
        except OSError as e:
            if not _timed_out(e):
                self._drop(str(e))
            return None
        if not first:
            self._drop("connection closed")
            return None
        try:
            sock.settimeout(self.timeout)
            body = self._read_body()
            self._handle(first[0], body)
        except OSError as e:
            self._drop(str(e))
            return None
        return first[0] >> 4

    def _read_packet(self):
        first = self._recv_exact(1)[0]
        return first, self._read_body()

    def _read_body(self):
        n = 0
        shift = 0
        while True:
            b = self._recv_exact(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise OSError("MQTT: malformed remaining length")
        if n > self.max_packet:
            raise OSError("MQTT: incoming packet of %d bytes exceeds the %d-byte limit"
                          % (n, self.max_packet))
        return self._recv_exact(n)

    def _recv_exact(self, n):
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            try:
                chunk = self.sock.recv(n - got)
            except OSError as e:
                if _timed_out(e):
                    raise OSError(errno.ETIMEDOUT, "MQTT: timed out waiting for the broker")
                raise
            if not chunk:
                raise OSError("MQTT: connection closed")
            mv[got:got + len(chunk)] = chunk
            got += len(chunk)
        return buf

    def _handle(self, first, body):
        kind = first >> 4
        if kind == 3:
            self._on_publish(first, body)
        elif kind == 4 and len(body) == 2:
            self.inflight.discard(body[0] << 8 | body[1])
        elif kind == 13:
            self._ping_sent = None
        else:
            raise OSError("MQTT: unexpected packet type 0x%02x" % first)

    def _on_publish(self, first, body):
        qos = first >> 1 & 3
        if qos > 1:
            raise OSError("MQTT: QoS %d PUBLISH from a QoS 1 subscription" % qos)
        n = body[0] << 8 | body[1]
        mv = memoryview(body)
        topic = str(bytes(mv[2:2 + n]), "utf-8")
        i = 2 + n
        if qos:
            pid_at = i
            i += 2
        if self.on_message:
            self.on_message(topic, bytes(mv[i:]))
        if qos:  # acked after the handler ran: a crash before this gets a redelivery
            self._puback[2] = body[pid_at]
            self._puback[3] = body[pid_at + 1]
            self._send(self._puback)

    # -- plumbing ------------------------------------------------------------------

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self._drop(str(e))
            raise
        self._last_tx = clock.monotonic()

    def _drop(self, reason):
        """Forget the connection (without DISCONNECT): the agent reconnects."""
        sock = self.sock
        self.sock = None
        self.disconnect_reason = reason
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
