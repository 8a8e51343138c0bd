"""The admin page's security fixes (issue 19, point 6: S1-S6) and TLS.

S1 login limits (proxy headers, per account, backoff, Retry-After, `admin unlock`), S2 logout
forgets the unlocked keys (in Chromium), S3 a live stream ends with its session, S4 the Host
allow-list, S5 bad input is a 4xx, S6 CSRF on every change; TLS over a real server.
"""
import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import json
import logging
import os
import re
import socket
import ssl
import time

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.cli.main import main as cli_main
from gateway.config import Config
from gateway.store.database import Store
from gateway.web import auth
from gateway.web.app import CSRF_EXEMPT, WebServer, create_app
from tests.helpers.browser import launch

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
DEV = "00112233445566ff"


@pytest.fixture
def data_dir(tmp_path):
    d = str(tmp_path / "gw")
    store = Store.open(d)
    store.add_device(DEV, b"\x04" + b"\x01" * 64, "tracker-1")
    store.close()
    auth.set_password(d, PASSWORD)
    return d


@pytest.fixture
def client(data_dir):
    app = create_app(Config(data_dir=data_dir))
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as c:
        yield c


def csrf_of(html):
    return html.split('name="csrf" content="', 1)[1].split('"', 1)[0]


def login(c, password=PASSWORD):
    page = c.get("/login")
    return c.post("/login", data={"password": password, "next": "/", "csrf": csrf_of(page.text)})


def logged_in(c):
    assert login(c).status_code == 303
    return csrf_of(c.get("/").text)


@contextlib.contextmanager
def serve(cfg):
    """create_app(cfg) under a real uvicorn (WebServer) on a free port."""
    app = create_app(cfg)
    server = WebServer(app, port=0).start()
    try:
        yield server, app
    finally:
        server.stop()


