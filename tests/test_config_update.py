"""Settings without a new identity (issue #18, 3): `edgekeep devices config` over the air to
the agent on real MicroPython (the WebAssembly build, compiled as deployed), through the
gateway's own broker account on Mosquitto with accounts, the real ingest storing what the
device says; and `edgekeep-flash config` over USB on the virtual device.

machine.reset() ends the device's process with status 100 and tests/test_ota.py's Board
starts it again, as a board reboots."""
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import types

import cbor2
import pytest

from agent import config_update as cu
from agent.identity import Identity
from agent.readings import Batch
from agent.runtime.micropython import EXIT_RESET
from firmware import bundle, signing
from gateway.ingest import device_config
from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import GATEWAY_USER, Mosquitto
from gateway.store.database import Store
from gateway.wire import protocol
from tests.helpers.mqtt import Client
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for
from tests.test_ota import Board, assert_fix

PASSWORD = "correct horse battery"


# -- the device's side, in process (CPython) -----------------------------------------

class Flash:
    """A device's flash (the working directory) with config.json and gateway.pub, and the
    agent's side Configs (agent/config_update.py) sees: its reports and (machine.reset,
    faked: hardware) restarts recorded."""

    lost = None
    transport = types.SimpleNamespace(connected=False)
    log = staticmethod(print)
    batch = Batch(8)
    updater = None   # the OTA updater Configs stands in for (not used here)

    def __init__(self, path, gateway_dir):
        self.identity = self.ident = Identity.create(os.urandom)
        self.key = device_config.config_key(gateway_dir)
        (path / cu.GATEWAY_KEY).write_text(device_config.public_hex(gateway_dir) + "\n")
        (path / cu.CONFIG).write_text(json.dumps({"broker": "mqtt://10.0.0.2:1883",
                                                  "sample_interval": 10}))
        self.reports, self.notes, self.restarts = [], {}, []
        self.configs = self.boot()

    def boot(self):
        configs = cu.Configs(self)
        configs.resume()
        return configs

    def seal_ota(self, report):
        self.reports.append(report)

    def message(self, version, settings, key=None, trial=None):
        return device_config.message(key or self.key, self.ident.public, version, settings, trial)


@pytest.fixture
def flash(tmp_path, monkeypatch):
    (tmp_path / "device").mkdir()
    monkeypatch.chdir(tmp_path / "device")
    device = Flash(tmp_path / "device", str(tmp_path / "gateway"))
    monkeypatch.setattr(cu, "reset", lambda: device.restarts.append(1))
    return device


def config():
    with open(cu.CONFIG) as f:
        return json.load(f)


@pytest.mark.unit
def test_a_signed_change_is_staged_on_trial_and_confirmed_by_an_ack(flash):
    flash.configs.take(flash.message(7, {"broker_port": 1884, "upload_interval": 60}))
    assert config() == {"broker": "mqtt://10.0.0.2:1884", "sample_interval": 10,
                        "upload_interval": 60}
    assert json.load(open(cu.PREVIOUS))["broker"] == "mqtt://10.0.0.2:1883"
    assert flash.reports == [{"cfg": 7, "st": "applying",
                              "set": ["broker_port", "upload_interval"]}]
    assert not flash.configs.confirm()  # an ack before the restart: the new config is not running
    flash.configs.check()
    assert flash.restarts == [1]
    configs = flash.boot()           # the reboot into it: on trial until the first ack
    assert configs.confirm() and not configs.confirm()
    assert flash.reports[-1] == {"cfg": 7, "st": "applied"}
    assert flash.notes["cfg"] == "applied 7"
    assert not os.path.exists(cu.PREVIOUS) and not os.path.exists(cu.TRIAL)


