"""The Keeper: chain-seeded audits, anchored audit records, repair, the independent Keeper."""
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest

from agent import message
from agent.identity import Identity
from agent.objects import manifest, wrap_key
from gateway.anchor import epochs as anchor
from gateway.anchor.epochs import Anchorer
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.cli import main as cli
from gateway.ingest.objects import ObjectStore
from gateway.keeper import audit as keeper
from gateway.keeper import challenges
from gateway.store import provider
from gateway.store.database import Store
from gateway.wire import merkle, objects, protocol
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNKS = 6


def add_message(store, ident, seq, raw, kind):
    store.db.execute("INSERT INTO messages (device, seq, kind, time, count, digest, raw, received_at) "
                     "VALUES (?, ?, ?, 0, 0, ?, ?, 0)",
                     (ident.hex, seq, kind, hashlib.sha256(raw).digest(), raw))


@pytest.fixture
def gw(tmp_path, database_url):
    """A gateway store with tracker batches in epochs 1 and 2 and a 6-chunk clip in epoch 2,
    all anchored on a fresh anvil."""
    data = str(tmp_path / "gw")
    with Anvil(data, block_time=0) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
        store = Store.open(data, database_url)
        tracker, camera = Identity.create(os.urandom), Identity.create(os.urandom)
        registry.register(store, chain, tracker.public, "t1")
        registry.register(store, chain, camera.public, "cam", "camera")
        nonces = message.Nonces(os.urandom)
        for seq in range(1, 4):
            add_message(store, tracker, seq, message.seal(tracker, nonces, seq, 1790000000, "t", seq,
                                                          b"\x82hpebble/1@", 0), "t")
        Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))
        for seq in range(4, 6):
            add_message(store, tracker, seq, message.seal(tracker, nonces, seq, 1790000000, "t", seq,
                                                          b"\x82hpebble/1@", 0), "t")
        chunks = [os.urandom(4096 + 29) for _ in range(CHUNKS)]
        hashes = b"".join(hashlib.sha256(c).digest() for c in chunks)
        raw = manifest(camera, 1, 1, 1790000000, os.urandom(8), "motion", "image/jpeg",
                       4096 * CHUNKS, 4096, hashes,
                       wrap_key(camera.data_key, os.urandom(13), os.urandom(16)), os.urandom(32))
        add_message(store, camera, 1, raw, "m")
        signed = protocol.parse("ek/%s/up/m" % camera.hex, raw, len(raw))
        obj = objects.parse_manifest(signed.payload)
        objs = ObjectStore.open(store)
        objs.register(protocol.open_envelope(signed), obj, 0)
        for i, c in enumerate(chunks):
            objs.add_chunk(objects.Chunk(camera.hex, obj.oid, i, c, hashlib.sha256(c).digest()), 0)
        objs.flush()
        Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))
        chain.w3.provider.make_request("evm_mine", [])   # audits seed from the latest's parent
        yield data, store, chain, anvil.rpc_url, obj


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_challenges_are_reproducible_from_the_block_hash_alone(gw):
    data, store, chain, rpc, _ = gw
    k = keeper.Keeper.open(Store.open(data), chain)
    audit = k.anchor(k.audit_sample(12))["id"]
    on_chain = chain.audit_of(audit)          # StorageAudit read blockhash(seed) itself
    counts = {}
    for e in range(1, 10):
        a = chain.anchor_of(e)
        if a is None or a["block_number"] > on_chain["seed_block"]:
            break
        counts[e] = a["count"]
    assert len(counts) == 2
    expected = []
    for i in range(12):   # docs/keeper.md, recomputed here without gateway code
        h = hashlib.sha256(b"edgekeep-audit/1" + on_chain["seed_hash"] + i.to_bytes(4, "big")).digest()
        epoch = 1 + int.from_bytes(h[:8], "big") % len(counts)
        expected.append((epoch, int.from_bytes(h[8:16], "big") % counts[epoch]))
    assert [(r[1], r[2]) for r in k.records(audit)] == expected
    assert on_chain["challenges"] == 12 and on_chain["failed"] == 0


def test_a_flipped_byte_is_detected_repaired_and_the_audit_anchored(gw, capsys):
    data, store, chain, rpc, obj = gw
    k = keeper.Keeper.open(Store.open(data), chain)
    victim = obj.hashes[32 * 3:32 * 4]                          # chunk 3 of the clip
    path, offset, length = k.provider.share_location(victim, random.randrange(4))
    with open(path, "r+b") as f:
        f.seek(offset + random.randrange(length))
        b = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b ^ 0x40]))

    code, out = run_cli(capsys, "audit", "--data-dir", data, "--all", "--rpc", rpc)
    assert code == 1, out
    assert "audited %d chunks, failed 1" % (5 + CHUNKS) in out
    assert victim.hex()[:16] in out and "repaired 1 blob(s)" in out
    audit = int(re.search(r"audit (\d+): .* anchored in block", out).group(1))
    assert k.provider.health(victim) == (4, 4)

    records = k.records(audit)
    failed = [r for r in records if r[5] == "failed"]
    assert [(r[3], r[4]) for r in failed] == [(3, victim)]
    leaves = [r[7] for r in records]
    assert chain.audit_of(audit)["root"] == merkle.root(leaves)
    i = failed[0][0]
    proof = merkle.inclusion_proof(leaves, i)
    assert chain.verify_audit_record(audit, leaves[i], i, len(leaves), proof)
    assert not chain.verify_audit_record(audit, leaves[i - 1], i, len(leaves), proof)

    code, out = run_cli(capsys, "audit", "--data-dir", data, "--all", "--rpc", rpc)
    assert code == 0 and "failed 0" in out