def api_login(c):
    """Log a real server's httpx client in; returns (CSRF token, session cookie)."""
    r = c.post("/api/session", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    c.cookies.set(auth.COOKIE, r.cookies[auth.COOKIE])
    return r.json()["csrf"], r.cookies[auth.COOKIE]


def fingerprint_of(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


# -- S1: login limits ------------------------------------------------------------------------

def test_s1_x_forwarded_for_does_not_buy_more_guesses(data_dir):
    """uvicorn used to trust X-Forwarded-For from 127.0.0.1: each guess a new 'client'."""
    with serve(Config(data_dir=data_dir)) as (server, _), httpx2.Client(base_url=server.url) as c:
        for i in range(auth.FAILURES_ALLOWED):
            r = c.post("/api/session", json={"password": "wrong"},
                       headers={"X-Forwarded-For": "203.0.113.%d" % i})
            assert r.status_code == 401
        r = c.post("/api/session", json={"password": PASSWORD},
                   headers={"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"})
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= auth.BACKOFF_FIRST
        assert "edgekeep admin unlock" in r.json()["error"]


def test_s1_behind_a_trusted_proxy_addresses_count_apart_and_the_account_backs_off(data_dir):
    cfg = Config(data_dir=data_dir, web_trusted_proxies=["127.0.0.1", "::1"])
    with serve(cfg) as (server, _), httpx2.Client(base_url=server.url) as c:
        def attempt(password, address):
            return c.post("/api/session", json={"password": password},
                          headers={"X-Forwarded-For": address})
        for _ in range(auth.FAILURES_ALLOWED):
            assert attempt("wrong", "203.0.113.1").status_code == 401
        assert attempt(PASSWORD, "203.0.113.1").status_code == 429      # that address waits,
        assert attempt(PASSWORD, "198.51.100.7").status_code == 200     # the owner elsewhere not
        # guesses spread over many addresses: the account itself backs off
        for i in range(auth.ACCOUNT_FAILURES_ALLOWED):
            assert attempt("wrong", "203.0.113.%d" % (10 + i)).status_code == 401
        r = attempt(PASSWORD, "198.51.100.7")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # the owner's way in, at the gateway's console, while the server runs
        assert cli_main(["admin", "unlock", "--data-dir", data_dir]) == 0
        assert attempt(PASSWORD, "198.51.100.7").status_code == 200
        assert attempt(PASSWORD, "203.0.113.1").status_code == 200


def test_s1_the_wait_doubles_with_each_failure_and_429_has_retry_after(client):
    now = [1_000_000.0]
    client.app.state.limiter.clock = lambda: now[0]

    def api_login(password):
        return client.post("/api/session", json={"password": password})
    for _ in range(auth.FAILURES_ALLOWED):
        assert api_login("wrong").status_code == 401
    waits = []
    for _ in range(3):
        r = api_login(PASSWORD)        # even the right password waits
        assert r.status_code == 429
        waits.append(int(r.headers["retry-after"]))
        assert "try again in %d s" % waits[-1] in r.json()["error"]
        now[0] += waits[-1]
        assert api_login("wrong").status_code == 401
    assert waits == [auth.BACKOFF_FIRST, 2 * auth.BACKOFF_FIRST, 4 * auth.BACKOFF_FIRST]
    page = login(client)               # the login form says it too
    assert page.status_code == 429 and int(page.headers["retry-after"]) == 8 * auth.BACKOFF_FIRST
    assert "too many failed logins" in page.text
    now[0] += 8 * auth.BACKOFF_FIRST
    assert api_login(PASSWORD).status_code == 200
    limiter = client.app.state.limiter
    for _ in range(30):
        limiter.failed("203.0.113.5")
    assert limiter.retry_after("203.0.113.5") == auth.BACKOFF_MAX   # doubling stops there


def test_s1_admin_unlock_command(data_dir, capsys):
    limiter = auth.LoginLimiter(data_dir)
    for _ in range(auth.ACCOUNT_FAILURES_ALLOWED):
        limiter.failed("203.0.113.9")
    assert limiter.retry_after("198.51.100.7") > 0
    assert auth.LoginLimiter(data_dir).retry_after("198.51.100.7") > 0   # kept across restarts
    assert cli_main(["admin", "unlock", "--data-dir", data_dir]) == 0
    assert "cleared" in capsys.readouterr().out
    assert limiter.retry_after("198.51.100.7") == 0 and limiter.retry_after("203.0.113.9") == 0
    assert cli_main(["admin", "unlock", "--data-dir", data_dir]) == 0
    assert "was not locked" in capsys.readouterr().out


# -- S2: logging out forgets the unlocked keys ----------------------------------------------

@pytest.mark.browser
@pytest.mark.integration   # a browser: not for `make test-unit`, whatever the module says
def test_s2_logging_out_clears_the_unlocked_keys(data_dir):
    from playwright.sync_api import expect, sync_playwright
    keys = "sessionStorage.getItem('ek-keys')"
    unlock = "sessionStorage.setItem('ek-keys', JSON.stringify({'%s': '00'.repeat(16)}))" % DEV
    with serve(Config(data_dir=data_dir)) as (server, _), sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15000)

            def log_in():
                page.goto(server.url + "login")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                expect(page).to_have_url(server.url)
                page.evaluate(unlock)     # as the keyring form leaves them
                page.goto(server.url + "devices")
                assert page.evaluate(keys) is not None
            log_in()
            page.click("nav form[action='/logout'] button")
            expect(page).to_have_url(re.compile(r"/login$"))
            assert page.evaluate(keys) is None

            # Another tab logs out: this tab's live stream ends, and it forgets its keys too.
            log_in()
            other = context.new_page()
            other.goto(server.url)
            other.click("nav form[action='/logout'] button")
            expect(other).to_have_url(re.compile(r"/login$"))
            expect(page).to_have_url(re.compile(r"/login\?next="))
            assert page.evaluate(keys) is None
        finally:
            browser.close()


# -- S3: a live stream ends with its session ---------------------------------------------------

def stream_ends(lines, within):
    """Read SSE lines until the stream closes; the event names seen, or None if it was still
    open after `within` seconds (a status event arrives every second, so reads return)."""
    deadline, seen = time.monotonic() + within, []
    for line in lines:
        if line.startswith("event: "):
            seen.append(line[len("event: "):])
        if time.monotonic() > deadline:
            return None
    return seen


def test_s3_logging_out_ends_the_live_stream(data_dir):
    with serve(Config(data_dir=data_dir)) as (server, _), httpx2.Client(base_url=server.url) as c:
        token, _ = api_login(c)
        with c.stream("GET", "/api/events", timeout=10) as events:
            lines = events.iter_lines()
            assert next(lines) == "event: status"
            assert c.delete("/api/session", headers={"X-CSRF-Token": token}).status_code == 200
            seen = stream_ends(lines, within=5)
            assert seen is not None, "the stream went on after logout"
            assert seen[-1] == "session-ended"
        assert c.get("/api/events").status_code == 401


def test_s3_an_expired_session_ends_the_live_stream(data_dir):
    with serve(Config(data_dir=data_dir)) as (server, app), \
            httpx2.Client(base_url=server.url) as c:
        session = app.state.sessions.get(api_login(c)[1])
        with c.stream("GET", "/api/events", timeout=10) as events:
            lines = events.iter_lines()
            assert next(lines) == "event: status"
            session.expires = time.monotonic() + 1
            seen = stream_ends(lines, within=6)
            assert seen is not None, "the stream went on after the session expired"
            assert seen[-1] == "session-ended"


# -- S4: Host allow-list -------------------------------------------------------------------------

def test_s4_only_this_gateways_names_are_served(data_dir):
    cfg = Config(data_dir=data_dir, web_allowed_hosts=["gateway.example.org"])
    with serve(cfg) as (server, _), httpx2.Client(base_url=server.url) as c:
        port = server.port
        for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "example.org"):
            for method, path in (("GET", "/login"), ("POST", "/api/session"), ("GET", "/metrics")):
                r = c.request(method, path, headers={"Host": "%s:%d" % (host, port)},
                              json={"password": PASSWORD} if method == "POST" else None)
                assert r.status_code == 400, (host, path)
                assert host in r.text and "web_allowed_hosts" in r.text
        me = socket.gethostname()
        for host in ("localhost", "127.0.0.1", "[::1]", me, me + ".local", "gateway.example.org",
                     "GATEWAY.Example.org.", "192.168.1.20", "[fe80::1]"):
            assert c.get("/login", headers={"Host": "%s:%d" % (host, port)}).status_code == 200, host
        assert c.get("/login", headers={"Host": "localhost"}).status_code == 200


