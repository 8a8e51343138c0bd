"""The Keeper: storage audits drawn from chain randomness, anchored audit records, repair.

An audit takes the hash of the chain's latest block as its seed and derives its challenges
from it and from the epoch anchors on chain alone (`challenges`), so anyone can recompute
them. Each challenge names an anchored leaf (a message) and, if that message is a camera
manifest, one chunk of its object. The Provider answers with the bytes and Merkle paths;
`check` verifies them against the anchored epoch root and the device key on chain, trusting
nothing else. The gateway's own Keeper also reads every share of what it challenged, so a
damaged share is found even though reads still succeed from the others, and queues repair.

The records (seed, challenges, outcomes) are leaves of a Merkle tree whose root goes to
StorageAudit.record, which stores the seed block's hash as the chain saw it.
"""
import hashlib
import logging
import threading
import time
from collections import namedtuple

import cbor2
from web3 import Web3

from agent.objects import KIND_MANIFEST
from gateway import merkle, objects, protocol, store
from gateway.chain.compile import load_artifact
from gateway.provider import Provider, Unrecoverable

log = logging.getLogger("edgekeep.keeper")

SEED_DOMAIN = b"edgekeep-audit/1"
RECEIPT_TIMEOUT = 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    mode TEXT NOT NULL,              -- sample (chain seed), all, object
    seed_block INTEGER,
    seed_hash TEXT,
    challenges INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,   -- chunks deleted by retention or not uploaded yet
    repaired INTEGER NOT NULL DEFAULT 0,
    ok INTEGER,                      -- 1: nothing failed, or all that failed is repaired
    root TEXT,                       -- hex Merkle root over the records
    status TEXT NOT NULL DEFAULT 'open',  -- open, anchored, empty, error
    tx_hash TEXT,
    block INTEGER,
    alarm TEXT                       -- what could not be repaired
);
CREATE TABLE IF NOT EXISTS audit_records (
    audit INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    leaf INTEGER NOT NULL,
    chunk INTEGER NOT NULL,          -- -1: the message itself
    digest BLOB,                     -- what was proven (chunk or message SHA-256)
    outcome TEXT NOT NULL,           -- ok, failed, skipped
    detail TEXT,
    hash BLOB NOT NULL,              -- the record's leaf in the audit tree
    PRIMARY KEY (audit, idx)
);
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    digest BLOB NOT NULL,
    good INTEGER NOT NULL,           -- good shares before the repair
    outcome TEXT NOT NULL,           -- repaired, lost
    detail TEXT
);
CREATE TABLE IF NOT EXISTS keeper_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

Challenge = namedtuple("Challenge", "index epoch leaf select")
Outcome = namedtuple("Outcome", "outcome detail digest chunk")


# -- challenges: a function of the chain alone ---------------------------------------

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


# -- checking an answer against the chain -------------------------------------------------

def check(ch, answer, chain):
    """Verify a Provider's answer with nothing but `chain` (anchor_of, device): an Outcome."""
    def failed(why):
        return Outcome("failed", why, None, -1)
    if answer.get("epoch") != ch.epoch or answer.get("leaf") != ch.leaf:
        return failed("the answer is for another challenge")
    anchor = chain.anchor_of(ch.epoch)
    if anchor is None:
        return failed("epoch %d has no root on chain" % ch.epoch)
    raw = answer["message"]
    digest = hashlib.sha256(raw).digest()
    if not merkle.verify_inclusion(digest, ch.leaf, anchor["count"], answer["path"], anchor["root"]):
        return failed("message is not leaf %d of the anchored root of epoch %d" % (ch.leaf, ch.epoch))
    try:
        signed = protocol.parse("ek/%s/up/%s" % (answer["device"], answer["kind"]), raw, len(raw))
        device = chain.device(bytes.fromhex(signed.device))
        if device is None:
            return failed("device %s is not registered on chain" % signed.device)
        protocol.verify_signature(signed, protocol.load_public_key(device["pubkey"]))
        if signed.kind != KIND_MANIFEST:
            return Outcome("ok", "message", digest, -1)
        manifest = objects.parse_manifest(signed.payload)
    except (protocol.Reject, ValueError) as e:
        return failed("message: %s" % e)
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


class ChainReader:
    """Read-only chain access from contract addresses: what an independent Keeper uses."""

    def __init__(self, rpc_url, contracts):
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self.chain_id = self.w3.eth.chain_id
        c = {name: self.w3.eth.contract(address=Web3.to_checksum_address(contracts[name]),
                                        abi=load_artifact(name)["abi"])
             for name in ("DeviceRegistry", "ProofAnchor", "StorageAudit")}
        self.registry, self.proof_anchor, self.storage_audit = (
            c["DeviceRegistry"], c["ProofAnchor"], c["StorageAudit"])
        self._anchors = {}

    def anchor_of(self, epoch):
        if epoch not in self._anchors:
            root, count, block, _ = self.proof_anchor.functions.anchorOf(epoch).call()
            self._anchors[epoch] = (None if root == bytes(32) else
                                    {"root": bytes(root), "count": count, "block_number": block})
        return self._anchors[epoch]

    def device(self, id8):
        pubkey, owner, active, registered_at = self.registry.functions.deviceKey(id8).call()
        return {"pubkey": bytes(pubkey), "active": active} if registered_at else None

    def latest_block(self):
        return {"number": self.w3.eth.block_number}

    def block_hash(self, number):
        return self.w3.eth.get_block(number)["hash"].to_0x_hex()


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


