"""/api/updates: the Updates page's API (docs/web.md, "Updates"). The release key the gateway
checks bundles against (set once), signed bundles (uploaded as a tar archive), and rollouts:
start one (devices, a canary group, then percentages of the rest), follow each device,
resume a halted one, abort one. The engine in the lease holder does the sending
(gateway/updates/engine.py). Refusals are {"error", "fix"} with a 4xx status, and a refused
bundle is counted by reason (/metrics: edgekeep_update_bundles_rejected_total).
"""
import collections
import time

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.store.rollouts import Rollouts
from gateway.updates import actions, bundles
from gateway.updates.plan import PlanError
from gateway.web.api import ApiError, json_body, state

ROLLOUT_ID = 16   # hex digits


def rejected(st):
    """Refused uploads by reason, since the admin page started (for /metrics)."""
    if not hasattr(st, "update_rejects"):
        st.update_rejects = collections.Counter()
    return st.update_rejects


def refuse(request, e):
    rejected(state(request))[e.reason] += 1
    return JSONResponse({"error": str(e), "fix": e.fix}, e.status)


def rollouts_of(request):
    return Rollouts(state(request).store.db)


def bundle_view(b):
    return {"digest": b.digest, "version": b.version, "board": b.board, "files": b.files,
            "size": b.size, "uploaded_at": b.uploaded_at}


def rollout_view(rollouts, r, devices=False):
    rows = rollouts.devices(r.id)
    b = rollouts.bundle(r.bundle)
    out = {"id": r.id, "bundle": r.bundle, "version": b.version if b else None,
           "status": r.status, "stage": r.stage, "stages": r.stages, "max_failed": r.max_failed,
           "confirm_seconds": r.confirm_seconds, "force": r.force,
           "accepted_stage": r.accepted if r.accepted >= 0 else None,
           "created_at": r.created_at, "updated_at": r.updated_at, "reason": r.reason,
           "counts": dict(collections.Counter(d.state for d in rows))}
    if devices:
        out["devices"] = [{"device": d.device, "stage": d.stage, "state": d.state,
                           "chunks": d.chunks, "sent": d.sent, "why": d.why,
                           "offered_at": d.offered_at, "updated_at": d.updated_at}
                          for d in rows]
    return out


async def updates(request):
    """The release key, the uploaded bundles, the active devices and the recent rollouts.

    release_key: hex, or null until it is set; devices: id, name, firmware of each active
    device; rollouts: newest first, each with its counts of devices by state.
    """
    st, rollouts = state(request), rollouts_of(request)
    key = bundles.release_key(st.data_dir)
    devices = [{"id": d["id"], "name": d["name"], "firmware": (d["health"] or {}).get("fw")}
               for d in st.store.devices() if d["status"] == "active"]
    return JSONResponse({"release_key": key.hex() if key else None,
                         "bundles": [bundle_view(b) for b in rollouts.bundles()],
                         "devices": devices,
                         "rollouts": [rollout_view(rollouts, r) for r in rollouts.all()]})


async def update_release_key(request):
    """Set the release public key bundles are checked against, once (JSON: key, the hex
    text of KEY.pub). The same key again is fine; another one is refused (409)."""
    body = await json_body(request)
    try:
        key = bundles.set_release_key(state(request).data_dir, body.get("key"))
    except bundles.Rejected as e:
        return refuse(request, e)
    return JSONResponse({"release_key": key.hex()})


async def update_bundle(request):
    """Upload a signed bundle: the body is a tar archive (gzip or not) of the directory
    `python -m firmware build --sign-key` wrote.

    201: the bundle (digest, version, board, files, size). Refused (4xx, with a fix): no
    release key set, not an archive, no manifest, unsigned, signed by another key, a file
    that does not match the signed manifest, not a MicroPython bundle, too large.
    """
    st = state(request)
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > bundles.MAX_ARCHIVE:
            return refuse(request, bundles.Rejected(
                "too_large", "the upload is over %d bytes" % bundles.MAX_ARCHIVE,
                "upload the bundle alone", 413))
    try:
        row, _ = await run_in_threadpool(bundles.accept, st.data_dir, data)
    except bundles.Rejected as e:
        return refuse(request, e)
    rollouts_of(request).add_bundle(row)
    return JSONResponse(bundle_view(row), 201)


