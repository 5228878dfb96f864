"""The outcome of an assessment: the decision in force, whether it is final, who decided it, and what to tell the
shopper.

The first answer sets it: `approve` and `store_credit_only` are final at once, `review` and `deny` are
pending review until their case is closed, `approve_after_inspection` is pending inspection until the
warehouse reports. It changes when a case is closed (its label decides: fraud or abuse gives the
policy's decision for confirmed bad returns, legit gives approve), when an inspection arrives and when
the shopper appeals. Each change after the first answer is one `outcome_changed` evidence event, the
row in `outcomes`, and an `assessment.outcome` webhook event, all in the transaction of the change that
caused it. Without a row, the outcome is the first answer's (the assessment's hot path writes nothing
more).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from fraud_service.access.keys import Principal
from fraud_service.errors import AssessmentNotFound
from fraud_service.feedback.messages import Messages
from fraud_service.feedback.webhooks import RETRY_HOURS, Outbox
from fraud_service.scoring.rules import LIST_ENTITIES, case_links, stored_tokens
from fraud_service.store import chain
from fraud_service.store.schema import ApiKey, Assessment, EvidenceEvent, Outcome
from fraud_service.store.uow import UnitOfWork

STATUSES = ("final", "pending_review", "pending_inspection")


@dataclass(frozen=True)
class Feedback:
    """What the feedback services decide with (from the settings): the shopper's texts, the decision for
    confirmed bad returns, how long a webhook delivery is retried, and when a shared token is a hub that links
    no cases (FRAUD_HUB_CUSTOMERS)."""

    messages: Messages = field(default_factory=Messages)
    confirmed_bad: str = "deny"
    retry_hours: float = RETRY_HOURS
    hub_customers: int = 20


@dataclass(frozen=True)
class State:
    status: str
    decision: str
    decided_at: dt.datetime
    decided_by: str
    label: str | None = None
    appealed: bool = False

    def same(self, other: State) -> bool:
        return (self.status, self.decision, self.label, self.appealed) == (
            other.status, other.decision, other.label, other.appealed)

    def view(self, messages: Messages) -> dict[str, Any]:
        """The outcome as the API and webhooks show it."""
        return {"status": self.status, "decision": self.decision, "decided_at": chain.utc_text(self.decided_at),
                "decided_by": self.decided_by, "label": self.label, "appealed": self.appealed,
                "customer_message": messages.message(self.status, self.decision, self.appealed)}

    def record(self) -> dict[str, Any]:
        return {"status": self.status, "decision": self.decision, "decided_by": self.decided_by, "label": self.label,
                "appealed": self.appealed}


def first_status(decision: str) -> str:
    """The status of a first answer with DECISION."""
    if decision in ("review", "deny"):
        return "pending_review"
    if decision == "approve_after_inspection":
        return "pending_inspection"
    return "final"


def state(session: Any, assessment: Assessment, model_decision: str | None = None) -> State:
    """The outcome in force of ASSESSMENT. Without a stored change it is the first answer's, decided by `rule` when
    the rules or lists changed the model's own decision (MODEL_DECISION, read from the evidence when not given)."""
    row = session.get(Outcome, assessment.id)
    if row is not None:
        return State(row.status, row.decision, chain.aware(row.decided_at), row.decided_by, row.label, row.appealed)
    if model_decision is None:
        model_decision = request_of(session, assessment)["model_decision"]
    by = "model" if model_decision in (None, assessment.decision) else "rule"
    return State(first_status(assessment.decision), assessment.decision, chain.aware(assessment.created_at), by)


