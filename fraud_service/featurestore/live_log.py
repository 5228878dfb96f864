"""Where the live-fact log is kept: a SQLite file beside the features (one host), or PostgreSQL (several hosts).

The log (`featurestore.live`) is small and hot: every assessment reads its entities' facts, and a writer thread per
worker appends them. On one host it is `$FRAUD_HOME/features/live.db`, SQLite in WAL mode, which every instance
on that host shares. Instances on several hosts cannot share a SQLite file (its locking over a network filesystem
is unreliable), so with `FRAUD_LIVE_LOG=postgresql://...` the same two tables live in a PostgreSQL database that
every host reaches (the evidence database will do).

Both kinds are used the same way: `execute` and `executemany` take the log's SQL as written for SQLite (`?`
marks, `INSERT OR IGNORE`), which `PostgresLog` rewrites by a few fixed rules; `writing` is one all-or-nothing
write, and `hold` locks what a write reads before it writes (the tokens it counts a customer new on, the new orders
it counts). SQLite's write lock is the whole file (BEGIN IMMEDIATE), so `hold` costs it nothing; PostgreSQL's
writers hold advisory locks on those only, so batches that share none never wait for each other. A request reads
with one statement (`OnlineFeatures.live`), which sees one snapshot of either kind: one round trip.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fraud_service.config import POSTGRES_URLS
from fraud_service.errors import Unavailable
from fraud_service.store import locks
from fraud_service.store.db import READ_ONLY_TRANSACTION, set_wal

LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_facts (
    return_id TEXT NOT NULL,
    fact TEXT NOT NULL,            -- 'return', 'order' or 'inspection:<microseconds of inspected_at>'
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    us INTEGER NOT NULL,           -- when the fact became known (microseconds since the epoch)
    contributions TEXT NOT NULL,   -- JSON {column: value}
    PRIMARY KEY (return_id, fact, entity)
);
CREATE INDEX IF NOT EXISTS live_facts_key ON live_facts (entity, key);
CREATE TABLE IF NOT EXISTS live_orders (
    order_id TEXT PRIMARY KEY,     -- an order the warehouse did not hold, counted once by the live facts
    return_id TEXT NOT NULL        -- of the return whose 'order' facts count it
);
"""
"""The log of live facts (written by `live.LiveFacts`, read by `online.OnlineFeatures`)."""

LIVE_LOG_MENDED = ("move features/live.db aside and restart the service (the returns it counted count again from "
                   "the next `fraud-service features build`)")
LIVE_DB_MENDED = "retry; if it persists, check that FRAUD_LIVE_LOG's PostgreSQL database answers"
READ_WAIT_S = 1.0
"""How long a request's read of a PostgreSQL log may take (a read takes well under a millisecond near it)."""
RECONNECT_S = 1.0
"""How long after a failed connect to a PostgreSQL log its URL is not tried again in this process (requests meanwhile
answer 503 at once)."""
FAILED_CONNECTS: dict[str, float] = {}
"""Per URL, when (monotonic) the last connect to it failed in this process (cleared by one that succeeds)."""
WRITE_WAIT_S = 10.0
"""How long one statement of the live-fact writer may wait on a PostgreSQL log (its batches are tried again)."""


def is_database(target: str | Path) -> bool:
    """Whether TARGET names a PostgreSQL database rather than a file."""
    return str(target).startswith(POSTGRES_URLS)


def psycopg_url(url: str) -> str:
    """URL as psycopg takes it (SQLAlchemy's `postgresql+psycopg://` form and `postgres://` accepted)."""
    return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql://", url)


def open_live_log(target: str | Path, wait_s: float = READ_WAIT_S) -> LiveLog:
    """The live-fact log at TARGET: a SQLite file (created when absent), or a PostgreSQL URL (connected at first
    use, so a database that is down costs 503s until it answers, not the worker)."""
    return PostgresLog(str(target), wait_s) if is_database(target) else SqliteLog(Path(target))


