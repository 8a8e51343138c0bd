"""The store's metadata as deltas for the network, and their replay on a new machine
(docs/network.md, "The catalog and the metadata"), on the Store's connection (`store.backup`).

A delta holds what changed since a Mark: the messages sealed in later epochs (their rows
without the bytes: those are blobs of their own), those epochs, the objects updated since
and their chunks, gaps and refused messages recorded since, and every device and counter (a
few rows) and the key of every object there is (so that one deleted by retention is deleted
on a replay too). Replaying the deltas in order, with the messages' bytes from their blobs,
rebuilds the tables the ingest, the anchor outbox and the web page read.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.store.dialect import POSTGRESQL, Connection, dialect_of

Rows = list[list[Any]]
Delta = dict[str, Any]

# table -> (columns, the delta's condition on them)
DEVICE_COLUMNS = ("id", "public_key", "name", "kind", "owner", "status", "registered_at",
                  "acked", "last_seen", "health")
MESSAGE_COLUMNS = ("id", "device", "seq", "kind", "time", "count", "digest", "received_at",
                   "epoch", "leaf")
EPOCH_COLUMNS = ("epoch", "root", "count", "sealed_at", "status", "tx_hash", "block",
                 "block_hash", "gas", "attempts", "last_error", "mined_at")
OBJECT_COLUMNS = ("device", "oid", "seq", "time", "event", "type", "size", "chunk_size", "count",
                  "root", "hashes", "stored", "bytes", "created_at", "updated_at",
                  "completed_at", "parent")
CHUNK_COLUMNS = ("device", "oid", "idx", "digest")
GAP_COLUMNS = ("device", "first", "last", "recorded_at")
REFUSED_COLUMNS = ("device", "seq", "digest", "reason", "detail", "recorded_at")
# the primary key of each table a delta upserts into: a replayed row replaces the row with
# its key, every column (all of them are in the delta)
KEYS = {"devices": ("id",), "epochs": ("epoch",), "messages": ("id",),
        "objects": ("device", "oid"), "object_chunks": ("device", "oid", "idx"),
        "refused": ("device", "seq"), "counters": ("name",), "rejects": ("reason",)}


class Mark(NamedTuple):
    """Where the last delta ended: its last epoch, the last epoch before which every one was
    mined (later ones are sent again, with their anchors), and its time."""
    epoch: int
    settled: int
    time: float


class Backup:
    def __init__(self, db: Connection) -> None:
        self.db = db

    def _select(self, table: str, columns: Sequence[str], where: str = "TRUE",
                args: Sequence[Any] = ()) -> Rows:
        return [list(r) for r in self.db.execute(
            "SELECT %s FROM %s WHERE %s" % (", ".join(columns), table, where), args)]

    def delta(self, since: Mark, now: float) -> tuple[Delta, Mark]:
        """What changed after `since`, up to the last sealed epoch; and the delta's own mark.
        An epoch is in the delta whole, mined or not: its anchor fields are updated by a
        later delta (every epoch not mined at `since` is sent again)."""
        last: int = self.db.execute("SELECT coalesce(max(epoch), 0) FROM epochs").fetchone()[0]
        unmined: int = self.db.execute(
            "SELECT coalesce(min(epoch), ?) FROM epochs WHERE status != 'mined'",
            (last + 1,)).fetchone()[0]
        d: Delta = {
            "v": 1, "upto": last, "time": now,
            "devices": self._select("devices", DEVICE_COLUMNS),
            "epochs": self._select("epochs", EPOCH_COLUMNS, "epoch > ?", (since.settled,)),
            "messages": self._select("messages", MESSAGE_COLUMNS, "epoch > ? ORDER BY id",
                                     (since.epoch,)),
            "objects": self._select("objects", OBJECT_COLUMNS, "updated_at > ?", (since.time,)),
            # every object there is now: one retention deleted is deleted on a replay too
            "object_keys": self._select("objects", ("device", "oid")),
            "chunks": self._select(
                "object_chunks", CHUNK_COLUMNS, "(device, oid) IN (SELECT device, oid FROM "
                "objects WHERE updated_at > ?)", (since.time,)),
            "gaps": self._select("gaps", GAP_COLUMNS, "recorded_at > ?", (since.time,)),
            "refused": self._select("refused", REFUSED_COLUMNS, "recorded_at > ?", (since.time,)),
            "counters": self._select("counters", ("name", "count")),
            "rejects": self._select("rejects", ("reason", "count")),
        }
        return d, Mark(last, unmined - 1, now)

    def apply(self, d: Mapping[str, Any], raw_of: Callable[[bytes], bytes | None]) -> int:
        """Replay a delta (inside the caller's transaction); raw_of(digest) gives a message's
        bytes, None if its blob was lost (the message is then left out). The messages left
        out."""
        self._upsert("devices", DEVICE_COLUMNS, d["devices"])
        self._upsert("epochs", EPOCH_COLUMNS, d["epochs"])
        rows, lost = [], 0
        digest_at = MESSAGE_COLUMNS.index("digest")
        for r in d["messages"]:
            raw = raw_of(r[digest_at])
            if raw is None:
                lost += 1
                continue
            rows.append(list(r) + [raw])
        self._upsert("messages", MESSAGE_COLUMNS + ("raw",), rows)
        if dialect_of(self.db) == POSTGRESQL:  # ids given: the next one after them
            self.db.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), max(id)) "
                            "FROM messages")
        # a delta made before objects.parent has one column less: no parent
        self._upsert("objects", OBJECT_COLUMNS,
                     [list(r) + [None] * (len(OBJECT_COLUMNS) - len(r)) for r in d["objects"]])
        self._upsert("object_chunks", CHUNK_COLUMNS, d["chunks"])
        self._keep_objects(d["object_keys"])
        self._insert("gaps", GAP_COLUMNS, d["gaps"])
        self._upsert("refused", REFUSED_COLUMNS, d["refused"])
        self._upsert("counters", ("name", "count"), d["counters"])
        self._upsert("rejects", ("reason", "count"), d["rejects"])
        return lost

    def _keep_objects(self, keys: Rows) -> None:
        """Delete the objects (and their chunks' rows) not among keys [[device, oid]]."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_objects (device TEXT, oid TEXT)")
        self.db.execute("DELETE FROM keep_objects")
        self.db.executemany("INSERT INTO keep_objects VALUES (?, ?)", keys)
        for table in ("object_chunks", "objects"):
            self.db.execute("DELETE FROM %s WHERE (device, oid) NOT IN (SELECT device, oid "
                            "FROM keep_objects)" % table)
        self.db.execute("DELETE FROM keep_objects")

    def _upsert(self, table: str, columns: Sequence[str], rows: Rows) -> None:
        key = KEYS[table]
        self.db.executemany("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO UPDATE SET %s" % (
            table, ", ".join(columns), ", ".join("?" * len(columns)), ", ".join(key),
            ", ".join("%s = excluded.%s" % (c, c) for c in columns if c not in key)), rows)

    def _insert(self, table: str, columns: Sequence[str], rows: Rows) -> None:
        self.db.executemany("INSERT INTO %s (%s) VALUES (%s)" % (
            table, ", ".join(columns), ", ".join("?" * len(columns))), rows)

    def fix_acked(self) -> None:
        """Each device's acked sequence from the messages it has (after a replay): the
        highest seq with every one below it stored, gapped or refused."""
        self.db.execute(
            "UPDATE devices SET acked = coalesce((SELECT max(seq) FROM messages "
            "WHERE messages.device = devices.id), acked)")

    # -- the snapshots made (table snapshots) ------------------------------------------------

    def last_mark(self) -> Mark:
        row = self.db.execute("SELECT upto, settled, time FROM snapshots ORDER BY seq DESC "
                              "LIMIT 1").fetchone()
        return Mark(0, 0, 0.0) if row is None else Mark(*row)

    def add_snapshot(self, digest: bytes, mark: Mark) -> int:
        seq: int = self.db.execute(
            "INSERT INTO snapshots (digest, upto, settled, time) VALUES (?, ?, ?, ?) "
            "RETURNING seq", (digest, mark.epoch, mark.settled, mark.time)).fetchone()[0]
        return seq

    def snapshots(self) -> list[bytes]:
        """The digests of every snapshot made, in order."""
        return [r[0] for r in self.db.execute("SELECT digest FROM snapshots ORDER BY seq")]

    def unpublished(self) -> int:
        """How many snapshots the peers' catalog does not list yet."""
        n: int = self.db.execute("SELECT count(*) FROM snapshots WHERE published_at IS NULL"
                                 ).fetchone()[0]
        return n

    def set_published(self, time: float) -> None:
        self.db.execute("UPDATE snapshots SET published_at = ? WHERE published_at IS NULL",
                        (time,))
