"""The whole schema of the gateway's database, as numbered migrations.

MIGRATIONS[n - 1] takes a database from version n - 1 to version n; the version is SQLite's
`PRAGMA user_version` (0 for a new file), or on PostgreSQL the one row of the table
schema_version (none: 0). The migrations are SQLite's DDL, and the same list builds a
PostgreSQL database: each statement goes through dialect.ddl there (types, identity columns).
`migrate` applies the missing ones in order inside one transaction, so a crash midway leaves
the database at its old version. It runs once at start (`Store.open`: the gateway service,
every CLI command, the tests), never per request and never in a constructor. A database
newer than this code is refused: an older EdgeKeep must not write to tables it does not know.

Migration 1 is the schema as it stood when migrations began (IF NOT EXISTS: a database made
before then, at version 0 with its tables present, is taken to version 1 as it is). Add a
migration by appending to MIGRATIONS; never edit one that has shipped.
"""
import sqlite3

from gateway.store import dialect
from gateway.store.dialect import Connection

MIGRATIONS: list[str] = [
    # 1: devices, messages, gaps, epochs, rejects (the store); objects and their chunks (camera
    # uploads); audits, audit_records, repairs, keeper_state (the Keeper); blobs and shares
    # (the Provider).
    """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,            -- hex device id
    public_key BLOB NOT NULL,       -- 65-byte uncompressed P-256
    name TEXT,
    kind TEXT NOT NULL DEFAULT 'tracker',
    owner TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    registered_at REAL NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,   -- highest contiguous durable sequence
    last_seen REAL,
    health TEXT                      -- JSON of the last status message
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time INTEGER NOT NULL,
    count INTEGER,
    digest BLOB NOT NULL,
    raw BLOB NOT NULL,
    received_at REAL NOT NULL,
    epoch INTEGER,
    leaf INTEGER,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS messages_unsealed ON messages (epoch) WHERE epoch IS NULL;
CREATE INDEX IF NOT EXISTS messages_epoch ON messages (epoch, leaf);
CREATE TABLE IF NOT EXISTS gaps (
    device TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    count INTEGER NOT NULL,
    sealed_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending, sent, mined
    tx_hash TEXT,
    block INTEGER,
    block_hash TEXT,
    gas INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    mined_at REAL
);
CREATE TABLE IF NOT EXISTS rejects (
    reason TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS objects (
    device TEXT NOT NULL,
    oid TEXT NOT NULL,               -- hex object id
    seq INTEGER NOT NULL,            -- the manifest's message sequence
    time INTEGER NOT NULL,           -- capture time (Unix s)
    event TEXT,
    type TEXT,
    size INTEGER NOT NULL,           -- plaintext bytes
    chunk_size INTEGER NOT NULL,
    count INTEGER NOT NULL,          -- chunks
    root BLOB NOT NULL,              -- Merkle root of the chunk hashes
    hashes BLOB NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, -- ciphertext bytes stored
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    completed_at REAL,
    PRIMARY KEY (device, oid)
);
CREATE TABLE IF NOT EXISTS object_chunks (
    device TEXT NOT NULL,
    oid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (device, oid, idx)
);
CREATE INDEX IF NOT EXISTS object_chunks_digest ON object_chunks (digest);

CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    mode TEXT NOT NULL,              -- sample (chain seed), all, object
    seed_block INTEGER,
    seed_hash TEXT,
    challenges INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,   -- chunks deleted by retention or not uploaded yet
    repaired INTEGER NOT NULL DEFAULT 0,
    ok INTEGER,                      -- 1: nothing failed, or all that failed is repaired
    root TEXT,                       -- hex Merkle root over the records
    status TEXT NOT NULL DEFAULT 'open',  -- open, anchored, empty, error
    tx_hash TEXT,
    block INTEGER,
    alarm TEXT                       -- what could not be repaired
);
CREATE TABLE IF NOT EXISTS audit_records (
    audit INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    leaf INTEGER NOT NULL,
    chunk INTEGER NOT NULL,          -- -1: the message itself
    digest BLOB,                     -- what was proven (chunk or message SHA-256)
    outcome TEXT NOT NULL,           -- ok, failed, skipped
    detail TEXT,
    hash BLOB NOT NULL,              -- the record's leaf in the audit tree
    PRIMARY KEY (audit, idx)
);
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    digest BLOB NOT NULL,
    good INTEGER NOT NULL,           -- good shares before the repair
    outcome TEXT NOT NULL,           -- repaired, lost
    detail TEXT
);
CREATE TABLE IF NOT EXISTS keeper_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS blobs (
    digest BLOB PRIMARY KEY,          -- SHA-256 of the blob
    size INTEGER NOT NULL,
    k INTEGER NOT NULL,
    m INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
    digest BLOB NOT NULL,
    idx INTEGER NOT NULL,             -- share index j: in root j % R
    pack TEXT NOT NULL,               -- pack file name in that root
    offset INTEGER NOT NULL,          -- of the record (header, then body)
    length INTEGER NOT NULL,
    PRIMARY KEY (digest, idx)
);
CREATE INDEX IF NOT EXISTS shares_pack ON shares (pack);
""",
    # 2: counters of what the ingest accepted without storing (duplicates: a message sent
    # again with the same bytes, acked again and dropped).
    """
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
""",
    # 3: messages the gateway refused although they were signed (out_of_range, bad_health,
    # bad_manifest, unstorable): like a gap, but decided by the gateway. Acked past, and listed
    # in the ack's rejected sequences, so the device drops them instead of resending forever.
    """
CREATE TABLE refused (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    digest BLOB NOT NULL,            -- SHA-256 of the COSE_Sign1, as for messages
    reason TEXT NOT NULL,
    detail TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (device, seq)
);
""",
    # 4: the Provider network (docs/network.md). A gateway's peers and their invitations, the
    # nonces of signed requests (replays), the shares it holds for peers (held, their commits
    # and catalogs: gateway/store/peers.py); its own shares on peers, per-blob off-box state
    # and its commits on chain (gateway/store/placements.py); its metadata snapshots
    # (gateway/store/backup.py).
    """
CREATE TABLE peers (
    name TEXT PRIMARY KEY,           -- hex Ed25519 public key
    endpoint TEXT NOT NULL,          -- https://host:port
    capacity INTEGER NOT NULL,       -- bytes it holds for us at most (its offer)
    quota INTEGER NOT NULL,          -- bytes we hold for it at most (our offer)
    paired_at REAL NOT NULL,
    term_end REAL NOT NULL,          -- the agreements' term
    status TEXT NOT NULL DEFAULT 'active',  -- active, failed (by an audit), full, removed
    last_seen REAL,                  -- last good answer from it
    unreachable_since REAL,          -- first failed call since the last good answer
    last_error TEXT,
    last_audit REAL,
    audit_failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE invitations (
    token BLOB PRIMARY KEY,          -- 16 bytes
    capacity INTEGER NOT NULL,
    expires REAL NOT NULL,
    created_at REAL NOT NULL,
    used_by TEXT                     -- the peer that paired with it
);
CREATE TABLE peer_nonces (
    peer TEXT NOT NULL,
    nonce BLOB NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (peer, nonce)
);
CREATE INDEX peer_nonces_expires ON peer_nonces (expires);
CREATE TABLE held (
    owner TEXT NOT NULL,             -- the peer whose share it is
    slot INTEGER NOT NULL,
    digest BLOB NOT NULL,            -- sealed digest
    idx INTEGER NOT NULL,            -- share index
    leaf BLOB NOT NULL,              -- SHA-256 of the record
    length INTEGER NOT NULL,         -- record bytes
    pack TEXT,                       -- where the record is (NULL once released)
    offset INTEGER,
    released TEXT,                   -- JSON of the owner's signed DELETE, once released
    stored_at REAL NOT NULL,
    PRIMARY KEY (owner, slot)
);
CREATE INDEX held_pack ON held (pack);
CREATE TABLE held_commits (
    owner TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    count INTEGER NOT NULL,
    root BLOB NOT NULL,
    idx INTEGER NOT NULL,
    size INTEGER NOT NULL,
    path BLOB NOT NULL               -- 32-byte hashes, concatenated
);
CREATE TABLE held_catalogs (
    owner TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE offbox (
    digest BLOB PRIMARY KEY,         -- the blob's SHA-256 (local name)
    sealed BLOB NOT NULL,            -- SHA-256 of its sealed bytes (the network's name)
    size INTEGER NOT NULL,           -- sealed bytes
    k INTEGER NOT NULL,
    m INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    durable_at REAL,                 -- k shares placed: restorable without this gateway
    complete_at REAL                 -- all m placed
);
CREATE INDEX offbox_pending ON offbox (complete_at) WHERE complete_at IS NULL;
CREATE TABLE placements (
    peer TEXT NOT NULL,
    slot INTEGER NOT NULL,
    digest BLOB NOT NULL,            -- the blob's SHA-256
    idx INTEGER NOT NULL,            -- share index
    leaf BLOB NOT NULL,              -- SHA-256 of the record
    length INTEGER NOT NULL,
    state TEXT NOT NULL,             -- sending, placed, failed (peer lost it), released
    placed_at REAL,
    PRIMARY KEY (peer, slot)
);
CREATE INDEX placements_blob ON placements (digest, idx);
CREATE TABLE network_commits (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    leaves BLOB NOT NULL,            -- the 72-byte agreement leaves, concatenated
    changed BLOB NOT NULL,           -- CBOR [[provider, capacity, term_end]] sent with it
    snapshot BLOB,                   -- digest of the metadata snapshot made with it
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',  -- pending, sent, mined
    tx_hash TEXT,
    block INTEGER,
    gas INTEGER,
    last_error TEXT
);
CREATE TABLE snapshots (
    seq INTEGER PRIMARY KEY,         -- 1, 2, ...: replayed in this order
    digest BLOB NOT NULL,            -- the snapshot blob's SHA-256
    upto INTEGER NOT NULL,           -- the last epoch it holds
    settled INTEGER NOT NULL,        -- every epoch up to this one was mined when it was made
    time REAL NOT NULL,              -- its mark: what changed after it is in the next one
    published_at REAL                -- listed in the catalog the peers hold
);
""",
    # 5: the ingest in several processes (gateway/workers.py): who holds the deployment's
    # one-of-a-kind jobs, and what each ingest worker last said of itself.
    """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,           -- 'singletons': sealing, anchoring, the Keepers
    holder TEXT NOT NULL,            -- the worker's name
    expires REAL NOT NULL,           -- Unix time; another worker may take it after
    since REAL NOT NULL              -- when this holder took it
);
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,           -- its last report (every few seconds while it runs)
    received INTEGER NOT NULL,       -- messages taken from the broker since it started
    stored INTEGER NOT NULL,         -- new messages it committed since it started
    inflight INTEGER NOT NULL,       -- taken from the broker, not yet committed and acked
    oldest REAL                      -- seconds the oldest of those has waited (its lag)
);
""",
    # 6: enrollment tokens (gateway/store/enrollments.py): short-lived, single-use, issued by
    # `edgekeep devices enroll` or the admin page, used by `edgekeep-flash provision --gateway
    # https://...` from another machine (POST /api/enroll). Only the token's SHA-256 is kept.
    """
CREATE TABLE enrollments (
    digest TEXT PRIMARY KEY,         -- hex SHA-256 of the token; the token itself is nowhere
    created_at REAL NOT NULL,
    expires REAL NOT NULL,           -- Unix time; refused from then on
    issued_by TEXT NOT NULL,         -- 'cli' or 'admin page'
    broker TEXT,                     -- the broker URL devices use, if the issuer gave one
    used_at REAL,                    -- set once: the token is spent
    used_by TEXT,                    -- the client address that spent it
    device TEXT,                     -- the device it enrolled
    retired TEXT                     -- the device it revoked (replaced or decommissioned)
);
CREATE INDEX enrollments_expires ON enrollments (expires);
""",
    # 7: OTA rollouts (gateway/store/rollouts.py, gateway/updates/): signed bundles uploaded on the
    # admin page, rollouts of one to devices in stages, and each device's progress.
    """
CREATE TABLE update_bundles (
    digest TEXT PRIMARY KEY,         -- hex SHA-256 of the bundle's signed manifest.json
    version TEXT NOT NULL,
    board TEXT NOT NULL,
    files INTEGER NOT NULL,
    size INTEGER NOT NULL,           -- bytes of its files
    uploaded_at REAL NOT NULL
);
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,             -- 8 random bytes, hex
    bundle TEXT NOT NULL,            -- update_bundles.digest
    status TEXT NOT NULL,            -- running, halted, aborted, done
    stage INTEGER NOT NULL,          -- the stage offered now (0: the canary group)
    stages INTEGER NOT NULL,
    max_failed REAL NOT NULL,        -- a stage halts when more than this share fails
    confirm_seconds REAL NOT NULL,   -- a device not confirmed this long after its offer failed
    force INTEGER NOT NULL,          -- allow a downgrade or a reinstall
    accepted INTEGER NOT NULL,       -- the stage a resume let go on despite its failures; -1
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reason TEXT                      -- why it halted, or who aborted it
);
CREATE TABLE rollout_devices (
    rollout TEXT NOT NULL,
    device TEXT NOT NULL,
    stage INTEGER NOT NULL,
    state TEXT NOT NULL,             -- waiting, offered, chunks, verifying, rebooting, confirmed,
                                     -- current, refused, rolled back, timed out, skipped
    chunks INTEGER NOT NULL,         -- chunks the device asked for
    sent INTEGER NOT NULL,           -- of those, the broker has taken
    why TEXT,
    offered_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rollout, device)
);
""",
    # 8: a device's messages of one kind by time (GET /api/devices/{id}/messages: the device
    # page pages through a time range newest first, with (time, seq) as the cursor).
    """
CREATE INDEX messages_device_time ON messages (device, kind, time, seq);
""",
    # 9: alerts (gateway/store/alerts.py, gateway/alerts/): each condition from when it started
    # to when it cleared, the notices still to deliver for it, what the rules remember
    # between rounds, the devices whose owners let values go out in alerts, and counters.
    """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,              -- device_offline, battery_low, ... (gateway/alerts/rules.py)
    subject TEXT NOT NULL,           -- a device id, a peer name, or 'gateway'
    device TEXT,                     -- the device it is about, if any
    title TEXT NOT NULL,
    message TEXT NOT NULL,           -- without values: what may leave the gateway
    priority INTEGER NOT NULL,       -- 1 (min) ... 5 (max), ntfy's scale
    detail TEXT,                     -- JSON of its values: the admin page; out only if opted in
    started_at REAL NOT NULL,
    resolved_at REAL
);
CREATE UNIQUE INDEX alerts_active ON alerts (rule, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_resolved ON alerts (resolved_at);
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY,
    alert INTEGER NOT NULL,
    event TEXT NOT NULL,             -- fired, resolved
    channel TEXT NOT NULL,           -- webhook, homeassistant
    payload TEXT NOT NULL,           -- the JSON sent, made when the event happened
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,           -- not tried again before
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX alert_outbox_due ON alert_outbox (channel, next_at) WHERE sent_at IS NULL;
CREATE TABLE alert_marks (
    name TEXT PRIMARY KEY,           -- e.g. drops:<device>
    value REAL NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE alert_optin (
    device TEXT PRIMARY KEY,         -- its alerts may carry its values (battery, drops, label)
    since REAL NOT NULL
);
CREATE TABLE alert_counts (
    name TEXT PRIMARY KEY,           -- e.g. webhook_sent, webhook_failed
    count INTEGER NOT NULL
);
""",
    # 10: objects.parent: the object a poster or thumbnail belongs to (its manifest's object key
    # 10, hex), so a clip's posters can be found from it.
    """
ALTER TABLE objects ADD COLUMN parent TEXT;
CREATE INDEX objects_parent ON objects (device, parent) WHERE parent IS NOT NULL;
""",
    # 11: pending_chunks: chunks of a clip still recording, which came before its manifest (held
    # in the Provider under their SHA-256, bound to the object when the manifest arrives;
    # gateway/store/objects.py).
    """
CREATE TABLE pending_chunks (
    device TEXT NOT NULL,
    oid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    digest BLOB NOT NULL,
    bytes INTEGER NOT NULL,          -- the chunk's ciphertext bytes
    received_at REAL NOT NULL,
    PRIMARY KEY (device, oid, idx)
);
CREATE INDEX pending_chunks_received ON pending_chunks (received_at);
""",
]

