# Objects (camera snapshots and clips) on the device: encrypted chunk by chunk as they are
# captured, queued on flash, described by one signed manifest, uploaded resumably.
#
# An object is a directory <queue>/<object id hex>/ holding
#   data  the chunk messages, each `length u32 | CBOR [oid, index, COSE_Encrypt0]`, exactly
#         as they are published on ek/<device>/up/c;
#   meta  written last, when the manifest has been sealed: `seq u32 | count u32 | check`.
# The signed manifest itself (kind m) goes through the device's Spool like any message. A
# directory without a whole meta is a capture cut short by a power loss; it is deleted at boot.
# See docs/protocol.md, "Objects".
import binascii
import hashlib
import os
import struct

from agent import cbor, cose
from agent.proto import ENV_BASE, ENV_DEVICE, ENV_KIND, ENV_SEQ, ENV_TIME, ENV_VERSION, VERSION

KIND_MANIFEST = "m"
KIND_CHUNK = "c"
ENV_OBJECT = 9          # envelope key of the manifest's object map

# Object map keys (the manifest's envelope key 9).
OBJ_ID = 0              # bstr(8), random
OBJ_EVENT = 1           # tstr, e.g. "motion" (cleartext by design)
OBJ_TYPE = 2            # tstr, content type of the plaintext
OBJ_SIZE = 3            # uint, plaintext bytes
OBJ_CHUNK_SIZE = 4      # uint, plaintext bytes per chunk (the last may be shorter)
OBJ_COUNT = 5           # uint, chunks
OBJ_ROOT = 6            # bstr(32), RFC 9162 Merkle root over the chunk hashes
OBJ_HASHES = 7          # bstr(32 * count), SHA-256 of each chunk's COSE_Encrypt0, in order

# Chunk ack (ek/<device>/down/chunks) map keys and states.
CACK_VERSION = 0
CACK_ID = 1
CACK_RANGES = 2         # [first, last, first, last, ...]: inclusive ranges the gateway stored
CACK_STATE = 3
PARTIAL = 0
COMPLETE = 1
UNKNOWN = 2             # no such object (its manifest never arrived): the device drops it

OID_LEN = 8
HASH_LEN = 32
# A chunk message, framing included (< 100 bytes), must fit the gateway's 64 KiB message
# limit; AES-CCM with 13-byte nonces seals at most 65,535 bytes anyway.
MAX_CHUNK_SIZE = 65280
_META = ">II4s"


def merkle_root(hashes):
    """RFC 9162 root over concatenated 32-byte leaves (gateway/wire/merkle.py's tree)."""
    level = []
    for i in range(0, len(hashes), HASH_LEN):
        level.append(hashlib.sha256(b"\x00" + hashes[i:i + HASH_LEN]).digest())
    if not level:
        raise ValueError("merkle: no leaves")
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            nxt.append(hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest())
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def manifest(identity, seq, base, t, oid, event, ctype, size, chunk_size, hashes):
    """The signed manifest message: an envelope of kind m with the object map."""
    obj = {OBJ_ID: oid, OBJ_EVENT: event, OBJ_TYPE: ctype, OBJ_SIZE: size,
           OBJ_CHUNK_SIZE: chunk_size, OBJ_COUNT: len(hashes) // HASH_LEN,
           OBJ_ROOT: merkle_root(hashes), OBJ_HASHES: hashes}
    env = {ENV_VERSION: VERSION, ENV_DEVICE: identity.device_id, ENV_SEQ: seq, ENV_TIME: t,
           ENV_KIND: KIND_MANIFEST, ENV_BASE: base, ENV_OBJECT: obj}
    return cose.sign1(identity.secret, identity.device_id, cbor.dumps(env))


def check_chunk_size(n):
    if not 0 < n <= MAX_CHUNK_SIZE:
        raise ValueError("chunk_size must be 1..%d bytes, not %d" % (MAX_CHUNK_SIZE, n))


def _check(fields):
    return hashlib.sha256(fields).digest()[:4]


