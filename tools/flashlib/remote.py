"""The gateway's admin API, from the machine the device is plugged into (provision and
decommission with --gateway https://HOST:PORT).

TLS is always verified: against the certificate's SHA-256 fingerprint (--fingerprint, as
`edgekeep devices enroll` prints it and the gateway logs it at every start: the usual case,
a self-signed certificate), or a CA file (--ca-file), or else the system's CAs. The pin is
checked right after the handshake, before a byte of the request (the token) is sent. Plain
http is refused except to this machine (127.0.0.1, localhost, ::1).

The enrollment token comes from --token-file, $EDGEKEEP_ENROLL_TOKEN or a prompt (--token
works too, but puts it where `ps` and the shell's history see it); the admin password from
--admin-password-file, $EDGEKEEP_ADMIN_PASSWORD or a prompt. Neither is ever printed.
"""
import getpass
import hashlib
import hmac
import http.client
import json
import os
import re
import ssl
import sys
from urllib.parse import urlsplit

from tools.flashlib import FlashError

TOKEN_ENV = "EDGEKEEP_ENROLL_TOKEN"
PASSWORD_ENV = "EDGEKEEP_ADMIN_PASSWORD"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TIMEOUT = 120        # s: an enrollment waits for its chain transaction to be mined
ISSUE = ("get a new token on the gateway (`edgekeep devices enroll --config gateway.toml`, "
         "or the admin page's API)")


def parse_fingerprint(text):
    """A SHA-256 fingerprint, AA:BB:... (as browsers and the gateway show it) or plain hex,
    as 32 bytes."""
    digits = re.sub(r"[\s:]", "", text or "")
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise FlashError("--fingerprint must be the certificate's SHA-256 fingerprint, 32 bytes "
                         "in hex (AA:BB:...), not %r" % (text or "")[:40],
                         "copy it from `edgekeep devices enroll` or the gateway's log line "
                         "`admin page https://...: certificate ..., SHA-256 fingerprint ...`")
    return bytes.fromhex(digits)


def show_fingerprint(raw):
    return ":".join("%02X" % b for b in raw)


def read_secret(path, env, argv_value, what, flag, prompt):
    """A secret from a file, else the environment, else argv (warned), else a prompt."""
    if path:
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError as e:
            raise FlashError("cannot read the %s from %s: %s" % (what, path, e.strerror),
                             "check %s" % flag)
        if not value:
            raise FlashError("%s is empty" % path, "put the %s in it" % what)
        return value
    if os.environ.get(env):
        return os.environ[env].strip()
    if argv_value:
        print("warning: a %s on the command line is visible to other users (ps) and kept in "
              "your shell's history; prefer %s or $%s" % (what, flag, env), file=sys.stderr)
        return argv_value.strip()
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
        if value.strip():
            return value.strip()
    raise FlashError("no %s given" % what, "pass %s FILE or set $%s" % (flag, env))


def read_token(args):
    return read_secret(getattr(args, "token_file", None), TOKEN_ENV, getattr(args, "token", None),
                       "enrollment token", "--token-file", "enrollment token: ")


def has_password(args):
    return bool(getattr(args, "admin_password_file", None) or os.environ.get(PASSWORD_ENV))


def read_password(args):
    return read_secret(args.admin_password_file, PASSWORD_ENV, None, "admin password",
                       "--admin-password-file", "the gateway's admin password: ")


