"""The unit of work: what is not committed is rolled back, and a database that is gone is `DatabaseDown`."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fraud_service.errors import DatabaseDown
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.schema import EvidenceEvent, ListEntry
from fraud_service.store.uow import UnitOfWork
from tests.factories import T0, memory_db


def test_rolls_back_uncommitted_work_by_default() -> None:
    with memory_db() as db:
        with db.uow() as uow:
            uow.session.add(ListEntry(entity="device", value="d-1", list="block", reason="r", added_by="t",
                                      added_at=T0))
            uow.record(kind="list_added", subject="device:d-1", actor="t", payload={}, at=T0)
        with db.sessions() as session:
            assert session.execute(select(ListEntry)).first() is None
            assert session.execute(select(EvidenceEvent)).first() is None


def test_rolls_back_everything_when_the_block_raises_after_a_flush() -> None:
    with memory_db() as db:
        with pytest.raises(ZeroDivisionError), db.uow() as uow:
            uow.record(kind="note", subject="x", actor="t", payload={"n": 1}, at=T0)
            _ = 1 / 0
        with db.sessions() as session:
            assert session.execute(select(EvidenceEvent)).first() is None


def test_commits_the_change_and_its_event_together() -> None:
    with memory_db() as db:
        with db.uow() as uow:
            uow.record(kind="note", subject="x", actor="t", payload={"n": 1}, at=T0)
            uow.commit()
            assert uow.committed
        with db.sessions() as session:
            assert [e.kind for e in session.execute(select(EvidenceEvent)).scalars()] == ["note"]


def test_an_unreachable_database_is_database_down(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    (tmp_path / "missing-dir").rmdir()  # make_engine created it; a database in a missing directory cannot open
    try:
        with pytest.raises(DatabaseDown, match="cannot be reached"), UnitOfWork(session_factory(engine)) as uow:
            uow.session.execute(select(EvidenceEvent)).first()
    finally:
        engine.dispose()


def test_using_the_session_outside_the_block_is_an_error() -> None:
    with memory_db() as db:
        uow = db.uow()
        with pytest.raises(RuntimeError, match="outside its `with` block"):
            _ = uow.session


def test_a_reader_neither_waits_for_the_writer_nor_blocks_it(tmp_path) -> None:
    """SQLite: a read-only unit of work begins deferred; a write lock held elsewhere does not stop it, and the
    read it keeps open does not stop a writer (WAL)."""
    import threading

    from fraud_service.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'e.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    try:
        with UnitOfWork(sessions) as writer:  # holds the write lock (BEGIN IMMEDIATE) until the block ends
            writer.record(kind="note", subject="x", actor="t", payload={}, at=T0)
            with UnitOfWork(sessions).read() as reader:  # answers at once: no wait on the write lock
                assert reader.session.execute(select(EvidenceEvent)).first() is None
            writer.commit()
        with UnitOfWork(sessions).read() as reader:
            assert reader.session.execute(select(EvidenceEvent)).first() is not None
            done = []

            def write() -> None:
                with UnitOfWork(sessions) as other:
                    other.record(kind="note", subject="y", actor="t", payload={}, at=T0)
                    other.commit()
                    done.append(True)

            thread = threading.Thread(target=write)
            thread.start()
            thread.join(timeout=5)
            assert done == [True]  # the open read did not block the writer
    finally:
        engine.dispose()


def test_a_read_only_unit_of_work_refuses_to_write() -> None:
    with memory_db() as db:
        with pytest.raises(RuntimeError, match="cannot record evidence"), db.uow().read() as uow:
            uow.record(kind="note", subject="x", actor="t", payload={}, at=T0)


@pytest.mark.postgres
def test_migrations_started_together_on_postgresql_run_one_after_another() -> None:
    """Instances starting at once (or two `db upgrade`) both created the schema, and one failed on PostgreSQL's
    catalogue ("duplicate key value violates unique constraint pg_type_typname_nsp_index")."""
    import threading
    import uuid

    from fraud_service.store.db import make_engine
    from fraud_service.store.migrate import current_revision, head_revision, upgrade
    from tests.store.conftest import POSTGRES, admin_sql

    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    engines = [make_engine(f"{POSTGRES}/{name}") for _ in range(3)]
    start, failures = threading.Barrier(3), []

    def migrate(engine) -> None:
        start.wait()
        try:
            upgrade(engine)
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            failures.append(exc)

    try:
        threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == [] and current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            engine.dispose()
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_changes_succeed_again_once_a_database_that_was_read_only_for_a_while_is_writable() -> None:
    """A pooled connection opened while the database was read-only (a fail-over's standby) kept refusing writes after
    it was writable again, until a reload (a helper's fault probe): each change answered 503. Now the refusal
    replaces the pool's connections, and the next change goes through."""
    from fraud_service.store.db import SERVICE_TIMEOUT_MS
    from fraud_service.store.migrate import upgrade
    from tests.store.conftest import POSTGRES, admin_sql, scratch_database

    entry = {"entity": "device", "list": "block", "reason": "r", "added_by": "t", "added_at": T0}
    with scratch_database() as name:
        engine = make_engine(f"{POSTGRES}/{name}", timeout_ms=SERVICE_TIMEOUT_MS)
        try:
            upgrade(engine)
            engine.dispose()
            admin_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            sessions = session_factory(engine)
            with UnitOfWork(sessions).read() as uow:  # the pool's connection is opened during the spell
                assert uow.session.execute(select(ListEntry)).first() is None
            with pytest.raises(DatabaseDown, match="refuses to write"), UnitOfWork(sessions) as uow:
                uow.session.add(ListEntry(value="d-1", **entry))
                uow.commit()
            admin_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            with UnitOfWork(sessions) as uow:
                uow.session.add(ListEntry(value="d-2", **entry))
                uow.commit()
            with sessions() as session:
                assert session.execute(select(ListEntry.value)).scalars().all() == ["d-2"]
        finally:
            engine.dispose()
