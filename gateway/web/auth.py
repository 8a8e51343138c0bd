"""Admin authentication: one argon2-hashed password, server-side sessions, CSRF, login limits.

The password hash lives in <data_dir>/admin-password.argon2. On the first run with no hash a
random password is written to <data_dir>/admin-password (0600) for the owner to read;
`edgekeep admin set-password` replaces it and deletes that file.

Every visitor gets a session (an anonymous one on the login page) holding a CSRF token.
Logging in replaces it with a fresh authenticated session, so a planted cookie is useless.
Unsafe requests must echo the token: header X-CSRF-Token, or form field `csrf`.

Wrong passwords are counted per client address and for the account (LoginLimiter), in
<data_dir>/admin-login-failures.json so that `edgekeep admin unlock` can clear them while the
gateway runs.
"""
import hmac
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

COOKIE = "ek_session"
SESSION_SECONDS = 12 * 3600
ANONYMOUS_SECONDS = 600
MAX_ANONYMOUS = 10000
FAILURES_ALLOWED = 5             # wrong passwords from one client address, then it waits
ACCOUNT_FAILURES_ALLOWED = 10    # from all addresses together, then everyone waits
BACKOFF_FIRST = 30               # seconds; doubles with each further wrong password
BACKOFF_MAX = 3600
FORGET_SECONDS = 86400           # a day without a wrong password starts afresh
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
FORM_LIMIT = 65536

log = logging.getLogger("edgekeep.web")

_hasher = PasswordHasher()


def hash_path(data_dir):
    return os.path.join(data_dir, "admin-password.argon2")


def generated_path(data_dir):
    return os.path.join(data_dir, "admin-password")


def failures_path(data_dir: str) -> str:
    return os.path.join(data_dir, "admin-login-failures.json")


def set_password(data_dir, password):
    if len(password) < 8:
        raise ValueError("the admin password must have at least 8 characters")
    _write_private(hash_path(data_dir), _hasher.hash(password))
    if os.path.exists(generated_path(data_dir)):
        os.remove(generated_path(data_dir))


def ensure_password(data_dir):
    """Make a random password on first run; returns the file holding it, or None if one is set."""
    if os.path.exists(hash_path(data_dir)):
        return generated_path(data_dir) if os.path.exists(generated_path(data_dir)) else None
    password = secrets.token_urlsafe(15)
    _write_private(generated_path(data_dir), password + "\n")
    _write_private(hash_path(data_dir), _hasher.hash(password))
    return generated_path(data_dir)


def check_password(data_dir, password):
    try:
        with open(hash_path(data_dir)) as f:
            return _hasher.verify(f.read().strip(), password)
    except (FileNotFoundError, VerifyMismatchError, InvalidHashError):
        return False


