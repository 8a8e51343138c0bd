"""Restore a lost gateway from its peers (docs/network.md, "Restore").

With the identity from the owner's keyring and one peer, the catalog (sealed with the
identity's storage key) names every peer and the metadata snapshots. From each peer's slot
inventory the blobs are rebuilt (k shares, opened, checked against their digest) into a new
store's local Provider; the snapshots are replayed with the messages' bytes from their blobs;
every epoch is recomputed and checked against its root on chain. Resumable: a blob the new
Provider holds already is not fetched again, and replaying is idempotent.
"""
import collections
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

from gateway.chain.reader import ChainReader
from gateway.network import metadata, protocol
from gateway.network.client import PATIENCE, PeerClient, PeerError
from gateway.store import erasure
from gateway.store.provider import Provider
from gateway.wire import merkle

log = logging.getLogger("edgekeep.restore")


@dataclass
class Report:
    peers: int = 0
    blobs: int = 0                  # rebuilt and stored
    already: int = 0                # held from an interrupted run
    lost: list = field(default_factory=list)        # sealed digests with fewer than k shares
    messages: int = 0
    messages_lost: int = 0
    epochs_verified: int = 0
    epochs_pending: int = 0         # sealed, not anchored when the gateway was lost
    epochs_failed: list = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def lines(self):
        out = ["restored from %d peer(s) in %.1f s: %d blob(s) (%.1f MB), %d held already"
               % (self.peers, self.seconds, self.blobs, self.bytes / 1e6, self.already),
               "messages: %d restored, %d lost" % (self.messages, self.messages_lost),
               "epochs: %d verified against the chain, %d to anchor, %d failed%s" % (
                   self.epochs_verified, self.epochs_pending, len(self.epochs_failed),
                   (": " + ", ".join(map(str, self.epochs_failed))) if self.epochs_failed else "")]
        if self.lost:
            out.append("blobs lost (fewer than k shares on the peers): %d" % len(self.lost))
        return out

    @property
    def ok(self):
        return not self.lost and not self.epochs_failed and not self.messages_lost


