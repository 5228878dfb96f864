"""What the case service hands out: the case status and its transitions, and typed records of cases.

Nothing here touches the database; `service.py` builds these from rows. Each record's `to_dict`
is the JSON the API answers with (and the shape an evidence bundle stores).

    open ──► in_review ──► escalated            (and back: in_review ► open, escalated ► in_review)
      └──────────┴────────────┴──► closed ──► open   (closing labels every return; reopening is an event)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fraud_service.errors import Problem, RequestInvalid

LABELS = ("fraud", "abuse", "legit")
SORTS = ("priority", "score", "amount", "age")
DECISIONS = ("review", "deny")
"""The decisions a case can carry (the most severe of its assessments that needed a human)."""
DEFAULT_SLA_HOURS = 48.0


class CaseStatus(StrEnum):
    OPEN = "open"
    IN_REVIEW = "in_review"
    ESCALATED = "escalated"
    CLOSED = "closed"

    @classmethod
    def parse(cls, text: object, field_name: str = "status") -> CaseStatus:
        """The status named TEXT, or RequestInvalid naming the field."""
        if not isinstance(text, str):
            raise RequestInvalid([Problem(field_name, f"got {text!r}", "one of " + ", ".join(STATUSES))])
        try:
            return cls(text)
        except ValueError:
            raise RequestInvalid([Problem(field_name, f"got {text!r}", "one of " + ", ".join(STATUSES))]) from None

    @property
    def active(self) -> bool:
        return self is not CaseStatus.CLOSED

    def can_become(self, target: CaseStatus) -> bool:
        """Whether a case in this status may move to TARGET (closing and reopening included)."""
        return target in _TRANSITIONS[self]

    def manual_moves(self) -> tuple[CaseStatus, ...]:
        """Where `set_status` may take the case: closing needs dispositions and reopening a reason."""
        return tuple(t for t in _TRANSITIONS[self] if t is not CaseStatus.CLOSED and self is not CaseStatus.CLOSED)


_TRANSITIONS: dict[CaseStatus, tuple[CaseStatus, ...]] = {
    CaseStatus.OPEN: (CaseStatus.IN_REVIEW, CaseStatus.ESCALATED, CaseStatus.CLOSED),
    CaseStatus.IN_REVIEW: (CaseStatus.OPEN, CaseStatus.ESCALATED, CaseStatus.CLOSED),
    CaseStatus.ESCALATED: (CaseStatus.IN_REVIEW, CaseStatus.CLOSED),
    CaseStatus.CLOSED: (CaseStatus.OPEN,),
}
STATUSES = tuple(s.value for s in CaseStatus)
ACTIVE = tuple(s.value for s in CaseStatus if s.active)
MOVES = {s.value: tuple(t.value for t in s.manual_moves()) for s in CaseStatus if s.active}
"""Status changes `set_status` allows, by status (the UI offers these as buttons)."""


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


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
class CaseSummary(_Record):
    """A case as the queue shows it: with its priority (score x money at stake), age and SLA flag."""

    case_id: str
    status: CaseStatus
    assignee: str | None
    customer_id: str
    decision: str
    reason: str
    max_score: float
    amount: float
    priority: float
    assessments: int
    opened_at: str
    updated_at: str
    closed_at: str | None
    age_hours: float
    overdue: bool
    appealed_at: str | None = None  # a shopper appealed: the case is at the top of the queue until closed
    labels: dict[str, int] | None = None  # a closed case: its returns' labels in force, counted (fraud: 2, ...)


@dataclass(frozen=True)
class QueuePage:
    cases: list[CaseSummary]
    total: int
    filter: QueueFilter = field(default_factory=QueueFilter)


@dataclass(frozen=True)
class NoteRecord(_Record):
    author: str
    body: str
    created_at: str
    event_seq: int


@dataclass(frozen=True)
class LabelRecord(_Record):
    return_id: str
    label: str
    labelled_at: str
    source: str
    reason: str
    actor: str
    case_id: str | None


@dataclass(frozen=True)
class EventRecord(_Record):
    """An evidence event as stored (the payload as its canonical text, so its hash can be checked)."""

    seq: int
    chain: int
    position: int
    at: str
    kind: str
    subject: str
    actor: str
    payload: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class CaseAssessment(_Record):
    """One assessment of a case with the evidence it was made on, and its latest analyst label."""

    assessment_id: str
    return_id: str
    customer_id: str
    assessed_at: str
    score: float
    decision: str
    risk_level: str
    refund_amount: float
    model_version: str
    policy_version: str
    event_seq: int
    request: dict[str, Any]
    features: dict[str, Any]
    feature_times: dict[str, Any]
    raw_score: float | None
    contributions: list[float] | None
    reasons: list[dict[str, Any]]
    rules_fired: list[dict[str, Any]]
    label: LabelRecord | None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["label"] = self.label.to_dict() if self.label else None
        return out


@dataclass(frozen=True)
class CaseDetail:
    """Everything about a case: summary, links, assessments with their evidence, notes, labels, events."""

    summary: CaseSummary
    links: list[tuple[str, str]]
    assessments: list[CaseAssessment]
    notes: list[NoteRecord]
    labels: list[LabelRecord]
    events: list[EventRecord]
    assessments_total: int = 0
    """How many assessments the case has; `assessments` holds those from `assessments_offset` on (a page)."""
    assessments_offset: int = 0

    @property
    def case_id(self) -> str:
        return self.summary.case_id

    def customers(self) -> list[str]:
        """The case's customer and every customer one of its assessments is about."""
        return sorted({a.customer_id for a in self.assessments} | {self.summary.customer_id})

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "links": [{"entity": e, "value": v} for e, v in self.links],
            "assessment_list": [a.to_dict() for a in self.assessments],
            "notes": [n.to_dict() for n in self.notes],
            "labels": [x.to_dict() for x in self.labels],
            "events": [e.to_dict() for e in self.events],
            "assessments_total": self.assessments_total,
            "assessments_offset": self.assessments_offset,
        }


# -- named queues (`cases.queues`) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRule:
    """What a named queue holds: cases in one of STATUSES matching every field given (None: any). RETURN_TYPE
    matches a case with at least one assessment of that return type; APPEALED a case a shopper appealed (or not)."""

    statuses: tuple[str, ...] = ACTIVE
    decision: str | None = None
    reason: str | None = None
    min_amount: float | None = None
    return_type: str | None = None
    appealed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The rule as stored and shown: statuses as a list, fields not given left out."""
        out: dict[str, Any] = {"statuses": list(self.statuses)}
        for name in ("decision", "reason", "min_amount", "return_type", "appealed"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class QueueRecord(_Record):
    """A named queue as the API and the UI show it, with what it holds now (cases not closed, those nobody has,
    and those past the queue's SLA)."""

    name: str
    filter: dict[str, Any]
    sla_hours: float
    cap: int
    members: list[str]
    updated_at: str
    updated_by: str
    last_assignee: str | None
    cases: int = 0
    unassigned: int = 0
    breaches: int = 0


@dataclass(frozen=True)
class Assignment(_Record):
    """One change the assigner made: CASE_ID of QUEUE given to ASSIGNEE (None: to nobody) from PREVIOUS, and why
    (`round_robin`, or `inactive`: the previous assignee was away past the limit)."""

    queue: str
    case_id: str
    assignee: str | None
    previous: str | None
    why: str
