"""Several ingest workers on one deployment: the lease on the one-of-a-kind jobs, and a chaos
run (workers SIGKILLed at random, the lease holder among them) that loses, duplicates and
double-anchors nothing, on SQLite and on PostgreSQL."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from gateway.chain.client import DEFAULT_DEV_KEY
from gateway.chain.node import Anvil, rpc_call
from gateway.config import Config
from gateway.store.database import Store
from gateway.store.schema import SchemaError
from gateway.store.workers import LEASE, Worker
from gateway.workers import LeaseHolder, default_name
from tests.helpers.e2e import (
    assert_stored_exactly_once,
    assert_verify_all,
    cli,
    ledger,
    simulated_trackers,
)
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for


def test_a_lease_is_held_renewed_and_taken_only_once_expired(tmp_path, database_url):
    store = Store.open(str(tmp_path), database_url)
    w = store.workers
    assert w.take_lease(LEASE, "a", 10, now=100)
    assert not w.take_lease(LEASE, "b", 10, now=105)       # a's runs until 110
    assert w.take_lease(LEASE, "a", 10, now=106)            # renewed: until 116
    assert not w.take_lease(LEASE, "b", 10, now=112)
    assert w.holds(LEASE, "a", 115) and not w.holds(LEASE, "b", 115)
    assert w.take_lease(LEASE, "b", 10, now=116)            # expired: b takes it
    assert not w.holds(LEASE, "a", 117) and w.lease(LEASE).holder == "b"
    assert w.lease(LEASE).since == 116
    w.release(LEASE, "a")                                    # not a's to give: kept
    assert w.lease(LEASE).holder == "b"
    w.release(LEASE, "b")
    assert w.lease(LEASE) is None and w.take_lease(LEASE, "a", 10, now=118)


def test_workers_report_themselves(tmp_path, database_url):
    store = Store.open(str(tmp_path), database_url)
    store.workers.report(Worker("pi/1", "pi", 42, 1.0, 5.0, 100, 90, 10, 0.5))
    store.workers.report(Worker("pi/0", "pi", 41, 1.0, 6.0, 7, 7, 0, None))
    store.workers.report(Worker("pi/1", "pi", 43, 2.0, 7.0, 3, 3, 0, None))
    assert [(r.name, r.pid, r.received) for r in store.workers.list()] == \
        [("pi/0", 41, 7), ("pi/1", 43, 3)]
    store.workers.forget("pi/0")
    assert [r.name for r in store.workers.list()] == ["pi/1"]


class FakeIngest:
    stats = {"received": 12, "stored": 10}

    def inflight(self):
        return 2, 0.25


def test_only_one_lease_holder_runs_the_jobs_and_a_lost_lease_is_noticed(tmp_path):
    Store.open(str(tmp_path)).close()
    events = []
    a = LeaseHolder(Store.connect(str(tmp_path)), "a", lambda: events.append("a gains"),
                    lambda why: events.append("a lost: " + why), ttl=60, ingest=FakeIngest())
    b = LeaseHolder(Store.connect(str(tmp_path)), "b", lambda: events.append("b gains"),
                    lambda why: events.append("b lost"), ttl=60)
    with pytest.raises(ValueError, match="lease_seconds must be at least"):
        LeaseHolder(Store.connect(str(tmp_path)), "c", None, None, ttl=1)
    a.step()
    b.step()
    assert events == ["a gains"] and a.held and not b.held
    store = Store.connect(str(tmp_path))
    assert a.fence(store) and not b.fence(store)
    [row] = store.workers.list()
    assert (row.name, row.received, row.stored, row.inflight, row.oldest) == \
        ("a", 12, 10, 2, 0.25)
    # a pauses past its lease; b takes it; a's next renewal finds it gone
    store.db.execute("UPDATE leases SET expires = 0")
    b.step()
    a.step()
    assert events == ["a gains", "b gains", "a lost: taken by b"]
    assert b.held and not a.held and not a.fence(store)
    b.stop()        # renewals stop; the lease runs on until it expires
    a.step()
    assert events[-1] == "a lost: taken by b" and not a.held
    b.release()     # a clean stop gives the lease up at once
    a.step()
    assert events[-1] == "a gains"


def test_a_sealing_worker_that_lost_the_lease_seals_nothing(tmp_path):
    from gateway.anchor.epochs import seal_epoch
    store = Store.open(str(tmp_path))
    store.add_device("d" * 16, b"\x04" + b"\x01" * 64, "t", "tracker")
    store.add_message("d" * 16, 1, 0, 0, 1, b"\x11" * 32, b"raw", 1.0)
    assert seal_epoch(store, fence=lambda s: False) is None and store.unsealed()
    assert seal_epoch(store, fence=lambda s: True) == 1 and not store.unsealed()


# -- chaos ------------------------------------------------------------------------------

# The short run of `make test`; the long one (docs/operations.md) is
#   EK_CHAOS="4 100 300 20" .venv/bin/python -m pytest tests/test_workers.py -k chaos -s
# (workers, trackers, seconds, seconds between kills).
WORKERS, TRACKERS, RUN_SECONDS, KILL_EVERY = map(int, os.environ.get("EK_CHAOS",
                                                                      "3 12 40 8").split())
LEASE_SECONDS = 6


def anchor_transactions(rpc, contract, since_block):
    """Every transaction to the anchor contract after since_block, with its status."""
    out = []
    latest = int(rpc_call(rpc, "eth_blockNumber", []), 16)
    for n in range(since_block + 1, latest + 1):
        block = rpc_call(rpc, "eth_getBlockByNumber", [hex(n), True])
        for tx in block["transactions"]:
            if (tx.get("to") or "").lower() == contract.lower():
                receipt = rpc_call(rpc, "eth_getTransactionReceipt", [tx["hash"]])
                out.append((tx["hash"], int(receipt["status"], 16)))
    return out


class Workers:
    """`edgekeep run` (worker 0) and `edgekeep worker --index i` processes on one config,
    each started again after the test kills it."""

    def __init__(self, config, count, log):
        self.config, self.log = config, log
        self.procs = {}
        for i in range(count):
            self.start(i)

    def start(self, i):
        cmd = (["run", "--config", self.config] if i == 0 else
               ["worker", "--config", self.config, "--index", str(i)])
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "gateway", *cmd], cwd=REPO,
                                         env=ENV, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def reported(self, store):
        """Whether every worker process has written its row (it is up, signals handled)."""
        pids = {w.pid for w in store.workers.list()}
        return all(p.pid in pids for p in self.procs.values())

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return [p.wait(120) for p in self.procs.values()]


def holder_index(store):
    lease = store.workers.lease(LEASE)
    if lease is None or lease.expires < time.time():
        return None
    return int(lease.holder.rsplit("/", 1)[1])


@pytest.mark.integration
def test_chaos_workers_killed_at_random_lose_and_duplicate_nothing(tmp_path, broker,
                                                                   database_url):
    """WORKERS workers, TRACKERS trackers; every KILL_EVERY s a random worker is SIGKILLed
    and started again, the lease holder at the second and fourth kill."""
    data = str(tmp_path / "gw")
    keys = str(tmp_path / "devices")
    record = str(tmp_path / "produced.jsonl")
    simulated_trackers(keys, TRACKERS)
    with Anvil(str(tmp_path / "anvil"), block_time=1) as anvil:
        config = str(tmp_path / "gateway.toml")
        keyfile = tmp_path / "chain.key"
        keyfile.write_text(DEFAULT_DEV_KEY + "\n")
        with open(config, "w") as f:
            f.write('data_dir = "%s"\ndatabase_url = "%s"\nbroker = "%s"\nepoch_seconds = 2\n'
                    'web_port = -1\nhomeassistant = false\naudit_seconds = 5\n'
                    'lease_seconds = %d\n[chain]\nrpc_url = "%s"\nprivate_key_file = "%s"\n'
                    % (data, database_url, broker.url, LEASE_SECONDS, anvil.rpc_url, keyfile))
        Config.load(config)
        Store.open(data, database_url).close()   # on PostgreSQL: the data dir names it
        env = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")
        for args in (["devices", "import", "--data-dir", data, "--rpc", anvil.rpc_url, "--file",
                      os.path.join(keys, "devices.json")],
                     ["keyring", "--keyring", str(tmp_path / "owner.keyring"), "--from-dir",
                      keys]):
            r = cli("gateway", *args, env=env)
            assert r.returncode == 0, r.stdout + r.stderr
        deployment = json.load(open(os.path.join(data, "chain", "deployment.json")))
        first_block = int(rpc_call(anvil.rpc_url, "eth_blockNumber", []), 16)

        log = open(tmp_path / "workers.log", "ab")
        workers = Workers(config, WORKERS, log)
        trackers = subprocess.Popen(
            [sys.executable, "-m", "agent", "sim", "--trackers", str(TRACKERS), "--broker",
             broker.url, "--keys", keys, "--duration", str(RUN_SECONDS), "--sample-interval",
             "0.5", "--upload-interval", "1.5", "--record", record],
            cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        store = Store.open(data, database_url)
        wait_for(lambda: holder_index(store) is not None and store.message_count() > 20,
                 timeout=90, what="messages stored and a lease holder")
        rng = random.Random(7)
        killed = []
        for round_ in range(RUN_SECONDS // KILL_EVERY - 1):
            time.sleep(KILL_EVERY)
            holder = holder_index(store)
            victim = holder if round_ in (1, 3) and holder is not None else \
                rng.randrange(WORKERS)
            workers.kill(victim)
            killed.append((victim, victim == holder))
            if victim == holder:  # another worker takes the jobs over before it is back
                wait_for(lambda v=victim: holder_index(store) not in (None, v),
                         timeout=LEASE_SECONDS + 10, what="another worker holding the lease")
            workers.start(victim)
        assert trackers.wait(RUN_SECONDS + 120) == 0
        wait_for(lambda: holder_index(store) is not None and not store.unsealed()
                 and not store.unmined_epochs(), timeout=120,
                 what="everything sealed and anchored")
        wait_for(lambda: workers.reported(store), timeout=60, what="every worker up")
        assert workers.stop() == [0] * WORKERS, log.name
        assert sum(1 for _, was_holder in killed if was_holder) >= 2, killed

        produced = ledger(record)
        pf = tmp_path / "pass"
        pf.write_text("owner secret\n")
        assert_stored_exactly_once(data, produced, str(tmp_path / "owner.keyring"), str(pf))
        assert [g for d in produced for g in store.gaps(d)] == []
        epochs = store.epochs()
        assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
        assert all(e["status"] == "mined" for e in epochs)
        sent = anchor_transactions(anvil.rpc_url, deployment["contracts"]["ProofAnchor"],
                                   first_block)
        assert sorted(h for h, _ in sent) == sorted(e["tx_hash"] for e in epochs)
        assert all(ok == 1 for _, ok in sent)
        assert_verify_all(data, anvil.rpc_url)
        print("\nchaos: %d readings from %d trackers, %d epochs, kills %s" % (
            sum(map(len, produced.values())), TRACKERS, len(epochs), killed))


def test_default_worker_names_differ_by_index():
    assert default_name(0) != default_name(1) and default_name(2).endswith("/2")


@pytest.mark.unit
def test_the_dashboard_and_metrics_show_each_worker(tmp_path):
    from starlette.testclient import TestClient

    from gateway.web import auth
    from gateway.web.app import create_app
    data = str(tmp_path / "gw")
    store = Store.open(data)
    now = time.time()
    store.workers.report(Worker("pi/0", "pi", 41, now - 60, now - 1, 700, 650, 3, 0.2))
    store.workers.report(Worker("pi/1", "pi", 42, now - 60, now - 30, 90, 90, 5, 1.0))
    store.workers.take_lease(LEASE, "pi/0", 15, now)
    auth.set_password(data, "correct horse battery")
    with TestClient(create_app(Config(data_dir=data)), follow_redirects=False) as c:
        text = c.get("/metrics").text
        assert 'edgekeep_worker_up{worker="pi/0"} 1.0' in text
        assert 'edgekeep_worker_up{worker="pi/1"} 0.0' in text     # silent for 30 s
        assert 'edgekeep_worker_stored_total{worker="pi/0"} 650.0' in text
        assert 'edgekeep_worker_inflight{worker="pi/0"} 3.0' in text
        assert 'edgekeep_worker_inflight{worker="pi/1"} 0.0' in text
        assert 'edgekeep_worker_lease{worker="pi/0"} 1.0' in text
        assert 'edgekeep_worker_lease{worker="pi/1"} 0.0' in text
        page = c.get("/login")
        csrf = page.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
        c.post("/login", data={"password": "correct horse battery", "next": "/",
                               "csrf": csrf})
        card = c.get("/").text.split('id="workers"', 1)[1].split("</ul>", 1)[0]
        assert "pi/0: 0.0 msg/s · 3 in flight · lag 0.2 s · lease" in card
        assert "pi/1: not reporting" in card
        [w0, w1] = c.get("/api/status").json()["workers"]
        assert (w0["name"], w0["alive"], w0["lease"], w1["alive"]) == ("pi/0", True, True, False)


@pytest.mark.integration
def test_a_clips_manifest_and_chunks_spread_over_two_workers_make_the_clip(tmp_path, broker):
    """Two ingest workers in one shared-subscription group: a camera's manifests and chunks
    reach either, in any order; every clip completes and exports byte-identical."""
    from gateway.ingest.pipeline import Ingest
    from tests.helpers.camera import Device, export, register
    data = str(tmp_path / "gw")
    store = Store.open(data)
    workers = [Ingest(data, broker.url, epoch_seconds=3600, client_id="w%d" % i,
                      group="edgekeep") for i in range(2)]
    for w in workers:
        w.start()
    dev = Device(tmp_path, broker.port, chunk_size=1024, ack_timeout=2)
    try:
        register(store, workers[0], dev)
        workers[1].reload_devices()
        oids = [dev.agent.capture().hex() for _ in range(3)]
        dev.start()
        wait_for(lambda: not dev.agent.objects.entries, timeout=60,
                 what="the device's uploads done")
    finally:
        dev.close()
        for w in workers:
            w.stop()
    assert all(w.stats["received"] > 0 for w in workers), [w.stats for w in workers]
    for oid, jpeg in zip(oids, dev.camera.captured):
        assert export(tmp_path, data, dev.ident, oid) == jpeg
    assert all(o["completed_at"] for o in store.objects.list())


@pytest.mark.integration
def test_a_session_from_before_the_workers_drops_its_plain_subscription(tmp_path, broker):
    """A gateway upgraded from one ingest keeps its persistent session, which still holds
    the plain ek/+/up/# subscription: joining the group unsubscribes it, so no message
    arrives twice."""
    import paho.mqtt.client as mqtt

    from gateway.ingest.pipeline import UP_FILTER, Ingest
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgekeep-gateway",
                      clean_session=False)
    old.connect("127.0.0.1", broker.port)
    old.loop_start()
    old.subscribe(UP_FILTER, qos=1)
    time.sleep(0.5)
    old.disconnect()
    old.loop_stop()
    data = str(tmp_path / "gw")
    Store.open(data).close()
    ingest = Ingest(data, broker.url, epoch_seconds=3600, group="edgekeep")
    ingest.start()
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for i in range(5):
            pub.publish("ek/%016x/up/t" % i, b"junk", qos=1).wait_for_publish(5)
        wait_for(lambda: ingest.stats["received"] >= 5, what="five uplinks")
        time.sleep(1)
        assert ingest.stats["received"] == 5
        pub.disconnect()
        pub.loop_stop()
    finally:
        ingest.stop()


@pytest.mark.integration
def migrated_store(data):
    """The data dir's store once `run` has made and migrated it, else None."""
    if not os.path.exists(os.path.join(data, "store.db")):
        return None
    try:
        return Store.connect(data)
    except SchemaError:   # made, not migrated yet
        return None


