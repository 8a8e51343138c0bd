"""Camera objects on the wire: the chunk message and the manifest's object map.

A chunk is CBOR [object id, index, COSE_Encrypt0] (or [object id] to ask which chunks the
gateway holds); it is not signed, and is accepted only if its SHA-256 is the one the
object's signed manifest lists at its index. Both must be canonical CBOR (protocol.decode).
"""
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.objects import (
    ENV_OBJECT,
    HASH_LEN,
    MAX_CHUNK_SIZE,
    OBJ_CHUNK_SIZE,
    OBJ_COUNT,
    OBJ_EVENT,
    OBJ_HASHES,
    OBJ_ID,
    OBJ_ROOT,
    OBJ_SIZE,
    OBJ_TYPE,
    OID_LEN,
)
from gateway.wire import merkle
from gateway.wire.protocol import BAD_MANIFEST, MALFORMED, OVERSIZE, UP_TOPIC, Reject, decode

BAD_CHUNK = "bad_chunk"              # index out of range, or hash not in the manifest


DUPLICATE_CHUNK = "duplicate_chunk"  # stored already: acked again, dropped


UNKNOWN_OBJECT = "unknown_object"    # no manifest for it


@dataclass
class Chunk:
    device: str
    oid: str
    index: int | None      # None: the device asks which chunks the gateway holds
    data: bytes | None     # the COSE_Encrypt0
    digest: bytes | None   # its SHA-256
    # its Provider share records (share index, header, body), if made already
    records: list[tuple[int, bytes, bytes | memoryview]] | None = None


@dataclass
class Manifest:
    oid: str
    event: str
    type: str
    size: int
    chunk_size: int
    count: int
    root: bytes
    hashes: bytes


def parse_chunk(topic: str, raw: bytes, max_bytes: int) -> Chunk:
    """A chunk message: CBOR [oid, index, COSE_Encrypt0 bytes], or [oid] to ask for ranges."""
    if len(raw) > max_bytes:
        raise Reject(OVERSIZE, "%d bytes > %d" % (len(raw), max_bytes))
    m = UP_TOPIC.match(topic)
    if not m:
        raise Reject(MALFORMED, "topic %r is not ek/<device>/up/<kind>" % topic[:80])
    item = decode(raw, "chunk")
    if not (isinstance(item, list) and len(item) in (1, 3)
            and isinstance(item[0], bytes) and len(item[0]) == OID_LEN):
        raise Reject(MALFORMED, "chunk must be [object id, index, ciphertext] or [object id]")
    if len(item) == 1:
        return Chunk(m.group(1), item[0].hex(), None, None, None)
    index, data = item[1], item[2]
    if not (isinstance(index, int) and index >= 0 and isinstance(data, bytes)):
        raise Reject(MALFORMED, "chunk index or ciphertext has the wrong type")
    return Chunk(m.group(1), item[0].hex(), index, data, hashlib.sha256(data).digest())


# The object map's ranges (docs/protocol.md, "Manifest"): a chunk fits one chunk message,
# and the hash list (32 bytes a chunk) fits one 64 KiB message several times over.
MAX_OBJECT_CHUNKS = 2**16 - 1
_OBJECT_FIELDS = ((OBJ_ID, "id", bytes), (OBJ_EVENT, "event", str), (OBJ_TYPE, "type", str),
                  (OBJ_SIZE, "size", int), (OBJ_CHUNK_SIZE, "chunk_size", int),
                  (OBJ_COUNT, "count", int), (OBJ_ROOT, "root", bytes),
                  (OBJ_HASHES, "hashes", bytes))


def parse_manifest(payload: bytes) -> Manifest:
    """The object map of a verified manifest envelope; Reject (BAD_MANIFEST for the object
    map, MALFORMED/NONCANONICAL for the envelope's CBOR) and never any other exception."""
    env = decode(payload, "manifest envelope")
    try:
        return _manifest(env)
    except Reject:
        raise
    except Exception as e:  # a case the checks below missed is still this manifest's fault
        raise Reject(BAD_MANIFEST, "object map: %s: %s" % (type(e).__name__, e))


def _manifest(env: Any) -> Manifest:
    obj = env.get(ENV_OBJECT) if isinstance(env, Mapping) else None
    if not isinstance(obj, Mapping):
        raise Reject(BAD_MANIFEST, "no object map (envelope key %d)" % ENV_OBJECT)
    for key, name, typ in _OBJECT_FIELDS:
        if key not in obj:
            raise Reject(BAD_MANIFEST, "object map without %s (key %d)" % (name, key))
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool):
            raise Reject(BAD_MANIFEST, "object %s has type %s" % (name, type(obj[key]).__name__))
    oid, event, ctype = obj[OBJ_ID], obj[OBJ_EVENT], obj[OBJ_TYPE]
    size, chunk_size, count = obj[OBJ_SIZE], obj[OBJ_CHUNK_SIZE], obj[OBJ_COUNT]
    root, hashes = obj[OBJ_ROOT], obj[OBJ_HASHES]
    if len(oid) != OID_LEN:
        raise Reject(BAD_MANIFEST, "object id of %d bytes, not %d" % (len(oid), OID_LEN))
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise Reject(BAD_MANIFEST, "chunk_size %s is not 1..%d" % (_short(chunk_size),
                                                                   MAX_CHUNK_SIZE))
    if not 1 <= count <= MAX_OBJECT_CHUNKS:
        raise Reject(BAD_MANIFEST, "count %s is not 1..%d" % (_short(count), MAX_OBJECT_CHUNKS))
    if not 0 <= size <= count * chunk_size:
        raise Reject(BAD_MANIFEST, "size %s is not 0..count x chunk_size (%d)"
                     % (_short(size), count * chunk_size))
    if len(hashes) != count * HASH_LEN:
        raise Reject(BAD_MANIFEST, "%d bytes of chunk hashes for %d chunks" % (len(hashes), count))
    if len(root) != HASH_LEN or merkle.root(
            [hashes[i:i + HASH_LEN] for i in range(0, len(hashes), HASH_LEN)]) != root:
        raise Reject(BAD_MANIFEST, "Merkle root does not match the chunk hashes")
    return Manifest(oid.hex(), event, ctype, size, chunk_size, count, root, hashes)


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def ranges(indexes: Iterable[int]) -> list[int]:
    """Sorted chunk indexes -> [first, last, first, last, ...], inclusive."""
    out: list[int] = []
    for i in indexes:
        if out and out[-1] == i - 1:
            out[-1] = i
        else:
            out += [i, i]
    return out
