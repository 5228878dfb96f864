"""Investigations: the analysts' queue and every change to a case, each recorded as an evidence event.

A case is opened by the evidence writer (an assessment that needs a human opens one or joins the
open case of a linked account). From then on people work it here:

    open ──► in_review ──► escalated            (and back: in_review ► open, escalated ► in_review)
      └──────────┴────────────┴──► closed ──► open   (closing labels every return; reopening is an event)

Each change (status, assignee, note, disposition, reopening) is written with its evidence event
(actor, time, previous and new value) in one transaction; the chain head is locked first, so
changes to cases are serialised with every other writer of the chain (two analysts asking for
"the next case" at once get two different cases). A closed case cannot be changed, only reopened.

Closing records `fraud`, `abuse` or `legit` per return, with a reason, as labels in the data
contract's form (source `analyst`, `labelled_at` = now); `fraud-service labels sync` (run by
`train` and `features build`) copies them into the warehouse, where training and features read them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from fraud_service.errors import FraudServiceError
from fraud_service.scoring.request import Problem, RequestInvalid
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, Case, CaseLink, CaseNote, EvidenceEvent, Label

STATUSES = ("open", "in_review", "escalated", "closed")
ACTIVE = ("open", "in_review", "escalated")
MOVES = {"open": ("in_review", "escalated"), "in_review": ("open", "escalated"), "escalated": ("in_review",)}
"""Status changes allowed by `set_status`; closing needs dispositions (`close`), a closed case only `reopen`s."""
LABELS = ("fraud", "abuse", "legit")
SORTS = ("priority", "score", "amount", "age")
MAX_NOTE = 10_000
MAX_REASON = 2_000
DEFAULT_SLA_HOURS = 48.0


class CaseError(FraudServiceError):
    """A case operation that cannot be done."""


class CaseNotFound(CaseError):
    """No case with that id."""


class CaseConflict(CaseError):
    """The case's state does not allow the change (a closed case, a move not allowed, claimed by someone else)."""


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows: statuses, assignee (`none` = unassigned), decision, reason, money at stake."""

    statuses: tuple[str, ...] = ACTIVE
    assignee: str | None = None
    decision: str | None = None
    reason: str | None = None
    min_amount: float | None = None
    sort: str = "priority"
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class QueuePage:
    cases: list[dict[str, Any]]
    total: int
    filter: QueueFilter = field(default_factory=QueueFilter)


def summary(case: Case, now: dt.datetime, sla_hours: float = DEFAULT_SLA_HOURS) -> dict[str, Any]:
    """A case as the queue and the API show it: with its priority, age and SLA flag."""
    opened = _aware(case.opened_at)
    age_hours = max((now - opened).total_seconds() / 3600.0, 0.0)
    return {
        "case_id": case.id, "status": case.status, "assignee": case.assignee, "customer_id": case.customer_id,
        "decision": case.decision, "reason": case.reason, "max_score": round(case.max_score, 6),
        "amount": round(case.amount, 2), "priority": round(case.max_score * case.amount, 2),
        "assessments": case.assessments, "opened_at": chain.utc_text(opened),
        "updated_at": chain.utc_text(case.updated_at),
        "closed_at": chain.utc_text(case.closed_at) if case.closed_at else None,
        "age_hours": round(age_hours, 1), "overdue": case.status != "closed" and age_hours > sla_hours,
    }


def _aware(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


def check_filter(f: QueueFilter) -> None:
    """Raise RequestInvalid listing every bad field of a queue filter."""
    problems = []
    bad = [s for s in f.statuses if s not in STATUSES]
    if bad or not f.statuses:
        problems.append(Problem("status", f"got {', '.join(bad) or 'nothing'}",
                                "one or more of " + ", ".join(STATUSES)))
    if f.sort not in SORTS:
        problems.append(Problem("sort", f"got {f.sort!r}", "one of " + ", ".join(SORTS)))
    if not 1 <= f.limit <= 500:
        problems.append(Problem("limit", f"got {f.limit}", "an integer from 1 to 500"))
    if f.offset < 0:
        problems.append(Problem("offset", f"got {f.offset}", "an integer >= 0"))
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


_ORDER = {
    "priority": lambda: (-(Case.max_score * Case.amount), Case.opened_at, Case.id),
    "score": lambda: (Case.max_score.desc(), Case.opened_at, Case.id),
    "amount": lambda: (Case.amount.desc(), Case.opened_at, Case.id),
    "age": lambda: (Case.opened_at, Case.id),
}


def queue(session: Session, f: QueueFilter, now: dt.datetime, sla_hours: float = DEFAULT_SLA_HOURS) -> QueuePage:
    """Cases matching F, riskiest first: by expected loss (highest score times money at stake) unless F sorts
    otherwise; ties go to the oldest."""
    check_filter(f)
    base = _filtered(f)
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = session.execute(base.order_by(*_ORDER[f.sort]()).limit(f.limit).offset(f.offset)).scalars()
    return QueuePage([summary(c, now, sla_hours) for c in rows], total, f)


def reasons_in_use(session: Session) -> list[str]:
    """The reasons of cases not closed (the queue's reason filter offers these)."""
    rows = session.execute(select(Case.reason).where(Case.status.in_(ACTIVE)).distinct()).scalars()
    return sorted(r for r in rows if r)


def assignees_in_use(session: Session) -> list[str]:
    rows = session.execute(select(Case.assignee).where(Case.status.in_(ACTIVE)).distinct()).scalars()
    return sorted(r for r in rows if r)


class Cases:
    """Changes to cases, each in its own transaction with its evidence event."""

    def __init__(self, sessions: Any, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 sla_hours: float = DEFAULT_SLA_HOURS) -> None:
        self.sessions = sessions
        self.clock = clock
        self.sla_hours = sla_hours

    def _summary(self, case: Case) -> dict[str, Any]:
        return summary(case, self.clock(), self.sla_hours)

    # -- reading ---------------------------------------------------------------------------------------------

    def queue(self, f: QueueFilter) -> QueuePage:
        with self.sessions() as session:
            return queue(session, f, self.clock(), self.sla_hours)

    def get(self, case_id: str) -> dict[str, Any]:
        """Everything about a case: summary, links, assessments with their evidence, notes, labels, events."""
        with self.sessions() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise CaseNotFound(f"no case {case_id!r}")
            links = session.execute(select(CaseLink.entity, CaseLink.value).where(CaseLink.case_id == case_id)
                                    .order_by(CaseLink.entity, CaseLink.value)).all()
            rows = session.execute(select(Assessment, EvidenceEvent.payload)
                                   .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                   .where(Assessment.case_id == case_id)
                                   .order_by(Assessment.created_at, Assessment.id)).all()
            notes = session.execute(select(CaseNote).where(CaseNote.case_id == case_id)
                                    .order_by(CaseNote.created_at, CaseNote.id)).scalars().all()
            labels = session.execute(select(Label).where(Label.case_id == case_id)
                                     .order_by(Label.labelled_at, Label.id)).scalars().all()
            seqs = [a.event_seq for a, _ in rows] + [n.event_seq for n in notes]
            events = session.execute(select(EvidenceEvent).where(
                (EvidenceEvent.subject == case_id) | EvidenceEvent.seq.in_(seqs)).order_by(EvidenceEvent.seq)
            ).scalars().all()
            latest: dict[str, Label] = {}
            for label in labels:
                latest[label.return_id] = label
            assessments = []
            for a, payload in rows:
                record = json.loads(payload)
                assessments.append({
                    "assessment_id": a.id, "return_id": a.return_id, "customer_id": a.customer_id,
                    "assessed_at": chain.utc_text(a.created_at), "score": a.score, "decision": a.decision,
                    "risk_level": a.risk_level, "refund_amount": a.refund_amount, "model_version": a.model_version,
                    "policy_version": a.policy_version, "event_seq": a.event_seq, "request": record["request"],
                    "features": record["features"], "feature_times": record.get("feature_times", {}),
                    "raw_score": record.get("raw_score"), "contributions": record.get("contributions"),
                    "reasons": record["response"]["reasons"], "rules_fired": record["response"]["rules_fired"],
                    "label": _label(latest[a.return_id]) if a.return_id in latest else None,
                })
            return {
                **self._summary(case),
                "links": [{"entity": e, "value": v} for e, v in links],
                "assessment_list": assessments,
                "notes": [{"author": n.author, "body": n.body, "created_at": chain.utc_text(n.created_at),
                           "event_seq": n.event_seq} for n in notes],
                "labels": [_label(x) for x in labels],
                "events": [event_dict(e) for e in events],
            }

    # -- changing --------------------------------------------------------------------------------------------

    def claim(self, case_id: str, actor: str) -> dict[str, Any]:
        """Assign the case to ACTOR (it moves to in_review when open); another's case is not taken silently."""
        with self.sessions.begin() as session:
            case = self._locked(session, case_id)
            if case.assignee not in (None, actor):
                raise CaseConflict(f"case {case_id} is assigned to {case.assignee}; reassign it instead")
            self._claim(session, case, actor)
            return self._summary(case)

    def next_case(self, actor: str) -> dict[str, Any] | None:
        """Claim the highest-priority open case nobody has: the analyst's "give me the next case"; None when none."""
        with self.sessions.begin() as session:
            chain.lock_head(session)
            case = session.execute(_filtered(QueueFilter(statuses=("open",), assignee="none"))
                                   .order_by(*_ORDER["priority"]()).limit(1)).scalar_one_or_none()
            if case is None:
                return None
            self._claim(session, case, actor)
            return self._summary(case)

    def _claim(self, session: Session, case: Case, actor: str) -> None:
        changes: dict[str, list[Any]] = {}
        if case.assignee != actor:
            changes["assignee"] = [case.assignee, actor]
            case.assignee = actor
        if case.status == "open":
            changes["status"] = ["open", "in_review"]
            case.status = "in_review"
        if changes:
            self._record(session, case, "case_claimed", actor, {"changes": changes})

    def assign(self, case_id: str, assignee: str | None, actor: str) -> dict[str, Any]:
        """Give the case to ASSIGNEE (None: nobody)."""
        with self.sessions.begin() as session:
            case = self._locked(session, case_id)
            if case.assignee != assignee:
                changes = {"assignee": [case.assignee, assignee]}
                case.assignee = assignee
                self._record(session, case, "case_assigned", actor, {"changes": changes})
            return self._summary(case)

    def set_status(self, case_id: str, status: str, actor: str, comment: str = "") -> dict[str, Any]:
        """Move the case to STATUS when the move is allowed (see MOVES)."""
        if status not in STATUSES:
            raise RequestInvalid([Problem("status", f"got {status!r}", "one of " + ", ".join(STATUSES))])
        if status == "closed":
            raise CaseConflict("close a case with a disposition for each return (POST /v1/cases/ID/close)")
        with self.sessions.begin() as session:
            case = self._locked(session, case_id)
            if case.status != status:
                if status not in MOVES[case.status]:
                    raise CaseConflict(f"case {case_id} is {case.status}; it can move to "
                                       f"{', '.join(MOVES[case.status])}, not {status}")
                changes = {"status": [case.status, status]}
                case.status = status
                self._record(session, case, "case_status", actor, {"changes": changes, "comment": comment})
            return self._summary(case)

    def add_note(self, case_id: str, body: str, actor: str) -> dict[str, Any]:
        """Add a note (kept in the case and in the evidence event)."""
        text = body.strip() if isinstance(body, str) else ""
        if not text or len(text) > MAX_NOTE:
            raise RequestInvalid([Problem("body", f"got {len(text)} characters",
                                          f"a note of 1 to {MAX_NOTE:,} characters")])
        with self.sessions.begin() as session:
            case = self._locked(session, case_id)
            event = self._record(session, case, "case_note", actor, {"note": text})
            note = CaseNote(case_id=case_id, author=actor, body=text, created_at=event.at, event_seq=event.seq)
            session.add(note)
            return {"author": actor, "body": text, "created_at": chain.utc_text(event.at), "event_seq": event.seq}

    def close(self, case_id: str, dispositions: Mapping[str, str] | None, reason: str, actor: str,
              label: str | None = None) -> dict[str, Any]:
        """Close the case with a label for every one of its returns (DISPOSITIONS: return_id -> label), or with
        LABEL for all of them when DISPOSITIONS is None."""
        with self.sessions.begin() as session:
            case = self._locked(session, case_id)
            self._close(session, case, dispositions, reason, actor, label)
            return self._summary(case)

    def bulk_close(self, case_ids: Sequence[str], label: str, reason: str, actor: str) -> list[dict[str, Any]]:
        """Close several cases (a ring) with one label for all their returns, all or none."""
        if not case_ids or len(case_ids) > 500 or len(set(case_ids)) != len(case_ids):
            raise RequestInvalid([Problem("case_ids", f"got {len(case_ids)} ids",
                                          "1 to 500 distinct case ids")])
        with self.sessions.begin() as session:
            out = []
            for case_id in case_ids:
                case = self._locked(session, case_id)
                self._close(session, case, None, reason, actor, label, bulk=len(case_ids))
                out.append(self._summary(case))
            return out

    def reopen(self, case_id: str, reason: str, actor: str) -> dict[str, Any]:
        """Open a closed case again (its labels stand until it is closed again with new ones)."""
        text = _reason(reason)
        with self.sessions.begin() as session:
            case = self._locked(session, case_id, closed_ok=True)
            if case.status != "closed":
                raise CaseConflict(f"case {case_id} is {case.status}, not closed: there is nothing to reopen")
            changes = {"status": ["closed", "open"]}
            case.status, case.closed_at = "open", None
            self._record(session, case, "case_reopened", actor, {"changes": changes, "reason": text})
            return self._summary(case)

    def _close(self, session: Session, case: Case, dispositions: Mapping[str, str] | None, reason: str, actor: str,
               label: str | None = None, bulk: int | None = None) -> None:
        text = _reason(reason)
        returns = self._returns(session, case.id)
        chosen: Mapping[str, str | None] = dict.fromkeys(returns, label) if dispositions is None else dispositions
        problems = []
        for return_id in returns:
            if return_id not in chosen:
                problems.append(Problem(f"dispositions.{return_id}", "missing", "fraud, abuse or legit"))
        for return_id, given in chosen.items():
            if return_id not in returns:
                problems.append(Problem(f"dispositions.{return_id}", "is not a return of this case",
                                        "one of " + ", ".join(returns)))
            elif given not in LABELS:
                problems.append(Problem(f"dispositions.{return_id}", f"got {given!r}", "fraud, abuse or legit"))
        if problems:
            raise RequestInvalid(problems)
        now = self.clock()
        changes = {"status": [case.status, "closed"]}
        labels = [{"return_id": r, "label": chosen[r], "labelled_at": chain.utc_text(now), "source": "analyst"}
                  for r in returns]
        case.status, case.closed_at = "closed", now
        payload: dict[str, Any] = {"changes": changes, "reason": text, "labels": labels}
        if bulk:
            payload["bulk"] = bulk
        event = self._record(session, case, "case_closed", actor, payload, now)
        for item in labels:
            session.add(Label(return_id=item["return_id"], label=item["label"], labelled_at=now, source="analyst",
                              reason=text, case_id=case.id, actor=actor, event_seq=event.seq))

    def _returns(self, session: Session, case_id: str) -> list[str]:
        return list(session.execute(select(Assessment.return_id).where(Assessment.case_id == case_id)
                                    .order_by(Assessment.return_id)).scalars())

    def _locked(self, session: Session, case_id: str, closed_ok: bool = False) -> Case:
        """The case, with the chain locked (every change is serialised); closed cases only when CLOSED_OK."""
        chain.lock_head(session)
        case = session.get(Case, case_id)
        if case is None:
            raise CaseNotFound(f"no case {case_id!r}")
        if case.status == "closed" and not closed_ok:
            raise CaseConflict(f"case {case_id} is closed; reopen it to change it")
        return case

    def _record(self, session: Session, case: Case, kind: str, actor: str, payload: dict[str, Any],
                at: dt.datetime | None = None) -> EvidenceEvent:
        at = at or self.clock()
        case.updated_at = at
        return chain.append(session, kind=kind, subject=case.id, actor=actor, at=at,
                            payload={"case_id": case.id, **payload})


def _reason(reason: str) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text or len(text) > MAX_REASON:
        raise RequestInvalid([Problem("reason", f"got {len(text)} characters",
                                      f"why, in 1 to {MAX_REASON:,} characters")])
    return text


def _label(label: Label) -> dict[str, Any]:
    return {"return_id": label.return_id, "label": label.label, "labelled_at": chain.utc_text(label.labelled_at),
            "source": label.source, "reason": label.reason, "actor": label.actor, "case_id": label.case_id}


def event_dict(e: EvidenceEvent) -> dict[str, Any]:
    """An evidence event as stored (the payload as its canonical text, so its hash can be checked)."""
    return {"seq": e.seq, "at": chain.utc_text(e.at), "kind": e.kind, "subject": e.subject, "actor": e.actor,
            "payload": e.payload, "prev_hash": e.prev_hash, "hash": e.hash}