@pytest.mark.unit
def test_a_change_without_an_ack_in_its_trial_time_is_rolled_back(flash):
    flash.configs.take(flash.message(3, {"broker_host": "gone.example"}, trial=30))
    configs = flash.boot()
    configs.started -= 31            # its trial time has passed without an ack
    configs.check()
    assert config()["broker"] == "mqtt://10.0.0.2:1883" and flash.restarts == [1]
    flash.boot()                     # the old config's boot reports it, once
    assert flash.reports[-1] == {"cfg": 3, "st": "rolled back", "why": "no ack from the "
                                 "gateway within 30 s (never connected to "
                                 "mqtt://gone.example:1883)"}
    assert flash.notes["cfg"] == "rolled back 3" and not os.path.exists(cu.TRIAL)
    flash.boot()
    assert [r["st"] for r in flash.reports] == ["applying", "rolled back"]


@pytest.mark.unit
def test_the_wifi_password_travels_sealed_to_the_device_alone(flash, tmp_path, monkeypatch):
    msg = flash.message(4, {"wifi_ssid": "attic", "wifi_password": PASSWORD})
    assert PASSWORD.encode() not in msg
    flash.configs.take(msg)
    assert config()["wifi"] == {"ssid": "attic", "password": PASSWORD}
    assert "wifi_password" in flash.reports[0]["set"] and PASSWORD not in repr(flash.reports)
    # The sealed part, signed anew for another device (as a rogue gateway with the key
    # could): that device cannot open it.
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    other = Flash(tmp_path / "other", str(tmp_path / "gateway"))
    body = cbor2.loads(cbor2.loads(msg)[cu.MSG_BODY])
    body[cu.BODY_DEVICE], body[cu.BODY_CONFIG] = other.ident.device_id, 5
    raw = cbor2.dumps(body)
    other.configs.take(cbor2.dumps({cu.MSG_VERSION: cu.VERSION, cu.MSG_BODY: raw,
                                       cu.MSG_SIGNATURE: signing.sign(other.key, raw)}))
    assert other.reports[0]["st"] == "refused" and "does not open" in other.reports[0]["why"]
    assert "wifi" not in config()


@pytest.mark.unit
def test_forged_replayed_foreign_and_invalid_changes_are_refused_and_counted(flash, tmp_path):
    before = config()
    rogue = device_config.config_key(str(tmp_path / "rogue"))
    other = Identity.create(os.urandom)
    good = flash.message(10, {"sample_interval": 5})
    cases = [
        (flash.message(11, {"sample_interval": 5}, key=rogue), "bad signature"),
        (device_config.message(flash.key, other.public, 12, {"apn": "x"}), "another device"),
        (flash.message(13, {"mqtt_password": "x"}), "not a setting"),
        (flash.message(14, {"sample_interval": 0}), "sample_interval 0 is not"),
        (flash.message(15, {"broker_host": "a:1"}), "not a host name"),
    ]
    for msg, why in cases:
        assert flash.configs.take(msg) is True
        assert why in flash.reports[-1]["why"] and flash.reports[-1]["st"] == "refused"
    assert config() == before
    assert flash.notes["cfgref"] == {"signature": 1, "device": 1, "invalid": 3}
    flash.configs.take(good)
    flash.configs = flash.boot()     # counts are since boot, as health "bad"
    flash.configs.confirm()
    assert flash.configs.take(good) is True             # the same message again
    assert flash.reports[-1]["why"] == "version 10 is not above 10, the last taken"
    assert flash.configs.take(flash.message(9, {"apn": "x"})) is True
    assert flash.notes["cfgref"] == {"replay": 2}
    assert config() == dict(before, sample_interval=5)
    for payload in (b"", b"\xa0", cbor2.dumps({0: 1, 1: b"x"}), cbor2.dumps([1, 2, 3])):
        with pytest.raises(ValueError):  # the agent counts it as a bad downlink
            flash.configs.take(payload)


# -- over the air, on real MicroPython -------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The agent as deployed: a signed esp32 bundle (compiled modules, main.py)."""
    d = tmp_path_factory.mktemp("release")
    signing.keygen(str(d / "release.key"))
    bundle.build("esp32", str(d / "bundle"), "0.1.0", str(d / "release.key"))
    return str(d / "bundle")


