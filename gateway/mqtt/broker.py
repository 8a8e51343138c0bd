"""A Mosquitto broker of the gateway's own: config, persistence and credentials in one directory.

Two modes. Anonymous (the default; tests and the quick demo): anyone on 127.0.0.1 may
connect. Auth (`Mosquitto(dir, auth=True)`): a password file and an ACL file in the same
directory. A device's MQTT username is its hex id, and the ACL's patterns let it write only
`ek/<id>/up/#` and read only `ek/<id>/down/#`. The gateway and Home Assistant have accounts
of their own. Credentials are edited in place and Mosquitto re-reads both files on SIGHUP, so
adding or revoking a device needs no restart; on that reload Mosquitto also disconnects any
client whose username is no longer in the password file (tests/test_broker_acl.py shows it).
"""
import base64
import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess

from gateway.localhost import free_port, spawn, wait_port

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")

GATEWAY_USER = "gateway"
HOMEASSISTANT_USER = "homeassistant"
SERVICE_USERS = (GATEWAY_USER, HOMEASSISTANT_USER)
DEVICE_ID = re.compile(r"^[0-9a-f]{16}$")

# Patterns apply to every user; %u is the username, which for a device is its id.
ACL = """\
# EdgeKeep broker ACL (written by gateway/mqtt/broker.py). A device's username is its id.
pattern write ek/%%u/up/#
pattern read ek/%%u/down/#

user %s
topic readwrite ek/#
topic readwrite edgekeep/#
topic readwrite homeassistant/#

user %s
topic read edgekeep/#
topic read homeassistant/#
topic write homeassistant/status
""" % (GATEWAY_USER, HOMEASSISTANT_USER)

# Mosquitto's own format ($7$: PBKDF2-HMAC-SHA512, 101 rounds, 12-byte salt, as
# mosquitto_passwd writes it). Hashing here keeps passwords off command lines; the
# passwords are 32 random bytes, so the round count is not what protects them.
PBKDF2_ROUNDS = 101


def find_mosquitto():
    path = shutil.which("mosquitto", path=os.pathsep.join(
        [os.environ.get("PATH", "")] + list(SBIN)))
    if not path:
        raise RuntimeError("mosquitto is not installed: run `make setup` "
                           "(or `sudo apt-get install mosquitto mosquitto-clients`)")
    return path


def password_hash(password):
    salt = os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ROUNDS)
    return "$7$%d$%s$%s" % (PBKDF2_ROUNDS, base64.b64encode(salt).decode(),
                             base64.b64encode(dk).decode())


class CredentialError(Exception):
    pass