class Gateway:
    """The admin API at url (https://HOST:PORT), every connection verified as above."""

    def __init__(self, url, fingerprint=None, ca_file=None):
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise FlashError("--gateway must be the admin page's address, https://HOST:PORT, "
                             "not %r" % url,
                             "give the address the gateway logs as `admin page https://...`")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise FlashError("--gateway must be just https://HOST:PORT, without a path, query "
                             "or user (not %r)" % url, "drop what follows the port")
        self.url = "%s://%s" % (parts.scheme, parts.netloc)
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        try:
            self.port = parts.port or (443 if self.tls else 80)
        except ValueError:
            raise FlashError("%s: the port is not a number" % url, "give https://HOST:PORT")
        if not self.tls and self.host not in LOOPBACK:
            raise FlashError("refusing plain http to %s: the token or password would cross the "
                             "network in clear" % self.host,
                             "serve the admin page over https (web_tls = true in the gateway's "
                             "config) and give https://%s:PORT with its --fingerprint"
                             % self.host)
        self.pin = parse_fingerprint(fingerprint) if fingerprint else None
        if (self.pin or ca_file) and not self.tls:
            raise FlashError("--fingerprint and --ca-file are for https", "give https://...")
        self.context = None
        if self.tls:
            self.context = ssl.create_default_context()
            if ca_file:
                try:
                    self.context = ssl.create_default_context(cafile=ca_file)
                except (OSError, ssl.SSLError) as e:
                    raise FlashError("cannot load the CA file %s: %s" % (ca_file, e),
                                     "give a PEM file: the CA that signed the gateway's "
                                     "certificate, or the certificate itself")
            elif self.pin:
                # The pin is the verification (checked in connect, before anything is sent):
                # a self-signed certificate has no CA to check it against.
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.cookie = self.csrf = None

    def connect(self):
        if not self.tls:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        else:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT,
                                               context=self.context)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise FlashError("the gateway's certificate at %s is not trusted: %s"
                             % (self.url, e.verify_message or e),
                             "pin it: --fingerprint AA:BB:... as `edgekeep devices enroll` "
                             "prints it (the gateway logs it at start too), or --ca-file FILE")
        except ssl.SSLError as e:
            conn.close()
            raise FlashError("TLS with %s failed: %s" % (self.url, e.reason or e),
                             "is the admin page served over https there (web_tls = true)? "
                             "check the address and port")
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise FlashError("no gateway answers at %s: %s" % (self.url, e),
                             "check the admin page's address and port (the gateway logs "
                             "`admin page https://...` when it starts) and that it runs")
        if self.pin is not None:
            der = conn.sock.getpeercert(binary_form=True)
            seen = hashlib.sha256(der).digest()
            if not hmac.compare_digest(seen, self.pin):
                conn.close()
                raise FlashError(
                    "the certificate at %s has the fingerprint %s, not the one given (%s): "
                    "this is not your gateway, or its certificate was replaced"
                    % (self.url, show_fingerprint(seen), show_fingerprint(self.pin)),
                    "compare with the fingerprint the gateway logs at start (`admin page ...: "
                    "certificate ..., SHA-256 fingerprint ...`); send nothing to it otherwise")
        return conn

    def request(self, method, path, body=None, headers=None):
        """(status, JSON answer) of one request; FlashError when there is no answer."""
        conn = self.connect()
        try:
            head = {"Accept": "application/json"}
            if self.cookie:
                head["Cookie"] = self.cookie
            if self.csrf and method != "GET":
                head["X-CSRF-Token"] = self.csrf
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                head["Content-Type"] = "application/json"
            head.update(headers or {})
            conn.request(method, path, data, head)
            r = conn.getresponse()
            raw = r.read()
            cookie = r.getheader("set-cookie")
        except (OSError, http.client.HTTPException) as e:
            raise FlashError("lost the gateway at %s: %s" % (self.url, e),
                             "check the network and that the gateway runs, then retry")
        finally:
            conn.close()
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": raw[:200].decode(errors="replace").strip()}
        return r.status, answer if isinstance(answer, dict) else {"answer": answer}

    def call(self, method, path, body=None, headers=None, ok=(200, 201)):
        status, answer = self.request(method, path, body, headers)
        if status not in ok:
            raise FlashError("the gateway refused (%d): %s" % (status, answer.get("error", "?")),
                             answer.get("fix") or FIXES.get(status, "see the gateway's log"))
        return answer

    # -- enrollment (a token) ------------------------------------------------------------

    def check_token(self, token):
        """The token is good (not spent, not expired) for now; nothing is spent."""
        return self.call("POST", "/api/enroll", {}, bearer(token))

    def enroll(self, token, public_hex, name, kind, retire=None):
        body = {"public_key": public_hex, "name": name, "kind": kind}
        if retire:
            body["retire"] = retire
        return self.call("POST", "/api/enroll", body, bearer(token))

    def retire(self, token, retire):
        return self.call("POST", "/api/enroll", {"retire": retire}, bearer(token))

    # -- the admin's session (a password) ------------------------------------------------

    def login(self, password):
        status, answer = self.request("POST", "/api/session", {"password": password})
        if status == 401:
            raise FlashError("the gateway refused the admin password",
                             "give the admin page's password (--admin-password-file or "
                             "$%s)" % PASSWORD_ENV)
        if status != 200:
            raise FlashError("the gateway refused the login (%d): %s"
                             % (status, answer.get("error", "?")), FIXES.get(status, "retry"))
        self.csrf = answer["csrf"]

    def revoke(self, dev_hex):
        return self.call("POST", "/api/devices/%s/revoke" % dev_hex, {})

    def logout(self):
        self.request("DELETE", "/api/session")


def bearer(token):
    return {"Authorization": "Bearer " + token}


FIXES = {401: ISSUE, 403: "see the error above", 404: "check the device id and the gateway",
         429: "wait, or on the gateway: `edgekeep admin unlock`",
         503: "start the gateway itself (`edgekeep run`), then retry"}
