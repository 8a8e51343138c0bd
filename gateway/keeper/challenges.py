"""Storage challenges: a function of the chain alone, so anyone can recompute them.

An audit takes the hash of a settled block as its seed; each challenge names an anchored
leaf (a message) and, if that message is a camera manifest, one chunk of its object.
Audit records are leaves of a Merkle tree whose root goes to StorageAudit.record.
"""
import hashlib
from collections import namedtuple

import cbor2

from agent.objects import KIND_MANIFEST
from agent.proto import up_topic
from gateway.wire import merkle, objects, protocol, verify

SEED_DOMAIN = b"edgekeep-audit/1"


Challenge = namedtuple("Challenge", "index epoch leaf select")


Outcome = namedtuple("Outcome", "outcome detail digest chunk")


def latest_epoch(anchor_of, block):
    """The highest epoch anchored in a block <= `block`. Epochs are anchored in order from 1,
    so this is a binary search over ProofAnchor.anchorOf."""
    def anchored(e):
        a = anchor_of(e)
        return a is not None and a["block_number"] <= block
    if not anchored(1):
        return 0
    lo = 1
    while anchored(lo * 2):
        lo *= 2
    hi = lo * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if anchored(mid) else (lo, mid)
    return lo


def challenges(seed_hash, last_epoch, count_of, n):
    """n challenges from a 32-byte block hash: h_i = SHA-256(domain || seed || i as u32),
    epoch = 1 + h[0:8] mod last_epoch, leaf = h[8:16] mod count_of(epoch), select = h[16:24]
    (the chunk is select mod the object's chunk count)."""
    out = []
    for i in range(n if last_epoch else 0):
        h = hashlib.sha256(SEED_DOMAIN + seed_hash + i.to_bytes(4, "big")).digest()
        epoch = 1 + int.from_bytes(h[0:8], "big") % last_epoch
        leaf = int.from_bytes(h[8:16], "big") % count_of(epoch)
        out.append(Challenge(i, epoch, leaf, int.from_bytes(h[16:24], "big")))
    return out


def check(ch, answer, chain):
    """Verify a Provider's answer with nothing but `chain` (a ChainReader): an Outcome. The
    message goes through the one verification path (gateway/wire/verify.py); a challenged
    epoch without a root on chain yet is skipped, not failed."""
    def failed(why):
        return Outcome("failed", why, None, -1)
    if answer.get("epoch") != ch.epoch or answer.get("leaf") != ch.leaf:
        return failed("the answer is for another challenge")
    try:
        signed = verify.check_message(up_topic(answer["device"], answer["kind"]),
                                      answer["message"], chain.device_key(answer["device"]))
    except protocol.Reject as r:
        return failed(str(r))
    v = verify.check_inclusion(signed.digest, ch.epoch, ch.leaf, answer["path"],
                               chain.anchor_of(ch.epoch), chain.revoked_in(signed.device))
    if not v.ok:
        return Outcome("failed" if v.status == verify.FAILED else "skipped", v.reason, None, -1)
    if signed.kind != KIND_MANIFEST:
        return Outcome("ok", "message", signed.digest, -1)
    try:
        manifest = objects.parse_manifest(signed.payload, stored=True)
    except protocol.Reject as r:
        return failed(str(r))
    index = ch.select % manifest.count
    chunk = answer.get("chunk")
    if chunk is None:
        return Outcome("skipped", answer.get("skipped") or "no chunk in the answer", None, index)
    chunk_digest = hashlib.sha256(chunk["data"]).digest()
    if chunk["index"] != index or not merkle.verify_inclusion(
            chunk_digest, index, manifest.count, chunk["path"], manifest.root):
        return Outcome("failed", "chunk %d of object %s does not reach the signed manifest's root"
                       % (index, manifest.oid), None, index)
    return Outcome("ok", "chunk %d of object %s" % (index, manifest.oid), chunk_digest, index)


def seed_block(chain):
    """The parent of the latest block: settled, and one whose hash StorageAudit.record can
    still read (a node estimating gas runs the call as if in the latest block itself)."""
    number = max(chain.latest_block()["number"] - 1, 0)
    return {"number": number, "hash": chain.block_hash(number)}


def draw(chain, n):
    """The seed block and the challenges it gives."""
    block = seed_block(chain)
    last = latest_epoch(chain.anchor_of, block["number"])
    seed = bytes.fromhex(block["hash"][2:])
    return block, challenges(seed, last, lambda e: chain.anchor_of(e)["count"], n)


def record_hash(audit, seed_block, seed_hash, ch, o):
    """An audit record's leaf: SHA-256 of CBOR [audit, seed block, seed hash, challenge,
    epoch, leaf, chunk, digest, outcome]."""
    return hashlib.sha256(cbor2.dumps([audit, seed_block, seed_hash, ch.index, ch.epoch, ch.leaf,
                                       o.chunk, o.digest or b"", o.outcome])).digest()
