"""The Camera page's events (docs/web.md, "Camera: events, live"): GET /api/camera/events
lists the cameras' events, newest first, each with its poster and thumbnail objects, and
ObjectFeed tells open pages, as the `object` SSE event, of every object whose upload moved.

An event is a snapshot or a clip (an object with no parent), or, while a clip is still
being recorded or is on its way, its poster and thumbnail alone (they are sealed as the clip
starts and name it: the manifest's `of`, the objects row's parent). The media stays
encrypted: the page fetches the objects (api.py's object routes) and decrypts them.
"""
import time

from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.ingest.events import POSTER, THUMBNAIL, linked_ids
from gateway.web import openapi
from gateway.web.api import DEVICE_ID, ApiError, int_param, object_row, state
from gateway.web.openapi import BOOLEAN, HEX, INTEGER, NUMBER, STRING, array, between, nullable, obj

COLUMNS = ("device", "oid", "seq", "time", "event", "type", "size", "chunk_size", "count",
           "stored", "bytes", "completed_at", "parent", "updated_at")
FEED_WINDOW = 30.0      # s: an upload's moves within this are announced once each


def event_row(o):
    """An objects row as the events list and the feed show it (api.object_row, and whose)."""
    return dict(object_row(o), device=o["device"])


def group(events, linked, orphans):
    """The events list: each event with its poster and thumbnail (the whole ones, else the
    first on its way), and posters whose clip is not in yet as events of their own."""
    by_event = {}
    for o in linked + orphans:
        by_event.setdefault((o["device"], o["parent"]), []).append(o)
    out = [with_parts(event_row(e), by_event.pop((e["device"], e["oid"]), [])) for e in events]
    for (device, clip), parts in by_event.items():   # the orphans' clips, not in yet
        out.append(with_parts({"device": device, "oid": clip, "time": parts[0]["time"],
                               "event": None, "type": None, "complete": False,
                               "has_clip": False, "has_snapshot": False, "pending": True}, parts))
    out.sort(key=lambda e: e["time"], reverse=True)
    return out


def with_parts(event, parts):
    """event with its poster and thumbnail rows (a whole one first, else one on its way);
    has_snapshot once its poster is whole, as the Frigate feed says (gateway/ingest/events.py)."""
    whole = linked_ids(parts)
    for kind in (POSTER, THUMBNAIL):
        mine = [p for p in parts if p["event"] == kind]
        pick = next((p for p in mine if p["oid"] == whole[kind]), mine[0] if mine else None)
        event[kind] = None if pick is None else event_row(pick)
    event["has_snapshot"] = event["has_snapshot"] or whole[POSTER] is not None
    return event


def day_bound(request, name):
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "%s must be a Unix time in seconds" % name)
    if not 0 <= value <= 2 ** 40:
        raise ApiError(400, "%s must be a Unix time in seconds" % name)
    return value


async def camera_events(request):
    """The cameras' events (snapshots and clips), newest first, each with its poster and
    thumbnail objects.

    device: one camera's only; since / until: captured in [since, until) (Unix seconds, e.g.
    a day in the browser's time zone). An event whose clip is still being recorded or
    uploaded has `pending` and only its poster and thumbnail.
    """
    device = request.query_params.get("device")
    if device is not None and not DEVICE_ID.fullmatch(device):
        raise ApiError(400, "device must be a device id (16 hex digits)")
    since, until = day_bound(request, "since"), day_bound(request, "until")
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = state(request).store.objects
    events = rows.events(device, since, until, limit, COLUMNS)
    linked = []
    for cam in {e["device"] for e in events}:
        linked += rows.linked(cam, [e["oid"] for e in events if e["device"] == cam], COLUMNS)
    orphans = rows.orphans(device, since, until, limit, COLUMNS)
    return JSONResponse(group(events, linked, orphans)[:limit])


class ObjectFeed:
    """The Monitor's feed (gateway/web/status.py) of `object` events: every object whose
    upload moved (registered, a chunk stored) since it last looked, as event_row shows it."""

    def __init__(self):
        self.seen = {}    # (device, oid) -> (stored, updated_at) last announced

    def __call__(self, store, now=None):
        now = time.time() if now is None else now
        out = []
        for o in store.objects.updated_since(now - FEED_WINDOW, COLUMNS):
            key, moved = (o["device"], o["oid"]), (o["stored"], o["updated_at"])
            if self.seen.get(key) != moved:
                self.seen[key] = moved
                out.append(("object", event_row(o)))
        self.seen = {k: v for k, v in self.seen.items() if v[1] >= now - FEED_WINDOW}
        return out


PART = obj({"device": HEX, "oid": HEX, "time": NUMBER, "event": STRING, "type": STRING,
            "size": INTEGER, "count": INTEGER, "stored": INTEGER, "complete": BOOLEAN,
            "parent": nullable(HEX)})
EVENT = obj({"device": HEX, "oid": HEX, "time": NUMBER, "event": nullable(STRING),
             "type": nullable(STRING), "complete": BOOLEAN, "has_clip": BOOLEAN,
             "has_snapshot": BOOLEAN, POSTER: nullable(PART), THUMBNAIL: nullable(PART)},
            {"pending": BOOLEAN})
openapi.OPERATIONS.update({
    "camera_events": openapi.Operation(array(EVENT), query={
        "device": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "since": {"type": "number", "minimum": 0, "maximum": 2 ** 40},
        "until": {"type": "number", "minimum": 0, "maximum": 2 ** 40},
        "limit": between(1, 1000)}),
})

ROUTES = [
    Route("/api/camera/events", camera_events),
]