def _rmtree(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


class Writer:
    """Streams plaintext into encrypted chunks on flash; holds one chunk of plaintext."""

    def __init__(self, queue, oid, chunk_size, key, nonces):
        self.queue = queue
        self.oid = oid
        self.dir = queue.path + "/" + binascii.hexlify(oid).decode()
        self.key = key
        self.nonces = nonces
        self.buf = bytearray(chunk_size)
        self.fill = 0
        self.count = 0
        self.size = 0
        self.stored = 0          # bytes on flash
        self.hashes = bytearray()
        os.mkdir(self.dir)
        self.f = open(self.dir + "/data", "wb")

    def write(self, data):
        mv = memoryview(data)
        pos = 0
        room = len(self.buf)
        while pos < len(mv):
            take = min(room - self.fill, len(mv) - pos)
            self.buf[self.fill:self.fill + take] = mv[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == room:
                self._seal_chunk()
        self.size += len(mv)
        if self.stored > self.queue.max_bytes:
            raise ValueError("object exceeds the queue's %d bytes" % self.queue.max_bytes)

    def _seal_chunk(self):
        enc = cose.encrypt0(self.key, self.nonces.next(), memoryview(self.buf)[:self.fill])
        msg = cbor.dumps([self.oid, self.count, enc])
        self.f.write(struct.pack(">I", len(msg)))
        self.f.write(msg)
        self.hashes.extend(hashlib.sha256(enc).digest())
        self.count += 1
        self.stored += 4 + len(msg)
        self.fill = 0

    def close(self):
        """Seal the last partial chunk; returns the concatenated chunk hashes."""
        if self.fill or not self.count:
            self._seal_chunk()
        self.f.close()
        return self.hashes

    def abort(self):
        self.f.close()
        _rmtree(self.dir)


class Entry:
    def __init__(self, oid, seq, count, offsets, size):
        self.oid = oid
        self.seq = seq          # the manifest's sequence number
        self.count = count
        self.offsets = offsets  # file offset of each chunk's length prefix
        self.size = size        # bytes on flash
        self.unsent = False     # captured since boot and no chunk sent yet


class ObjectQueue:
    """Bounded queue of finished objects on flash, oldest first; over budget, the oldest
    are dropped and counted."""

    def __init__(self, path, max_bytes=1048576):
        self.path = path
        self.max_bytes = max_bytes
        self.drops = 0
        self.entries = []
        try:
            os.stat(path)
        except OSError:
            os.mkdir(path)
        self._scan()

    def begin(self, oid, chunk_size, key, nonces):
        check_chunk_size(chunk_size)
        return Writer(self, oid, chunk_size, key, nonces)

    def commit(self, writer, seq):
        """Record that the object's manifest has sequence seq; the object is then queued."""
        fields = struct.pack(">II", seq, writer.count)
        with open(writer.dir + "/meta", "wb") as f:
            f.write(fields + _check(fields))
        entry = self._load(writer.dir, writer.oid, seq, writer.count)
        entry.unsent = True
        self.entries.append(entry)
        self._enforce_budget()

    def oldest(self):
        return self.entries[0] if self.entries else None

    def find(self, oid):
        for e in self.entries:
            if e.oid == oid:
                return e
        return None

    def read(self, entry, index):
        """Chunk index of entry: the exact payload to publish."""
        with open(self._dir(entry.oid) + "/data", "rb") as f:
            f.seek(entry.offsets[index])
            n = struct.unpack(">I", f.read(4))[0]
            return f.read(n)

    def remove(self, entry):
        _rmtree(self._dir(entry.oid))
        self.entries.remove(entry)

    def bytes_used(self):
        total = 0
        for e in self.entries:
            total += e.size
        return total

    def _dir(self, oid):
        return self.path + "/" + binascii.hexlify(oid).decode()

    def _enforce_budget(self):
        while self.bytes_used() > self.max_bytes and self.entries:
            self.remove(self.entries[0])
            self.drops += 1

    def _scan(self):
        found = []
        for name in os.listdir(self.path):
            d = self.path + "/" + name
            try:
                with open(d + "/meta", "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
            if len(raw) != 12 or _check(raw[:8]) != raw[8:]:
                _rmtree(d)  # cut short by a power loss before its manifest was sealed
                continue
            seq, count = struct.unpack(">II", raw[:8])
            found.append(self._load(d, binascii.unhexlify(name), seq, count))
        found.sort(key=lambda e: e.seq)
        self.entries = found

    def _load(self, d, oid, seq, count):
        offsets = []
        off = 0
        with open(d + "/data", "rb") as f:
            for _ in range(count):
                offsets.append(off)
                f.seek(off)
                off += 4 + struct.unpack(">I", f.read(4))[0]
        return Entry(oid, seq, count, offsets, off)
