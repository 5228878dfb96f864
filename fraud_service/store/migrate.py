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


MIGRATING = "fraud-service upgrade"
"""The application name a migrating session gives PostgreSQL: another instance waiting to migrate is no user."""


def upgrade(engine: Engine, revision: str = "head", others_ok: bool = False) -> str | None:
    """Bring the database schema up to REVISION (default: the newest). On PostgreSQL one process at a time: the
    second waits, then finds the schema current (two at once both created the tables, and one failed on a
    duplicate key in PostgreSQL's catalogue). A migration is refused (UpgradeRefused) while other sessions use the
    database, unless OTHERS_OK: instances of the code before it go on writing its old way under the new schema (a
    rolling upgrade broke the evidence chain, and each side's writes collided with the other's). Returns the
    revision the database was at (None: empty); on PostgreSQL read under the lock, as the migration's first session
    (a session of this process's own left idle before it would count as another's)."""
    from alembic import command

    if engine.dialect.name != "postgresql":
        before = current_revision(engine)
        command.upgrade(_config(engine), revision)
        return before
    with engine.connect() as holder:
        holder.exec_driver_sql(f"SET application_name = '{MIGRATING}'")
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            made = holder.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
            before = holder.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() if made else None
            if not others_ok and before != (head_revision() if revision == "head" else revision):
                _refuse_while_used(holder)
            command.upgrade(_config(engine), revision)
        finally:
            holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            holder.exec_driver_sql("RESET application_name")  # back in the pool under this process's name
    return None if before is None else str(before)


def _refuse_while_used(holder: Any) -> None:
    """UpgradeRefused naming the other sessions of this database (but other migrations waiting their turn)."""
    from fraud_service.errors import UpgradeRefused
    from fraud_service.store.db import session_name

    rows = holder.exec_driver_sql(
        "SELECT coalesce(nullif(application_name, ''), 'unnamed'), coalesce(host(client_addr), 'local') "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND application_name NOT IN (%(migrating)s, %(own)s)",
        {"migrating": MIGRATING, "own": session_name()}
    ).fetchall()
    if rows:
        seen = sorted({f"{name} from {address}" for name, address in rows})
        raise UpgradeRefused(
            f"the evidence database's schema is older than this code, and {len(rows)} other session(s) use it "
            f"({', '.join(seen[:5])}): instances of the older code would go on writing the old way under the new "
            "schema. Stop every instance, then run `fraud-service db upgrade` (or start one instance) and start "
            "the rest; `fraud-service db upgrade --others-connected` migrates anyway (docs/operations.md)")


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
