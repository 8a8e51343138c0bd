"""A virtual device that runs the agent against a real gateway (`gateway run` on a test
broker), for tests that use the device while its agent runs: provisioning, release bundles,
the gateway's message count, and `gateway verify --all` at the end."""
import os
import subprocess
import sys

from gateway.store.database import Store
from tests.helpers.e2e import start_gateway, write_config
from tests.helpers.paths import ENV, REPO, cli
from tests.helpers.wait import wait_for

FLASH = [sys.executable, os.path.join(REPO, "tools", "flash.py")]
MPREMOTE = [sys.executable, "-m", "mpremote"]
PASSPHRASE_ENV = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")


def run(*args, timeout=120, env=PASSPHRASE_ENV, text=True):
    return subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=text,
                          timeout=timeout)


def mpremote(port, *args, timeout=120, text=True):
    """text=False: the bytes as they came, line endings included."""
    return run(*MPREMOTE, "connect", port, *args, timeout=timeout, text=text)


def flash(*args, timeout=180):
    return run(*FLASH, *args, timeout=timeout)


def release(directory, versions, board="esp32"):
    """A release key in directory and one signed bundle per version: {"pub", version: dir}."""
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, "release.key")
    out = {"pub": key + ".pub"}
    r = cli("firmware", "keygen", "--out", key)
    assert r.returncode == 0, r.stderr
    for version in versions:
        out[version] = os.path.join(directory, "bundle-" + version)
        r = cli("firmware", "build", "--board", board, "--sign-key", key, "--version", version,
                "--out", out[version])
        assert r.returncode == 0, r.stderr
    return out


class Gateway:
    """`gateway run` on the broker, storing in directory/data; provision(port) registers a
    device with it, as an owner would."""

    def __init__(self, directory, broker):
        self.directory = directory
        self.data = os.path.join(directory, "data")
        self.broker = broker
        self.proc = None
        self.log = None

    def provision(self, port):
        keyring = os.path.join(self.directory, "owner", "keyring.json")
        os.makedirs(os.path.dirname(keyring), exist_ok=True)
        r = flash("provision", "--port", port, "--gateway", self.broker.url, "--gateway-data-dir",
                  self.data, "--name", "virtual-1", "--owner-keyring", keyring, "--interval",
                  "0.5", "--upload-interval", "1.5")
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def start(self):
        config = write_config(os.path.join(self.directory, "gateway.toml"), self.data,
                              self.broker.url)
        self.log = open(os.path.join(self.directory, "gateway.log"), "ab")
        self.proc = start_gateway(config, self.log)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.log.close()
            self.proc = None

    def message_count(self):
        store = Store.open(self.data)
        try:
            return store.message_count()
        finally:
            store.close()

    def wait_for_messages(self, more_than, what):
        """Waits for the stored count to pass more_than: proof that the agent runs."""
        return wait_for(lambda: self.message_count() > more_than and self.message_count(),
                        timeout=90, interval=0.5, what=what)

    def verify_all(self):
        n = self.message_count()
        r = cli("gateway", "verify", "--data-dir", self.data, "--all")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "verified %d/%d" % (n, n) in r.stdout, r.stdout
