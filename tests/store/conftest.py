"""Evidence databases for tests: a SQLite file, and a fresh database on the real PostgreSQL server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from fraud_service.store.db import make_engine
from fraud_service.store.migrate import upgrade

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


def sqlite_engine(tmp_path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'evidence.db'}")
    upgrade(engine)
    return engine


def admin_sql(statement: str, **params: object) -> object:
    """Run STATEMENT as the real PostgreSQL server's administrator, outside a transaction (CREATE, DROP or ALTER
    DATABASE); its first value, if it returns rows."""
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            result = connection.execute(text(statement), params)
            return result.scalar() if result.returns_rows else None
    finally:
        admin.dispose()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """The name of a new, empty database on the real PostgreSQL server, dropped (its sessions ended) afterwards."""
    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_engine() -> Iterator[Engine]:
    with scratch_database() as name:
        engine = make_engine(f"{POSTGRES}/{name}")
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()


def either_engine(kind: str, tmp_path) -> Iterator[Engine]:
    """A migrated evidence database of KIND (`sqlite` or `postgres`), disposed (and dropped) afterwards."""
    if kind == "sqlite":
        engine = sqlite_engine(tmp_path)
        yield engine
        engine.dispose()
    else:
        yield from postgres_engine()


BOTH = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The parameters of a fixture that gives each test a SQLite and a PostgreSQL database (`either_engine`)."""


@pytest.fixture(params=BOTH)
def engine(request, tmp_path) -> Iterator[Engine]:
    """A migrated evidence database, on SQLite and on the real PostgreSQL."""
    yield from either_engine(request.param, tmp_path)
