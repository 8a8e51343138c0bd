"""The gateway's metadata in the network (docs/network.md, "The catalog and the metadata").

After each sealed epoch a snapshot (store.backup's delta since the last one, plus the few
files a gateway needs to take its devices back: broker accounts, admin password, contract
addresses) becomes a blob of the local Provider, so the placer puts it on peers like any
other. Once every snapshot is durable off-box, the catalog that lists them, sealed with the
storage key, goes to every peer: with the keyring and one peer, a restore finds the rest.
"""
import hashlib
import logging
import os
import time

import cbor2

from gateway.network import protocol
from gateway.wire import canonical

log = logging.getLogger("edgekeep.network")

SNAPSHOT_MAGIC = b"EKMETA1"
# What a gateway on a new machine needs to accept its devices again, relative to DATA_DIR.
FILES = ("broker/passwd", "broker/acl", "broker/gateway.secret", "admin-password.argon2",
         "chain/deployment.json")


def encode_snapshot(delta):
    return SNAPSHOT_MAGIC + cbor2.dumps(delta, canonical=True)


def decode_snapshot(blob):
    if not blob.startswith(SNAPSHOT_MAGIC):
        raise ValueError("not a metadata snapshot")
    return cbor2.loads(blob[len(SNAPSHOT_MAGIC):])


def is_snapshot(blob):
    return blob.startswith(SNAPSHOT_MAGIC)


def read_files(data_dir):
    out = {}
    for rel in FILES:
        try:
            with open(os.path.join(data_dir, rel), "rb") as f:
                out[rel] = f.read()
        except FileNotFoundError:
            pass
    return out


def write_files(data_dir, files):
    for rel, data in files.items():
        if rel not in FILES:
            raise ValueError("a snapshot names a file EdgeKeep does not restore: %s" % rel)
        path = os.path.join(data_dir, rel)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)


def seal_catalog(identity, peers, snapshots, now):
    """The catalog sealed for the peers: peers as [{name, endpoint, capacity, quota,
    term_end}], snapshots the sealed digests of the snapshot blobs, in order."""
    doc = {"v": 1, "name": identity.name, "time": int(now), "peers": peers,
           "snapshots": snapshots}
    return identity.seal(cbor2.dumps(doc, canonical=True))


def open_catalog(identity, sealed):
    """The catalog a peer returned; protocol.Refused if it is not this identity's."""
    doc = canonical.loads(identity.open(sealed))
    if doc.get("v") != 1 or doc.get("name") != identity.name:
        raise protocol.Refused("not_ours", "the catalog is another gateway's")
    return doc


class Metadata:
    def __init__(self, store, provider, identity):
        """Snapshots of a Store's metadata into its Provider; no I/O."""
        self.store = store
        self.provider = provider
        self.identity = identity
        self._last_state = None   # (devices, files) of the last snapshot made by this process

    def snapshot(self, now=None):
        """Put a snapshot into the Provider if epochs were sealed, or devices or files changed,
        since the last one; its digest, or None."""
        now = time.time() if now is None else now
        since = self.store.backup.last_mark()
        delta, mark = self.store.backup.delta(since, now)
        delta["files"] = read_files(self.store.data_dir)
        state = cbor2.dumps([delta["devices"], delta["files"]], canonical=True)
        if mark[:2] == since[:2] and since.time and state == self._last_state:
            return None
        blob = encode_snapshot(delta)
        digest = hashlib.sha256(blob).digest()
        with self.store.transaction():
            self.provider.put(digest, blob)
            self.store.backup.add_snapshot(digest, mark)
        self._last_state = state
        log.info("metadata snapshot %s: epochs up to %d, %d message rows", digest.hex()[:16],
                 mark.epoch, len(delta["messages"]))
        return digest

    def publishable(self):
        """True when the peers' catalog is behind and every snapshot is durable off-box."""
        if not self.store.backup.unpublished():
            return False
        for digest in self.store.backup.snapshots():
            state = self.store.placements.get(digest)
            if state is None or state.durable_at is None:
                return False
        return True

    def catalog(self, now):
        """This gateway's catalog, sealed: its peers and its snapshots' sealed digests."""
        peers = [{"name": p.name, "endpoint": p.endpoint, "capacity": p.capacity,
                  "quota": p.quota, "term_end": int(p.term_end)}
                 for p in self.store.peers.all() if p.status != "removed"]
        snapshots = [self.store.placements.get(d).sealed for d in self.store.backup.snapshots()]
        return seal_catalog(self.identity, peers, snapshots, now)

    def publish(self, client_of, now=None):
        """Put the catalog on every active peer once its snapshots are durable off-box;
        client_of(peer row) gives a PeerClient. The peers that took it."""
        if not self.publishable():
            return 0
        now = time.time() if now is None else now
        sealed = self.catalog(now)
        took = 0
        for p in self.store.peers.all():
            if p.status not in ("active", "full"):
                continue
            try:
                client_of(p).put_catalog(sealed)
                took += 1
            except Exception as e:  # a peer down gets it next time
                log.warning("catalog not sent to peer %s: %s", p.name[:16], e)
        if took:
            self.store.backup.set_published(now)
            log.info("catalog published to %d peer(s): %d snapshot(s)", took,
                     len(self.store.backup.snapshots()))
        return took
