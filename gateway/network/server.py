"""The Provider's side of the peer protocol (docs/network.md, "Transport" and "Endpoints"):
an HTTPS server on the peer port that holds other gateways' shares, which it cannot read.

    server = PeerServer(data_dir, identity, "0.0.0.0", 8443).start()
    ... server.url ...
    server.stop()

Every request passes, in order: its body read with a cap (`too_large`: a body over the cap
is refused before the signature is checked, since checking it would mean reading it all),
protocol.check_request (`malformed`, `wrong_peer`, `stale`, `forged`), the sender paired and
not removed (`unknown_peer`; POST /v1/pair instead needs a good invitation token), its nonce
new (`replayed`), the sender's token bucket (`rate_limited`, with Retry-After). A refusal is
JSON {"error": reason, "detail": text} with the spec's status, counted in the store's
counters as `peer_refused_<reason>` (written at most once a second) and logged at most once
a minute per (reason, peer).

Records are kept in pack files under DATA_DIR/network/held (gateway/store/packs.py), synced
before the answer; their rows are the store's (`store.peers`, gateway/store/peers.py). The
server has its own connection to the store, used under one lock from the worker threads.
"""
import base64
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time

import uvicorn
from cryptography import x509
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.network import protocol
from gateway.network.identity import Identity, directory
from gateway.store.database import Store
from gateway.store.packs import Packs
from gateway.store.peers import REMOVED, TERM
from gateway.wire import merkle

log = logging.getLogger("edgekeep.network.server")

STATUS = {"malformed": 400, "wrong_peer": 401, "stale": 401, "forged": 401,
          "unknown_peer": 401, "replayed": 409, "bad_invitation": 403,
          "expired_invitation": 403, "too_large": 413, "rate_limited": 429,
          "over_quota": 507, "bad_share": 409, "slot_taken": 409, "slot_gap": 409,
          "root_mismatch": 409}
COUNTER = "peer_refused_%s"
MAX_CATALOG = 1 << 20
RATE, BURST = 200.0, 400       # requests per second per peer, sustained and at once
DRAIN = 2 * protocol.MAX_BODY  # a body over the cap is read (and dropped) up to this, so the
                               # client sees its 413 rather than a reset connection
LOG_EVERY = 60                 # seconds between two log lines of one (reason, peer)
FLUSH_EVERY = 1.0              # seconds between writes of the refusal counters
LIST_LIMIT = 1000
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162: the root of a tree of no leaves


class Refusal(protocol.Refused):
    """A refusal with more to say: extra JSON fields (slot_gap's "next"), HTTP headers."""

    def __init__(self, reason, detail, extra=None, headers=None):
        super().__init__(reason, detail)
        self.extra, self.headers = extra or {}, headers or {}


