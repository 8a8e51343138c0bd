"""End to end over real Mosquitto and anvil: trackers -> gateway -> chain -> verify -> export."""
import os
import signal
import subprocess
import sys
import time

import pytest

from gateway.chain import node
from gateway.store.database import Store
from tests.helpers.e2e import (
    assert_stored_exactly_once,
    assert_verify_all,
    cli,
    ledger,
    plaintext_patterns,
    scan_for,
    simulated_trackers,
    start_gateway,
    write_config,
)
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

def test_demo_five_trackers_thirty_seconds(tmp_path):
    data = str(tmp_path / "demo")
    record = str(tmp_path / "produced.jsonl")
    r = cli("gateway", "demo", "--trackers", "5", "--duration", "30", "--data-dir", data,
            "--block-time", "1", "--epoch-seconds", "5", "--sample-interval", "1",
            "--upload-interval", "4", "--record", record, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "owner keyring" in r.stdout and "verify with" in r.stdout
    produced = ledger(record)
    assert len(produced) == 5
    assert all(len(v) >= 20 for v in produced.values())

    keyring = os.path.join(data, "sim", "owner-keyring.json")
    passfile = os.path.join(data, "sim", "owner-passphrase")
    assert_stored_exactly_once(data, produced, keyring, passfile)
    assert_verify_all(data)
    device = sorted(produced)[0]
    r = cli("gateway", "verify", "--data-dir", data, "%s-1" % device)
    assert r.returncode == 0 and "verified 1/1" in r.stdout, r.stdout + r.stderr
    r = cli("gateway", "verify", "--data-dir", data, "%s-999999" % device)
    assert r.returncode == 2 and "no message" in r.stderr
    assert scan_for(data, plaintext_patterns(produced)) == []


def test_gateway_sigkill_loses_and_duplicates_nothing(tmp_path, broker, database_url):
    """On each backend: the commands given only --data-dir find a PostgreSQL store through
    the data directory's marker, as an operator's would."""
    data = str(tmp_path / "gw")
    keys = str(tmp_path / "devices")
    record = str(tmp_path / "produced.jsonl")
    simulated_trackers(keys, 3)
    Store.open(data, database_url).close()
    try:
        r = cli("gateway", "devices", "import", "--data-dir", data, "--file",
                os.path.join(keys, "devices.json"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("registered") == 3

        env = dict(ENV, EDGEKEEP_PASSPHRASE="owner secret")
        r = cli("gateway", "keyring", "--keyring", str(tmp_path / "owner.keyring"),
                "--from-dir", keys, env=env)
        assert r.returncode == 0, r.stderr

        config = write_config(str(tmp_path / "gateway.toml"), data, broker.url, database_url)
        log = open(tmp_path / "gateway.log", "ab")
        gw = start_gateway(config, log)
        trackers = subprocess.Popen(
            [sys.executable, "-m", "agent", "sim", "--trackers", "3", "--broker", broker.url,
             "--keys", keys, "--duration", "24", "--sample-interval", "0.5",
             "--upload-interval", "1.5", "--record", record],
            cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)

        store = Store.open(data)
        wait_for(lambda: store.message_count() >= 10, timeout=60, what="messages before the kill")
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        time.sleep(3)  # the devices keep producing while the gateway is down
        gw = start_gateway(config, log)
        assert trackers.wait(120) == 0
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(120) == 0

        produced = ledger(record)
        pf = tmp_path / "pass"
        pf.write_text("owner secret\n")
        assert_stored_exactly_once(data, produced, str(tmp_path / "owner.keyring"), str(pf))
        assert_verify_all(data)
        assert [g for d in produced for g in store.gaps(d)] == []
    finally:
        node.stop_running(data)