class Restore:
    def __init__(self, store, identity, rpc_url, progress=None):
        """Restore into a Store (Store.open of the new data directory) with the identity
        from the keyring, checking epochs on the chain at rpc_url (the contracts are the
        restored deployment's); progress(done, total, what) is called as blobs arrive."""
        self.store = store
        self.identity = identity
        self.rpc_url = rpc_url
        self.provider = Provider.open(store)
        self.progress = progress or (lambda done, total, what: None)
        self.report = Report()

    def run(self, first):
        """Restore from `first`, a PeerClient to any peer holding this gateway's shares."""
        started = time.monotonic()
        catalog, clients = self._clients(self._catalog(first), first)
        with self.store.transaction():
            self.store.peers.restore(catalog["peers"])
        self.report.peers = len(clients)
        groups = self._inventory(clients)
        snapshots = [self._fetch(groups.pop(d, []), d) for d in catalog["snapshots"]]
        self._blobs(groups)
        deltas = [metadata.decode_snapshot(s) for s in snapshots if s is not None]
        if len(deltas) < len(catalog["snapshots"]):
            raise RuntimeError("%d metadata snapshot(s) could not be rebuilt: the store cannot "
                               "be put back together" % (len(catalog["snapshots"]) - len(deltas)))
        self._replay(deltas)
        self._verify_epochs()
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- the catalog and the peers -----------------------------------------------------

    def _catalog(self, first):
        try:
            return metadata.open_catalog(self.identity, first.get_catalog())
        except (PeerError, protocol.Refused) as e:
            raise RuntimeError("peer %s holds no catalog of this gateway (%s): is it one of its "
                               "peers, and is the identity in the keyring this gateway's?"
                               % (first.endpoint, e)) from None

    def _clients(self, catalog, first):
        """A client per peer of the newest catalog any of them holds (a peer that was down
        may hold an old one)."""
        clients = {first.name: first}
        for p in catalog["peers"]:
            if p["name"] not in clients:
                clients[p["name"]] = PeerClient(self.identity, p["name"], p["endpoint"],
                                             patience=PATIENCE)
        for name, client in list(clients.items()):
            try:
                other = metadata.open_catalog(self.identity, client.get_catalog())
            except (PeerError, protocol.Refused) as e:
                log.warning("peer %s: no catalog (%s)", name[:16], e)
                continue
            if other["time"] > catalog["time"]:
                catalog = other
        for p in catalog["peers"]:
            if p["name"] not in clients:
                clients[p["name"]] = PeerClient(self.identity, p["name"], p["endpoint"],
                                             patience=PATIENCE)
        return catalog, clients

    def _inventory(self, clients):
        """{sealed digest: [(client, slot listing)]} of the slots every answering peer still
        holds; the released ones are recorded as such (their leaves stay in the agreements'
        trees)."""
        groups = collections.defaultdict(list)
        for name, client in clients.items():
            released = []
            try:
                for s in client.slots():
                    if s["released"]:
                        released.append((name, s["slot"], s["digest"], s["index"], s["leaf"],
                                         s["size"]))
                    else:
                        groups[s["digest"]].append((client, s))
            except PeerError as e:
                log.warning("peer %s: no inventory (%s); restoring from the others",
                            name[:16], e)
            with self.store.transaction():
                self.store.placements.restore_released(released)
        return groups

    # -- blobs ---------------------------------------------------------------------------

    def _blobs(self, groups):
        total = len(groups)
        self.progress(0, total, "blobs")
        for n, (sealed, shares) in enumerate(sorted(groups.items()), 1):
            self._fetch(shares, sealed)
            self.progress(n, total, "blobs")

    def _fetch(self, shares, sealed):
        """The blob whose sealed digest this is, rebuilt from k of `shares` and put into the
        Provider; None if it cannot be."""
        known = self.store.placements.digest_of_sealed(sealed)
        if known is not None and self.provider.has(known):
            self.report.already += 1
            return self.provider.get(known)
        good = {}
        for client, s in shares:
            try:
                record = protocol.parse_record(client.get_slot(s["slot"]))
            except (PeerError, protocol.Refused) as e:
                log.warning("slot %d on %s: %s", s["slot"], client.name[:16], e)
                continue
            if record.sealed != sealed:
                continue
            good[record.index] = record
            if len(good) == record.k:
                break
        if not good or len(good) < next(iter(good.values())).k:
            self.report.lost.append(sealed)
            return None
        r = next(iter(good.values()))
        sealed_bytes = erasure.decode({j: x.body for j, x in good.items()}, r.size, r.k, r.m)
        if hashlib.sha256(sealed_bytes).digest() != sealed:
            self.report.lost.append(sealed)
            return None
        blob = self.identity.open(sealed_bytes)
        digest = hashlib.sha256(blob).digest()
        with self.store.transaction():
            self.provider.put(digest, blob)
            self.store.placements.restore_blob(
                digest, sealed, r.size, r.k, r.m,
                [(client.name, s["slot"], s["index"], s["leaf"], s["size"])
                 for client, s in shares])
        self.report.blobs += 1
        self.report.bytes += len(blob)
        return blob

    # -- the store ------------------------------------------------------------------------

    def _replay(self, deltas):
        def raw_of(digest):
            return self.provider.get(digest) if self.provider.has(digest) else None
        with self.store.transaction():
            for d in deltas:
                self.report.messages_lost += self.store.backup.apply(d, raw_of)
                metadata.write_files(self.store.data_dir, d["files"])
            self.store.backup.fix_acked()
        self.report.messages = self.store.message_count()

    def _verify_epochs(self):
        epochs = self.store.epochs()
        if not epochs:
            return
        chain = ChainReader(self.rpc_url, deployment(self.store.data_dir)["contracts"])
        for e in epochs:
            leaves = self.store.epoch_leaves(e["epoch"])
            on_chain = chain.anchor_of(e["epoch"])
            ok = (len(leaves) == e["count"] and merkle.root(leaves) == e["root"]
                  and (on_chain is None or on_chain["root"] == e["root"]))
            if ok and on_chain is not None:
                self.report.epochs_verified += 1
            elif ok:
                self.report.epochs_pending += 1
            else:
                self.report.epochs_failed.append(e["epoch"])


def deployment(data_dir):
    """The restored chain deployment (contract addresses); a clear error if the snapshots
    held none."""
    path = os.path.join(data_dir, "chain", "deployment.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RuntimeError("the snapshots hold no chain deployment (%s): the lost gateway never "
                           "reached its chain" % path) from None