# -- S5: bad input is a 4xx with a clear error, never a 500 -------------------------------------------

def test_s5_bad_input_gets_a_4xx(client):
    token = logged_in(client)
    h = {"X-CSRF-Token": token}
    dev = "/api/devices/" + DEV
    cases = [
        ("PATCH", dev, {"json": {"name": 123}}, 400, "name"),
        ("PATCH", dev, {"json": {"name": None}}, 400, "name"),
        ("PATCH", dev, {"json": {}}, 400, "name"),
        ("PATCH", dev, {"json": {"name": " "}}, 400, "1 to 64"),
        ("PATCH", dev, {"content": b"[" * 10000, "headers": {"content-type": "application/json"}},
         400, "JSON"),
        ("PATCH", dev, {"content": b'{"name": "' + b"x" * 70000 + b'"}',
                        "headers": {"content-type": "application/json"}}, 413, "too large"),
        ("GET", dev + "/messages/99999999999999999999", {}, 400, "seq"),
        ("GET", dev + "/messages/" + "9" * 5000, {}, 400, "seq"),
        ("GET", dev + "/messages/0", {}, 400, "seq"),
        ("GET", dev + "/messages/x", {}, 400, "seq"),
        ("GET", dev + "/messages/7", {}, 404, "no message"),
        ("GET", dev + "/messages?kind=%00", {}, 400, "kind"),
        ("GET", dev + "/messages?limit=" + "9" * 5000, {}, 400, "limit"),
        ("GET", dev + "/objects/" + "00" * 8 + "/chunks/" + "9" * 5000, {}, 404, "no object"),
        ("GET", "/api/storage/challenge?epoch=1&leaf=" + "1" * 40, {}, 400, "leaf"),
        ("POST", "/api/devices", {"json": {"public_key": "04" + "00" * 64, "name": 5}}, 400, "name"),
        ("POST", "/api/devices", {"json": {"public_key": ["04"]}}, 400, "public_key"),
        ("POST", "/api/devices", {"json": {"public_key": "04" + "00" * 64, "kind": 1}}, 400, "kind"),
        ("POST", "/api/devices", {"json": {"public_key": "0400"}}, 400, "65"),
    ]
    for method, url, kw, status, words in cases:
        r = client.request(method, url, **{**kw, "headers": {**h, **kw.get("headers", {})}})
        assert r.status_code == status, (method, url, r.status_code, r.text[:200])
        assert words in r.json()["error"], (url, r.json())
    for body in ({"password": ["x"]}, {"password": None}, {}):
        r = client.post("/api/session", json=body)
        assert r.status_code == 400 and "password" in r.json()["error"]
    r = client.post("/api/session", content=b"[" * 10000, headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/api/session", content=b'{"password": "' + b"x" * 70000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_s5_no_api_route_answers_500_to_garbage(client):
    """Every API route with wrong path parameters, query parameters and bodies: a 4xx (or 503
    for the routes that need the chain, which this test's app has not). Logging out is
    test_s6's."""
    token = logged_in(client)
    bodies = [None, {"json": [1]}, {"json": {"name": 123, "public_key": 1, "kind": [], "password": 2}},
              {"json": {"name": {}, "public_key": ["04"], "kind": 1, "password": None}},
              {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
              {"content": b"name=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}]
    params = {"device": [DEV, "x" * 300, "%00", "0" * 16 + "%0a"], "seq": ["1", "-1", "1e3", "9" * 40],
              "oid": ["00" * 8, "zz"], "index": ["0", "9" * 30],
              "rollout": ["0" * 16, "x" * 300, "%00"]}
    queries = ["", "?limit=-1", "?limit=abc&kind=" + "k" * 1000, "?epoch=x&leaf=1", "?select=-1"]
    checked = 0
    for route in client.app.router.routes:
        if not (isinstance(route, Route) and route.path.startswith("/api/")) or \
                route.path == "/api/events":
            continue
        names = re.findall(r"{(\w+)", route.path)
        for values in itertools.product(*(params[n] for n in names)):
            path = route.path
            for value in values:
                path = re.sub(r"{\w+(:\w+)?}", value, path, count=1)
            for method in route.methods - {"HEAD"} - ({"DELETE"} if route.path == "/api/session" else set()):
                for query in queries:
                    for body in bodies if method != "GET" else [None]:
                        kw = dict(body or {})
                        kw["headers"] = {"X-CSRF-Token": token, **kw.get("headers", {})}
                        r = client.request(method, path + query, **kw)
                        assert r.status_code < 500 or (r.status_code == 503
                                                       and "no chain" in r.json()["error"]), \
                            (method, path + query, kw, r.status_code, r.text[:200])
                        checked += 1
    assert client.get("/api/status").status_code == 200      # still logged in: all were checked
    assert checked > 200


# -- S6: CSRF on every change -----------------------------------------------------------------------

def test_s6_logging_out_needs_the_csrf_token(client):
    token = logged_in(client)
    assert client.delete("/api/session").status_code == 403
    assert client.delete("/api/session", headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert client.get("/api/status").status_code == 200          # still logged in
    assert client.delete("/api/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/api/status").status_code == 401


def test_s6_every_change_but_the_json_login_needs_the_token(client):
    logged_in(client)
    for route in client.app.router.routes:
        if not isinstance(route, Route):
            continue
        for method in route.methods & auth.UNSAFE:
            if (method, route.path) in CSRF_EXEMPT:    # the JSON login, token enrollment
                continue
            path = re.sub(r"{(\w+)(:\w+)?}", lambda m: DEV if m.group(1) == "device" else "1",
                          route.path)
            r = client.request(method, path, json={"name": "x"})
            assert r.status_code == 403, (method, route.path)
            assert "CSRF" in r.json()["error"]


def test_s6_the_json_login_refuses_another_sites_origin(client):
    r = client.post("/api/session", json={"password": PASSWORD},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "origin" in r.json()["error"]
    assert client.post("/api/session", json={"password": PASSWORD},
                       headers={"Origin": "null"}).status_code == 403
    assert client.post("/api/session", data={"password": PASSWORD}).status_code == 415
    assert client.post("/api/session", json={"password": PASSWORD},
                       headers={"Origin": "http://testserver"}).status_code == 200
    r = client.post("/api/session", json={"password": PASSWORD})   # scripts send no Origin
    assert r.status_code == 200 and r.json()["csrf"]


# -- headers, banner, TLS ---------------------------------------------------------------------------

def test_headers_without_tls(data_dir):
    with serve(Config(data_dir=data_dir)) as (server, _), httpx2.Client(base_url=server.url) as c:
        r = c.post("/api/session", json={"password": PASSWORD})
        assert "server" not in r.headers
        assert "camera=()" in r.headers["permissions-policy"]
        assert "strict-transport-security" not in r.headers
        assert "Secure" not in r.headers["set-cookie"]
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]


def test_https_pages_get_hsts_and_secure_cookies(data_dir):
    with TestClient(create_app(Config(data_dir=data_dir)), base_url="https://testserver",
                    follow_redirects=False) as c:
        page = c.get("/login")
        assert "Secure" in page.headers["set-cookie"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
        r = login(c)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_tls_with_a_self_signed_certificate_made_at_first_start(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="edgekeep.web")
    cfg = Config(data_dir=data_dir, web_tls=True)
    fingerprints = []
    for _ in range(2):      # made once, the same at the next start
        caplog.clear()
        with serve(cfg) as (server, _):
            assert server.url.startswith("https://127.0.0.1:")
            logged = re.search(r"SHA-256 fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", caplog.text)
            assert logged, caplog.text
            der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", server.port)))
            assert logged.group(1) == fingerprint_of(der) == server.fingerprint
            fingerprints.append(server.fingerprint)
            ctx = ssl.create_default_context(cafile=server.cert)   # verifies name 127.0.0.1 too
            with httpx2.Client(base_url=server.url, verify=ctx) as c:
                r = c.post("/api/session", json={"password": PASSWORD})
                assert r.status_code == 200
                cookie = r.headers["set-cookie"]
                assert "Secure" in cookie and "HttpOnly" in cookie
                assert r.headers["strict-transport-security"].startswith("max-age=")
                assert "server" not in r.headers and "permissions-policy" in r.headers
                page = c.get("/")
                assert page.status_code == 200 and page.headers["strict-transport-security"]
            with pytest.raises(httpx2.TransportError):    # plain http is not served
                httpx2.get(server.url.replace("https:", "http:") + "login", timeout=3)
    assert fingerprints[0] == fingerprints[1]
    assert oct(os.stat(os.path.join(data_dir, "web-key.pem")).st_mode & 0o777) == "0o600"


def own_certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "own.crt", tmp_path / "own.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER)


def test_tls_with_the_owners_certificate(data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgekeep.web")
    cert, key, der = own_certificate(tmp_path)
    with serve(Config(data_dir=data_dir, web_cert=cert, web_key=key)) as (server, _):
        assert server.fingerprint == fingerprint_of(der) and server.fingerprint in caplog.text
        with httpx2.Client(base_url=server.url, verify=ssl.create_default_context(cafile=cert)) as c:
            r = c.post("/api/session", json={"password": PASSWORD})
            assert "Secure" in r.headers["set-cookie"]
    assert not os.path.exists(os.path.join(data_dir, "web-cert.pem"))


def test_bad_web_settings_say_what_to_fix(data_dir, tmp_path):
    cert, _, _ = own_certificate(tmp_path)
    cases = [(dict(web_cert=cert), "web_cert and web_key"),
             (dict(web_cert=cert, web_key=str(tmp_path / "missing.key")), "missing.key"),
             (dict(web_trusted_proxies=["proxy.lan"]), "web_trusted_proxies"),
             (dict(web_trusted_proxies="127.0.0.1"), "web_trusted_proxies"),
             (dict(web_allowed_hosts="pi.lan"), "web_allowed_hosts")]
    for settings, words in cases:
        with pytest.raises(ValueError, match=words):
            WebServer(create_app(Config(data_dir=data_dir, **settings)), port=0)


def test_config_file_keys(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('web_tls = true\nweb_cert = "tls/pi.crt"\nweb_key = "tls/pi.key"\n'
                    'web_trusted_proxies = ["10.0.0.1", "192.168.0.0/24"]\n'
                    'web_allowed_hosts = ["pi.example.org"]\n')
    cfg = Config.load(str(path))
    assert cfg.web_tls and cfg.web_cert == str(tmp_path / "tls" / "pi.crt")
    assert cfg.web_key == str(tmp_path / "tls" / "pi.key")
    assert cfg.web_trusted_proxies == ["10.0.0.1", "192.168.0.0/24"]
    assert cfg.web_allowed_hosts == ["pi.example.org"]
    assert json.dumps(Config().web_trusted_proxies) == "[]"
