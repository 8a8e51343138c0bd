"""The gateway's durable state: SQLite in WAL mode, one file in the data directory; or a
PostgreSQL database (the config's database_url), behind the same Store.

Messages are stored as received (signed envelope + ciphertext); the gateway holds no key
that opens them.

`Store.open(data_dir)` is the start: it makes the directory and the file and migrates the
schema (gateway/store/schema.py). Every other connection of the process (the ingest's, the
anchor outbox's, the web app's) comes from `Store.connect(data_dir)`, which only checks the
schema version. Constructors do nothing but keep what they are given. Callers use methods
and plain values; a transaction is `with store.transaction():`. Objects (store/objects.py),
the Keeper's audits (store/audits.py) and the Provider's blobs (store/blobs.py) share the
Store's connection: `store.objects`, `store.audits`, `store.blobs`, `store.enrollments`.

PostgreSQL (gateway/store/postgres.py, gateway/store/dialect.py): `Store.open(data_dir, url)`
migrates the database at url and notes in this process that data_dir's store is there, so
that `Store.connect(data_dir)` (every other connection, from the URL's pool) needs no URL.
It also leaves data_dir/store.postgresql (the URL, without its password): a data directory
whose store is in PostgreSQL is never opened as an empty SQLite store by mistake.
"""
import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Self

from gateway.store import dialect, schema
from gateway.store.alerts import Alerts
from gateway.store.audits import Audits
from gateway.store.backup import Backup
from gateway.store.blobs import Blobs
from gateway.store.dialect import Connection
from gateway.store.enrollments import Enrollments
from gateway.store.objects import Objects
from gateway.store.peers import Peers
from gateway.store.placements import Placements
from gateway.store.workers import Workers

log = logging.getLogger("edgekeep.store")

Row = dict[str, Any]  # a row by column name (a device's health decoded from its JSON)


class DeviceKey(NamedTuple):
    """What the ingest needs of a device: its key, status and highest acked sequence."""
    id: str
    public_key: bytes
    status: str
    acked: int


class Unsealed(NamedTuple):
    """A message in no epoch yet: its row id and digest."""
    id: int
    digest: bytes


class StoredMessage(NamedTuple):
    """A stored message as the Keeper copies it: row id, digest, raw bytes."""
    id: int
    digest: bytes
    raw: bytes


def environmental(error: BaseException) -> bool:
    """True for an error of the store or the machine (disk full, I/O, a corrupt file, out of
    memory) rather than of the values being written: what failed would fail for any message,
    so the ingest fails the batch (redelivered) instead of refusing the message."""
    postgres = sys.modules.get("gateway.store.postgres")  # imported if a store is there
    return (isinstance(error, (sqlite3.OperationalError, OSError, MemoryError))
            or type(error) is sqlite3.DatabaseError or not isinstance(error, Exception)
            or (postgres is not None and isinstance(error, postgres.ENVIRONMENTAL)))


def db_path(data_dir: str) -> str:
    return os.path.join(data_dir, "store.db")


def postgres_marker(data_dir: str) -> str:
    """The file that says data_dir's store is in PostgreSQL (and where, without password)."""
    return os.path.join(data_dir, "store.postgresql")


_urls: dict[str, str] = {}   # realpath(data_dir) -> database URL, from Store.open
_urls_lock = threading.Lock()


def _url_of(data_dir: str, url: str | None) -> str | None:
    """The database URL of data_dir: url if given, else the one Store.open used in this
    process, else the one its marker file names (a PostgreSQL data directory opened by a
    command given only --data-dir); None: SQLite."""
    if url:
        if not dialect.is_postgres_url(url):
            raise ValueError("database_url must be postgresql://... (or empty for SQLite in "
                             "the data directory), not %r" % url)
        return url
    with _urls_lock:
        known = _urls.get(os.path.realpath(data_dir))
    if known is None and os.path.exists(postgres_marker(data_dir)):
        with open(postgres_marker(data_dir)) as f:
            return _without_password(f.read().strip())
    return known