class LiveLog:
    """One connection to the log. Callers serialise their use of it (each holds its own lock)."""

    name = "the live-fact log"
    mended = LIVE_LOG_MENDED
    batch: int | None = None
    """The most returns one write transaction records (None: any number)."""
    pooled = False
    """Whether a reader reads over a pool of these (a log across a network) rather than sharing one."""

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        raise NotImplementedError

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction, all or nothing."""
        raise NotImplementedError

    def hold(self, subjects: Iterable[tuple[str, str]]) -> None:
        """In the write transaction, lock these (entity, key) pairs until it ends."""

    def unreadable(self) -> contextlib.AbstractContextManager[None]:
        """The log's failures to read as Unavailable (a 503 saying what to do); others raised as they are."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteLog(LiveLog):
    """The log as a SQLite file in WAL mode: its readers never wait for its writer."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        set_wal(self.db, path)
        self.db.executescript(LIVE_SCHEMA)

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> Any:
        return self.db.execute(sql, tuple(params) if params is not None else ())

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.db.executemany(sql, (tuple(row) for row in rows))

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite ends it itself on some errors (a full disk): its error is the cause
                self.db.execute("ROLLBACK")
            raise

    def unreadable(self) -> contextlib.AbstractContextManager[None]:
        from fraud_service.featurestore.online import unreadable

        return unreadable("the live-fact log (features/live.db)", LIVE_LOG_MENDED)

    def close(self) -> None:
        self.db.close()


PG_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS live_facts (return_id TEXT NOT NULL, fact TEXT NOT NULL, entity TEXT NOT NULL,
       key TEXT NOT NULL, customer_id TEXT NOT NULL, us BIGINT NOT NULL, contributions TEXT NOT NULL,
       PRIMARY KEY (return_id, fact, entity))""",
    "CREATE INDEX IF NOT EXISTS live_facts_key ON live_facts (entity, key)",
    "CREATE TABLE IF NOT EXISTS live_orders (order_id TEXT PRIMARY KEY, return_id TEXT NOT NULL)",
]
"""`LIVE_SCHEMA` in PostgreSQL's types (microseconds need 64 bits)."""

SCHEMA_LOCK = locks.key("live-log", "schema")
"""Held while a connection creates the tables: workers starting together would otherwise race to create them."""

_REWRITES = [
    (re.compile(r"^(\s*)INSERT OR IGNORE INTO (.*)$", re.S), r"\1INSERT INTO \2 ON CONFLICT DO NOTHING"),
    (re.compile(r"json_extract\(contributions, '\$\.(\w+)'\) = 1"), r"(contributions::jsonb ->> '\1') = '1'"),
]
"""The log's SQLite dialect in PostgreSQL's words: every statement the log runs is one of these forms."""


def postgres_sql(sql: str, with_params: bool) -> str:
    """SQL (written for SQLite) for PostgreSQL: `?` marks become `%s` (and a literal `%` is doubled) when parameters
    are passed, then `_REWRITES`."""
    if with_params:
        sql = sql.replace("%", "%%").replace("?", "%s")
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


