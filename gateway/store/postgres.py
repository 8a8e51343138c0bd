"""The PostgreSQL backend: a store connection over psycopg 3, from a pool per database URL.

`Connection` has what the store's code uses of a sqlite3.Connection (execute, executemany,
close, in_transaction) and nothing else, so the Store and its rows classes run unchanged on
it: every query goes through dialect.query (`?` -> `%s`), `BEGIN IMMEDIATE` becomes BEGIN and
the advisory lock dialect.WRITE_LOCK (one writer at a time, as SQLite's write lock), bytea
comes back as bytes and numeric (what sum() of a BIGINT gives) as int, as from SQLite.

The connections are in autocommit mode, as the Store's SQLite connections are
(isolation_level=None): a statement outside `with store.transaction():` commits by itself.
Each Store holds one connection from its URL's pool (psycopg_pool) until it is closed; a
connection found broken (the server restarted) is swapped for a new one before the next
statement outside a transaction. Pools live until close_pools() (tests) or the process ends.
"""
import atexit
import decimal
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Buffer, Loader
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool

from gateway.store import dialect

POOL_MIN = 1
POOL_MAX = 32          # connections per database URL and process (one per open Store)
POOL_TIMEOUT = 30.0    # seconds to wait for a free connection, then PoolTimeout
CONNECT_TIMEOUT = 10   # seconds, for a server that does not answer

# What a PostgreSQL error of the server or the link is (not of the values written): the
# ingest fails the batch (redelivered) rather than refusing the message.
ENVIRONMENTAL: tuple[type[BaseException], ...] = (psycopg.OperationalError,
                                                  psycopg.InterfaceError)


class BytesLoader(Loader):
    """bytea in binary format as bytes (psycopg's own gives a memoryview)."""
    format = pq.Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


class IntegralNumericLoader(NumericLoader):
    """numeric as int when integral (sum() and avg() of BIGINT are numeric), else float."""

    def load(self, data: Buffer) -> int | float:  # type: ignore[override]
        value = super().load(data)
        if value == value.to_integral_value():
            return int(value)
        return float(value)


class IntegralNumericBinaryLoader(Loader):
    format = pq.Format.BINARY

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        from psycopg.types.numeric import NumericBinaryLoader
        self._inner = NumericBinaryLoader(oid, context)

    def load(self, data: Buffer) -> int | float:
        value: decimal.Decimal = self._inner.load(data)
        if value == value.to_integral_value():
            return int(value)
        return float(value)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Every new connection: the loaders that give what sqlite3 gives."""
    conn.adapters.register_loader("bytea", BytesLoader)
    conn.adapters.register_loader("numeric", IntegralNumericLoader)
    conn.adapters.register_loader("numeric", IntegralNumericBinaryLoader)


def redact(url: str) -> str:
    """The URL without its password (for messages and files)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=user + ":***@" + netloc[1]))


_pools: dict[str, ConnectionPool[psycopg.Connection[Any]]] = {}
_pools_lock = threading.Lock()


def pool(url: str) -> ConnectionPool[psycopg.Connection[Any]]:
    with _pools_lock:
        p = _pools.get(url)
        if p is None or p.closed:
            p = _pools[url] = ConnectionPool(
                url, min_size=POOL_MIN, max_size=POOL_MAX, timeout=POOL_TIMEOUT,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                configure=configure, check=ConnectionPool.check_connection,
                name="edgekeep " + redact(url), open=True)
        return p


def close_pools(url: str | None = None) -> None:
    """Close the pool of url (every pool with None): its connections, idle or not, end."""
    with _pools_lock:
        urls = [url] if url is not None else list(_pools)
        closing = [_pools.pop(u) for u in urls if u in _pools]
    for p in closing:
        p.close()


atexit.register(close_pools)


def direct(url: str) -> "Connection":
    """A connection of its own, outside any pool (Store.open's migration), closed with
    close()."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    configure(conn)
    return Connection(conn, None)


def pooled(url: str) -> "Connection":
    """A connection from url's pool, given back by close()."""
    p = pool(url)
    return Connection(p.getconn(), p)


class Connection:
    """A pooled psycopg connection that speaks like a sqlite3.Connection to the store."""
    dialect = dialect.POSTGRESQL

    def __init__(self, conn: psycopg.Connection[Any],
                 pool: ConnectionPool[psycopg.Connection[Any]] | None) -> None:
        self.conn = conn
        self.pool = pool
        self.closed = False
        self._lock = threading.RLock()

    def _usable(self) -> psycopg.Connection[Any]:
        """The connection; a broken one is replaced first when no transaction is open on it
        (a transaction broken midway fails as it is: its caller rolls back and retries)."""
        if self.closed:
            raise psycopg.InterfaceError("the store's connection is closed")
        conn = self.conn
        if conn.broken or conn.closed:
            if self.pool is None:
                raise psycopg.OperationalError("the connection to PostgreSQL is closed")
            self.pool.putconn(conn)
            self.conn = conn = self.pool.getconn()
        return conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        with self._lock:
            conn = self._usable()
            if sql == dialect.BEGIN_IMMEDIATE:
                begin, lock = dialect.POSTGRES_BEGIN
                conn.execute(begin)
                return conn.execute(lock)
            return conn.execute(dialect.query(sql), tuple(parameters))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        with self._lock:
            cur = self._usable().cursor()
            cur.executemany(dialect.query(sql), [tuple(r) for r in rows])
            return cur

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        """Give the connection back to its pool (rolled back if a transaction is open)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.pool is not None and not self.pool.closed:
                self.pool.putconn(self.conn)
            else:
                self.conn.close()
