"""The Keeper's rows: audits, their records, repairs and its own counters (tables audits,
audit_records, repairs, keeper_state), on the Store's connection (`store.audits`).
"""

RECORD_COLUMNS = ("idx", "epoch", "leaf", "chunk", "digest", "outcome", "detail", "hash")


class Audits:
    def __init__(self, db):
        self.db = db

    def _row(self, sql, args=()):
        cur = self.db.execute(sql, args)
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    # -- audits ------------------------------------------------------------------------

    def start(self, time, mode, seed_block, seed_hash):
        """A new open audit; its id."""
        return self.db.execute("INSERT INTO audits (time, mode, seed_block, seed_hash) "
                               "VALUES (?, ?, ?, ?)", (time, mode, seed_block, seed_hash)).lastrowid

    def add_records(self, audit, records):
        """records: [(idx, epoch, leaf, chunk, digest, outcome, detail, hash)] of the audit."""
        self.db.executemany("INSERT INTO audit_records (audit, idx, epoch, leaf, chunk, digest, "
                            "outcome, detail, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(audit,) + tuple(r) for r in records])

    def finish(self, audit, challenges, failed, skipped, root, ok):
        self.db.execute("UPDATE audits SET challenges = ?, failed = ?, skipped = ?, root = ?, "
                        "ok = ? WHERE id = ?", (challenges, failed, skipped, root, ok, audit))

    def set_repaired(self, audit, repaired, ok, alarm):
        self.db.execute("UPDATE audits SET repaired = ?, ok = ?, alarm = ? WHERE id = ?",
                        (repaired, ok, alarm, audit))

    def set_empty(self, audit):
        self.db.execute("UPDATE audits SET status = 'empty' WHERE id = ?", (audit,))

    def set_anchored(self, audit, tx_hash, block):
        self.db.execute("UPDATE audits SET status = 'anchored', tx_hash = ?, block = ? "
                        "WHERE id = ?", (tx_hash, block, audit))

    def set_error(self, audit, alarm):
        """Not anchored: status error, and alarm unless the audit has one already."""
        self.db.execute("UPDATE audits SET status = 'error', alarm = coalesce(alarm, ?) "
                        "WHERE id = ?", (alarm, audit))

    def get(self, audit):
        """An audit's row as a dict, or None."""
        return self._row("SELECT * FROM audits WHERE id = ?", (audit,))

    def last(self):
        """The newest audit's row, or None while there is none."""
        return self._row("SELECT * FROM audits ORDER BY id DESC LIMIT 1")

    def records(self, audit):
        """[(idx, epoch, leaf, chunk, digest, outcome, detail, hash)] of an audit, in order."""
        return self.db.execute("SELECT %s FROM audit_records WHERE audit = ? ORDER BY idx"
                               % ", ".join(RECORD_COLUMNS), (audit,)).fetchall()

    # -- repairs -----------------------------------------------------------------------

    def add_repair(self, time, digest, good, outcome, detail):
        self.db.execute("INSERT INTO repairs (time, digest, good, outcome, detail) "
                        "VALUES (?, ?, ?, ?, ?)", (time, digest, good, outcome, detail))

    def repair_count(self):
        return self.db.execute("SELECT count(*) FROM repairs").fetchone()[0]

    def unrepairable(self):
        """Blobs still held whose last repair found them lost."""
        return self.db.execute(
            "SELECT count(DISTINCT r.digest) FROM repairs r JOIN blobs b ON b.digest = r.digest "
            "WHERE r.outcome = 'lost' AND r.id = (SELECT max(id) FROM repairs WHERE digest = r.digest)"
        ).fetchone()[0]

    # -- the Keeper's counters ----------------------------------------------------------

    def state(self, key):
        row = self.db.execute("SELECT value FROM keeper_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def set_state(self, key, value):
        self.db.execute("INSERT INTO keeper_state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key, value))
