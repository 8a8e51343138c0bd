"""The schema: numbered migrations run once by Store.open, a newer database refused, and
constructors that touch nothing; on SQLite and on PostgreSQL (database_url) alike."""
import os
import sqlite3

import pytest

from gateway.ingest.objects import ObjectStore
from gateway.keeper.audit import Keeper
from gateway.store import database, dialect, schema
from gateway.store.database import Store, db_path, postgres_marker
from gateway.store.provider import Provider
from tests.helpers.postgres import Traced, raw_connection, table_names

pytestmark = pytest.mark.unit

TABLES = {"devices", "messages", "gaps", "epochs", "rejects", "objects", "object_chunks",
          "audits", "audit_records", "repairs", "keeper_state", "blobs", "shares", "counters",
          "refused", "peers", "invitations", "peer_nonces", "held", "held_commits",
          "held_catalogs", "offbox", "placements", "network_commits", "snapshots", "leases", "workers",
          "enrollments", "update_bundles", "rollouts", "rollout_devices", "alerts",
          "alert_outbox", "alert_marks", "alert_optin", "alert_counts", "pending_chunks"}


def traced(db):
    """The statements db runs from now on."""
    seen = []
    db.set_trace_callback(seen.append)
    return seen


def ddl(statements):
    return [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))]


def tables(db):
    """The store's tables (PostgreSQL's schema_version, where SQLite has user_version, aside)."""
    return table_names(db) - {"schema_version"}


def test_a_fresh_database_is_migrated_to_the_latest_version_once(tmp_path, database_url):
    data = str(tmp_path / "gw")
    store = Store.open(data, database_url)
    assert schema.version(store.db) == schema.LATEST
    assert tables(store.db) == TABLES
    assert store.last_audit() is None           # the audits table is simply there
    store.close()
    db = Traced(raw_connection(data, database_url))
    assert schema.migrate(db) == 0              # already current: nothing applied
    assert ddl(db.seen) == [] and not any("BEGIN" in s for s in db.seen)
    db.close()


def test_opening_an_already_migrated_store_runs_no_ddl(tmp_path, monkeypatch, database_url):
    data = str(tmp_path / "gw")
    Store.open(data, database_url).close()
    applied = []
    real = schema.statements
    monkeypatch.setattr(schema, "statements", lambda script: applied.append(script) or real(script))
    Store.open(data, database_url).close()
    Store.connect(data).close()
    assert applied == []


def test_migrations_apply_in_order_in_one_transaction(tmp_path, monkeypatch, new_database_url):
    db = raw_connection(str(tmp_path / "x"), new_database_url())
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + [
        "CREATE TABLE later (x INTEGER);", "INSERT INTO later VALUES (1);"])
    monkeypatch.setattr(schema, "LATEST", len(schema.MIGRATIONS))
    assert schema.migrate(db) == schema.LATEST
    assert schema.version(db) == schema.LATEST
    assert db.execute("SELECT x FROM later").fetchall() == [(1,)]
    db.close()

    broken = raw_connection(str(tmp_path / "y"), new_database_url())
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:-1] + ["INSERT INTO nowhere VALUES (1);"])
    with pytest.raises(Exception, match="nowhere"):
        schema.migrate(broken)
    assert schema.version(broken) == 0 and tables(broken) == set()  # all or nothing
    broken.close()


def test_a_database_from_before_migrations_is_taken_to_version_1_as_it_is(tmp_path):
    """A gateway made before migrations left its tables at user_version 0."""
    data = str(tmp_path / "gw")
    os.makedirs(data)
    db = sqlite3.connect(db_path(data), isolation_level=None)
    db.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, public_key BLOB NOT NULL, name TEXT, "
               "kind TEXT NOT NULL DEFAULT 'tracker', owner TEXT, status TEXT NOT NULL DEFAULT "
               "'active', registered_at REAL NOT NULL, acked INTEGER NOT NULL DEFAULT 0, "
               "last_seen REAL, health TEXT)")
    db.execute("INSERT INTO devices (id, public_key, registered_at) VALUES ('aa', x'04', 0)")
    db.close()
    store = Store.open(data)
    assert schema.version(store.db) == schema.LATEST and tables(store.db) == TABLES
    assert [d["id"] for d in store.devices()] == ["aa"]


