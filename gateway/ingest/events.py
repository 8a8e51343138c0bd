"""Frigate-style object events on ek/<device>/event, so NVR-minded tools (Home Assistant's
Frigate integration, Node-RED flows) can follow the cameras.

Like Frigate's frigate/events: {"type": "new" | "end", "before": {...}, "after": {...}}.
"new" goes out when the signed manifest is stored (nothing to show yet), "end" when the
last chunk is. The event carries metadata only; the media stays encrypted for the owner.
"""
import json


def topic(device):
    return "ek/%s/event" % device


def payload(obj, kind):
    """The event for an `objects` row (see gateway/ingest/objects.py); kind is "new" or "end"."""
    before = {"id": obj["oid"], "camera": obj["device"], "label": obj["event"],
              "start_time": obj["time"], "end_time": None, "has_snapshot": False,
              "has_clip": False, "type": obj["type"], "size": obj["size"],
              "chunks": obj["count"], "seq": obj["seq"]}
    after = dict(before)
    if kind == "end":
        after["end_time"] = obj["completed_at"]
        after["has_snapshot"] = obj["type"].startswith("image/")
        after["has_clip"] = obj["type"].startswith("video/")
    return json.dumps({"type": kind, "before": before, "after": after})
