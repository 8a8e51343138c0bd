"""The admin REST API (JSON, under /api): what the pages and `gateway audit --remote` use.

Every route but POST /api/session and POST /api/enroll (an enrollment token instead) needs
a session; unsafe ones need the X-CSRF-Token header
(AuthMiddleware). The OpenAPI document at /api/openapi.json is generated from ROUTES, so a
route cannot exist undocumented.
"""
import base64
import json
import logging
import os
import re
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.objects import HASH_LEN
from agent.proto import device_id
from gateway.alerts.delivery import redact
from gateway.chain import registry
from gateway.mqtt.broker import managed_credentials
from gateway.store import provider
from gateway.store.database import Store
from gateway.web import auth, sse, tls
from gateway.web.hosts import host_of
from gateway.web.openapi import document as openapi_document
from gateway.web.status import device_row
from gateway.wire import merkle

DEVICE_ID = re.compile(r"[0-9a-f]{16}")
OBJECT_ID = re.compile(r"[0-9a-f]{16}")  # 8 random bytes
MESSAGE_KIND = re.compile(r"[a-z]{1,8}")
MESSAGE_CURSOR = re.compile(r"([0-9]{1,10})-([0-9]{1,10})")
MESSAGES_QUERY = ("kind", "from", "to", "cursor", "limit")
SEQ_MAX = 2 ** 32 - 1               # docs/protocol.md: a device's sequence is 1 ... 2^32-1
JSON_LIMIT = auth.FORM_LIMIT
log = logging.getLogger("edgekeep.web")
OBJECT_COLUMNS = ("oid", "seq", "time", "event", "type", "size", "chunk_size", "count", "stored",
                  "bytes", "completed_at", "parent")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def state(request):
    return request.app.state


def device_or_404(request):
    dev = request.path_params["device"]
    d = DEVICE_ID.fullmatch(dev) and state(request).store.device(dev)
    if not d:
        raise ApiError(404, "no device %s" % dev)
    return d


def int_param(request, name, default, lo, hi):
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise ApiError(400, "%s must be an integer" % name)
    if not lo <= value <= hi:
        raise ApiError(400, "%s must be between %d and %d" % (name, lo, hi))
    return value


def path_int(request, name: str, lo: int, hi: int) -> int:
    """A whole-number path parameter in lo ... hi, else 400 saying so."""
    raw = request.path_params[name]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20 and lo <= int(raw) <= hi):
        raise ApiError(400, "%s must be a whole number from %d to %d, not %r"
                       % (name, lo, hi, raw[:30]))
    return int(raw)


async def json_body(request) -> dict:
    """The request's JSON object: 415 unless application/json, 413 over JSON_LIMIT bytes,
    400 unless it parses to an object."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ApiError(415, "send application/json")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > JSON_LIMIT:
            raise ApiError(413, "request body too large: at most %d bytes" % JSON_LIMIT)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not JSON (or nested too deep)")
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def text_field(body: dict, name: str) -> str:
    """A JSON body's string field; 400 if it is missing or not a string."""
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, "%s must be a string" % name)
    return value


def int_field(body: dict, name: str, default: int) -> int:
    """A JSON body's whole-number field (2832.0 is one too, as JSON Schema says), default
    if missing; 400 if it is anything else."""
    value = body.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "%s must be a whole number" % name)
    return value


def optional_text(body: dict, name: str) -> str | None:
    """A JSON body's string field, None if missing or null; 400 if not a string."""
    return None if body.get(name) is None else text_field(body, name)


async def on_chain(request, fn, *args):
    """Run a registry change in a worker thread with its own store connection."""
    chain = state(request).gateway and state(request).gateway.chain
    if chain is None:
        raise ApiError(503, "this process has no chain connection (is the gateway running?)")

    def call():
        store = Store.connect(state(request).data_dir)
        try:
            return fn(store, chain, *args)
        finally:
            store.close()
    try:
        return await run_in_threadpool(call)
    except registry.RegistryError as e:
        raise ApiError(400, str(e))


# -- session -------------------------------------------------------------------

