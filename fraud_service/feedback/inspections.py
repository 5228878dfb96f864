"""Inspection results from the warehouse: the second half of `approve_after_inspection`, and evidence for every
other return.

One inspection (return_id, inspected_at, outcome, notes) is, in one transaction: the contract's
inspection row, an `inspection` evidence event, a label (source `inspection`, labelled at
inspected_at), the outcome it decides and, when the goods failed, the case it opens or joins. After the
commit its failed-inspection count goes live for the customer and the return's tokens
(`featurestore.live.LiveFacts.record_inspection`: through the serving worker's live-fact writer, within a fraction
of a second and off the request's thread; the CLI records it before it returns), so the customer's next return
sees it.

| outcome | label | a pending inspection becomes | case |
|---|---|---|---|
| ok | legit | final approve | - |
| damaged | - | final approve for a `damaged_on_arrival` return, else pending review | else opened or joined |
| worn | abuse | pending review | opened or joined |
| wrong_item, empty_box, missing_parts | fraud | final deny (FRAUD_CONFIRMED_BAD_DECISION) | opened or joined |

An outcome that is not pending inspection is left as it is (a person or the first answer decided it);
a failed inspection still puts the return in front of a person. The same (return_id, inspected_at)
again is answered with the stored result, or refused when its outcome or notes differ.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from fraud_service.access.keys import Principal
from fraud_service.cases import service as cases
from fraud_service.data.contract import INSPECTION_OUTCOMES
from fraud_service.errors import InspectionConflict, Problem, RequestInvalid, ReturnNotAssessed
from fraud_service.feedback import outcomes
from fraud_service.feedback.outcomes import Feedback, State
from fraud_service.feedback.webhooks import Outbox, wake
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, Case, Inspection, Label
from fraud_service.store.uow import UnitOfWork

FAILED = ("wrong_item", "empty_box", "missing_parts")
LABELS = {"ok": "legit", "worn": "abuse", "wrong_item": "fraud", "empty_box": "fraud", "missing_parts": "fraud"}
MAX_NOTES = 2_000


@dataclass(frozen=True)
class InspectedReturn:
    """What the live features need of an inspected return: whose it was, its tokens, when and how it failed."""

    return_id: str
    customer_id: str
    inspected_at: dt.datetime
    outcome: str
    address_token: str | None
    payment_token: str | None
    device_token: str | None
    refund_token: str | None


@dataclass(frozen=True)
class InspectionResult:
    return_id: str
    assessment_id: str
    inspected_at: str
    outcome: str
    notes: str
    label: str | None
    case_id: str | None
    assessment_outcome: dict[str, Any]
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "replayed"}


def effect(outcome: str, return_type: str) -> tuple[str, str] | None:
    """(status, decision) a pending inspection takes from OUTCOME; None when a person must look (no final yet)."""
    if outcome == "ok" or (outcome == "damaged" and return_type == "damaged_on_arrival"):
        return "final", "approve"
    if outcome in FAILED:
        return "final", "deny"
    return None


def record(uow: UnitOfWork, *, return_id: str, inspected_at: dt.datetime, outcome: str, notes: str, actor: str,
           feedback: Feedback, now: dt.datetime | None = None, live: Callable[[InspectedReturn], None] | None = None,
           reader: Principal | None = None) -> InspectionResult:
    """Store an inspection of RETURN_ID and everything it decides (see the module's table); LIVE, when given, counts
    it in the live features after the commit. READER, when given (a scoring key), must own the return's assessment
    (`outcomes.owns`): to a key of another name it does not exist."""
    now = now or dt.datetime.now(dt.UTC)
    text = _check(outcome, notes, inspected_at, now)
    with uow:
        uow.lock_chain()
        assessment = outcomes.assessment_of(uow.session, return_id)
        if assessment is not None and reader is not None and not outcomes.owns(
                uow.session, outcomes.creator(uow.session, assessment), reader):
            assessment = None
        if assessment is None:
            raise ReturnNotAssessed(f"no assessment of return {return_id!r}: inspections are taken for returns this "
                                    "service assessed")
        request = outcomes.request_of(uow.session, assessment)
        stored = _stored(uow, return_id, inspected_at)
        if stored is not None:
            if (stored.outcome, stored.notes) != (outcome, text):
                differs = " and ".join(what for what, same in (("outcome", stored.outcome == outcome),
                                                               ("notes", stored.notes == text)) if not same)
                raise InspectionConflict(f"return {return_id} has an inspection at {chain.utc_text(inspected_at)} "
                                         f"already (times are kept to the microsecond), with outcome "
                                         f"{stored.outcome!r} and notes {stored.notes[:200]!r}; this one's {differs} "
                                         f"{'differs' if differs == 'outcome' else 'differ'}: an inspection is never "
                                         "replaced")
            return _result(uow, assessment, request, stored, feedback, replayed=True)
        requested = dt.datetime.fromisoformat(request["requested_at"])
        if inspected_at < requested:
            raise RequestInvalid([Problem("inspected_at", f"{chain.utc_text(inspected_at)} is before the return "
                                          f"was requested ({chain.utc_text(requested)})",
                                          "a time at or after the return's requested_at")])
        _decide(uow, Outbox(uow.session, now, feedback.retry_hours), assessment, request, outcome, feedback, actor,
                now)
        row = _store(uow, assessment, inspected_at, outcome, text, actor, now, requested)
        if assessment.case_id is not None:  # its case has news: a close decided on an older page is refused
            case = uow.session.get(Case, assessment.case_id)
            if case is not None:
                case.updated_at = now
        result = _result(uow, assessment, request, row, feedback)
        uow.commit()
    wake()
    if live is not None:
        tokens = outcomes.tokens_of(assessment, request)
        try:
            live(InspectedReturn(return_id, assessment.customer_id, inspected_at, outcome, tokens["address"],
                                 tokens["payment"], tokens["device"], tokens["refund"]))
        except Exception:  # the inspection is stored: the next feature build counts it
            logging.getLogger(__name__).exception("counting inspection of %s in the live features failed", return_id)
    return result


def _check(outcome: str, notes: str, inspected_at: dt.datetime, now: dt.datetime) -> str:
    from fraud_service.data.contract import shown_text_problem

    problems = []
    if outcome not in INSPECTION_OUTCOMES:
        problems.append(Problem("outcome", f"got {outcome!r}", "one of " + ", ".join(INSPECTION_OUTCOMES)))
    text = notes.strip() if isinstance(notes, str) else ""
    if len(text) > MAX_NOTES:
        problems.append(Problem("notes", f"got {len(text)} characters", f"at most {MAX_NOTES:,}"))
    elif (found := shown_text_problem(text)) is not None:
        problems.append(Problem("notes", *found))
    if inspected_at > now + dt.timedelta(minutes=5):
        problems.append(Problem("inspected_at", f"{chain.utc_text(inspected_at)} is in the future",
                                "a time no later than now (5 minutes of clock difference are allowed)"))
    if problems:
        raise RequestInvalid(problems)
    return text


def _stored(uow: UnitOfWork, return_id: str, inspected_at: dt.datetime) -> Inspection | None:
    rows = uow.session.execute(select(Inspection).where(Inspection.return_id == return_id)).scalars().all()
    return next((r for r in rows if chain.aware(r.inspected_at) == inspected_at), None)


def _store(uow: UnitOfWork, assessment: Assessment, inspected_at: dt.datetime, outcome: str, notes: str,
           actor: str, now: dt.datetime, requested: dt.datetime) -> Inspection:
    """The inspection row, its event and its label (in the return's case, if it is in one now)."""
    label = LABELS.get(outcome)
    reason = f"inspection: {outcome}" + (f" ({notes})" if notes else "")
    at = chain.utc_text(inspected_at)
    # a label is known when it is received at the latest: an inspection dated a little ahead (clocks apart) must
    # not outrank an analyst's later label; never before its return was requested (the contract's time order)
    known = min(chain.aware(inspected_at), max(chain.aware(now), chain.aware(requested)))
    event = uow.record(kind="inspection", subject=assessment.id, actor=actor, at=now, payload={
        "assessment_id": assessment.id, "return_id": assessment.return_id, "inspected_at": at, "outcome": outcome,
        "notes": notes, "label": label, "labelled_at": chain.utc_text(known), "reason": reason,
        "case_id": assessment.case_id})
    row = Inspection(return_id=assessment.return_id, inspected_at=inspected_at, outcome=outcome, notes=notes,
                     actor=actor, received_at=now, event_seq=event.seq)
    uow.session.add(row)
    if label is not None:
        uow.session.add(Label(return_id=assessment.return_id, label=label, labelled_at=known,
                              source="inspection", reason=reason, case_id=assessment.case_id, actor=actor,
                              event_seq=event.seq))
    return row


def _decide(uow: UnitOfWork, outbox: Outbox, assessment: Assessment, request: dict[str, Any], outcome: str,
            feedback: Feedback, actor: str, now: dt.datetime) -> None:
    """The case and the outcome OUTCOME gives the inspected return (see the module's table)."""
    current = outcomes.state(uow.session, assessment, request["model_decision"])
    decided = effect(outcome, request["return_type"])
    if outcome != "ok" and decided != ("final", "approve"):
        links = outcomes.links_of(assessment, request, feedback.hub_customers)
        cases.attach(uow, assessment, decision="deny" if outcome in FAILED else "review", reason="failed inspection",
                     links=links, actor=actor, why=f"inspection: {outcome}", at=now)
    if current.status != "pending_inspection":
        return
    status, decision = decided or ("pending_review", "review")
    if decided == ("final", "deny"):
        decision = feedback.confirmed_bad  # failed goods are confirmed bad: the retailer's decision for those
    new = State(status, decision, now, "inspection", LABELS.get(outcome))
    outcomes.change(uow, outbox, assessment, new, actor=actor, cause="inspection", feedback=feedback,
                    model_decision=request["model_decision"])


def _result(uow: UnitOfWork, assessment: Assessment, request: dict[str, Any], row: Inspection, feedback: Feedback,
            replayed: bool = False) -> InspectionResult:
    uow.session.flush()
    now_state = outcomes.state(uow.session, assessment, request["model_decision"])
    return InspectionResult(row.return_id, assessment.id, chain.utc_text(row.inspected_at), row.outcome, row.notes,
                            LABELS.get(row.outcome), assessment.case_id, now_state.view(feedback.messages), replayed)