def plan_fields(body):
    devices = body.get("devices")
    canary = body.get("canary") or []
    percents = body.get("stages") or []
    for name, value in (("devices", devices), ("canary", canary)):
        if not (isinstance(value, list) and all(isinstance(d, str) for d in value)):
            raise ApiError(400, "%s must be a list of device ids" % name)
    if not isinstance(percents, list):
        raise ApiError(400, "stages must be a list of percentages, e.g. [25, 100]")
    numbers = {}
    for name, default in (("max_failed", actions.DEFAULT_MAX_FAILED),
                          ("confirm_seconds", actions.DEFAULT_CONFIRM_SECONDS)):
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, "%s must be a number" % name)
        numbers[name] = value
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "force must be true or false")
    return devices, canary, percents, numbers, force


async def update_rollout_start(request):
    """Start a rollout (JSON: bundle digest; devices, ids; canary, ids among them offered
    first; stages, cumulative percentages of the rest, ending at 100; max_failed, the share
    of a stage's devices that may fail before the rollout halts, default 0.2;
    confirm_seconds, how long a device has to confirm, default 900; force).

    201: the rollout with its devices. 400 with a fix for a plan that cannot run.
    """
    body = await json_body(request)
    digest = body.get("bundle")
    if not isinstance(digest, str):
        raise ApiError(400, "bundle must be the digest of an uploaded bundle")
    devices, canary, percents, numbers, force = plan_fields(body)
    try:
        r = actions.create(state(request).store, digest, devices, canary, percents,
                           force=force, now=time.time(), **numbers)
    except PlanError as e:
        status = 404 if isinstance(e, actions.Unknown) else 409 if isinstance(e, actions.Busy) \
            else 400
        return JSONResponse({"error": str(e), "fix": "change the plan and start it again"},
                            status)
    return JSONResponse(rollout_view(rollouts_of(request), r, devices=True), 201)


def rollout_or_404(request):
    rid = request.path_params["rollout"]
    r = len(rid) == ROLLOUT_ID and rollouts_of(request).get(rid)
    if not r:
        raise ApiError(404, "no rollout %s" % rid[:32])
    return r


async def update_rollout(request):
    """A rollout and each of its devices: stage, state (waiting, offered, chunks, verifying,
    rebooting, confirmed, current, refused, rolled back, timed out, skipped), chunks asked
    for and sent, why it failed."""
    return JSONResponse(rollout_view(rollouts_of(request), rollout_or_404(request), True))


async def update_rollout_resume(request):
    """Resume a halted rollout: the failures of the stage it halted at are accepted, and it
    goes on with the next stages (judged as before). 409 unless it is halted."""
    r = rollout_or_404(request)
    if not actions.resume(rollouts_of(request), r.id, time.time()):
        raise ApiError(409, "rollout %s is %s, not halted" % (r.id, r.status))
    return JSONResponse(rollout_view(rollouts_of(request), rollouts_of(request).get(r.id), True))


async def update_rollout_abort(request):
    """Abort a rollout: nothing more is offered (devices installing already finish on their
    own: each confirms or rolls back by itself). 409 if it has ended."""
    r = rollout_or_404(request)
    if not actions.abort(rollouts_of(request), r.id, time.time()):
        raise ApiError(409, "rollout %s has ended (%s)" % (r.id, r.status))
    return JSONResponse(rollout_view(rollouts_of(request), rollouts_of(request).get(r.id), True))


def metrics_data(request):
    """What /metrics says of updates: rollouts by status, devices of open rollouts by state,
    refused uploads by reason."""
    counts = rollouts_of(request).counts()
    counts["rejected"] = dict.fromkeys(bundles.REASONS, 0) | dict(rejected(state(request)))
    return counts


ROUTES = [
    Route("/api/updates", updates),
    Route("/api/updates/release-key", update_release_key, methods=["PUT"]),
    Route("/api/updates/bundles", update_bundle, methods=["POST"]),
    Route("/api/updates/rollouts", update_rollout_start, methods=["POST"]),
    Route("/api/updates/rollouts/{rollout}", update_rollout),
    Route("/api/updates/rollouts/{rollout}/resume", update_rollout_resume, methods=["POST"]),
    Route("/api/updates/rollouts/{rollout}/abort", update_rollout_abort, methods=["POST"]),
]