def _write_private(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Session:
    def __init__(self, authenticated, lifetime):
        self.token = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.authenticated = authenticated
        self.expires = time.monotonic() + lifetime


class Sessions:
    """In memory: a gateway restart logs everyone out, which is the safe direction."""

    def __init__(self):
        self.by_token = {}

    def get(self, token):
        s = self.by_token.get(token or "")
        if s and s.expires < time.monotonic():
            del self.by_token[s.token]
            return None
        return s

    def new(self, authenticated):
        if not authenticated and len(self.by_token) >= MAX_ANONYMOUS:
            self.prune()
        s = Session(authenticated, SESSION_SECONDS if authenticated else ANONYMOUS_SECONDS)
        self.by_token[s.token] = s
        return s

    def end(self, token):
        self.by_token.pop(token, None)

    def prune(self):
        now = time.monotonic()
        for t in [t for t, s in self.by_token.items() if s.expires < now or not s.authenticated]:
            del self.by_token[t]


# A count of wrong passwords in a row and the (wall-clock) time of the last one.
Count = list[float]


class LoginLimiter:
    """Wrong passwords, counted per client address and for the (one) account.

    After FAILURES_ALLOWED in a row from an address, or ACCOUNT_FAILURES_ALLOWED from all
    addresses together, each further try waits BACKOFF_FIRST seconds after the last wrong
    one, doubling with each wrong password up to BACKOFF_MAX. The right password resets
    both; so does `edgekeep admin unlock`, which deletes the file the counts are kept in
    (read at every try, so the running server sees it). Wall-clock times: the counts
    survive a restart.
    """

    def __init__(self, data_dir: str, clock: Callable[[], float] = time.time):
        self.path = failures_path(data_dir)
        self.clock = clock

    def retry_after(self, client: str) -> int:
        """Whole seconds until `client` may try a password; 0 if it may now."""
        state, now = self._load(), self.clock()
        return max(_wait(state["account"], ACCOUNT_FAILURES_ALLOWED, now),
                   _wait(state["addresses"].get(client), FAILURES_ALLOWED, now))

    def failed(self, client: str) -> None:
        state, now = self._load(), self.clock()
        state["account"] = _counted(state["account"], now)
        addresses = {a: c for a, c in state["addresses"].items() if now - c[1] < FORGET_SECONDS}
        addresses[client] = _counted(addresses.get(client), now)
        state["addresses"] = addresses
        _write_private(self.path, json.dumps(state))

    def succeeded(self, client: str) -> None:
        state = self._load()
        if state["account"] is None and client not in state["addresses"]:
            return
        state["account"] = None
        state["addresses"].pop(client, None)
        _write_private(self.path, json.dumps(state))

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                state = json.load(f)
            if isinstance(state, dict) and isinstance(state.get("addresses"), dict):
                return {"account": state.get("account"), "addresses": state["addresses"]}
            log.warning("%s is not what the login limiter writes: starting afresh", self.path)
        except FileNotFoundError:
            pass
        except ValueError as e:
            log.warning("%s unreadable (%s): starting afresh", self.path, e)
        return {"account": None, "addresses": {}}


def _counted(count: Count | None, now: float) -> Count:
    if not count or now - count[1] >= FORGET_SECONDS:
        return [1, now]
    return [count[0] + 1, now]


def _wait(count: Count | None, allowed: int, now: float) -> int:
    if not count or count[0] < allowed or now - count[1] >= FORGET_SECONDS:
        return 0
    backoff = BACKOFF_FIRST * 2 ** min(int(count[0]) - allowed, 20)
    # min(): a clock set back must not stretch the wait past the longest there is
    return min(max(0, math.ceil(count[1] + backoff - now)), BACKOFF_MAX)


def unlock(data_dir: str) -> bool:
    """Forget every wrong password (`edgekeep admin unlock`); False if none was counted."""
    try:
        os.remove(failures_path(data_dir))
        return True
    except FileNotFoundError:
        return False


def cookie_header(session, secure=False):
    attrs = "%s=%s; Path=/; HttpOnly; SameSite=Strict" % (COOKIE, session.token)
    if secure:
        attrs += "; Secure"
    return attrs + "; Max-Age=%d" % SESSION_SECONDS


def session_token(scope):
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE:
                    return v
    return None


class AuthMiddleware:
    """Guards every route but `public` ones: no session means 401 (API) or a redirect (pages).

    Also enforces the CSRF token on unsafe methods, for public routes too (the login form
    carries its anonymous session's token). The (method, path) pairs in `csrf_exempt` must
    defend themselves. Bodies of unsafe requests are limited to FORM_LIMIT bytes (413).
    """

    def __init__(self, app, sessions, public, csrf_exempt):
        self.app = app
        self.sessions = sessions
        self.public = public
        self.csrf_exempt = csrf_exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        session = self.sessions.get(session_token(scope))
        scope["ek_session"] = session
        is_public = any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.public)
        if not is_public and not (session and session.authenticated):
            return await _deny(scope, send, path)
        if scope["method"] in UNSAFE and (scope["method"], path) not in self.csrf_exempt:
            body, receive = await _buffer(receive)
            if body is None:
                return await _send(send, 413, json.dumps(
                    {"error": "request body too large: at most %d bytes" % FORM_LIMIT}).encode(),
                    b"application/json")
            if not (session and _csrf_ok(scope, body, session.csrf)):
                return await _send(send, 403, b'{"error": "missing or wrong CSRF token"}',
                                   b"application/json")
        await self.app(scope, receive, send)


def _csrf_ok(scope, body, expected):
    headers = dict(scope["headers"])
    given = headers.get(b"x-csrf-token", b"").decode("latin-1")
    if not given and headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded"):
        given = parse_qs(body.decode("latin-1")).get("csrf", [""])[0]
    return bool(given) and hmac.compare_digest(given, expected)


async def _buffer(receive):
    """Read a (small) request body and hand back a receive() that replays it; the body is
    None if it is over FORM_LIMIT."""
    chunks, size = [], 0
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        size += len(chunks[-1])
        if size > FORM_LIMIT:
            return None, receive
        if not msg.get("more_body"):
            break
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return body, replay


async def _deny(scope, send, path):
    if path.startswith("/api/") or path == "/api":
        return await _send(send, 401, json.dumps({"error": "log in first"}).encode(),
                           b"application/json")
    location = "/login?next=" + quote(path, safe="/")
    await _send(send, 303, b"", b"text/plain", [(b"location", location.encode())])


async def _send(send, status, body, ctype, extra=()):
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})
