"""The Provider: encrypted blobs kept as Reed-Solomon shares over several storage roots, and
its answers to the Keeper's storage challenges.

A blob is a camera chunk (its COSE_Encrypt0) or a whole message (a tracker batch, a status, a
manifest), named by its SHA-256, the hash the anchored trees commit to. zfec cuts it into k
blocks and m shares; share j is a record in a pack file of root j % R (gateway/store/packs.py)
behind a header holding the blob's name and the share's own checksum (XXH3-128), so a
damaged share is known without decoding. Any k good shares rebuild the blob, and every read
checks the blob against its name. The layout (roots, k, m) is the data directory's, in
provider.json, written by the running gateway from its config.

`Provider.open(store)` reads the layout and makes the roots that hold nothing yet; the
constructor only keeps what it is given. The Provider's rows (tables blobs, shares) are the
Store's (`store.blobs`, gateway/store/blobs.py), on its connection, so a put inside the
caller's transaction commits or rolls back with it.
"""
import base64
import hashlib
import json
import logging
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import xxhash

from agent.objects import KIND_MANIFEST
from gateway.store import erasure
from gateway.store.packs import Packs
from gateway.wire import merkle, objects, protocol

log = logging.getLogger("edgekeep.provider")

LAYOUT_FILE = "provider.json"
DEFAULT_K, DEFAULT_M = 2, 4      # two roots, two shares each: losing either root loses nothing
# magic, k, m, share index, blob size, the blob's SHA-256, the share body's XXH3-128. The
# checksum only finds damage: whoever can rewrite a share can rewrite its header too, and
# every read checks the decoded blob against its SHA-256. (SHA-256 over the shares cost
# twice a chunk's bytes on every write: a fifth of a camera upload's time.)
HEADER = struct.Struct(">4sBBBxQ32s16s")
MAGIC = b"EKP2"
COMPACT_DEAD = 0.5               # a pack at least this much deleted shares is rewritten

def _records(digest, k, m, size, bodies):
    """[(share index, header, body)] for (share index, body) pairs: a share's record is its
    header followed by its body."""
    return [(j, HEADER.pack(MAGIC, k, m, j, size, digest, xxhash.xxh3_128_digest(body)), body)
            for j, body in bodies]


def _share_body(raw, digest, j, k, m, size):
    """The body of record raw if it is share j of that blob, undamaged; else None."""
    if len(raw) < HEADER.size:
        return None
    body = raw[HEADER.size:]
    if HEADER.unpack_from(raw) != (MAGIC, k, m, j, size, digest, xxhash.xxh3_128_digest(body)):
        return None
    return body


class Unrecoverable(Exception):
    """Fewer than k good shares of a blob are left."""


def default_roots(data_dir):
    return [os.path.join(data_dir, "objects", "a"), os.path.join(data_dir, "objects", "b")]


def check_layout(roots, k, m):
    """ValueError for a layout zfec cannot make; the text of a warning if it is weak, else None."""
    if not roots:
        raise ValueError("storage_roots must name at least one directory")
    if not 1 <= k <= m <= 256:
        raise ValueError("erasure code needs 1 <= ec_k <= ec_m <= 256 (got k=%d, m=%d)" % (k, m))
    per_root = -(-m // len(roots))
    if m - per_root < k:
        return ("k=%d, m=%d over %d root(s) does not survive losing a root (each holds up to %d "
                "shares)" % (k, m, len(roots), per_root))
    return None


def configure(data_dir, roots, k, m):
    """Record the layout for every process that opens this data directory."""
    roots = [os.path.abspath(r) for r in roots] or default_roots(data_dir)
    weak = check_layout(roots, k, m)
    if weak:
        log.warning("%s", weak)
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, LAYOUT_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"roots": roots, "k": k, "m": m}, f, indent=1)
    os.replace(path + ".tmp", path)


