"""Four gateways on this machine, each its own process, broker and chain account on one shared
anvil: A with trackers and a camera places its data on B, C and D. Then A's data directory
(storage roots included) is deleted, and `edgekeep restore` on a fresh directory, with the
owner's keyring and one peer, brings back every message and object: exports are
byte-identical, `verify --all` passes, the devices resume without a gap, and no peer holds
plaintext (docs/network.md)."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest
from eth_account import Account

from gateway.chain.node import Anvil, rpc_call
from gateway.config import Config
from gateway.localhost import free_port
from gateway.mqtt.broker import Mosquitto
from gateway.network.client import PeerClient
from gateway.network.metadata import Metadata
from gateway.network.placement import Placer
from gateway.network.restore import Restore
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from gateway.store.provider import Provider
from tests.helpers.e2e import (
    assert_stored_exactly_once,
    assert_verify_all,
    cli,
    ledger,
    plaintext_patterns,
    scan_for,
    simulated_trackers,
)
from tests.helpers.network import PeerNode, pair
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

PASSPHRASE = "owner secret"


def funded_key(rpc):
    """A new chain account with 100 ETH on anvil: each gateway its own."""
    account = Account.create()
    rpc_call(rpc, "anvil_setBalance", [account.address, hex(10 ** 20)])
    return account.key.hex()


class Gateway:
    """One gateway: its broker, config, data directory and `edgekeep run` process."""

    def __init__(self, root, name, rpc, key):
        self.name, self.root = name, root
        self.data = os.path.join(root, name, "data")
        self.broker = Mosquitto(os.path.join(root, name, "broker")).start()
        self.peer_port = free_port()
        self.endpoint = "https://127.0.0.1:%d" % self.peer_port
        keyfile = os.path.join(root, name, "chain.key")
        with open(keyfile, "w") as f:
            f.write(key + "\n")
        self.config = os.path.join(root, name, "gateway.toml")
        with open(self.config, "w") as f:
            f.write('data_dir = "%s"\nbroker = "%s"\nepoch_seconds = 2\nweb_port = -1\n'
                    'homeassistant = false\npeer_port = %d\npeer_host = "127.0.0.1"\n'
                    'peer_endpoint = "%s"\nnetwork_audit_seconds = 5\n'
                    '[chain]\nrpc_url = "%s"\nprivate_key_file = "%s"\n'
                    % (self.data, self.broker.url, self.peer_port, self.endpoint, rpc, keyfile))
        assert Config.load(self.config).peer_port == self.peer_port
        self.rpc, self.key = rpc, key
        self.proc = None
        self.log = open(os.path.join(root, name, "gateway.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config",
                                      self.config], cwd=REPO, env=ENV, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(os.path.join(self.data, "network", "identity.crt")),
                 timeout=60, what="gateway %s up" % self.name)
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def close(self):
        self.stop()
        self.broker.stop()
        self.log.close()

    def cli(self, *args, timeout=120):
        r = cli("gateway", *args, env=dict(ENV, EDGEKEEP_CHAIN_KEY=self.key,
                                             EDGEKEEP_PASSPHRASE=PASSPHRASE), timeout=timeout)
        assert r.returncode == 0, "%s: %s%s" % (" ".join(args), r.stdout, r.stderr)
        return r.stdout

    def identity(self):
        return self.cli("identity", "show", "--data-dir", self.data).strip()


def invitation(text):
    return next(w for w in text.split() if w.startswith("ekinv1."))


def devices(cmd, env=None):
    return subprocess.Popen([sys.executable, "-c", cmd], cwd=REPO, env=env or ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


CAMERA = ("import sys; from agent.simcamera import run_camera; "
          "run_camera(sys.argv[1], sys.argv[2], {'period': 4.0}, None, lambda: False)")


def offbox_and_published(data):
    """Everything A acked is off the box: sealed, anchored, copied into the Provider, its
    shares durable on peers, and a catalog listing a snapshot of the last epoch published."""
    s = Store.connect(data)
    try:
        last = s.latest_message_id()
        return (last > 0 and not s.unsealed() and not s.unmined_epochs()
                and s.audits.state("protected_id") >= last
                and s.placements.not_offbox().blobs == 0
                and s.backup.snapshots() and s.backup.unpublished() == 0
                and s.backup.last_mark().epoch == s.next_epoch() - 1)
    finally:
        s.close()


def test_a_lost_gateway_is_restored_from_its_peers(tmp_path):
    root = str(tmp_path)
    with Anvil(os.path.join(root, "anvil"), block_time=1) as anvil:
        a, b, c, d = [Gateway(root, n, anvil.rpc_url, funded_key(anvil.rpc_url))
                      for n in "abcd"]
        procs = []
        try:
            keys = os.path.join(root, "devices")
            simulated_trackers(keys, 2)
            a.cli("devices", "import", "--data-dir", a.data, "--rpc", anvil.rpc_url, "--file",
                  os.path.join(keys, "devices.json"))
            from agent import sim
            cam = sim.provision_dir(os.path.join(keys, "camera-1"), "camera-1")
            a.cli("devices", "add", "--data-dir", a.data, "--rpc", anvil.rpc_url,
                  "--public-key", cam.public.hex(), "--name", "camera-1", "--kind", "camera")
            keyring = os.path.join(root, "owner.keyring")
            a.cli("keyring", "--keyring", keyring, "--from-dir", keys)
            for g in (a, b, c, d):
                g.start()
            a.cli("identity", "export", "--data-dir", a.data, "--keyring", keyring)
            for peer in (b, c, d):
                inv = invitation(peer.cli("peer", "invite", "--config", peer.config,
                                          "--capacity", "1GB", "--expires", "1h"))
                a.cli("peer", "add", inv, "--config", a.config, "--capacity", "1GB")

            record = os.path.join(root, "produced.jsonl")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "agent", "sim", "--trackers", "2", "--broker",
                 a.broker.url, "--keys", keys, "--sample-interval", "0.5",
                 "--upload-interval", "1.5", "--record", record],
                cwd=REPO, env=ENV, stdout=a.log, stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CAMERA, os.path.join(keys, "camera-1"), a.broker.url],
                cwd=REPO, env=ENV, stdout=a.log, stderr=subprocess.STDOUT))
            store = Store.connect(a.data)
            wait_for(lambda: store.message_count() >= 30 and any(
                o["completed_at"] for o in store.objects.list()), timeout=120,
                what="readings and a complete clip at A")
            store.close()

            # The devices pause (their queues wait on their flash); A gets everything off the
            # box; then A is lost, its storage roots with it.
            for p in procs:
                p.send_signal(signal.SIGSTOP)
            wait_for(lambda: offbox_and_published(a.data), timeout=120,
                     what="A's data durable on its peers")
            passfile = os.path.join(root, "pass")
            with open(passfile, "w") as f:
                f.write(PASSPHRASE + "\n")
            before = {dev: a.cli("export", "--data-dir", a.data, "--device", dev, "--key",
                                 keyring, "--passphrase-file", passfile, "--format", "json")
                      for dev in ledger(record)}
            clips = {}
            for o in Store.connect(a.data).objects.list():
                if o["completed_at"]:
                    path = os.path.join(root, o["oid"] + ".jpg")
                    a.cli("export", "--data-dir", a.data, "--object", o["oid"], "--key", keyring,
                          "--passphrase-file", passfile, "--out", path)
                    clips[o["oid"]] = open(path, "rb").read()
            assert clips and all(j.startswith(b"\xff\xd8") for j in clips.values())
            a.stop(signal.SIGKILL)
            shutil.rmtree(a.data)

            out = a.cli("restore", "--keyring", keyring, "--passphrase-file", passfile,
                        "--peer", "%s@%s" % (b.identity(), b.endpoint), "--data-dir", a.data,
                        "--rpc", anvil.rpc_url, timeout=300)
            assert "0 failed" in out and "lost" not in out.replace("0 lost", ""), out

            for dev, exported in before.items():
                assert a.cli("export", "--data-dir", a.data, "--device", dev, "--key", keyring,
                             "--passphrase-file", passfile, "--format", "json") == exported
            for oid, jpeg in clips.items():
                path = os.path.join(root, oid + ".restored")
                a.cli("export", "--data-dir", a.data, "--object", oid, "--key", keyring,
                      "--passphrase-file", passfile, "--out", path)
                assert open(path, "rb").read() == jpeg
            assert_verify_all(a.data, anvil.rpc_url)

            # A runs again; the devices carry on from their acked sequence, with no gap.
            a.start()
            for p in procs:
                p.send_signal(signal.SIGCONT)
            store = Store.connect(a.data)
            resumed = store.message_count()
            wait_for(lambda: store.message_count() >= resumed + 10, timeout=120,
                     what="the trackers resuming at the restored A")
            for p in procs:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
            a.stop()
            assert [g for dev in ledger(record) for g in store.gaps(dev)] == []
            assert_stored_exactly_once(a.data, ledger(record), keyring, passfile)
            assert_verify_all(a.data, anvil.rpc_url)

            # No peer holds plaintext: neither a reading nor a clip's bytes.
            jpeg_bits = [j[i:i + 48] for j in clips.values() for i in range(0, len(j) - 48,
                                                                             len(j) // 8)]
            for peer in (b, c, d):
                assert scan_for(peer.data, list(plaintext_patterns(ledger(record)))
                                + jpeg_bits) == []
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
            for g in (a, b, c, d):
                g.close()


def test_restore_says_what_to_do_without_a_keyring_identity(tmp_path):
    ring = Keyring(str(tmp_path / "k"), PASSPHRASE)
    ring.save()
    r = cli("gateway", "restore", "--keyring", str(tmp_path / "k"), "--peer",
            "x@https://127.0.0.1:1", "--data-dir", str(tmp_path / "new"), "--rpc",
            "http://127.0.0.1:1", env=dict(ENV, EDGEKEEP_PASSPHRASE=PASSPHRASE))
    assert r.returncode != 0
    assert "holds no gateway identity" in r.stderr and "identity export" in r.stderr


# -- in one process: an interrupted restore, and a blob with too few shares left --------------

def owner_with_peers(tmp_path, n_blobs):
    """An owner gateway whose blobs and metadata are on three peers, and the peers."""

    owner = PeerNode(tmp_path / "owner")
    peers = [PeerNode(tmp_path / n) for n in ("p1", "p2", "p3")]
    for p in peers:
        pair(p, owner)
    provider = Provider.open(owner.store)
    blobs = [os.urandom(3000 + i) for i in range(n_blobs)]
    for blob in blobs:
        provider.put(hashlib.sha256(blob).digest(), blob)
    metadata = Metadata(owner.store, provider, owner.identity)
    metadata.snapshot()
    placer = Placer(owner.store, provider, owner.identity, k=2, m=3)
    placer.queue_new()
    while placer.step()["left"]:
        pass
    assert metadata.publish(lambda p: placer.client(p.name, p.endpoint)) == 3
    return owner, peers, blobs


def test_an_interrupted_restore_resumes_where_it_stopped(tmp_path):
    owner, peers, blobs = owner_with_peers(tmp_path, 30)
    try:
        new = str(tmp_path / "new")

        def stop_at_ten(done, total, what):
            if done == 10:
                raise KeyboardInterrupt

        store = Store.open(new)
        with pytest.raises(KeyboardInterrupt):
            Restore(store, owner.identity, "http://127.0.0.1:1", stop_at_ten).run(
                PeerClient(owner.identity, peers[0].name, peers[0].url))
        store.close()
        store = Store.open(new)
        report = Restore(store, owner.identity, "http://127.0.0.1:1").run(
            PeerClient(owner.identity, peers[0].name, peers[0].url))
        assert report.ok and report.already >= 10 and report.blobs + report.already >= 31
        provider = Provider.open(store)
        for blob in blobs:
                    assert provider.get(hashlib.sha256(blob).digest()) == blob
        store.close()
    finally:
        for n in [owner] + peers:
            n.close()


def drop_two_shares(owner, peers, digest):
    """Two of a blob's three shares are gone from their peers: one is left, k = 2."""
    for p in owner.store.placements.of_blob(digest)[:2]:
        node = next(n for n in peers if n.name == p.peer)
        with node.server.lock:
            node.store.peers.release(owner.name, p.slot, "{}")


def test_a_blob_with_fewer_than_k_shares_left_is_reported_lost(tmp_path):

    owner, peers, blobs = owner_with_peers(tmp_path, 5)
    try:
        lost = hashlib.sha256(blobs[2]).digest()
        drop_two_shares(owner, peers, lost)
        store = Store.open(str(tmp_path / "new"))
        report = Restore(store, owner.identity, "http://127.0.0.1:1").run(
            PeerClient(owner.identity, peers[0].name, peers[0].url))
        assert not report.ok and report.blobs == 5     # 4 data blobs and the snapshot
        assert report.lost == [owner.store.placements.get(lost).sealed]
        assert any("blobs lost" in line for line in report.lines())
        store.close()

        drop_two_shares(owner, peers, owner.store.backup.snapshots()[0])
        store = Store.open(str(tmp_path / "newer"))
        with pytest.raises(RuntimeError, match="metadata snapshot"):
            Restore(store, owner.identity, "http://127.0.0.1:1").run(
                PeerClient(owner.identity, peers[0].name, peers[0].url))
        store.close()
    finally:
        for n in [owner] + peers:
            n.close()
