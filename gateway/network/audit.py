"""The Keeper across peers (docs/network.md, "Challenges and the Keeper across peers").

The gateway challenges each peer that holds its shares: slots drawn from a settled block's hash
(protocol.draw_slots), each answer checked against the owner's network root on chain
(protocol.check_answer, through `check` here: the one check, for the RemoteKeeper and for
`edgekeep audit --remote PEER` alike). Each audit of a peer is an audit of mode "remote" in
the `audits` table, its records hashed like the local Keeper's (keeper.challenges.record_hash)
so that Keeper.anchor puts them on StorageAudit unchanged and they verify with the chain alone.

A record's fields for a remote challenge (docs/keeper.md, "Audits across peers"):
    Challenge(index = i, epoch = the owner's network epoch, leaf = the slot, select = 0)
    Outcome(outcome, detail, digest = SHA-256 of the record proven (ok) or None, chunk = -1)
The audited provider is not in the record hash: an audit row is one peer's, named in each
record's detail ("peer <16 hex>: ...").

A peer that fails a challenge is marked failed at once and its shares are rebuilt and placed
on another peer (Placer.replace); a peer that does not answer is marked failed only once it has
not answered for `grace` seconds. A failed peer that answers again is told to drop what was
re-placed (Placer.release_to).
"""
import logging
import threading
import time
from typing import NamedTuple

from gateway.health import DISK_FULL, Registry, disk_full, unreachable
from gateway.keeper.audit import Keeper
from gateway.keeper.challenges import Challenge, Outcome, record_hash, seed_block
from gateway.network import protocol
from gateway.network.client import Clients
from gateway.network.protocol import Refused
from gateway.store.audits import Record
from gateway.store.placements import FAILED, split_leaves
from gateway.wire import merkle

log = logging.getLogger("edgekeep.network.keeper")

MODE = "remote"
# A peer that says these has not answered the challenge (it may later): it is graced, as an
# unreachable one; any other refusal or a bad answer fails it.
# (wrong_key: another key answers at the peer's endpoint, so the peer is not reached.)
TRANSIENT = ("unreachable", "wrong_key", "rate_limited", "stale")
# The peer proves against an older commit than the chain's latest (or none): it may not have
# been told of the latest yet. Told, and challenged once more, before these count.
BEHIND = ("old_root", "no_commit", "not_found")
AUDITED = ("active", "full")     # peer statuses audited: full ones still hold our shares
STOP_JOIN = 5


class Target(NamedTuple):
    """What an audit of one agreement proves against, all of it from the chain but `count`."""
    owner: bytes       # 32-byte identity of the owner
    provider: str      # the provider's name
    epoch: int         # the owner's latest network epoch on chain
    root: bytes        # StorageNetwork.commitOf(owner, epoch).root
    count: int         # the agreement's slots in that epoch


class Result(NamedTuple):
    """One challenge: the slot, its record's Outcome, and the reason when it failed (a
    protocol reason: wrong_bytes, old_root, unreachable, ...)."""
    slot: int
    outcome: Outcome
    reason: str | None


def check(answer, slot, target):
    """"ok" or "released" (by the owner's signed DELETE of that slot) if the answer to
    challenge `slot` proves it against `target`, else Refused with the reason: the one check,
    protocol.check_answer, and what it leaves to its caller, that the answer's count is the
    one the slots were drawn from (a provider may not choose the range it is challenged in)."""
    try:
        outcome = protocol.check_answer(answer, slot, target.provider, target.root, target.epoch,
                                        target.owner.hex())
        count = answer["count"]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise Refused("bad_answer", "the answer is not a challenge answer (%s: %s)"
                      % (type(e).__name__, e)) from None
    if count != target.count:
        raise Refused("wrong_count", "the answer is for an agreement of %s slots, the slots were "
                      "drawn from %d" % (count, target.count))
    return outcome


