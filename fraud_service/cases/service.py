"""The case service: the analysts' queue, every change to a case, and the rule by which assessments form cases.

A case is opened when an assessment needs a human (`review`, `deny`): it joins the open case linked
to its customer or one of its tokens, or opens one (`join_or_open`, applied by the evidence writer
inside the assessment's own transaction). From then on people work it here; each change (status,
assignee, note, disposition, reopening) is written with its evidence event (actor, time, previous
and new value) in one unit of work. The chain head is locked first, so changes to cases are
serialised with every other writer of the chain (two analysts asking for "the next case" at once
get two different cases). A closed case cannot be changed, only reopened.

Closing records `fraud`, `abuse` or `legit` per return, with a reason, as labels in the data
contract's form (source `analyst`, `labelled_at` = now); `fraud-service labels sync` (run by
`train` and `features build`) copies them into the warehouse, where training and features read them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from fraud_service.access.users import assignee_in, mark_disabled
from fraud_service.cases.records import (
    ACTIVE,
    DECISIONS,
    DEFAULT_SLA_HOURS,
    LABELS,
    SORTS,
    STATUSES,
    CaseAssessment,
    CaseDetail,
    CaseStatus,
    CaseSummary,
    EventRecord,
    LabelRecord,
    NoteRecord,
    QueueFilter,
    QueuePage,
)
from fraud_service.data.contract import hidden_character, shown_text_problem, shows_nothing, utc_instant
from fraud_service.errors import CaseConflict, CaseNotFound, Problem, RequestInvalid, TimeOutOfRange
from fraud_service.feedback import outcomes
from fraud_service.feedback.outcomes import Feedback
from fraud_service.feedback.webhooks import Outbox, wake
from fraud_service.store import chain, locks
from fraud_service.store.schema import Assessment, Case, CaseLink, CaseNote, EvidenceEvent, Label, User
from fraud_service.store.uow import UnitOfWork

MAX_NOTE = 10_000
MAX_REASON = 2_000
MAX_BULK = 500
PAGE = 100
"""Assessments a case page or `GET /v1/cases/ID` shows at a time (a case can gather thousands)."""
AFTER_ANSWER = ("inspection", "outcome_changed")
"""Events about a case's assessments after their first answer, shown (and bundled) with the case."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the join-or-open rule -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flagged:
    """An assessment that needs a human, as the case rule sees it."""

    assessment_id: str
    return_id: str
    customer_id: str
    decision: str
    score: float
    refund_amount: float
    reason: str
    links: tuple[tuple[str, str], ...]  # (entity, value), sorted


@dataclass(frozen=True)
class CaseChoice:
    """Which case a flagged assessment joins (None: it opens a new one) and the links that tied it there."""

    case_id: str | None
    linked_by: tuple[str, ...]


def join_or_open(flagged: Flagged, open_linked: Sequence[tuple[str, str, str]],
                 batch: Mapping[tuple[str, str], str]) -> CaseChoice:
    """The case FLAGGED joins: a case of the same batch linked to it first, else the earliest opened of the
    not-closed cases linked to it (OPEN_LINKED: case id, entity, value, earliest opened first), else none."""
    case_id = next((batch[p] for p in flagged.links if p in batch), None)
    if case_id is not None:
        return CaseChoice(case_id, tuple(f"{e}:{v}" for e, v in flagged.links if batch.get((e, v)) == case_id))
    if not open_linked:
        return CaseChoice(None, ())
    first = open_linked[0][0]
    return CaseChoice(first, tuple(f"{e}:{v}" for c, e, v in open_linked if c == first))


def new_case(case_id: str, flagged: Flagged, at: dt.datetime) -> dict[str, Any]:
    """The row of the case FLAGGED opens."""
    return {"id": case_id, "status": CaseStatus.OPEN.value, "opened_at": at, "updated_at": at,
            "customer_id": flagged.customer_id, "assignee": None, "decision": flagged.decision,
            "max_score": flagged.score, "amount": flagged.refund_amount, "assessments": 1,
            "reason": flagged.reason, "closed_at": None, "appealed_at": None}


def joined_case(current: Mapping[str, Any], flagged: Flagged, at: dt.datetime) -> dict[str, Any]:
    """The totals of a case after FLAGGED joins it: one more assessment, its money added, the riskiest score (and
    that assessment's reason), and `deny` once any of its assessments is denied."""
    riskier = flagged.score > current["max_score"]
    return {"updated_at": at, "assessments": current["assessments"] + 1,
            "amount": current["amount"] + flagged.refund_amount,
            "max_score": flagged.score if riskier else current["max_score"],
            "reason": flagged.reason if riskier else current["reason"],
            "decision": "deny" if flagged.decision == "deny" else current["decision"]}


