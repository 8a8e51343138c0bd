"""The gateway's peers and what it holds for them (tables peers, invitations, peer_nonces,
held, held_commits, held_catalogs), on the Store's connection (`store.peers`).

The protocol is docs/network.md; the server that fills these is gateway/network/server.py,
pairing (both sides) is gateway/network/pairing.py. Every method runs inside the caller's
transaction if any; the few that must be atomic on their own (take_invitation,
remember_nonce) are single statements.

Vocabulary: a peer's `capacity` is what it holds for us at most (its offer), its `quota`
what we hold for it at most (our offer). What we hold for a peer (the owner) fills its
slots 0, 1, 2, ... in order; a released slot keeps its leaf (the agreement's tree only
grows) and the owner's signed DELETE, but not its bytes.
"""

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from gateway.store.dialect import Connection

ACTIVE, FAILED, FULL, REMOVED = "active", "failed", "full", "removed"
STATUSES = (ACTIVE, FAILED, FULL, REMOVED)
HASH = 32
TERM = 365 * 86400          # an agreement's term from its pairing (seconds)


class Peer(NamedTuple):
    """A row of peers."""
    name: str                       # hex Ed25519 public key
    endpoint: str                   # https://host:port
    capacity: int                   # bytes it holds for us at most
    quota: int                      # bytes we hold for it at most
    paired_at: float
    term_end: float
    status: str                     # active, failed, full, removed
    last_seen: float | None         # last good answer from it
    unreachable_since: float | None
    last_error: str | None
    last_audit: float | None
    audit_failures: int

    @property
    def short(self) -> str:
        return self.name[:16]


PEER_COLUMNS = ", ".join(Peer._fields)
# what update() may set (the rest is the pairing's: add() again to change it)
UPDATABLE = frozenset(("endpoint", "capacity", "quota", "term_end", "status", "last_seen",
                       "unreachable_since", "last_error", "last_audit", "audit_failures"))


class InvitationRow(NamedTuple):
    token: bytes
    capacity: int                   # bytes we will hold for the invitee
    expires: float
    created_at: float
    used_by: str | None             # the peer that paired with it


class Held(NamedTuple):
    """A slot of an owner's agreement with us (a row of held)."""
    owner: str
    slot: int
    digest: bytes                   # sealed digest (from the record's header)
    idx: int                        # share index
    leaf: bytes                     # SHA-256 of the record
    length: int                     # record bytes
    pack: str | None                # where the record is; None once released
    offset: int | None
    released: str | None            # JSON of the owner's signed DELETE headers
    stored_at: float


HELD_COLUMNS = ", ".join('"offset"' if f == "offset" else f for f in Held._fields)


@dataclass(frozen=True)
class HeldCommit:
    """An owner's latest commit of its agreement with us (POST /v1/commit); a dataclass, not
    a NamedTuple, for its field `count`."""
    owner: str
    epoch: int
    count: int                      # slots in the committed tree
    root: bytes                     # the agreement's root over them
    idx: int                        # the agreement's leaf index in the owner's epoch tree
    size: int                       # leaves in that tree
    path: list[bytes]               # the agreement leaf's audit path, bottom up


class Catalog(NamedTuple):
    data: bytes
    updated_at: float


