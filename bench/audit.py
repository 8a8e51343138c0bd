"""Bytes read and transferred per storage-audit challenge, at 10 MB and at 1 GB stored.

A store is filled with 10 MB camera objects (160 chunks of 64 KB ciphertext, one signed
manifest each, one epoch each with 10 tracker batches), every epoch anchored on a local
anvil. Then the gateway's Keeper runs a sampled audit: "read" is every byte the Provider read
from disk for it (shares, all m of each challenged blob, and the epoch's leaf digests);
"sent" is the compact JSON of the answers as the API sends them to an independent Keeper.

    python bench/audit.py [--samples 32] [--sizes 10,1000]  (MB)

Preloading skips fsync and signs with OpenSSL (it measures the audit, not the ingest); a
tracker batch's ciphertext is random bytes of a real batch's size, since nothing here opens it.
"""
import argparse
import hashlib
import os
import tempfile
import time

import common

from agent import cbor, cose
from agent.identity import Identity
from agent.objects import manifest, wrap_key
from agent.proto import (
    ENV_BASE,
    ENV_CIPHERTEXT,
    ENV_COUNT,
    ENV_DEVICE,
    ENV_KIND,
    ENV_SEQ,
    ENV_TIME,
    ENV_VERSION,
    VERSION,
)
from gateway.anchor import epochs as anchor
from gateway.anchor.epochs import Anchorer
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.ingest.objects import ObjectStore
from gateway.keeper import audit as keeper
from gateway.keeper import challenges
from gateway.store import provider
from gateway.store.database import Store
from gateway.wire import objects, protocol

CHUNK = 65000
CHUNKS_PER_OBJECT = 160   # 10.4 MB objects
TRACKER_BATCHES = 10


def fill(data, chain, megabytes):
    store = Store.open(data)
    cam, tracker = Identity.create(os.urandom), Identity.create(os.urandom)
    registry.register(store, chain, cam.public, "cam", "camera")
    registry.register(store, chain, tracker.public, "t1")
    objs = ObjectStore.open(store)
    syncs = os.fsync, os.fdatasync
    os.fsync = os.fdatasync = lambda fd: None
    try:
        for n in range(max(1, megabytes * 1000 * 1000 // (CHUNK * CHUNKS_PER_OBJECT))):
            for i in range(TRACKER_BATCHES):
                seq = n * TRACKER_BATCHES + i + 1
                insert(store, tracker, seq, "t", tracker_batch(tracker, seq))
            chunks = [os.urandom(CHUNK) for _ in range(CHUNKS_PER_OBJECT)]
            hashes = b"".join(hashlib.sha256(c).digest() for c in chunks)
            raw = manifest(cam, n + 1, n + 1, int(time.time()), os.urandom(8), "motion",
                           "video/x-motion-jpeg", CHUNK * len(chunks), CHUNK, hashes,
                           wrap_key(cam.data_key, os.urandom(13), os.urandom(16)), os.urandom(32))
            insert(store, cam, n + 1, "m", raw)
            signed = protocol.parse("ek/%s/up/m" % cam.hex, raw, len(raw))
            obj = objects.parse_manifest(signed.payload)
            with store.transaction():
                objs.register(protocol.open_envelope(signed), obj, time.time())
                for i, c in enumerate(chunks):
                    objs.add_chunk(objects.Chunk(cam.hex, obj.oid, i, c,
                                                 hashlib.sha256(c).digest()), time.time())
                objs.flush()
            Anchorer(Store.connect(data), chain).anchor(anchor.seal_epoch(store))
    finally:
        os.fsync, os.fdatasync = syncs
    chain.w3.provider.make_request("evm_mine", [])
    return store.objects.total_bytes()


def tracker_batch(ident, seq):
    env = {ENV_VERSION: VERSION, ENV_DEVICE: ident.device_id, ENV_SEQ: seq, ENV_TIME: int(time.time()),
           ENV_KIND: "t", ENV_BASE: seq, ENV_COUNT: 32, ENV_CIPHERTEXT: os.urandom(1150)}
    return cose.sign1(ident.secret, ident.device_id, cbor.dumps(env))


def insert(store, ident, seq, kind, raw):
    store.add_message(ident.hex, seq, kind, 0, 0, hashlib.sha256(raw).digest(), raw, 0)


def measure(megabytes, samples):
    """(bytes stored, {kind: [challenges, bytes read, bytes sent]}) for one sampled audit."""
    with tempfile.TemporaryDirectory(prefix="ek-audit-") as tmp:
        data = os.path.join(tmp, "gw")
        with Anvil(data, block_time=0) as anvil:
            chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
            stored = fill(data, chain, megabytes)
            k = keeper.Keeper.open(Store.open(data), chain)
            k.protect()
            _, chs = challenges.draw(chain, samples)
            by_kind = {"chunk": [0, 0, 0], "batch": [0, 0, 0]}
            for ch in chs:
                before = k.provider.bytes_read
                outcome, _ = k.challenge(ch)
                assert outcome.outcome == "ok", outcome
                read = k.provider.bytes_read - before
                answer = k.provider.answer(ch.epoch, ch.leaf, ch.select)
                row = by_kind["chunk" if answer["chunk"] else "batch"]
                row[0] += 1
                row[1] += read
                row[2] += provider.wire_size(answer)
    return stored, by_kind


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--sizes", default="10,1000", help="MB stored, comma separated")
    args = p.parse_args()
    cose.p256 = common._OpenSSLSigner
    parts = []
    for mb in map(int, args.sizes.split(",")):
        stored, by_kind = measure(mb, args.samples)
        total = [sum(r[i] for r in by_kind.values()) for i in range(3)]
        parts.append("%.0f MB stored: %d B read, %d B sent per audit (%s)" % (
            stored / 1e6, total[1], total[2], ", ".join(
                "%s %.0f B read, %.0f B sent" % (kind, r[1] / r[0], r[2] / r[0])
                for kind, r in by_kind.items() if r[0])))
    print("audit of %d challenges: " % args.samples + "; ".join(parts))

if __name__ == "__main__":
    main()
