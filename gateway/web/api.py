"""The admin REST API (JSON, under /api): what the pages and `gateway audit --remote` use.

Every route but POST /api/session needs a session; unsafe ones need the X-CSRF-Token header
(AuthMiddleware). The OpenAPI document at /api/openapi.json is generated from ROUTES, so a
route cannot exist undocumented.
"""
import base64
import re

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.objects import HASH_LEN
from gateway.chain import registry
from gateway.mqtt.broker import managed_credentials
from gateway.store import provider
from gateway.store.database import Store
from gateway.web import auth, sse
from gateway.web.status import device_row
from gateway.wire import merkle

DEVICE_ID = re.compile(r"^[0-9a-f]{16}$")
OBJECT_ID = re.compile(r"^[0-9a-f]{16}$")  # 8 random bytes
OBJECT_COLUMNS = ("oid", "seq", "time", "event", "type", "size", "chunk_size", "count", "stored",
                  "bytes", "completed_at")


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def error_response(request, exc):
    return JSONResponse({"error": str(exc)}, exc.status)


def state(request):
    return request.app.state


def device_or_404(request):
    dev = request.path_params["device"]
    d = DEVICE_ID.match(dev) and state(request).store.device(dev)
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


async def json_body(request):
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ApiError(415, "send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body is not JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


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
    needs no CSRF token of its own.
    """
    body = await json_body(request)
    session = attempt_login(request, str(body.get("password", "")))
    response = JSONResponse({"csrf": session.csrf})
    response.headers["set-cookie"] = auth.cookie_header(session, request.url.scheme == "https")
    return response


def attempt_login(request, password):
    """The new authenticated session; ApiError 429 when rate limited, 401 on a wrong password."""
    st, client = state(request), request.client.host if request.client else "?"
    wait = st.limiter.retry_after(client)
    if wait:
        raise ApiError(429, "too many failed logins; try again in %d s" % wait)
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
    """Register a device by its public key (JSON: public_key hex, name, kind), on chain too."""
    body = await json_body(request)
    try:
        key = bytes.fromhex(str(body.get("public_key", "")))
    except ValueError:
        raise ApiError(400, "public_key must be hex")
    name = str(body.get("name") or "").strip() or None
    kind = str(body.get("kind") or "tracker")
    if kind not in ("tracker", "camera"):
        raise ApiError(400, "kind must be tracker or camera")
    dev = await on_chain(request, registry.register, key, name, kind)
    return JSONResponse({"id": dev}, 201)


async def device(request):
    """One device."""
    d = device_or_404(request)
    return JSONResponse(device_row(d, state(request).monitor.snapshot["time"]))


async def rename_device(request):
    """Rename a device (JSON: name)."""
    d = device_or_404(request)
    body = await json_body(request)
    try:
        registry.rename(state(request).store, d["id"], body.get("name"))
    except registry.RegistryError as e:
        raise ApiError(400, str(e))
    return JSONResponse({"id": d["id"], "name": body["name"].strip()})


async def revoke_device(request):
    """Revoke a device on chain and locally; its messages are rejected from then on."""
    d = device_or_404(request)
    await on_chain(request, registry.revoke, d["id"],
                   managed_credentials(state(request).data_dir))
    return JSONResponse({"id": d["id"], "status": "revoked"})


async def device_messages(request):
    """A device's newest messages, newest first, as stored: raw COSE_Sign1 in base64.

    The server cannot read them; the owner's browser decrypts with the keyring.
    """
    d = device_or_404(request)
    kind = request.query_params.get("kind")
    limit = int_param(request, "limit", 50, 1, 1000)
    rows = state(request).store.recent_messages(d["id"], kind, limit)
    for r in rows:
        r["raw"] = base64.b64encode(r["raw"]).decode()
    return JSONResponse(rows)


async def message_proof(request):
    """One message with its inclusion proof and its epoch's anchor, for independent checking."""
    d = device_or_404(request)
    seq = int(request.path_params["seq"])
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
    o = OBJECT_ID.match(oid) and state(request).objects.get(d["id"], oid)
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
    index = request.path_params["index"]
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
    rows = {k: v for k, v in vars(cfg).items() if k != "chain"}
    rows.update({"chain." + k: v for k, v in vars(cfg.chain).items()})
    return rows


async def settings(request):
    """The running configuration (edit the gateway's TOML file to change it)."""
    return JSONResponse(settings_rows(state(request).cfg))


async def openapi(request):
    """This document."""
    return JSONResponse(openapi_document())


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
    Route("/api/devices/{device}/messages/{seq:int}", message_proof),
    Route("/api/devices/{device}/objects", device_objects),
    Route("/api/devices/{device}/objects/{oid}", device_object),
    Route("/api/devices/{device}/objects/{oid}/chunks/{index:int}", object_chunk),
    Route("/api/anchors", anchors),
    Route("/api/audits", audits),
    Route("/api/storage/chain", storage_chain),
    Route("/api/storage/challenge", storage_challenge),
    Route("/api/network", network),
    Route("/api/settings", settings),
    Route("/api/openapi.json", openapi),
]

QUERY = {device_messages: {"kind": "string", "limit": "integer"}, anchors: {"limit": "integer"},
         device_objects: {"limit": "integer"},
         storage_challenge: {"epoch": "integer", "leaf": "integer", "select": "integer"}}
PUBLIC = {login}


def openapi_document():
    paths = {}
    for r in ROUTES:
        path = re.sub(r"{(\w+)(:\w+)?}", r"{\1}", r.path)
        doc = (r.endpoint.__doc__ or "").strip().split("\n\n")
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in r.param_convertors]
        params += [{"name": n, "in": "query", "schema": {"type": t}}
                   for n, t in QUERY.get(r.endpoint, {}).items()]
        for method in sorted(r.methods - {"HEAD"}):
            op = {"summary": doc[0], "operationId": r.endpoint.__name__, "parameters": params,
                  "responses": {"200": {"description": "OK"}}}
            if len(doc) > 1:
                op["description"] = " ".join(" ".join(doc[1:]).split())
            if r.endpoint in PUBLIC:
                op["security"] = []
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "EdgeKeep gateway admin API", "version": "1"},
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": auth.COOKIE},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"}}},
        "security": [{"session": [], "csrf": []}],
        "paths": paths,
    }
