"""The OpenAPI 3.1 document of the admin API, made from the app's own routes.

Every route under /api is listed with its path and query parameters, its JSON body and its
responses, so a route cannot exist undocumented, and a schema checker (the suite runs
schemathesis) can hold each answer to its schema. What each operation takes and answers is
in OPERATIONS, keyed by the endpoint's function name (its operationId); every error is
{"error": text} (ApiError), with a `fix` where the route gives one.
"""
import re
from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, Route

from gateway.chain import registry

Schema = dict[str, Any]
Endpoints = set[Callable[..., Any]]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ANY: Schema = {}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these properties, the first set required; more may follow."""
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def between(lo: int, hi: int) -> Schema:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


ERROR = obj({"error": STRING}, {"fix": STRING})
HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}
BASE64 = {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
OK = obj({"ok": BOOLEAN})
PUBLIC_KEY = {"type": "string", "pattern": "^04[0-9a-fA-F]{128}$",
              "description": "65-byte uncompressed P-256 point (04||X||Y), hex"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"}

DEVICE = obj({
    "id": HEX, "name": nullable(STRING), "kind": STRING, "status": STRING, "online": BOOLEAN,
    "last_seen": nullable(NUMBER), "seq": nullable(INTEGER), "firmware": nullable(STRING),
    "battery_mv": nullable(NUMBER), "rssi": nullable(NUMBER), "snr": nullable(NUMBER),
    "queue": nullable(NUMBER), "queue_bytes": nullable(NUMBER), "drops": nullable(NUMBER),
    "uptime": nullable(NUMBER), "public_key": HEX, "registered_at": NUMBER})
MESSAGE = obj({"seq": INTEGER, "raw": BASE64})
ANCHOR = obj({
    "epoch": INTEGER, "root": HEX, "count": INTEGER, "status": STRING,
    "tx_hash": nullable(STRING), "block": nullable(INTEGER), "gas": nullable(INTEGER),
    "sealed_at": NUMBER, "mined_at": nullable(NUMBER), "attempts": INTEGER,
    "last_error": nullable(STRING)})
PROOF = obj({
    "device": HEX, "seq": INTEGER, "raw": BASE64, "epoch": nullable(INTEGER),
    "leaf": nullable(INTEGER), "proof": nullable(array(HEX)), "anchor": nullable(ANCHOR)})
OBJECT = obj({
    "oid": HEX, "seq": INTEGER, "time": NUMBER, "event": STRING, "type": STRING,
    "size": INTEGER, "chunk_size": INTEGER, "count": INTEGER, "stored": INTEGER,
    "bytes": INTEGER, "completed_at": nullable(NUMBER), "complete": BOOLEAN,
    "has_snapshot": BOOLEAN, "has_clip": BOOLEAN})
STATUS = obj({
    "time": NUMBER, "devices": obj({"total": INTEGER, "online": INTEGER, "offline": INTEGER,
                                     "revoked": INTEGER}),
    "messages": INTEGER, "rate": NUMBER, "rejects": {"type": "object"},
    "duplicates": INTEGER, "queued": NUMBER, "drops": NUMBER, "anchor": nullable(ANY),
    "pending_epochs": INTEGER, "audit": nullable(ANY), "components": {"type": "object"},
    "workers": array({"type": "object"})})
ENROLLED = obj({"device": nullable(HEX), "retired": nullable(STRING)},
               {"name": nullable(STRING), "broker": nullable(STRING),
                "mqtt_user": nullable(STRING), "mqtt_password": nullable(STRING),
                "retire_error": nullable(STRING)})
ALERT = obj({"id": INTEGER, "rule": STRING, "subject": STRING, "device": nullable(HEX),
             "title": STRING, "message": STRING, "priority": INTEGER, "detail": {"type": "object"},
             "started_at": NUMBER, "resolved_at": nullable(NUMBER)})

BINARY = "application/octet-stream"
INTEGER_PATH = {"seq", "index"}     # whole numbers in the path (api.path_int checks them)


class Operation:
    """What one endpoint takes and answers: query parameters, JSON body, success status
    and schema (or media type for a non-JSON answer)."""

    def __init__(self, response: Schema | None = None, status: int = 200,
                 query: dict[str, Schema] | None = None, body: Schema | None = None,
                 media: str = "application/json", required_query: tuple[str, ...] = ()):
        self.response, self.status, self.media = response, status, media
        self.query, self.body, self.required_query = query or {}, body, required_query

UPDATE_BUNDLE = obj({"digest": HEX, "version": STRING, "board": STRING, "files": INTEGER,
                     "size": INTEGER, "uploaded_at": NUMBER})
ROLLOUT = obj({"id": HEX, "bundle": HEX, "version": nullable(STRING), "status": STRING,
               "stage": INTEGER, "stages": INTEGER, "max_failed": NUMBER,
               "confirm_seconds": NUMBER, "force": BOOLEAN,
               "accepted_stage": nullable(INTEGER), "created_at": NUMBER,
               "updated_at": NUMBER, "reason": nullable(STRING), "counts": {"type": "object"}},
              {"devices": array(obj({"device": HEX, "stage": INTEGER, "state": STRING,
                                     "chunks": INTEGER, "sent": INTEGER, "why": nullable(STRING),
                                     "offered_at": nullable(NUMBER), "updated_at": NUMBER}))})


OPERATIONS: dict[str, Operation] = {
    "login": Operation(obj({"csrf": STRING}), body=obj({"password": STRING})),
    "logout": Operation(OK),
    "status": Operation(STATUS),
    "events": Operation(media="text/event-stream"),
    "devices": Operation(array(DEVICE)),
    "register_device": Operation(
        obj({"id": HEX, "broker": STRING}, {"mqtt_user": STRING, "mqtt_password": STRING}),
        201, body=obj({"public_key": PUBLIC_KEY}, {"name": nullable(NAME),
                                            "kind": {"enum": ["tracker", "camera"]}})),
    "device": Operation(DEVICE),
    "rename_device": Operation(obj({"id": HEX, "name": STRING}), body=obj({"name": NAME})),
    "revoke_device": Operation(obj({"id": HEX, "status": {"const": "revoked"}})),
    "device_messages": Operation(array(MESSAGE), query={
        "kind": {"type": "string", "pattern": "^[a-z]{1,8}$"}, "limit": between(1, 1000),
        "from": between(0, 2 ** 32 - 1), "to": between(1, 2 ** 32),
        "cursor": {"type": "string", "pattern": "^[0-9]{1,10}-[0-9]{1,10}$"}}),
    "message_proof": Operation(PROOF),
    "device_objects": Operation(array(OBJECT), query={"limit": between(1, 10000)}),
    "device_object": Operation({"allOf": [OBJECT, obj({"manifest": BASE64})]}),
    "object_chunk": Operation(media=BINARY),
    "enroll": Operation(ENROLLED, 201, body=obj({}, {
        "public_key": PUBLIC_KEY, "name": nullable(NAME), "kind": {"enum": ["tracker", "camera"]},
        "retire": obj({"device": STRING,
                       "signature": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"}})})),
    "enrollment_token": Operation(
        obj({"token": STRING, "expires": NUMBER, "fingerprint": nullable(STRING),
             "provision": STRING}), 201,
        body=obj({}, {"ttl": between(1, registry.MAX_TTL), "broker": nullable(
            {"type": "string", "pattern": "^%s$" % registry.BROKER_URL.pattern})})),
    "anchors": Operation(array(ANCHOR), query={"limit": between(1, 10000)}),
    "audits": Operation(obj({"last": nullable(ANY)})),
    "storage_chain": Operation(obj({"chain_id": INTEGER, "rpc_url": STRING,
                                    "contracts": {"type": "object"}})),
    "storage_challenge": Operation({"type": "object"}, query={
        "epoch": between(1, 2 ** 62), "leaf": between(0, 2 ** 32),
        "select": between(0, 2 ** 64 - 1)}, required_query=("epoch", "leaf")),
    "network": Operation(obj({"gateway": {"type": "object"}, "survival": {"type": "object"},
                              "peers": array({"type": "object"}),
                              "refused": {"type": "object"}})),
    "settings": Operation({"type": "object"}),
    "openapi": Operation({"type": "object"}),
    # the Alerts page (gateway/web/alerts.py)
    "alerts": Operation(obj({"active": array(ALERT), "resolved": array(ALERT),
                             "optin": array(HEX), "counts": {"type": "object"},
                             "pending": {"type": "object"}}), query={"limit": between(1, 500)}),
    "set_alert_values": Operation(obj({"device": HEX, "values": BOOLEAN}),
                                  body=obj({"values": BOOLEAN})),
    # the Updates page (gateway/web/updates.py)
    "updates": Operation(obj({"release_key": nullable(HEX), "bundles": array(UPDATE_BUNDLE),
                              "devices": array(obj({"id": HEX, "name": nullable(STRING),
                                                    "firmware": nullable(STRING)})),
                              "rollouts": array(ROLLOUT)})),
    "update_release_key": Operation(obj({"release_key": HEX}), body=obj({"key": {
        "type": "string", "pattern": "^\\s*04[0-9a-fA-F]{128}\\s*$"}})),
    "update_bundle": Operation(UPDATE_BUNDLE, 201),   # the body is a tar archive, not JSON
    "update_rollout_start": Operation(ROLLOUT, 201, body=obj(
        {"bundle": STRING, "devices": array(STRING)},
        {"canary": array(STRING), "stages": array(INTEGER), "max_failed": NUMBER,
         "confirm_seconds": NUMBER, "force": BOOLEAN})),
    "update_rollout": Operation(ROLLOUT),
    "update_rollout_resume": Operation(ROLLOUT),
    "update_rollout_abort": Operation(ROLLOUT),
}


UNDESCRIBED = Operation(ANY)


def undescribed(routes: list[BaseRoute]) -> list[str]:
    """The /api routes whose endpoint has no entry in OPERATIONS."""
    return [r.path for r in api_routes(routes) if r.endpoint.__name__ not in OPERATIONS]


def api_routes(routes: list[BaseRoute]) -> list[Route]:
    return [r for r in routes if isinstance(r, Route) and r.path.startswith("/api/")]


def operation(route: Route, method: str, public: Endpoints, token: Endpoints) -> Schema:
    name = route.endpoint.__name__
    spec = OPERATIONS.get(name, UNDESCRIBED)   # tests/test_web.py finds such routes
    doc = (route.endpoint.__doc__ or "").strip().split("\n\n")
    params = [{"name": n, "in": "path", "required": True,
               "schema": INTEGER if n in INTEGER_PATH else STRING} for n in route.param_convertors]
    params += [{"name": n, "in": "query", "required": n in spec.required_query, "schema": s}
               for n, s in spec.query.items()]
    content = {spec.media: {"schema": spec.response}} if spec.response is not None \
        else {spec.media: {}}
    op: dict[str, Any] = {
        "summary": doc[0], "operationId": name, "parameters": params,
        "responses": {str(spec.status): {"description": "OK", "content": content},
                      "default": {"description": "an error, saying why",
                                  "content": {"application/json": {"schema": ERROR}}}}}
    if len(doc) > 1:
        op["description"] = " ".join(" ".join(doc[1:]).split())
    if spec.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": spec.body}}}
    if method != "GET":      # an unsafe method needs the CSRF token too (auth.AuthMiddleware)
        op["security"] = [{"session": [], "csrf": []}]
    if route.endpoint in public:
        op["security"] = []
    if route.endpoint in token:
        op["security"] = [{"enrollment": []}]
    return op


def document(routes: list[BaseRoute], cookie: str, public: Endpoints,
             token: Endpoints) -> Schema:
    """The OpenAPI document of every /api route among routes."""
    paths: dict[str, Schema] = {}
    for r in api_routes(routes):
        path = re.sub(r"{(\w+)(:\w+)?}", r"{\1}", r.path)
        for method in sorted((r.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = operation(r, method, public, token)
    return {
        "openapi": "3.1.0",
        "info": {"title": "EdgeKeep gateway admin API", "version": "1"},
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": cookie},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            "enrollment": {"type": "http", "scheme": "bearer"}}},
        "security": [{"session": []}],
        "paths": paths,
    }