@pytest.fixture
def site(tmp_path, release):
    """A gateway (its broker with accounts, store, ingest) and one provisioned device whose
    gateway.pub is the gateway's config key."""
    data = str(tmp_path / "gw")
    with Mosquitto(os.path.join(data, "broker"), auth=True) as broker:
        with running_site(tmp_path, release, broker, data) as s:
            yield s


@contextlib.contextmanager
def running_site(tmp_path, release, broker, data):
    with contextlib.ExitStack() as stack:
        yield make_site(stack, tmp_path, release, broker, data)


def make_site(stack, tmp_path, release, broker, data):
    """The site; stack stops its boards, its ingest and its store."""
    flash = tmp_path / "flash"
    shutil.copytree(release, flash, ignore=shutil.ignore_patterns(bundle.SIGNATURE))
    ident = Identity.create(os.urandom)
    ident.save(str(flash / "identity.json"))
    store = Store.open(data)
    stack.callback(store.close)
    store.add_device(ident.hex, ident.public, "t1")
    (flash / cu.GATEWAY_KEY).write_text(device_config.public_hex(data) + "\n")
    (flash / cu.CONFIG).write_text(json.dumps({
        "broker": broker.url, "board": "sim", "mqtt_user": ident.hex,
        "mqtt_password": broker.add_device_credentials(ident.hex),
        "sample_interval": 1, "upload_interval": 3, "status_every": 100}))
    ingest = Ingest(data, broker.url, epoch_seconds=3600, username=GATEWAY_USER,
                    password=broker.gateway_password())
    ingest.start()
    stack.callback(ingest.stop)
    boards = []
    stack.callback(lambda: [b.stop() for b in boards])

    class Site:
        device = ident.hex
        public = ident.public

        def boot(self):
            boards.append(Board(str(flash), str(tmp_path / "device.log")).start())
            return boards[-1]

        def send(self, *args, timeout=240):
            r = subprocess.run([sys.executable, "-m", "gateway", "devices", "config",
                                "--data-dir", data, "--device", ident.hex, *args], cwd=REPO,
                               env=ENV, capture_output=True, text=True, timeout=timeout)
            return r.returncode, r.stdout + r.stderr

        def health(self):
            return store.device(ident.hex)["health"] or {}

        def reports(self):
            """The device's `o` reports as stored, each checked against its key."""
            key = protocol.load_public_key(ident.public)
            out = []
            for m in store.messages(device=ident.hex, kind="o"):
                signed = protocol.parse("ek/%s/up/o" % ident.hex, m["raw"], 65536)
                protocol.verify_signature(signed, key)
                out.append(dict(protocol.open_envelope(signed).health))
            return out

        def telemetry(self):
            return store.messages(device=ident.hex, kind="t")

        def config(self):
            return json.loads((flash / cu.CONFIG).read_text())

        def log(self):
            path = tmp_path / "device.log"
            return path.read_text()[-3000:] if path.exists() else ""

    s = Site()
    s.flash, s.broker, s.data, s.store = flash, broker, data, store
    return s


def wait_for_status(site, **want):
    try:
        return wait_for(lambda: all(site.health().get(k) == v for k, v in want.items()),
                        timeout=90, what="a status with %s" % want)
    except AssertionError as e:
        raise AssertionError("%s; health %s; device log: %s" % (e, site.health(), site.log()))


def assert_all_verify(site, messages):
    key = protocol.load_public_key(site.public)
    for m in messages:
        signed = protocol.parse("ek/%s/up/t" % site.device, m["raw"], 65536)
        protocol.verify_signature(signed, key)


