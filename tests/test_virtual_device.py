"""The virtual device end to end: provision -> deploy -> boot -> data at the gateway ->
`gateway verify --all`; the device's secret is nowhere but on the device; and the official
mpremote CLI works against it unchanged."""
import json
import os
import subprocess
import sys
import time

import pytest

from gateway.config import Config
from gateway.store.database import Store
from tests.helpers.wait import wait_for
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
MPREMOTE = [sys.executable, "-m", "mpremote"]


def run(*args, env=ENV, timeout=120, **kw):
    return subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def flash(*args, **kw):
    return run(sys.executable, os.path.join(REPO, "tools", "flash.py"), *args, **kw)


@pytest.fixture
def device(tmp_path):
    with open(tmp_path / "virtual-device.log", "ab") as log:
        with VirtualDevice(str(tmp_path / "flash"), board="esp32", log=log) as dev:
            yield dev


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release key and an esp32 bundle signed with it."""
    d = tmp_path_factory.mktemp("release")
    key = str(d / "release.key")
    r = run(sys.executable, "-m", "firmware", "keygen", "--out", key)
    assert r.returncode == 0, r.stderr
    r = run(sys.executable, "-m", "firmware", "build", "--board", "esp32", "--sign-key", key,
            "--version", "9.9.9", "--out", str(d / "bundle"))
    assert r.returncode == 0, r.stderr
    return {"key": key, "pub": key + ".pub", "bundle": str(d / "bundle")}


def files_under(*dirs):
    for top in dirs:
        for parent, _, names in os.walk(top):
            for name in names:
                yield os.path.join(parent, name)


def test_provision_deploy_boot_reaches_the_gateway_and_verifies(tmp_path, device, release, broker):
    data = str(tmp_path / "gateway")
    keyring = str(tmp_path / "owner" / "keyring.json")
    os.makedirs(os.path.dirname(keyring))
    env = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")

    r = flash("provision", "--port", device.port, "--gateway", broker.url, "--gateway-data-dir",
              data, "--name", "virtual-1", "--owner-keyring", keyring, "--interval", "0.5",
              "--upload-interval", "1.5", "--duration", "12", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "registered" in r.stdout
    identity = json.load(open(os.path.join(device.directory, "identity.json")))
    secret = bytes.fromhex(identity["sk"])

    config = tmp_path / "gateway.toml"
    config.write_text('data_dir = "%s"\nbroker = "%s"\nepoch_seconds = 2\nweb_port = 0\n'
                      '[chain]\nblock_time = 1\n'
                      % (data, broker.url))
    assert Config.load(str(config)).data_dir == data
    with open(tmp_path / "gateway.log", "ab") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                   cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        r = flash("deploy", "--port", device.port, "--release-key", release["pub"], release["bundle"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "deployed esp32 9.9.9" in r.stdout
        store = Store.open(data)
        wait_for(lambda: store.message_count() >= 3, timeout=60, what="the device's messages")
        time.sleep(4)  # an epoch closes and is anchored (epoch_seconds = 2, block_time = 1)
        store.close()
    finally:
        gateway.terminate()
        gateway.wait(30)

    r = run(sys.executable, "-m", "gateway", "verify", "--data-dir", data, "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified" in r.stdout

    # The secret is on the device's flash and nowhere else: not on the host's side of
    # provisioning (keyring, bundle, logs) nor in the gateway's files.
    assert len(secret) == 32
    patterns = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    leaks = [path for path in files_under(str(tmp_path), release["bundle"])
             if not path.startswith(device.directory)
             for p in patterns if p in open(path, "rb").read()]
    assert leaks == []
    assert any(p in open(os.path.join(device.directory, "identity.json"), "rb").read()
               for p in patterns)


def test_official_mpremote_cli_works_unchanged(tmp_path, device):
    src = tmp_path / "hello.py"
    src.write_bytes(b"print('hello from the flash')\n" + os.urandom(2000).hex().encode() + b"\n")
    port = ["connect", device.port]

    r = run(*MPREMOTE, *port, "exec", "import sys; print(sys.implementation.name)")
    assert r.returncode == 0 and r.stdout.strip() == "micropython", r.stderr
    r = run(*MPREMOTE, *port, "cp", str(src), ":hello.py")
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(device.directory, "hello.py"), "rb").read() == src.read_bytes()
    r = run(*MPREMOTE, *port, "ls", ":")
    assert r.returncode == 0 and "%12d hello.py" % len(src.read_bytes()) in r.stdout, \
        r.stdout + r.stderr  # with its size, as a board's littlefs lists it
    r = run(*MPREMOTE, *port, "cat", ":hello.py")
    assert r.returncode == 0 and r.stdout.startswith("print('hello from the flash')"), r.stderr
    import hashlib
    r = run(*MPREMOTE, *port, "sha256sum", ":hello.py")
    assert r.returncode == 0 and hashlib.sha256(src.read_bytes()).hexdigest() in r.stdout
    r = run(*MPREMOTE, *port, "cp", str(src), ":hello.py")
    assert r.returncode == 0 and "Up to date" in r.stdout  # cp skips a file whose sha256 matches
    r = run(*MPREMOTE, *port, "cat", ":missing.py")
    assert r.returncode != 0 and "No such file" in r.stdout + r.stderr


def test_flash_persists_and_main_runs_at_boot(tmp_path):
    flash_dir = tmp_path / "flash"
    flash_dir.mkdir()
    (flash_dir / "main.py").write_text("print('booted', 6 * 7)\n")
    with open(tmp_path / "log", "ab") as log, VirtualDevice(str(flash_dir), log=log) as dev:
        r = run(*MPREMOTE, "connect", dev.port, "exec", "open('note.txt', 'w').write('kept')")
        assert r.returncode == 0, r.stderr
        r = run(*MPREMOTE, "connect", dev.port, "reset")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: dev.resets >= 2, what="the reset")
    assert (flash_dir / "note.txt").read_text() == "kept"
    with open(tmp_path / "log", "ab") as log, VirtualDevice(str(flash_dir), log=log) as dev:
        r = run(*MPREMOTE, "connect", dev.port, "cat", ":note.txt")
        assert r.returncode == 0 and r.stdout == "kept", r.stderr


def test_cli_prints_the_pty_path(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "flash.py"),
                             "virtual-device", "--dir", str(tmp_path / "d"), "--board", "pebble"],
                            cwd=REPO, env=dict(ENV, EDGEKEEP_VIRTUAL_DEVICES=str(tmp_path / "reg")),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        r = run(*MPREMOTE, "connect", port, "exec", "import os; print(os.uname().machine)")
        assert r.returncode == 0 and "NRF9160" in r.stdout, r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
