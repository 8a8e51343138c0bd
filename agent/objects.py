# Objects (camera snapshots and clips) on the device: encrypted chunk by chunk as they are
# captured, queued on flash, described by one signed manifest, uploaded resumably.
#
# An object is a directory <queue>/<object id hex>/ holding
#   data  the chunk messages, each `length u32 | CBOR [oid, index, COSE_Encrypt0]`, exactly
#         as they are published on ek/<device>/up/c;
#   meta  written last, when the manifest has been sealed: `seq u32 | count u32 | wrapped
#         content key (57) | commitment (32) | [of (8)] | check` (an object queued by an
#         older firmware has only `seq | count | check`).
# Each object has its own random content key (its chunks are sealed under it); the key is
# kept only wrapped under the device's data key, on flash as in the manifest. The signed
# manifest itself (kind m) goes through the device's Spool like any message. A directory
# without a whole meta is a capture cut short by a power loss; it is deleted at boot.
# See docs/protocol.md, "Objects".
import binascii
import hashlib
import os
import struct

from agent import cbor, cose
from agent.proto import ENV_BASE, ENV_DEVICE, ENV_KIND, ENV_SEQ, ENV_TIME, ENV_VERSION, VERSION
from agent.sha256hmac import hmac_sha256

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
OBJ_KEY = 8             # bstr(57), the content key wrapped: COSE_Encrypt0 under the data key
OBJ_COMMIT = 9          # bstr(32), HMAC-SHA256(opening, plaintext), the plaintext commitment
OBJ_OF = 10             # bstr(8), optional: the object this one belongs to (a clip's poster)

# Chunk ack (ek/<device>/down/chunks) map keys and states.
CACK_VERSION = 0
CACK_ID = 1
CACK_RANGES = 2         # [first, last, first, last, ...]: inclusive ranges the gateway stored
CACK_STATE = 3
PARTIAL = 0
COMPLETE = 1
UNKNOWN = 2             # no such object (its manifest never arrived): the device drops it
PENDING = 3             # no manifest yet, the ranges held for it (a clip still recording)

OID_LEN = 8
HASH_LEN = 32
CONTENT_KEY_LEN = 16
# The wrapped content key: tag 16, [h'A101181E', {5: nonce(13)}, ciphertext(16 + tag 16)].
WRAPPED_KEY_LEN = 57
OPENING_LABEL = b"edgekeep opening"
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


def manifest(identity, seq, base, t, oid, event, ctype, size, chunk_size, hashes,
             wrapped_key, commit, of=None):
    """The signed manifest message: an envelope of kind m with the object map. wrapped_key
    and commit are the Writer's; of, the id of the object this one belongs to (a poster's
    clip)."""
    obj = {OBJ_ID: oid, OBJ_EVENT: event, OBJ_TYPE: ctype, OBJ_SIZE: size,
           OBJ_CHUNK_SIZE: chunk_size, OBJ_COUNT: len(hashes) // HASH_LEN,
           OBJ_ROOT: merkle_root(hashes), OBJ_HASHES: hashes, OBJ_KEY: wrapped_key,
           OBJ_COMMIT: commit}
    if of is not None:
        obj[OBJ_OF] = of
    env = {ENV_VERSION: VERSION, ENV_DEVICE: identity.device_id, ENV_SEQ: seq, ENV_TIME: t,
           ENV_KIND: KIND_MANIFEST, ENV_BASE: base, ENV_OBJECT: obj}
    return cose.sign1(identity.secret, identity.device_id, cbor.dumps(env))


def check_chunk_size(n):
    if not 0 < n <= MAX_CHUNK_SIZE:
        raise ValueError("chunk_size must be 1..%d bytes, not %d" % (MAX_CHUNK_SIZE, n))


def wrap_key(data_key, nonce, content_key):
    """The manifest's object key 8: the content key sealed under the device's data key."""
    return bytes(cose.encrypt0(data_key, nonce, content_key))


def opening_for(content_key):
    """The key of the plaintext commitment, derived from the content key."""
    return hmac_sha256(content_key, OPENING_LABEL)


def _check(fields):
    return hashlib.sha256(fields).digest()[:4]


