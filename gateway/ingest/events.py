"""Frigate-style object events on ek/<device>/event, so NVR-minded tools (Home Assistant's
Frigate integration, Node-RED flows) can follow the cameras.

Like Frigate's frigate/events: {"type": "new" | "update" | "end", "before": {...},
"after": {...}}, with the event's id the snapshot's or clip's object id. "new" goes out when
its signed manifest is stored (nothing to show yet), "update" when the clip's poster (or
thumbnail) is stored whole, or at once after "new" if it was already (a poster is queued
before its clip), and "end" when the last chunk is. A poster or thumbnail has no event of
its own: it is the clip's "update", has_snapshot true. The event carries metadata only; the
media stays encrypted for the owner.
"""
import json

POSTER = "poster"         # the manifest event of a clip's poster object (agent/camera.py)
THUMBNAIL = "thumbnail"


def topic(device):
    return "ek/%s/event" % device


def linked_ids(linked):
    """{"poster": oid, "thumbnail": oid} of the whole ones among an object's linked rows."""
    out = {POSTER: None, THUMBNAIL: None}
    for o in linked:
        if o["event"] in out and o["stored"] == o["count"]:
            out[o["event"]] = o["oid"]
    return out


def payload(obj, kind, linked=(), just=None):
    """The event for an `objects` row (see gateway/ingest/objects.py); kind is "new",
    "update" or "end"; linked: the rows of its posters and thumbnails; just: for "update",
    the one whose arrival it tells (None: all of them, an update right after "new")."""
    before = {"id": obj["oid"], "camera": obj["device"], "label": obj["event"],
              "start_time": obj["time"], "end_time": None, "has_snapshot": False,
              "has_clip": False, "type": obj["type"], "size": obj["size"],
              "chunks": obj["count"], "seq": obj["seq"], POSTER: None, THUMBNAIL: None}
    after = dict(before)
    if kind == "update" and just is not None:
        _snapshot(before, obj, kind, [o for o in linked if o["oid"] != just])
    if kind != "new":
        _snapshot(after, obj, kind, linked)
    if kind == "end":
        after["end_time"] = obj["completed_at"]
        after["has_clip"] = obj["type"].startswith("video/")
    return json.dumps({"type": kind, "before": before, "after": after})


def _snapshot(side, obj, kind, linked):
    ids = linked_ids(linked)
    side.update(ids)
    side["has_snapshot"] = ids[POSTER] is not None or (
        kind == "end" and obj["type"].startswith("image/"))
