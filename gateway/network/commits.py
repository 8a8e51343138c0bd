"""The gateway's network epochs on chain (docs/network.md, "Commits on chain").

A network epoch closes when the gateway's placements changed since the last one (or an
agreement is new or changed), at most once per `period`. Its leaves are, for each peer
holding shares of ours (sorted by name), the 72-byte agreement leaf
`provider || count || root` where root is the RFC 9162 root over the leaves of its slots in
order; its root goes on chain in one transaction, StorageNetwork.commit, with the
agreements that are new or changed since what the chain records: gas is flat per epoch
whatever the data.

The outbox follows the anchor's (gateway/anchor/epochs.py): the epoch is recorded
(network_commits, 'pending'), sent ('sent', with its tx hash), its receipt waited for
('mined'); a failure is retried with back-off, and after a crash the chain is asked first
(commitOf), so an epoch is never sent twice. Once mined, each provider is sent its
agreement's place in the epoch (POST /v1/commit: index, size, path), so that it can prove
its slots against the chain when challenged. `on_commit(epoch)` runs after each epoch is
mined (the metadata snapshot hangs off it).
"""
import logging
import threading
import time

import cbor2

from gateway.health import DISK_FULL, Registry, disk_full
from gateway.network import protocol
from gateway.network.client import Clients, PeerError
from gateway.store.placements import split_leaves
from gateway.wire import merkle

log = logging.getLogger("edgekeep.network")

RECEIPT_TIMEOUT = 60
ROLES = 3               # StorageNetwork roles: Provider (1) and Keeper (2)
BACKOFF_MAX = 60
STOP_JOIN = 5


class Leaf:
    """One agreement in a network epoch: provider name, slot count, its root, the 72 bytes."""

    def __init__(self, provider, count, root):
        self.provider, self.count, self.root = provider, count, root
        self.bytes = protocol.agreement_leaf(provider, count, root)


def epoch_leaves(placements):
    """The agreement leaves of the gateway's current placements, by provider name."""
    out = []
    for peer in placements.peers():
        slots = placements.leaves(peer)
        if slots:
            out.append(Leaf(peer, len(slots), merkle.root(slots)))
    return out