def _rmtree(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


def _bstr_len(n):
    """Bytes of a CBOR byte string of n bytes, its head included."""
    return n + (1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5)


def first_chunk_len(oid, chunk_size):
    """Bytes of chunk 0's message `CBOR [oid, 0, COSE_Encrypt0]` for a full chunk: tag and
    array (2), protected (5), {5: nonce} (16), then the ciphertext with its tag."""
    return 1 + _bstr_len(len(oid)) + 1 + _bstr_len(23 + _bstr_len(chunk_size + 16))


class Writer:
    """Streams plaintext into chunks on flash, sealed under a content key of its own, and
    commits to the plaintext as it goes; holds one chunk of plaintext. After close():
    wrapped_key (the content key under the data key) and commit, for the manifest.

    A clip being recorded is written from its second chunk on (hold_first): its container's
    header, in the first chunk, is patched when the recording ends, so that chunk is sealed
    last (close_held), and the commitment is made then over the whole file. on_sealed(index,
    message), if set, gets each chunk as it is sealed (the camera publishes it at once)."""

    def __init__(self, queue, oid, chunk_size, data_key, nonces, urandom=None):
        self.queue = queue
        self.oid = oid
        self.dir = queue.path + "/" + binascii.hexlify(oid).decode()
        self.key = (urandom or os.urandom)(CONTENT_KEY_LEN)
        self.nonces = nonces
        self.wrapped_key = wrap_key(data_key, nonces.next(), self.key)
        self.mac = Hmac(opening_for(self.key))
        self.commit = None
        self.buf = bytearray(chunk_size)
        self.fill = 0
        self.count = 0
        self.size = 0
        self.stored = 0          # bytes on flash
        self.hashes = bytearray()
        self.held = False        # chunk 0 is held back: sealed by close_held()
        self.tail = None         # SHA-256 of the plaintext after chunk 0, when held
        self.on_sealed = None
        self.streamed = False    # a chunk went out before the manifest (the camera sets it)
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
        plain = memoryview(self.buf)[:self.fill]
        if self.held:
            self.tail.update(plain)
        else:
            self.mac.update(plain)
        msg = self._seal(self.count, plain)
        self.f.write(struct.pack(">I", len(msg)))
        self.f.write(msg)
        self.count += 1
        self.stored += 4 + len(msg)
        self.fill = 0
        if self.on_sealed is not None:
            self.on_sealed(self.count - 1, msg)

    def _seal(self, index, plain):
        enc = cose.encrypt0(self.key, self.nonces.next(), plain)
        self.hashes.extend(hashlib.sha256(enc).digest())
        return cbor.dumps([self.oid, index, enc])

    def hold_first(self):
        """From now on write() takes the plaintext after the first chunk, which close_held()
        seals at the end: its place on flash is kept (its message's length is known)."""
        n = first_chunk_len(self.oid, len(self.buf))
        self.f.write(struct.pack(">I", n))
        self.f.write(bytes(n))
        self.hashes.extend(bytes(HASH_LEN))
        self.held = True
        self.tail = hashlib.sha256()
        self.count = 1
        self.size = len(self.buf)
        self.stored = 4 + n

    def close_held(self, stream):
        """Seal the last chunk, then the first from the finished file: stream(write) writes
        the whole plaintext, over which the commitment is made. ValueError if the bytes
        after the first chunk are not those already sealed (an encoder that rewrote them)."""
        if self.fill:
            self._seal_chunk()
        first = bytearray(len(self.buf))
        tail = hashlib.sha256()
        mac = self.mac
        at = [0]

        def take(data):
            mac.update(data)
            pos = at[0]
            n = len(data)
            if pos < len(first):
                k = min(n, len(first) - pos)
                first[pos:pos + k] = memoryview(data)[:k]
                if k < n:
                    tail.update(memoryview(data)[k:])
            else:
                tail.update(data)
            at[0] = pos + n

        stream(take)
        if at[0] != self.size or tail.digest() != self.tail.digest():
            raise ValueError("the clip's file changed after its first chunk was sealed")
        hashes, self.hashes = self.hashes, bytearray()
        msg = self._seal(0, first)
        if len(msg) != first_chunk_len(self.oid, len(first)):
            raise ValueError("chunk 0 does not fit its place")
        hashes[:HASH_LEN] = self.hashes
        self.hashes = hashes
        self.f.close()
        with open(self.dir + "/data", "r+b") as f:
            f.seek(4)
            f.write(msg)
        self.commit = mac.digest()
        self.key = self.mac = self.tail = None
        return self.hashes

    def close(self):
        """Seal the last partial chunk; returns the concatenated chunk hashes."""
        if self.fill or not self.count:
            self._seal_chunk()
        self.f.close()
        self.commit = self.mac.digest()
        self.key = self.mac = None  # only the wrapped key outlives the capture
        return self.hashes

    def abort(self):
        """Forget the object; nothing if it is gone already."""
        self.f.close()
        try:
            _rmtree(self.dir)
        except OSError:
            pass


class Entry:
    def __init__(self, oid, seq, count, offsets, size, keys=None):
        self.oid = oid
        self.seq = seq          # the manifest's sequence number
        self.count = count
        self.offsets = offsets  # file offset of each chunk's length prefix
        self.size = size        # bytes on flash
        self.unsent = False     # captured since boot and no chunk sent yet
        # the manifest's wrapped content key, commitment and parent object (None: none, or
        # queued by an older firmware)
        self.wrapped_key, self.commit, self.of = keys or (None, None, None)


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

    def begin(self, oid, chunk_size, data_key, nonces, urandom=None):
        """A Writer for a new object, its chunks sealed under a fresh content key."""
        check_chunk_size(chunk_size)
        return Writer(self, oid, chunk_size, data_key, nonces, urandom)

    def commit(self, writer, seq, of=None):
        """Record that the object's manifest has sequence seq (and parent object of, as in
        the manifest); the object is then queued."""
        keys = (writer.wrapped_key, writer.commit, of)
        fields = struct.pack(">II", seq, writer.count) + keys[0] + keys[1] + (of or b"")
        with open(writer.dir + "/meta", "wb") as f:
            f.write(fields + _check(fields))
        entry = self._load(writer.dir, writer.oid, seq, writer.count, keys)
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
            keys = _meta_keys(raw)
            if keys is False:
                _rmtree(d)  # cut short by a power loss before its manifest was sealed
                continue
            seq, count = struct.unpack(">II", raw[:8])
            found.append(self._load(d, binascii.unhexlify(name), seq, count, keys))
        found.sort(key=lambda e: e.seq)
        self.entries = found

    def _load(self, d, oid, seq, count, keys=None):
        offsets = []
        off = 0
        with open(d + "/data", "rb") as f:
            for _ in range(count):
                offsets.append(off)
                f.seek(off)
                off += 4 + struct.unpack(">I", f.read(4))[0]
        return Entry(oid, seq, count, offsets, off, keys)


_KEYS_AT = 8 + WRAPPED_KEY_LEN + HASH_LEN  # where a meta's optional parent object id starts


def _meta_keys(raw):
    """(wrapped key, commitment, of or None) of a whole meta file; None for an older
    firmware's (no keys); False if it is not whole."""
    n = len(raw) - 4
    if n not in (8, _KEYS_AT, _KEYS_AT + OID_LEN) or _check(raw[:n]) != raw[n:]:
        return False
    if n == 8:
        return None
    return (raw[8:8 + WRAPPED_KEY_LEN], raw[8 + WRAPPED_KEY_LEN:_KEYS_AT],
            raw[_KEYS_AT:n] if n > _KEYS_AT else None)


class Hmac:
    """Streaming HMAC-SHA256 (the commitment, over a clip as it is written). Here, not in
    sha256hmac.py: that module is loaded by every device (signing), this one by cameras only,
    and a tracker's 64 KB heap has no room for more code."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        pad = bytearray(64)
        pad[:len(key)] = key
        for i in range(64):
            pad[i] ^= 0x36
        self.inner = hashlib.sha256(pad)
        for i in range(64):
            pad[i] ^= 0x36 ^ 0x5C
        self.outer_pad = pad

    def update(self, data):
        self.inner.update(data)

    def digest(self):
        outer = hashlib.sha256(self.outer_pad)
        outer.update(self.inner.digest())
        return outer.digest()
