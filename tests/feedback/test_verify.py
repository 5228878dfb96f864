"""`evidence verify`'s derived-table check bears out every row the feedback loop writes (appeal notes, inspection
labels, cases given after the answer, inspections, outcomes), and still names an edited one, a deleted one and an
added copy."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import delete, insert, select, update

from fraud_service.cases import service as cases
from fraud_service.feedback import appeals, inspections
from fraud_service.feedback.outcomes import Feedback
from fraud_service.health import verify_derived
from fraud_service.store.schema import Assessment, CaseNote, EvidenceEvent, Inspection, Label, Outcome
from tests.factories import MemoryDb, memory_db

AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def answered(db: MemoryDb, n: int, decision: str) -> dict[str, Any]:
    """An assessment stored the way the assessor stores one (its evidence holds the request); a case when flagged."""
    rid = f"r-{n}"
    row = {"id": f"asm_{n}", "return_id": rid, "customer_id": f"c-{n}", "request_hash": "h" * 64, "created_at": AT,
           "score": 0.5, "decision": decision, "risk_level": "high", "model_version": "v1", "policy_version": "p1",
           "refund_amount": 40.0, "case_id": None, "reason": "timing"}
    request = {"return_id": rid, "customer_id": f"c-{n}", "requested_at": AT.isoformat(), "return_type": "return",
               "refund_amount": 40.0, "refund_token": None,
               "order": {"address_token": f"a-{n}", "payment_token": f"p-{n}", "device_token": None}}
    response = {"case_id": None, "decision": decision, "model_decision": decision, "return_id": rid, "score": 0.5,
                "risk_level": "high", "model_version": "v1", "policy_version": "p1", "reasons": [], "rules_fired": []}
    links = {"customer": f"c-{n}"} if decision in ("review", "deny") else None
    seq = db.writer.store(row, {"request_hash": "h" * 64, "request": request, "features": {}, "response": response},
                          "key:test", AT, links)
    assert seq is not None
    return row


def test_verify_bears_out_the_feedback_and_names_an_edited_outcome() -> None:
    later = AT + dt.timedelta(days=2)
    with memory_db() as db:
        approved, denied = answered(db, 1, "approve"), answered(db, 2, "deny")
        done = inspections.record(db.uow(), return_id=approved["return_id"], inspected_at=later, outcome="wrong_item",
                                  notes="a brick", actor="key:test", feedback=Feedback(), now=later)
        assert done.case_id is not None and done.label == "fraud"  # a case given after the answer, and a label
        cases.close(db.uow(), case_id=done.case_id, dispositions=None, label="fraud", reason="empty", actor="user:ana",
                    now=later)
        appeals.appeal(db.uow(), assessment_id=denied["id"], message="not me", actor="key:test", feedback=Feedback(),
                       now=later)
        checked = verify_derived(db.uow())
        assert checked.ok, checked.problem
        assert checked.rows["inspections"] == 1 and checked.rows["outcomes"] >= 2 and checked.rows["case_notes"] == 1
        with db.sessions() as session:
            session.execute(update(Outcome).where(Outcome.assessment_id == denied["id"]).values(decision="approve"))
            session.commit()
        tampered = verify_derived(db.uow())
        assert not tampered.ok and denied["id"] in (tampered.problem or "")
        assert "decision 'approve'" in (tampered.problem or "")


def test_verify_names_a_derived_row_deleted_or_a_copy_added() -> None:
    """Rows the log's events made, taken away or doubled with SQL (the label a copy of which doubles its weight in
    the next training run, an outcome the returns system was told): each is named, and the log agrees once the
    table is put back."""
    later = AT + dt.timedelta(days=2)
    with memory_db() as db:
        approved, denied = answered(db, 1, "approve"), answered(db, 2, "deny")
        plain = answered(db, 3, "approve")
        done = inspections.record(db.uow(), return_id=approved["return_id"], inspected_at=later, outcome="wrong_item",
                                  notes="a brick", actor="key:test", feedback=Feedback(), now=later)
        cases.close(db.uow(), case_id=done.case_id, dispositions=None, label="fraud", reason="empty", actor="user:ana",
                    now=later)
        appealed = appeals.appeal(db.uow(), assessment_id=denied["id"], message="not me", actor="key:test",
                                  feedback=Feedback(), now=later)
        assert verify_derived(db.uow()).ok

        def tampered(table: Any, where: Any, copy: bool, words: str) -> None:
            with db.sessions() as session:
                row = dict(session.execute(select(table).where(where)).mappings().first())
                if copy:
                    session.execute(insert(table).values({k: v for k, v in row.items() if k != "id"}))
                else:
                    session.execute(delete(table).where(where))
                session.commit()
            found = verify_derived(db.uow())
            assert not found.ok and words in (found.problem or ""), (words, found.problem)
            with db.sessions() as session:  # put back as it was
                if copy:
                    session.execute(delete(table).where(where, table.c.id != row["id"]))
                else:
                    session.execute(insert(table).values(row))
                session.commit()
            assert verify_derived(db.uow()).ok

        labels, notes = Label.__table__, CaseNote.__table__
        tampered(labels, labels.c.source == "analyst", copy=False, words="labels: event")
        tampered(labels, labels.c.source == "analyst", copy=True, words="a copy was added")
        tampered(labels, labels.c.source == "inspection", copy=True, words="made 1 row(s), the table holds 2 (a copy")
        tampered(Inspection.__table__, Inspection.__table__.c.return_id == approved["return_id"], copy=False,
                 words="inspections: event")
        tampered(notes, notes.c.body.like("The shopper appealed%"), copy=False, words="case_notes: event")
        tampered(notes, notes.c.body.like("The shopper appealed%"), copy=True, words="case_notes: 2 rows")
        tampered(Outcome.__table__, Outcome.__table__.c.assessment_id == denied["id"], copy=False,
                 words=f"the outcome of {denied['id']}")
        tampered(Assessment.__table__, Assessment.__table__.c.id == plain["id"], copy=False,
                 words="assessments: event")
        cases.close(db.uow(), case_id=appealed.case_id, dispositions=None, label="legit", reason="it was not",
                    actor="user:ana", now=later)
        with db.sessions() as session:  # an outcome put back as it was before its last change, event and all
            changes = session.execute(select(EvidenceEvent.seq, EvidenceEvent.payload).where(
                EvidenceEvent.kind == "outcome_changed", EvidenceEvent.subject == denied["id"])
                .order_by(EvidenceEvent.seq)).all()
            assert len(changes) >= 2
            before = json.loads(changes[-2][1])["after"]
            session.execute(update(Outcome).where(Outcome.assessment_id == denied["id"]).values(
                event_seq=changes[-2][0], status=before["status"], decision=before["decision"],
                decided_by=before["decided_by"], label=before["label"], appealed=before["appealed"]))
            session.commit()
        stale = verify_derived(db.uow())
        assert stale.problem == f"outcomes row {denied['id']} names event {changes[-2][0]}, but event " \
                                f"{changes[-1][0]} changed it since", stale.problem


def test_verify_names_a_list_entry_inserted_deleted_or_moved_outside_the_service() -> None:
    """The lists as the log's events leave them (added, removed, an expired entry replaced) agree with the table;
    an allow entry inserted with SQL, a block entry deleted or moved to the allow list are each named."""
    from fraud_service.scoring import lists
    from fraud_service.store.schema import ListEntry

    with memory_db() as db:
        lists.add(db.uow(), entity="device", value="d-1", list_name="block", reason="reseller", actor="user:ana",
                  now=AT)
        lists.add(db.uow(), entity="customer", value="c-9", list_name="allow", reason="vip", actor="user:ana", now=AT)
        lists.add(db.uow(), entity="address", value="a-5", list_name="block", reason="drop", actor="user:ana", now=AT,
                  expires_at=AT + dt.timedelta(days=1))
        lists.remove(db.uow(), entity="customer", value="c-9", actor="user:ana", now=AT + dt.timedelta(hours=1))
        lists.add(db.uow(), entity="address", value="a-5", list_name="allow", reason="moved out", actor="user:bo",
                  now=AT + dt.timedelta(days=2))  # the expired entry is replaced
        checked = verify_derived(db.uow())
        assert checked.ok and checked.rows["list_entries"] == 2, checked
        table = ListEntry.__table__
        with db.sessions() as session:
            kept = dict(session.execute(select(table).where(table.c.value == "d-1")).mappings().one())
        for change, undo, words in (
                (insert(table).values(entity="customer", value="fraudster", list="allow", reason="x", added_by="user:x",
                                      added_at=AT), delete(table).where(table.c.value == "fraudster"),
                 "'fraudster' is on the allow list in the table, but no event"),
                (delete(table).where(table.c.value == "d-1"), insert(table).values(kept),
                 "'d-1' is on the block list by the log, but not in"),
                (update(table).where(table.c.value == "d-1").values(list="allow"),
                 update(table).where(table.c.value == "d-1").values(list="block"),
                 "list 'allow' (the log says 'block')"),
        ):
            _named_then_agrees(db, change, undo, words)


def test_verify_names_a_key_user_or_rule_set_changed_outside_the_service() -> None:
    """Keys, users and saved rule sets as their events leave them agree with the tables; a key's role raised, an
    admin key inserted, a revoked key brought back, a user made admin and a rule set's threshold moved with SQL are
    each named."""
    from fraud_service.access.keys import create_key, revoke_key
    from fraud_service.access.users import create_user
    from fraud_service.scoring import rulebook
    from fraud_service.store.schema import ApiKey, RuleSetRow, User

    with memory_db() as db:
        scoring = create_key(db.uow(), "scoring", "shop", "user:ana").split("_")[1]
        revoked = create_key(db.uow(), "scoring", "old shop", "user:ana").split("_")[1]
        revoke_key(db.uow(), revoked, "user:ana")
        create_user(db.uow(), "bo", "analyst", None, "user:ana")
        rulebook.save(db.uow(), body={}, reason="start", actor="user:ana")
        checked = verify_derived(db.uow())
        assert checked.ok, checked.problem
        assert (checked.rows["api_keys"], checked.rows["users"], checked.rows["rule_sets"]) == (2, 1, 1)
        keys, users, rules = ApiKey.__table__, User.__table__, RuleSetRow.__table__
        with db.sessions() as session:
            body = session.execute(select(rules.c.body)).scalar_one()
        moved = body.replace('"threshold":', '"threshold":1e9,"was":', 1)
        for change, undo, words in (
                (update(keys).where(keys.c.id == scoring).values(role="admin"),
                 update(keys).where(keys.c.id == scoring).values(role="scoring"),
                 f"api_keys: key {scoring}: role 'admin' (the event says 'scoring')"),
                (insert(keys).values(id="evil", secret_hash="0" * 64, role="admin", name="x", created_at=AT),
                 delete(keys).where(keys.c.id == "evil"), "api_keys: key evil (role admin) is in the table, but no"),
                (update(keys).where(keys.c.id == revoked).values(revoked_at=None),
                 update(keys).where(keys.c.id == revoked).values(revoked_at=AT),
                 f"key {revoked} is active in the table, but ended by the log"),
                (update(users).where(users.c.name == "bo").values(role="admin"),
                 update(users).where(users.c.name == "bo").values(role="analyst"), "users: user bo: role 'admin'"),
                (update(rules).values(body=moved), update(rules).values(body=body), "rule_sets v1 (event"),
        ):
            _named_then_agrees(db, change, undo, words)


def _named_then_agrees(db: MemoryDb, change: Any, undo: Any, words: str) -> None:
    """CHANGE made with SQL is named by verify (its problem holds WORDS); after UNDO, the tables agree again."""
    for statement in (change, undo):
        with db.sessions() as session:
            session.execute(statement)
            session.commit()
        found = verify_derived(db.uow())
        if statement is change:
            assert not found.ok and words in (found.problem or ""), (words, found.problem)
        else:
            assert found.ok, found.problem


def test_an_inspection_dated_ahead_is_labelled_when_received_so_a_later_analyst_label_wins() -> None:
    """Within the five minutes of clock skew allowed, an inspection dated ahead got that time as its label's, so an
    analyst's label given a minute later still read as the older one (the customer kept a bad label). The label is
    known when it is received; verify bears it out."""
    from fraud_service.store.schema import Label

    received = AT + dt.timedelta(days=2)
    with memory_db() as db:
        approved = answered(db, 1, "approve")
        done = inspections.record(db.uow(), return_id=approved["return_id"], outcome="worn", notes="",
                                  inspected_at=received + dt.timedelta(minutes=4), actor="key:test",
                                  feedback=Feedback(), now=received)
        cases.close(db.uow(), case_id=done.case_id, dispositions=None, label="legit", reason="fine",
                    actor="user:ana", now=received + dt.timedelta(minutes=1))
        with db.sessions() as session:
            labels = session.execute(select(Label.source, Label.label, Label.labelled_at)
                                     .order_by(Label.labelled_at)).all()
        assert [(source, label) for source, label, _ in labels] == [("inspection", "abuse"), ("analyst", "legit")]
        assert labels[0][2].replace(tzinfo=dt.UTC) == received
        assert verify_derived(db.uow()).ok