async def login(request):
    """Log in with the admin password; sets the session cookie and returns the CSRF token.

    Only application/json is accepted: a cross-site form cannot send it, so this route
    needs no CSRF token of its own; a browser's request from another site's page (its
    Origin header) is refused too. Scripts send no Origin.
    """
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        raise ApiError(403, "login from another origin (%s) refused" % origin[:100])
    body = await json_body(request)
    session = attempt_login(request, text_field(body, "password"))
    response = JSONResponse({"csrf": session.csrf})
    response.headers["set-cookie"] = auth.cookie_header(session, request.url.scheme == "https")
    return response


def attempt_login(request, password):
    """The new authenticated session; ApiError 429 (with Retry-After) while the client or the
    account must wait, 401 on a wrong password."""
    st, client = state(request), request.client.host if request.client else "?"
    wait = st.limiter.retry_after(client)
    if wait:
        raise ApiError(429, "too many failed logins; try again in %d s (or, on the gateway: "
                       "edgekeep admin unlock)" % wait, {"Retry-After": str(wait)})
    if not auth.check_password(st.data_dir, password):
        st.limiter.failed(client)
        raise ApiError(401, "wrong password")
    st.limiter.succeeded(client)
    old = request.scope.get("ek_session")
    if old:
        st.sessions.end(old.token)
    return st.sessions.new(authenticated=True)


async def logout(request):
    """End this session."""
    state(request).sessions.end(request.scope["ek_session"].token)
    return JSONResponse({"ok": True})


# -- status and devices ----------------------------------------------------------

async def status(request):
    """The dashboard snapshot: devices online, message rate, rejects, storage, anchor, health."""
    return JSONResponse(state(request).monitor.snapshot)


async def devices(request):
    """Every registered device with its last health report."""
    now = state(request).monitor.snapshot["time"]
    return JSONResponse([device_row(d, now) for d in state(request).store.devices()])


async def register_device(request):
    """Register a device by its public key (JSON: public_key hex, name, kind), on chain too,
    with a broker account of its own.

    201: `id`, `broker` (the URL devices reach the broker at) and, when the gateway manages
    its broker's accounts, `mqtt_user` and `mqtt_password`, shown this once: they go in the
    device's config.json. 409 if the device is registered already, 400 if it was revoked.
    """
    body = await json_body(request)
    try:
        key = bytes.fromhex(text_field(body, "public_key"))
    except ValueError:
        raise ApiError(400, "public_key must be hex")
    if len(key) != 65 or key[0] != 4:
        raise ApiError(400, "public_key must be the device's 65-byte uncompressed P-256 key "
                       "(04||X||Y) in hex")
    name = (optional_text(body, "name") or "").strip() or None
    kind = optional_text(body, "kind") or "tracker"
    if kind not in ("tracker", "camera"):
        raise ApiError(400, "kind must be tracker or camera")
    if name and len(name) > 64:
        raise ApiError(400, "a device name has 1 to 64 characters")
    if state(request).store.device(device_id(key).hex()) is not None:
        raise ApiError(409, "device %s is already registered" % device_id(key).hex())
    dev = await on_chain(request, registry.register, key, name, kind)
    out = {"id": dev, "broker": device_broker(request, None)}
    broker = managed_credentials(state(request).data_dir)
    if broker is not None:
        out.update(mqtt_user=dev, mqtt_password=await run_in_threadpool(broker.add_device, dev))
    return JSONResponse(out, 201)


def device_broker(request, given):
    """The broker URL a device is told: the one the token's issuer gave, else the gateway's
    own broker, its host replaced by the one this request came to when it is a loopback or
    wildcard address (a device on the LAN reaches the broker where the flash tool reached
    the admin page)."""
    if given:
        return given
    url = urlsplit(state(request).cfg.broker)
    host = url.hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        host = host_of(request.headers.get("host", "")) or host
    scheme = url.scheme if url.scheme in ("mqtt", "mqtts") else "mqtt"
    return "%s://%s:%d" % (scheme, "[%s]" % host if ":" in host else host,
                           url.port or (8883 if scheme == "mqtts" else 1883))


async def device(request):
    """One device."""
    d = device_or_404(request)
    return JSONResponse(device_row(d, state(request).monitor.snapshot["time"]))


async def rename_device(request):
    """Rename a device (JSON: name)."""
    d = device_or_404(request)
    name = text_field(await json_body(request), "name")
    try:
        registry.rename(state(request).store, d["id"], name)
    except registry.RegistryError as e:
        raise ApiError(400, str(e))
    return JSONResponse({"id": d["id"], "name": name.strip()})


