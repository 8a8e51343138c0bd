"""A real PostgreSQL for the tests, started by the tests themselves: Debian's `postgresql`
(initdb and pg_ctl from /usr/lib/postgresql/*/bin), in a temporary directory, listening only
on a unix socket in that directory (its name carries a free port number), one database per
test. Nothing is skipped: without PostgreSQL the tests that need it fail and say what to
install.

initdb refuses to run as root; as root (CI runs `make test` as root) the server runs as the
`postgres` user that Debian's package creates (runuser, setpriv), in a directory handed to
it. The server is a child of the test process that dies with it (gateway.localhost.spawn),
so a killed test run leaves no PostgreSQL behind.
"""
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

from gateway.localhost import free_port, spawn

INSTALL = "python3 tools/ensure_system.py --postgresql (apt-get install postgresql)"
# no TCP: a unix socket in the temporary directory; no durability (a test's data dies with it)
SERVER_OPTIONS = {"listen_addresses": "", "fsync": "off", "synchronous_commit": "off",
                  "full_page_writes": "off", "max_connections": "300", "shared_buffers": "32MB"}


class PostgresMissing(RuntimeError):
    pass


def bindir():
    """The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl (or initdb's on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise PostgresMissing("PostgreSQL's server is not installed (no initdb in "
                          "/usr/lib/postgresql/*/bin nor on PATH): install it with " + INSTALL)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `with PostgresServer() as pg:`."""

    def __init__(self):
        self.bin = bindir()
        self.dir = None
        self.port = None
        self.user = None            # the OS user the server runs as (None: this one)
        self.version = None
        self.proc = None

    def _run(self, *args, timeout=120):
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(cmd), done.returncode,
                                                          done.stdout, done.stderr))
        return done.stdout

    def start(self):
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresMissing("running as root, and initdb refuses root: the tests run "
                                      "PostgreSQL as the user `postgres`, which Debian's package "
                                      "creates; there is none: install it with " + INSTALL)
            self.user = "postgres"
        self.dir = tempfile.mkdtemp(prefix="edgekeep-pg-")
        if self.user:
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.dir, "data")
        self.version = self._run("pg_ctl", "--version").split()[2]
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        self.port = free_port()
        options = dict(SERVER_OPTIONS, port=str(self.port), unix_socket_directories=self.dir)
        cmd = [os.path.join(self.bin, "postgres"), "-D", data]
        for key, value in options.items():
            cmd += ["-c", "%s=%s" % (key, value)]
        if self.user:  # setpriv execs in place: postgres stays this process's child
            cmd = ["setpriv", "--reuid=%s" % self.user, "--regid=%s" % self.user,
                   "--init-groups", "--pdeathsig=SIGQUIT", *cmd]
        with open(os.path.join(self.dir, "server.log"), "wb") as log:
            self.proc = spawn(cmd, sig=signal.SIGQUIT, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(60)
        return self

    def _wait_ready(self, timeout):
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("PostgreSQL exited (%s) at start:\n%s"
                                   % (self.proc.returncode, self.log()[-3000:]))
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not answer in %ds:\n%s"
                                       % (timeout, self.log()[-3000:]))
                time.sleep(0.05)

    def url(self, database="postgres"):
        return "postgresql://postgres@/%s?host=%s&port=%d" % (database, self.dir, self.port)

    def admin(self, sql):
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self):
        """A new empty database: (name, URL)."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.admin("CREATE DATABASE %s" % name)
        return name, self.url(name)

    def drop_database(self, name):
        self.admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)

    def log(self):
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.dir is None:
            return
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)     # fast shutdown
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for _ in range(3):
                shutil.rmtree(self.dir, ignore_errors=True)
                if not os.path.exists(self.dir):
                    break
                time.sleep(0.2)
            self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def raw_connection(data_dir, url):
    """A connection of the store's backend outside any Store: sqlite3 on data_dir's file in
    autocommit mode ("" url), or a PostgreSQL connection of its own (url)."""
    if url:
        from gateway.store import postgres
        return postgres.direct(url)
    import sqlite3

    from gateway.store.database import db_path
    os.makedirs(data_dir, exist_ok=True)
    return sqlite3.connect(db_path(data_dir), isolation_level=None)


def table_names(db):
    """The tables of a store connection (either backend), the schema version's included."""
    from gateway.store.dialect import POSTGRESQL, dialect_of
    if dialect_of(db) == POSTGRESQL:
        sql = ("SELECT table_name FROM information_schema.tables "
               "WHERE table_schema = current_schema()")
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {r[0] for r in db.execute(sql)}


class Traced:
    """A store connection that records the statements run through it."""

    def __init__(self, db):
        from gateway.store.dialect import dialect_of
        self.db = db
        self.dialect = dialect_of(db)
        self.seen = []

    def execute(self, sql, parameters=(), /):
        self.seen.append(sql)
        return self.db.execute(sql, parameters)

    def executemany(self, sql, rows, /):
        self.seen.append(sql)
        return self.db.executemany(sql, rows)

    @property
    def in_transaction(self):
        return self.db.in_transaction

    def close(self):
        self.db.close()
