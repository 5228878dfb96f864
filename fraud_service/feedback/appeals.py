"""A shopper's objection, relayed by the returns system: it puts the return in front of a person, first.

`appeal` reopens the return's case (or joins it to an open linked case, or opens one), marks the case
appealed (the queue shows appealed cases before all others until they are closed), keeps the shopper's
words as a note and an evidence event, and moves the outcome to pending review (the decision in force
stands until a person closes the case), which the returns system hears as `assessment.outcome`.
An approved return has nothing to appeal. The same words again while their appeal is pending are a retry: the
answer is the outcome in force, and nothing is written twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from fraud_service.access.keys import Principal
from fraud_service.cases import service as cases
from fraud_service.errors import AppealRefused, AssessmentNotFound
from fraud_service.feedback import outcomes
from fraud_service.feedback.outcomes import Feedback, State
from fraud_service.feedback.webhooks import Outbox, wake
from fraud_service.store.schema import Assessment, CaseNote, EvidenceEvent
from fraud_service.store.uow import UnitOfWork

MAX_MESSAGE = 4_000
APPEAL = "The shopper appealed"
"""How the note that holds an appeal's message begins (its author is the key that relayed it)."""


@dataclass(frozen=True)
class AppealResult:
    assessment_id: str
    return_id: str
    case_id: str
    outcome: dict[str, Any]
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def appeal(uow: UnitOfWork, *, assessment_id: str, message: str, actor: str, feedback: Feedback,
           reader: Principal | None = None, now: dt.datetime | None = None) -> AppealResult:
    """Relay a shopper's appeal of ASSESSMENT_ID (READER, when given, must own it: `outcomes.owns`)."""
    text = _message(message)
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()
        assessment = uow.session.get(Assessment, assessment_id)
        if assessment is None or (reader is not None and not outcomes.owns(
                uow.session, outcomes.creator(uow.session, assessment), reader)):
            raise AssessmentNotFound(f"no assessment {assessment_id!r}")
        request = outcomes.request_of(uow.session, assessment)
        current = outcomes.state(uow.session, assessment, request["model_decision"])
        if current.status == "final" and current.decision == "approve":
            raise AppealRefused(f"assessment {assessment_id} is approved: there is nothing to appeal")
        if current.status == "pending_inspection":  # the inspection decides it; an appeal would take that away
            raise AppealRefused(f"assessment {assessment_id} waits for the return's inspection, which decides it: "
                                "there is nothing to appeal yet (appeal the decision the inspection gives)")
        note = f"{APPEAL} (return {assessment.return_id}): {text}"
        if current.status == "pending_review" and current.appealed and _pending_with(uow, assessment.case_id, note):
            # the same words in the appeal still pending: a retry (its answer was lost), not a new appeal
            return AppealResult(assessment.id, assessment.return_id, str(assessment.case_id),
                                current.view(feedback.messages), replayed=True)
        links = outcomes.links_of(assessment, request, feedback.hub_customers)
        case, _ = cases.attach(uow, assessment, decision="review", reason="shopper appeal", links=links,
                               actor=actor, why="the shopper appealed", at=now, unassign=True)
        case.appealed_at = case.updated_at = now
        event = uow.record(kind="case_appealed", subject=case.id, actor=actor, at=now, payload={
            "case_id": case.id, "assessment_id": assessment.id, "return_id": assessment.return_id, "message": text,
            "note": note})
        uow.session.add(CaseNote(case_id=case.id, author=actor, body=note, created_at=now, event_seq=event.seq))
        new = State("pending_review", current.decision, current.decided_at, current.decided_by, current.label,
                    appealed=True)
        outcomes.change(uow, Outbox(uow.session, now, feedback.retry_hours), assessment, new, actor=actor,
                        cause="appeal", feedback=feedback, model_decision=request["model_decision"])
        result = AppealResult(assessment.id, assessment.return_id, case.id, new.view(feedback.messages))
        uow.commit()
    wake()
    return result


def _pending_with(uow: UnitOfWork, case_id: str | None, note: str) -> bool:
    """True when CASE_ID holds NOTE since it was last closed: words of the appeal round still open (the same words
    from a round a person already closed are a new appeal)."""
    if case_id is None:
        return False
    closed = uow.session.scalar(select(func.max(EvidenceEvent.seq)).where(
        EvidenceEvent.kind == "case_closed", EvidenceEvent.subject == case_id)) or 0
    return uow.session.scalar(select(CaseNote.id).where(CaseNote.case_id == case_id, CaseNote.body == note,
                                                        CaseNote.event_seq > closed).limit(1)) is not None


def _message(message: object) -> str:
    return cases.free_text(message, "message", MAX_MESSAGE, f"the shopper's words, 1 to {MAX_MESSAGE:,} characters")
