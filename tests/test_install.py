"""hw/rpi/install.sh: dry run, a staged install under --prefix, idempotency, and the staged
files put to work (systemd's own unit checker; Mosquitto started on the rendered config).

Not covered here (no root, no systemd, no Pi): apt-get, useradd, pip/npm into /opt, and
systemctl; docs/operations.md lists them.
"""
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import tomllib

import pytest

from gateway.localhost import free_port, wait_port
from gateway.mqtt.broker import GATEWAY_USER, Credentials
from tests.helpers.mqtt import Client

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "hw", "rpi", "install.sh")
UNITS = ("edgekeep-broker", "edgekeep-chain", "edgekeep-gateway")


def install(*args):
    r = subprocess.run(["sh", SCRIPT, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def tree(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (hashlib.sha256(f.read()).hexdigest(),
                                                    os.stat(path).st_mode)
    return out


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    first = install("--prefix", root, "--arch", "arm64")
    return root, first


def test_dry_run_prints_every_action_and_changes_nothing(tmp_path):
    root = os.path.join(tmp_path, "root")
    out = install("--dry-run", "--prefix", root, "--arch", "arm64")
    assert not os.path.exists(root)
    for action in ("apt-get install -y --no-install-recommends mosquitto mosquitto-clients "
                   "libisal2 nodejs npm",
                   "systemctl disable --now mosquitto.service",
                   "useradd --system --user-group --home-dir /var/lib/edgekeep",
                   "python3 -m venv /opt/edgekeep/venv",
                   "npm ci --prefix /opt/edgekeep",
                   "npm install --prefix /opt/edgekeep --no-save --no-audit --no-fund "
                   "@foundry-rs/anvil-linux-arm64@1.7.1",
                   "gateway broker init --dir /var/lib/edgekeep/broker",
                   "install -m 0644 hw/rpi/mosquitto.conf /etc/edgekeep/mosquitto.conf",
                   "install -m 0644 hw/rpi/edgekeep.logrotate /etc/logrotate.d/edgekeep",
                   "systemctl enable edgekeep-broker.service edgekeep-chain.service "
                   "edgekeep-gateway.service"):
        assert action in out, action
    amd64 = install("--dry-run", "--prefix", root, "--arch", "amd64")
    assert "anvil-linux-arm64" not in amd64 and "npm ci" in amd64


def test_bad_options_are_refused():
    r = subprocess.run(["sh", SCRIPT, "--arch", "riscv64", "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 2 and "unsupported architecture riscv64" in r.stderr
    r = subprocess.run(["sh", SCRIPT, "--frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --frobnicate" in r.stderr


def test_staged_install_lays_out_code_config_units_and_logrotate(staged):
    root, _ = staged
    for path in ("opt/edgekeep/gateway/mqtt/broker.py", "opt/edgekeep/agent/device.py",
                 "opt/edgekeep/package-lock.json", "var/lib/edgekeep/broker", "var/log/edgekeep",
                 "etc/edgekeep/mosquitto.d", "etc/logrotate.d/edgekeep",
                 "etc/systemd/journald.conf.d/edgekeep.conf"):
        assert os.path.exists(os.path.join(root, path)), path
    assert oct(os.stat(os.path.join(root, "var/lib/edgekeep")).st_mode & 0o777) == "0o750"
    assert oct(os.stat(os.path.join(root, "etc/edgekeep/chain.key")).st_mode & 0o777) == "0o640"
    with open(os.path.join(root, "etc/edgekeep/gateway.toml"), "rb") as f:
        cfg = tomllib.load(f)
    assert cfg["data_dir"] == "/var/lib/edgekeep"
    assert cfg["broker_password_file"] == "/var/lib/edgekeep/broker/gateway.secret"
    assert cfg["chain"] == {"rpc_url": "http://127.0.0.1:8545",
                            "private_key_file": "/etc/edgekeep/chain.key"}
    with open(os.path.join(root, "etc/logrotate.d/edgekeep")) as f:
        assert f.read().startswith("/var/log/edgekeep/*.log {")
    for unit in UNITS:
        with open(os.path.join(root, "etc/systemd/system/%s.service" % unit)) as f:
            text = f.read()
        assert "Restart=on-failure" in text and "User=edgekeep" in text and "@" not in text, unit


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_pass_systemds_checker(staged):
    root, _ = staged
    for unit in UNITS:
        r = subprocess.run(["systemd-analyze", "verify",
                            os.path.join(root, "etc/systemd/system/%s.service" % unit)],
                           capture_output=True, text=True)
        # The staged root has no /opt/edgekeep binaries; anything else is a unit error.
        problems = [line for line in r.stderr.splitlines()
                    if line and "/opt/edgekeep/" not in line]
        assert not problems, problems


def test_second_run_changes_nothing_and_keeps_operator_edits(staged):
    root, first = staged
    toml = os.path.join(root, "etc/edgekeep/gateway.toml")
    with open(toml, "a") as f:
        f.write("# operator's edit\n")
    before = tree(root)
    again = install("--prefix", root, "--arch", "arm64")
    assert tree(root) == before
    assert "daemon-reload" in first and "daemon-reload" not in again
    for path in ("/etc/edgekeep/mosquitto.conf", "/etc/edgekeep/gateway.toml", "/etc/edgekeep/chain.key",
                 "/etc/logrotate.d/edgekeep") + tuple("/etc/systemd/system/%s.service" % u for u in UNITS):
        assert "ok: " + path in again, path
    # Generated files are regenerated; local broker settings belong in mosquitto.d.
    conf = os.path.join(root, "etc/edgekeep/mosquitto.conf")
    with open(conf, "a") as f:
        f.write("# stray edit\n")
    assert "install -m 0644 hw/rpi/mosquitto.conf" in install("--prefix", root, "--arch", "arm64")
    assert "stray edit" not in open(conf).read()


def test_rendered_broker_config_runs_mosquitto_with_per_device_accounts(staged, tmp_path):
    root, _ = staged
    data = os.path.join(tmp_path, "data")
    logs = os.path.join(tmp_path, "log")
    os.makedirs(logs)
    creds = Credentials(os.path.join(data, "broker"))
    creds.init()
    port = free_port()
    with open(os.path.join(root, "etc/edgekeep/mosquitto.conf")) as f:
        conf = (f.read().replace("/var/lib/edgekeep", data).replace("/var/log/edgekeep", logs)
                .replace("/etc/edgekeep", os.path.join(root, "etc/edgekeep"))
                .replace("listener 1883", "listener %d 127.0.0.1" % port)
                .replace("user edgekeep", "user %s" % pwd.getpwuid(os.geteuid()).pw_name))
    conf_path = os.path.join(tmp_path, "mosquitto.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf_path], stderr=subprocess.PIPE)
    clients = []
    try:
        assert wait_port("127.0.0.1", port, 10), "mosquitto did not start on the rendered config"
        gw = Client(port, GATEWAY_USER, creds.gateway_password())
        clients.append(gw)
        assert gw.refused is None
        dev = "0123456789abcdef"
        ok = Client(port, dev, creds.add_device(dev))       # reload through the pid file
        clients.append(ok)
        assert ok.refused is None
        anon = Client(port, None, None)
        clients.append(anon)
        assert anon.refused == "Not authorized"
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(10)