def test_a_change_to_a_dead_broker_is_rolled_back_and_reported(site):
    board = site.boot()
    wait_for(site.telemetry, timeout=90, what="telemetry (log: %s)" % site.log())
    before = site.config()
    dead = free_port()
    rc, out = site.send("--set", "broker_port=%d" % dead, "--trial", "10")
    assert rc == 1, out + site.log()
    assert "took config" in out and "restarting into it" in out, out + site.log()
    assert "rolled back config" in out and "no ack from the gateway within 10 s" in out
    assert "never connected to mqtt://127.0.0.1:%d" % dead in out, out
    assert "error: %s: config" % site.device in out
    assert_fix(out, "the device could not reach the gateway with those settings")
    # Applied (reset), then rolled back (reset): back on the real broker, with the old config.
    assert board.exits == [EXIT_RESET, EXIT_RESET]
    assert site.config() == before
    assert not (site.flash / cu.PREVIOUS).exists() and not (site.flash / cu.TRIAL).exists()
    version = [r for r in site.reports() if r.get("st") == "rolled back"][0]["cfg"]
    wait_for_status(site, cfg="rolled back %d" % version)
    stored = len(site.telemetry())
    wait_for(lambda: len(site.telemetry()) > stored + 1, timeout=60,
             what="telemetry after the rollback")
    assert_all_verify(site, site.telemetry())


def test_a_good_change_is_applied_and_survives_a_reboot(site):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    password = site.flash.parent / "wifi.txt"
    password.write_text(PASSWORD + "\n")
    rc, out = site.send("--set", "upload_interval=5", "--set", "wifi_ssid=attic",
                        "--wifi-password-file", str(password), "--trial", "60")
    assert rc == 0, out + site.log()
    assert "wifi_password=(sealed)" in out and PASSWORD not in out
    assert "applied config" in out and "error" not in out
    assert site.config()["upload_interval"] == 5
    assert site.config()["wifi"] == {"ssid": "attic", "password": PASSWORD}
    version = int(out.split("sending config ")[1].split(":")[0])
    wait_for_status(site, cfg="applied %d" % version)
    assert board.exits == [EXIT_RESET]
    assert [r["st"] for r in site.reports()] == ["applying", "applied"]
    assert PASSWORD not in site.log() and all(PASSWORD not in repr(r) for r in site.reports())
    board.stop()                         # power off, on again: the new config is the config
    board = site.boot()
    stored = len(site.telemetry())
    wait_for(lambda: len(site.telemetry()) > stored, timeout=90, what="telemetry after reboot")
    assert site.config()["upload_interval"] == 5 and board.exits == []
    assert not (site.flash / cu.TRIAL).exists() and not (site.flash / cu.PREVIOUS).exists()
    assert_all_verify(site, site.telemetry())


def test_forged_replayed_and_malformed_messages_are_refused_and_counted(site, tmp_path):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    before = site.config()
    rogue = device_config.config_key(str(tmp_path / "rogue"))
    good = device_config.message(device_config.config_key(site.data), site.public,
                                 device_config.next_version(site.data, site.device),
                                 {"status_every": 50})
    version = cbor2.loads(cbor2.loads(good)[cu.MSG_BODY])[cu.BODY_CONFIG]
    gateway = Client(site.broker.port, GATEWAY_USER, site.broker.gateway_password())
    topic = "ek/%s/down/config" % site.device
    gateway.publish(topic, good)
    wait_for_status(site, cfg="applied %d" % version)
    assert board.exits == [EXIT_RESET]
    gateway.publish(topic, device_config.message(rogue, site.public, 2 ** 31, {"apn": "evil"}))
    gateway.publish(topic, b"\xa1\x00")                          # malformed
    gateway.publish(topic, good)                                 # replayed
    gateway.close()
    health = wait_for_status(site, cfgref={"signature": 1, "replay": 1}) and site.health()
    assert health["bad"] == 1
    refused = [r["why"] for r in site.reports() if r["st"] == "refused"]
    assert refused[0] == "bad signature: not signed by this device's gateway key"
    assert refused[1] == "version %d is not above %d, the last taken" % (version, version)
    assert board.exits == [EXIT_RESET]                           # nothing else applied
    assert site.config() == dict(before, status_every=50)
    # A device that trusts another gateway's key (written while it is off): the CLI's
    # config is refused, and the fix says how to give it this gateway's key.
    board.stop()
    (site.flash / cu.GATEWAY_KEY).write_text(device_config.public_hex(str(tmp_path / "rogue")))
    stored = len(site.telemetry())
    site.boot()
    wait_for(lambda: len(site.telemetry()) > stored, timeout=90, what="telemetry after reboot")
    rc, out = site.send("--set", "apn=other")
    assert rc == 1 and "refused config" in out and "bad signature" in out, out
    assert_fix(out, "give the device this gateway's config key over USB: `edgekeep-flash "
               "config --port PORT --gateway-key %s.pub`" % device_config.key_path(site.data))


