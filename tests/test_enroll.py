"""Adoption through the gateway's API (issue 18, point 2): single-use enrollment tokens (their
rows on both backends, spending and refusing them, the route that takes them), and end to
end: a device enrolled from a second "machine" (its own process, working directory and
home, the gateway's data directory hidden from it by a mount namespace) against a running
gateway over https pinned by fingerprint, with real Mosquitto accounts and anvil; its data
verifies; the token refused when reused or expired; `provision --force` and `decommission`
revoking it everywhere; and `POST /api/devices` giving a device that can connect."""
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from agent import p256
from agent.identity import Identity
from gateway.chain import registry
from gateway.cli.common import chain_for
from gateway.config import Config
from gateway.localhost import free_port, wait_port
from gateway.mqtt.broker import Credentials, Mosquitto
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from gateway.web import auth
from gateway.web.app import create_app
from tests.helpers.e2e import scan_for
from tests.helpers.mqtt import Client
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for
from tools.flashlib.remote import Gateway
from tools.virtual_device import VirtualDevice

PASSWORD = "correct horse battery"
FLASH = [sys.executable, os.path.join(REPO, "tools", "flash.py")]
T = 1765000000.0


# -- the rows, on SQLite and PostgreSQL ---------------------------------------------------

@pytest.mark.unit
def test_enrollment_rows_are_spent_once_and_given_back_only_unchanged(tmp_path, database_url):
    store = Store.open(str(tmp_path / "gw"), database_url)
    rows = store.enrollments
    try:
        rows.add("aa" * 32, T, T + 600, "cli", "mqtt://pi.local:1883")
        rows.add("bb" * 32, T, T + 60, "admin page")
        assert rows.get("cc" * 32) is None
        found = rows.get("aa" * 32)
        assert found == ("aa" * 32, T, T + 600, "cli", "mqtt://pi.local:1883", None, None,
                         None, None)
        assert type(found.created_at) is float and found.used_at is None
        assert [e.digest for e in rows.pending(T)] == ["bb" * 32, "aa" * 32]   # soonest first

        claimed = rows.claim("aa" * 32, T + 1, "10.0.0.7")
        assert claimed.used_at == T + 1 and claimed.used_by == "10.0.0.7"
        assert rows.claim("aa" * 32, T + 2, "10.0.0.8") is None          # spent
        assert rows.claim("bb" * 32, T + 60, "10.0.0.7") is None         # expired (at T + 60)
        assert rows.claim("cc" * 32, T, "x") is None                     # unknown
        assert rows.release("aa" * 32)                                   # nothing was done
        assert rows.claim("aa" * 32, T + 3, "10.0.0.9").used_by == "10.0.0.9"
        rows.finish("aa" * 32, "00112233445566ff", None)
        assert not rows.release("aa" * 32)                               # it enrolled a device
        assert rows.get("aa" * 32)[5:] == (T + 3, "10.0.0.9", "00112233445566ff", None)
        assert [e.digest for e in rows.pending(T)] == ["bb" * 32]

        rows.add("dd" * 32, T + 8 * 86400, T + 8 * 86400 + 600, "cli")  # a week on: the old go
        assert rows.get("aa" * 32) is None and rows.get("dd" * 32) is not None
    finally:
        store.close()


class FakeChain:
    """The DeviceRegistry's rules (an id registered once; a revoked one stays revoked)."""

    address = "0x00000000000000000000000000000000000000aa"

    def __init__(self):
        self.devices = {}

    def device(self, id8):
        return self.devices.get(bytes(id8))

    def send_register_device(self, id8, public_key, owner):
        assert bytes(id8) not in self.devices
        self.devices[bytes(id8)] = {"pubkey": public_key, "active": True}
        return "0x01"

    def wait_mined(self, tx_hash):
        return {}

    def revoke_device(self, id8):
        assert self.devices[bytes(id8)]["active"]
        self.devices[bytes(id8)]["active"] = False


def signed_retirement(ident, new_public=b""):
    statement = registry.retire_statement(ident.hex, new_public)
    return ident.hex, p256.sign(ident.secret, hashlib.sha256(statement).digest())


