"""The gateway never stops silently, over real Mosquitto and anvil: a full disk pauses the
ingest and it resumes by itself; `gateway run` starts with the chain down and anchors when
it comes up; a component that raises is restarted and counted."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from agent import sim
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.config import ChainConfig, Config
from gateway.keeper.verify import Verifier
from gateway.localhost import free_port
from gateway.service import Gateway
from gateway.store.database import Store
from tests.helpers.e2e import assert_stored_exactly_once, cli, ledger
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

PASSPHRASE = "owner secret"


def get(url):
    """(status, body text) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def mount_small_fs(path, size="24m"):
    """A real small filesystem (tmpfs) at path; False, with the reason printed, if this
    machine does not let the test mount one (then the test injects the errors)."""
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path],
                           capture_output=True, text=True, timeout=30)
    except OSError as e:
        print("no tmpfs (%s): injecting ENOSPC instead" % e)
        return False
    if r.returncode != 0:
        print("no tmpfs (mount: %s): injecting ENOSPC instead" % r.stderr.strip())
        return False
    return True


def fill(path, leave=0):
    """Write a file until the filesystem has at most `leave` bytes free (ENOSPC ends it)."""
    block = b"\0" * 65536
    with open(path, "ab") as f:
        try:
            while os.statvfs(path).f_bavail * os.statvfs(path).f_frsize > leave + len(block):
                f.write(block)
                f.flush()
            f.write(block[:max(0, os.statvfs(path).f_bavail * os.statvfs(path).f_frsize - leave)])
            f.flush()
        except OSError:
            pass


@pytest.fixture
def anvil(tmp_path):
    a = Anvil(str(tmp_path / "anvil"), block_time=1).start()
    yield a
    a.stop()


def key_file(tmp_path):
    path = tmp_path / "chain.key"
    path.write_text(DEFAULT_DEV_KEY + "\n")
    return str(path)


def provision(tmp_path, data, chain, n):
    """n simulated trackers under tmp_path/devices, registered in data's store and on chain,
    and the owner's keyring; (keys dir, keyring, passphrase file)."""
    keys = str(tmp_path / "devices")
    store = Store.open(data)
    for i, path in enumerate(sim.tracker_dirs(keys, n)):
        ident = sim.provision_dir(path, "tracker-%d" % (i + 1))
        registry.register(store, chain, ident.public, "tracker-%d" % (i + 1))
    sim.write_device_list(keys, n)
    store.close()
    keyring = str(tmp_path / "owner.keyring")
    r = cli("gateway", "keyring", "--keyring", keyring, "--from-dir", keys,
            env=dict(ENV, EDGEKEEP_PASSPHRASE=PASSPHRASE))
    assert r.returncode == 0, r.stderr
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    return keys, keyring, str(passfile)


def trackers(keys, broker, n, duration, record, log):
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "sim", "--trackers", str(n), "--broker", broker.url,
         "--keys", keys, "--duration", str(duration), "--sample-interval", "0.5",
         "--upload-interval", "1", "--record", record],
        cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def assert_no_failures(data, chain):
    store = Store.open(data)
    try:
        result = Verifier(store, chain).run(store.messages())
        assert result.checked == store.message_count() > 0
        assert result.counts["failed"] == 0, [v for v in result.verdicts if v[1].status == "failed"]
    finally:
        store.close()


def ingest_state(gw):
    return gw.health.snapshot()["ingest"]