def case_event(kind: str, case_id: str, flagged: Flagged, choice: CaseChoice) -> dict[str, Any]:
    """The payload of the `case_opened` / `case_joined` evidence event."""
    return {"kind": kind, "case_id": case_id, "assessment_id": flagged.assessment_id,
            "return_id": flagged.return_id, "customer_id": flagged.customer_id, "decision": flagged.decision,
            "score": flagged.score, "refund_amount": flagged.refund_amount,
            "links": [f"{e}:{v}" for e, v in flagged.links],
            **({"linked_by": list(choice.linked_by)} if kind == "case_joined" else {})}


def attach(uow: UnitOfWork, assessment: Assessment, *, decision: str, reason: str, links: Mapping[str, str],
           actor: str, why: str, at: dt.datetime, unassign: bool = False) -> tuple[Case, str]:
    """Put ASSESSMENT in front of a person after its first answer (a failed inspection, an appeal): its own case
    (reopened when closed, with WHY), else the earliest opened case not closed that is linked to one of LINKS
    (entity -> value), else a new case. The case, and what happened: case_reopened, case_joined, case_opened,
    or "" when it was in an active case already. With UNASSIGN, a case reopened goes to nobody (so `Next case`
    hands it out: an appeal). The caller holds the chain lock."""
    if assessment.case_id is not None:
        case = uow.session.get(Case, assessment.case_id, with_for_update=True, populate_existing=True)
        assert case is not None
        if CaseStatus(case.status) is not CaseStatus.CLOSED:
            return case, ""
        _reopen(uow, case, actor, why, at, unassign=unassign)
        return case, "case_reopened"
    flagged = Flagged(assessment.id, assessment.return_id, assessment.customer_id, decision, assessment.score,
                      assessment.refund_amount, reason, tuple(sorted(links.items())))
    locks.hold(uow.session, flagged.links)  # as the evidence writer does: no other case opens for them meanwhile
    match = [(CaseLink.entity == e) & (CaseLink.value == v) for e, v in flagged.links]
    linked = uow.session.execute(
        select(CaseLink.case_id, CaseLink.entity, CaseLink.value).join(Case, Case.id == CaseLink.case_id)
        .where(Case.status != CaseStatus.CLOSED.value, or_(*match)).order_by(Case.opened_at, Case.id)).all()
    choice = join_or_open(flagged, [(c, e, v) for c, e, v in linked], {})
    joined = None if choice.case_id is None else uow.session.get(Case, choice.case_id, with_for_update=True,
                                                                 populate_existing=True)
    if joined is None:
        kind = "case_opened"
        case = Case(**new_case(f"cas_{uuid.uuid4().hex[:20]}", flagged, at))
        uow.session.add(case)
    else:
        kind, case = "case_joined", joined
        current = {"assessments": case.assessments, "amount": case.amount, "max_score": case.max_score,
                   "reason": case.reason, "decision": case.decision}
        for name, value in joined_case(current, flagged, at).items():
            setattr(case, name, value)
    uow.session.flush()
    have = {(e, v) for e, v in uow.session.execute(select(CaseLink.entity, CaseLink.value)
                                                   .where(CaseLink.case_id == case.id))}
    uow.session.add_all([CaseLink(case_id=case.id, entity=e, value=v) for e, v in flagged.links if (e, v) not in have])
    assessment.case_id = case.id
    _record(uow, case, kind, actor, {**case_event(kind, case.id, flagged, choice), "why": why}, at)
    return case, kind


# -- reading -------------------------------------------------------------------------------------------------


def summary(case: Case, now: dt.datetime, sla_hours: float = DEFAULT_SLA_HOURS) -> CaseSummary:
    """A case as the queue and the API show it: with its priority, age and SLA flag."""
    opened = chain.aware(case.opened_at)
    age_hours = max((now - opened).total_seconds() / 3600.0, 0.0)
    return CaseSummary(
        case_id=case.id, status=CaseStatus(case.status), assignee=case.assignee, customer_id=case.customer_id,
        decision=case.decision, reason=case.reason, max_score=round(case.max_score, 6), amount=round(case.amount, 2),
        priority=round(case.max_score * case.amount, 2), assessments=case.assessments,
        opened_at=chain.utc_text(opened), updated_at=chain.utc_text(case.updated_at),
        closed_at=chain.utc_text(case.closed_at) if case.closed_at else None, age_hours=round(age_hours, 1),
        overdue=case.status != CaseStatus.CLOSED and age_hours > sla_hours,
        appealed_at=chain.utc_text(case.appealed_at) if case.appealed_at else None)