def test_cli_errors_end_with_a_fix(site, tmp_path):
    for args, fix in ((["--set", "wifi_password=x"], "--wifi-password-file FILE"),
                      (["--set", "colour=red"], "use one of broker_host"),
                      (["--set", "sample_interval=0"], "give a value the device takes"),
                      ([], "give --set KEY=VALUE"),
                      (["--set", "apn=a", "--wifi-password-file", str(tmp_path / "none")],
                       "give a file that holds the Wi-Fi password")):
        rc, out = site.send(*args, timeout=60)
        assert rc == 1, (args, out)
        assert_fix(out, fix)
    r = subprocess.run([sys.executable, "-m", "gateway", "devices", "config", "--data-dir",
                        site.data, "--device", "00" * 8, "--set", "apn=a"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is not an active device" in r.stderr
    assert_fix(r.stderr, "edgekeep devices list")


# -- over USB, on the virtual device -----------------------------------------------------

def flash_tool(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "flash.py"), *args],
                          cwd=REPO, env=dict(ENV, EDGEKEEP_PASSPHRASE="owner secret"),
                          capture_output=True, text=True, timeout=120)


def test_flash_config_changes_settings_and_keeps_the_identity(tmp_path):
    from tools.virtual_device import VirtualDevice
    with open(tmp_path / "vd.log", "ab") as log, \
            VirtualDevice(str(tmp_path / "flash"), board="esp32", log=log) as dev:
        r = flash_tool("config", "--port", dev.port, "--interval", "5")
        assert r.returncode == 1 and "not provisioned" in r.stderr, r.stderr
        assert_fix(r.stderr, "provision it first")
        r = flash_tool("provision", "--port", dev.port, "--gateway", "mqtt://127.0.0.1:1883",
                       "--owner-keyring", str(tmp_path / "keyring.json"))
        assert r.returncode == 0, r.stderr
        identity = (tmp_path / "flash" / "identity.json").read_bytes()
        password = tmp_path / "wifi.txt"
        password.write_text(PASSWORD)
        r = flash_tool("config", "--port", dev.port, "--interval", "5", "--wifi", "attic",
                       "--wifi-password-file", str(password), "--broker",
                       "mqtt://10.0.0.9:1884", "--no-reset")
        assert r.returncode == 0, r.stderr
        assert "sample_interval" in r.stdout and PASSWORD not in r.stdout + r.stderr
        cfg = json.loads((tmp_path / "flash" / "config.json").read_text())
        assert cfg["sample_interval"] == 5 and cfg["broker"] == "mqtt://10.0.0.9:1884"
        assert cfg["wifi"] == {"ssid": "attic", "password": PASSWORD}
        assert cfg["board"] == "sim" and cfg["upload_interval"] == 30   # the rest kept
        assert (tmp_path / "flash" / "identity.json").read_bytes() == identity
        gw = str(tmp_path / "gw")
        trusted = device_config.public_hex(gw)   # the gateway's config key, made at first use
        r = flash_tool("config", "--port", dev.port, "--gateway-key",
                       device_config.key_path(gw) + ".pub", "--no-reset")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "flash" / "gateway.pub").read_text().strip() == trusted
        for args, fix in ((["--interval", "0"], "give a value the device takes"),
                          (["--broker", "10.0.0.9"], "give the gateway's broker"),
                          (["--gateway-key", str(password)], "config-signing.key.pub"),
                          ([], "give a setting")):
            r = flash_tool("config", "--port", dev.port, "--no-reset", *args)
            assert r.returncode == 1, (args, r.stderr)
            assert_fix(r.stderr, fix)
        assert hashlib.sha256((tmp_path / "flash" / "identity.json").read_bytes()).digest() \
            == hashlib.sha256(identity).digest()