async def revoke_device(request):
    """Revoke a device on chain and locally; its messages are rejected from then on."""
    d = device_or_404(request)
    await on_chain(request, registry.revoke, d["id"],
                   managed_credentials(state(request).data_dir))
    return JSONResponse({"id": d["id"], "status": "revoked"})


async def device_messages(request):
    """A device's messages, newest first, as stored: raw COSE_Sign1 in base64.

    The server cannot read them; the owner's browser decrypts with the keyring. `from` and
    `to` (Unix seconds, to exclusive) select by the message's time (its first reading's);
    a full page has a `Link: <...>; rel="next"` header, the URL of the next (older) page,
    which carries the `cursor` (time-seq of this page's last message).
    """
    d = device_or_404(request)
    unknown = set(request.query_params) - set(MESSAGES_QUERY)
    if unknown:
        raise ApiError(400, "unknown parameter %s: use %s" % (
            ", ".join(sorted(unknown))[:60], ", ".join(MESSAGES_QUERY)))
    kind = request.query_params.get("kind") or None
    if kind is not None and not MESSAGE_KIND.fullmatch(kind):
        raise ApiError(400, "kind must be a message kind (a few letters: t for telemetry, "
                       "s for status, ...)")
    limit = int_param(request, "limit", 50, 1, 1000)
    start = int_param(request, "from", 0, 0, SEQ_MAX)
    end = int_param(request, "to", SEQ_MAX + 1, 1, SEQ_MAX + 1)
    if start >= end:
        raise ApiError(400, "from (%d) must be before to (%d)" % (start, end))
    after = message_cursor(request.query_params.get("cursor"))
    rows = state(request).store.messages_page(d["id"], kind, start, end, after, limit)
    for r in rows:
        r["raw"] = base64.b64encode(r["raw"]).decode()
    headers = {}
    if len(rows) == limit:
        query = dict(request.query_params) | {"cursor": "%d-%d" % (rows[-1]["time"], rows[-1]["seq"])}
        headers["link"] = '<%s?%s>; rel="next"' % (request.url.path, urlencode(query))
    return JSONResponse(rows, headers=headers)


def message_cursor(raw: str | None) -> tuple[int, int] | None:
    """The `cursor` of GET .../messages, "time-seq" as the Link header gives it, else 400."""
    if raw is None:
        return None
    m = MESSAGE_CURSOR.fullmatch(raw)
    if not (m and int(m[1]) <= SEQ_MAX and 1 <= int(m[2]) <= SEQ_MAX):
        raise ApiError(400, "cursor must be time-seq as the previous page's Link header "
                       "gives it, not %r" % raw[:30])
    return int(m[1]), int(m[2])


async def message_proof(request):
    """One message with its inclusion proof and its epoch's anchor, for independent checking."""
    d = device_or_404(request)
    seq = path_int(request, "seq", 1, SEQ_MAX)
    store = state(request).store
    m = store.message(d["id"], seq)
    if m is None:
        raise ApiError(404, "no message %s-%d" % (d["id"], seq))
    out = {"device": d["id"], "seq": seq, "raw": base64.b64encode(m["raw"]).decode(),
           "epoch": m["epoch"], "leaf": m["leaf"], "proof": None, "anchor": None}
    if m["epoch"] is not None:
        leaves = store.epoch_leaves(m["epoch"])
        out["proof"] = [h.hex() for h in merkle.inclusion_proof(leaves, m["leaf"])]
        out["anchor"] = anchor_row(store.epoch(m["epoch"]))
    return JSONResponse(out)


# -- camera objects ------------------------------------------------------------------

def object_row(o):
    """An `objects` row (gateway/store/objects.py) as the pages and the API show it."""
    row = {k: o[k] for k in OBJECT_COLUMNS}
    done = o["stored"] == o["count"]
    row.update(complete=done, has_snapshot=done and o["type"].startswith("image/"),
               has_clip=done and o["type"].startswith("video/"))
    return row


def recent_objects(store, device, limit):
    """A camera's newest objects, newest first."""
    return [object_row(o) for o in store.objects.recent(device, limit, OBJECT_COLUMNS)]


def object_or_404(request):
    d = device_or_404(request)
    oid = request.path_params["oid"]
    o = OBJECT_ID.fullmatch(oid) and state(request).objects.get(d["id"], oid)
    if not o:
        raise ApiError(404, "no object %s-%s" % (d["id"], oid))
    return o


