"""The Provider: encrypted blobs kept as Reed-Solomon shares over several storage roots, and
its answers to the Keeper's storage challenges.

A blob is a camera chunk (its COSE_Encrypt0) or a whole message (a tracker batch, a status, a
manifest), named by its SHA-256, the hash the anchored trees commit to. zfec cuts it into k
blocks and m shares; share j lives at <roots[j % R]>/<2 hex>/<digest hex>.<j> behind a header
holding its own SHA-256, so a damaged share is known without decoding. Any k good shares
rebuild the blob, and every read checks the blob against its name. The layout (roots, k, m)
is the data directory's, in provider.json, written by the running gateway from its config.
"""
import base64
import ctypes
import hashlib
import json
import logging
import os
import struct
import time

from zfec import easyfec

from agent.objects import KIND_MANIFEST
from gateway import merkle, objects, protocol, store

log = logging.getLogger("edgekeep.provider")

LAYOUT_FILE = "provider.json"
DEFAULT_K, DEFAULT_M = 2, 4      # two roots, two shares each: losing either root loses nothing
HEADER = struct.Struct(">4sBBBxQ32s")  # magic, k, m, share index, blob size, SHA-256 of the body
MAGIC = b"EKS1"

try:
    _LIBC_SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs
except (AttributeError, OSError):  # not Linux: sync everything
    _LIBC_SYNCFS = None


