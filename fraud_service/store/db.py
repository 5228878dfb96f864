"""Engines and sessions for the evidence database: SQLite (WAL, one writer at a time) or PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.errors import EvidenceFileGone, FraudServiceError
from fraud_service.store.deadline import deadline_connection


def set_wal(db: sqlite3.Connection, path: Path) -> None:
    """Put the SQLite database at PATH (open as DB) in WAL mode, one process at a time on this host.

    Two processes switching a new file to WAL at once can get "database is locked" without SQLite waiting
    (the switch needs the file to itself; seen when two workers boot together), so the switch is taken under a
    lock file beside the database. Once the file is in WAL mode the switch is a no-op that other processes'
    open transactions do not block."""
    with open(path.with_name(path.name + ".wal-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_only_copy(url: str) -> str | None:
    """For a SQLite file in a folder nothing may be written to (a read-only copy or mount, an auditor's): the URI
    (for `sqlite3.connect(..., uri=True)`) that opens it read-only without the files SQLite otherwise makes beside
    it (`-shm`, our `.wal-lock`), or None when the folder can be written (or URL is not a SQLite file). A copy with
    its write-ahead log beside it is read with that log (it holds the latest commits); one without is read as
    immutable (nothing can change it)."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).resolve()
    if not path.parent.is_dir() or os.access(path.parent, os.W_OK):
        return None
    wal, index = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
    logged = wal.exists() and wal.stat().st_size > 0
    if logged and not index.exists():  # SQLite reads a log only through its index, which it cannot make here
        raise FraudServiceError(f"{path} has its write-ahead log ({wal.name}) beside it but not the log's index "
                                f"({index.name}), and nothing may be written in {path.parent}: copy {index.name} "
                                "too, copy the three files to a folder that can be written, or make the copy with "
                                "SQLite's backup (docs/operations.md)")
    mode = "mode=ro" if logged else "mode=ro&immutable=1"
    return f"file:{quote(str(path))}?{mode}"  # a ? # or % in the path is the path's, not the URI's


class SameFile:
    """The SQLite file at PATH stays the one this engine first opened.

    Removed while the service ran, SQLite's open connections went on writing into the unlinked file and answering
    201, and a new connection made an empty database at the path: the answers were in a file nobody would read
    again. The file's identity (device and inode) is taken when the first connection opens it; every transaction
    checks it after its BEGIN (`check`: one stat), and later connections open the file without creating it. Put
    back (the same file moved back), it is used again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.uri = f"file:{quote(str(Path(path).resolve()))}?mode=rw"  # a ? # or % in the path is the path's
        self.identity: tuple[int, int] | None = None

    def connect(self, cargs: Any, cparams: dict[str, Any]) -> sqlite3.Connection:
        if self.identity is None:
            connection = sqlite3.connect(*cargs, **cparams)  # the first may make the file (`db upgrade`)
            stat = os.stat(self.path)
            self.identity = (stat.st_dev, stat.st_ino)
            return connection
        self.check()
        return sqlite3.connect(self.uri, uri=True, **cparams)

    def check(self) -> None:
        """EvidenceFileGone unless the file at the path is the one first opened."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self.identity:
            raise EvidenceFileGone(f"the evidence database's file {'was removed' if stat is None else 'was replaced'} "
                                   "while the service ran: nothing more is stored until the file is put back or "
                                   "the service is restarted on the file it should use (docs/operations.md)")


_FILES: weakref.WeakKeyDictionary[Engine, SameFile] = weakref.WeakKeyDictionary()


def check_file(engine: Engine) -> None:
    """EvidenceFileGone when ENGINE is on a SQLite file that was removed or replaced since it opened it."""
    file = _FILES.get(engine)
    if file is not None:
        file.check()


def make_engine(url: str, timeout_ms: int | None = None, durable: bool = True, read_only: bool = False,
                **kwargs: Any) -> Engine:
    """An engine for URL. SQLite gets WAL, full fsync on commit, and BEGIN IMMEDIATE (writers queue, never deadlock).

    With TIMEOUT_MS (the service's engine: `SERVICE_TIMEOUT_MS`), no statement waits on the database longer than
    about that: SQLite's busy timeout; on PostgreSQL the statement and lock timeouts, and a client-side deadline
    on every round trip (`store.deadline`), which is what ends a wait on a server that hangs instead of
    answering. Requests wait less than this (`Settings.db_wait_ms`); this frees the threads that still wait.
    Without it (the CLI's long jobs), SQLite waits 30 s for a lock and PostgreSQL statements have no limit.
    DURABLE False (SQLite only) commits without waiting for the disk (`synchronous=NORMAL`: a power cut may undo
    the last commits, a crash may not): for bookkeeping that is safe to redo, such as webhook delivery states.
    READ_ONLY (a command that only reads): a SQLite file in a folder that cannot be written is opened as
    `read_only_copy` says, instead of failing to make its lock and index files there."""
    copy = read_only_copy(url) if read_only else None
    if copy is not None:  # connected by URI as given: SQLAlchemy's URL would decode the path's escapes
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(copy, uri=True, check_same_thread=False),
                             **kwargs)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        busy_s = 30.0 if timeout_ms is None else timeout_ms / 1000
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_s}, **kwargs)
        file = SameFile(database) if database and database != ":memory:" and not database.startswith("file:") \
            else None
        if file is not None:
            _FILES[engine] = file

            @event.listens_for(engine, "do_connect")
            def _open(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
                return file.connect(cargs, cparams)

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below starts transactions
            if database and database != ":memory:":
                set_wal(dbapi_connection, Path(database))
            cursor = dbapi_connection.cursor()
            # a committed decision survives a power cut
            cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # writers take the write lock at once (they queue, never deadlock); readers begin deferred, and in
            # WAL mode a reader never waits for a writer nor makes one wait
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
            if file is not None:
                file.check()  # after BEGIN: a file swapped in before it is seen, and nothing was written yet

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
    if url.startswith("postgresql"):
        # a server that does not answer is found out in seconds (not the OS's minutes), and no statement waits on
        # a lock for longer than LOCK_TIMEOUT_MS
        args = kwargs.setdefault("connect_args", {})
        args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        if timeout_ms is None:
            args.setdefault("options", f"-c lock_timeout={LOCK_TIMEOUT_MS}")
            return _named(create_engine(url, **kwargs))
        # the server ends a slow statement (the connection stays usable) a little before the client gives up
        # on a silent server (the connection is closed)
        args.setdefault("options", f"-c lock_timeout={min(LOCK_TIMEOUT_MS, timeout_ms)} "
                                   f"-c statement_timeout={timeout_ms}")
        engine = _named(create_engine(url, **kwargs))
        connection_class = deadline_connection((timeout_ms + DEADLINE_GRACE_MS) / 1000)

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return connection_class.connect(*cargs, **cparams)

        return engine
    return create_engine(url, **kwargs)


def session_name() -> str:
    """The application name this process's PostgreSQL sessions give (`pg_stat_activity`): the migration tells its
    own process's sessions from other instances' by it."""
    return f"fraud-service pid {os.getpid()}"


def _named(engine: Engine) -> Engine:
    """ENGINE, its PostgreSQL sessions named by `session_name` as each connects (a worker forked later, its own), and
    its pooled connections replaced once one is refused a write as read-only.

    A database made read-only for a while (`default_transaction_read_only`: a fail-over's standby, an operator)
    gives that default to every session opened meanwhile, for as long as the session lasts: once the database was
    writable again, the pooled connections opened during the spell kept refusing the analysts' changes and the
    assigner's until a reload (a helper's fault probe). Such a refusal now counts as a lost connection: this one
    is closed and the pool's older ones are replaced at their next checkout, so the next change runs on a session
    that takes the database's current default. (The evidence writer's lanes hold raw connections of their own and
    replace them after any failed batch.)"""
    @event.listens_for(engine, "do_connect")
    def _name(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        cparams.setdefault("application_name", session_name())

    @event.listens_for(engine, "handle_error")
    def _read_only(context: Any) -> None:
        if str(getattr(context.original_exception, "sqlstate", "") or "") == READ_ONLY_TRANSACTION:
            context.is_disconnect = True

    return engine


READ_ONLY_TRANSACTION = "25006"
"""PostgreSQL's SQLSTATE for a write in a read-only transaction."""


CONNECT_TIMEOUT_S = 2
POOL_TIMEOUT_S = 5
LOCK_TIMEOUT_MS = 10_000
SERVICE_TIMEOUT_MS = 5_000
DEADLINE_GRACE_MS = 250
"""How much longer than the server's statement timeout the client waits before it closes the connection."""


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "fraud_read_only"
"""Execution option of a connection that only reads (SQLite begins its transactions deferred)."""


def writes_refused(error: BaseException) -> bool:
    """Whether ERROR is a database that answers refusing to write (a full disk, a read-only database or replica),
    which `SELECT 1` does not show, rather than one that cannot be reached (which it does)."""
    state = str(getattr(error, "sqlstate", "") or "")
    # resources (disk full, ...); read-only; not permitted
    if state.startswith("53") or state in (READ_ONLY_TRANSACTION, "42501"):
        return True
    if not isinstance(error, sqlite3.Error):  # PostgreSQL's text quotes the failing row: its codes alone count
        return False
    text = str(error).lower()
    return "disk is full" in text or "readonly database" in text or "read-only file system" in text