class Credentials:
    """The password and ACL files of a broker directory, and the SIGHUP that applies them.

    Files: `passwd` (user:hash lines), `acl`, `gateway.secret` (the gateway's password),
    and `mosquitto.pid`, written by Mosquitto itself (`pid_file`), which is how a separate
    process (the CLI) finds the broker to reload.
    """

    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        self.passwd = os.path.join(self.dir, "passwd")
        self.acl = os.path.join(self.dir, "acl")
        self.pid_file = os.path.join(self.dir, "mosquitto.pid")
        self.gateway_secret = os.path.join(self.dir, "gateway.secret")

    def init(self):
        """Write the ACL and create the gateway account if missing; returns the gateway's password."""
        os.makedirs(self.dir, exist_ok=True)
        with self._locked():
            _write_private(self.acl, ACL)
            if not os.path.exists(self.passwd):
                _write_private(self.passwd, "")
            if not os.path.exists(self.gateway_secret) or GATEWAY_USER not in self._read():
                _write_private(self.gateway_secret, self._set(GATEWAY_USER) + "\n")
        return self.gateway_password()

    def gateway_password(self):
        with open(self.gateway_secret) as f:
            return f.read().strip()

    def add_device(self, dev_hex):
        """A fresh password for this device (replacing any old one); returns it."""
        return self.set_password(_device_user(dev_hex))

    def revoke_device(self, dev_hex):
        """Remove the device's account; Mosquitto drops its live session on the reload.

        Returns whether a running broker was reloaded (else it applies at the next start).
        """
        user = _device_user(dev_hex)
        with self._locked():
            entries = self._read()
            if entries.pop(user, None) is None:
                raise CredentialError("device %s has no broker account" % dev_hex)
            self._write(entries)
        return self.reload()

    def set_password(self, user):
        if user not in SERVICE_USERS and not DEVICE_ID.match(user):
            raise CredentialError("not a broker user: %r (a device id is 16 lowercase hex "
                                  "characters; service users: %s)" % (user, ", ".join(SERVICE_USERS)))
        with self._locked():
            password = self._set(user)
        self.reload()
        return password

    def users(self):
        return sorted(self._read())

    def reload(self):
        """SIGHUP the broker running on these files, if one is; returns whether one was."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            # A pid file left by a killed broker may name some other process by now.
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() != "mosquitto":
                    return False
            os.kill(pid, signal.SIGHUP)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return False
        return True

    def _set(self, user):
        password = secrets.token_urlsafe(32)
        entries = self._read()
        entries[user] = password_hash(password)
        self._write(entries)
        return password

    def _read(self):
        if not os.path.exists(self.passwd):
            raise CredentialError("%s has no broker credentials: run `python -m gateway "
                                  "broker init --dir %s` first" % (self.dir, self.dir))
        entries = {}
        with open(self.passwd) as f:
            for line in f:
                user, sep, digest = line.strip().partition(":")
                if sep:
                    entries[user] = digest
        return entries

    def _write(self, entries):
        _write_private(self.passwd, "".join("%s:%s\n" % kv for kv in sorted(entries.items())))

    @contextlib.contextmanager
    def _locked(self):
        with open(os.path.join(self.dir, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def managed_credentials(data_dir):
    """The broker accounts the gateway manages (`<data_dir>/broker/passwd`), or None."""
    creds = Credentials(os.path.join(data_dir, "broker"))
    return creds if os.path.exists(creds.passwd) else None


def _device_user(dev_hex):
    if not isinstance(dev_hex, str) or not DEVICE_ID.match(dev_hex):
        raise CredentialError("not a device id (16 lowercase hex characters): %r" % (dev_hex,))
    return dev_hex


def _write_private(path, text):
    """Replace a file atomically, readable by its owner only (the broker runs as that user)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Mosquitto:
    """mosquitto -c <dir>/mosquitto.conf, listening on 127.0.0.1 only.

    auth=True: password file + ACL (see Credentials); `tls=(certfile, keyfile)` adds a TLS
    listener on `tls_port` with the same accounts.
    """

    def __init__(self, directory, port=None, extra_conf="", auth=False, tls=None):
        self.dir = os.path.abspath(directory)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.credentials = Credentials(self.dir) if auth else None
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.proc = None

    @property
    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port

    def add_device_credentials(self, dev_hex):
        return self.credentials.add_device(dev_hex)

    def revoke_device_credentials(self, dev_hex):
        self.credentials.revoke_device(dev_hex)

    def gateway_password(self):
        return self.credentials.gateway_password()

    def write_conf(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "mosquitto.conf")
        lines = [
            # As root, Mosquitto would switch to the `mosquitto` user, which cannot write
            # this directory; run as whoever started it.
            "user %s" % pwd.getpwuid(os.geteuid()).pw_name,
            "listener %d 127.0.0.1" % self.port,
        ]
        if self.tls:
            certfile, keyfile = self.tls
            lines += ["listener %d 127.0.0.1" % self.tls_port,
                      "certfile %s" % os.path.abspath(certfile),
                      "keyfile %s" % os.path.abspath(keyfile)]
        if self.credentials:
            self.credentials.init()
            lines += ["allow_anonymous false",
                      "password_file %s" % self.credentials.passwd,
                      "acl_file %s" % self.credentials.acl,
                      "pid_file %s" % self.credentials.pid_file]
        else:
            lines.append("allow_anonymous true")
        lines += ["persistence true", "persistence_location %s/" % self.dir,
                  "autosave_interval 1", "max_queued_messages 100000", "set_tcp_nodelay true",
                  "max_inflight_messages 1024",
                  "log_dest file %s/mosquitto.log" % self.dir]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_conf)
        return conf

    def start(self, timeout=10):
        """Start Mosquitto and wait for its listeners. It runs in a session of its own (a
        terminal's Ctrl-C or hang-up reaches only this process, which stops it after the
        gateway has drained) and dies with this process, however this process dies."""
        conf = self.write_conf()
        self.proc = spawn([find_mosquitto(), "-c", conf], signal.SIGTERM,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
        ports = [self.port] + ([self.tls_port] if self.tls else [])
        if not all(wait_port("127.0.0.1", p, timeout) for p in ports):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError("mosquitto did not start on port %d: %s" % (self.port, err.strip()))
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