def change(uow: UnitOfWork, outbox: Outbox, assessment: Assessment, new: State, *, actor: str, cause: str,
           feedback: Feedback, model_decision: str | None = None) -> bool:
    """Make NEW the outcome of ASSESSMENT, with its evidence event and webhook event (both at the outbox's time, the
    change's), when it differs from the one in force (True); CAUSE says what changed it (case_closed, inspection,
    appeal). An appeal keeps the time its decision was made as `decided_at`."""
    old = state(uow.session, assessment, model_decision)
    if old.same(new):
        return False
    event = uow.record(kind="outcome_changed", subject=assessment.id, actor=actor, at=outbox.at,
                       payload={"assessment_id": assessment.id, "return_id": assessment.return_id, "cause": cause,
                                "before": old.record(), "after": new.record()})
    row = uow.session.get(Outcome, assessment.id)
    if row is None:
        row = Outcome(assessment_id=assessment.id)
        uow.session.add(row)
    row.status, row.decision, row.decided_at, row.decided_by = new.status, new.decision, new.decided_at, new.decided_by
    row.label, row.appealed, row.event_seq = new.label, new.appealed, event.seq
    # deliveries retried after an outage may arrive out of order: `sequence` (the change's evidence event, rising
    # with every change) tells a receiver which outcome is the latest
    outbox.emit("assessment.outcome", {"assessment_id": assessment.id, "return_id": assessment.return_id,
                                       "case_id": assessment.case_id, "sequence": event.seq,
                                       "outcome": new.view(feedback.messages)})
    return True


def labelled(label: str, at: dt.datetime, actor: str, feedback: Feedback) -> State:
    """The final outcome a case's label gives a return."""
    decision = "approve" if label == "legit" else feedback.confirmed_bad
    return State("final", decision, at, actor, label)


def assessment_of(session: Any, return_id: str) -> Assessment | None:
    return session.execute(select(Assessment).where(Assessment.return_id == return_id)).scalar_one_or_none()


def read(uow: UnitOfWork, *, assessment_id: str, messages: Messages, reader: Principal | None = None) -> dict[str, Any]:
    """An assessment's stored evidence with its outcome in force. READER, when given (a scoring key), must own it
    (`owns`): to any other key it does not exist (AssessmentNotFound, the same answer as for an unknown id)."""
    with uow.read():
        found = uow.session.execute(select(Assessment, EvidenceEvent.seq, EvidenceEvent.actor, EvidenceEvent.payload)
                                    .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                    .where(Assessment.id == assessment_id)).first()
        if found is None or (reader is not None and not owns(uow.session, found.actor, reader)):
            raise AssessmentNotFound(f"no assessment {assessment_id!r}")
        record = dict(json.loads(found.payload))
        current = state(uow.session, found.Assessment, record["response"].get("model_decision"))
    return {"assessment_id": assessment_id, "event_seq": found.seq, **record, "outcome": current.view(messages)}


def owns(session: Any, creator: str, reader: Principal) -> bool:
    """Whether READER's key may see what the key CREATOR (`key:ID`) made: the same key, or a key of the same name
    (a key rotated the documented way, a new key under the old one's name, keeps its returns)."""
    if creator == reader.actor:
        return True
    if not creator.startswith("key:"):
        return False
    name = session.execute(select(ApiKey.name).where(ApiKey.id == creator.removeprefix("key:"))).scalar_one_or_none()
    return name is not None and name == reader.name


def creator(session: Any, assessment: Assessment) -> str:
    """The actor (a scoring key) whose request made ASSESSMENT."""
    return str(session.execute(select(EvidenceEvent.actor).where(EvidenceEvent.seq == assessment.event_seq))
               .scalar_one())


def request_of(session: Any, assessment: Assessment) -> dict[str, Any]:
    """The request ASSESSMENT answered, as its evidence keeps it, with the feature values it was scored on and the
    model's own decision (`model_decision`: pass it to `state` and `change`, which read it from here otherwise)."""
    payload = session.execute(select(EvidenceEvent.payload)
                              .where(EvidenceEvent.seq == assessment.event_seq)).scalar_one()
    record: dict[str, Any] = json.loads(payload)
    return {**record["request"], "features": record.get("features") or {},
            "model_decision": (record.get("response") or {}).get("model_decision") or assessment.decision}


def tokens_of(assessment: Assessment, request: dict[str, Any]) -> dict[str, str | None]:
    """The customer and the tokens of ASSESSMENT's REQUEST (`request_of`), by list entity (None when absent)."""
    present = stored_tokens(request, assessment.customer_id)
    return {entity: present.get(entity) for entity in LIST_ENTITIES}


def links_of(assessment: Assessment, request: dict[str, Any], hub_customers: int) -> dict[str, str]:
    """The customer and tokens that tie ASSESSMENT to a case (hubs left out: `rules.case_links`)."""
    return case_links(stored_tokens(request, assessment.customer_id), request["features"], hub_customers)
