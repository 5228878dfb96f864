"""The case service on an in-memory database: the join-or-open rule, the status transitions, and every change
with its evidence in one unit of work (all or nothing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from fraud_service.cases import service as cases
from fraud_service.cases.records import CaseStatus, QueueFilter
from fraud_service.cases.service import CaseChoice, Flagged, join_or_open
from fraud_service.errors import CaseConflict, CaseNotFound, RequestInvalid
from fraud_service.store import chain
from fraud_service.store.schema import Case, EvidenceEvent, Label
from tests.factories import T0, MemoryDb, flag, memory_db

LATER = T0 + dt.timedelta(hours=3)


@pytest.fixture
def db() -> Iterator[MemoryDb]:
    with memory_db() as db:
        yield db


def kinds(db: MemoryDb, case_id: str) -> list[str]:
    with db.sessions() as session:
        assert chain.verify(session).ok
        return list(session.execute(select(EvidenceEvent.kind).where(EvidenceEvent.subject == case_id)
                                    .order_by(EvidenceEvent.seq)).scalars())


def flagged(*links: tuple[str, str]) -> Flagged:
    return Flagged("asm_x", "ret-x", "c-x", "review", 0.9, 10.0, "timing", tuple(sorted(links)))


# -- the rule ------------------------------------------------------------------------------------------------

def test_a_flagged_assessment_with_no_open_linked_case_opens_one() -> None:
    assert join_or_open(flagged(("customer", "c-x")), [], {}) == CaseChoice(None, ())


def test_it_joins_the_earliest_opened_linked_case_naming_the_links_that_tie_it() -> None:
    found = [("cas_old", "device", "d-1"), ("cas_old", "address", "a-1"), ("cas_new", "customer", "c-x")]
    choice = join_or_open(flagged(("customer", "c-x"), ("device", "d-1"), ("address", "a-1")), found, {})
    assert choice == CaseChoice("cas_old", ("device:d-1", "address:a-1"))


def test_a_case_opened_earlier_in_the_same_batch_wins() -> None:
    batch = {("device", "d-1"): "cas_batch"}
    choice = join_or_open(flagged(("customer", "c-x"), ("device", "d-1")), [("cas_db", "customer", "c-x")], batch)
    assert choice == CaseChoice("cas_batch", ("device:d-1",))


def test_linked_accounts_end_up_in_one_case_with_its_totals(db: MemoryDb) -> None:
    first = flag(db, customer="c-1", links={"device": "d-1"}, score=0.7, amount=100.0)
    second = flag(db, customer="c-2", links={"device": "d-1"}, score=0.95, amount=50.0, decision="deny",
                  reason="linked accounts")
    other = flag(db, customer="c-3", links={"device": "d-2"})
    page = cases.queue(db.uow(), f=QueueFilter(), now=LATER)
    assert page.total == 2
    joined = next(c for c in page.cases if c.customer_id == "c-1")
    assert (joined.assessments, joined.amount, joined.max_score, joined.decision, joined.reason) == \
        (2, 150.0, 0.95, "deny", "linked accounts")
    assert first["return_id"] != second["return_id"] and other["customer_id"] == "c-3"
    assert kinds(db, joined.case_id) == ["case_opened", "case_joined"]


# -- the status type -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "target", "allowed"), [
    (CaseStatus.OPEN, CaseStatus.IN_REVIEW, True), (CaseStatus.OPEN, CaseStatus.ESCALATED, True),
    (CaseStatus.IN_REVIEW, CaseStatus.OPEN, True), (CaseStatus.ESCALATED, CaseStatus.IN_REVIEW, True),
    (CaseStatus.ESCALATED, CaseStatus.OPEN, False), (CaseStatus.CLOSED, CaseStatus.IN_REVIEW, False),
    (CaseStatus.CLOSED, CaseStatus.OPEN, True), (CaseStatus.IN_REVIEW, CaseStatus.CLOSED, True),
])
def test_a_status_knows_where_it_may_go(start: CaseStatus, target: CaseStatus, allowed: bool) -> None:
    assert start.can_become(target) is allowed


def test_closing_and_reopening_are_not_manual_moves() -> None:
    assert CaseStatus.OPEN.manual_moves() == (CaseStatus.IN_REVIEW, CaseStatus.ESCALATED)
    assert CaseStatus.CLOSED.manual_moves() == ()
    with pytest.raises(RequestInvalid, match="status: got 'lost'"):
        CaseStatus.parse("lost")


# -- changes -------------------------------------------------------------------------------------------------

def test_claiming_assigns_moves_to_review_and_is_recorded(db: MemoryDb) -> None:
    case_id = flag(db)["case_id"]
    claimed = cases.claim(db.uow(), case_id=case_id, actor="user:ana", now=LATER)
    assert (claimed.status, claimed.assignee) == ("in_review", "user:ana")
    with pytest.raises(CaseConflict, match="assigned to user:ana"):
        cases.claim(db.uow(), case_id=case_id, actor="user:bob", now=LATER)
    assert kinds(db, case_id) == ["case_opened", "case_claimed"]


def test_next_case_claims_the_riskiest_unassigned_open_case(db: MemoryDb) -> None:
    flag(db, customer="c-low", score=0.6, amount=10.0)
    flag(db, customer="c-high", score=0.9, amount=500.0)
    first = cases.next_case(db.uow(), actor="user:ana", now=LATER)
    second = cases.next_case(db.uow(), actor="user:bob", now=LATER)
    assert first is not None and second is not None
    assert (first.customer_id, second.customer_id) == ("c-high", "c-low")
    assert cases.next_case(db.uow(), actor="user:cem", now=LATER) is None


def test_a_move_that_is_not_allowed_changes_nothing(db: MemoryDb) -> None:
    case_id = flag(db)["case_id"]
    cases.set_status(db.uow(), case_id=case_id, status="escalated", actor="user:ana", now=LATER)
    with pytest.raises(CaseConflict, match="it can move to in_review, not open"):
        cases.set_status(db.uow(), case_id=case_id, status="open", actor="user:ana", now=LATER)
    with pytest.raises(CaseConflict, match="a case is closed with a label for each of its returns"):
        cases.set_status(db.uow(), case_id=case_id, status="closed", actor="user:ana", now=LATER)
    assert kinds(db, case_id) == ["case_opened", "case_status"]


def test_closing_labels_every_return_and_a_closed_case_only_reopens(db: MemoryDb) -> None:
    row = flag(db, customer="c-1", links={"device": "d-1"})
    flag(db, customer="c-2", links={"device": "d-1"})
    case_id = row["case_id"]
    with pytest.raises(RequestInvalid, match="missing"):
        cases.close(db.uow(), case_id=case_id, dispositions={row["return_id"]: "fraud"}, reason="ring",
                    actor="user:ana", now=LATER)
    closed = cases.close(db.uow(), case_id=case_id, dispositions=None, label="fraud", reason="ring",
                         actor="user:ana", now=LATER)
    assert closed.status == "closed" and closed.closed_at is not None
    with db.sessions() as session:
        labels = session.execute(select(Label.label, Label.actor)).all()
    assert [tuple(x) for x in labels] == [("fraud", "user:ana"), ("fraud", "user:ana")]
    with pytest.raises(CaseConflict, match="is closed; reopen it"):
        cases.add_note(db.uow(), case_id=case_id, body="late", actor="user:ana")
    reopened = cases.reopen(db.uow(), case_id=case_id, reason="new evidence", actor="user:bob", now=LATER)
    assert reopened.status == "open" and reopened.closed_at is None
    assert kinds(db, case_id)[-2:] == ["case_closed", "case_reopened"]


def test_bulk_close_is_all_or_nothing(db: MemoryDb) -> None:
    a = flag(db, customer="c-a")["case_id"]
    b = flag(db, customer="c-b")["case_id"]
    with pytest.raises(CaseNotFound, match="cas_missing"):
        cases.bulk_close(db.uow(), case_ids=[a, "cas_missing", b], label="fraud", reason="ring", actor="t")
    with db.sessions() as session:
        assert {c.status for c in session.execute(select(Case)).scalars()} == {"open"}
        assert session.execute(select(Label)).first() is None
    closed = cases.bulk_close(db.uow(), case_ids=[a, b], label="abuse", reason="ring", actor="t", now=LATER)
    assert [c.status for c in closed] == ["closed", "closed"]


def test_a_note_is_kept_with_its_event(db: MemoryDb) -> None:
    case_id = flag(db)["case_id"]
    note = cases.add_note(db.uow(), case_id=case_id, body="  called the customer  ", actor="user:ana", now=LATER)
    assert note.body == "called the customer"
    detail = cases.get(db.uow(), case_id=case_id, now=LATER)
    assert detail.notes == [note]
    assert detail.events[-1].seq == note.event_seq and detail.events[-1].kind == "case_note"
    with pytest.raises(RequestInvalid, match="body"):
        cases.add_note(db.uow(), case_id=case_id, body="   ", actor="user:ana")
    with pytest.raises(RequestInvalid, match=r"shows nothing \(only spaces or invisible characters: U\+200B"):
        cases.add_note(db.uow(), case_id=case_id, body="\u200b\u2060 ", actor="user:ana")  # was stored
    with pytest.raises(RequestInvalid, match=r"reorders how it shows: U\+202E \(RIGHT-TO-LEFT OVERRIDE\) at 7"):
        cases.add_note(db.uow(), case_id=case_id, body="label \u202edual", actor="user:ana")  # shows "label laud"
    assert cases.add_note(db.uow(), case_id=case_id, body="שוחחתי עם הלקוח", actor="user:ana", now=LATER).body
    with pytest.raises(CaseNotFound):
        cases.get(db.uow(), case_id="cas_nope")


def test_joining_adds_the_money_keeps_the_riskiest_score_and_reason_and_a_deny_sticks() -> None:
    current = {"assessments": 2, "amount": 100.0, "max_score": 0.8, "reason": "timing", "decision": "deny"}
    lower = Flagged("a", "r", "c", "review", 0.7, 25.0, "basket", ())
    assert cases.joined_case(current, lower, LATER) == {
        "updated_at": LATER, "assessments": 3, "amount": 125.0, "max_score": 0.8, "reason": "timing",
        "decision": "deny"}
    higher = Flagged("a", "r", "c", "review", 0.9, 5.0, "linked accounts", ())
    joined = cases.joined_case({**current, "decision": "review"}, higher, LATER)
    assert (joined["max_score"], joined["reason"], joined["decision"]) == (0.9, "linked accounts", "review")


def test_a_large_case_is_read_a_page_of_assessments_at_a_time(db: MemoryDb) -> None:
    rows = [flag(db, customer="c-hub", amount=1.0, at=T0 + dt.timedelta(seconds=i)) for i in range(cases.PAGE + 5)]
    case_id = rows[0]["case_id"]
    first = cases.get(db.uow(), case_id=case_id, now=LATER)
    assert (first.assessments_total, first.assessments_offset, len(first.assessments)) == (cases.PAGE + 5, 0,
                                                                                           cases.PAGE)
    assert [a.return_id for a in first.assessments] == [r["return_id"] for r in rows[:cases.PAGE]]
    rest = cases.get(db.uow(), case_id=case_id, now=LATER, offset=cases.PAGE)
    assert [a.return_id for a in rest.assessments] == [r["return_id"] for r in rows[cases.PAGE:]]
    assert first.summary.assessments == cases.PAGE + 5
    with pytest.raises(RequestInvalid, match="assessments_offset"):
        cases.get(db.uow(), case_id=case_id, offset=-1)
    closed = cases.close(db.uow(), case_id=case_id, dispositions=None, label="abuse", reason="serial",
                         actor="user:ana", now=LATER)  # one label for all, pages or not
    assert closed.status == "closed"
    with db.sessions() as session:
        assert len(session.execute(select(Label)).all()) == cases.PAGE + 5