def check_filter(f: QueueFilter) -> None:
    """Raise RequestInvalid listing every bad field of a queue filter."""
    problems = []
    bad = [s for s in f.statuses if s not in STATUSES]
    if bad or not f.statuses:
        problems.append(Problem("status", f"got {', '.join(bad) or 'nothing'}",
                                "one or more of " + ", ".join(STATUSES)))
    if f.sort not in SORTS:
        problems.append(Problem("sort", f"got {f.sort!r}", "one of " + ", ".join(SORTS)))
    if f.decision is not None and f.decision not in DECISIONS:  # it filtered every case out, answering 200
        problems.append(Problem("decision", f"got {f.decision!r}", "one of " + ", ".join(DECISIONS)))
    if not 1 <= f.limit <= 500:
        problems.append(Problem("limit", f"got {f.limit}", "an integer from 1 to 500"))
    if not 0 <= f.offset <= 2**62:
        problems.append(Problem("offset", f"got {f.offset}", "an integer from 0 to 2**62"))
    if f.min_amount is not None and not f.min_amount >= 0:
        problems.append(Problem("min_amount", f"got {f.min_amount}", "a number >= 0"))
    if problems:
        raise RequestInvalid(problems)


def _filtered(f: QueueFilter) -> Select[Any]:
    query = select(Case).where(Case.status.in_(f.statuses))
    if f.assignee == "none":
        query = query.where(Case.assignee.is_(None))
    elif f.assignee:
        query = query.where(Case.assignee == f.assignee)
    if f.decision:
        query = query.where(Case.decision == f.decision)
    if f.reason:
        query = query.where(Case.reason == f.reason)
    if f.min_amount is not None:
        query = query.where(Case.amount >= f.min_amount)
    return query


def filtered(f: QueueFilter) -> Select[Any]:
    """The cases F selects, unordered (named queues build on it: `cases.queues`)."""
    return _filtered(f)


def priority_order() -> tuple[Any, ...]:
    """The queue's default order: appealed first, then by expected loss (score x money at stake), oldest first."""
    return _ORDER["priority"]()


_ORDER = {
    "priority": lambda: (Case.appealed_at.is_(None), -(Case.max_score * Case.amount), Case.opened_at, Case.id),
    "score": lambda: (Case.max_score.desc(), Case.opened_at, Case.id),
    "amount": lambda: (Case.amount.desc(), Case.opened_at, Case.id),
    "age": lambda: (Case.opened_at, Case.id),
}


def queue(uow: UnitOfWork, *, f: QueueFilter, now: dt.datetime | None = None,
          sla_hours: float = DEFAULT_SLA_HOURS) -> QueuePage:
    """Cases matching F, riskiest first: by expected loss (highest score times money at stake) unless F sorts
    otherwise, with cases a shopper appealed ahead of all others; ties go to the oldest."""
    check_filter(f)
    now = now or _now()
    with uow.read():
        base = _filtered(f)
        total = uow.session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        rows = uow.session.execute(base.order_by(*_ORDER[f.sort]()).limit(f.limit).offset(f.offset)).scalars().all()
        labels = _labels_in_force(uow.session, [c.id for c in rows if c.status == CaseStatus.CLOSED])
        return QueuePage([dataclasses.replace(summary(c, now, sla_hours), labels=labels.get(c.id))
                          if c.status == CaseStatus.CLOSED else summary(c, now, sla_hours) for c in rows], total, f)


