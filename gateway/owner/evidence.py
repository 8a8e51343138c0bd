"""The owner's evidence export: one camera object, decrypted, as a JPEG or MP4 with a C2PA
manifest signed by the owner's CA (gateway/owner/ca.py) and an EdgeKeep assertion that
proves the media against the chain without trusting the owner (docs/evidence.md).

    edgekeep share --data-dir DIR --object ID --key KEYRING --out FILE [--reveal-key]

Runs where the keyring is: the gateway's store gives the encrypted chunks, the signed
manifest and its epoch proof (gateway/cli/evidence.py fetches them); the keyring opens them.
"""
import contextlib
import io
import os
import time

import c2pa

from gateway.owner.objects import (
    LegacyObject,
    decrypt_chunks,
    unwrap_content_key,
)
from gateway.wire import evidence
from gateway.wire.objects import opening_for

DIGITAL_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


class NotShareable(ValueError):
    """The object cannot be evidence: not a JPEG or MP4, or stored before commitments."""


def plaintext_and_key(data_key, manifest, chunks):
    """(plaintext, content key) of a stored object, its chunks checked against the
    commitment its device signed; NotShareable if it cannot be evidence."""
    if manifest.type not in ("image/jpeg", "video/mp4"):
        raise NotShareable("object %s is %s: evidence files are JPEG snapshots and MP4 clips"
                           % (manifest.oid, manifest.type))
    try:
        content_key = unwrap_content_key(data_key, manifest)
    except LegacyObject as e:
        raise NotShareable("%s, so its device signed no commitment to its plaintext" % e)
    return b"".join(decrypt_chunks(data_key, manifest, chunks)), content_key


def make_assertion(device, public_key, manifest, content_key, proof, anchor, reveal_key=False):
    """The EdgeKeep assertion: proof is the manifest message's proof file (as
    gateway/keeper/proof.py builds it), anchor its epoch's {block, block_hash, transaction}."""
    return evidence.Assertion(device, public_key, manifest.oid, manifest.type, manifest.commit,
                              opening_for(content_key), content_key if reveal_key else None,
                              proof, anchor)


def manifest_definition(assertion, capture_time):
    """The C2PA manifest: a capture action, and the EdgeKeep assertion."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(capture_time))
    return {
        "claim_generator_info": [{"name": "EdgeKeep"}],
        "title": "%s-%s" % (assertion.device, assertion.oid),
        "format": assertion.type,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created", "when": when, "digitalSourceType": DIGITAL_CAPTURE,
                "description": "captured by EdgeKeep device %s" % assertion.device}]}},
            {"label": evidence.LABEL, "data": evidence.assertion_data(assertion)},
        ]}


def sign(plaintext, assertion, capture_time, ca, out_path):
    """Write plaintext with the signed C2PA manifest embedded to out_path (atomically)."""
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        b"es256", ca.chain_pem(), ca.key_pem(), None))
    # Checked after signing against the owner's own root: a file that would not validate
    # is never written.
    ctx = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}},
                                  "trust": {"trust_anchors": ca.root_pem().decode()},
                                  "verify": {"verify_after_sign": True}})
    part = out_path + ".part"
    try:
        with c2pa.Builder(manifest_definition(assertion, capture_time), context=ctx) as b, \
                open(part, "w+b") as out:
            b.sign(signer, assertion.type, io.BytesIO(plaintext), out)
        os.replace(part, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(part)
        raise
    finally:
        signer.close()