def challenge(client, target, slots):
    """Challenge each slot and check each answer: [Result]. After a transient error (the
    peer does not answer) the remaining slots are not asked, and fail the same way."""
    out, down = [], None
    for slot in slots:
        if down is not None:
            out.append(_failed(slot, down.reason, "not asked: %s" % peer_error(down)))
            continue
        answer, error = ask(client, slot)
        if error is not None:
            if transient(error):
                down = error
            out.append(_failed(slot, error.reason, peer_error(error)))
        else:
            out.append(judge(answer, slot, target))
    return out


def ask(client, slot):
    """(the peer's answer to challenge `slot`, None), or (None, the PeerError)."""
    try:
        return client.challenge(slot), None
    except Exception as e:
        if getattr(e, "reason", None) is None:   # not a PeerError: a bug, not an outcome
            raise
        return None, e


def judge(answer, slot, target):
    """The Result of an answer to challenge `slot` (`check`)."""
    try:
        how = check(answer, slot, target)
    except Refused as r:
        return _failed(slot, r.reason, r.detail)
    if how == "released":
        return Result(slot, Outcome("skipped", "released by the owner", None, -1), None)
    digest = protocol.leaf(answer["record"])
    return Result(slot, Outcome("ok", "record %s proven" % digest.hex()[:16], digest, -1), None)


def transient(error):
    """True if a PeerError says the peer did not answer (rather than answered wrongly)."""
    reason = getattr(error, "reason", None)
    status = getattr(error, "status", None)
    return reason in TRANSIENT or (isinstance(status, int) and status >= 500 and status != 507)


def _failed(slot, reason, detail):
    return Result(slot, Outcome("failed", "%s: %s" % (reason, detail), None, -1), reason)


def peer_error(e):
    """What a PeerError says, without its reason."""
    return getattr(e, "detail", None) or str(e)