LATEST = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The database is not at the version this code works with."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer EdgeKeep than this one."""


def version(db: Connection) -> int:
    if dialect.dialect_of(db) == dialect.POSTGRESQL:
        if db.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    found: int = db.execute("PRAGMA user_version").fetchone()[0]
    return found


def _set_version(db: Connection, n: int) -> None:
    if dialect.dialect_of(db) == dialect.POSTGRESQL:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (n,))
    else:
        db.execute("PRAGMA user_version = %d" % n)


def too_new(found: int, where: str = "the database") -> SchemaTooNew:
    return SchemaTooNew(
        "%s is at schema version %d, but this EdgeKeep knows only up to version %d: it was "
        "written by a newer EdgeKeep; upgrade EdgeKeep to open it" % (where, found, LATEST))


def check(db: Connection, where: str = "the database") -> None:
    """SchemaError unless db is at exactly LATEST (a connection opened after `migrate`)."""
    found = version(db)
    if found > LATEST:
        raise too_new(found, where)
    if found < LATEST:
        raise SchemaError("%s is at schema version %d, this EdgeKeep needs %d: start the gateway "
                          "(or run any `edgekeep` command on it) to migrate it"
                          % (where, found, LATEST))


def statements(script: str) -> list[str]:
    """The statements of an SQL script, one by one (executescript would COMMIT first)."""
    out: list[str] = []
    part = ""
    for line in script.splitlines(keepends=True):
        part += line
        if sqlite3.complete_statement(part):
            out.append(part.strip())
            part = ""
    if part.strip():
        raise ValueError("incomplete SQL statement in a migration: %r" % part.strip()[:80])
    return out


def migrate(db: Connection, where: str = "the database") -> int:
    """Bring db to LATEST: the missing migrations in order, in one transaction. Returns the
    migrations applied (0 when it is current). SchemaTooNew for a database newer than this
    code. db: a connection in autocommit mode (sqlite3's isolation_level=None)."""
    if version(db) == LATEST:
        return 0
    postgres = dialect.dialect_of(db) == dialect.POSTGRESQL
    db.execute("BEGIN IMMEDIATE")
    try:
        if postgres:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        found = version(db)  # again under the write lock: another process may have migrated
        if found > LATEST:
            raise too_new(found, where)
        for n in range(found, LATEST):
            for stmt in statements(MIGRATIONS[n]):
                db.execute(dialect.ddl(stmt) if postgres else stmt)
        _set_version(db, LATEST)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return LATEST - found
