"""The evidence chain detects every edit, deletion, insertion and truncation; the schema matches its migrations."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import delete, text, update

from fraud_service.store import chain
from fraud_service.store.db import session_factory
from fraud_service.store.migrate import current_revision, head_revision
from fraud_service.store.schema import Base, ChainHead, EvidenceEvent


def _fill(engine, n: int = 5) -> None:
    sessions = session_factory(engine)
    for i in range(n):
        with sessions.begin() as session:
            chain.append(session, kind="test", subject=f"S{i}", actor="tester", payload={"i": i, "text": "é"})


def _verify(engine) -> chain.Verification:
    with session_factory(engine)() as session:
        return chain.verify(session)


def test_an_untouched_chain_verifies_and_links_each_event_to_the_previous(engine):
    _fill(engine)
    result = _verify(engine)
    assert result.ok and result.events == 5
    with session_factory(engine)() as session:
        events = session.query(EvidenceEvent).order_by(EvidenceEvent.seq).all()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == chain.GENESIS
        assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
        assert session.get(ChainHead, 1).hash == events[-1].hash == result.head_hash


def test_an_empty_chain_verifies(engine):
    result = _verify(engine)
    assert result.ok and result.events == 0 and result.head_hash == chain.GENESIS


@pytest.mark.parametrize(("column", "value"), [
    ("payload", '{"i":2,"text":"e"}'), ("actor", "someone else"), ("kind", "other"),
    ("at", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
])
def test_an_edited_event_is_found(engine, column, value):
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(update(EvidenceEvent).where(EvidenceEvent.seq == 3).values({column: value}))
    result = _verify(engine)
    assert not result.ok
    assert result.broken_at == 3
    assert result.problem == "event 3 was changed after it was written"


def test_a_deleted_event_is_found(engine):
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(delete(EvidenceEvent).where(EvidenceEvent.seq == 2))
    result = _verify(engine)
    assert result.broken_at == 2 and result.problem == "event 2 is missing (next stored event is 3)"


def test_cutting_off_the_end_is_found(engine):
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(delete(EvidenceEvent).where(EvidenceEvent.seq >= 4))
    result = _verify(engine)
    assert not result.ok
    assert "events were removed from the end" in result.problem


def test_an_edited_head_is_not_named_as_events_removed(engine):
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(update(ChainHead).values(hash="0" * 64))
    result = _verify(engine)
    assert not result.ok and result.problem.endswith(": the head, or the last events with their links, were rewritten")


def test_a_rewritten_chain_that_keeps_its_own_links_still_breaks_at_the_head(engine):
    _fill(engine)
    with session_factory(engine).begin() as session:
        forged = session.get(EvidenceEvent, 5)
        forged.payload = chain.canonical({"i": 99})
        forged.hash = chain.link_hash(forged.prev_hash, 5, forged.at, forged.kind, forged.subject, forged.actor,
                                      forged.payload)
    result = _verify(engine)
    assert not result.ok and "the chain head says 5 events" in result.problem
    assert result.problem.endswith(": the head, or the last events with their links, were rewritten")


def test_a_failed_transaction_leaves_no_link_behind(engine):
    _fill(engine, 2)
    sessions = session_factory(engine)
    with pytest.raises(RuntimeError, match="boom"), sessions.begin() as session:
        chain.append(session, kind="test", subject="X", actor="tester", payload={})
        raise RuntimeError("boom")
    _fill(engine, 1)
    result = _verify(engine)
    assert result.ok and result.events == 3


def test_concurrent_writers_produce_one_unbroken_chain(engine):
    def write(worker: int) -> None:
        sessions = session_factory(engine)
        for i in range(25):
            with sessions.begin() as session:
                chain.append(session, kind="test", subject=f"W{worker}-{i}", actor="tester", payload={"i": i})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = _verify(engine)
    assert result.ok and result.events == 100


def test_the_migrated_schema_matches_the_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_payloads_that_are_not_json_are_refused(engine):
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"), \
            session_factory(engine).begin() as session:
        chain.append(session, kind="test", subject="X", actor="tester", payload={"x": float("nan")})
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM evidence_events")).scalar() == 0