def set_version(db, n):
    if database_url_of(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (?)", (n,))
    else:
        db.execute("PRAGMA user_version = %d" % n)


def database_url_of(db):
    return getattr(db, "dialect", "sqlite") == "postgresql"


def test_a_database_at_an_older_version_gets_only_the_missing_migrations(tmp_path, database_url):
    data = str(tmp_path / "gw")
    db = raw_connection(data, database_url)
    for stmt in schema.statements(schema.MIGRATIONS[0]):
        db.execute(dialect.ddl(stmt) if database_url else stmt)
    set_version(db, 1)
    db.execute("INSERT INTO rejects (reason, count) VALUES ('malformed', 4)")
    db.close()
    store = Store.open(data, database_url)
    assert schema.version(store.db) == schema.LATEST and tables(store.db) == TABLES
    assert store.reject_counts() == {"malformed": 4}
    store.add_counts({"duplicates": 2})
    assert store.counts()["duplicates"] == 2


def test_a_database_newer_than_this_edgekeep_is_refused(tmp_path, database_url):
    data = str(tmp_path / "gw")
    Store.open(data, database_url).close()
    db = raw_connection(data, database_url)
    set_version(db, schema.LATEST + 1)
    db.close()
    for opener in (Store.open, Store.connect):
        with pytest.raises(schema.SchemaTooNew, match="upgrade EdgeKeep"):
            opener(data, database_url)


def test_connect_wants_a_migrated_postgresql_database(tmp_path, postgres_url):
    with pytest.raises(schema.SchemaError, match="migrate"):
        Store.connect(str(tmp_path / "gw"), postgres_url)


def test_a_postgresql_data_directory_is_never_opened_as_sqlite(tmp_path, postgres_url):
    """Store.open leaves store.postgresql (the URL, no password) in the data directory:
    another process that opens the directory without the URL opens that database (its
    password, if any, from ~/.pgpass), never a new, empty SQLite store."""
    data = str(tmp_path / "gw")
    Store.open(data, postgres_url).close()
    assert not os.path.exists(db_path(data))
    with open(postgres_marker(data)) as f:
        assert f.read().strip() == postgres_url
    Store.connect(data).close()                 # this process knows where it is
    database._urls.clear()                      # another process does not
    for opener in (Store.open, Store.connect):
        store = opener(data)
        assert store.dialect == "postgresql"
        store.close()
    assert not os.path.exists(db_path(data))
    assert database._without_password("postgresql://ek:***@db.lan:5432/ek") == \
        "postgresql://ek@db.lan:5432/ek"
    Store.connect(data, postgres_url).close()


def test_connect_wants_a_migrated_store(tmp_path):
    data = str(tmp_path / "gw")
    with pytest.raises(schema.SchemaError, match="Store.open"):
        Store.connect(data)
    assert not os.path.exists(data)
    os.makedirs(data)
    sqlite3.connect(db_path(data)).close()      # an empty file: version 0
    with pytest.raises(schema.SchemaError, match="migrate"):
        Store.connect(data)


def test_constructors_create_no_files_and_run_no_sql(tmp_path):
    data = tmp_path / "gw"
    data.mkdir()
    db = sqlite3.connect(":memory:", isolation_level=None)
    seen = traced(db)
    store = Store(db, str(data))
    prov = Provider(store, [str(data / "a"), str(data / "b")], 2, 4)
    objects = ObjectStore(store, prov)
    keeper = Keeper(store, prov, chain=None)
    assert (keeper.store, objects.provider) == (store, prov)
    assert seen == []
    assert list(data.iterdir()) == []


def test_without_postgresql_its_tests_fail_saying_what_to_install(monkeypatch):
    from tests.helpers import postgres
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(postgres.shutil, "which", lambda cmd: None)
    with pytest.raises(postgres.PostgresMissing, match="ensure_system.py --postgresql"):
        postgres.PostgresServer()