async def device_objects(request):
    """A camera's snapshots and clips, newest first.

    Each: id, capture time, event, type, size, chunks stored and in all, and has_snapshot /
    has_clip once complete. The media stays encrypted: see the object and chunk routes.
    """
    d = device_or_404(request)
    return JSONResponse(recent_objects(state(request).store, d["id"],
                                       int_param(request, "limit", 100, 1, 10000)))


async def device_object(request):
    """One object with its signed manifest (COSE_Sign1 of kind m, base64) as stored.

    The manifest lists the SHA-256 of every chunk; the browser checks the chunks against it
    and decrypts them with the owner's keyring.
    """
    o = object_or_404(request)
    raw = state(request).store.message(o["device"], o["seq"])["raw"]
    return JSONResponse(dict(object_row(o), manifest=base64.b64encode(raw).decode()))


async def object_chunk(request):
    """One chunk of an object: its COSE_Encrypt0 as stored (application/octet-stream).

    Read from the Provider, which rebuilds it from its shares and checks it against its
    SHA-256, the one the signed manifest lists. 404 while not uploaded, 410 if lost.
    """
    o = object_or_404(request)
    index = path_int(request, "index", 0, 2 ** 32)
    if index >= o["count"]:
        raise ApiError(404, "object %s has %d chunks" % (o["oid"], o["count"]))
    digest = o["hashes"][index * HASH_LEN:(index + 1) * HASH_LEN]
    try:
        data = state(request).objects.provider.get(digest)
    except LookupError:
        raise ApiError(404, "chunk %d of object %s is not uploaded yet" % (index, o["oid"]))
    except provider.Unrecoverable as e:
        raise ApiError(410, "lost: %s" % e)
    return Response(data, media_type="application/octet-stream")


# -- enrollment: devices added from another machine -----------------------------------

CHAIN_WAIT = 30   # s an enrollment waits for the chain of a gateway that has just started


class EnrollRefused(Exception):
    """An answer of the enrollment route: {"error", "fix"} with its status."""

    def __init__(self, status: int, message: str, fix: str):
        super().__init__(message)
        self.status, self.fix = status, fix


def refused(e: EnrollRefused) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="edgekeep enrollment"'} if e.status == 401 else None
    return JSONResponse({"error": str(e), "fix": e.fix}, e.status, headers)


