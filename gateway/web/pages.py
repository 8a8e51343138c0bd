"""Server-rendered pages. Each page is one function rendering one template from the store and
the monitor's snapshot; static/app.js adds live updates and static/ekcrypto.js decryption."""
import os
import time

from jinja2 import Environment, FileSystemLoader, select_autoescape
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


env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
env.filters.update(ago=ago, size=size, clock=clock)


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


async def login_page(request):
    session = request.scope.get("ek_session")
    if session and session.authenticated:
        return RedirectResponse(safe_next(request.query_params.get("next", "/")), 303)
    return login_form(request, 200, "", request.query_params.get("next", "/"))


def login_form(request, status, error, next_path):
    session = request.scope.get("ek_session") or state(request).sessions.new(authenticated=False)
    request.scope["ek_session"] = session
    response = render(request, "login.html", status, error=error, next=safe_next(next_path))
    response.headers["set-cookie"] = auth.cookie_header(session, request.url.scheme == "https")
    return response


async def login_submit(request):
    form = await request.form()
    try:
        session = api.attempt_login(request, str(form.get("password", "")))
    except api.ApiError as e:
        return login_form(request, e.status, str(e), str(form.get("next", "/")))
    response = RedirectResponse(safe_next(str(form.get("next", "/"))), 303)
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
    for c in cams:
        c["objects"] = api.recent_objects(store, c["id"], 100)
    return render(request, "camera.html", cameras=cams)


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
    Route("/settings", settings),
]