@pytest.mark.unit
def test_a_token_enrolls_one_device_once_and_a_device_proves_its_own_retirement(
        tmp_path, database_url):
    store = Store.open(str(tmp_path / "gw"), database_url)
    os.makedirs(tmp_path / "broker")
    broker = Credentials(str(tmp_path / "broker"))
    broker.init()
    chain = FakeChain()
    try:
        token, expires = registry.issue_enrollment(store, 600, now=T)
        assert expires == T + 600 and registry.TOKEN.fullmatch(token)
        assert store.enrollments.get(registry.token_digest(token)) is not None
        assert token not in repr(store.enrollments.pending(T))       # only its digest

        old = Identity.create(os.urandom)
        got = registry.enroll(store, chain, broker, token, "10.0.0.7", old.public, "porch",
                              now=T + 1)
        assert got["device"] == old.hex and got["mqtt_user"] == old.hex and got["mqtt_password"]
        assert old.hex in broker.users() and store.device(old.hex)["status"] == "active"
        assert chain.device(bytes.fromhex(old.hex))["active"]

        with pytest.raises(registry.EnrollmentError) as e:      # reused
            registry.enroll(store, chain, broker, token, "x", Identity.create(os.urandom).public,
                            now=T + 2)
        assert e.value.status == 401 and "already used" in str(e.value)
        assert "enrolled device %s" % old.hex in str(e.value)
        assert "edgekeep devices enroll" in e.value.fix

        late, _ = registry.issue_enrollment(store, 60, now=T)
        with pytest.raises(registry.EnrollmentError, match="expired") as e:
            registry.check_enrollment(store, late, now=T + 61)
        assert "--ttl" in e.value.fix
        with pytest.raises(registry.EnrollmentError, match="not an enrollment token"):
            registry.check_enrollment(store, "hunter2")
        with pytest.raises(registry.RegistryError, match="1 to 86400"):
            registry.issue_enrollment(store, 86401)

        # A replacement: the old key signs the new one; a forged signature changes nothing
        # and leaves the token good.
        new = Identity.create(os.urandom)
        token, _ = registry.issue_enrollment(store, 600, now=T)
        other = Identity.create(os.urandom)
        forged = signed_retirement(other, new.public)[1]
        with pytest.raises(registry.EnrollmentError, match="does not prove") as e:
            registry.enroll(store, chain, broker, token, "x", new.public, None, "tracker",
                            (old.hex, forged), now=T + 3)
        assert e.value.status == 403 and store.device(new.hex) is None
        assert registry.check_enrollment(store, token, now=T + 4)
        wrong_key = signed_retirement(old, other.public)     # signed for another new key
        with pytest.raises(registry.EnrollmentError, match="does not prove"):
            registry.enroll(store, chain, broker, token, "x", new.public, None, "tracker",
                            wrong_key, now=T + 4)
        got = registry.enroll(store, chain, broker, token, "x", new.public, None, "tracker",
                              signed_retirement(old, new.public), now=T + 5)
        assert got["device"] == new.hex and got["retired"] == old.hex
        assert store.device(old.hex)["status"] == "revoked" and old.hex not in broker.users()
        assert not chain.device(bytes.fromhex(old.hex))["active"]
        assert new.hex in broker.users()

        # A revoked key never comes back; a decommission is a retirement alone.
        token, _ = registry.issue_enrollment(store, 600, now=T)
        store.db.execute("DELETE FROM devices WHERE id = ?", (old.hex,))
        with pytest.raises(registry.RegistryError, match="never comes back"):
            registry.enroll(store, chain, broker, token, "x", old.public, now=T + 6)
        got = registry.enroll(store, chain, broker, token, "x", retire=signed_retirement(new),
                              now=T + 7)
        assert got["device"] is None and got["retired"] == new.hex
        assert store.device(new.hex)["status"] == "revoked" and broker.users() == ["gateway"]
    finally:
        store.close()


