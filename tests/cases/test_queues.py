"""Named queues and the assigner on a real database: definitions checked field by field, which cases a queue holds,
membership, round robin among the signed-in members with a cap, taking cases back from people away too long, SLA
breaches per queue, and two sweeps at once never giving one case twice (SQLite file and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fraud_service.access.users import create_user, present, seen, sign_out
from fraud_service.cases import assigner, queues
from fraud_service.cases import service as cases
from fraud_service.cases.records import QueueRule
from fraud_service.errors import QueueNotFound, RequestInvalid
from fraud_service.store import chain
from fraud_service.store.db import make_engine
from fraud_service.store.schema import Case, EvidenceEvent, User
from tests.factories import T0, MemoryDb, database_on, flag, memory_db

ACTIVE = dt.timedelta(minutes=15)
AWAY = dt.timedelta(minutes=60)
NOW = T0 + dt.timedelta(hours=1)


@pytest.fixture
def db() -> Iterator[MemoryDb]:
    with memory_db() as db:
        yield db


def people(db: MemoryDb, *names: str, seen_at: dt.datetime | None = NOW) -> None:
    for name in names:
        create_user(db.uow(), name, "analyst", "a long enough password", "test")
        if seen_at is not None:
            seen(db.uow(), name, seen_at)


def define(db: MemoryDb, name: str, members: list[str], cap: int = 10, sla_hours: float = 24.0,
           **rule: Any) -> None:
    queues.put(db.uow(), name=name, body={"filter": rule, "sla_hours": sla_hours, "cap": cap, "members": members},
               actor="user:admin", now=T0)


def run(db: MemoryDb, now: dt.datetime = NOW) -> list[Any]:
    return assigner.sweep(db.uow, now=now, active_within=ACTIVE, inactive_after=AWAY)


def case_of(row: dict[str, Any], db: MemoryDb) -> str:
    with db.sessions() as session:
        found = session.execute(select(Case.id).where(Case.customer_id == row["customer_id"])).scalar_one()
        return str(found)


def assignees(db: MemoryDb) -> dict[str, str | None]:
    with db.sessions() as session:
        return dict(session.execute(select(Case.id, Case.assignee)).all())


# -- definitions ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "fields"), [
    ({"sla_hours": 0, "cap": 0}, {"sla_hours", "cap"}),
    ({"sla_hours": "soon", "cap": 1.5, "members": "ana"}, {"sla_hours", "cap", "members"}),
    ({"sla_hours": 4, "cap": 3, "colour": "red"}, {"colour"}),
    ({"sla_hours": 4, "cap": 3, "members": ["ana", "ana"]}, {"members"}),
    ({"sla_hours": 4, "cap": 3, "filter": {"statuses": ["closed"], "decision": "approve", "min_amount": -1,
                                           "return_type": "swap", "appealed": "yes", "reason": "",
                                           "colour": 1}},
     {"filter.statuses", "filter.decision", "filter.min_amount", "filter.return_type", "filter.appealed",
      "filter.reason", "filter.colour"}),
    ({"sla_hours": 4, "cap": 3, "filter": ["escalated"]}, {"filter"}),
    ({"sla_hours": True, "cap": True, "filter": {"min_amount": True}}, {"sla_hours", "cap", "filter.min_amount"}),
])
def test_every_bad_field_of_a_definition_is_named(body: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(RequestInvalid, match="invalid field") as caught:
        queues.parse_definition("q", body)
    assert {p.field for p in caught.value.problems} == fields


def test_a_string_that_reads_like_a_boolean_or_number_is_quoted_as_a_string() -> None:
    with pytest.raises(RequestInvalid) as caught:
        queues.parse_definition("q", {"sla_hours": "4", "cap": 3, "filter": {"appealed": "true"}})
    assert {p.field: p.problem for p in caught.value.problems} == {
        "sla_hours": "got '4'", "filter.appealed": "got 'true'"}  # they read "got 4" and "got true"


def test_a_bad_name_is_named_with_the_rest() -> None:
    with pytest.raises(RequestInvalid, match="invalid field") as caught:
        queues.parse_definition("Big Refunds!", {"sla_hours": 1})
    assert {p.field for p in caught.value.problems} == {"name", "cap"}


def test_a_good_definition_is_read_as_given() -> None:
    rule = {"return_type": "item_not_received", "statuses": ["escalated", "open"], "min_amount": 500}
    d = queues.parse_definition("inr", {"filter": rule, "sla_hours": 12, "cap": 5, "members": ["user:bo", "ana"]})
    assert d.rule == QueueRule(statuses=("open", "escalated"), min_amount=500.0, return_type="item_not_received")
    assert (d.sla_hours, d.cap, d.members) == (12.0, 5, ("ana", "bo"))


def test_members_must_be_active_users_and_every_change_is_an_event(db: MemoryDb) -> None:
    people(db, "ana", "bo")
    with pytest.raises(RequestInvalid, match="invalid field") as caught:
        define(db, "inr", ["ana", "nobody"])
    assert [p.field for p in caught.value.problems] == ["members.nobody"]
    define(db, "inr", ["bo", "ana"], return_type="item_not_received")
    define(db, "inr", ["ana"], cap=2, return_type="item_not_received")
    [record] = queues.listing(db.uow(), now=NOW)
    assert (record.name, record.members, record.cap, record.filter) == (
        "inr", ["ana"], 2, {"statuses": ["open", "in_review", "escalated"], "return_type": "item_not_received"})
    queues.remove(db.uow(), name="inr", actor="user:admin", now=NOW)
    assert queues.listing(db.uow(), now=NOW) == []
    with pytest.raises(QueueNotFound, match="no queue 'inr'"):
        queues.remove(db.uow(), name="inr", actor="user:admin", now=NOW)
    with db.sessions() as session:
        assert chain.verify(session).ok
        events = session.execute(select(EvidenceEvent).where(EvidenceEvent.subject == "queue:inr")
                                 .order_by(EvidenceEvent.seq)).scalars().all()
    assert [(e.kind, e.actor) for e in events] == [("queue_set", "user:admin")] * 2 + [("queue_removed", "user:admin")]
    second = json.loads(events[1].payload)
    assert (second["before"]["members"], second["after"]["members"], second["after"]["cap"]) == (["ana", "bo"],
                                                                                                 ["ana"], 2)


# -- what a queue holds ----------------------------------------------------------------------------------------

def test_a_queue_holds_what_its_filter_selects(db: MemoryDb) -> None:
    inr = flag(db, customer="c-inr", return_type="item_not_received", amount=50.0)
    big = flag(db, customer="c-big", amount=900.0, decision="deny")
    plain = flag(db, customer="c-plain", amount=20.0)
    people(db, "ana")
    define(db, "inr", [], return_type="item_not_received")
    define(db, "big", [], min_amount=500)
    define(db, "denied", [], decision="deny")
    define(db, "escalations", [], statuses=["escalated"])
    define(db, "appeals", [], appealed=True)
    cases.set_status(db.uow(), case_id=case_of(plain, db), status="escalated", actor="user:ana", now=T0)
    with db.sessions() as session:
        session.get(Case, case_of(big, db)).appealed_at = T0  # type: ignore[union-attr]
        session.commit()
    held = {name: [c.case_id for c in queues.page(db.uow(), name=name, now=NOW)[1].cases]
            for name in ("inr", "big", "denied", "escalations", "appeals")}
    assert held == {"inr": [case_of(inr, db)], "big": [case_of(big, db)], "denied": [case_of(big, db)],
                    "escalations": [case_of(plain, db)], "appeals": [case_of(big, db)]}
    with pytest.raises(QueueNotFound, match="no queue"):
        queues.page(db.uow(), name="missing", now=NOW)


def test_sla_breaches_are_counted_and_flagged_per_queue(db: MemoryDb) -> None:
    for hours_old in (1, 5, 30, 50):
        flag(db, customer=f"c-{hours_old}", at=NOW - dt.timedelta(hours=hours_old))
    define(db, "fast", [], sla_hours=4)
    define(db, "slow", [], sla_hours=40)
    counts = {q.name: (q.cases, q.unassigned, q.breaches) for q in queues.listing(db.uow(), now=NOW)}
    assert counts == {"fast": (4, 4, 3), "slow": (4, 4, 1)}
    record, page = queues.page(db.uow(), name="fast", now=NOW)
    assert sorted(c.overdue for c in page.cases) == [False, True, True, True]
    assert record.breaches == sum(c.overdue for c in page.cases)


# -- the assigner ----------------------------------------------------------------------------------------------

def test_round_robin_is_fair_in_priority_order_and_continues_across_sweeps(db: MemoryDb) -> None:
    rows = [flag(db, customer=f"c-{i}", amount=100.0 * (i + 1)) for i in range(7)]  # priority rises with i
    people(db, "ana", "bo", "cy")
    define(db, "all", ["cy", "ana", "bo"])
    done = run(db)
    riskiest_first = [case_of(r, db) for r in reversed(rows)]
    assert [a.case_id for a in done] == riskiest_first
    assert [a.assignee for a in done] == ["user:ana", "user:bo", "user:cy"] * 2 + ["user:ana"]
    assert all(a.why == "round_robin" and a.previous is None for a in done)
    late = flag(db, customer="c-late", amount=1.0)
    [next_one] = run(db)
    assert (next_one.case_id, next_one.assignee) == (case_of(late, db), "user:bo")  # the turn was kept
    assert run(db) == []
    with db.sessions() as session:
        event = session.execute(select(EvidenceEvent).where(EvidenceEvent.subject == case_of(late, db),
                                                            EvidenceEvent.kind == "case_assigned")).scalar_one()
    assert event.actor == "system:assigner"
    assert json.loads(event.payload) == {"case_id": case_of(late, db), "changes": {"assignee": [None, "user:bo"]},
                                         "queue": "all", "why": "round_robin"}


def test_the_cap_counts_every_case_a_member_holds(db: MemoryDb) -> None:
    rows = [flag(db, customer=f"c-{i}", amount=10.0 + i) for i in range(6)]
    people(db, "ana", "bo")
    held_by_hand = flag(db, customer="c-hand", amount=1.0)
    cases.assign(db.uow(), case_id=case_of(held_by_hand, db), assignee="ana", actor="user:ana", now=T0)
    define(db, "all", ["ana", "bo"], cap=2)
    done = run(db)
    assert [a.assignee for a in done] == ["user:ana", "user:bo", "user:bo"]
    held = assignees(db)
    assert sum(1 for v in held.values() if v == "user:ana") == 2
    assert sum(1 for v in held.values() if v == "user:bo") == 2
    assert sum(1 for r in rows if held[case_of(r, db)] is None) == 3


def test_only_signed_in_members_get_cases(db: MemoryDb) -> None:
    flag(db, customer="c-1")
    flag(db, customer="c-2", amount=50.0)
    people(db, "ana", "bo", "cy", "dee")
    people(db, "old", seen_at=NOW - ACTIVE - dt.timedelta(seconds=1))
    people(db, "never", seen_at=None)
    sign_out(db.uow(), "bo", now=NOW)
    create_user(db.uow(), "eve", "analyst", "a long enough password", "test")
    seen(db.uow(), "eve", NOW)
    define(db, "all", ["bo", "never", "old", "dee"])
    assert {a.assignee for a in run(db)} == {"user:dee"}  # ana and cy are not members; bo signed out
    with db.sessions() as session:
        users = {u.name: u for u in session.execute(select(User)).scalars()}
    assert {n for n, u in users.items() if present(u, NOW, ACTIVE)} == {"ana", "cy", "dee", "eve"}


def test_cases_of_someone_away_too_long_are_taken_back_and_given_again(db: MemoryDb) -> None:
    row = flag(db, customer="c-1")
    untouched = flag(db, customer="c-2", amount=10.0)
    people(db, "ana", "bo")
    define(db, "all", ["ana", "bo"])
    first = run(db, now=NOW)
    assert [a.assignee for a in first] == ["user:ana", "user:bo"]
    later = NOW + AWAY + dt.timedelta(minutes=1)
    seen(db.uow(), "bo", later)  # ana has been away since NOW
    cases.add_note(db.uow(), case_id=case_of(untouched, db), body="still looking", actor="user:bo", now=NOW)
    moved = run(db, now=later)
    assert [(a.case_id, a.previous, a.assignee, a.why) for a in moved] == [
        (case_of(row, db), "user:ana", "user:bo", "inactive")]
    seen(db.uow(), "bo", later - AWAY)  # now both are away: the case goes to nobody
    cases.add_note(db.uow(), case_id=case_of(row, db), body="x", actor="user:bo", now=later - AWAY)
    gone = run(db, now=later + AWAY + dt.timedelta(minutes=1))
    assert {(a.assignee, a.why) for a in gone} == {(None, "inactive")}
    assert set(assignees(db).values()) == {None}


# -- two sweeps at once ----------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryDb]:
    if request.param == "postgres":
        from tests.store.conftest import postgres_engine

        engines = postgres_engine()
        engine = next(engines)
    else:
        engines, engine = None, make_engine(f"sqlite:///{tmp_path / 'fraud.db'}")
    try:
        with database_on(engine) as db:
            yield db
    finally:
        if engines is not None:
            next(engines, None)


def test_two_sweeps_at_once_never_give_a_case_twice(shared_db: MemoryDb) -> None:
    db = shared_db
    for i in range(12):
        flag(db, customer=f"c-race-{i}", amount=10.0 + i)
    people(db, "ana", "bo", "cy")
    define(db, "all", ["ana", "bo", "cy"], cap=3)
    start = threading.Barrier(2)
    results: list[list[Any]] = []

    def sweep() -> None:
        start.wait()
        results.append(run(db))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    made = [a for r in results for a in r]
    assert len(made) == 9 and len({a.case_id for a in made}) == 9  # each case given once, 3 each (the cap)
    held = assignees(db)
    assert sorted(v for v in held.values() if v) == ["user:ana"] * 3 + ["user:bo"] * 3 + ["user:cy"] * 3
    with db.sessions() as session:
        assert chain.verify(session).ok
        given = session.execute(select(EvidenceEvent.subject).where(EvidenceEvent.kind == "case_assigned")).all()
    assert len(given) == 9