def test_a_lost_root_loses_nothing_and_repair_reprotects(gw, capsys):
    data, store, chain, rpc, obj = gw
    k = keeper.Keeper.open(Store.open(data), chain)
    k.protect()
    shutil.rmtree(k.provider.roots[1])
    assert run_cli(capsys, "keeper", "status", "--data-dir", data)[0] == 1
    for o in ObjectStore.open(store).list():
        assert len(b"".join(ObjectStore.open(store).chunks(o))) == o["bytes"]
    for m in store.messages():
        assert k.provider.get(hashlib.sha256(m["raw"]).digest()) == m["raw"]

    code, out = run_cli(capsys, "repair", "--data-dir", data)
    assert code == 0 and "repaired %d blob(s), 0 lost" % (6 + CHUNKS) in out
    assert all(k.provider.health(d) == (4, 4) for d in k.provider.digests())
    code, out = run_cli(capsys, "keeper", "status", "--data-dir", data)
    assert code == 0 and "missing roots  none" in out


def test_a_wrong_chunk_or_a_stale_proof_fails(gw):
    data, store, chain, rpc, obj = gw
    p = provider.Provider.open(Store.open(data))
    last = challenges.latest_epoch(chain.anchor_of, chain.latest_block()["number"])
    assert last == 2
    ch = challenges.Challenge(0, 2, 2, 4)                  # the manifest, chunk 4
    honest = p.answer(ch.epoch, ch.leaf, ch.select)
    assert challenges.check(ch, honest, chain).outcome == "ok"

    other = p.answer(2, 2, 5)["chunk"]
    wrong_chunk = dict(honest, chunk=dict(honest["chunk"], data=other["data"]))
    stale = dict(honest, chunk=dict(honest["chunk"], path=other["path"]))
    old_epoch_path = dict(honest, path=p.answer(1, 2, 0)["path"])
    other_leaf = dict(p.answer(2, 1, 0), leaf=2)
    for lie in (wrong_chunk, stale, old_epoch_path, other_leaf):
        assert challenges.check(ch, lie, chain).outcome == "failed"
    assert challenges.check(ch, provider.answer_from_wire(provider.answer_to_wire(honest)),
                        chain).outcome == "ok"


def test_verify_chunk_on_chain_with_a_valid_and_a_forged_proof(gw):
    data, store, chain, rpc, obj = gw
    p = provider.Provider.open(Store.open(data))
    a = p.answer(2, 2, 1)
    offset = a["message"].index(b"\x06\x58\x20" + obj.root) + 3
    proof = {"epoch": 2, "manifest": a["message"], "root_offset": offset, "leaf": 2,
             "size": a["size"], "epoch_path": a["path"],
             "chunk_hash": hashlib.sha256(a["chunk"]["data"]).digest(),
             "chunk_index": 1, "chunk_count": CHUNKS, "chunk_path": a["chunk"]["path"]}
    assert chain.verify_chunk(proof)
    forged = hashlib.sha256(b"not the chunk").digest()
    assert not chain.verify_chunk(dict(proof, chunk_hash=forged))
    assert not chain.verify_chunk(dict(proof, chunk_index=2))
    assert not chain.verify_chunk(dict(proof, root_offset=offset + 1))


def test_independent_keeper_against_a_live_demo(tmp_path):
    data = str(tmp_path / "demo")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--data-dir", data, "--trackers", "2",
         "--cameras", "1", "--duration", "40", "--epoch-seconds", "1", "--block-time", "1",
         "--sample-interval", "0.5", "--upload-interval", "1"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = wait_for(lambda: re.search(r"admin page\s+(http://\S+)", log.read_text()),
                       timeout=60, what="the demo's admin page").group(1)
        store = Store.open(data)
        wait_for(lambda: len([e for e in store.epochs() if e["status"] == "mined"]) >= 3,
                 timeout=40, what="three anchored epochs")
        audit = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "--remote", url, "--samples", "12",
             "--password-file", os.path.join(data, "admin-password"),
             "--deployment", os.path.join(data, "chain", "deployment.json")],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "audited 12 chunks, failed 0" in audit.stdout
        bad = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "--remote", url],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=dict(env, EDGEKEEP_ADMIN_PASSWORD="wrong password"))
        assert bad.returncode != 0 and "401" in bad.stderr + bad.stdout
    finally:
        demo.send_signal(signal.SIGINT)    # the demo stops its gateway, chain and broker
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    digests = [r[0] for r in Store.open(data).db.execute("SELECT digest FROM messages")]
    held = provider.Provider.open(Store.open(data))
    assert digests and all(held.has(d) for d in digests), "the Keeper copies every message"
