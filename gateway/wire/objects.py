"""Camera objects on the wire: the chunk message and the manifest's object map.

A chunk is CBOR [object id, index, COSE_Encrypt0] (or [object id] to ask which chunks the
gateway holds); it is not signed, and is accepted only if its SHA-256 is the one the
object's signed manifest lists at its index. Both must be canonical CBOR (protocol.decode).
"""
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from agent.objects import (
    ENV_OBJECT,
    HASH_LEN,
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
from gateway.wire.protocol import MALFORMED, OVERSIZE, UP_TOPIC, Reject, decode

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


def parse_manifest(payload: bytes) -> Manifest:
    """The object map of a verified manifest envelope."""
    env = decode(payload, "manifest envelope")
    try:
        obj = env[ENV_OBJECT]
        fields = (obj[OBJ_ID], obj[OBJ_EVENT], obj[OBJ_TYPE], obj[OBJ_SIZE],
                  obj[OBJ_CHUNK_SIZE], obj[OBJ_COUNT], obj[OBJ_ROOT], obj[OBJ_HASHES])
    except (KeyError, TypeError, ValueError) as e:
        raise Reject(MALFORMED, "manifest without its object map (%s)" % e)
    types = (bytes, str, str, int, int, int, bytes, bytes)
    if not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(fields, types)):
        raise Reject(MALFORMED, "manifest object fields have the wrong types")
    oid, event, ctype, size, chunk_size, count, root, hashes = fields
    if len(oid) != OID_LEN or count < 1 or len(hashes) != count * HASH_LEN:
        raise Reject(MALFORMED, "manifest object id, count or hash list is inconsistent")
    if merkle.root([hashes[i:i + HASH_LEN] for i in range(0, len(hashes), HASH_LEN)]) != root:
        raise Reject(MALFORMED, "manifest Merkle root does not match its chunk hashes")
    return Manifest(oid.hex(), event, ctype, size, chunk_size, count, root, hashes)


def ranges(indexes: Iterable[int]) -> list[int]:
    """Sorted chunk indexes -> [first, last, first, last, ...], inclusive."""
    out: list[int] = []
    for i in indexes:
        if out and out[-1] == i - 1:
            out[-1] = i
        else:
            out += [i, i]
    return out