# -- the gateway's own Keeper ----------------------------------------------------------------

class Keeper:
    def __init__(self, data_dir, chain, db=None):
        self.db = db or store.connect(data_dir)
        self.db.executescript(SCHEMA)
        self.provider = Provider(data_dir, self.db)
        self.chain = chain

    def protect(self):
        """Copy messages the Provider does not hold yet into it; how many."""
        since = self._state("protected_id")
        rows = self.db.execute("SELECT id, digest, raw FROM messages WHERE id > ? ORDER BY id",
                               (since,)).fetchall()
        for mid, digest, raw in rows:
            if hashlib.sha256(raw).digest() != digest:
                log.error("message %d is corrupt in the store; not copied", mid)
                continue
            self.provider.put(digest, raw)
        if rows:
            self._set_state("protected_id", rows[-1][0])
        return len(rows)

    # audits

    def audit_sample(self, n):
        block, chs = draw(self.chain, n)
        return self._audit("sample", block, chs)

    def audit_all(self, target=None):
        """Every chunk of every anchored object, or of one (`<device>-<seq>` for a message,
        `[<device>-]<oid>` for a camera object)."""
        return self._audit("object" if target else "all", seed_block(self.chain),
                           self._targets(target))

    def _targets(self, target):
        if target is None:
            rows = self.db.execute("SELECT device, seq, kind, raw, epoch, leaf FROM messages "
                                   "WHERE epoch IS NOT NULL ORDER BY epoch, leaf").fetchall()
        else:
            rows = self._target_rows(target)
        out = []
        for device, seq, kind, raw, epoch, leaf in rows:
            count = 1
            if kind == KIND_MANIFEST:
                signed = protocol.parse("ek/%s/up/%s" % (device, kind), raw, len(raw))
                count = objects.parse_manifest(signed.payload).count
            out += [Challenge(len(out) + i, epoch, leaf, i) for i in range(count)]
        return out

    def _target_rows(self, target):
        sql = "SELECT device, seq, kind, raw, epoch, leaf FROM messages WHERE device = ? AND seq = ?"
        device, _, tail = target.rpartition("-")
        if tail.isdigit():
            rows = self.db.execute(sql, (device, int(tail))).fetchall()
        else:
            obj = objects.ObjectStore(self.provider.data_dir, self.db).find(target)
            rows = self.db.execute(sql, (obj["device"], obj["seq"])).fetchall()
        if not rows or rows[0][4] is None:
            raise LookupError("%s is not a sealed message or object here" % target)
        return rows

    def _audit(self, mode, block, chs):
        self.protect()
        cur = self.db.execute("INSERT INTO audits (time, mode, seed_block, seed_hash) "
                              "VALUES (?, ?, ?, ?)", (time.time(), mode, block["number"], block["hash"]))
        audit, seed = cur.lastrowid, bytes.fromhex(block["hash"][2:])
        damaged, records = set(), []
        for ch in chs:
            o, bad = self.challenge(ch)
            damaged |= bad
            h = record_hash(audit, block["number"], seed, ch, o)
            records.append((audit, ch.index, ch.epoch, ch.leaf, o.chunk, o.digest, o.outcome,
                            o.detail, h))
        self.db.executemany("INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
        failed = sum(r[6] == "failed" for r in records)
        root = merkle.root([r[8] for r in records]).hex() if records else None
        self.db.execute("UPDATE audits SET challenges = ?, failed = ?, skipped = ?, root = ?, "
                        "ok = ? WHERE id = ?", (len(records), failed,
                                                sum(r[6] == "skipped" for r in records), root,
                                                int(failed == 0), audit))
        if damaged:
            self._after_repair(audit, self.repair(sorted(damaged)))
        log.info("audit %d (%s): %d challenges, %d failed", audit, mode, len(records), failed)
        return audit

    def challenge(self, ch):
        """Answer and check one challenge here; (Outcome, digests with damaged shares)."""
        try:
            answer = self.provider.answer(ch.epoch, ch.leaf, ch.select)
        except (LookupError, Unrecoverable, ValueError) as e:
            return Outcome("failed", "no answer: %s" % e, None, -1), set()
        o = check(ch, answer, self.chain)
        digests = [hashlib.sha256(answer["message"]).digest()]
        if answer["chunk"]:
            digests.append(hashlib.sha256(answer["chunk"]["data"]).digest())
        bad = {d for d in digests if self._damaged(d)}
        if bad and o.outcome == "ok":
            o = o._replace(outcome="failed", detail="%s: damaged or missing share(s) of %s" % (
                o.detail, ", ".join(d.hex()[:16] for d in sorted(bad))))
        return o, bad

    def _damaged(self, digest):
        if not self.provider.has(digest):
            return False
        good, m = self.provider.health(digest)
        return good < m

    def _after_repair(self, audit, repairs):
        lost = [r for r in repairs if r["outcome"] == "lost"]
        alarm = ("%d blob(s) below k shares, not repairable: %s" % (
            len(lost), ", ".join(r["digest"].hex()[:16] for r in lost))) if lost else None
        self.db.execute("UPDATE audits SET repaired = ?, ok = ?, alarm = ? WHERE id = ?",
                        (len(repairs) - len(lost), int(not lost), alarm, audit))

    def anchor(self, audit):
        """Put the audit's root on chain (StorageAudit.record); the audit row after it."""
        a = self.audit_row(audit)
        if not a["root"]:
            self.db.execute("UPDATE audits SET status = 'empty' WHERE id = ?", (audit,))
            return self.audit_row(audit)
        try:
            tx = self.chain.send_audit(audit, a["seed_block"], bytes.fromhex(a["root"]),
                                       a["challenges"], a["failed"])
            receipt = self.chain.wait_receipt(tx, RECEIPT_TIMEOUT)
            if not receipt["status"]:
                raise RuntimeError("audit tx %s reverted" % tx)
            self.db.execute("UPDATE audits SET status = 'anchored', tx_hash = ?, block = ? "
                            "WHERE id = ?", (tx, receipt["block_number"], audit))
        except Exception as e:  # the chain may be down: the record stays, marked
            log.warning("anchoring audit %d failed: %s", audit, e)
            self.db.execute("UPDATE audits SET status = 'error', alarm = coalesce(alarm, ?) "
                            "WHERE id = ?", ("not anchored: %s" % str(e)[:200], audit))
        return self.audit_row(audit)

    def audit_row(self, audit):
        cur = self.db.execute("SELECT * FROM audits WHERE id = ?", (audit,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def records(self, audit):
        return self.db.execute("SELECT idx, epoch, leaf, chunk, digest, outcome, detail, hash "
                               "FROM audit_records WHERE audit = ? ORDER BY idx", (audit,)).fetchall()

    # repair

    def repair(self, digests=None):
        """Rebuild damaged or missing shares, the blobs with the fewest good shares first
        (MEMO's risk-first order); every blob when `digests` is None. One row per repair."""
        self.protect()
        todo = []
        for d in self.provider.digests() if digests is None else digests:
            good, m = self.provider.health(d)
            if good < m:
                todo.append((good, d))
        out = []
        for good, d in sorted(todo):
            try:
                outcome, detail = "repaired", "share(s) %s rewritten" % self.provider.rebuild(d)
            except Unrecoverable as e:
                outcome, detail = "lost", str(e)
                log.error("ALARM: %s", e)
            self.db.execute("INSERT INTO repairs (time, digest, good, outcome, detail) "
                            "VALUES (?, ?, ?, ?, ?)", (time.time(), d, good, outcome, detail))
            out.append({"digest": d, "good": good, "outcome": outcome, "detail": detail})
        return out

    def status(self):
        """Roots, blobs, the last audit and the repairs that failed: `gateway keeper status`."""
        lost = self.db.execute(
            "SELECT count(DISTINCT r.digest) FROM repairs r JOIN blobs b ON b.digest = r.digest "
            "WHERE r.outcome = 'lost' AND r.id = (SELECT max(id) FROM repairs WHERE digest = r.digest)"
        ).fetchone()[0]
        last = self.db.execute("SELECT max(id) FROM audits").fetchone()[0]
        return {"roots": self.provider.roots, "missing_roots": self.provider.missing_roots(),
                "k": self.provider.k, "m": self.provider.m,
                "blobs": len(self.provider.digests()), "unrepairable": lost,
                "last_audit": self.audit_row(last) if last else None,
                "repairs": self.db.execute("SELECT count(*) FROM repairs").fetchone()[0]}

    def _state(self, key):
        row = self.db.execute("SELECT value FROM keeper_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _set_state(self, key, value):
        self.db.execute("INSERT INTO keeper_state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key, value))


class KeeperLoop:
    """The running gateway's Keeper: copies sealed messages into the Provider as epochs seal,
    re-protects a lost root at once, and audits every `period` seconds."""

    def __init__(self, data_dir, chain, period=600, samples=16):
        self.keeper = Keeper(data_dir, chain)
        self.period, self.samples = period, samples
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="keeper", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def notify(self, epoch=None):
        self.wake.set()

    def stop(self):
        self._stop.set()
        self.wake.set()
        self.thread.join()
        self.keeper.protect()

    def _run(self):
        next_audit = time.monotonic() + self.period
        while not self._stop.is_set():
            self.wake.wait(5)
            self.wake.clear()
            try:
                self.keeper.protect()
                if self.keeper.provider.missing_roots():
                    log.error("storage root(s) lost: %s; repairing",
                              ", ".join(self.keeper.provider.missing_roots()))
                    self.keeper.repair()
                if time.monotonic() >= next_audit:
                    next_audit = time.monotonic() + self.period
                    self.keeper.anchor(self.keeper.audit_sample(self.samples))
            except Exception:
                log.exception("keeper round failed; retrying")