def bearer_token(request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise EnrollRefused(401, "no enrollment token: send it as `Authorization: Bearer "
                            "TOKEN`", "edgekeep-flash provision --token-file FILE does; "
                            + registry.ISSUE_FIX)
    return token.strip()


def hex_field(body: dict, name: str, length: int | None = None) -> bytes | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (length is not None and len(raw) != length):
        raise EnrollRefused(400, "%s must be %s" % (
            name, "%d bytes in hex" % length if length else "hex"), "send what edgekeep-flash sends")
    return raw


def retire_field(body: dict) -> tuple[str, bytes] | None:
    retire = body.get("retire")
    if retire is None:
        return None
    if not (isinstance(retire, dict) and isinstance(retire.get("device"), str)):
        raise EnrollRefused(400, "retire must be {\"device\": ID, \"signature\": HEX}",
                            "send what edgekeep-flash sends")
    signature = hex_field(retire, "signature", 64)
    if signature is None:
        raise EnrollRefused(400, "retire.signature is missing", "send what edgekeep-flash sends")
    return retire["device"], signature


async def enroll(request):
    """Enroll a device from another machine with a single-use enrollment token, no session.

    The token goes in `Authorization: Bearer TOKEN` (from `edgekeep devices enroll` or POST
    /api/enroll/tokens). JSON: public_key (hex, made on the device), name, kind; retire:
    {device, signature} revokes the device it replaces, signature being that device's ES256
    over registry.retire_statement (so a token alone revokes nothing); retire without
    public_key decommissions. An empty object only checks the token (200, nothing spent).
    201: device, name, broker, mqtt_user, mqtt_password (once), retired, retire_error.
    Refusals: {error, fix}; 401 for a token unknown, used or expired.
    """
    st = state(request)
    try:
        token = bearer_token(request)
        body = await json_body(request)
        key = hex_field(body, "public_key")
        retire = retire_field(body)
        name = (optional_text(body, "name") or "").strip() or None
        kind = optional_text(body, "kind") or "tracker"
        if key is None and retire is None:
            found = registry.check_enrollment(st.store, token)
            return JSONResponse({"valid": True, "expires": found.expires})
        chain = await gateway_chain(st.gateway)
        client = request.client.host if request.client else "?"
        broker = managed_credentials(st.data_dir)

        def call():
            store = Store.connect(st.data_dir)
            try:
                return registry.enroll(store, chain, broker, token, client, key, name, kind,
                                       retire)
            finally:
                store.close()
        result = await run_in_threadpool(call)
    except registry.EnrollmentError as e:
        return refused(EnrollRefused(e.status, str(e), e.fix))
    except registry.RegistryError as e:
        return refused(EnrollRefused(400, str(e), "see the error; " + registry.ISSUE_FIX))
    except EnrollRefused as e:
        return refused(e)
    log.info("enrollment from %s: %s%s", client,
             "device %s enrolled" % result["device"] if result["device"] else "",
             "%srevoked %s" % (", " if result["device"] else "", result["retired"])
             if result["retired"] else "")
    result["broker"] = device_broker(request, result["broker"]) if result["device"] else None
    return JSONResponse(result, 201)


async def gateway_chain(gateway, wait: float = CHAIN_WAIT):
    """The gateway's chain client, waiting a little for a gateway that has just started."""
    if gateway is None:
        raise EnrollRefused(503, "this process has no chain connection (an admin page without "
                            "its gateway)", "enroll with the running gateway (`edgekeep run`)")
    try:
        return await run_in_threadpool(gateway.wait_chain, wait)
    except TimeoutError:
        raise EnrollRefused(503, "the gateway is not connected to its chain (%s)"
                            % str(gateway.chain_error or "not tried yet")[:200],
                            "retry once the chain answers (the admin page's dashboard and "
                            "/healthz show it: the anchor component waits for it)")


async def enrollment_token(request):
    """Issue a single-use enrollment token for one device (JSON: ttl seconds, default 600,
    at most 86400; broker: the URL devices reach the broker at, optional).

    201: token (shown this once: the gateway keeps only its SHA-256), expires, fingerprint
    (the admin page certificate's SHA-256, null over http) and provision: the
    edgekeep-flash command to run where the device is plugged in.
    """
    body = await json_body(request)
    ttl = int_field(body, "ttl", registry.DEFAULT_TTL)
    try:
        token, expires = registry.issue_enrollment(state(request).store, ttl, "admin page",
                                                   optional_text(body, "broker"))
    except registry.RegistryError as e:
        raise ApiError(400, str(e))
    url = str(request.base_url).rstrip("/")
    fp = page_fingerprint(state(request).cfg) if url.startswith("https:") else None
    return JSONResponse({"token": token, "expires": expires, "fingerprint": fp,
                         "provision": registry.provision_command(url, fp)}, 201)


def page_fingerprint(cfg) -> str | None:
    """The SHA-256 fingerprint of the admin page's certificate, None if it has none yet."""
    path = cfg.web_cert or (os.path.join(cfg.data_dir, tls.CERT_FILE) if cfg.web_tls else "")
    return tls.fingerprint(path) if path and os.path.exists(path) else None


# -- chain, audits, settings -------------------------------------------------------

def anchor_row(e):
    return {"epoch": e["epoch"], "root": e["root"].hex(), "count": e["count"],
            "status": e["status"], "tx_hash": e["tx_hash"], "block": e["block"],
            "gas": e["gas"], "sealed_at": e["sealed_at"], "mined_at": e["mined_at"],
            "attempts": e["attempts"], "last_error": e["last_error"]}


async def anchors(request):
    """Sealed epochs, newest first: Merkle root, tx hash, block, gas."""
    limit = int_param(request, "limit", 100, 1, 10000)
    return JSONResponse([anchor_row(e) for e in state(request).store.recent_epochs(limit)])


async def audits(request):
    """The last storage audit, or null while the Keeper has run none."""
    return JSONResponse({"last": state(request).monitor.snapshot["audit"]})


async def storage_chain(request):
    """The chain this gateway anchors to: chain id, its RPC URL, the contract addresses.

    An independent Keeper should pin the addresses (`--deployment`) rather than take them
    from here.
    """
    chain = state(request).gateway and state(request).gateway.chain
    if chain is None:
        raise ApiError(503, "this process has no chain connection (is the gateway running?)")
    return JSONResponse({"chain_id": chain.chain_id, "rpc_url": chain.rpc_url,
                         "contracts": chain.deployment["contracts"]})


async def storage_challenge(request):
    """The Provider's answer to a storage challenge: the message at (epoch, leaf) with its
    epoch path and, for a camera manifest, chunk select mod count with its object path.

    Data is base64, hashes hex. The Keeper checks it against the chain (docs/keeper.md).
    """
    for name in ("epoch", "leaf"):
        if name not in request.query_params:
            raise ApiError(400, "%s is required" % name)
    epoch = int_param(request, "epoch", None, 1, 2 ** 62)
    leaf = int_param(request, "leaf", None, 0, 2 ** 32)
    select = int_param(request, "select", 0, 0, 2 ** 64 - 1)

    def answer():
        with state(request).challenge_lock:  # one Provider, one connection: one at a time
            return provider.answer_to_wire(state(request).challenges.answer(epoch, leaf, select))
    try:
        return JSONResponse(await run_in_threadpool(answer))
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\""))
    except provider.Unrecoverable as e:
        raise ApiError(410, "lost: %s" % e)