class RemoteKeeper:
    def __init__(self, store, identity, chain, clients, placer, grace=86400, samples=4):
        """The Keeper of this gateway's shares on its peers; no I/O.

        store: this thread's Store (its `peers`, `placements`, `audits`); identity: the
        gateway's network Identity (the owner); chain: a Chain (commits read, audits anchored);
        clients: how to talk to a peer, as for Placer (None: a PeerClient per peer; a mapping
        by name; a function (name, endpoint)); placer: the Placer that
        re-places a failed peer's shares (replace) and tells a returning one to drop them
        (release_to); grace: seconds a peer may stay unreachable before it counts as failed;
        samples: challenges per audit."""
        self.store = store
        self.audits = store.audits
        self.identity = identity
        self.chain = chain
        self.clients = Clients(identity, clients)
        self.placer = placer
        self.grace, self.samples = grace, samples
        self.halt = threading.Event()
        self._leaves = {}           # network epoch -> its agreement leaves (this gateway's row)

    def client(self, peer):
        """The client of a peer: as for Placer, `clients` None (a PeerClient per peer, kept),
        a mapping by name or a function (name, endpoint)."""
        row = self.store.peers.get(peer)
        if row is None:
            raise LookupError("%s is not a peer of this gateway" % peer[:16])
        return self.clients(peer, row.endpoint)

    # -- what is committed ---------------------------------------------------------------

    def committed(self):
        """{provider name: Target} of the owner's latest network epoch on chain, with each
        agreement's count from the commit row this gateway made for it (network_commits'
        leaves, checked against the root on chain); {} before the first commit."""
        owner = self.identity.public
        epoch = self.chain.latest_network_epoch(owner)
        if not epoch:
            return {}
        on_chain = self.chain.commit_of(owner, epoch)
        row = self.store.placements.commit(epoch)
        if on_chain is None or row is None:
            log.warning("network epoch %d: no commit row here for the root on chain; its "
                        "agreements are not audited until the next commit", epoch)
            return {}
        leaves = split_leaves(row.leaves)
        if merkle.root(leaves) != on_chain["root"]:
            log.error("network epoch %d: the commit row here does not give the root on chain "
                      "(%s); not audited", epoch, on_chain["root"].hex()[:16])
            return {}
        self._leaves = {epoch: leaves}
        out = {}
        for leaf in leaves:
            provider, count, _ = protocol.AGREEMENT_LEAF.unpack(leaf)
            out[provider.hex()] = Target(owner, provider.hex(), epoch, on_chain["root"], count)
        return out

    # -- audits --------------------------------------------------------------------------

    def audit(self, peer, target=None):
        """Audit one peer's agreement: the audit's id, or None when there is nothing to
        challenge (no committed agreement with it, or no slots). Updates the peer's row and
        re-places its shares if it failed (see the module's doc)."""
        if target is None:
            target = self.committed().get(peer)
        if target is None or not target.count:
            return None
        block = seed_block(self.chain)
        seed = bytes.fromhex(block["hash"][2:])
        results = self._challenge(peer, target, seed)
        if any(r.reason in BEHIND for r in results):
            # The peer proves against another commit than the chain's latest: a commit mined
            # since `target` was read, or one it has not been told of yet (it did not answer
            # when the Committer sent it). Once more, with the chain's latest, told to it.
            fresh = self.committed().get(peer)
            if fresh is not None and fresh.count and self._tell(peer, fresh):
                target = fresh
                results = self._challenge(peer, target, seed)
        now = time.time()
        audit = self.audits.start(now, MODE, block["number"], block["hash"])
        records = []
        for i, r in enumerate(results):
            ch, o = Challenge(i, target.epoch, r.slot, 0), r.outcome
            o = o._replace(detail="peer %s: %s" % (peer[:16], o.detail))
            records.append(Record(i, target.epoch, r.slot, o.chunk, o.digest, o.outcome, o.detail,
                                  record_hash(audit, block["number"], seed, ch, o)))
        self.audits.add_records(audit, records)
        failed = sum(r.outcome == "failed" for r in records)
        skipped = sum(r.outcome == "skipped" for r in records)
        self.audits.finish(audit, len(records), failed, skipped,
                           merkle.root([r.hash for r in records]).hex(), int(failed == 0))
        self._judge(peer, audit, results, now)
        log.info("audit %d of peer %s (epoch %d, %d slots): %d challenges, %d failed, %d "
                 "skipped", audit, peer[:16], target.epoch, target.count, len(records), failed,
                 skipped)
        return audit

    def _challenge(self, peer, target, seed):
        slots = protocol.draw_slots(seed, peer, target.count, self.samples)
        return challenge(self.client(peer), target, slots)

    def _tell(self, peer, target):
        """POST /v1/commit of target's epoch to the peer (as Committer.tell_providers does);
        False if it does not take it (then the challenges' outcomes stand)."""
        leaves = self._leaves.get(target.epoch)
        mine = [i for i, lf in enumerate(leaves or ()) if lf[:32] == bytes.fromhex(peer)]
        if not mine:
            return False
        i = mine[0]
        _, count, root = protocol.AGREEMENT_LEAF.unpack(leaves[i])
        try:
            self.client(peer).commit(target.epoch, count, root, i, len(leaves),
                                     merkle.inclusion_proof(leaves, i))
        except Exception as e:
            if getattr(e, "reason", None) is None:
                raise
            log.info("peer %s did not take network epoch %d again: %s", peer[:16], target.epoch,
                     e)
            return False
        return True

    def _judge(self, peer, audit, results, now):
        """The peer's row after an audit (last_audit; audit_failures adds the challenges it
        answered wrongly; last_seen or unreachable_since), and a failed peer replaced."""
        bad = [r for r in results if r.reason is not None]
        down = next((r for r in bad if r.reason in TRANSIENT), None)
        wrong = [r for r in bad if r.reason not in TRANSIENT]
        peers = self.store.peers
        peers.audited(peer, now, len(wrong))
        if wrong:
            peers.seen(peer, now)      # it answered, wrongly
            self._fail(peer, audit, wrong[0].reason, wrong[0].outcome.detail)
            return
        if down is None:
            peers.seen(peer, now)
            return
        peers.unreachable(peer, now, down.outcome.detail)
        since = peers.get(peer).unreachable_since or now
        if now - since >= self.grace:
            self._fail(peer, audit, "unreachable", "unreachable for %d s, past its grace of %d "
                       "s (%s)" % (now - since, self.grace, down.outcome.detail))
        else:
            self.audits.set_repaired(audit, 0, 0, "peer %s unreachable since %s; failed if "
                                     "still so %d s after" % (peer[:16], time.strftime(
                                         "%Y-%m-%d %H:%M:%S", time.localtime(since)), self.grace))

    def _fail(self, peer, audit, reason, why):
        log.error("peer %s failed its audit %d (%s): its shares are placed elsewhere",
                  peer[:16], audit, why)
        self.store.peers.update(peer, status="failed", last_error=why[:500])
        try:
            moved = self.placer.replace(peer, reason)
        except Exception as e:
            log.exception("re-placing peer %s's shares failed", peer[:16])
            self.audits.set_repaired(audit, 0, 0, "peer %s failed (%s); its shares are not "
                                     "re-placed yet: %s" % (peer[:16], reason, str(e)[:200]))
            return
        left = moved.get("left", 0)
        self.audits.set_repaired(audit, moved.get("shares", 0), int(not left), None if not left
                                 else "peer %s failed (%s): %d share(s) found no other peer "
                                 "yet" % (peer[:16], reason, left))

    def audit_all(self):
        """One audit of every active (or full) peer with an agreement in the latest commit,
        and a hello to each failed peer still holding shares re-placed elsewhere (one that
        answers is told to drop them): the audits' ids."""
        committed = self.committed()
        out = []
        for row in self.store.peers.all():
            if self.halt.is_set():
                break
            peer = row.name
            if row.status == "failed":
                if self.store.placements.of_peer(peer, (FAILED,)):
                    self.welcome_back(peer)
            elif row.status in AUDITED and peer in committed:
                audit = self.audit(peer, committed[peer])
                if audit is not None:
                    out.append(audit)
        return out

    def welcome_back(self, peer):
        """If failed peer `peer` answers (hello), tell it to drop the shares re-placed
        elsewhere (Placer.release_to); True if it answered."""
        try:
            self.client(peer).hello()
        except Exception as e:
            if getattr(e, "reason", None) is None:
                raise
            return False
        self.store.peers.seen(peer, time.time())
        self.placer.release_to(peer)
        log.info("failed peer %s answers again: told to drop what was placed elsewhere",
                 peer[:16])
        return True

    def anchor(self, audit):
        """Put the audit's records on chain (Keeper.anchor: StorageAudit.record)."""
        return Keeper(self.store, None, self.chain).anchor(audit)