def _syncfs(directory):
    """Flush the filesystem that holds directory (Linux syncfs(2); else sync(2))."""
    if _LIBC_SYNCFS is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if _LIBC_SYNCFS(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs(%s) failed" % directory)
    finally:
        os.close(fd)


SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest BLOB PRIMARY KEY,          -- SHA-256 of the blob
    size INTEGER NOT NULL,
    k INTEGER NOT NULL,
    m INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
"""


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
    def __init__(self, data_dir, db=None):
        self.data_dir = data_dir
        self.roots, self.k, self.m = load_layout(data_dir)
        check_layout(self.roots, self.k, self.m)
        self.db = db or store.connect(data_dir)
        self.db.executescript(SCHEMA)
        self.bytes_read = 0      # share and leaf bytes read from disk, for bench/audit
        self._unsynced = set()   # storage roots with shares written but not yet synced
        self._tree = (None, None)  # the last epoch's tree: audits walk epochs in order
        self._migrate_flat_chunks()

    # -- blobs -------------------------------------------------------------------

    def put(self, digest, data, sync=True):
        """Store a blob as m shares, inside the caller's transaction, if any. Durable on return;
        with sync=False only once flush() has returned (call it before committing)."""
        if hashlib.sha256(data).digest() != digest:
            raise ValueError("blob does not match its name %s" % digest.hex())
        if self.db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone():
            return
        for j, body in enumerate(easyfec.Encoder(self.k, self.m).encode(data)):
            self._write_share(digest, j, self.k, self.m, len(data), body, sync)
        self.db.execute("INSERT INTO blobs (digest, size, k, m, stored_at) VALUES (?, ?, ?, ?, ?)",
                        (digest, len(data), self.k, self.m, time.time()))

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
        return len(self.shares(digest)), self._need(digest)[2]

    def rebuild(self, digest):
        """Rewrite the missing or damaged shares from the good ones; the indexes rewritten."""
        size, k, m = self._need(digest)
        good = self.shares(digest)
        lost = [j for j in range(m) if j not in good]
        if lost:
            data = self._decode(digest, good, size, k, m)
            bodies = easyfec.Encoder(k, m).encode(data)
            for j in lost:
                self._write_share(digest, j, k, m, size, bodies[j])
        return lost

    def delete(self, digest):
        row = self._row(digest)
        self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        for j in range(row[2] if row else 0):
            try:
                os.remove(self.share_path(digest, j))
            except FileNotFoundError:
                pass

    def digests(self):
        return [r[0] for r in self.db.execute("SELECT digest FROM blobs ORDER BY rowid")]

    def missing_roots(self):
        """Roots whose directory is gone: a disk unplugged, died or wiped."""
        return [r for r in self.roots if not os.path.isdir(r)]

    def share_path(self, digest, j):
        h = digest.hex()
        return os.path.join(self.roots[j % len(self.roots)], h[:2], "%s.%d" % (h, j))

    def _row(self, digest):
        return self.db.execute("SELECT size, k, m FROM blobs WHERE digest = ?", (digest,)).fetchone()

    def _need(self, digest):
        row = self._row(digest)
        if row is None:
            raise LookupError("the Provider holds no blob %s" % digest.hex())
        return row

    def _decode(self, digest, good, size, k, m):
        if len(good) < k:
            raise Unrecoverable("blob %s: %d good share(s) of %d, %d needed"
                                % (digest.hex(), len(good), m, k))
        nums = sorted(good)[:k]
        padlen = k * len(good[nums[0]]) - size
        data = easyfec.Decoder(k, m).decode([good[j] for j in nums], nums, padlen)
        if hashlib.sha256(data).digest() != digest:
            raise Unrecoverable("blob %s decodes to other bytes" % digest.hex())
        return data

    def _read_share(self, digest, j, k, m, size):
        try:
            with open(self.share_path(digest, j), "rb") as f:
                raw = f.read()
        except OSError:
            return None
        self.bytes_read += len(raw)
        head, body = raw[:HEADER.size], raw[HEADER.size:]
        if len(head) < HEADER.size or HEADER.unpack(head) != (
                MAGIC, k, m, j, size, hashlib.sha256(body).digest()):
            return None
        return body

    def flush(self):
        """Make every share written with sync=False durable: one syncfs per storage root
        instead of one fsync per share file (a camera chunk alone is m files)."""
        for root in self._unsynced:
            _syncfs(root)
        self._unsynced.clear()

    def _write_share(self, digest, j, k, m, size, body, sync=True):
        path = self.share_path(digest, j)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(HEADER.pack(MAGIC, k, m, j, size, hashlib.sha256(body).digest()) + body)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        if not sync:
            self._unsynced.add(self.roots[j % len(self.roots)])

    def _migrate_flat_chunks(self):
        """Chunks an older gateway kept as single files under objects/<2 hex>/ become blobs."""
        flat = os.path.join(self.data_dir, "objects")
        dirs = [d for d in (os.listdir(flat) if os.path.isdir(flat) else [])
                if len(d) == 2 and all(c in "0123456789abcdef" for c in d)]
        for d in dirs:
            for name in os.listdir(os.path.join(flat, d)):
                path = os.path.join(flat, d, name)
                if len(name) == 64 and "." not in name:
                    with open(path, "rb") as f:
                        data = f.read()
                    if hashlib.sha256(data).hexdigest() == name:
                        self.put(bytes.fromhex(name), data)
                        os.remove(path)
        if dirs:
            log.info("moved single-copy chunks under %s into the Provider's roots", flat)

    # -- challenges ------------------------------------------------------------------

    def answer(self, epoch, leaf, select):
        """The answer to challenge (epoch, leaf, select): the message at that leaf with its
        path in the epoch tree and, when it is a camera manifest, chunk `select % count` of
        its object with the chunk's path in the object tree. Raises LookupError if there is
        no such leaf, Unrecoverable if the data is lost."""
        tree = self._epoch_tree(epoch)
        if not tree or leaf >= len(tree[0]):
            raise LookupError("epoch %d has no leaf %d here" % (epoch, leaf))
        device, seq, kind, digest, raw = self.db.execute(
            "SELECT device, seq, kind, digest, raw FROM messages WHERE epoch = ? AND leaf = ?",
            (epoch, leaf)).fetchone()
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
        manifest = objects.parse_manifest(signed.payload)
        index = select % manifest.count
        digest = manifest.hashes[index * 32:(index + 1) * 32]
        row = self.db.execute("SELECT seq FROM objects WHERE device = ? AND oid = ?",
                              (device, manifest.oid)).fetchone()
        if row is None:
            out["skipped"] = "object %s was deleted by retention" % manifest.oid
            return
        if not self.db.execute("SELECT 1 FROM object_chunks WHERE device = ? AND oid = ? "
                               "AND idx = ?", (device, manifest.oid, index)).fetchone():
            out["skipped"] = "chunk %d of object %s is not uploaded yet" % (index, manifest.oid)
            return
        hashes = [manifest.hashes[i:i + 32] for i in range(0, len(manifest.hashes), 32)]
        out["chunk"] = {"index": index, "data": self.get(digest),
                        "path": merkle.inclusion_proof(hashes, index)}

    def _epoch_tree(self, epoch):
        if self._tree[0] != epoch:
            leaves = [r[0] for r in self.db.execute(
                "SELECT digest FROM messages WHERE epoch = ? ORDER BY leaf", (epoch,))]
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