async def network(request):
    """The Provider network: this gateway, what its peers survive, each peer.

    `gateway`: name, short, endpoint (null with endpoint_note when the peer port is closed);
    `survival`: peers in use, k, m, survives, statement, level (ok, caution, bad),
    not_offbox_blobs, not_offbox_bytes, durable, complete; `peers`: name, short, endpoint,
    status, reachable (true, false, null if never called) and reachable_text, last_seen,
    unreachable_since, bytes_placed (ours there), bytes_held (its here), capacity, quota,
    paired_at, term_end, last_audit, audit_failures, last_error; `refused`: requests the peer
    port refused, by reason.
    """
    st = state(request)
    return JSONResponse(st.network.view(st.store))


def settings_rows(cfg):
    """The running configuration, secrets excluded (file paths only)."""
    rows = {k: v for k, v in vars(cfg).items() if k not in ("chain", "alerts")}
    rows.update({"chain." + k: v for k, v in vars(cfg.chain).items()})
    rows.update({"alerts." + k: v for k, v in vars(cfg.alerts).items()})
    if cfg.alerts.webhook_url:      # may hold a token (ntfy's topic, Gotify's ?token=)
        rows["alerts.webhook_url"] = redact(cfg.alerts.webhook_url)
    if cfg.alerts.webhook_topic:
        rows["alerts.webhook_topic"] = "(set)"
    return rows


async def settings(request):
    """The running configuration (edit the gateway's TOML file to change it)."""
    return JSONResponse(settings_rows(state(request).cfg))


async def openapi(request):
    """This document."""
    return JSONResponse(openapi_document(request.app.routes, auth.COOKIE, PUBLIC, TOKEN))


ROUTES = [
    Route("/api/session", login, methods=["POST"]),
    Route("/api/session", logout, methods=["DELETE"]),
    Route("/api/status", status),
    Route("/api/events", sse.events),
    Route("/api/devices", devices),
    Route("/api/devices", register_device, methods=["POST"]),
    Route("/api/devices/{device}", device),
    Route("/api/devices/{device}", rename_device, methods=["PATCH"]),
    Route("/api/devices/{device}/revoke", revoke_device, methods=["POST"]),
    Route("/api/devices/{device}/messages", device_messages),
    Route("/api/devices/{device}/messages/{seq}", message_proof),
    Route("/api/devices/{device}/objects", device_objects),
    Route("/api/devices/{device}/objects/{oid}", device_object),
    Route("/api/devices/{device}/objects/{oid}/chunks/{index}", object_chunk),
    Route("/api/enroll", enroll, methods=["POST"]),
    Route("/api/enroll/tokens", enrollment_token, methods=["POST"]),
    Route("/api/anchors", anchors),
    Route("/api/audits", audits),
    Route("/api/storage/chain", storage_chain),
    Route("/api/storage/challenge", storage_challenge),
    Route("/api/network", network),
    Route("/api/settings", settings),
    Route("/api/openapi.json", openapi),
]

PUBLIC = {login}
TOKEN = {enroll}  # an enrollment token instead of a session (app.PUBLIC, app.CSRF_EXEMPT)
