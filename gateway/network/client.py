"""The caller's side of the peer protocol (docs/network.md): HTTPS to a peer pinned to its
name, every request signed with our identity.

    peer = PeerClient(identity, peer_name, "https://b.example:8443")
    peer.put_slot(0, record)
    peer.get_slot(0)            # the record, or None if released or never filled

The server's certificate is not checked against any CA or host name: after the handshake
its Ed25519 key must be `name`, else PeerError wrong_key. With name=None (a restore given
only an endpoint) the first key seen is trusted and kept (`name`, `seen`).

Every failure is a PeerError: `reason` is the server's (over_quota, slot_gap with `next`,
rate_limited with `retry_after`, ...), or "unreachable" (refused, reset, timed out, TLS
failed), "wrong_key", "not_found", "bad_answer". One connection is kept and made again when
it fails; a request on a kept connection that the server had closed is sent once more, on
a new one, signed afresh.
"""
import base64
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping

from gateway.network import protocol
from gateway.network.identity import cert_public_key


class PeerError(Exception):
    """A call to a peer failed: reason (the server's refusal, or unreachable, wrong_key,
    not_found, bad_answer), detail (what to do), status (HTTP, None if there was no answer),
    body (the JSON answer, if any); `next` for slot_gap, `retry_after` (s) for rate_limited."""

    def __init__(self, reason, detail, status=None, body=None, retry_after=None):
        super().__init__("%s: %s" % (reason, detail))
        self.reason, self.detail, self.status = reason, detail, status
        self.body = body or {}
        self.next = self.body.get("next")
        self.retry_after = retry_after


IDLE = 20          # seconds a kept connection may idle before a new one is made (the
                   # server drops idle ones after 30)
MAX_WAIT = 10      # seconds a patient client waits on one rate_limited answer
PATIENCE = 3       # rate_limited answers the gateway's own components wait out