def _labels_in_force(session: Session, case_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per closed case, how many of its returns carry each label (the latest given in that case, per return)."""
    latest: dict[tuple[str | None, str], str] = {}
    if case_ids:
        for case_id, return_id, label in session.execute(
                select(Label.case_id, Label.return_id, Label.label).where(Label.case_id.in_(case_ids))
                .order_by(Label.labelled_at, Label.id)):
            latest[(case_id, return_id)] = label
    out: dict[str, dict[str, int]] = {}
    for (case_id, _), label in latest.items():
        counts = out.setdefault(str(case_id), {})
        counts[label] = counts.get(label, 0) + 1
    return {c: dict(sorted(v.items())) for c, v in out.items()}


def filter_choices(uow: UnitOfWork) -> tuple[list[str], list[str]]:
    """The reasons and the assignees of cases not closed (the queue's filters offer these)."""
    with uow.read():
        reasons = uow.session.execute(select(Case.reason).where(Case.status.in_(ACTIVE)).distinct()).scalars()
        people = uow.session.execute(select(Case.assignee).where(Case.status.in_(ACTIVE)).distinct()).scalars()
        return sorted(r for r in reasons if r), sorted(p for p in people if p)


def get(uow: UnitOfWork, *, case_id: str, now: dt.datetime | None = None, offset: int = 0,
        sla_hours: float = DEFAULT_SLA_HOURS) -> CaseDetail:
    """Everything about a case: summary, links, a page of its assessments with their evidence (PAGE from OFFSET),
    notes, labels, events."""
    with uow.read():
        return detail(uow.session, case_id, now or _now(), sla_hours, offset=offset, limit=PAGE)


def detail(session: Session, case_id: str, now: dt.datetime, sla_hours: float = DEFAULT_SLA_HOURS, *,
           offset: int = 0, limit: int | None = None) -> CaseDetail:
    """`get` inside a transaction the caller holds (an export reads the case and records itself in one); every
    assessment unless LIMIT."""
    if not 0 <= offset <= 2**62:
        raise RequestInvalid([Problem("assessments_offset", f"got {offset}", "an integer from 0 to 2**62")])
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFound(f"no case {case_id!r}")
    links = session.execute(select(CaseLink.entity, CaseLink.value).where(CaseLink.case_id == case_id)
                            .order_by(CaseLink.entity, CaseLink.value)).all()
    total = session.execute(select(func.count()).select_from(Assessment)
                            .where(Assessment.case_id == case_id)).scalar_one()
    page = (select(Assessment, EvidenceEvent.payload).join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
            .where(Assessment.case_id == case_id).order_by(Assessment.created_at, Assessment.id).offset(offset))
    rows = session.execute(page if limit is None else page.limit(limit)).all()
    notes = session.execute(select(CaseNote).where(CaseNote.case_id == case_id)
                            .order_by(CaseNote.created_at, CaseNote.id)).scalars().all()
    labels = [_label(x) for x in session.execute(select(Label).where(Label.case_id == case_id)
                                                 .order_by(Label.labelled_at, Label.id)).scalars()]
    seqs = [a.event_seq for a, _ in rows] + [n.event_seq for n in notes]
    own = EvidenceEvent.subject == case_id
    if limit is not None and total > limit:  # a page of a big case: its own changes, not a join per assessment
        own = own & (EvidenceEvent.kind != "case_joined")
    later = EvidenceEvent.subject.in_([a.id for a, _ in rows]) & EvidenceEvent.kind.in_(AFTER_ANSWER)
    events = session.execute(select(EvidenceEvent).where(own | later | EvidenceEvent.seq.in_(seqs))  # in time order:
                             .order_by(EvidenceEvent.at, EvidenceEvent.seq)).scalars()  # numbers span chains
    latest = {label.return_id: label for label in labels}
    return CaseDetail(
        summary=summary(case, now, sla_hours), links=[(e, v) for e, v in links],
        assessments=[_assessment(a, json.loads(payload), latest.get(a.return_id)) for a, payload in rows],
        notes=[NoteRecord(n.author, n.body, chain.utc_text(n.created_at), n.event_seq) for n in notes],
        labels=labels, events=[event_record(e) for e in events], assessments_total=int(total),
        assessments_offset=offset)


def _assessment(a: Assessment, record: dict[str, Any], label: LabelRecord | None) -> CaseAssessment:
    return CaseAssessment(
        assessment_id=a.id, return_id=a.return_id, customer_id=a.customer_id,
        assessed_at=chain.utc_text(a.created_at), score=a.score, decision=a.decision, risk_level=a.risk_level,
        refund_amount=a.refund_amount, model_version=a.model_version, policy_version=a.policy_version,
        event_seq=a.event_seq, request=record["request"], features=record["features"],
        feature_times=record.get("feature_times", {}), raw_score=record.get("raw_score"),
        contributions=record.get("contributions"), reasons=record["response"]["reasons"],
        rules_fired=record["response"]["rules_fired"], label=label)


# -- changing ------------------------------------------------------------------------------------------------


def claim(uow: UnitOfWork, *, case_id: str, actor: str, now: dt.datetime | None = None) -> CaseSummary:
    """Assign the case to ACTOR (it moves to in_review when open); another's case is not taken silently."""
    now = now or _now()
    with uow:
        case = _locked(uow, case_id)
        if case.assignee not in (None, actor):
            raise CaseConflict(f"case {case_id} is assigned to {case.assignee}; reassign it instead")
        _claim(uow, case, actor, now)
        uow.commit()
        return summary(case, now)


def next_case(uow: UnitOfWork, *, actor: str, now: dt.datetime | None = None) -> CaseSummary | None:
    """Claim the highest-priority open case nobody has: the analyst's "give me the next case"; None when none."""
    now = now or _now()
    with uow:
        uow.lock_chain()
        case = uow.session.execute(_filtered(QueueFilter(statuses=(CaseStatus.OPEN.value,), assignee="none"))
                                   .order_by(*_ORDER["priority"]()).limit(1)).scalar_one_or_none()
        if case is None:
            return None
        _claim(uow, case, actor, now)
        uow.commit()
        return summary(case, now)


def _claim(uow: UnitOfWork, case: Case, actor: str, now: dt.datetime) -> None:
    if _disabled(uow.session, actor):  # disabled after their page checked the session, before the lock was theirs
        raise CaseConflict(f"{actor} is disabled: they can take no case")
    changes: dict[str, list[Any]] = {}
    if case.assignee != actor:
        changes["assignee"] = [case.assignee, actor]
        case.assignee = actor
    if case.status == CaseStatus.OPEN:
        changes["status"] = _move(case, CaseStatus.IN_REVIEW)
    if changes:
        _record(uow, case, "case_claimed", actor, {"changes": changes}, now)


def assign(uow: UnitOfWork, *, case_id: str, assignee: object, actor: str,
           now: dt.datetime | None = None) -> CaseSummary:
    """Give the case to ASSIGNEE, the name of an active user (`ana` or `user:ana`), or to nobody (None)."""
    now = now or _now()
    with uow:
        assignee = assignee_in(uow.session, assignee)
        case = _locked(uow, case_id)
        give(uow, case, assignee, actor=actor, now=now)
        uow.commit()
        return summary(case, now)


def give(uow: UnitOfWork, case: Case, assignee: str | None, *, actor: str, now: dt.datetime,
         why: Mapping[str, Any] | None = None, back_to_open: bool = False) -> bool:
    """`assign` inside a transaction the caller holds with the chain locked (the assigner's sweep): CASE to the
    actor ASSIGNEE or to nobody, a `case_assigned` event (with WHY added to its payload); False when it had it.
    BACK_TO_OPEN: a case in review goes back to open in the same event (nobody reviews it any more)."""
    if case.assignee == assignee:
        return False
    changes: dict[str, list[str | None]] = {"assignee": [case.assignee, assignee]}
    case.assignee = assignee
    if back_to_open and case.status == CaseStatus.IN_REVIEW.value:
        before, after = _move(case, CaseStatus.OPEN)
        changes["status"] = [before, after]
    _record(uow, case, "case_assigned", actor, {"changes": changes, **(why or {})}, now)
    return True


def _disabled(session: Session, assignee: str | None) -> bool:
    """Whether ASSIGNEE is a person who was disabled (a closed case keeps who decided it)."""
    if assignee is None or not assignee.startswith("user:"):
        return False
    user = session.get(User, assignee.removeprefix("user:"))
    return user is not None and user.disabled_at is not None


def disable_user(uow: UnitOfWork, name: str, actor: str, now: dt.datetime | None = None) -> list[str]:
    """Disable the user NAME and, in the same transaction, take back every case not closed they hold (to nobody,
    and a case they were reviewing back to open: "next case" and the queues' sweeps hand it out again). The ids of
    the cases taken back, by id; none when NAME was already disabled. A closed case keeps its last assignee (who
    decided it); reopened, it goes to nobody (`reopen`)."""
    now = now or _now()
    with uow:
        uow.lock_chain()
        released: list[str] = []
        if mark_disabled(uow, name, actor, now):
            held = uow.session.execute(select(Case).where(Case.assignee == f"user:{name}", Case.status.in_(ACTIVE))
                                       .order_by(Case.id)).scalars().all()
            for case in held:
                give(uow, case, None, actor=actor, now=now, why={"why": "user_disabled"}, back_to_open=True)
                released.append(case.id)
        uow.commit()
    return released


def set_status(uow: UnitOfWork, *, case_id: str, status: str, actor: str, comment: str = "",
               now: dt.datetime | None = None) -> CaseSummary:
    """Move the case to STATUS when the move is allowed (`CaseStatus.manual_moves`)."""
    target = CaseStatus.parse(status)
    if target is CaseStatus.CLOSED:
        raise CaseConflict("a case is closed with a label for each of its returns (the close form, or POST "
                           "/v1/cases/ID/close), not by a change of status")
    # the API's schema bounds it too; a form reaches this with whatever was typed
    comment = free_text(comment, "comment", MAX_REASON, f"at most {MAX_REASON:,} characters") \
        if not shows_nothing(comment) else ""
    now = now or _now()
    with uow:
        case = _locked(uow, case_id)
        current = CaseStatus(case.status)
        if current is not target:
            if target not in current.manual_moves():
                raise CaseConflict(f"case {case_id} is {current}; it can move to "
                                   f"{', '.join(current.manual_moves())}, not {target}")
            _record(uow, case, "case_status", actor, {"changes": {"status": _move(case, target)},
                                                      "comment": comment}, now)
        uow.commit()
        return summary(case, now)


def add_note(uow: UnitOfWork, *, case_id: str, body: str, actor: str, now: dt.datetime | None = None) -> NoteRecord:
    """Add a note (kept in the case and in the evidence event)."""
    text = free_text(body, "body", MAX_NOTE, f"a note of 1 to {MAX_NOTE:,} characters")
    with uow:
        case = _locked(uow, case_id)
        event = _record(uow, case, "case_note", actor, {"note": text}, now or _now())
        uow.session.add(CaseNote(case_id=case_id, author=actor, body=text, created_at=event.at,
                                 event_seq=event.seq))
        uow.commit()
        return NoteRecord(actor, text, chain.utc_text(event.at), event.seq)


def close(uow: UnitOfWork, *, case_id: str, dispositions: Mapping[str, str] | None, reason: str, actor: str,
          label: str | None = None, now: dt.datetime | None = None, feedback: Feedback | None = None,
          unchanged_since: str | None = None) -> CaseSummary:
    """Close the case with a label for every one of its returns (DISPOSITIONS: return_id -> label), or with
    LABEL for all of them when DISPOSITIONS is None. Each return's outcome becomes final (FEEDBACK: the decision
    for confirmed bad returns, the shopper's texts), and the returns system hears of it (`assessment.outcome`
    per changed outcome, `case.closed`). UNCHANGED_SINCE, the case's `updated_at` as the closer saw it, refuses
    the close when the case changed since (an appeal, a new return: the closer decided without seeing it)."""
    now, feedback = now or _now(), feedback or Feedback()
    seen = _instant(unchanged_since, "unchanged_since") if unchanged_since is not None else None
    with uow:
        case = _locked(uow, case_id)
        if seen is not None and seen != chain.aware(case.updated_at):
            raise CaseConflict(f"case {case_id} changed at {chain.utc_text(case.updated_at)}, after the page you "
                               "decided on was loaded; reload it and decide again (nothing was closed)")
        _close(uow, Outbox(uow.session, now, feedback.retry_hours), case, dispositions, _reason(reason), actor, label,
               now, feedback)
        uow.commit()
    wake()
    return summary(case, now)


def bulk_close(uow: UnitOfWork, *, case_ids: Sequence[str], label: str, reason: str, actor: str,
               now: dt.datetime | None = None, feedback: Feedback | None = None,
               unchanged_since: str | None = None, unchanged: Mapping[str, str] | None = None) -> list[CaseSummary]:
    """Close several cases (a ring) with one label for all their returns, all or none. UNCHANGED (case id -> its
    `updated_at` as the closer saw it, for every case) refuses them all when any changed since (an appeal, a new
    return). UNCHANGED_SINCE, when the closer's page was loaded, is a coarser check: a change stamps its time before
    it commits, so one committed while the page loaded can carry an earlier time and pass it."""
    if not case_ids or len(case_ids) > MAX_BULK or len(set(case_ids)) != len(case_ids):
        raise RequestInvalid([Problem("case_ids", f"got {len(case_ids)} ids", f"1 to {MAX_BULK} distinct case ids")])
    now, feedback = now or _now(), feedback or Feedback()
    seen = _instant(unchanged_since, "unchanged_since") if unchanged_since is not None else None
    versions = _versions(case_ids, unchanged) if unchanged is not None else {}
    with uow:
        out = []
        outbox = Outbox(uow.session, now, feedback.retry_hours)
        locked = {case_id: _locked(uow, case_id) for case_id in sorted(case_ids)}  # in the order writers lock them
        changed = sorted(c for c, case in locked.items() if (seen is not None and chain.aware(case.updated_at) > seen)
                         or (c in versions and chain.aware(case.updated_at) != versions[c]))
        if changed:
            raise CaseConflict(f"case(s) {', '.join(changed)} changed since you saw them (now "
                               + ", ".join(f"{c} at {chain.utc_text(locked[c].updated_at)}" for c in changed[:5])
                               + "); reload them and decide again (nothing was closed)")
        for case_id in case_ids:
            case = locked[case_id]
            _close(uow, outbox, case, None, _reason(reason), actor, label, now, feedback, bulk=len(case_ids))
            out.append(summary(case, now))
        uow.commit()
    wake()
    return out


def reopen(uow: UnitOfWork, *, case_id: str, reason: str, actor: str, now: dt.datetime | None = None) -> CaseSummary:
    """Open a closed case again (its labels stand until it is closed again with new ones)."""
    text = _reason(reason)
    now = now or _now()
    with uow:
        case = _locked(uow, case_id, closed_ok=True)
        if CaseStatus(case.status) is not CaseStatus.CLOSED:
            raise CaseConflict(f"case {case_id} is {case.status}, not closed: there is nothing to reopen")
        _reopen(uow, case, actor, text, now)
        uow.commit()
        return summary(case, now)


def _reopen(uow: UnitOfWork, case: Case, actor: str, reason: str, at: dt.datetime, unassign: bool = False) -> None:
    """Open the closed CASE again, with its `case_reopened` event; to nobody with UNASSIGN, or when who decided it
    was disabled since."""
    changes: dict[str, list[str | None]] = {"status": list(_move(case, CaseStatus.OPEN))}
    if case.assignee is not None and (unassign or _disabled(uow.session, case.assignee)):
        changes["assignee"] = [case.assignee, None]
        case.assignee = None
    case.closed_at = None
    _record(uow, case, "case_reopened", actor, {"changes": changes, "reason": reason}, at)


def _close(uow: UnitOfWork, outbox: Outbox, case: Case, dispositions: Mapping[str, str] | None, text: str,
           actor: str, label: str | None, now: dt.datetime, feedback: Feedback, bulk: int | None = None) -> None:
    members = list(uow.session.execute(select(Assessment).where(Assessment.case_id == case.id)
                                       .order_by(Assessment.return_id)).scalars())
    returns = [a.return_id for a in members]
    chosen: Mapping[str, str | None] = dict.fromkeys(returns, label) if dispositions is None else dispositions
    _check_dispositions(returns, chosen)
    labels = [{"return_id": r, "label": chosen[r], "labelled_at": chain.utc_text(now), "source": "analyst"}
              for r in returns]
    payload: dict[str, Any] = {"changes": {"status": _move(case, CaseStatus.CLOSED)}, "reason": text,
                               "labels": labels}
    if bulk:
        payload["bulk"] = bulk
    case.closed_at, case.appealed_at = now, None
    event = _record(uow, case, "case_closed", actor, payload, now)
    for item in labels:
        uow.session.add(Label(return_id=item["return_id"], label=item["label"], labelled_at=now, source="analyst",
                              reason=text, case_id=case.id, actor=actor, event_seq=event.seq))
    decided = []
    answers = uow.session.execute(select(Assessment.id, EvidenceEvent.payload)
                                  .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                  .where(Assessment.case_id == case.id)).all()
    model_decisions = {a: json.loads(p)["response"].get("model_decision") for a, p in answers}  # one read, not N
    for assessment in members:
        final = outcomes.labelled(str(chosen[assessment.return_id]), now, actor, feedback)
        outcomes.change(uow, outbox, assessment, final, actor=actor, cause="case_closed", feedback=feedback,
                        model_decision=model_decisions.get(assessment.id) or assessment.decision)
        decided.append({"return_id": assessment.return_id, "assessment_id": assessment.id, "label": final.label,
                        "decision": final.decision})
    outbox.emit("case.closed", {"case_id": case.id, "closed_at": chain.utc_text(now), "closed_by": actor,
                                "returns": decided})


def _check_dispositions(returns: list[str], chosen: Mapping[str, str | None]) -> None:
    problems = [Problem(f"dispositions.{r}", "missing", "fraud, abuse or legit") for r in returns if r not in chosen]
    for return_id, given in chosen.items():
        if return_id not in returns:
            problems.append(Problem(f"dispositions.{return_id}", "is not a return of this case",
                                    "one of " + ", ".join(returns)))
        elif given not in LABELS:
            problems.append(Problem(f"dispositions.{return_id}", f"got {given!r}", "fraud, abuse or legit"))
    if problems:
        raise RequestInvalid(problems)


def _move(case: Case, target: CaseStatus) -> list[str]:
    """Move CASE to TARGET when its status allows it; the change as [before, after]."""
    current = CaseStatus(case.status)
    if not current.can_become(target):
        raise CaseConflict(f"case {case.id} is {current}; it cannot become {target}")
    case.status = target.value
    return [current.value, target.value]


def _locked(uow: UnitOfWork, case_id: str, closed_ok: bool = False) -> Case:
    """The case, with the root chain locked (every change a person makes is serialised) and its row locked (an
    evidence writer joining an assessment to it waits, and one that has joined one is waited for: a close
    labels every assessment the case holds); closed cases only when CLOSED_OK."""
    uow.lock_chain()
    case = uow.session.get(Case, case_id, with_for_update=True, populate_existing=True)
    if case is None:
        raise CaseNotFound(f"no case {case_id!r}")
    if case.status == CaseStatus.CLOSED and not closed_ok:
        raise CaseConflict(f"case {case_id} is closed; reopen it to change it")
    return case


def _record(uow: UnitOfWork, case: Case, kind: str, actor: str, payload: dict[str, Any],
            at: dt.datetime) -> EvidenceEvent:
    case.updated_at = at
    return uow.record(kind=kind, subject=case.id, actor=actor, at=at, payload={"case_id": case.id, **payload})


def _versions(case_ids: Sequence[str], unchanged: Mapping[str, str]) -> dict[str, dt.datetime]:
    """UNCHANGED's time for each of CASE_IDS, or RequestInvalid naming `unchanged` (a case missing, or one not among
    CASE_IDS) or the case whose time is not one."""
    missing, extra = [c for c in case_ids if c not in unchanged], sorted(set(unchanged) - set(case_ids))
    if missing or extra:
        raise RequestInvalid([Problem("unchanged", f"lacks {', '.join(missing[:5])}" if missing else
                                      f"names cases not in case_ids: {', '.join(extra[:5])}",
                                      "every case of case_ids, and only those -> its updated_at as you saw it")])
    return {c: _instant(unchanged[c], f"unchanged.{c}") for c in case_ids}


def _instant(text: str, field_name: str) -> dt.datetime:
    """TEXT as an aware time (naive is UTC), or RequestInvalid naming FIELD_NAME."""
    try:
        return utc_instant(text)
    except ValueError as exc:
        problem = str(exc) if isinstance(exc, TimeOutOfRange) else f"got {text[:80]!r}"
        raise RequestInvalid([Problem(field_name, problem, "an ISO 8601 time: the case's updated_at as you saw "
                                                           "it")]) from None


def _reason(reason: str) -> str:
    return free_text(reason, "reason", MAX_REASON, f"why, in 1 to {MAX_REASON:,} characters")


def free_text(value: object, field_name: str, limit: int, expected: str) -> str:
    """VALUE stripped, or RequestInvalid naming FIELD_NAME: empty, over LIMIT characters, showing nothing, or not
    storable (notes, reasons, comments, a shopper's appeal)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > limit:
        raise RequestInvalid([Problem(field_name, f"got {len(text)} characters", expected)])
    if shows_nothing(text):  # zero-width spaces: a note or reason nobody can read
        raise RequestInvalid([Problem(field_name, f"shows nothing (only spaces or invisible characters: "
                                                  f"{hidden_character(text) or 'white space'})", expected)])
    if (found := shown_text_problem(text)) is not None:  # what an analyst reads must be what was written
        raise RequestInvalid([Problem(field_name, *found)])
    return text


def _label(label: Label) -> LabelRecord:
    return LabelRecord(label.return_id, label.label, chain.utc_text(label.labelled_at), label.source, label.reason,
                       label.actor, label.case_id)


def event_record(e: EvidenceEvent) -> EventRecord:
    """An evidence event as stored."""
    return EventRecord(e.seq, e.chain, e.position, chain.utc_text(e.at), e.kind, e.subject, e.actor, e.payload,
                       e.prev_hash, e.hash)
