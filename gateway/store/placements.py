"""The gateway's own shares on peers (tables offbox, placements, network_commits), on the
Store's connection (`store.placements`), inside the caller's transaction if any.

offbox has a row per network blob (a blob of the local Provider, or the gateway's metadata)
once it is queued for the network: its sealed digest and size, its code (k of m) and when
it became durable off-box (k shares placed: restorable without this gateway) and complete
(all m placed). placements has a row per share record sent to a peer, by (peer, slot): the
slots of an agreement are numbered by this gateway, 0, 1, 2, ... in the order it placed
them, and a row is written as 'sending' before its PUT, so a crash between the two is
resumed with the same slot. network_commits is the outbox of the gateway's network epochs
on chain (pending, sent, mined).

The protocol is docs/network.md; the placer that fills these is gateway/network/placement.py
and the committer gateway/network/commits.py.
"""

import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gateway.store.dialect import Connection

SENDING, PLACED, FAILED, RELEASED = "sending", "placed", "failed", "released"
HELD = (SENDING, PLACED)          # the share is (or is being) on the peer, for us
PENDING, SENT, MINED = "pending", "sent", "mined"


class Offbox(NamedTuple):
    """A network blob's off-box state."""
    digest: bytes                 # the blob's SHA-256 (its local name)
    sealed: bytes                 # SHA-256 of its sealed bytes (its name on the network)
    size: int                     # sealed bytes
    k: int
    m: int
    queued_at: float
    durable_at: float | None      # k shares placed
    complete_at: float | None     # m shares placed


class Placement(NamedTuple):
    """One share record sent to a peer, in slot `slot` of our agreement with it."""
    peer: str
    slot: int
    digest: bytes                 # the blob's SHA-256
    idx: int                      # share index
    leaf: bytes                   # SHA-256 of the record
    length: int                   # record bytes
    state: str                    # sending, placed, failed, released
    placed_at: float | None


class NotOffbox(NamedTuple):
    """What is not yet durable off-box: blobs and their bytes (the Provider's blob sizes)."""
    blobs: int
    bytes: int


class BlobState(NamedTuple):
    """A network blob's off-box row and how many of its shares are placed, or being sent."""
    offbox: Offbox
    placed: int
    sending: int


class Commit(NamedTuple):
    """A network epoch in the outbox (table network_commits)."""
    epoch: int
    root: bytes
    leaves: bytes                 # the 72-byte agreement leaves, concatenated
    changed: bytes                # CBOR [[provider, capacity, term_end]] sent with it
    snapshot: bytes | None
    created_at: float
    status: str                   # pending, sent, mined
    tx_hash: str | None
    block: int | None
    gas: int | None
    last_error: str | None


_OFFBOX = "digest, sealed, size, k, m, queued_at, durable_at, complete_at"
_PLACEMENT = "peer, slot, digest, idx, leaf, length, state, placed_at"
_COMMIT = ("epoch, root, leaves, changed, snapshot, created_at, status, tx_hash, block, gas, "
           "last_error")


