"""The gateway's durable state: SQLite in WAL mode, one file in the data directory.

Messages are stored as received (signed envelope + ciphertext); the gateway holds no key
that opens them.
"""
import json
import os
import sqlite3
import time

SCHEMA = """
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
"""


def db_path(data_dir):
    return os.path.join(data_dir, "store.db")


def connect(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    db = sqlite3.connect(db_path(data_dir), timeout=30, isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def add_rejects(db, counts):
    for reason, n in counts.items():
        db.execute("INSERT INTO rejects (reason, count) VALUES (?, ?) "
                   "ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count", (reason, n))


class Store:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.db = connect(data_dir)

    def close(self):
        self.db.close()

    # -- devices ---------------------------------------------------------------

    def add_device(self, dev_hex, public_key, name=None, kind="tracker", owner=None):
        self.db.execute(
            "INSERT INTO devices (id, public_key, name, kind, owner, registered_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (dev_hex, public_key, name, kind, owner, time.time()))

    def revoke_device(self, dev_hex):
        cur = self.db.execute("UPDATE devices SET status = 'revoked' WHERE id = ?", (dev_hex,))
        return cur.rowcount == 1

    def devices(self):
        return self._devices("ORDER BY name, id")

    def device(self, dev_hex):
        found = self._devices("WHERE id = ?", (dev_hex,))
        return found[0] if found else None

    def _devices(self, clause, args=()):
        cur = self.db.execute(
            "SELECT id, name, kind, status, acked, last_seen, health, public_key, registered_at "
            "FROM devices " + clause, args)
        cols = [c[0] for c in cur.description]
        out = []
        for row in cur:
            d = dict(zip(cols, row))
            d["health"] = json.loads(d["health"]) if d["health"] else None
            out.append(d)
        return out

    # -- messages --------------------------------------------------------------

    def message_count(self):
        return self.db.execute("SELECT count(*) FROM messages").fetchone()[0]

    def messages(self, device=None, kind=None):
        sql = "SELECT id, device, seq, kind, time, count, raw, epoch, leaf FROM messages"
        where, args = [], []
        if device:
            where.append("device = ?")
            args.append(device)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = self.db.execute(sql + " ORDER BY device, seq", args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def epoch_leaves(self, epoch):
        return [r[0] for r in self.db.execute(
            "SELECT digest FROM messages WHERE epoch = ? ORDER BY leaf", (epoch,))]

    def gaps(self, device=None):
        sql = "SELECT device, first, last, recorded_at FROM gaps"
        rows = self.db.execute(sql + (" WHERE device = ?" if device else ""),
                               (device,) if device else ())
        return [dict(zip(("device", "first", "last", "recorded_at"), r)) for r in rows]

    # -- epochs and counters ---------------------------------------------------

    def epochs(self):
        cur = self.db.execute("SELECT * FROM epochs ORDER BY epoch")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def epoch(self, epoch):
        cur = self.db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def reject_counts(self):
        return dict(self.db.execute("SELECT reason, count FROM rejects"))


    # -- views for the admin page (read-only but for rename) ---------------------

    def rename_device(self, dev_hex, name):
        cur = self.db.execute("UPDATE devices SET name = ? WHERE id = ?", (name, dev_hex))
        return cur.rowcount == 1

    def latest_message_id(self):
        return self.db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]

    def messages_after(self, last_id, limit=1000):
        """Metadata (no payload) of messages stored after row id last_id, oldest first."""
        cur = self.db.execute(
            "SELECT id, device, seq, kind, time, count, received_at FROM messages "
            "WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def recent_messages(self, device, kind=None, limit=50):
        """A device's newest messages, newest first, with their raw bytes."""
        sql = ("SELECT id, seq, kind, time, count, raw, epoch, leaf, received_at FROM messages "
               "WHERE device = ?" + (" AND kind = ?" if kind else "") + " ORDER BY seq DESC LIMIT ?")
        cur = self.db.execute(sql, (device, kind, limit) if kind else (device, limit))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def message(self, device, seq):
        cur = self.db.execute("SELECT id, device, seq, kind, time, count, raw, epoch, leaf, "
                              "received_at FROM messages WHERE device = ? AND seq = ?",
                              (device, seq))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def recent_epochs(self, limit=100):
        cur = self.db.execute("SELECT * FROM epochs ORDER BY epoch DESC LIMIT ?", (limit,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def last_anchor(self):
        rows = self.db.execute("SELECT epoch FROM epochs WHERE status = 'mined' "
                               "ORDER BY epoch DESC LIMIT 1").fetchall()
        return self.epoch(rows[0][0]) if rows else None

    def pending_epochs(self):
        return self.db.execute("SELECT count(*) FROM epochs WHERE status != 'mined'").fetchone()[0]

    def last_audit(self):
        """The newest row of the Keeper's `audits` table, or None while there is none."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'audits'").fetchone():
            return None
        cur = self.db.execute("SELECT * FROM audits ORDER BY rowid DESC LIMIT 1")
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None