@pytest.mark.unit
def test_a_replacement_whose_old_device_cannot_be_revoked_still_enrolls_the_new_one(tmp_path):
    """The chain refuses the revocation: the new device is enrolled all the same (it gets its
    account, which the flash tool must write), and the answer says what is left to do."""
    store = Store.open(str(tmp_path / "gw"))
    chain = FakeChain()
    old, new = Identity.create(os.urandom), Identity.create(os.urandom)
    token, _ = registry.issue_enrollment(store, 600)
    registry.enroll(store, chain, None, token, "x", old.public)

    def refuse(id8):
        raise RuntimeError("execution reverted")
    chain.revoke_device = refuse
    token, _ = registry.issue_enrollment(store, 600)
    got = registry.enroll(store, chain, None, token, "x", new.public, None, "tracker",
                          signed_retirement(old, new.public))
    assert got["device"] == new.hex and got["retired"] is None
    assert "revoking %s" % old.hex in got["retire_error"] and "reverted" in got["retire_error"]
    assert store.device(old.hex)["status"] == "active"
    with pytest.raises(registry.EnrollmentError, match="already used"):
        registry.check_enrollment(store, token)
    # a decommission alone that fails leaves its token good for another try
    token, _ = registry.issue_enrollment(store, 600)
    with pytest.raises(registry.EnrollmentError, match="revoking .* failed") as e:
        registry.enroll(store, chain, None, token, "x", retire=signed_retirement(new))
    assert e.value.status == 502 and registry.check_enrollment(store, token)
    store.close()


# -- the route: a token, no session, no CSRF -----------------------------------------------

@pytest.fixture
def client(tmp_path):
    data = str(tmp_path / "gw")
    Store.open(data).close()
    auth.set_password(data, PASSWORD)
    with TestClient(create_app(Config(data_dir=data, web_tls=True)), follow_redirects=False,
                    base_url="https://testserver") as c:
        yield c


