"""The admin web app (Starlette) and the uvicorn server thread that `gateway run` starts."""
import contextlib
import logging
import os
import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.ingest.objects import ObjectStore
from gateway.integrations import metrics
from gateway.store.database import Store
from gateway.store.provider import Provider
from gateway.web import alerts, api, auth, camera, pages, updates
from gateway.web.hosts import HostGuard, allowed_hosts, trusted_proxies
from gateway.web.network import Network
from gateway.web.sse import Broadcaster
from gateway.web.status import Monitor
from gateway.web.tls import fingerprint, tls_files

STATIC = os.path.join(os.path.dirname(__file__), "static")
# No inline script or style, nothing from elsewhere: the keyring page only talks to this origin.
# Images alone may also come from the map tile host (track.js, tiles only when the owner asks).
MAP_TILES = "https://tile.openstreetmap.org"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data: " + MAP_TILES + "; "
                               "media-src 'self' blob:; "
                               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    # powerful features no page here uses, off for anything that might get injected
    "permissions-policy": "accelerometer=(), camera=(), display-capture=(), geolocation=(), "
                          "gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), "
                          "usb=()",
}
# Over https only; not includeSubDomains: other services on the owner's names are theirs.
HSTS = ("strict-transport-security", "max-age=31536000")
PUBLIC = {"/login", "/api/session", "/api/enroll", "/metrics", "/healthz", "/static/"}
# The JSON login defends itself (application/json only, no foreign Origin: api.login).
# Enrollment is no browser session's: its single-use token (Authorization: Bearer, which no
# cross-site form or simple request can send) is its authentication (api.enroll).
CSRF_EXEMPT = {("POST", "/api/session"), ("POST", "/api/enroll")}

log = logging.getLogger("edgekeep.web")


async def on_error(request, exc):
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, exc.status, exc.headers)
    return PlainTextResponse(str(exc), exc.status, exc.headers)


def healthz_endpoint(monitor):
    """GET /healthz, no session: 200 while the ingest takes messages, 503 with the reason
    when it does not (paused for a full disk, restarting, dead, or no ingest in this
    process). The body holds the components' states and nothing else."""
    async def healthz(request):
        ok, reason = monitor.health.ingest_status()
        components = {name: {"state": c["state"], "detail": c["detail"],
                             "restarts": c["restarts"]}
                      for name, c in monitor.health.snapshot().items()}
        return JSONResponse({"ok": ok, "reason": reason, "components": components},
                            200 if ok else 503)
    return healthz


def create_app(cfg, gateway=None):
    """The ASGI app over cfg.data_dir, a store already opened (migrated) with Store.open;
    `gateway` (a started service.Gateway) adds chain and broker."""
    broadcaster = Broadcaster()
    network = Network(cfg, gateway)
    monitor = Monitor(cfg.data_dir, gateway, broadcaster, network, [camera.ObjectFeed()])
    sessions = auth.Sessions()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        store = app.state.store = Store.connect(cfg.data_dir, cfg.database_url)
        app.state.objects = ObjectStore.open(store)
        # storage challenges are answered in worker threads, on a connection of their own
        app.state.challenges = Provider.open(Store.connect(cfg.data_dir, cfg.database_url))
        app.state.challenge_lock = threading.Lock()
        monitor.start()
        try:
            yield
        finally:
            broadcaster.close()
            monitor.stop()
            app.state.challenges.store.close()
            store.close()

    routes = pages.ROUTES + api.ROUTES + updates.ROUTES + alerts.ROUTES + camera.ROUTES + [
        Route("/metrics", metrics.endpoint(monitor, updates.metrics_data)),
        Route("/healthz", healthz_endpoint(monitor)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={api.ApiError: on_error})
    app.state.cfg, app.state.data_dir, app.state.gateway = cfg, cfg.data_dir, gateway
    app.state.monitor, app.state.broadcaster = monitor, broadcaster
    app.state.network = network
    app.state.sessions, app.state.limiter = sessions, auth.LoginLimiter(cfg.data_dir)
    app.add_middleware(auth.AuthMiddleware, sessions=sessions, public=PUBLIC,
                       csrf_exempt=CSRF_EXEMPT)
    app.add_middleware(pages.HtmlErrors)    # outside auth: its 403s too become pages
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = SECURITY_HEADERS | dict([HSTS]) if scope["scheme"] == "https" else SECURITY_HEADERS

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                present = {k.lower() for k, _ in msg["headers"]}
                msg["headers"] = list(msg["headers"]) + [
                    (k.encode(), v.encode()) for k, v in headers.items()
                    if k.encode() not in present]
            await send(msg)
        await self.app(scope, receive, with_headers)


class WebServer:
    """uvicorn in a thread, serving an app from create_app as its config (app.state.cfg)
    says: https with web_cert/web_key or web_tls (`cert`, `fingerprint`); X-Forwarded-For and
    -Proto believed only from web_trusted_proxies; only this gateway's names in Host
    (hosts.py); no `server` header. Port 0 picks a free port; `url` says which."""

    def __init__(self, app, host="127.0.0.1", port=8080):
        self.app = app
        cfg = app.state.cfg
        proxies, guarded = trusted_proxies(cfg), HostGuard(app, allowed_hosts(cfg))
        tls = tls_files(cfg)
        self.cert = tls[0] if tls else None
        self.fingerprint = fingerprint(tls[0]) if tls else None
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.url = "%s://%s:%d/" % ("https" if tls else "http",
                                    "[%s]" % host if ":" in host else host, self.port)
        self.server = uvicorn.Server(uvicorn.Config(
            guarded, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
            lifespan="on", server_header=False, proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies, ssl_certfile=tls and tls[0], ssl_keyfile=tls and tls[1]))
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],),
                                       name="web", daemon=True)

    def start(self, timeout=15):
        self.thread.start()
        for _ in range(int(timeout / 0.05)):
            if self.server.started:
                if self.fingerprint:
                    log.info("admin page %s: certificate %s, SHA-256 fingerprint %s (a browser "
                             "asked to trust it should show the same)", self.url, self.cert,
                             self.fingerprint)
                return self
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.05)
        raise RuntimeError("admin web server did not start on %s" % self.url)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