class Peers:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- peers -------------------------------------------------------------------------

    def add(self, name: str, endpoint: str, capacity: int, quota: int, paired_at: float,
            term_end: float) -> None:
        """A peer paired (again: a new pairing replaces the terms and makes it active; what
        we hold for it stays)."""
        self.db.execute(
            "INSERT INTO peers (name, endpoint, capacity, quota, paired_at, term_end) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "endpoint = excluded.endpoint, capacity = excluded.capacity, "
            "quota = excluded.quota, paired_at = excluded.paired_at, "
            "term_end = excluded.term_end, status = 'active'",
            (name, endpoint, capacity, quota, paired_at, term_end))

    def restore(self, peers: Iterable[Mapping[str, Any]], now: float | None = None) -> int:
        """The peers of a restored gateway, from its catalog: [{"name", "endpoint",
        "capacity", "quota", "term_end"}] (only name and endpoint required); a peer already
        known is left as it is. How many were added."""
        now = time.time() if now is None else now
        added = 0
        for p in peers:
            added += self.db.execute(
                "INSERT INTO peers (name, endpoint, capacity, quota, paired_at, term_end) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (p["name"], p["endpoint"], int(p.get("capacity", 0)), int(p.get("quota", 0)),
                 now, float(p.get("term_end", now + TERM)))).rowcount
        return added

    def get(self, name: str) -> Peer | None:
        row = self.db.execute("SELECT %s FROM peers WHERE name = ?" % PEER_COLUMNS,
                              (name,)).fetchone()
        return None if row is None else Peer._make(row)

    def all(self, status: str | None = None) -> list[Peer]:
        """Every peer (or those of one status), by name; removed ones included unless
        status says otherwise."""
        sql = "SELECT %s FROM peers" % PEER_COLUMNS
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return [Peer._make(r) for r in self.db.execute(sql + " ORDER BY name", args)]

    def find(self, prefix: str) -> list[Peer]:
        """The peers whose name starts with prefix (a short name, or the whole name)."""
        prefix = prefix.lower()
        return [p for p in self.all() if p.name.startswith(prefix)]

    def update(self, name: str, **fields: Any) -> bool:
        """Set some of a peer's columns (UPDATABLE); False if there is no such peer."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError("peers.update: not updatable: %s" % ", ".join(sorted(bad)))
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError("peers.update: status is one of %s" % ", ".join(STATUSES))
        if not fields:
            return self.get(name) is not None
        cols = sorted(fields)
        cur = self.db.execute("UPDATE peers SET %s WHERE name = ?"
                              % ", ".join("%s = ?" % c for c in cols),
                              [fields[c] for c in cols] + [name])
        return cur.rowcount == 1

    def set_status(self, name: str, status: str) -> bool:
        return self.update(name, status=status)

    def seen(self, name: str, at: float) -> None:
        """A good answer from the peer: reachable again."""
        self.db.execute("UPDATE peers SET last_seen = ?, unreachable_since = NULL, "
                        "last_error = NULL WHERE name = ?", (at, name))

    def unreachable(self, name: str, at: float, error: str) -> None:
        """A failed call: unreachable since the first failure after the last good answer."""
        self.db.execute("UPDATE peers SET unreachable_since = coalesce(unreachable_since, ?), "
                        "last_error = ? WHERE name = ?", (at, error, name))

    def audited(self, name: str, at: float, failures: int) -> None:
        """An audit of the peer at `at` with `failures` failed challenges (added up)."""
        self.db.execute("UPDATE peers SET last_audit = ?, audit_failures = audit_failures + ? "
                        "WHERE name = ?", (at, failures, name))

    # -- invitations ---------------------------------------------------------------------

    def add_invitation(self, token: bytes, capacity: int, expires: float,
                       created_at: float) -> None:
        self.db.execute("INSERT INTO invitations (token, capacity, expires, created_at) "
                        "VALUES (?, ?, ?, ?)", (token, capacity, expires, created_at))

    def invitation(self, token: bytes) -> InvitationRow | None:
        row = self.db.execute("SELECT token, capacity, expires, created_at, used_by "
                              "FROM invitations WHERE token = ?", (token,)).fetchone()
        return None if row is None else InvitationRow._make(row)

    def take_invitation(self, token: bytes, peer: str, now: float) -> InvitationRow | None:
        """Mark an invitation used by peer, at once (one statement): the invitation if it was
        unused and unexpired at `now`, else None (then invitation(token) says why)."""
        row = self.db.execute(
            "UPDATE invitations SET used_by = ? WHERE token = ? AND used_by IS NULL "
            "AND expires >= ? RETURNING token, capacity, expires, created_at, used_by",
            (peer, token, now)).fetchone()
        return None if row is None else InvitationRow._make(row)

    def invitations(self) -> list[InvitationRow]:
        return [InvitationRow._make(r) for r in self.db.execute(
            "SELECT token, capacity, expires, created_at, used_by FROM invitations "
            "ORDER BY created_at")]

    # -- nonces (replays) ------------------------------------------------------------------

    def remember_nonce(self, peer: str, nonce: bytes, expires: float, now: float) -> bool:
        """True if peer's nonce is new (remembered until `expires`), False for a replay: seen
        before and not expired at `now`. One statement, so two racing requests cannot both
        pass."""
        cur = self.db.execute(
            "INSERT INTO peer_nonces (peer, nonce, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (peer, nonce) DO UPDATE SET expires = excluded.expires "
            "WHERE peer_nonces.expires < ?", (peer, nonce, expires, now))
        return cur.rowcount == 1

    def forget_nonces(self, now: float) -> int:
        """Drop the nonces expired at `now`; how many."""
        return self.db.execute("DELETE FROM peer_nonces WHERE expires < ?", (now,)).rowcount

    # -- what we hold for peers --------------------------------------------------------------

    def next_slot(self, owner: str) -> int:
        """The owner's next slot: the number of slots it ever filled here."""
        n: int = self.db.execute("SELECT coalesce(max(slot) + 1, 0) FROM held WHERE owner = ?",
                                 (owner,)).fetchone()[0]
        return n

    def add_held(self, owner: str, slot: int, digest: bytes, idx: int, leaf: bytes,
                 length: int, pack: str, offset: int, stored_at: float) -> None:
        self.db.execute(
            'INSERT INTO held (owner, slot, digest, idx, leaf, length, pack, "offset", stored_at) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner, slot, digest, idx, leaf, length, pack, offset, stored_at))

    def held(self, owner: str, slot: int) -> Held | None:
        row = self.db.execute("SELECT %s FROM held WHERE owner = ? AND slot = ?" % HELD_COLUMNS,
                              (owner, slot)).fetchone()
        return None if row is None else Held._make(row)

    def held_after(self, owner: str, after: int, limit: int) -> list[Held]:
        """The owner's slots numbered above `after`, released ones included, at most limit of
        them, in order."""
        return [Held._make(r) for r in self.db.execute(
            "SELECT %s FROM held WHERE owner = ? AND slot > ? ORDER BY slot LIMIT ?"
            % HELD_COLUMNS, (owner, after, limit))]

    def leaves(self, owner: str, count: int) -> list[bytes]:
        """The leaves (SHA-256 of each record) of the owner's first `count` slots, released
        ones included."""
        return [r[0] for r in self.db.execute(
            "SELECT leaf FROM held WHERE owner = ? AND slot < ? ORDER BY slot", (owner, count))]

    def release(self, owner: str, slot: int, release: str) -> bool:
        """Drop a slot's bytes (its pack and offset), keeping its leaf and the owner's release
        (JSON); False if it is not held or already released (the first release stays)."""
        return self.db.execute(
            'UPDATE held SET pack = NULL, "offset" = NULL, released = ? '
            "WHERE owner = ? AND slot = ? AND released IS NULL",
            (release, owner, slot)).rowcount == 1

    def used(self, owner: str) -> int:
        """Bytes of records held for owner (released ones not counted)."""
        n: int = self.db.execute("SELECT coalesce(sum(length), 0) FROM held "
                                 "WHERE owner = ? AND released IS NULL", (owner,)).fetchone()[0]
        return n

    def used_by_owner(self) -> dict[str, int]:
        """{owner: bytes held for it} of every owner we hold something for."""
        return dict(self.db.execute("SELECT owner, sum(length) FROM held WHERE released IS NULL "
                                    "GROUP BY owner"))

    # -- commits and catalogs ----------------------------------------------------------------

    def set_commit(self, owner: str, epoch: int, count: int, root: bytes, idx: int, size: int,
                   path: Sequence[bytes]) -> bool:
        """The owner's commit of its agreement with us; an older epoch than the one kept is
        ignored (False)."""
        return self.db.execute(
            "INSERT INTO held_commits (owner, epoch, count, root, idx, size, path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
            "epoch = excluded.epoch, count = excluded.count, root = excluded.root, "
            "idx = excluded.idx, size = excluded.size, path = excluded.path "
            "WHERE excluded.epoch >= held_commits.epoch",
            (owner, epoch, count, root, idx, size, b"".join(path))).rowcount == 1

    def commit(self, owner: str) -> HeldCommit | None:
        row = self.db.execute("SELECT owner, epoch, count, root, idx, size, path "
                              "FROM held_commits WHERE owner = ?", (owner,)).fetchone()
        if row is None:
            return None
        raw: bytes = row[6]
        path = [raw[i:i + HASH] for i in range(0, len(raw), HASH)]
        return HeldCommit(row[0], row[1], row[2], row[3], row[4], row[5], path)

    def set_catalog(self, owner: str, data: bytes, updated_at: float) -> None:
        self.db.execute("INSERT INTO held_catalogs (owner, data, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (owner) DO UPDATE SET data = excluded.data, "
                        "updated_at = excluded.updated_at", (owner, data, updated_at))

    def catalog(self, owner: str) -> Catalog | None:
        row = self.db.execute("SELECT data, updated_at FROM held_catalogs WHERE owner = ?",
                              (owner,)).fetchone()
        return None if row is None else Catalog._make(row)
