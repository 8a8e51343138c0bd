"""Bundles the admin page takes, and the release key they are checked against.

The owner gives the gateway its release public key once (the KEY.pub of `python -m firmware
keygen`, the same text every device keeps as release.pub): <data dir>/updates/release.pub.
It is not replaced from the admin page: a session alone must not be able to make the
gateway accept bundles under another key (the devices would still refuse them, each
checking against its own release.pub).

A bundle comes as a tar archive (gzip or not) of the directory `python -m firmware build`
wrote. It is unpacked with tarfile's "data" filter (no links out, no devices, no absolute
paths) within size limits, checked as `ota push` checks one (gateway/ingest/ota.py
Release.verified: signature under the release key, every file's sha256, a MicroPython
bundle), then kept under <data dir>/updates/bundles/<sha256 of its manifest>/.
"""
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time

from firmware import bundle
from gateway.ingest.ota import Release
from gateway.store.rollouts import Bundle

RELEASE_KEY = "release.pub"
MAX_ARCHIVE = 16 * 1024 * 1024     # bytes of an upload
MAX_UNPACKED = 32 * 1024 * 1024    # bytes of its files
MAX_MEMBERS = 512
REASONS = ("too_large", "not_an_archive", "not_a_bundle", "unsigned", "bad_signature",
           "file_mismatch", "not_for_ota", "no_release_key", "bad_key", "key_set")


class Rejected(Exception):
    """A bundle or key the gateway will not take: str() says why, .fix what to do, .reason
    the label it is counted under, .status the HTTP status."""

    def __init__(self, reason, message, fix, status=400):
        super().__init__(message)
        self.reason, self.fix, self.status = reason, fix, status


def updates_dir(data_dir):
    return os.path.join(data_dir, "updates")


def bundle_dir(data_dir, digest):
    return os.path.join(updates_dir(data_dir), "bundles", digest)


# -- the release key -------------------------------------------------------------

def release_key(data_dir):
    """The release public key (65 bytes) the owner gave, or None."""
    try:
        with open(os.path.join(updates_dir(data_dir), RELEASE_KEY)) as f:
            return bytes.fromhex(f.read().strip())
    except (OSError, ValueError):
        return None


def parse_key(text):
    try:
        key = bytes.fromhex(text.strip())
    except (AttributeError, ValueError):
        key = b""
    if len(key) != 65 or key[0] != 4:
        raise Rejected("bad_key", "not a release public key: hex of 65 bytes (04||X||Y) expected",
                       "paste the content of the KEY.pub `python -m firmware keygen` wrote")
    return key


def set_release_key(data_dir, text):
    """Keep the release public key; the same key again is fine, another one is refused (409)."""
    key = parse_key(text)
    have = release_key(data_dir)
    if have == key:
        return key
    if have is not None:
        raise Rejected("key_set", "this gateway already checks bundles against release key "
                       "%s..." % have.hex()[:18],
                       "the key is set once; to change it, delete %s on the gateway (devices "
                       "keep trusting their own release.pub)"
                       % os.path.join(updates_dir(data_dir), RELEASE_KEY), 409)
    os.makedirs(updates_dir(data_dir), exist_ok=True)
    path = os.path.join(updates_dir(data_dir), RELEASE_KEY)
    with open(path + ".tmp", "w") as f:
        f.write(key.hex() + "\n")
    os.replace(path + ".tmp", path)
    return key


# -- bundles ---------------------------------------------------------------------

def accept(data_dir, archive, now=None):
    """Check the uploaded archive (bytes) and keep it: (its Bundle row, its Release)."""
    key = release_key(data_dir)
    if key is None:
        raise Rejected("no_release_key", "the gateway has no release key to check bundles with",
                       "set it once on the Updates page (the KEY.pub of `python -m firmware "
                       "keygen`)", 409)
    if len(archive) > MAX_ARCHIVE:
        raise Rejected("too_large", "the upload is %d bytes; at most %d"
                       % (len(archive), MAX_ARCHIVE), "upload the bundle alone", 413)
    os.makedirs(updates_dir(data_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="upload-", dir=updates_dir(data_dir))
    try:
        root = unpack(archive, tmp)
        release = verify(root, key)
        digest = hashlib.sha256(release.manifest_bytes).hexdigest()
        final = bundle_dir(data_dir, digest)
        if not os.path.isdir(final):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(root, final)
        release = Release(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest_files = len(release.table)
    row = Bundle(digest, release.version, board_of(release), manifest_files, release.size,
                 time.time() if now is None else now)
    return row, release


def board_of(release):
    return json.loads(release.manifest_bytes).get("board", "?")


def unpack(archive, into):
    """Unpack a tar (gzip or not) into `into`; the directory holding manifest.json."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
    except (tarfile.TarError, EOFError, OSError):
        raise Rejected("not_an_archive", "the upload is not a tar archive",
                       "pack the bundle directory: `tar czf bundle.tar.gz -C dist "
                       "edgekeep-BOARD-VERSION`")
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise Rejected("not_an_archive", "the archive is damaged: %s" % e,
                           "pack the bundle again and upload it")
        if len(members) > MAX_MEMBERS or sum(m.size for m in members) > MAX_UNPACKED:
            raise Rejected("too_large", "the archive holds more than %d files or %d bytes"
                           % (MAX_MEMBERS, MAX_UNPACKED), "upload the bundle alone", 413)
        try:
            tar.extractall(into, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise Rejected("not_an_archive", "the archive cannot be unpacked safely: %s" % e,
                           "pack the bundle directory alone, without links")
    for parent, _, files in os.walk(into):
        if bundle.MANIFEST in files:
            return parent
    raise Rejected("not_a_bundle", "the archive holds no %s" % bundle.MANIFEST,
                   "upload the directory `python -m firmware build` wrote, packed with tar")


def verify(root, key):
    """The Release in root, once it is signed by key and every file matches."""
    try:
        return Release.verified(root, key)
    except bundle.BundleError as e:
        raise Rejected(*classify(str(e)), status=422)
    except (ValueError, KeyError) as e:
        raise Rejected("not_for_ota", "not a bundle OTA can send: %s" % e,
                       "build one for a MicroPython board: `python -m firmware build --board "
                       "esp32|esp32cam|pebble --sign-key release.key`", 422)


def classify(problem):
    """(reason, message, fix) for what bundle.load said."""
    if "is not signed" in problem:
        return ("unsigned", "the bundle is not signed (no %s)" % bundle.SIGNATURE,
                "sign it: `python -m firmware build --board B --sign-key release.key`")
    if "signature" in problem:
        return ("bad_signature", "the bundle's signature is not the release key's: it was "
                "signed with another key, or its manifest was changed after signing",
                "upload only bundles signed by your release key (`python -m firmware build "
                "--sign-key release.key`)")
    if "does not match" in problem:
        return ("file_mismatch", problem.replace("bundle file", "the bundle's file"),
                "rebuild the bundle (`python -m firmware build`) and upload it again")
    return ("not_a_bundle", problem, "upload the directory `python -m firmware build` wrote")
