"""Camera objects on the wire: the chunk message and the manifest's object map.

A chunk is CBOR [object id, index, COSE_Encrypt0] (or [object id] to ask which chunks the
gateway holds); it is not signed, and is accepted only if its SHA-256 is the one the
object's signed manifest lists at its index. Both must be canonical CBOR (protocol.decode).

Each object is encrypted under its own random content key, which the manifest carries
wrapped under the device's data key (object key 8), with a commitment to the plaintext
(key 9): HMAC-SHA256(opening, plaintext), opening = HMAC-SHA256(content key, "edgekeep
opening"). The gateway checks their shape only: it holds no key that opens either. The
owner unwraps (gateway/owner/objects.py) and checks the commitment here.
"""
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from agent.objects import (
    ENV_OBJECT,
    HASH_LEN,
    MAX_CHUNK_SIZE,
    OBJ_CHUNK_SIZE,
    OBJ_COMMIT,
    OBJ_COUNT,
    OBJ_EVENT,
    OBJ_HASHES,
    OBJ_ID,
    OBJ_KEY,
    OBJ_OF,
    OBJ_ROOT,
    OBJ_SIZE,
    OBJ_TYPE,
    OID_LEN,
    OPENING_LABEL,
    WRAPPED_KEY_LEN,
)
from agent.proto import ALG_AES_CCM_16_128_128, COSE_ALG, COSE_IV, NONCE_LEN, TAG_ENCRYPT0
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
    wrapped_key: bytes = b""   # COSE_Encrypt0 of the content key; b"": legacy (see below)
    commit: bytes = b""        # HMAC-SHA256(opening, plaintext); b"" for a legacy object
    of: bytes | None = None    # the object (id) this one belongs to, if any

    @property
    def legacy(self) -> bool:
        """Stored before content keys (no key 8): its chunks are under the data key itself."""
        return not self.wrapped_key


class CommitmentMismatch(ValueError):
    """The plaintext (or the opening) is not the one the device committed to."""


def opening_for(content_key: bytes) -> bytes:
    """The opening of an object's commitment: what proves its plaintext without decrypting."""
    return hmac.digest(content_key, OPENING_LABEL, "sha256")


def commitment(opening: bytes, plaintext: bytes) -> bytes:
    return hmac.digest(opening, plaintext, "sha256")


def check_commitment(manifest: Manifest, opening: bytes, plaintext: bytes) -> None:
    """CommitmentMismatch unless plaintext is the one manifest commits to, with opening."""
    committer = Committer(opening)
    committer.update(plaintext)
    committer.check(manifest)


class Committer:
    """The commitment computed as the plaintext streams by, for objects too big to hold."""

    def __init__(self, opening: bytes) -> None:
        self._mac = hmac.new(opening, digestmod=hashlib.sha256)

    def update(self, data: bytes) -> None:
        self._mac.update(data)

    def check(self, manifest: Manifest) -> None:
        """CommitmentMismatch unless what was fed is the plaintext manifest commits to."""
        if manifest.legacy:
            raise CommitmentMismatch("object %s predates commitments (legacy manifest)"
                                     % manifest.oid)
        if not hmac.compare_digest(self._mac.digest(), manifest.commit):
            raise CommitmentMismatch("object %s: the plaintext is not the one its manifest "
                                     "commits to" % manifest.oid)


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


_ENCRYPT0_TAGS = frozenset((TAG_ENCRYPT0,))
_PROTECTED_CCM = cbor2.dumps({COSE_ALG: ALG_AES_CCM_16_128_128})

# The object map's ranges (docs/protocol.md, "Manifest"): a chunk fits one chunk message,
# and the hash list (32 bytes a chunk) fits one 64 KiB message several times over.
MAX_OBJECT_CHUNKS = 2**16 - 1
_OBJECT_FIELDS = ((OBJ_ID, "id", bytes), (OBJ_EVENT, "event", str), (OBJ_TYPE, "type", str),
                  (OBJ_SIZE, "size", int), (OBJ_CHUNK_SIZE, "chunk_size", int),
                  (OBJ_COUNT, "count", int), (OBJ_ROOT, "root", bytes),
                  (OBJ_HASHES, "hashes", bytes))