def load_layout(data_dir):
    try:
        with open(os.path.join(data_dir, LAYOUT_FILE)) as f:
            layout = json.load(f)
    except FileNotFoundError:
        return default_roots(data_dir), DEFAULT_K, DEFAULT_M
    return layout["roots"], layout["k"], layout["m"]


class Provider:
    def __init__(self, store, roots, k, m):
        """A Provider over a Store (gateway/store/database.py) with this layout; no I/O."""
        check_layout(roots, k, m)
        self.store = store
        self.blobs = store.blobs  # its rows: gateway/store/blobs.py
        self.roots, self.k, self.m = roots, k, m
        self.packs = [Packs(r) for r in self.roots]
        self._syncers = None     # threads syncing the other roots' packs, made when needed
        self.bytes_read = 0      # share and leaf bytes read from disk, for bench/audit
        self._tree = (None, None)  # the last epoch's tree: audits walk epochs in order

    @classmethod
    def open(cls, store, data_dir=None):
        """The Provider of a data directory (the store's by default), in the layout its
        provider.json records."""
        p = cls(store, *load_layout(data_dir or store.data_dir))
        p._make_unused_roots()
        return p

    # -- blobs -------------------------------------------------------------------

    def put(self, digest, data, sync=True, records=None):
        """Store a blob as m shares, inside the caller's transaction, if any. Durable on return;
        with sync=False only once flush() has returned (call it before committing). records:
        what self.records(digest, data) returned, if the caller made them already."""
        if records is None:
            if hashlib.sha256(data).digest() != digest:
                raise ValueError("blob does not match its name %s" % digest.hex())
            records = self.records(digest, data)
        if not self.blobs.add(digest, len(data), self.k, self.m, time.time()):
            return  # held already
        self._append(digest, records)
        if sync:
            self.flush()

    def records(self, digest, data):
        """The blob's m share records, ready to append; digest must be data's SHA-256. CPU
        work only (zfec releases the GIL), safe from any thread: the ingest makes them in its
        verify pool."""
        return _records(digest, self.k, self.m, len(data),
                        enumerate(erasure.encode(data, self.k, self.m)))

    def flush(self):
        """Make every share put with sync=False durable: one fdatasync per pack written, the
        roots' at the same time (each is a disk of its own on a Pi)."""
        pending = [p for p in self.packs if p.unsynced]
        if len(pending) > 1 and self._syncers is None:
            self._syncers = ThreadPoolExecutor(len(self.packs) - 1, "pack-sync")
        others = [self._syncers.submit(p.sync) for p in pending[1:]]
        for p in pending[:1]:
            p.sync()
        for f in others:
            f.result()

    def close(self):
        for p in self.packs:
            p.close()
        if self._syncers:
            self._syncers.shutdown()
            self._syncers = None

    def has(self, digest):
        return self._row(digest) is not None

    def get(self, digest):
        """The blob, rebuilt from its first k good shares and checked against its digest."""
        size, k, m = self._need(digest)
        good = {}
        for j in range(m):
            body = self._read_share(digest, j, k, m, size)
            if body is not None:
                good[j] = body
                if len(good) == k:
                    break
        return self._decode(digest, good, size, k, m)

    def shares(self, digest):
        """{share index: body} of every good share (reads all m: the Keeper's full check)."""
        size, k, m = self._need(digest)
        return {j: b for j in range(m)
                if (b := self._read_share(digest, j, k, m, size)) is not None}

    def health(self, digest):
        """(good shares, m) of a blob."""
        return len(self.shares(digest)), self._need(digest).m

    def rebuild(self, digest):
        """Rewrite the missing or damaged shares from the good ones; the indexes rewritten."""
        size, k, m = self._need(digest)
        good = self.shares(digest)
        lost = [j for j in range(m) if j not in good]
        if lost:
            self.rewrite(digest, self._decode(digest, good, size, k, m), k, m, lost)
            self.flush()
        return lost

    def rewrite(self, digest, data, k, m, which=None):
        """Write shares `which` (all by default) of a blob the Provider already lists, coded
        with the blob's own k and m; durable once flush() has returned."""
        bodies = erasure.encode(data, k, m)
        which = range(m) if which is None else which
        self._append(digest, _records(digest, k, m, len(data), [(j, bodies[j]) for j in which]))

    def delete(self, digest):
        """Forget a blob; its shares' bytes go when their packs are compacted."""
        self.blobs.delete(digest)

    def digests(self):
        return self.blobs.digests()

    def missing_roots(self):
        """Roots whose directory is gone: a disk unplugged, died or wiped."""
        return [r for r in self.roots if not os.path.isdir(r)]

    def _make_unused_roots(self):
        """Make the directory of each root that holds no share yet: on a new gateway a root
        not made yet is not a lost one (the Keeper would say so every round until the
        first camera chunk). A root with shares that is gone stays missing."""
        for i, root in enumerate(self.roots):
            if not os.path.isdir(root) and not self.blobs.root_used(i, len(self.roots)):
                os.makedirs(root, exist_ok=True)

    def share_location(self, digest, j):
        """(pack path, offset, length) of share j's record, or None."""
        row = self._location(digest, j)
        return row and (self.packs[j % len(self.packs)].path(row.pack), row.offset, row.length)

    def _row(self, digest):
        return self.blobs.get(digest)

    def _need(self, digest):
        row = self._row(digest)
        if row is None:
            raise LookupError("the Provider holds no blob %s" % digest.hex())
        return row

    def _location(self, digest, j):
        return self.blobs.location(digest, j)

    def _decode(self, digest, good, size, k, m):
        if len(good) < k:
            raise Unrecoverable("blob %s: %d good share(s) of %d, %d needed"
                                % (digest.hex(), len(good), m, k))
        data = erasure.decode(good, size, k, m)
        if hashlib.sha256(data).digest() != digest:
            raise Unrecoverable("blob %s decodes to other bytes" % digest.hex())
        return data

    def _append(self, digest, records):
        """Append (share index, header, body) records to their roots' packs and note where."""
        rows = [(digest, j) + self.packs[j % len(self.packs)].append(head, body)
                + (len(head) + len(body),) for j, head, body in records]
        self.blobs.add_shares(rows)

    def _read_share(self, digest, j, k, m, size):
        raw = self._read_record(digest, j)
        if raw is None:
            return None
        self.bytes_read += len(raw)
        return _share_body(raw, digest, j, k, m, size)

    def _read_record(self, digest, j):
        """Share j's record, or None; looks again if a compaction moved it meanwhile."""
        packs = self.packs[j % len(self.packs)]
        loc = self._location(digest, j)
        raw = loc and packs.read(*loc)
        if raw is None and loc:
            moved = self._location(digest, j)
            raw = packs.read(*moved) if moved and moved != loc else None
        return raw

    # -- compaction --------------------------------------------------------------------

    def compact(self, dead=COMPACT_DEAD):
        """Rewrite the live shares of every pack at least `dead` deleted into this writer's
        pack, and remove the old pack; the bytes freed. Packs other writers are filling are
        left alone."""
        freed = 0
        for packs in self.packs:
            for name, size in packs.listing():
                live = self.blobs.live_bytes(name)
                if size and live > (1 - dead) * size:
                    continue
                if name == packs.name:
                    packs.close()  # this writer's own: start another
                with packs.locked(name) as mine:
                    if mine:
                        self._move_pack(packs, name)
                        freed += size - live
        if freed:
            log.info("compaction freed %.1f MB", freed / 1e6)
        return freed

    def _move_pack(self, packs, name):
        moved = []
        for digest, j, offset, length in self.blobs.in_pack(name):
            raw = packs.read(name, offset, length)
            if raw is not None:  # unreadable: left missing, for the Keeper to rebuild
                moved.append(packs.append(raw) + (digest, j, name))
        packs.sync()
        with self.store.transaction():
            self.blobs.move_shares(moved)
        packs.remove(name)

    # -- challenges ------------------------------------------------------------------

    def answer(self, epoch, leaf, select):
        """The answer to challenge (epoch, leaf, select): the message at that leaf with its
        path in the epoch tree and, when it is a camera manifest, chunk `select % count` of
        its object with the chunk's path in the object tree. Raises LookupError if there is
        no such leaf, Unrecoverable if the data is lost."""
        tree = self._epoch_tree(epoch)
        if not tree or leaf >= len(tree[0]):
            raise LookupError("epoch %d has no leaf %d here" % (epoch, leaf))
        row = self.store.message_at(epoch, leaf)
        device, seq, kind, digest, raw = (row[c] for c in ("device", "seq", "kind", "digest", "raw"))
        out = {"epoch": epoch, "leaf": leaf, "size": len(tree[0]), "device": device, "kind": kind,
               "message": self.message(digest, raw),
               "path": merkle.proof_from_levels(tree, leaf), "chunk": None, "skipped": None}
        if kind == KIND_MANIFEST:
            self._answer_chunk(out, device, seq, select)
        return out

    def message(self, digest, raw):
        """A message's bytes: the Provider's copy once it has one, else the store's, checked."""
        data = self.get(digest) if self.has(digest) else raw
        if hashlib.sha256(data).digest() != digest:
            raise Unrecoverable("message %s is corrupt in the store" % digest.hex())
        return data

    def _answer_chunk(self, out, device, seq, select):
        signed = protocol.parse("ek/%s/up/%s" % (device, out["kind"]), out["message"], 1 << 30)
        manifest = objects.parse_manifest(signed.payload, stored=True)
        index = select % manifest.count
        digest = manifest.hashes[index * 32:(index + 1) * 32]
        if self.store.objects.get(device, manifest.oid) is None:
            out["skipped"] = "object %s was deleted by retention" % manifest.oid
            return
        if not self.store.objects.has_chunk(device, manifest.oid, index):
            out["skipped"] = "chunk %d of object %s is not uploaded yet" % (index, manifest.oid)
            return
        hashes = [manifest.hashes[i:i + 32] for i in range(0, len(manifest.hashes), 32)]
        out["chunk"] = {"index": index, "data": self.get(digest),
                        "path": merkle.inclusion_proof(hashes, index)}

    def _epoch_tree(self, epoch):
        if self._tree[0] != epoch:
            leaves = self.store.epoch_leaves(epoch)
            self.bytes_read += 32 * len(leaves)
            self._tree = (epoch, merkle.levels(leaves) if leaves else None)
        return self._tree[1]


def answer_to_wire(a):
    """An answer as JSON-ready values: data in base64, hashes in hex."""
    out = dict(a, message=_b64(a["message"]), path=[h.hex() for h in a["path"]])
    if a["chunk"]:
        c = a["chunk"]
        out["chunk"] = {"index": c["index"], "data": _b64(c["data"]),
                        "path": [h.hex() for h in c["path"]]}
    return out


def answer_from_wire(w):
    """The inverse of answer_to_wire; ValueError for anything malformed."""
    try:
        out = dict(w, message=base64.b64decode(w["message"], validate=True),
                   path=[bytes.fromhex(h) for h in w["path"]])
        if w.get("chunk"):
            c = w["chunk"]
            out["chunk"] = {"index": int(c["index"]),
                            "data": base64.b64decode(c["data"], validate=True),
                            "path": [bytes.fromhex(h) for h in c["path"]]}
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError("malformed answer (%s)" % e) from None


def _b64(data):
    return base64.b64encode(data).decode()


def wire_size(a):
    """Bytes of the answer as the API sends it (compact JSON)."""
    return len(json.dumps(answer_to_wire(a), separators=(",", ":")))

