"""The lists service on an in-memory database: each change with its evidence, refused changes leave nothing, and
the history answers what the lists were at any time."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from fraud_service.errors import ListEntryExists, ListEntryNotFound, RequestInvalid
from fraud_service.scoring import lists
from fraud_service.scoring.lists import ListCache
from fraud_service.store import chain
from fraud_service.store.schema import EvidenceEvent, ListEntry
from tests.factories import T0, MemoryDb, memory_db


@pytest.fixture
def db() -> Iterator[MemoryDb]:
    with memory_db() as db:
        yield db


def events(db: MemoryDb) -> list[tuple[str, str, str]]:
    with db.sessions() as session:
        rows = session.execute(select(EvidenceEvent.kind, EvidenceEvent.subject, EvidenceEvent.actor)
                               .order_by(EvidenceEvent.seq)).all()
        assert chain.verify(session).ok
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_adding_and_removing_an_entry_are_evidence_events(db: MemoryDb) -> None:
    added = lists.add(db.uow(), entity="device", value="dev-7", list_name="block", reason="chargebacks",
                      actor="user:ana", now=T0)
    assert added.to_dict() == {"entity": "device", "value": "dev-7", "list": "block", "reason": "chargebacks",
                               "added_by": "user:ana", "added_at": "2026-03-01T12:00:00.000000+00:00",
                               "expires_at": None}
    assert lists.entries(db.uow()) == [added]
    removed = lists.remove(db.uow(), entity="device", value="dev-7", actor="cli:root")
    assert removed == added and lists.entries(db.uow()) == []
    assert events(db) == [("list_added", "device:dev-7", "user:ana"), ("list_removed", "device:dev-7", "cli:root")]


def test_a_token_already_on_a_list_is_refused_and_nothing_is_written(db: MemoryDb) -> None:
    lists.add(db.uow(), entity="customer", value="c-1", list_name="allow", reason="VIP", actor="t")
    with pytest.raises(ListEntryExists, match="customer c-1 is already on a list"):
        lists.add(db.uow(), entity="customer", value="c-1", list_name="block", reason="now bad", actor="t")
    assert [e.list for e in lists.entries(db.uow())] == ["allow"]
    assert len(events(db)) == 1


def test_removing_a_token_on_no_list_is_not_found(db: MemoryDb) -> None:
    with pytest.raises(ListEntryNotFound, match="refund gc-1 is on no list"):
        lists.remove(db.uow(), entity="refund", value="gc-1", actor="t")
    assert events(db) == []


def test_fields_left_out_are_named_missing(db: MemoryDb) -> None:
    """A form sent with empty fields said "'' '' is on no list", and one without them "got None"."""
    from fraud_service.errors import RequestInvalid

    with pytest.raises(RequestInvalid) as removed:
        lists.remove(db.uow(), entity="", value="", actor="t")
    assert [(p.field, p.problem) for p in removed.value.problems] == [("entity", "is missing"), ("value", "is missing")]
    with pytest.raises(RequestInvalid) as added:
        lists.add(db.uow(), entity=None, value=None, list_name="block", reason=None, actor="t")
    assert {p.field: p.problem for p in added.value.problems} == {
        "entity": "is missing", "value": "is missing", "reason": "is missing"}
    assert events(db) == []


def test_every_bad_field_is_named(db: MemoryDb) -> None:
    with pytest.raises(RequestInvalid) as caught:
        lists.add(db.uow(), entity="planet", value="", list_name="grey", reason=None, actor="t")
    assert sorted(p.field for p in caught.value.problems) == ["entity", "list", "reason", "value"]
    with db.sessions() as session:
        assert session.execute(select(ListEntry)).first() is None


def test_a_padded_token_is_refused_as_a_request_refuses_it(db: MemoryDb) -> None:
    with pytest.raises(RequestInvalid) as caught:
        lists.add(db.uow(), entity="payment", value="pay_1 ", list_name="block", reason="chargebacks",
                  actor="t")
    assert [(p.field, p.problem) for p in caught.value.problems] == [("value", "holds U+0020 (SPACE) at its end")]


def test_the_history_gives_the_lists_as_they_stood_at_any_time(db: MemoryDb) -> None:
    day = dt.timedelta(days=1)
    lists.add(db.uow(), entity="device", value="d-1", list_name="block", reason="fraud ring", actor="t", now=T0)
    lists.remove(db.uow(), entity="device", value="d-1", actor="t", now=T0 + 2 * day)
    lists.add(db.uow(), entity="device", value="d-1", list_name="allow", reason="store kiosk", actor="t",
              now=T0 + 3 * day)
    history = lists.history(db.uow())
    tokens = {"customer": "c-9", "device": "d-1"}
    assert history.matches(tokens, T0 - day) == []
    assert [m.list for m in history.matches(tokens, T0)] == ["block"]
    assert [m.list for m in history.matches(tokens, T0 + day)] == ["block"]
    assert history.matches(tokens, T0 + 2 * day) == []  # removed at that instant
    assert [(m.list, m.reason) for m in history.matches(tokens, T0 + 4 * day)] == [("allow", "store kiosk")]
    assert history.matches({"device": "d-2"}, T0 + day) == []
    assert len(history) == 2


def test_a_workers_cache_sees_a_change_after_its_ttl_or_at_once_when_invalidated(db: MemoryDb) -> None:
    now = [100.0]
    cache = ListCache(db.sessions, ttl=1.0, clock=lambda: now[0])
    assert cache.matches({"device": "d-1"}) == []
    lists.add(db.uow(), entity="device", value="d-1", list_name="block", reason="r", actor="t")
    assert cache.matches({"device": "d-1"}) == []  # still within the second
    now[0] += 1.0
    assert [m.list for m in cache.matches({"device": "d-1"})] == ["block"]
    lists.remove(db.uow(), entity="device", value="d-1", actor="t")
    cache.invalidate()
    assert cache.matches({"device": "d-1"}) == []


@pytest.mark.postgres
def test_a_token_of_the_longest_allowed_length_is_listed_and_removed_on_postgresql() -> None:
    """A token may hold 200 characters (as in a request); the event's subject column holds 80. On PostgreSQL, which
    enforces the column's length, adding or removing such an entry failed (`value too long`), so a long token
    could not be blocked."""
    from tests.factories import database_on
    from tests.store.conftest import postgres_engine

    engines = postgres_engine()
    try:
        with database_on(next(engines)) as db:
            value = "d" * 200
            added = lists.add(db.uow(), entity="device", value=value, list_name="block", reason="ring",
                              actor="t", now=T0)
            assert [e.value for e in lists.entries(db.uow())] == [value]
            assert lists.remove(db.uow(), entity="device", value=value, actor="t") == added
            assert lists.entries(db.uow()) == []
            with db.sessions() as session:
                found = session.execute(select(EvidenceEvent.kind, EvidenceEvent.subject, EvidenceEvent.payload)
                                        .where(EvidenceEvent.kind.like("list_%"))
                                        .order_by(EvidenceEvent.seq)).all()
                assert chain.verify(session).ok
            assert [(k, s) for k, s, _ in found] == [("list_added", ("device:" + value)[:80]),
                                                     ("list_removed", ("device:" + value)[:80])]
            assert [json.loads(p)["value"] for _, _, p in found] == [value, value]  # the payload names it whole
    finally:
        next(engines, None)
