"""Schema migrations on PostgreSQL are refused while instances of the older code use the database."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from fraud_service.errors import UpgradeRefused
from fraud_service.store.db import make_engine
from fraud_service.store.migrate import MIGRATING, current_revision, head_revision, upgrade
from tests.store.conftest import POSTGRES, scratch_database


@pytest.mark.postgres
def test_a_migration_waits_for_every_other_session_to_end() -> None:
    """A rolling upgrade (one instance migrated the schema under another still running the older code) broke the
    evidence chain for good: the old instance went on numbering events its own way, and both sides' writes
    collided. A migration now refuses while another session uses the database, naming it; another migration
    waiting its turn is no such session; `others_ok` migrates anyway."""
    with scratch_database() as name:
        engine, old = make_engine(f"{POSTGRES}/{name}"), create_engine(f"{POSTGRES}/{name}")
        try:
            upgrade(engine, "0009")
            with old.connect() as running:  # an instance of the older code, its connection open
                running.exec_driver_sql("SET application_name = 'gunicorn worker'")
                running.exec_driver_sql("SELECT 1")
                with pytest.raises(UpgradeRefused, match=r"1 other session\(s\) use it \(gunicorn worker from "):
                    upgrade(engine)
                assert current_revision(engine) == "0009"
            old.dispose()

            with engine.connect() as waiting:  # a second instance starting: it waits for the migration's lock
                waiting.exec_driver_sql(f"SET application_name = '{MIGRATING}'")
                waiting.exec_driver_sql("SELECT 1")
                upgrade(engine)
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
            old.dispose()

    with scratch_database() as name:  # at the older schema, with a session open all along: migrated when told to
        engine, another = make_engine(f"{POSTGRES}/{name}"), create_engine(f"{POSTGRES}/{name}")
        try:
            upgrade(engine, "0009")
            with another.connect() as other:  # a monitoring tool, say
                other.exec_driver_sql("SELECT 1")
                upgrade(engine, others_ok=True)
            assert current_revision(engine) == head_revision()
        finally:
            another.dispose()
            engine.dispose()
