"""The owner's side of camera objects: unwrap an object's content key with the device's
data key, and decrypt its chunks with it, checking the plaintext against the commitment the
device signed (docs/protocol.md, "Objects"). Runs where the keyring is, never on the gateway.
"""
from collections.abc import Iterable, Iterator

from agent.objects import CONTENT_KEY_LEN, KIND_MANIFEST
from agent.proto import up_topic
from gateway.owner.export import decrypt_encrypt0
from gateway.wire import protocol
from gateway.wire.objects import Committer, Manifest, opening_for, parse_manifest


class LegacyObject(ValueError):
    """The object predates content keys: its chunks are under the device's data key."""


def stored_manifest(device: str, raw: bytes) -> Manifest:
    """The object map of a manifest message as the store holds it (legacy ones included)."""
    signed = protocol.parse(up_topic(device, KIND_MANIFEST), raw, len(raw))
    return parse_manifest(signed.payload, stored=True)


def unwrap_content_key(data_key: bytes, manifest: Manifest) -> bytes:
    """The object's 16-byte content key: opens its chunks and nothing else of the device.

    LegacyObject for an object stored before content keys (sharing it would mean sharing
    the data key); cryptography's InvalidTag if data_key is not the device's."""
    if manifest.legacy:
        raise LegacyObject("object %s has no content key: it predates them" % manifest.oid)
    key = decrypt_encrypt0(data_key, manifest.wrapped_key)
    if len(key) != CONTENT_KEY_LEN:
        raise ValueError("object %s: the wrapped content key is %d bytes, not %d"
                         % (manifest.oid, len(key), CONTENT_KEY_LEN))
    return key


def chunk_key(data_key: bytes, manifest: Manifest) -> bytes:
    """The key its chunks are encrypted under: the content key, or a legacy object's data key."""
    return data_key if manifest.legacy else unwrap_content_key(data_key, manifest)


def decrypt_chunks(data_key: bytes, manifest: Manifest,
                   chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The plaintext of each chunk (COSE_Encrypt0), in order; after the last, CommitmentMismatch
    if the whole is not what the device committed to (a legacy object has no commitment), and
    ValueError if its size is not the manifest's."""
    key = chunk_key(data_key, manifest)
    committer = None if manifest.legacy else Committer(opening_for(key))
    size = 0
    for enc in chunks:
        plain = decrypt_encrypt0(key, enc)
        size += len(plain)
        if committer is not None:
            committer.update(plain)
        yield plain
    if size != manifest.size:
        raise ValueError("object %s decrypted to %d bytes, its manifest says %d"
                         % (manifest.oid, size, manifest.size))
    if committer is not None:
        committer.check(manifest)