class RemoteKeeperLoop:
    """The running gateway's Keeper across peers: audit_all every `period` seconds
    (network_audit_seconds) or when notified, each audit anchored; supervised like KeeperLoop
    (gateway/health.py): the disk full pauses it, the chain down makes it wait, anything else
    goes to the supervisor. keeper: a RemoteKeeper on a Store of its own (Store.connect)."""

    def __init__(self, keeper, period=3600, health=None):
        self.keeper = keeper
        self.period = period
        self.wake = threading.Event()
        self._stop = threading.Event()
        registry = health or Registry()
        self.health = registry.component("network-keeper")
        self.thread = registry.thread("network-keeper", self._run, self._stop)

    def start(self):
        self.thread.start()
        return self

    def notify(self):
        """Audit now (a new commit was mined, a peer came back)."""
        self.wake.set()

    def stop(self, join=STOP_JOIN):
        self._stop.set()
        self.keeper.halt.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(join)
        if self.thread.is_alive():
            log.warning("network keeper: still busy after %g s; stopping without it", join)

    def _run(self):
        while not self._stop.is_set():
            if self.wake.wait(self.period):
                self.wake.clear()
            if self._stop.is_set():
                break
            if self.keeper.chain is None:
                self.health.waiting("chain", "audits across peers wait for the chain")
                continue
            try:
                for audit in self.keeper.audit_all():
                    self.keeper.anchor(audit)
            except Exception as e:
                if disk_full(e):
                    self.health.pause(DISK_FULL, "disk full: %s" % str(e)[:200])
                    continue
                if unreachable(e):   # the chain, not a peer: a peer's error is an outcome
                    self.health.waiting("chain", "chain not reachable: %s" % str(e)[:200])
                    continue
                raise
            self.health.progress()