class Placements:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- offbox --------------------------------------------------------------------------

    def unqueued(self, limit: int) -> list[bytes]:
        """Digests of up to `limit` blobs of the local Provider not queued yet, oldest first."""
        return [r[0] for r in self.db.execute(
            "SELECT digest FROM blobs WHERE digest NOT IN (SELECT digest FROM offbox) "
            "ORDER BY rowid LIMIT ?", (limit,))]

    def queue(self, digest: bytes, sealed: bytes, size: int, k: int, m: int,
              queued_at: float) -> bool:
        """Queue a network blob for placement; False (and nothing written) if it is already."""
        return bool(self.db.execute(
            "INSERT INTO offbox (digest, sealed, size, k, m, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (digest, sealed, size, k, m, queued_at)).rowcount)

    def get(self, digest: bytes) -> Offbox | None:
        row = self.db.execute("SELECT %s FROM offbox WHERE digest = ?" % _OFFBOX,
                              (digest,)).fetchone()
        return None if row is None else Offbox._make(row)

    def incomplete(self, limit: int) -> list[Offbox]:
        """Up to `limit` blobs with fewer than m shares placed: those with the fewest shares
        placed (or being sent) first, then the oldest queued, so that blobs nobody can take
        a further share of yet (too few peers) do not hold back those placed on none."""
        return [Offbox._make(r) for r in self.db.execute(
            "SELECT %s FROM offbox o WHERE complete_at IS NULL ORDER BY "
            "(SELECT count(*) FROM placements p WHERE p.digest = o.digest "
            "AND p.state IN (?, ?)), queued_at, rowid LIMIT ?" % _OFFBOX, (*HELD, limit))]

    def incomplete_count(self) -> int:
        n: int = self.db.execute("SELECT count(*) FROM offbox WHERE complete_at IS NULL"
                                 ).fetchone()[0]
        return n

    def digest_of_sealed(self, sealed: bytes) -> bytes | None:
        """The local name of the network blob whose sealed digest this is, if queued here."""
        row = self.db.execute("SELECT digest FROM offbox WHERE sealed = ?", (sealed,)).fetchone()
        return None if row is None else bytes(row[0])

    def restore_blob(self, digest: bytes, sealed: bytes, size: int, k: int, m: int,
                     shares: Iterable[tuple[str, int, int, bytes | None, int | None]],
                     now: float | None = None) -> None:
        """A blob restored from peers (gateway/network/restore.py): its off-box row and where
        its shares are, shares = [(peer, slot, share index, leaf, record length)], each
        'placed'. A leaf not known (None) is stored empty: leaves() stops there, so no commit
        counts that slot until its leaf is known; a length not known counts 0 bytes."""
        at = time.time() if now is None else now
        self.queue(digest, sealed, size, k, m, at)
        self.db.executemany(
            "INSERT INTO placements (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            % _PLACEMENT,
            [(peer, slot, digest, idx, leaf or b"", length or 0, PLACED, at)
             for peer, slot, idx, leaf, length in shares])
        self.refresh(digest, at)

    def restore_released(self, rows: Iterable[tuple[str, int, bytes, int, bytes, int]]) -> None:
        """Slots a peer has dropped at our request, from its listing on a restore: rows =
        [(peer, slot, sealed digest, share index, leaf, record length)]. Kept 'released' (their
        leaves stay in the agreement's tree); the blob is named by its sealed digest, since
        what it was here is no longer known."""
        self.db.executemany(
            "INSERT INTO placements (%s) VALUES (?, ?, ?, ?, ?, ?, 'released', NULL) "
            "ON CONFLICT DO NOTHING" % _PLACEMENT, rows)

    def state(self, digest: bytes) -> BlobState | None:
        """A blob's off-box row with its placed and sending share counts, None if not queued."""
        off = self.get(digest)
        if off is None:
            return None
        placed, sending = self.db.execute(
            "SELECT count(*) FILTER (WHERE state = 'placed'), "
            "count(*) FILTER (WHERE state = 'sending') FROM placements WHERE digest = ?",
            (digest,)).fetchone()
        return BlobState(off, placed, sending)

    def refresh(self, digest: bytes, now: float) -> BlobState | None:
        """Set or clear a blob's durable_at (k shares placed) and complete_at (m placed) from
        its placements; its state after."""
        s = self.state(digest)
        if s is None:
            return None
        off = s.offbox
        durable = (off.durable_at or now) if s.placed >= off.k else None
        complete = (off.complete_at or now) if s.placed >= off.m else None
        if (durable, complete) != (off.durable_at, off.complete_at):
            self.db.execute("UPDATE offbox SET durable_at = ?, complete_at = ? WHERE digest = ?",
                            (durable, complete, digest))
            off = off._replace(durable_at=durable, complete_at=complete)
        return BlobState(off, s.placed, s.sending)

    def not_offbox(self) -> NotOffbox:
        """Blobs of the local Provider (and queued network blobs) not yet durable off-box,
        with their bytes: the queued ones without k shares placed and those not queued yet."""
        queued = self.db.execute(
            "SELECT count(*), coalesce(sum(coalesce(b.size, o.size)), 0) FROM offbox o "
            "LEFT JOIN blobs b ON b.digest = o.digest WHERE o.durable_at IS NULL").fetchone()
        fresh = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM blobs "
            "WHERE digest NOT IN (SELECT digest FROM offbox)").fetchone()
        return NotOffbox(queued[0] + fresh[0], queued[1] + fresh[1])

    def counts(self) -> dict[str, int]:
        """{"queued", "durable", "complete"}: network blobs in each off-box state."""
        queued, durable, complete = self.db.execute(
            "SELECT count(*), count(durable_at), count(complete_at) FROM offbox").fetchone()
        return {"queued": queued, "durable": durable, "complete": complete}

    # -- placements ----------------------------------------------------------------------

    def add(self, p: Placement) -> None:
        """A new share record on a peer (normally 'sending', before its PUT)."""
        self.db.execute("INSERT INTO placements (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        % _PLACEMENT, p)

    def set_state(self, peer: str, slot: int, state: str, at: float | None = None) -> None:
        """A placement's new state; `at` (placed_at) is kept when None."""
        self.db.execute("UPDATE placements SET state = ?, placed_at = coalesce(?, placed_at) "
                        "WHERE peer = ? AND slot = ?", (state, at, peer, slot))

    def forget(self, peer: str, slot: int) -> None:
        """Drop a 'sending' row whose slot the peer did not fill (it refused the record): the
        slot is the peer's next again. A row in any other state is kept."""
        self.db.execute("DELETE FROM placements WHERE peer = ? AND slot = ? AND state = ?",
                        (peer, slot, SENDING))

    def of_blob(self, digest: bytes) -> list[Placement]:
        """Every placement of a blob's shares, by share index then peer."""
        return [Placement._make(r) for r in self.db.execute(
            "SELECT %s FROM placements WHERE digest = ? ORDER BY idx, peer, slot" % _PLACEMENT,
            (digest,))]

    def of_peer(self, peer: str, states: Sequence[str] | None = None) -> list[Placement]:
        """A peer's placements in slot order, all or in these states."""
        if states is None:
            rows = self.db.execute("SELECT %s FROM placements WHERE peer = ? ORDER BY slot"
                                   % _PLACEMENT, (peer,))
        else:
            rows = self.db.execute(
                "SELECT %s FROM placements WHERE peer = ? AND state IN (%s) ORDER BY slot"
                % (_PLACEMENT, ",".join("?" * len(states))), (peer, *states))
        return [Placement._make(r) for r in rows]

    def sending(self) -> list[Placement]:
        """Every 'sending' placement (written, PUT not known to have succeeded), by peer and
        slot: what a restart sends again with the same slot."""
        return [Placement._make(r) for r in self.db.execute(
            "SELECT %s FROM placements WHERE state = ? ORDER BY peer, slot" % _PLACEMENT,
            (SENDING,))]

    def next_slot(self, peer: str) -> int:
        """The peer's next slot: one past the highest ever used (released ones included)."""
        n: int = self.db.execute("SELECT coalesce(max(slot) + 1, 0) FROM placements "
                                 "WHERE peer = ?", (peer,)).fetchone()[0]
        return n

    def bytes_on(self, peer: str) -> int:
        """Record bytes we have on a peer: every placement not released (a failed one is
        held until the peer is told to drop it)."""
        n: int = self.db.execute("SELECT coalesce(sum(length), 0) FROM placements "
                                 "WHERE peer = ? AND state != ?", (peer, RELEASED)).fetchone()[0]
        return n

    def peers(self) -> list[str]:
        """Every peer with a placement (any state), by name."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT peer FROM placements ORDER BY peer")]

    def peers_holding(self) -> dict[str, int]:
        """{peer: shares placed or being sent} for every peer holding one."""
        return dict(self.db.execute(
            "SELECT peer, count(*) FROM placements WHERE state IN (?, ?) GROUP BY peer",
            HELD).fetchall())

    def leaves(self, peer: str) -> list[bytes]:
        """The leaves of the agreement with a peer in slot order, for its root: every slot
        filled, released and failed ones included (the tree only grows), up to the first one
        still 'sending' (the peer may not hold it yet, and its tree has no later slot) or
        whose leaf is not known (restored from a listing)."""
        out: list[bytes] = []
        for slot, leaf, state in self.db.execute(
                "SELECT slot, leaf, state FROM placements WHERE peer = ? ORDER BY slot", (peer,)):
            if state == SENDING or slot != len(out) or not leaf:
                break
            out.append(leaf)
        return out

    def mark_failed(self, peer: str) -> list[bytes]:
        """Every share held on (or being sent to) a peer becomes 'failed'; the digests of the
        blobs that had one, each once."""
        digests = [r[0] for r in self.db.execute(
            "SELECT DISTINCT digest FROM placements WHERE peer = ? AND state IN (?, ?)",
            (peer, *HELD))]
        self.db.execute("UPDATE placements SET state = ? WHERE peer = ? AND state IN (?, ?)",
                        (FAILED, peer, *HELD))
        return digests

    def orphans(self, limit: int) -> list[bytes]:
        """Up to `limit` blobs placed off the box that the local Provider no longer holds
        (retention deleted them)."""
        return [bytes(r[0]) for r in self.db.execute(
            "SELECT o.digest FROM offbox o LEFT JOIN blobs b ON b.digest = o.digest "
            "WHERE b.digest IS NULL LIMIT ?", (limit,))]

    def drop(self, digest: bytes) -> int:
        """Forget a blob's off-box state; its shares on peers become 'failed' (to be released
        with a DELETE, as a failed peer's are). How many shares."""
        n: int = self.db.execute("UPDATE placements SET state = ? WHERE digest = ? AND state "
                                 "IN (?, ?)", (FAILED, digest, *HELD)).rowcount
        self.db.execute("DELETE FROM offbox WHERE digest = ?", (digest,))
        return n

    # -- network commits -------------------------------------------------------------------

    def add_commit(self, epoch: int, root: bytes, leaves: bytes, changed: bytes,
                   created_at: float) -> None:
        """A network epoch closed, pending. An epoch number used before (an earlier chain,
        since reset) is taken over: the chain says what the next epoch is."""
        self.db.execute("INSERT INTO network_commits (epoch, root, leaves, changed, "
                        "created_at, status) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (epoch) "
                        "DO UPDATE SET root = excluded.root, leaves = excluded.leaves, "
                        "changed = excluded.changed, created_at = excluded.created_at, "
                        "status = excluded.status, snapshot = NULL, tx_hash = NULL, "
                        "block = NULL, gas = NULL, last_error = NULL",
                        (epoch, root, leaves, changed, created_at, PENDING))

    def commit(self, epoch: int) -> Commit | None:
        row = self.db.execute("SELECT %s FROM network_commits WHERE epoch = ?" % _COMMIT,
                              (epoch,)).fetchone()
        return None if row is None else Commit._make(row)

    def unmined_commits(self) -> list[Commit]:
        """The outbox: epochs pending or sent, oldest first."""
        return [Commit._make(r) for r in self.db.execute(
            "SELECT %s FROM network_commits WHERE status != ? ORDER BY epoch" % _COMMIT,
            (MINED,))]

    def last_commit(self) -> Commit | None:
        """The newest network epoch closed, mined or not."""
        row = self.db.execute("SELECT %s FROM network_commits ORDER BY epoch DESC LIMIT 1"
                              % _COMMIT).fetchone()
        return None if row is None else Commit._make(row)

    def last_mined(self) -> Commit | None:
        row = self.db.execute("SELECT %s FROM network_commits WHERE status = ? "
                              "ORDER BY epoch DESC LIMIT 1" % _COMMIT, (MINED,)).fetchone()
        return None if row is None else Commit._make(row)

    def commit_sent(self, epoch: int, tx_hash: str) -> None:
        self.db.execute("UPDATE network_commits SET status = ?, tx_hash = ?, last_error = NULL "
                        "WHERE epoch = ?", (SENT, tx_hash, epoch))

    def commit_mined(self, epoch: int, block: int, gas: int | None) -> None:
        """Mined in block; gas None keeps what was recorded (found on chain after a crash)."""
        self.db.execute("UPDATE network_commits SET status = ?, block = ?, "
                        "gas = coalesce(?, gas), last_error = NULL WHERE epoch = ?",
                        (MINED, block, gas, epoch))

    def commit_failed(self, epoch: int, error: str) -> None:
        self.db.execute("UPDATE network_commits SET last_error = ? WHERE epoch = ?",
                        (error, epoch))

    def drop_commit(self, epoch: int) -> None:
        """Forget an epoch that is not mined (the chain holds another, or expects another
        number): the next one is closed again from the chain's latest."""
        self.db.execute("DELETE FROM network_commits WHERE epoch = ? AND status != ?",
                        (epoch, MINED))

    def set_snapshot(self, epoch: int, digest: bytes) -> None:
        """The digest of the metadata snapshot made with an epoch."""
        self.db.execute("UPDATE network_commits SET snapshot = ? WHERE epoch = ?",
                        (digest, epoch))


def split_leaves(leaves: bytes, size: int = 72) -> list[bytes]:
    """The 72-byte agreement leaves of a Commit's `leaves` column."""
    return [leaves[i:i + size] for i in range(0, len(leaves), size)]


def join_leaves(leaves: Iterable[bytes]) -> bytes:
    return b"".join(leaves)