class PeerClient:
    def __init__(self, identity, name, endpoint, timeout=30, patience=0):
        """A client of the peer `name` (64 hex; None: trust on first use) at endpoint
        (https://host:port); no I/O until the first call. patience: how many times a call
        the peer refuses as rate_limited waits its Retry-After (at most MAX_WAIT s) and is
        made again, before the refusal is raised (bulk work: placing, repair, restore)."""
        self.identity, self.name, self.endpoint, self.timeout = identity, name, endpoint, timeout
        self.patience = patience
        self.used = 0.0             # time.monotonic() of the kept connection's last answer
        u = urllib.parse.urlsplit(endpoint)
        if u.scheme != "https" or not u.hostname:
            raise ValueError("a peer endpoint is https://host:port, not %r" % endpoint)
        self.host, self.port = u.hostname, u.port or 443
        self.seen = None            # the key (hex) the server presented last
        self.conn = None
        self.lock = threading.Lock()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE   # pinned by key below, not by a CA
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def __repr__(self):
        return "PeerClient(%s at %s)" % ((self.name or "?")[:16], self.endpoint)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self.lock:
            self._drop()

    # -- the endpoints -----------------------------------------------------------------

    def pair(self, token, my_endpoint, capacity):
        """POST /v1/pair with an invitation's token (bytes or hex): {"name", "endpoint",
        "capacity"} of the inviter."""
        token = token.hex() if isinstance(token, bytes) else token
        d = self._json("POST", "/v1/pair", {"token": token, "endpoint": my_endpoint,
                                            "capacity": capacity})
        if d.get("name") != self.name:
            raise PeerError("bad_answer", "the peer at %s answered pairing as %s"
                            % (self.endpoint, d.get("name")))
        return d

    def hello(self):
        """{"name", "quota", "used", "slots"}: what it grants us and holds of ours."""
        return self._json("GET", "/v1/hello")

    def put_slot(self, n, record):
        self._json("PUT", "/v1/slots/%d" % n, body=bytes(record))

    def get_slot(self, n):
        """Slot n's record; None if it is released or was never filled."""
        try:
            return self.call("GET", "/v1/slots/%d" % n)
        except PeerError as e:
            if e.status == 404 and e.reason == "not_found":
                return None
            raise

    def release(self, n):
        """DELETE /v1/slots/n: the peer drops the bytes and keeps this signed request."""
        self._json("DELETE", "/v1/slots/%d" % n)

    def slots(self, after=-1, limit=1000):
        """Every slot of ours the peer has numbered above `after`, in order, page by page:
        {"slot", "digest" (sealed, bytes), "index", "size" (record bytes), "leaf" (bytes),
        "released" (its bytes dropped at our request)}."""
        while True:
            d = self._json("GET", "/v1/slots?after=%d&limit=%d" % (after, limit))
            for s in d["slots"]:
                yield dict(s, digest=bytes.fromhex(s["digest"]), leaf=bytes.fromhex(s["leaf"]))
            if d.get("next") is None:
                return
            after = d["next"]

    def commit(self, epoch, count, root, index, size, path):
        """POST /v1/commit: our agreement's root over our first `count` slots, its leaf
        `index` of `size` in the epoch's tree and that leaf's path (bytes)."""
        self._json("POST", "/v1/commit", {"epoch": epoch, "count": count, "root": root.hex(),
                                          "index": index, "size": size,
                                          "path": [p.hex() for p in path]})

    def challenge(self, slot):
        """The answer to a challenge of slot `slot`, decoded: record (bytes or None), root
        and paths (bytes), release (dict or None), as protocol.check_answer takes it."""
        a = self._json("POST", "/v1/challenge", {"slot": slot})
        try:
            return {"slot": a["slot"], "count": a["count"],
                    "record": None if a["record"] is None else base64.b64decode(a["record"]),
                    "release": a.get("release"), "root": bytes.fromhex(a["root"]),
                    "path": [bytes.fromhex(p) for p in a["path"]],
                    "commit": {"epoch": a["commit"]["epoch"], "index": a["commit"]["index"],
                               "size": a["commit"]["size"],
                               "path": [bytes.fromhex(p) for p in a["commit"]["path"]]}}
        except (KeyError, TypeError, ValueError) as e:
            raise PeerError("bad_answer", "the challenge's answer is not of its form (%s)"
                            % e, 200, a) from None

    def put_catalog(self, data):
        self._json("PUT", "/v1/catalog", body=bytes(data))

    def get_catalog(self):
        """Our sealed catalog as the peer keeps it, or None."""
        try:
            return self.call("GET", "/v1/catalog")
        except PeerError as e:
            if e.status == 404:
                return None
            raise

    # -- requests ----------------------------------------------------------------------

    def sign(self, method, path, body=b""):
        """The EK-* headers of a request (connects first if the peer's name is not known)."""
        if self.name is None:
            with self.lock:
                if self.conn is None:
                    self._connect()
        return protocol.sign_request(self.identity, self.name, method, path, body,
                                     int(time.time()), os.urandom(16).hex())

    def raw(self, method, path, body=b"", headers=None):
        """(status, headers, body) of one request, whatever the status; signed afresh
        unless headers (the EK-* ones, e.g. from sign()) are given. PeerError only for
        unreachable or wrong_key."""
        body = bytes(body)
        with self.lock:
            if self.conn is not None and time.monotonic() - self.used > IDLE:
                self._drop()        # the server closes it soon, or has: a new one
            for attempt in (0, 1):
                reused = self.conn is not None
                if self.conn is None:
                    self._connect()
                h = dict(headers) if headers else protocol.sign_request(
                    self.identity, self.name, method, path, body, int(time.time()),
                    os.urandom(16).hex())
                try:
                    self.conn.request(method, path, body, h)
                    resp = self.conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    # (ssl.SSLEOFError too: a kept connection the server closed while idle)
                    self._drop()
                    if reused and attempt == 0 and headers is None and not isinstance(
                            e, TimeoutError):
                        continue  # the kept connection was dead: once more, on a new one
                    raise self._unreachable(e) from None
                self.used = time.monotonic()
                if resp.will_close:
                    self._drop()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable code")

    def call(self, method, path, body=b""):
        """The body of a 200 answer; PeerError otherwise (rate_limited after `patience`
        waits)."""
        for _ in range(self.patience):
            status, headers, data = self.raw(method, path, body)
            retry = headers.get("retry-after", "")
            if status != 429 or not retry.isdigit():
                break
            time.sleep(min(int(retry), MAX_WAIT))
        else:
            status, headers, data = self.raw(method, path, body)
        if status == 200:
            return data
        try:
            d = json.loads(data)
            reason, detail = d["error"], d.get("detail", "")
        except (ValueError, KeyError, TypeError):
            d, reason, detail = None, "http_%d" % status, data[:200].decode("utf-8", "replace")
        retry = headers.get("retry-after")
        raise PeerError(reason, detail, status, d if isinstance(d, dict) else None,
                        int(retry) if retry and retry.isdigit() else None)

    def _json(self, method, path, obj=None, body=b""):
        if obj is not None:
            body = json.dumps(obj).encode()
        data = self.call(method, path, body)
        try:
            return json.loads(data)
        except ValueError:
            raise PeerError("bad_answer", "the peer at %s answered %s %s with no JSON"
                            % (self.endpoint, method, path), 200) from None

    def _connect(self):
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self.ctx)
        try:
            conn.connect()
            key = cert_public_key(conn.sock.getpeercert(binary_form=True))
        except (OSError, ValueError) as e:
            conn.close()
            raise self._unreachable(e) from None
        seen = key.hex() if key else None
        if seen is None or (self.name is not None and seen != self.name):
            conn.close()
            raise PeerError("wrong_key", "the peer at %s is not %s: its key is %s" % (
                self.endpoint, self.name[:16] if self.name else "?",
                seen or "not Ed25519"))
        self.seen = seen
        if self.name is None:
            self.name = seen  # trust on first use
        self.conn = conn

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _unreachable(self, e):
        return PeerError("unreachable", "the peer at %s did not answer: %s" % (
            self.endpoint, e or type(e).__name__))


class Clients:
    """A component's way to its peers: one PeerClient per (name, endpoint), kept open; or, as
    tests give it, a mapping of clients by peer name or a function (name, endpoint)."""

    def __init__(self, identity, given=None):
        self.identity, self.given = identity, given
        self.open = {}

    def __call__(self, name, endpoint):
        if isinstance(self.given, Mapping):
            return self.given[name]
        if self.given is not None:
            return self.given(name, endpoint)
        if (name, endpoint) not in self.open:
            self.open[name, endpoint] = PeerClient(self.identity, name, endpoint,
                                                   patience=PATIENCE)
        return self.open[name, endpoint]