class Committer:
    def __init__(self, store, identity, chain_or_connect, clients=None, health=None, period=60,
                 on_commit=None, endpoint=""):
        """The commit outbox over a Store of its own (Store.connect: this thread's connection).

        chain_or_connect: the Chain client, or a function that makes one (called in the
        thread, again with back-off until the chain answers). clients: how to talk to a peer,
        as for Placer (None: a PeerClient per peer; a function (name, endpoint); a mapping by
        name). period: seconds at least between two epochs. on_commit(epoch): runs after an
        epoch is mined (exceptions are logged). health: the process's Registry. endpoint:
        the peer endpoint registered on chain with the identity ("" if it has none)."""
        self.store = store
        self.placements = store.placements
        self.identity = identity
        if callable(chain_or_connect) and not hasattr(chain_or_connect, "send_commit"):
            self.chain, self._connect = None, chain_or_connect
        else:
            self.chain, self._connect = chain_or_connect, None
        self._clients = Clients(identity, clients)
        self.period = period
        self.on_commit = on_commit
        self.endpoint = endpoint
        self.registered = False
        self.notified = {}          # provider -> the last epoch it accepted
        self.backoff = 1
        self.last_close = None      # time.monotonic() of the last look for changes
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.lock = threading.RLock()
        registry = health or Registry()
        self.health = registry.component("network-commits")
        self.thread = registry.thread("network-commits", self._run, self._stop)

    # -- peers -------------------------------------------------------------------------

    def client(self, name, endpoint):
        return self._clients(name, endpoint)

    # -- closing an epoch --------------------------------------------------------------

    def changed(self):
        """[(provider32, capacity, term_end)] of the agreements the chain does not record as
        they are now (new, or capacity or term changed), by provider name."""
        out = []
        for p in self.store.peers.all():
            if p.status == "removed":
                continue
            provider = bytes.fromhex(p.name)
            capacity, term_end = int(p.capacity), int(p.term_end)
            on_chain = self.chain.agreement_of(self.identity.public, provider)
            if on_chain is None or (on_chain["capacity"], on_chain["term_end"]) != (capacity,
                                                                                    term_end):
                out.append((provider, capacity, term_end))
        return out

    def close(self, force=False):
        """Close a network epoch if the placements (or the agreements) changed since the last
        one; the epoch, or None. Not while an earlier epoch is unmined (epochs go on chain in
        order), nor within `period` of the last one unless force."""
        with self.lock:
            if self.placements.unmined_commits():
                return None
            if (not force and self.last_close is not None
                    and time.monotonic() - self.last_close < self.period):
                return None
            self.last_close = time.monotonic()
            leaves = epoch_leaves(self.placements)
            if not leaves:
                return None
            joined = b"".join(lf.bytes for lf in leaves)
            changed = self.changed()
            last = self.placements.last_mined()
            latest = self.chain.latest_network_epoch(self.identity.public)
            if (last is not None and last.epoch == latest and last.leaves == joined
                    and not changed):
                return None
            epoch = latest + 1
            root = merkle.root([lf.bytes for lf in leaves])
            self.placements.add_commit(epoch, root, joined, cbor2.dumps(
                [[p, c, t] for p, c, t in changed]), time.time())
            log.info("network epoch %d closed: %d agreement(s), %d new or changed, root %s",
                     epoch, len(leaves), len(changed), root.hex())
            return epoch

    # -- the outbox ----------------------------------------------------------------------

    def pending(self):
        return self.placements.unmined_commits()

    def step(self):
        """Send the pending epochs, oldest first, until one fails (kept, retried after a
        back-off), then tell the providers of the latest mined epoch where their agreement
        is in it. True if none failed."""
        with self.lock:
            for c in self.pending():
                if self._stop.is_set():
                    return True
                try:
                    self.send(c.epoch)
                    self.backoff = 1
                except Exception as e:
                    if disk_full(e):
                        raise
                    self.placements.commit_failed(c.epoch, str(e)[:500])
                    hint = ""
                    if getattr(e, "reason", None) == "NotIdentityOwner":
                        hint = " (this gateway's identity is not registered on chain from this " \
                               "account: register it first)"
                    log.warning("network epoch %d not committed (%s)%s; retry in %d s", c.epoch,
                                e, hint, self.backoff)
                    self.health.waiting("chain", "network epoch %d not committed: %s"
                                        % (c.epoch, str(e)[:200]))
                    return False
            self.tell_providers()
            return True

    def send(self, epoch):
        """Put one pending epoch on chain and wait for it (found there already after a crash:
        not sent again); the epoch's row after."""
        c = self.placements.commit(epoch)
        owner = self.identity.public
        count = len(split_leaves(c.leaves))
        changed = [(bytes(p), cap, term) for p, cap, term in cbor2.loads(c.changed)]
        on_chain = self.chain.commit_of(owner, epoch)
        if on_chain is not None and (on_chain["root"], on_chain["agreements"]) != (c.root, count):
            self.placements.drop_commit(epoch)
            raise RuntimeError("network epoch %d holds another root on chain (%s): closed again "
                               "from the chain's latest" % (epoch, on_chain["root"].hex()))
        if on_chain is None:
            self.register()
            latest = self.chain.latest_network_epoch(owner)
            if epoch != latest + 1:
                self.placements.drop_commit(epoch)
                raise RuntimeError("network epoch %d is not the chain's next (%d): closed again"
                                   % (epoch, latest + 1))
            tx_hash = self.chain.send_commit(owner, epoch, c.root, count, changed)
            self.placements.commit_sent(epoch, tx_hash)
            receipt = self.chain.wait_receipt(tx_hash, RECEIPT_TIMEOUT)
            if not receipt["status"]:
                raise RuntimeError("commit tx %s for network epoch %d reverted" % (tx_hash, epoch))
            block, gas = receipt["block_number"], receipt["gas_used"]
        else:   # mined before a crash, or by an earlier run
            tx_hash, block, gas = c.tx_hash, on_chain["block_number"], None
        self.placements.commit_mined(epoch, block, gas)
        log.info("network epoch %d committed in block %d (tx %s, %d agreement(s))", epoch, block,
                 tx_hash, count)
        if self.on_commit is not None:
            try:
                self.on_commit(epoch)
            except Exception:
                log.exception("after network epoch %d: on_commit failed", epoch)
        return self.placements.commit(epoch)

    def register(self):
        """Register this gateway's identity on StorageNetwork (Provider and Keeper, its
        endpoint) from the chain account, unless the chain has it so already."""
        if self.registered:
            return
        me = self.chain.gateway_of(self.identity.public)
        if me is None or me["endpoint"] != self.endpoint or me["roles"] != ROLES:
            statement = protocol.registration_statement(
                self.chain.chain_id, self.chain.storage_network.address, self.chain.address)
            self.chain.register_gateway(self.identity.public, ROLES, self.endpoint,
                                        self.identity.sign(statement))
            log.info("gateway %s registered on chain as Provider and Keeper (%s)",
                     self.identity.short, self.endpoint or "no endpoint")
        self.registered = True

    def tell_providers(self):
        """POST /v1/commit to every provider of the latest mined epoch that has not accepted it
        yet; how many accepted now. One not answering is told on a later step."""
        c = self.placements.last_mined()
        if c is None:
            return 0
        leaves = split_leaves(c.leaves)
        peers = {p.name: p for p in self.store.peers.all() if p.status != "removed"}
        n = 0
        for i, raw in enumerate(leaves):
            provider, count, root = protocol.AGREEMENT_LEAF.unpack(raw)
            name = provider.hex()
            if self.notified.get(name) == c.epoch or name not in peers:
                continue
            try:
                self.client(name, peers[name].endpoint).commit(
                    c.epoch, count, root, i, len(leaves), merkle.inclusion_proof(leaves, i))
            except PeerError as e:
                log.info("provider %s not told of network epoch %d (%s); told later", name[:16],
                         c.epoch, e)
                if getattr(e, "reason", None) not in ("unreachable", "rate_limited"):
                    self.notified[name] = c.epoch   # refused (root_mismatch): not asked again
                    log.warning("provider %s refused network epoch %d: %s", name[:16], c.epoch, e)
                continue
            self.notified[name] = c.epoch
            n += 1
        return n

    def commit_now(self):
        """Close an epoch if anything changed and send what is pending; the latest mined
        epoch's row (the CLI, the tests)."""
        if self.chain is None:
            self.chain = self._connect()
        self.close(force=True)
        self.step()
        return self.placements.last_mined()

    # -- the thread ------------------------------------------------------------------------

    def start(self):
        self.thread.start()
        return self

    def notify(self, *_):
        self.wake.set()

    def stop(self, join=STOP_JOIN):
        self._stop.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(join)   # a receipt being waited for ends with the process
        left = self.pending()
        if left:
            log.warning("stopping with %d network epoch(s) not yet committed; they go out on the "
                        "next start", len(left))

    def _run(self):
        """Connect if need be, close an epoch when due, send the outbox. The chain down and
        the disk full are waited out here; anything else escapes to the supervisor."""
        while not self._stop.is_set():
            self.wake.wait(min(self.period, 5))
            self.wake.clear()
            if self._stop.is_set():
                break
            if self.chain is None and not self._connect_chain():
                continue
            try:
                self.close()
                ok = self.step()
            except Exception as e:
                if not disk_full(e):
                    raise
                self.health.pause(DISK_FULL, "disk full: %s" % e)
                log.warning("network commits: disk full (%s); retry in %d s", e, self.backoff)
                self._wait_backoff()
                continue
            if ok:
                self.health.progress()
            else:
                self._wait_backoff()

    def _connect_chain(self):
        try:
            self.chain = self._connect()
        except Exception as e:
            if self.backoff == 1 or self.backoff >= BACKOFF_MAX:
                log.warning("chain not reachable (%s); network commits wait, retry in %d s",
                            str(e)[:200], self.backoff)
            self.health.waiting("chain", "chain not reachable: %s" % str(e)[:200])
            self._wait_backoff()
            return False
        self.backoff = 1
        self.health.alive()
        return True

    def _wait_backoff(self):
        self._stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.wake.set()