def test_disk_full_pauses_the_ingest_and_it_resumes(tmp_path, broker, anvil):
    disk = str(tmp_path / "disk")
    real = mount_small_fs(disk)
    data = os.path.join(disk, "gw")
    os.makedirs(data, exist_ok=True)
    chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
    keys, keyring, passfile = provision(tmp_path, data, chain, 3)
    record = str(tmp_path / "produced.jsonl")
    cfg = Config(data_dir=data, broker=broker.url, epoch_seconds=2, web_port=0,
                 homeassistant=False, min_free_bytes=0,
                 chain=ChainConfig(rpc_url=anvil.rpc_url, private_key_file=key_file(tmp_path)))
    gw = Gateway(cfg, exit_on_fatal=False)
    log = open(tmp_path / "devices.log", "ab")
    devices = None
    filler = os.path.join(disk, "filler")
    injected = {"full": False}
    try:
        gw.start()
        gw.wait_chain(60)
        url = gw.web.url
        monitor = gw.web.app.state.monitor
        if not real:  # the fallback: the batch's and the seal's writes fail as on a full disk
            import sqlite3
            process, seal = gw.ingest.process, gw.ingest.seal_epoch

            def failing(real_fn):
                def call(*a):
                    if injected["full"]:
                        raise sqlite3.OperationalError("database or disk is full")
                    return real_fn(*a)
                return call
            gw.ingest.process, gw.ingest.seal_epoch = failing(process), failing(seal)
        devices = trackers(keys, broker, 3, 40, record, log)
        store = Store.connect(data)
        wait_for(lambda: store.message_count() >= 10, timeout=60, what="messages before the fill")

        # 1. the disk fills up: a write fails, the ingest pauses and says why everywhere
        if real:
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commit must grow it
            fill(filler)
        else:
            injected["full"] = True
        wait_for(lambda: ingest_state(gw)["state"] == "paused", timeout=90, what="the pause")
        assert ingest_state(gw)["reason"] == "disk_full"
        assert "disk full" in ingest_state(gw)["detail"]
        status, body = get(url + "healthz")
        assert status == 503 and "disk full" in json.loads(body)["reason"], body
        wait_for(lambda: 'edgekeep_ingest_paused{reason="disk_full"} 1.0' in get(url + "metrics")[1],
                 timeout=10, what="the pause in /metrics")
        wait_for(lambda: monitor.snapshot["components"]["ingest"]["state"] == "paused",
                 timeout=10, what="the pause in the status snapshot")
        held = store.message_count()
        time.sleep(4)
        assert store.message_count() == held, "stored while paused"
        assert gw.ingest._worker.is_alive()
        assert ingest_state(gw)["restarts"] == 0 and ingest_state(gw)["errors"] == 0

        # 2. space is freed: the ingest resumes by itself and catches up
        if real:
            os.unlink(filler)
        else:
            injected["full"] = False
        wait_for(lambda: ingest_state(gw)["state"] == "alive", timeout=90, what="the resume")
        wait_for(lambda: store.message_count() > held, timeout=30, what="storing again")
        assert get(url + "healthz")[0] == 200
        wait_for(lambda: 'edgekeep_ingest_paused{reason="disk_full"} 0.0' in get(url + "metrics")[1],
                 timeout=10, what="the resume in /metrics")

        # 3. below the free-space minimum: paused before any write fails, then resumed
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        gw.ingest.min_free_bytes = free + (64 << 20)
        if not real:
            gw.ingest._free_bytes = lambda: 1 << 20
        wait_for(lambda: ingest_state(gw)["state"] == "paused", timeout=10, what="the minimum")
        assert "MB free" in ingest_state(gw)["detail"]
        gw.ingest.min_free_bytes = 0
        wait_for(lambda: ingest_state(gw)["state"] == "alive", timeout=10, what="the resume")

        assert devices.wait(180) == 0
        devices = None
        gw.stop()
        gw = None
        assert_stored_exactly_once(data, ledger(record), keyring, passfile)
        store2 = Store.open(data)
        assert [g for d in ledger(record) for g in store2.gaps(d)] == []
        store2.close()
        assert_no_failures(data, chain)
    finally:
        if devices:
            devices.kill()
        if gw:
            gw.stop()
        if real:
            subprocess.run(["umount", "-l", disk], capture_output=True)