def parse_manifest(payload: bytes, stored: bool = False) -> Manifest:
    """The object map of a verified manifest envelope; Reject (BAD_MANIFEST for the object
    map, MALFORMED/NONCANONICAL for the envelope's CBOR) and never any other exception.

    A new manifest must carry the wrapped content key and the commitment (keys 8, 9).
    stored=True reads one the store holds already, which may predate them: a legacy
    manifest then has wrapped_key == commit == b"" (its chunks are under the data key)."""
    env = decode(payload, "manifest envelope")
    try:
        return _manifest(env, stored)
    except Reject:
        raise
    except Exception as e:  # a case the checks below missed is still this manifest's fault
        raise Reject(BAD_MANIFEST, "object map: %s: %s" % (type(e).__name__, e))


def _manifest(env: Any, stored: bool) -> Manifest:
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
    if stored and OBJ_KEY not in obj and OBJ_COMMIT not in obj:
        return Manifest(oid.hex(), event, ctype, size, chunk_size, count, root, hashes,
                        of=_of(obj))
    return Manifest(oid.hex(), event, ctype, size, chunk_size, count, root, hashes,
                    _wrapped_key(obj), _commit(obj), _of(obj))


def _bstr(obj: Mapping[Any, Any], key: int, name: str, size: int) -> bytes:
    if key not in obj:
        raise Reject(BAD_MANIFEST, "object map without %s (key %d)" % (name, key))
    value = obj[key]
    if not isinstance(value, bytes):
        raise Reject(BAD_MANIFEST, "object %s has type %s" % (name, type(value).__name__))
    if len(value) != size:
        raise Reject(BAD_MANIFEST, "object %s of %d bytes, not %d" % (name, len(value), size))
    return value


def _wrapped_key(obj: Mapping[Any, Any]) -> bytes:
    """Key 8: a tagged COSE_Encrypt0 (AES-CCM-16-128-128, 13-byte nonce) of 16 key bytes."""
    wrapped = _bstr(obj, OBJ_KEY, "key", WRAPPED_KEY_LEN)
    try:
        item = decode(wrapped, "wrapped key", _ENCRYPT0_TAGS)
    except Reject as r:  # signed inside the manifest: the object map's fault
        raise Reject(BAD_MANIFEST, r.detail)
    if not (isinstance(item, cbor2.CBORTag) and item.tag == TAG_ENCRYPT0
            and isinstance(item.value, list) and len(item.value) == 3):
        raise Reject(BAD_MANIFEST, "wrapped key is not a tagged COSE_Encrypt0")
    protected, unprotected, ciphertext = item.value
    if protected != _PROTECTED_CCM:
        raise Reject(BAD_MANIFEST, "wrapped key: protected header is not {1: 30} (AES-CCM)")
    if not (isinstance(unprotected, Mapping) and list(unprotected) == [COSE_IV]
            and isinstance(unprotected[COSE_IV], bytes)
            and len(unprotected[COSE_IV]) == NONCE_LEN and isinstance(ciphertext, bytes)):
        raise Reject(BAD_MANIFEST, "wrapped key: not {5: 13-byte nonce} and a ciphertext")
    return wrapped


def _commit(obj: Mapping[Any, Any]) -> bytes:
    return _bstr(obj, OBJ_COMMIT, "commit", HASH_LEN)


def _of(obj: Mapping[Any, Any]) -> bytes | None:
    if OBJ_OF not in obj:
        return None
    of = _bstr(obj, OBJ_OF, "of", OID_LEN)
    if of == obj[OBJ_ID]:
        raise Reject(BAD_MANIFEST, "object %s is of itself" % of.hex())
    return of


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