class Missing(Exception):
    """404: nothing there (not a refusal: not counted)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class PeerServer:
    """The peer port. host/port are bound at once (port 0: a free one; `url` says which);
    start() serves in a thread. quota_default, if set, caps every peer's quota (what this
    gateway gives the network at most per peer); health, a gateway.health.Registry, gets a
    component "peer-server". endpoint is what /v1/pair answers as ours (default: url)."""

    def __init__(self, data_dir, identity, host="0.0.0.0", port=8443, quota_default=None,
                 health=None, endpoint=None, rate=RATE, burst=BURST):
        self.data_dir, self.identity = data_dir, identity
        self.quota_default, self.rate, self.burst = quota_default, rate, burst
        # proto given: asyncio sets TCP_NODELAY only on sockets of proto IPPROTO_TCP, and
        # without it every answer waits 40 ms (Nagle and delayed ACKs: head and body are two
        # writes)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.url = "https://%s:%d" % ("[%s]" % host if ":" in host else host, self.port)
        self.endpoint = endpoint or self.url
        self.component = health.component("peer-server") if health is not None else None
        self.store = None
        self.packs = Packs(os.path.join(directory(data_dir), "held"))
        self.lock = threading.Lock()        # the store's connection and the packs
        self.buckets = {}                   # peer -> [tokens, at] (the event loop's)
        self.logged = {}                    # (reason, peer) -> when last logged
        self.pending = {}                   # refusal counters not written yet
        self.counts_lock = threading.Lock()  # pending (the event loop adds, a thread writes)
        self.trees = {}                     # owner -> (count, merkle levels) of its commit
        self.stopping = threading.Event()
        self.flusher = None
        cert, key = identity.paths(data_dir)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app(), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=2, timeout_keep_alive=30,
            ssl_certfile=cert, ssl_keyfile=key))
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],),
                                       name="peer-server", daemon=True)

    # -- running -----------------------------------------------------------------------

    def start(self, timeout=15):
        self._check_identity()
        self.store = Store.connect(self.data_dir)
        self.flusher = threading.Thread(target=self._flush_loop, name="peer-counters",
                                        daemon=True)
        self.flusher.start()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.started:
                if self.component:
                    self.component.alive("listening on %s" % self.url)
                return self
            if not self.thread.is_alive():
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("the peer server did not start on %s" % self.url)

    def _check_identity(self):
        """The TLS key and certificate in data_dir/network are the identity's: written if
        missing, the certificate made again if it is another key's; RuntimeError if the key
        file holds another identity (never overwritten)."""
        cert, key = self.identity.paths(self.data_dir)
        if not os.path.exists(key):
            self.identity.save(self.data_dir)
            return
        found = Identity.load_or_create(self.data_dir)
        if found.name != self.identity.name:
            raise RuntimeError("%s holds identity %s, not %s: serve the peer port with the "
                               "data directory's own identity" % (key, found.short,
                                                                   self.identity.short))
        with open(cert, "rb") as f:
            pem = f.read()
        if x509.load_pem_x509_certificate(pem).public_key().public_bytes_raw() != \
                self.identity.public:
            os.remove(cert)
            Identity.load_or_create(self.data_dir)   # makes it again

    def stop(self):
        """Stop serving: requests under way may finish (2 s at most); kept connections are
        dropped at once (a TLS close would wait on idle clients)."""
        self.server.should_exit = True
        deadline = time.monotonic() + 2
        while self.server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        self.server.force_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.stopping.set()
        if self.flusher:
            self.flusher.join(5)
        self.sock.close()
        with self.lock:
            if self.store is not None:
                self._flush_counts()
                self.packs.close()
                self.store.close()
                self.store = None
        if self.component:
            from gateway import health
            self.component._set(health.STOPPED)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def flush(self):
        """Write the refusal counters now (they are written at most once a second)."""
        with self.lock:
            self._flush_counts()

    def _flush_loop(self):
        last_cleanup = 0.0
        while not self.stopping.wait(FLUSH_EVERY):
            try:
                with self.lock:
                    self._flush_counts()
                    if time.time() - last_cleanup > 60:
                        last_cleanup = time.time()
                        self.store.peers.forget_nonces(last_cleanup)
            except Exception:
                log.exception("peer server: writing counters failed (tried again)")

    def _flush_counts(self):
        if self.pending and self.store is not None:
            with self.counts_lock:
                pending, self.pending = self.pending, {}
            try:
                self.store.add_counts(pending)
            except BaseException:
                with self.counts_lock:
                    for k, n in pending.items():
                        self.pending[k] = self.pending.get(k, 0) + n
                raise

    # -- the app -------------------------------------------------------------------------

    def app(self):
        g = self._guarded
        return Starlette(routes=[
            Route("/v1/pair", g(self.pair, pairing=True), methods=["POST"]),
            Route("/v1/hello", g(self.hello), methods=["GET"]),
            Route("/v1/slots", g(self.list_slots), methods=["GET"]),
            Route("/v1/slots/{n}", g(self.put_slot), methods=["PUT"]),
            Route("/v1/slots/{n}", g(self.get_slot), methods=["GET"]),
            Route("/v1/slots/{n}", g(self.delete_slot), methods=["DELETE"]),
            Route("/v1/commit", g(self.commit), methods=["POST"]),
            Route("/v1/challenge", g(self.challenge), methods=["POST"]),
            Route("/v1/catalog", g(self.put_catalog, cap=MAX_CATALOG), methods=["PUT"]),
            Route("/v1/catalog", g(self.get_catalog), methods=["GET"]),
        ])

    def _guarded(self, handler, pairing=False, cap=protocol.MAX_BODY):
        """An endpoint: the checks of every request, then handler(signed, body, params) in a
        worker thread, under the store's lock."""
        async def endpoint(request):
            hint = str(request.headers.get("ek-from", "?"))[:16]
            try:
                body = await _read_body(request, cap)
                path = request.scope["raw_path"].decode("latin-1")
                if request.scope.get("query_string"):
                    path += "?" + request.scope["query_string"].decode("latin-1")
                signed = protocol.check_request(request.headers, request.method, path, body,
                                                self.identity.name, int(time.time()))
                hint = signed.sender[:16]
                await run_in_threadpool(self._admit, signed, pairing)
                self._take_token(signed.sender)
                params = {**request.query_params, **request.path_params}
                out = await run_in_threadpool(self._locked, handler, signed, body, params)
            except protocol.Refused as e:
                return self._refuse(e, hint)
            except Missing as e:
                return JSONResponse({"error": e.reason, "detail": e.detail}, 404)
            except Exception as e:
                log.exception("peer server: %s %s from %s failed", request.method,
                              request.url.path, hint)
                if self.component:
                    self.component.errors += 1
                    self.component.last_error = "%s: %s" % (type(e).__name__, str(e)[:300])
                    self.component.last_error_at = time.time()
                return JSONResponse({"error": "internal", "detail": "this gateway failed to "
                                     "serve the request (%s); try again later"
                                     % type(e).__name__}, 500)
            if isinstance(out, bytes):
                return Response(out, media_type="application/octet-stream")
            return JSONResponse(out)
        return endpoint

    def _locked(self, handler, *args):
        with self.lock:
            if self.store is None:
                raise RuntimeError("the peer server is stopped")
            return handler(*args)

    def _admit(self, signed, pairing):
        """unknown_peer (unless pairing), then replayed."""
        with self.lock:
            peers = self.store.peers
            if not pairing:
                peer = peers.get(signed.sender)
                if peer is None or peer.status == REMOVED:
                    raise protocol.Refused(
                        "unknown_peer", "this gateway (%s) is not paired with %s: pair them "
                        "with an invitation (`edgekeep peer invite` on one, `edgekeep peer "
                        "add` on the other)" % (self.identity.short, signed.sender[:16]))
            now = time.time()
            if not peers.remember_nonce(signed.sender, bytes.fromhex(signed.nonce),
                                        now + protocol.NONCE_TTL, now):
                raise protocol.Refused("replayed", "this request's nonce was used before: "
                                       "sign every request afresh (a new EK-Nonce)")

    def _take_token(self, peer):
        now = time.monotonic()
        b = self.buckets.get(peer)
        if b is None:
            if len(self.buckets) > 10000:  # forget the full ones (as if never seen)
                idle = self.burst / self.rate
                self.buckets = {p: v for p, v in self.buckets.items() if now - v[1] < idle}
            b = self.buckets[peer] = [float(self.burst), now]
        b[0] = min(float(self.burst), b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if b[0] >= 1:
            b[0] -= 1
            return
        wait = max(1, math.ceil((1 - b[0]) / self.rate))
        raise Refusal("rate_limited", "over %g requests/s (burst %d) from this peer: retry "
                      "after %d s" % (self.rate, self.burst, wait),
                      headers={"Retry-After": str(wait)})

    def _refuse(self, e, peer):
        reason = e.reason if e.reason in STATUS else "malformed"
        key = COUNTER % reason
        with self.counts_lock:
            self.pending[key] = self.pending.get(key, 0) + 1
        now = time.monotonic()
        if now - self.logged.get((reason, peer), -LOG_EVERY) >= LOG_EVERY:
            self.logged[(reason, peer)] = now
            if len(self.logged) > 10000:
                self.logged = {k: t for k, t in self.logged.items() if now - t < LOG_EVERY}
            log.warning("refused %s from %s: %s", reason, peer, e.detail)
        extra = getattr(e, "extra", {})
        return JSONResponse({"error": reason, "detail": e.detail, **extra}, STATUS[reason],
                            headers=getattr(e, "headers", None))

    # -- endpoints (in a worker thread, under the lock) ------------------------------------

    def quota(self, peer):
        if self.quota_default is None:
            return peer.quota
        return min(peer.quota, self.quota_default)

    def pair(self, signed, body, params):
        d = _json(body)
        token = _hex(d.get("token"), 16, "token")
        endpoint, capacity = d.get("endpoint"), d.get("capacity")
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            raise protocol.Refused("malformed", "endpoint is the caller's https://host:port")
        if type(capacity) is not int or capacity < 0:
            raise protocol.Refused("malformed", "capacity is the bytes offered, an integer")
        if signed.sender == self.identity.name:
            raise protocol.Refused("bad_invitation", "a gateway cannot pair with itself")
        now = time.time()
        peers = self.store.peers
        with self.store.transaction():
            inv = peers.take_invitation(token, signed.sender, now)
            if inv is None:
                row = peers.invitation(token)
                if row is not None and row.used_by is None and row.expires < now:
                    raise protocol.Refused("expired_invitation", "the invitation expired: ask "
                                           "for a new one (`edgekeep peer invite`)")
                raise protocol.Refused("bad_invitation", "this gateway has no such unused "
                                       "invitation (each is good once): ask for a new one "
                                       "(`edgekeep peer invite`)")
            peers.add(signed.sender, endpoint, capacity, inv.capacity, now, now + TERM)
        log.info("paired with %s at %s: we hold up to %d bytes of its, it offers %d",
                 signed.sender[:16], endpoint, inv.capacity, capacity)
        return {"name": self.identity.name, "endpoint": self.endpoint,
                "capacity": inv.capacity}

    def hello(self, signed, body, params):
        peers = self.store.peers
        peer = peers.get(signed.sender)
        return {"name": self.identity.name, "quota": self.quota(peer),
                "used": peers.used(signed.sender), "slots": peers.next_slot(signed.sender)}

    def put_slot(self, signed, body, params):
        n = _slot(params["n"])
        record = protocol.parse_record(body)
        leaf = protocol.leaf(body)
        owner, peers = signed.sender, self.store.peers
        with self.store.transaction():
            held = peers.held(owner, n)
            if held is not None:
                if held.leaf == leaf and held.released is None:
                    return {"slot": n}
                raise protocol.Refused("slot_taken", "slot %d holds %s already: put new "
                                       "records in your next slot (%d)" % (
                                           n, "another record" if held.released is None
                                           else "a record you released",
                                           peers.next_slot(owner)))
            nxt = peers.next_slot(owner)
            if n != nxt:
                raise Refusal("slot_gap", "slots are filled in order: your next slot here is "
                              "%d, not %d" % (nxt, n), extra={"next": nxt})
            used, granted = peers.used(owner), self.quota(peers.get(owner))
            if used + len(body) > granted:
                raise protocol.Refused("over_quota", "this gateway holds %d bytes of yours of "
                                       "the %d granted; this %d-byte share does not fit: place "
                                       "it on another peer, or release slots here"
                                       % (used, granted, len(body)))
            pack, offset = self.packs.append(body)
            self.packs.sync()
            peers.add_held(owner, n, record.sealed, record.index, leaf, len(body), pack, offset,
                           time.time())
        return {"slot": n}

    def get_slot(self, signed, body, params):
        n = _slot(params["n"])
        held = self.store.peers.held(signed.sender, n)
        if held is None or held.released is not None:
            raise Missing("not_found", "slot %d is %s" % (
                n, "not filled" if held is None else "released"))
        raw = self._read(held)
        if raw is None:
            raise Missing("lost", "slot %d's record is lost on this gateway" % n)
        return raw

    def delete_slot(self, signed, body, params):
        n = _slot(params["n"])
        peers = self.store.peers
        held = peers.held(signed.sender, n)
        if held is None:
            raise Missing("not_found", "slot %d is not filled" % n)
        if held.released is None:
            peers.release(signed.sender, n, json.dumps(signed.headers, sort_keys=True))
        return {"slot": n}

    def list_slots(self, signed, body, params):
        try:
            after = int(params.get("after", -1))
            limit = max(1, min(LIST_LIMIT, int(params.get("limit", LIST_LIMIT))))
        except ValueError:
            raise protocol.Refused("malformed", "after and limit are integers") from None
        rows = self.store.peers.held_after(signed.sender, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"slots": [{"slot": r.slot, "digest": r.digest.hex(), "index": r.idx,
                           "size": r.length, "leaf": r.leaf.hex(),
                           "released": r.released is not None} for r in rows],
                "next": rows[-1].slot if more else None}

    def commit(self, signed, body, params):
        d = _json(body)
        epoch, count = _int(d, "epoch"), _int(d, "count")
        index, size = _int(d, "index"), _int(d, "size")
        root = _hex(d.get("root"), 32, "root")
        path = d.get("path")
        if not isinstance(path, list) or index >= size:
            raise protocol.Refused("malformed", "path is a list of hex hashes; index < size")
        path = [_hex(p, 32, "path") for p in path]
        owner, peers = signed.sender, self.store.peers
        leaves = peers.leaves(owner, count)
        if len(leaves) < count:
            raise protocol.Refused("root_mismatch", "you commit %d slots, this gateway holds "
                                   "%d of yours" % (count, len(leaves)))
        mine = merkle.root(leaves) if leaves else EMPTY_ROOT
        if mine != root:
            raise protocol.Refused("root_mismatch", "this gateway's tree over your first %d "
                                   "slots has root %s, not %s: check what you placed here "
                                   "(GET /v1/slots)" % (count, mine.hex(), root.hex()))
        if not peers.set_commit(owner, epoch, count, root, index, size, path):
            log.info("commit of epoch %d from %s ignored: a later one is kept", epoch,
                     owner[:16])
        return {}

    def challenge(self, signed, body, params):
        d = _json(body)
        slot = _int(d, "slot")
        owner, peers = signed.sender, self.store.peers
        c = peers.commit(owner)
        if c is None:
            raise Missing("no_commit", "there is no commit of yours here yet: challenges "
                          "answer from your latest POST /v1/commit")
        if slot >= c.count:
            raise Missing("not_found", "slot %d is past the %d slots of your latest commit "
                          "(epoch %d)" % (slot, c.count, c.epoch))
        held = peers.held(owner, slot)
        record = self._read(held) if held.released is None else None
        return {"slot": slot, "count": c.count, "root": c.root.hex(),
                "record": None if record is None else _b64(record),
                "release": json.loads(held.released) if held.released else None,
                "path": [p.hex() for p in self._path(owner, c.count, slot)],
                "commit": {"epoch": c.epoch, "index": c.idx, "size": c.size,
                           "path": [p.hex() for p in c.path]}}

    def put_catalog(self, signed, body, params):
        self.store.peers.set_catalog(signed.sender, body, time.time())
        return {}

    def get_catalog(self, signed, body, params):
        c = self.store.peers.catalog(signed.sender)
        if c is None:
            raise Missing("not_found", "no catalog of yours here")
        return c.data

    # -- helpers ---------------------------------------------------------------------------

    def _read(self, held):
        raw = self.packs.read(held.pack, held.offset, held.length)
        if raw is None or protocol.leaf(raw) != held.leaf:
            log.error("the record of %s's slot %d is lost or damaged in %s", held.owner[:16],
                      held.slot, held.pack)
            return None
        return raw

    def _path(self, owner, count, slot):
        cached = self.trees.get(owner)
        if cached is None or cached[0] != count:
            cached = self.trees[owner] = (count, merkle.levels(
                self.store.peers.leaves(owner, count)))
        return merkle.proof_from_levels(cached[1], slot)


async def _read_body(request, cap):
    """The body, at most cap bytes; Refusal too_large past it (read on up to DRAIN so the
    client can read the answer, then the connection is dropped)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > DRAIN:
        raise _too_large(cap)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            chunks = None
            if total > DRAIN:
                break
        elif chunks is not None:
            chunks.append(chunk)
    if total > cap:
        raise _too_large(cap)
    return b"".join(chunks)


def _too_large(cap):
    return protocol.Refused("too_large", "a request body is at most %d bytes here" % cap)


def _json(body):
    try:
        d = json.loads(body)
    except ValueError:
        d = None
    if not isinstance(d, dict):
        raise protocol.Refused("malformed", "the body is a JSON object")
    return d


def _int(d, key):
    v = d.get(key)
    if type(v) is not int or v < 0:
        raise protocol.Refused("malformed", "%s is a non-negative integer" % key)
    return v


def _slot(text):
    if not text.isdigit() or len(text) > 18:
        raise protocol.Refused("malformed", "a slot is a non-negative integer")
    return int(text)


def _hex(v, size, what):
    try:
        raw = bytes.fromhex(v)
    except (TypeError, ValueError):
        raw = None
    if raw is None or len(raw) != size:
        raise protocol.Refused("malformed", "%s is %d bytes in hex" % (what, size))
    return raw


def _b64(raw):
    return base64.b64encode(raw).decode()
