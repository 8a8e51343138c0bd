# Receiving a release over the air (docs/protocol.md, "OTA"): the offer is checked (release
# signature, board, paths, no downgrade unless forced), each chunk goes straight to its
# file under ota/staging/ (a bundle is never held in RAM), and once every file matches the
# signed manifest, agent/ota.py swaps the release in. What has arrived is kept on flash
# (ota/offer, ota/have), so a transfer resumes after a reconnect or a reboot.
import binascii
import hashlib
import json

from agent import cbor
from agent.heap import collect
from agent.ota import (
    HAVE,
    MANIFEST,
    OFFER,
    STAGING,
    clear,
    exists,
    install,
    makedirs,
    read_json,
    remove,
    write,
)

VERSION = 1
OFFER_VERSION = 0            # offer map keys
OFFER_MANIFEST = 1
OFFER_SIGNATURE = 2
OFFER_CHUNK = 3
OFFER_FORCE = 4

RELEASE_KEY = "release.pub"  # hex of the owner's 65-byte release public key
DEVICE_FILES = ("identity.json", "config.json", RELEASE_KEY)  # a bundle may not write these
MAX_CHUNK = 4096
MAX_RANGES = 16              # missing ranges per report; the rest are asked for after
MAX_CHUNKS = 1 << 16         # chunks per release at most: its bitmap (8 KB) must fit the heap


class Refused(Exception):
    pass


class Malformed(Refused):
    """An offer that is not one (a bad downlink), as opposed to one this device declines."""


def layout(files, chunk_size):
    """The chunks of a manifest's files: [(path, size, first chunk index)] in path order,
    and the number of chunks. Each file is cut on its own; its last chunk may be short."""
    table = []
    count = 0
    for path in sorted(files):
        size = files[path]["size"]
        table.append((path, size, count))
        count += (size + chunk_size - 1) // chunk_size
    return table, count


def locate(table, chunk_size, index):
    """(path, offset, length) of chunk index."""
    for path, size, first in reversed(table):
        if index >= first and size:
            offset = (index - first) * chunk_size
            return path, offset, min(chunk_size, size - offset)
    raise ValueError("ota: no chunk %d" % index)


def parse_version(text):
    try:
        return tuple(int(part) for part in text.split("."))
    except (AttributeError, ValueError):
        raise Refused("version %r is not N.N.N" % (text,))