class PostgresLog(LiveLog):
    """The log as two tables in a PostgreSQL database, reached over one autocommit connection, each wait on the server
    bounded by WAIT_S (the server ends a statement or a lock wait a little sooner, so nothing waits on there after
    the client gave up). A connection that failed is opened again at its next use outside a transaction (inside one,
    its statements fail with it); after a failed connect to its URL (by any log of this process), not for
    `RECONNECT_S`, so a server that does not answer costs the requests meanwhile a 503 at once, not a connect
    timeout each. A read whose connection was lost at once
    (a restart, a fail-over, a connection dropped while idle) is tried again on a new one."""

    name = "the live-fact log (PostgreSQL)"
    mended = LIVE_DB_MENDED
    pooled = True
    batch = 100
    """At most this many returns per write transaction: `hold` takes a lock per token, and PostgreSQL's lock table is
    shared by the whole server (about 6,400 locks by default)."""

    def __init__(self, url: str, wait_s: float) -> None:
        self.url = psycopg_url(url)
        self.wait_s = wait_s
        self._conn: Any = None
        self._in_transaction = False
        self._sql: dict[tuple[str, bool], str] = {}

    def _connection(self) -> Any:
        if self._in_transaction or (self._conn is not None and not self._conn.closed and not self._conn.broken):
            return self._conn
        import psycopg

        from fraud_service.store.db import session_name
        from fraud_service.store.deadline import deadline_connection

        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        failed_at = FAILED_CONNECTS.get(self.url)
        if failed_at is not None and time.monotonic() < failed_at + RECONNECT_S:
            raise psycopg.OperationalError(f"the last connection attempt failed less than {RECONNECT_S:g} s ago")
        server_ms = max(int(self.wait_s * 1000) - 100, 100)
        try:
            conn = deadline_connection(self.wait_s).connect(
                self.url, autocommit=True, connect_timeout=2, application_name=session_name(),
                # the server finds a host cut off within seconds and ends its session, and with it its locks
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                options=f"-c lock_timeout={server_ms} -c statement_timeout={server_ms} "
                        f"-c idle_in_transaction_session_timeout={max(server_ms, 15_000)} "
                        "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3")
        except (UnicodeError, ValueError) as exc:  # a host name that cannot be looked up (too long, not IDNA)
            FAILED_CONNECTS[self.url] = time.monotonic()
            raise psycopg.OperationalError(f"cannot connect to FRAUD_LIVE_LOG's host: {exc}") from exc
        except BaseException:
            FAILED_CONNECTS[self.url] = time.monotonic()  # unreachable: others do not try again for a moment
            raise
        try:
            if conn.execute("SELECT to_regclass('live_facts') IS NULL OR to_regclass('live_orders') IS NULL OR "
                            "to_regclass('live_facts_key') IS NULL").fetchone() != (False,):
                self._create(conn)
        except BaseException:  # reached, but its tables cannot be made (a role without CREATE): say that, each time
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn
        FAILED_CONNECTS.pop(self.url, None)
        return conn

    @staticmethod
    def _create(conn: Any) -> None:
        """The log's tables, made once (workers starting together take turns; none made when all are there: their
        DDL would wait behind the writers, and needs privileges a running service need not have)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in PG_SCHEMA:
                conn.execute(statement)

    def _translate(self, sql: str, with_params: bool) -> str:
        key = (sql, with_params)
        found = self._sql.get(key)
        if found is None:
            found = self._sql[key] = postgres_sql(sql, with_params)
        return found

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> Any:
        import psycopg

        args = None if params is None else tuple(params)
        query = self._translate(sql, args is not None)
        conn, started = self._connection(), time.monotonic()
        try:
            return conn.execute(query, args)
        except psycopg.OperationalError:
            lost_at_once = (conn.closed or conn.broken) and time.monotonic() - started < self.wait_s / 2
            if self._in_transaction or not lost_at_once or sql.lstrip()[:6].upper() != "SELECT":
                raise
            return self._connection().execute(query, args)  # a read on a connection already gone: once more

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        """SQL (an `INSERT ... VALUES (?, ...)`) for every row, as one multi-row statement per 1,000 rows. Not
        psycopg's `executemany`: its pipeline sends every statement before one Sync, and a session cut off half-way
        through one waits for the rest with its locks held, beyond the server's statement and idle timeouts (a
        helper's probe: another host's writer waited on them as long as the cut lasted)."""
        rows = [tuple(row) for row in rows]
        head, marks = sql.rsplit("VALUES", 1)
        for part in (rows[start:start + 1000] for start in range(0, len(rows), 1000)):
            statement = f"{head}VALUES {', '.join([marks.strip()] * len(part))}"
            # not kept in `_sql`: a statement per batch size would grow it without bound
            self._connection().execute(postgres_sql(statement, True), [v for row in part for v in row])

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        import psycopg

        conn = self._connection()
        self._in_transaction = True  # its statements go on this connection, or fail with it
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            # a session opened while the database was read-only keeps that default: the next try opens another
            if str(getattr(exc, "sqlstate", "") or "") == READ_ONLY_TRANSACTION:
                self.close()
            raise
        finally:
            self._in_transaction = False

    def hold(self, subjects: Iterable[tuple[str, str]]) -> None:
        keys = sorted({locks.key(f"live:{entity}", value) for entity, value in subjects})
        if keys:  # in ascending order (two writers never wait for each other in a circle), in one statement
            self._connection().execute("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM "
                                       "unnest(%s::bigint[]) AS k ORDER BY k) ordered", (keys,))

    @contextlib.contextmanager
    def unreadable(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            state = str(getattr(exc, "sqlstate", "") or "")
            unreached = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or state[:2] in ("08", "57")
            if not unreached and state[:2] not in UNAVAILABLE_CLASSES and state not in UNAVAILABLE_STATES:
                raise  # a statement of ours the database refuses: a bug, a logged 500
            if state == UNDEFINED_TABLE:  # dropped under the service: the next connection makes them again
                self.close()
            trouble = "cannot be reached" if unreached else f"refuses this service (SQLSTATE {state})"
            raise Unavailable(f"{self.name} {trouble}; no decision was made: {self.mended}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __del__(self) -> None:  # a reader dropped without `close` (a CLI's, a test's) takes its connection with it
        with contextlib.suppress(Exception):
            self.close()


UNAVAILABLE_CLASSES = ("08", "25", "53", "57")
"""SQLSTATE classes of a database that is down, read-only, out of resources or shutting down: a 503, not a 500."""
UNDEFINED_TABLE = "42P01"
UNAVAILABLE_STATES = ("42501", UNDEFINED_TABLE)
"""A privilege the service's role lacks; the log's tables dropped: the operator's to mend, a 503 meanwhile."""
