"""Alerts on the admin page (docs/web.md, "Alerts"): the /alerts page, the dashboard card and
the nav badge (from the monitor's snapshot: store.alerts.summary), GET /api/alerts, and each device's
opt-in to values in its alerts (PUT /api/alerts/optin/{device}). The runner that fires and
resolves them is gateway/alerts/.
"""
import time

from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.web.api import ApiError, device_or_404, int_param, json_body, state
from gateway.web.pages import render

ALERT_FIELDS = ("id", "rule", "subject", "device", "title", "message", "priority", "detail",
                "started_at", "resolved_at")


def view(a):
    return {k: a[k] for k in ALERT_FIELDS}


def keep_days(request):
    return state(request).cfg.alerts.keep_days


async def alerts_page(request):
    """Active alerts, those resolved lately, and which devices' alerts may carry values."""
    st = state(request)
    now = time.time()
    optin = st.store.alerts.opted_in()
    devices = [{"id": d["id"], "name": d["name"], "opted": d["id"] in optin}
               for d in st.store.devices() if d["status"] == "active"]
    return render(request, "alerts.html", active=st.store.alerts.active(),
                  resolved=st.store.alerts.resolved_since(now - keep_days(request) * 86400, 100),
                  devices=devices, settings=st.cfg.alerts)


async def alerts(request):
    """Active alerts (newest first) and those resolved within keep_days (latest first).

    `optin`: the devices whose alerts may carry their values (battery, drops, event label)
    out of the gateway; `counts`: notices sent and failed by channel; `pending`: notices
    waiting, by channel.
    """
    st = state(request)
    limit = int_param(request, "limit", 50, 1, 500)
    since = time.time() - keep_days(request) * 86400
    return JSONResponse({
        "active": [view(a) for a in st.store.alerts.active()],
        "resolved": [view(a) for a in st.store.alerts.resolved_since(since, limit)],
        "optin": sorted(st.store.alerts.opted_in()), "counts": st.store.alerts.counts(),
        "pending": st.store.alerts.pending()})


async def set_alert_values(request):
    """Let a device's alerts carry its values out of the gateway (JSON: values true), or not
    (values false, the default): the webhook and Home Assistant get them only then."""
    d = device_or_404(request)
    body = await json_body(request)
    values = body.get("values")
    if not isinstance(values, bool):
        raise ApiError(400, "values must be true or false")
    state(request).store.alerts.set_optin(d["id"], values, time.time())
    return JSONResponse({"device": d["id"], "values": values})


ROUTES = [
    Route("/alerts", alerts_page),
    Route("/api/alerts", alerts),
    Route("/api/alerts/optin/{device}", set_alert_values, methods=["PUT"]),
]
