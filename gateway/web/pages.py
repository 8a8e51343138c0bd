"""Server-rendered pages. Each page is one function rendering one template from the store and
the monitor's snapshot; static/app.js adds live updates and static/ekcrypto.js decryption.
HtmlErrors turns the error answers a person gets (404, 403, 500, ...) into pages."""
import html
import json
import logging
import os
import time
from urllib.parse import parse_qs, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

from gateway.web import api, auth
from gateway.web.status import device_row

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def ago(t):
    if not t:
        return "never"
    s = max(0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return "%d %s ago" % (s // size, unit)
    return "%d s ago" % s


def size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024


def clock(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def hms(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def short(value, head=8, tail=4):
    """A hash, id or address as a person can tell it apart: 0x1a2b3c4d…9f0e."""
    value = str(value)
    head += 2 if value.startswith("0x") else 0
    return value if len(value) <= head + tail + 1 else value[:head] + "…" + value[-tail:]


env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
env.filters.update(ago=ago, size=size, clock=clock, hms=hms, short=short)
log = logging.getLogger("edgekeep.web")


def render(request, name, status=200, **context):
    session = request.scope.get("ek_session")
    html = env.get_template(name).render(request=request, csrf=session.csrf if session else "",
                                         page=name.rsplit(".", 1)[0], **context)
    return HTMLResponse(html, status)


def state(request):
    return request.app.state


def safe_next(target):
    """Only same-site paths: no scheme, no //host."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


# Why the login page is shown again (?ended=…, set by static/app.js and HtmlErrors).
ENDED = {
    "expired": "Your session expired%s. Log in again to go on.",
    "logged out": "You were logged out%s (in this tab or another).",
    "restarted": "The gateway restarted%s, which ends every session. Log in again.",
    "gone": "Your session ended%s (it expired, or the gateway restarted). Log in again.",
    "stale": "The login form was out of date%s, so here is a fresh one. Log in again.",
}


def ended_notice(params):
    text = ENDED.get(params.get("ended", ""))
    if not text:
        return ""
    try:
        at = float(params.get("at", ""))
    except ValueError:
        at = 0
    return text % (" at " + hms(at) if 0 < at < 1e11 else "")


async def login_page(request):
    session = request.scope.get("ek_session")
    if session and session.authenticated:
        return RedirectResponse(safe_next(request.query_params.get("next", "/")), 303)
    return login_form(request, 200, "", request.query_params.get("next", "/"),
                      notice=ended_notice(request.query_params))


def login_form(request, status, error, next_path, headers=None, notice=""):
    session = request.scope.get("ek_session") or state(request).sessions.new(authenticated=False)
    request.scope["ek_session"] = session
    response = render(request, "login.html", status, error=error, next=safe_next(next_path),
                      notice=notice)
    response.headers["set-cookie"] = auth.cookie_header(session, request.url.scheme == "https")
    response.headers.update(headers or {})
    return response


async def login_submit(request):
    form = await request.form()
    password, next_path = form.get("password"), form.get("next")
    next_path = next_path if isinstance(next_path, str) else "/"
    if not isinstance(password, str):
        return login_form(request, 400, "send the password as a form field", next_path)
    try:
        session = api.attempt_login(request, password)
    except api.ApiError as e:
        return login_form(request, e.status, str(e), next_path, e.headers)
    response = RedirectResponse(safe_next(next_path), 303)
    response.headers["set-cookie"] = auth.cookie_header(session, request.url.scheme == "https")
    return response


async def logout(request):
    state(request).sessions.end(request.scope["ek_session"].token)
    return RedirectResponse("/login", 303)


async def dashboard(request):
    return render(request, "dashboard.html", s=state(request).monitor.snapshot)


async def devices(request):
    now = time.time()
    rows = [device_row(d, now) for d in state(request).store.devices()]
    return render(request, "devices.html", devices=rows)


async def device(request):
    d = api.device_or_404(request)
    return render(request, "device.html", d=device_row(d, time.time()),
                  gaps=state(request).store.gaps(d["id"]))


async def camera(request):
    """Each camera with its newest snapshots and clips; the browser decrypts them."""
    now, store = time.time(), state(request).store
    cams = [device_row(d, now) for d in store.devices() if d["kind"] == "camera"]
    for c in cams:  # a clip's poster and thumbnail show in the events grid, not as rows
        c["objects"] = [o for o in api.recent_objects(store, c["id"], 100) if not o["parent"]]
    return render(request, "camera.html", cameras=cams, data_dir=state(request).data_dir)


async def storage(request):
    return render(request, "storage.html", s=state(request).monitor.snapshot)


async def chain(request):
    gw = state(request).gateway
    contracts = gw.chain.deployment["contracts"] if gw and gw.chain else {}
    return render(request, "chain.html", anchors=state(request).store.recent_epochs(100),
                  contracts=contracts, s=state(request).monitor.snapshot)


async def peers(request):
    """This gateway on the network, what its peers survive, and one card per peer."""
    st = state(request)
    return render(request, "peers.html", **st.network.view(st.store))


async def updates(request):
    return render(request, "updates.html")


async def settings(request):
    return render(request, "settings.html", rows=api.settings_rows(state(request).cfg))


ROUTES = [
    Route("/login", login_page),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/", dashboard),
    Route("/devices", devices),
    Route("/devices/{device}", device),
    Route("/camera", camera),
    Route("/storage", storage),
    Route("/chain", chain),
    Route("/peers", peers),
    Route("/updates", updates),
    Route("/settings", settings),
]


# -- error pages ------------------------------------------------------------------------------

MACHINE_PATHS = ("/api/", "/static/")       # and /api, /metrics, /healthz: answers for programs
MACHINE_EXACT = {"/api", "/metrics", "/healthz"}
ERRORS = {
    400: ("Bad request", "The gateway could not use what this page sent."),
    403: ("This page was out of date", "It was opened before your session changed (you "
          "logged in again, in this tab or another, or the gateway restarted). Reload it and "
          "try again."),
    404: ("Page not found", "There is no such page on this gateway, or what it was about is "
          "gone."),
    405: ("Not allowed here", "This address does not take that kind of request."),
    413: ("Too large", "What was sent is larger than the gateway takes."),
    500: ("Something went wrong on the gateway", "The error is in the gateway's log "
          "(journalctl -u edgekeep, or the terminal running it). Try again in a moment."),
}


def error_page(scope, status, detail=""):
    """The HTML page for an error answer: what happened, in words, and links back."""
    session = scope.get("ek_session")
    signed_in = bool(session and session.authenticated)
    title, hint = ERRORS.get(status, ("Error", "The gateway could not answer this request."))
    if status >= 500:
        detail = ""     # the log has it; the page does not show internals
    links = [("/", "Back to the dashboard")] if signed_in else [("/login", "Log in")]
    if status == 403:
        back = _same_site_referer(scope)
        if back:
            links.insert(0, (back, "Reload the page"))
    try:
        request = Request(scope)
        return env.get_template("error.html").render(
            request=request, csrf=session.csrf if session else "", page="error",
            status=status, title=title, detail=detail, hint=hint, links=links,
            signed_in=signed_in).encode()
    except Exception:   # never an error while showing one
        log.exception("rendering the error page for %d", status)
        return ("<!doctype html><meta charset=utf-8><title>%s</title><h1>%s (%d)</h1><p>%s</p>"
                "<p><a href=\"/\">Back to the dashboard</a></p>"
                % (html.escape(title), html.escape(title), status, html.escape(hint))).encode()


def _header(scope_or_msg, name):
    for k, v in scope_or_msg["headers"]:
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


def _same_site_referer(scope):
    """The path (and query) of the Referer if it is a page of this site, else None."""
    ref = urlsplit(_header(scope, b"referer"))
    if not ref.path.startswith("/") or ref.path.startswith("//") or \
            ref.netloc != _header(scope, b"host"):
        return None
    return ref.path + ("?" + ref.query if ref.query else "")


def _message(body, ctype):
    """The error's own words from a JSON {"error": …} or plain-text body, if short."""
    try:
        text = json.loads(body).get("error", "") if "json" in ctype else body.decode()
    except (ValueError, AttributeError, UnicodeDecodeError):
        return ""
    text = str(text).strip()
    generic = {t.lower() for t, _ in ERRORS.values()} | {"not found", "method not allowed",
                                                           "internal server error"}
    return "" if len(text) > 300 or text.lower() in generic else text


class HtmlErrors:
    """ASGI middleware: an error answer (4xx, 5xx) to a person (a browser: it asks for
    text/html, as navigations and form posts do; fetch() and scripts do not), on any path but
    the API's, /static/, /metrics and /healthz, becomes a page saying what happened with a link
    back, instead of JSON or plain text. A login form whose token is stale (its anonymous
    session is gone: the gateway restarted, or it was open for over 10 minutes) is sent back
    to a fresh login form saying so, instead of a 403. Goes outside AuthMiddleware."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(MACHINE_PATHS) or path in MACHINE_EXACT \
                or "text/html" not in _header(scope, b"accept"):
            return await self.app(scope, receive, send)
        held, body, started = None, [], False

        async def capture(msg):
            nonlocal held, started
            if msg["type"] == "http.response.start":
                if msg["status"] >= 400 and not _header(msg, b"content-type").startswith("text/html"):
                    held = msg
                    return
                started = True
            elif msg["type"] == "http.response.body" and held is not None:
                body.append(msg.get("body", b""))
                if msg.get("more_body"):
                    return
                started = True
                return await self._send_page(scope, send, held, b"".join(body))
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            if not started:     # the page, then ServerErrorMiddleware logs the error
                started = True
                await _send(send, 500, error_page(scope, 500))
            raise

    async def _send_page(self, scope, send, start, body):
        status, ctype = start["status"], _header(start, b"content-type")
        if status == 403 and scope["method"] == "POST" and scope["path"] == "/login" \
                and b"CSRF" in body:
            ref = _same_site_referer(scope) or ""
            next_path = safe_next(parse_qs(urlsplit(ref).query).get("next", ["/"])[0])
            location = "/login?next=%s&ended=stale" % quote(next_path, safe="/")
            return await _send(send, 303, b"", "text/plain", [(b"location", location.encode())])
        keep = [(k, v) for k, v in start["headers"]
                if k.lower() in (b"retry-after", b"allow", b"set-cookie")]
        await _send(send, status, error_page(scope, status, _message(body, ctype)),
                    extra=keep)


async def _send(send, status, body, ctype="text/html; charset=utf-8", extra=()):
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})