def test_run_with_workers_starts_restarts_and_stops_its_children(tmp_path, broker):
    """`edgekeep run --workers 2`: a second worker process reports itself; killed, it is
    started again; a SIGTERM to `run` stops both, cleanly."""
    data = str(tmp_path / "gw")
    config = str(tmp_path / "gateway.toml")
    with open(config, "w") as f:
        f.write('data_dir = "%s"\nbroker = "%s"\nweb_port = -1\nhomeassistant = false\n'
                '[chain]\nrpc_url = "local"\nblock_time = 1\n' % (data, broker.url))
    log = open(tmp_path / "run.log", "ab")
    run = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", config,
                            "--workers", "2"], cwd=REPO, env=ENV, stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        store = wait_for(lambda: migrated_store(data), timeout=60, what="the store, migrated")

        def child():
            rows = [w for w in store.workers.list() if w.name == default_name(1)
                    and time.time() - w.seen_at < 5]
            return rows[0].pid if rows else None
        first = wait_for(child, timeout=60, what="worker 1 reporting")
        assert first != run.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: child() not in (None, first), timeout=60,
                 what="worker 1 started again")
        second = child()
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)
        text = open(tmp_path / "run.log").read()
        assert "worker 1 exited with status -9; starting it again" in text
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        from gateway.chain import node
        node.stop_running(data)