def _without_password(url: str) -> str:
    """The marker's URL with its `:***` left out: libpq takes the password from ~/.pgpass,
    PGPASSFILE or PGPASSWORD, as for the gateway (docs/operations.md)."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        rest = userinfo.split(":", 1)[0] + "@" + host
    return scheme + "://" + rest


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class Store:
    def __init__(self, db: Connection, data_dir: str | None = None) -> None:
        """A store over an open connection (autocommit mode: a sqlite3.Connection with
        isolation_level=None, or a postgres.Connection); no I/O."""
        self.db = db
        self.data_dir = data_dir
        self.objects = Objects(db)
        self.audits = Audits(db)
        self.blobs = Blobs(db)
        self.peers = Peers(db)
        self.placements = Placements(db)
        self.backup = Backup(db)
        self.workers = Workers(db)
        self.enrollments = Enrollments(db)
        self.alerts = Alerts(db)

    @classmethod
    def open(cls, data_dir: str, url: str | None = None) -> Self:
        """The store of data_dir, made if need be and migrated to the latest schema: once, at
        start (the gateway service, the CLI, tests). url: a PostgreSQL database
        (postgresql://...) instead of SQLite in data_dir (None or empty: SQLite, unless
        this process opened data_dir's store in PostgreSQL already)."""
        url = _url_of(data_dir, url)
        os.makedirs(data_dir, exist_ok=True)
        if url:
            return cls._open_postgres(data_dir, url)
        db = _connect(db_path(data_dir))
        try:
            schema.migrate(db, db_path(data_dir))
        except BaseException:
            db.close()
            raise
        return cls(db, data_dir)

    @classmethod
    def _open_postgres(cls, data_dir: str, url: str) -> Self:
        from gateway.store import postgres
        where = postgres.redact(url)
        direct = postgres.direct(url)   # its error at once, not a pool's timeout
        try:
            schema.migrate(direct, where)
        finally:
            direct.close()
        marker = postgres_marker(data_dir)
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write(where + "\n")
        os.replace(tmp, marker)
        with _urls_lock:
            _urls[os.path.realpath(data_dir)] = url
        return cls(postgres.pooled(url), data_dir)

    @classmethod
    def connect(cls, data_dir: str, url: str | None = None) -> Self:
        """Another connection to a store already opened (migrated) with Store.open; on
        PostgreSQL the URL Store.open was given, unless url says otherwise."""
        url = _url_of(data_dir, url)
        if url:
            from gateway.store import postgres
            pg = postgres.pooled(url)
            try:
                schema.check(pg, postgres.redact(url))
            except BaseException:
                pg.close()
                raise
            return cls(pg, data_dir)
        path = db_path(data_dir)
        if not os.path.exists(path):
            raise schema.SchemaError("%s does not exist: open it with Store.open first" % path)
        db = _connect(path)
        try:
            schema.check(db, path)
        except BaseException:
            db.close()
            raise
        return cls(db, data_dir)

    @property
    def dialect(self) -> str:
        """dialect.SQLITE or dialect.POSTGRESQL."""
        return dialect.dialect_of(self.db)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
        """One write transaction (taken at once: BEGIN IMMEDIATE); rolled back if the block
        or the COMMIT raises. SQLite may already have rolled back by itself (a COMMIT that
        fails with "database or disk is full"): then there is nothing to roll back, and the
        caller sees the original error, never "cannot rollback - no transaction is active"."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except Exception as e:  # the original error is the one raised
                    log.warning("rollback after a failed transaction failed too: %s", e)
            raise

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Self]:
        """A nested step inside a transaction (SAVEPOINT): if the block raises, what it wrote
        is undone and the exception goes on, while the enclosing transaction stays open with
        everything written before the block. The ingest stores each message in one, so a
        message that cannot be stored costs only itself."""
        self.db.execute("SAVEPOINT step")
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK TO step")
            self.db.execute("RELEASE step")
            raise
        self.db.execute("RELEASE step")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        cur = self.db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # -- devices ---------------------------------------------------------------

    def add_device(self, dev_hex: str, public_key: bytes, name: str | None = None,
                   kind: str = "tracker", owner: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO devices (id, public_key, name, kind, owner, registered_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (dev_hex, public_key, name, kind, owner, time.time()))

    def revoke_device(self, dev_hex: str) -> bool:
        cur = self.db.execute("UPDATE devices SET status = 'revoked' WHERE id = ?", (dev_hex,))
        return cur.rowcount == 1

    def devices(self) -> list[Row]:
        return self._devices("ORDER BY name NULLS FIRST, id")  # SQLite's order on both

    def device(self, dev_hex: str) -> Row | None:
        found = self._devices("WHERE id = ?", (dev_hex,))
        return found[0] if found else None

    def _devices(self, clause: str, args: Sequence[Any] = ()) -> list[Row]:
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

    def message_count(self) -> int:
        n: int = self.db.execute("SELECT count(*) FROM messages").fetchone()[0]
        return n

    def messages(self, device: str | None = None, kind: str | None = None) -> list[Row]:
        sql = "SELECT id, device, seq, kind, time, count, raw, epoch, leaf FROM messages"
        where: list[str] = []
        args: list[str] = []
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

    def epoch_leaves(self, epoch: int) -> list[bytes]:
        return [r[0] for r in self.db.execute(
            "SELECT digest FROM messages WHERE epoch = ? ORDER BY leaf", (epoch,))]

    def gaps(self, device: str | None = None) -> list[Row]:
        sql = "SELECT device, first, last, recorded_at FROM gaps"
        rows = self.db.execute(sql + (" WHERE device = ?" if device else ""),
                               (device,) if device else ())
        return [dict(zip(("device", "first", "last", "recorded_at"), r)) for r in rows]

    # -- epochs and counters ---------------------------------------------------

    def epochs(self) -> list[Row]:
        cur = self.db.execute("SELECT * FROM epochs ORDER BY epoch")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def epoch(self, epoch: int) -> Row | None:
        cur = self.db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def reject_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT reason, count FROM rejects"))

    def counts(self) -> dict[str, int]:
        """{name: count} of the counters; duplicates is 0 until the first one."""
        return {"duplicates": 0, **dict(self.db.execute("SELECT name, count FROM counters"))}


    # -- views for the admin page (read-only but for rename) ---------------------

    def rename_device(self, dev_hex: str, name: str) -> bool:
        cur = self.db.execute("UPDATE devices SET name = ? WHERE id = ?", (name, dev_hex))
        return cur.rowcount == 1

    def latest_message_id(self) -> int:
        last: int = self.db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        return last

    def messages_after(self, last_id: int, limit: int = 1000) -> list[Row]:
        """Metadata (no payload) of messages stored after row id last_id, oldest first."""
        cur = self.db.execute(
            "SELECT id, device, seq, kind, time, count, received_at FROM messages "
            "WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def recent_messages(self, device: str, kind: str | None = None,
                        limit: int = 50) -> list[Row]:
        """A device's newest messages, newest first, with their raw bytes."""
        sql = ("SELECT id, seq, kind, time, count, raw, epoch, leaf, received_at FROM messages "
               "WHERE device = ?" + (" AND kind = ?" if kind else "") + " ORDER BY seq DESC LIMIT ?")
        cur = self.db.execute(sql, (device, kind, limit) if kind else (device, limit))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def messages_page(self, device: str, kind: str | None, start: int, end: int,
                      after: tuple[int, int] | None, limit: int) -> list[Row]:
        """A device's messages with start <= time < end, newest first by (time, seq), those
        after the cursor (the last row of the page before: its time and seq) only. With kind
        it is one range of the index messages_device_time; the cursor bounds that range
        (time <= its time) because a row-value comparison would not."""
        sql = ("SELECT id, seq, kind, time, count, raw, epoch, leaf, received_at FROM messages "
               "WHERE device = ?" + (" AND kind = ?" if kind else "") + " AND time >= ? AND time < ?")
        args: list[object] = [device] + ([kind] if kind else []) + [start, end]
        if after:
            sql += " AND time <= ? AND (time < ? OR seq < ?)"
            args += [after[0], after[0], after[1]]
        cur = self.db.execute(sql + " ORDER BY time DESC, seq DESC LIMIT ?", args + [limit])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def message(self, device: str, seq: int) -> Row | None:
        cur = self.db.execute("SELECT id, device, seq, kind, time, count, raw, epoch, leaf, "
                              "received_at FROM messages WHERE device = ? AND seq = ?",
                              (device, seq))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def recent_epochs(self, limit: int = 100) -> list[Row]:
        cur = self.db.execute("SELECT * FROM epochs ORDER BY epoch DESC LIMIT ?", (limit,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def last_anchor(self) -> Row | None:
        rows = self.db.execute("SELECT epoch FROM epochs WHERE status = 'mined' "
                               "ORDER BY epoch DESC LIMIT 1").fetchall()
        return self.epoch(rows[0][0]) if rows else None

    def pending_epochs(self) -> int:
        n: int = self.db.execute(
            "SELECT count(*) FROM epochs WHERE status != 'mined'").fetchone()[0]
        return n

    def last_audit(self) -> Row | None:
        """The Keeper's newest audit, or None while there is none."""
        return self.audits.last()

    # -- the ingest, inside its transaction --------------------------------------

    def device_keys(self) -> list[DeviceKey]:
        """[(id, public_key, status, acked)] of every device."""
        return [DeviceKey._make(r)
                for r in self.db.execute("SELECT id, public_key, status, acked FROM devices")]

    def acked_of(self, devices: Iterable[str]) -> dict[str, int]:
        """{device: its acked sequence} as the database has it: other ingest workers move
        it too, so a batch reads it under the write lock before it decides anything."""
        devices = sorted(set(devices))
        if not devices:
            return {}
        marks = ", ".join("?" * len(devices))
        return dict(self.db.execute("SELECT id, acked FROM devices WHERE id IN (%s)" % marks,
                                    devices).fetchall())

    def message_digest(self, device: str, seq: int) -> bytes | None:
        """The digest stored for (device, seq), or None."""
        row = self.db.execute("SELECT digest FROM messages WHERE device = ? AND seq = ?",
                              (device, seq)).fetchone()
        digest: bytes | None = row and row[0]
        return digest

    def message_digests(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """{(device, seq): digest} of those of keys that are stored: one query per batch."""
        seqs: dict[str, set[int]] = {}
        for device, seq in keys:
            seqs.setdefault(device, set()).add(seq)
        if not seqs:
            return {}
        where = " OR ".join("(device = ? AND seq IN (%s))" % ", ".join("?" * len(s))
                            for s in seqs.values())
        args = [v for device, s in seqs.items() for v in (device, *sorted(s))]
        return {(d, q): digest for d, q, digest in self.db.execute(
            "SELECT device, seq, digest FROM messages WHERE " + where, args)}

    def add_message(self, device: str, seq: int, kind: str, time: int, count: int | None,
                    digest: bytes, raw: bytes, received_at: float) -> None:
        self.add_messages([(device, seq, kind, time, count, digest, raw, received_at)])

    def add_messages(self, rows: Sequence[tuple[str, int, str, int, int | None, bytes, bytes,
                                                float]]) -> None:
        """Insert rows of (device, seq, kind, time, count, digest, raw, received_at): one
        round trip on PostgreSQL (psycopg sends executemany as a pipeline)."""
        self.db.executemany(
            "INSERT INTO messages (device, seq, kind, time, count, digest, raw, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def set_health(self, device: str, health: Mapping[Any, Any]) -> None:
        """A device's last status report (a dict, kept as JSON)."""
        self.db.execute("UPDATE devices SET health = ? WHERE id = ?",
                        (json.dumps(health, default=str), device))

    def stored_seqs(self, device: str, above: int, below: int) -> list[int]:
        """The device's sequences strictly between above and below that are stored or
        refused (either way not lost on the device), ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM messages WHERE device = ? AND seq > ? AND seq < ? UNION "
            "SELECT seq FROM refused WHERE device = ? AND seq > ? AND seq < ? ORDER BY seq",
            (device, above, below, device, above, below))]

    def contiguous_seq(self, device: str, acked: int) -> int:
        """The highest sequence s >= acked with every one of acked+1..s stored or refused."""
        while True:
            for (seq,) in self.db.execute(
                    "SELECT seq FROM messages WHERE device = ? AND seq > ? ORDER BY seq",
                    (device, acked)):
                if seq != acked + 1:
                    break
                acked = seq
            start = acked
            for (seq,) in self.db.execute(  # nearly always none: one index probe
                    "SELECT seq FROM refused WHERE device = ? AND seq > ? ORDER BY seq",
                    (device, acked)):
                if seq != acked + 1:
                    break
                acked = seq
            if acked == start:
                return acked

    def refused_digest(self, device: str, seq: int) -> bytes | None:
        """The digest of the message refused at (device, seq), or None."""
        row = self.db.execute("SELECT digest FROM refused WHERE device = ? AND seq = ?",
                              (device, seq)).fetchone()
        digest: bytes | None = row and row[0]
        return digest

    def add_refused(self, device: str, seq: int, digest: bytes, reason: str, detail: str,
                    recorded_at: float) -> None:
        """A signed message the gateway refused (protocol.Refused): acked past like a gap."""
        self.db.execute(
            "INSERT INTO refused (device, seq, digest, reason, detail, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (device, seq, digest, reason, detail, recorded_at))

    def refused_seqs(self, device: str, above: int, upto: int) -> list[int]:
        """The device's refused sequences s with above < s <= upto, ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM refused WHERE device = ? AND seq > ? AND seq <= ? ORDER BY seq",
            (device, above, upto))]

    def refused(self, device: str | None = None) -> list[Row]:
        """The refused messages (device, seq, reason, detail, recorded_at), by device and seq."""
        return self._rows("SELECT device, seq, reason, detail, recorded_at FROM refused"
                          + (" WHERE device = ?" if device else "") + " ORDER BY device, seq",
                          (device,) if device else ())

    def add_gap(self, device: str, first: int, last: int, recorded_at: float) -> None:
        self.db.execute("INSERT INTO gaps (device, first, last, recorded_at) VALUES (?, ?, ?, ?)",
                        (device, first, last, recorded_at))

    def set_acked(self, acked: Mapping[str, int], last_seen: float) -> None:
        """{device: highest contiguous durable sequence}, all heard from at last_seen."""
        self.db.executemany("UPDATE devices SET acked = ?, last_seen = ? WHERE id = ?",
                            [(seq, last_seen, dev) for dev, seq in acked.items()])

    def add_counts(self, counts: Mapping[str, int]) -> None:
        """Add {name: count} to the counters (duplicates)."""
        self.db.executemany(
            "INSERT INTO counters (name, count) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET count = counters.count + excluded.count",
            [(k, n) for k, n in counts.items() if n])

    def add_rejects(self, counts: Mapping[str, int]) -> None:
        """Add {reason: count} to the reject counters."""
        self.db.executemany(
            "INSERT INTO rejects (reason, count) VALUES (?, ?) "
            "ON CONFLICT (reason) DO UPDATE SET count = rejects.count + excluded.count",
            list(counts.items()))

    # -- epochs: sealing (in a transaction) and the anchor outbox -----------------

    def unsealed(self) -> list[Unsealed]:
        """[(id, digest)] of the messages in no epoch yet, in arrival order."""
        return [Unsealed._make(r) for r in self.db.execute(
            "SELECT id, digest FROM messages WHERE epoch IS NULL ORDER BY id")]

    def next_epoch(self) -> int:
        epoch: int = self.db.execute("SELECT coalesce(max(epoch), 0) + 1 FROM epochs").fetchone()[0]
        return epoch

    def add_epoch(self, epoch: int, root: bytes, message_ids: Sequence[int],
                  sealed_at: float) -> None:
        """Epoch `epoch` over message_ids (leaf i is message_ids[i]), pending anchoring."""
        self.db.executemany("UPDATE messages SET epoch = ?, leaf = ? WHERE id = ?",
                            [(epoch, i, mid) for i, mid in enumerate(message_ids)])
        self.db.execute("INSERT INTO epochs (epoch, root, count, sealed_at) VALUES (?, ?, ?, ?)",
                        (epoch, root, len(message_ids), sealed_at))

    def unmined_epochs(self) -> list[int]:
        """The numbers of the epochs not anchored yet, oldest first."""
        return [r[0] for r in self.db.execute(
            "SELECT epoch FROM epochs WHERE status != 'mined' ORDER BY epoch")]

    def epoch_sent(self, epoch: int, tx_hash: str) -> None:
        self.db.execute("UPDATE epochs SET status = 'sent', tx_hash = ?, "
                        "attempts = attempts + 1 WHERE epoch = ?", (tx_hash, epoch))

    def epoch_failed(self, epoch: int, error: str) -> None:
        self.db.execute("UPDATE epochs SET last_error = ?, attempts = attempts + 1 "
                        "WHERE epoch = ?", (error, epoch))

    def epoch_mined(self, epoch: int, block: int, block_hash: str | None, gas: int | None,
                    mined_at: float) -> None:
        """Epoch anchored in block; gas None keeps what was recorded."""
        self.db.execute("UPDATE epochs SET status = 'mined', block = ?, block_hash = ?, "
                        "gas = coalesce(?, gas), mined_at = ?, last_error = NULL WHERE epoch = ?",
                        (block, block_hash, gas, mined_at, epoch))

    # -- what the Keeper and the Provider read --------------------------------------

    def messages_from(self, after_id: int, limit: int = -1) -> list[StoredMessage]:
        """[(id, digest, raw)] of the messages stored after row id after_id, oldest first; at
        most limit of them (-1: all)."""
        sql = "SELECT id, digest, raw FROM messages WHERE id > ? ORDER BY id"
        args: tuple[int, ...] = (after_id,)
        if limit >= 0:
            sql, args = sql + " LIMIT ?", (after_id, limit)
        return [StoredMessage._make(r) for r in self.db.execute(sql, args)]

    def sealed_messages(self) -> list[Row]:
        """Every sealed message as a dict (device, seq, kind, raw, epoch, leaf), by epoch and
        leaf."""
        return self._rows("SELECT device, seq, kind, raw, epoch, leaf FROM messages "
                          "WHERE epoch IS NOT NULL ORDER BY epoch, leaf")

    def message_at(self, epoch: int, leaf: int) -> Row | None:
        """The message at leaf `leaf` of epoch `epoch` (device, seq, kind, digest, raw), or None."""
        return self._row("SELECT device, seq, kind, digest, raw FROM messages "
                         "WHERE epoch = ? AND leaf = ?", (epoch, leaf))