class Receiver:
    """One release at a time; updater is the agent/ota.py Updater (report, log, version)."""

    def __init__(self, updater):
        self.updater = updater
        self.release = None      # the release being received, with:
        self.offer_id = None     # sha256 of its offer
        self.table = None
        self.count = 0
        self.chunk_size = 0
        self.have = None
        self.complete = False    # every chunk is on flash: poll() installs
        if exists(OFFER):
            with open(OFFER, "rb") as f:
                raw = f.read()
            self._load(raw, cbor.loads(raw))

    def receive(self, payload):
        """An offer (a map) or a chunk (an array). Returns why the downlink is malformed (the
        agent counts it), or None: taken, declined with a report, or stale."""
        try:
            msg = cbor.loads(payload)
        except ValueError as e:
            return str(e)
        if isinstance(msg, dict):
            return self._offer(payload, msg)
        if isinstance(msg, list) and len(msg) == 3:
            return self._chunk(msg[0], msg[1], msg[2])
        return "neither an offer map nor a chunk [release, index, data]"

    def reconnected(self):
        if self.release is not None:
            self._report_need()

    def poll(self):
        """From the agent's loop, not from inside a downlink's handler: its buffers are free."""
        if self.complete:
            self._install()

    # -- an offer ----------------------------------------------------------------

    def _offer(self, raw, msg):
        if hashlib.sha256(raw).digest() == self.offer_id:  # the same offer: resume
            self._report_need()
            return None
        release = None
        try:
            manifest = self._check(msg)
            release = manifest["version"]
            if release == self.updater.version and not msg.get(OFFER_FORCE):
                self._report(release, "current")
                return None
        except Refused as e:
            self.updater.log("ota: refused an offer: %s" % e)
            self._report(release or "?", "refused", str(e))
            return str(e) if isinstance(e, Malformed) else None
        self._start(raw, msg, manifest)
        return None

    def _check(self, msg):
        """The offer's manifest, if this device may install it; else Refused says why."""
        from agent import p256
        manifest = msg.get(OFFER_MANIFEST)
        signature = msg.get(OFFER_SIGNATURE)
        chunk = msg.get(OFFER_CHUNK)
        if (msg.get(OFFER_VERSION) != VERSION or not isinstance(manifest, bytes)
                or not isinstance(signature, bytes) or len(signature) != 64
                or not isinstance(chunk, int) or isinstance(chunk, bool)
                or not 0 < chunk <= MAX_CHUNK):
            raise Malformed("malformed offer")
        current = self.updater.version
        if "boots" in self.updater.state:
            raise Refused("%s is still on trial" % current)
        if not p256.verify(_read_key(), hashlib.sha256(manifest).digest(), signature):
            raise Refused("bad signature: not signed by this device's release key")
        try:
            manifest = json.loads(manifest)
            release = manifest["version"]
            count = _check_files(manifest["files"], chunk)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Refused("malformed manifest")
        if not isinstance(release, str):
            raise Refused("malformed manifest")
        if count > MAX_CHUNKS:
            raise Refused("%d chunks of %d bytes: over %d" % (count, chunk, MAX_CHUNKS))
        board = self.updater.board
        if board and manifest.get("board") != board:
            raise Refused("bundle for board %s, this is %s" % (manifest.get("board"), board))
        for path in manifest["files"]:
            if (path in DEVICE_FILES or path == MANIFEST or path.startswith("ota/")
                    or path.startswith("/") or ".." in path):
                raise Refused("bundle may not write %s" % path)
        if (current and not msg.get(OFFER_FORCE)
                and parse_version(release) < parse_version(current)):
            raise Refused("downgrade from %s to %s (push it with --force)" % (current, release))
        return manifest

    def _start(self, raw, msg, manifest):
        """Receive this release: files already on flash as the manifest has them are kept."""
        clear(STAGING)
        remove(HAVE)
        write(OFFER, raw)
        self._load(raw, msg, manifest)
        files = manifest["files"]
        for path, size, first in self.table:
            collect()
            if _digest(path) == files[path]["sha256"]:
                for i in range(first, first + (size + self.chunk_size - 1) // self.chunk_size):
                    self.have[i >> 3] |= 1 << (i & 7)
        write(HAVE, self.have)
        self.updater.log("ota: receiving %s" % self.release)
        self.complete = not self._missing()
        if not self.complete:
            self._report_need()

    def _load(self, raw, msg, manifest=None):
        if manifest is None:
            manifest = json.loads(msg[OFFER_MANIFEST])
        self.offer_id = hashlib.sha256(raw).digest()
        self.release = manifest["version"]
        self.chunk_size = msg[OFFER_CHUNK]
        self.table, self.count = layout(manifest["files"], self.chunk_size)
        self.have = bytearray((self.count + 7) // 8)
        if exists(HAVE):
            with open(HAVE, "rb") as f:
                f.readinto(self.have)
        self.complete = not self._missing()

    def _missing(self):
        """Missing chunks as [first, last] ranges, at most MAX_RANGES of them."""
        ranges = []
        i = 0
        while i < self.count and len(ranges) < MAX_RANGES:
            if self._has(i):
                i += 1
                continue
            first = i
            while i < self.count and not self._has(i):
                i += 1
            ranges.append([first, i - 1])
        return ranges

    def _has(self, i):
        return self.have[i >> 3] >> (i & 7) & 1

    def _report(self, release, st, why=None):
        report = {"ota": release, "st": st}
        if why:
            report["why"] = why
        self.updater.report(report)

    def _report_need(self):
        self.updater.report({"ota": self.release, "st": "need", "need": self._missing()})

    # -- chunks ----------------------------------------------------------------

    def _chunk(self, release, index, data):
        """Returns why the chunk is malformed, or None (stored, or already held, or of a
        release this device is not receiving: a late one, no error)."""
        if not isinstance(release, str) or not isinstance(data, bytes):
            return "chunk: release is not text or data not bytes"
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return "chunk: index %r is not an unsigned int" % (index,)
        if self.release is None or release != self.release:
            return None
        if index >= self.count:
            return "chunk %d of a release of %d" % (index, self.count)
        if self._has(index):
            return None
        path, offset, length = locate(self.table, self.chunk_size, index)
        if len(data) != length:
            return "chunk %d is not %d bytes" % (index, length)
        staged = STAGING + "/" + path
        makedirs(staged)
        with open(staged, "r+b" if exists(staged) else "wb") as f:
            f.seek(offset)
            f.write(data)
        self.have[index >> 3] |= 1 << (index & 7)
        write(HAVE, self.have)
        self.complete = not self._missing()
        return None

    # -- installing --------------------------------------------------------------

    def _install(self):
        """Check every file against the signed manifest, then have it swapped in."""
        with open(OFFER, "rb") as f:
            manifest_bytes = cbor.loads(f.read())[OFFER_MANIFEST]
        files = json.loads(manifest_bytes)["files"]
        for path in files:
            collect()
            staged = STAGING + "/" + path
            if _digest(staged if exists(staged) else path) != files[path]["sha256"]:
                self._abandon("%s does not match the signed manifest" % path)
                return
        write(STAGING + "/" + MANIFEST, manifest_bytes)
        manifest_bytes = None
        added = [p for p in files if not exists(p)]
        if not exists(MANIFEST):
            added.append(MANIFEST)
        collect()
        removed = [p for p in (read_json(MANIFEST) or {"files": ()})["files"]
                   if p not in files and exists(p)]
        files = None
        collect()
        self._report(self.release, "installing")
        self.updater.log("ota: installing %s" % self.release)
        remove(OFFER)  # a cut from here on never resumes this transfer
        remove(HAVE)
        install({"version": self.release, "from": self.updater.version, "boots": 0,
                 "added": added, "removed": removed})

    def _abandon(self, why):
        self.updater.log("ota: refused %s: %s" % (self.release, why))
        self._report(self.release, "refused", why)
        clear(STAGING)
        remove(OFFER)
        remove(HAVE)
        self.release = self.offer_id = self.table = self.have = None
        self.count = 0
        self.complete = False


def _check_files(files, chunk_size):
    """The chunk count of a manifest's files map, each {"size": uint, "sha256": text}; raises
    TypeError or ValueError if it is not one."""
    count = 0
    for path in files:
        entry = files[path]
        size = entry["size"]
        if (not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool)
                or size < 0 or not isinstance(entry["sha256"], str)):
            raise ValueError("malformed file entry")
        count += (size + chunk_size - 1) // chunk_size
    return count


def _read_key():
    try:
        with open(RELEASE_KEY) as f:
            key = binascii.unhexlify(f.read().strip())
    except (OSError, ValueError):
        raise Refused("no release key on the device (%s)" % RELEASE_KEY)
    if len(key) != 65 or key[0] != 4:
        raise Refused("%s is not a P-256 public key" % RELEASE_KEY)
    return key


def _digest(path):
    """Hex sha256 of a file, or None if there is no such file."""
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    except OSError:
        return None
    return binascii.hexlify(h.digest()).decode()
