"""A gateway process and simulated trackers, and checks on what the gateway stored."""
import json
import os
import struct
import subprocess
import sys

from agent import sim
from agent.proto import READING_FIELDS
from gateway.config import Config
from gateway.store.database import Store
from tests.helpers.paths import ENV, REPO


def cli(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def ledger(path):
    """device -> every reading the simulated devices produced, in order."""
    out = {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            out.setdefault(d["device"], []).append(d["reading"])
    return out


def exported(data_dir, device, keyring, passphrase_file):
    r = cli("gateway", "export", "--data-dir", data_dir, "--device", device, "--key", keyring,
            "--passphrase-file", passphrase_file, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    return [{k: row[k] for k in READING_FIELDS[1:]} for row in rows]


def assert_stored_exactly_once(data_dir, produced, keyring, passphrase_file):
    assert produced, "the devices produced nothing"
    for device, readings in produced.items():
        assert exported(data_dir, device, keyring, passphrase_file) == readings, device


def assert_verify_all(data_dir, rpc=None):
    store = Store.open(data_dir)
    n = store.message_count()
    store.close()
    r = cli("gateway", "verify", "--data-dir", data_dir, "--all", *(["--rpc", rpc] if rpc else []))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified %d/%d" % (n, n) in r.stdout


def write_config(path, data_dir, broker_url, database_url=""):
    with open(path, "w") as f:
        f.write('data_dir = "%s"\nbroker = "%s"\ndatabase_url = "%s"\nepoch_seconds = 3\n'
                'web_port = 0\n[chain]\nblock_time = 1\n'
                % (data_dir, broker_url, database_url))
    cfg = Config.load(path)
    assert cfg.data_dir == data_dir and cfg.database_url == database_url
    return path


def start_gateway(config, log):
    return subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", config],
                            cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def simulated_trackers(keys, n):
    """n provisioned tracker flash dirs under keys, with keys/devices.json for the gateway."""
    for i, path in enumerate(sim.tracker_dirs(keys, n)):
        sim.provision_dir(path, "tracker-%d" % (i + 1))
    sim.write_device_list(keys, n)


def plaintext_patterns(produced):
    """Byte patterns that would betray a reading: its packed fields and its JSON."""
    fmt = ">hHIIIhhhiiH"
    miss = {"h": -0x8000, "H": 0xFFFF, "i": -0x80000000, "I": 0xFFFFFFFF}
    for readings in produced.values():
        for r in readings:
            vals = [miss[c] if r[k] is None else r[k] for k, c in zip(READING_FIELDS[1:], fmt[1:])]
            yield struct.pack(fmt, *vals)
            yield json.dumps(r).encode()
            yield ("%d,%d,%d" % (r["temp"], r["hum"], r["pres"])).encode()


def scan_for(directory, patterns):
    hits = []
    blobs = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                blobs[path] = f.read()
    for p in patterns:
        for path, blob in blobs.items():
            if p in blob:
                hits.append((path, p))
    return hits