def test_gateway_run_starts_without_the_chain_and_anchors_when_it_comes(tmp_path, broker):
    port = free_port()
    data = str(tmp_path / "gw")
    rpc = "http://127.0.0.1:%d" % port
    config = tmp_path / "gateway.toml"
    config.write_text('data_dir = "%s"\nbroker = "%s"\nepoch_seconds = 2\nweb_port = 0\n'
                      'homeassistant = false\n[chain]\nrpc_url = "%s"\nprivate_key_file = "%s"\n'
                      % (data, broker.url, rpc, key_file(tmp_path)))
    keys = str(tmp_path / "devices")
    store = Store.open(data)
    for i, path in enumerate(sim.tracker_dirs(keys, 2)):  # in the store only: no chain yet
        ident = sim.provision_dir(path, "tracker-%d" % (i + 1))
        store.add_device(ident.hex, ident.public, "tracker-%d" % (i + 1))
    sim.write_device_list(keys, 2)
    log_path = tmp_path / "gateway.log"
    log = open(log_path, "ab")
    gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                          cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    devices = anvil = None
    try:
        devices = trackers(keys, broker, 2, 12, str(tmp_path / "produced.jsonl"), log)
        wait_for(lambda: store.message_count() >= 5, timeout=60, what="messages stored, no chain")
        assert gw.poll() is None, log_path.read_text()[-3000:]
        wait_for(lambda: store.epochs(), timeout=30, what="an epoch sealed")
        assert all(e["status"] != "mined" for e in store.epochs())
        url = wait_for(lambda: _admin_url(log_path), timeout=10, what="the admin page's URL")
        comps = json.loads(get(url + "healthz")[1])["components"]
        assert comps["anchor"]["state"] == "waiting", comps

        anvil = Anvil(str(tmp_path / "anvil"), port=port, block_time=1).start()
        assert devices.wait(120) == 0
        devices = None
        wait_for(lambda: store.epochs() and store.pending_epochs() == 0, timeout=120,
                 what="every epoch anchored")
        assert gw.poll() is None
        gw.terminate()
        assert gw.wait(120) == 0
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
        for d in store.devices():  # registered on chain now, so that verify can check keys
            registry.register(store, chain, d["public_key"], d["name"])
        assert_no_failures(data, chain)
    finally:
        if devices:
            devices.kill()
        if gw.poll() is None:
            gw.kill()
        if anvil:
            anvil.stop()


def _admin_url(log_path):
    for line in log_path.read_text(errors="replace").splitlines():
        if "admin page http" in line:
            return line.split("admin page ", 1)[1].split()[0]
    return None


def test_a_component_that_raises_is_restarted_and_counted(tmp_path, broker, anvil, monkeypatch):
    from gateway.anchor import epochs
    data = str(tmp_path / "gw")
    Store.open(data).close()
    cfg = Config(data_dir=data, broker=broker.url, epoch_seconds=2, web_port=0,
                 homeassistant=False,
                 chain=ChainConfig(rpc_url=anvil.rpc_url, private_key_file=key_file(tmp_path)))
    real_step = epochs.Anchorer.step
    raised = []

    def step(self):
        if len(raised) < 2:
            raised.append(1)
            raise RuntimeError("injected failure %d" % len(raised))
        return real_step(self)
    monkeypatch.setattr(epochs.Anchorer, "step", step)
    gw = Gateway(cfg, exit_on_fatal=False)
    gw.health.backoff_first = 0.2
    gw.start()
    try:
        url = gw.web.url
        wait_for(lambda: len(raised) == 2 and gw.health.snapshot()["anchor"]["state"] == "alive",
                 timeout=60, what="the anchor restarted twice")
        anchor = gw.health.snapshot()["anchor"]
        assert anchor["restarts"] == 2 and anchor["errors"] == 2
        assert "injected failure 2" in anchor["last_error"]
        assert gw.anchorer.thread.is_alive()
        wait_for(lambda: 'edgekeep_component_restarts_total{component="anchor"} 2.0'
                 in get(url + "metrics")[1], timeout=10, what="the restarts in /metrics")
        text = get(url + "metrics")[1]
        assert 'edgekeep_component_up{component="anchor"} 1.0' in text
        assert 'edgekeep_component_up{component="ingest"} 1.0' in text
        status, body = get(url + "healthz")
        assert status == 200, body
        assert json.loads(body)["components"]["anchor"]["restarts"] == 2
        assert gw.health.fatal_reason is None
    finally:
        gw.stop()