@pytest.mark.unit
def test_the_enroll_route_takes_a_token_not_a_session(client):
    r = client.post("/api/enroll", json={})
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert "Authorization: Bearer" in r.json()["error"] and r.json()["fix"]
    r = client.post("/api/enroll", json={}, headers={"Authorization": "Bearer ekenroll1.nope"})
    assert r.status_code == 401 and "not an enrollment token" in r.json()["error"]

    assert client.post("/api/enroll/tokens", json={}).status_code == 401     # a session's
    csrf = client.post("/api/session", json={"password": PASSWORD}).json()["csrf"]
    assert client.post("/api/enroll/tokens", json={}).status_code == 403     # and its CSRF
    for body, words in (({"ttl": "600"}, "whole number"), ({"ttl": 0}, "1 to 86400"),
                        ({"broker": "http://pi"}, "mqtt://")):
        r = client.post("/api/enroll/tokens", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and words in r.json()["error"], r.json()
    r = client.post("/api/enroll/tokens", json={"ttl": 60}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    issued = r.json()
    assert issued["expires"] - time.time() == pytest.approx(60, abs=5)
    assert "--gateway https://testserver --token-file TOKEN-FILE" in issued["provision"]
    assert issued["token"] not in issued["provision"]

    client.cookies.clear()    # no session from here on: the token is all it takes
    bearer = {"Authorization": "Bearer " + issued["token"]}
    r = client.post("/api/enroll", json={}, headers=bearer)     # a check: nothing spent
    assert r.status_code == 200 and r.json()["valid"] is True
    r = client.post("/api/enroll", json={"public_key": "04zz"}, headers=bearer)
    assert r.status_code == 400 and r.json()["fix"]
    r = client.post("/api/enroll", json={"public_key": "04" + "11" * 64}, headers=bearer)
    assert r.status_code == 503 and "chain" in r.json()["error"]   # this app has no gateway
    assert client.post("/api/enroll", json={}, headers=bearer).status_code == 200

    doc = client.get("/api/openapi.json")
    assert doc.status_code == 401     # the rest of the API still needs a session
    client.post("/api/session", json={"password": PASSWORD})
    doc = client.get("/api/openapi.json").json()
    assert doc["paths"]["/api/enroll"]["post"]["security"] == [{"enrollment": []}]
    assert doc["paths"]["/api/enroll/tokens"]["post"]["security"] == [{"session": [], "csrf": []}]


def test_devices_enroll_writes_the_token_0600_and_keeps_only_its_digest(tmp_path):
    data = str(tmp_path / "gw")
    Store.open(data).close()
    out = str(tmp_path / "token")
    r = cli("gateway", "devices", "enroll", "--data-dir", data, "--ttl", "120", "--out", out)
    assert r.returncode == 0, r.stderr
    token = open(out).read().strip()
    assert registry.TOKEN.fullmatch(token) and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert token not in r.stdout and "--token-file %s" % out in r.stdout
    assert scan_for(data, [token.encode()]) == []
    assert scan_for(data, [registry.token_digest(token).encode()]) != []
    r = cli("gateway", "devices", "enroll", "--data-dir", data, "--ttl", "100000")
    assert r.returncode == 2 and "1 to 86400" in r.stderr
    r = cli("gateway", "devices", "enroll")
    assert r.returncode == 2 and "--data-dir or --config" in r.stderr


# -- end to end: a second machine --------------------------------------------------------

def cli(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def can_hide_directories():
    """Whether a mount namespace can be made here (root, or unprivileged user namespaces)."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs probe /tmp"], capture_output=True)
    return probe.returncode == 0


class Machine:
    """Another machine: its own working directory and home (its keyring, its token files),
    and, where mount namespaces are allowed, no sight of the gateway's data directory (an
    empty tmpfs over it in the flash tool's namespace)."""

    def __init__(self, home, hidden):
        self.home, self.hidden = str(home), hidden
        os.makedirs(self.home)
        self.env = dict(ENV, HOME=self.home, EDGEKEEP_PASSPHRASE="owner secret")
        self.env.pop("EDGEKEEP_ENROLL_TOKEN", None)
        self.isolated = shutil.which("unshare") is not None and can_hide_directories()

    def run(self, *args, timeout=300):
        command = list(args)
        if self.isolated:
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount -t tmpfs -o size=1m elsewhere "$0" && exec "$@"', self.hidden,
                       *command]
        return subprocess.run(command, cwd=self.home, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def flash(self, *args, **kw):
        return self.run(*FLASH, *args, **kw)

    def receive(self, name, path):
        """A file handed over from the gateway (a token, as the owner would copy it)."""
        dest = os.path.join(self.home, name)
        shutil.copy(path, dest)
        os.chmod(dest, 0o600)
        return dest


def assert_error(r, message, fix):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert message in "\n".join(lines[i:]), r.stderr
    fixes = [line for line in lines[i:] if line.startswith("  fix: ")]
    assert fixes and fix in fixes[0], r.stderr


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    key = str(d / "release.key")
    for args in (["keygen", "--out", key], ["build", "--board", "esp32", "--sign-key", key,
                                            "--version", "9.9.9", "--out", str(d / "bundle")]):
        r = cli("firmware", *args)
        assert r.returncode == 0, r.stderr
    return {"pub": key + ".pub", "bundle": str(d / "bundle")}


@pytest.fixture
def site(tmp_path):
    """A running gateway: its own Mosquitto with accounts, anvil, the admin page over https
    with its self-signed certificate. Yields (data dir, config, broker, admin URL, the
    fingerprint as the gateway logs it)."""
    data = str(tmp_path / "gw")
    port = free_port()
    with Mosquitto(os.path.join(data, "broker"), auth=True) as broker:
        config = str(tmp_path / "gateway.toml")
        with open(config, "w") as f:
            f.write('data_dir = "%s"\nbroker = "%s"\nbroker_username = "gateway"\n'
                    'broker_password_file = "%s"\nepoch_seconds = 2\nweb_port = %d\n'
                    'web_tls = true\nhomeassistant = false\n[chain]\nblock_time = 1\n'
                    % (data, broker.url, broker.credentials.gateway_secret, port))
        log_path = tmp_path / "gateway.log"
        with open(log_path, "ab") as log:
            gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", config],
                                  cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            logged = wait_for(lambda: re.search(r"admin page (https://\S+): certificate \S+, "
                                                r"SHA-256 fingerprint ([0-9A-F:]{95})",
                                                log_path.read_text()) or gw.poll() is not None,
                              timeout=120, what="the admin page")
            assert gw.poll() is None, log_path.read_text()[-3000:]
            assert wait_port("127.0.0.1", port, 10)
            page = Gateway(logged.group(1), logged.group(2))
            wait_for(lambda: page.request("GET", "/healthz")[1]["components"].get(
                "anchor", {}).get("state") == "alive", timeout=120, what="the anchor running")
            yield data, config, broker, logged.group(1).rstrip("/"), logged.group(2), log_path
        finally:
            gw.terminate()
            gw.wait(60)
            from gateway.chain import node
            node.stop_running(data)


def issue(config, out, *extra):
    r = cli("gateway", "devices", "enroll", "--config", config, "--out", out, *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_enrollment_from_another_machine_then_replacement_and_decommission(tmp_path, site,
                                                                            release):
    data, config, broker, url, fingerprint, gateway_log = site
    machine = Machine(tmp_path / "laptop", data)
    if machine.isolated:    # the flash tool's view of the gateway's data directory: empty
        r = machine.run("ls", "-A", data)
        assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    keyring = os.path.join(machine.home, "owner.keyring")

    # The owner, on the gateway, issues a token and copies it over.
    printed = issue(config, str(tmp_path / "token-1"))
    assert "--gateway %s --token-file" % url in printed and "--fingerprint " + fingerprint in printed
    token = machine.receive("token", str(tmp_path / "token-1"))

    with open(tmp_path / "device.log", "ab") as dlog, \
            VirtualDevice(str(tmp_path / "flash"), board="esp32", log=dlog) as dev:
        # Not pinned, or pinned to another certificate: refused before anything is sent.
        assert_error(machine.flash("provision", "--port", dev.port, "--gateway", url,
                                   "--token-file", token, "--owner-keyring", keyring),
                     "certificate at %s is not trusted" % url, "--fingerprint")
        assert_error(machine.flash("provision", "--port", dev.port, "--gateway", url,
                                   "--token-file", token, "--fingerprint", "AB:" * 31 + "AB",
                                   "--owner-keyring", keyring),
                     "not the one given", "fingerprint the gateway logs")
        assert not os.path.exists(os.path.join(dev.directory, "identity.json"))

        r = machine.flash("provision", "--port", dev.port, "--gateway", url, "--token-file",
                          token, "--fingerprint", fingerprint, "--owner-keyring", keyring,
                          "--name", "remote-1", "--interval", "0.5", "--upload-interval", "1.5",
                          "--duration", "12")
        assert r.returncode == 0, r.stdout + r.stderr
        device = re.search(r"provisioned device (\w+)", r.stdout).group(1)
        assert "with its own broker account" in r.stdout
        secret_token = open(token).read().strip()
        assert secret_token not in r.stdout + r.stderr
        config_json = json.load(open(os.path.join(dev.directory, "config.json")))
        assert config_json["broker"] == broker.url and config_json["mqtt_user"] == device
        assert device in Credentials(broker.dir).users()
        data_key = Keyring.open(keyring, "owner secret").get(device)   # on the laptop only

        # The token is spent: again, it is refused (before the device is touched).
        assert_error(machine.flash("provision", "--port", dev.port, "--gateway", url,
                                   "--token-file", token, "--fingerprint", fingerprint,
                                   "--owner-keyring", keyring, "--force"),
                     "already used", "edgekeep devices enroll")
        # An expired one too.
        issue(config, str(tmp_path / "token-short"), "--ttl", "1")
        short = machine.receive("token-short", str(tmp_path / "token-short"))
        time.sleep(1.5)
        assert_error(machine.flash("provision", "--port", dev.port, "--gateway", url,
                                   "--token-file", short, "--fingerprint", fingerprint,
                                   "--owner-keyring", keyring, "--force"),
                     "expired", "--ttl")

        # The agent runs with the device's own account; its data reaches the chain.
        r = machine.flash("deploy", "--port", dev.port, "--release-key", release["pub"],
                          release["bundle"])
        assert r.returncode == 0, r.stdout + r.stderr
        agent_ends = time.monotonic() + 12 + 8     # its --duration, and delivering the rest
        store = Store.open(data)
        try:
            wait_for(lambda: len(store.messages(device=device)) >= 3, timeout=90,
                     what="the enrolled device's messages")
            wait_for(lambda: all(m["epoch"] is not None for m in store.messages(device=device))
                     and store.recent_epochs(1)[0]["status"] == "mined", timeout=60,
                     what="its messages anchored")
        finally:
            store.close()
        assert "u'%s'" % device in open(os.path.join(broker.dir, "mosquitto.log")).read()
        r = cli("gateway", "verify", "--data-dir", data, "--all")
        assert r.returncode == 0 and "FAILED" not in r.stdout, r.stdout + r.stderr
        # The data key is on the laptop alone; the token nowhere on the gateway but hashed.
        assert scan_for(data, [data_key, data_key.hex().encode()]) == []
        assert scan_for(data, [secret_token.encode()]) == []
        assert secret_token not in gateway_log.read_text()
        time.sleep(max(0, agent_ends - time.monotonic()))   # the device is back at its REPL

        # provision --force with a new token: the device signs its retirement with the old
        # key; the old identity is revoked on the gateway, the broker and the chain.
        issue(config, str(tmp_path / "token-2"))
        r = machine.flash("provision", "--port", dev.port, "--gateway", url, "--token-file",
                          machine.receive("token-2", str(tmp_path / "token-2")),
                          "--fingerprint", fingerprint, "--owner-keyring", keyring, "--force")
        assert r.returncode == 0, r.stdout + r.stderr
        replacement = re.search(r"provisioned device (\w+)", r.stdout).group(1)
        assert replacement != device and "revoked %s" % device in r.stdout
        old_password = config_json["mqtt_password"]
        config_json = json.load(open(os.path.join(dev.directory, "config.json")))
        assert config_json["mqtt_user"] == replacement
        assert_revoked(data, broker, device, old_password)

        # decommission, with a third token: revoked everywhere, keys wiped.
        issue(config, str(tmp_path / "token-3"))
        r = machine.flash("decommission", "--port", dev.port, "--gateway", url, "--token-file",
                          machine.receive("token-3", str(tmp_path / "token-3")),
                          "--fingerprint", fingerprint)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "decommissioned device %s" % replacement in r.stdout
        assert not any(os.path.exists(os.path.join(dev.directory, f))
                       for f in ("identity.json", "identity.json.new", "config.json"))
        assert_revoked(data, broker, replacement, config_json["mqtt_password"])
        assert_error(machine.flash("decommission", "--port", dev.port, "--gateway", url,
                                   "--fingerprint", fingerprint),
                     "has no identity", "provision")


def assert_revoked(data, broker, device, password):
    """Revoked in the store, on chain and at the broker: it cannot connect."""
    store = Store.open(data)
    try:
        assert store.device(device)["status"] == "revoked"
    finally:
        store.close()
    with chain_for(data, None) as chain:
        assert chain.device(bytes.fromhex(device))["active"] is False
    assert device not in Credentials(broker.dir).users()
    client = Client(broker.port, device, password)
    try:
        assert client.refused == "Not authorized"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def test_registering_on_the_admin_api_gives_a_device_that_can_connect(tmp_path, site):
    data, config, broker, url, fingerprint, _ = site
    admin = Gateway(url, fingerprint)
    admin.login(open(os.path.join(data, "admin-password")).read().strip())
    ident = Identity.create(os.urandom)
    body = {"public_key": ident.public.hex(), "name": "from-the-page"}
    # 503 (nothing done) until the gateway has connected to its chain, just after it started
    status, answer = wait_for(lambda: (lambda r: r[0] != 503 and r)(
        admin.request("POST", "/api/devices", body)), timeout=60, interval=1,
        what="the gateway's chain")
    assert status == 201, answer
    assert answer["id"] == ident.hex and answer["mqtt_user"] == ident.hex
    assert answer["broker"] == broker.url
    client = Client(broker.port, answer["mqtt_user"], answer["mqtt_password"])
    try:
        assert client.refused is None
        client.publish("ek/%s/up/t" % ident.hex, b"x")    # its own uplink: the ACL lets it
    finally:
        client.close()
    status, again = admin.request("POST", "/api/devices", {"public_key": ident.public.hex()})
    assert status == 409 and "already registered" in again["error"]
    with chain_for(data, None) as chain:
        assert chain.device(bytes.fromhex(ident.hex))["active"]
    admin.call("POST", "/api/devices/%s/revoke" % ident.hex, {})
    refused = Client(broker.port, answer["mqtt_user"], answer["mqtt_password"])
    assert refused.refused == "Not authorized"
    refused.close()


def test_decommission_with_the_admin_password_instead_of_a_token(tmp_path, site):
    data, config, broker, url, fingerprint, _ = site
    machine = Machine(tmp_path / "laptop", data)
    issue(config, str(tmp_path / "token"))
    token = machine.receive("token", str(tmp_path / "token"))
    password = machine.receive("admin-password", os.path.join(data, "admin-password"))
    wrong = os.path.join(machine.home, "wrong")
    with open(wrong, "w") as f:
        f.write("not the password\n")
    with open(tmp_path / "device.log", "ab") as dlog, \
            VirtualDevice(str(tmp_path / "flash"), board="esp32", log=dlog) as dev:
        r = machine.flash("provision", "--port", dev.port, "--gateway", url, "--token-file",
                          token, "--fingerprint", fingerprint, "--owner-keyring",
                          os.path.join(machine.home, "owner.keyring"))
        assert r.returncode == 0, r.stdout + r.stderr
        device = re.search(r"provisioned device (\w+)", r.stdout).group(1)
        account = json.load(open(os.path.join(dev.directory, "config.json")))
        connected = Client(broker.port, device, account["mqtt_password"])
        assert connected.refused is None
        connected.close()

        assert_error(machine.flash("decommission", "--port", dev.port), "no gateway was given",
                     "--gateway https://HOST:PORT")
        assert_error(machine.flash("decommission", "--port", dev.port, "--gateway", url,
                                   "--fingerprint", fingerprint, "--admin-password-file", wrong),
                     "refused the admin password", "--admin-password-file")
        assert os.path.exists(os.path.join(dev.directory, "identity.json"))   # left as it was
        r = machine.flash("decommission", "--port", dev.port, "--gateway", url,
                          "--fingerprint", fingerprint, "--admin-password-file", password)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(os.path.join(dev.directory, "identity.json"))
    assert_revoked(data, broker, device, account["mqtt_password"])


def test_on_the_gateway_host_force_and_decommission_revoke_through_the_data_dir(tmp_path):
    """The local route (--gateway-data-dir) revokes too: the identity --force replaces, and
    the device decommission wipes."""
    from gateway.chain import node
    data = str(tmp_path / "gw")
    Store.open(data).close()
    node.ensure_running(data, block_time=1)   # one anvil for every command of the test
    env = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")
    try:
        with Mosquitto(os.path.join(data, "broker"), auth=True) as broker, \
                open(tmp_path / "device.log", "ab") as dlog, \
                VirtualDevice(str(tmp_path / "flash"), board="esp32", log=dlog) as dev:
            def provision(*extra):
                return subprocess.run(FLASH + [
                    "provision", "--port", dev.port, "--gateway", broker.url,
                    "--gateway-data-dir", data, "--owner-keyring", str(tmp_path / "keyring"),
                    *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            r = provision()
            assert r.returncode == 0, r.stdout + r.stderr
            first = re.search(r"provisioned device (\w+)", r.stdout).group(1)
            first_password = json.load(open(os.path.join(dev.directory, "config.json")))[
                "mqtt_password"]
            r = provision("--force")
            assert r.returncode == 0, r.stdout + r.stderr
            second = re.search(r"provisioned device (\w+)", r.stdout).group(1)
            assert "revoked %s (gateway, broker account, chain)" % first in r.stdout
            assert_revoked(data, broker, first, first_password)
            second_password = json.load(open(os.path.join(dev.directory, "config.json")))[
                "mqtt_password"]
            r = subprocess.run(FLASH + ["decommission", "--port", dev.port,
                                        "--gateway-data-dir", data],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            assert not os.path.exists(os.path.join(dev.directory, "identity.json"))
            assert_revoked(data, broker, second, second_password)
    finally:
        node.stop_running(data)

