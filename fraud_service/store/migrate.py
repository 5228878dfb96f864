"""Schema migrations (Alembic), run from code: `fraud-service db upgrade`, and by the app and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


MIGRATION_LOCK = 7_310_542_201
"""The PostgreSQL advisory lock one migration holds at a time (instances starting together, two `db upgrade`)."""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema up to REVISION (default: the newest). On PostgreSQL one process at a time: the
    second waits, then finds the schema current (two at once both created the tables, and one failed on a
    duplicate key in PostgreSQL's catalogue)."""
    from alembic import command

    if engine.dialect.name != "postgresql":
        command.upgrade(_config(engine), revision)
        return
    with engine.connect() as holder:
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            command.upgrade(_config(engine), revision)
        finally:
            holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    if "alembic_version" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head
