"""Engines and sessions for the evidence database: SQLite (WAL, one writer at a time) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for URL. SQLite gets WAL, full fsync on commit, and BEGIN IMMEDIATE (writers queue, never deadlock)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below starts transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # a committed decision survives a power cut
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # writers take the write lock at once (they queue, never deadlock); readers begin deferred, and in
            # WAL mode a reader never waits for a writer nor makes one wait
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
    if url.startswith("postgresql"):
        # a server that does not answer is found out in seconds (not the OS's minutes), and no statement waits on
        # a lock for longer than LOCK_TIMEOUT_MS
        args = kwargs.setdefault("connect_args", {})
        args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        args.setdefault("options", f"-c lock_timeout={LOCK_TIMEOUT_MS}")
    return create_engine(url, **kwargs)


CONNECT_TIMEOUT_S = 2
POOL_TIMEOUT_S = 5
LOCK_TIMEOUT_MS = 10_000


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "fraud_read_only"
"""Execution option of a connection that only reads (SQLite begins its transactions deferred)."""

