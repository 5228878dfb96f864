"""The JSON API's bodies as pydantic models: the request bodies views validate with `parse`, and the responses.

`api/openapi.py` generates the document's schemas from these models (and the return request's from the core's
`fraud_service.scoring.request.ReturnRequestBody`), so what is validated and what is documented cannot drift.
Responses are built by the core's records; tests validate real responses against these models
(tests/api/test_schemas.py) and schemathesis checks every answer against the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, ValidationError

from api.core import json_object
from fraud_service.cases.records import LABELS, STATUSES
from fraud_service.cases.service import MAX_NOTE, MAX_REASON
from fraud_service.data.contract import INSPECTION_OUTCOMES, MAX_TEXT, UNREORDERED
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.feedback.appeals import MAX_MESSAGE
from fraud_service.feedback.inspections import MAX_NOTES
from fraud_service.feedback.messages import TEXTS
from fraud_service.feedback.outcomes import STATUSES as OUTCOME_STATUSES
from fraud_service.feedback.webhooks import EVENT_TYPES, MAX_URL
from fraud_service.scoring.policy import Decision
from fraud_service.scoring.request import Time, bound_expected, error_path, show, value_at, visible_text

_ANY = Literal.__getitem__  # a Literal of values known at import time


def _text(limit: int) -> Any:
    return Annotated[StrictStr, Field(min_length=1, max_length=limit, pattern=r"\S"), AfterValidator(visible_text)]


Text = _text(MAX_TEXT)
Reason = _text(MAX_REASON)
Label = _ANY(LABELS)
DecisionValue = _ANY(tuple(d.value for d in Decision))
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Request(BaseModel):
    # a field the endpoint does not know is refused, not ignored: a misspelt option (`expire_at`) would otherwise
    # be a request without it (a block list entry that never expires)
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- request bodies --------------------------------------------------------------------------------------------


class ModelChange(_Request):
    reason: Reason | None = Field(default=None, description="why (default: promoted or rolled back through the API)")  # type: ignore[valid-type]
    force: bool = Field(default=False, strict=True,
                        description="promote past a gate that refuses; needs a reason; evidence says so")


class AssignBody(_Request):
    assignee: Text | None = Field(description="a user name, or null for nobody")  # type: ignore[valid-type]


class StatusBody(_Request):
    status: _ANY(STATUSES) = Field(  # type: ignore[valid-type]
        description="open, in_review or escalated; `closed` answers 409 (closing needs labels: use /close)")
    comment: Reason | None = None  # type: ignore[valid-type]


class NoteBody(_Request):
    body: _text(MAX_NOTE)  # type: ignore[valid-type]


class CloseBody(_Request):
    """A label per return (`dispositions`), or one `label` for all of them, and why."""

    dispositions: dict[str, Label] | None = Field(  # type: ignore[valid-type]
        default=None, description="return_id -> label, one for every return of the case")
    label: Label | None = None  # type: ignore[valid-type]
    reason: Reason  # type: ignore[valid-type]
    unchanged_since: StrictStr | None = Field(
        default=None, max_length=64, description="the case's updated_at as you saw it: 409 if it changed since")


class ReopenBody(_Request):
    reason: Reason  # type: ignore[valid-type]


class BulkCloseBody(_Request):
    case_ids: list[StrictStr] = Field(min_length=1, max_length=500)
    label: Label  # type: ignore[valid-type]
    reason: Reason  # type: ignore[valid-type]
    unchanged: dict[StrictStr, Annotated[StrictStr, Field(max_length=64)]] | None = Field(
        default=None, max_length=500, description="case_id -> its updated_at as you saw it, each: 409 if any changed")
    unchanged_since: StrictStr | None = Field(default=None, max_length=64, description=(
        "when you loaded the cases: 409 if any changed after it (coarser than `unchanged`)"))


class InspectionIn(_Request):
    inspected_at: Time = Field(description="when the goods were checked (at or after the return's requested_at)")
    outcome: _ANY(INSPECTION_OUTCOMES)  # type: ignore[valid-type]
    notes: StrictStr | None = Field(default=None, max_length=MAX_NOTES)


class AppealIn(_Request):
    message: _text(MAX_MESSAGE) = Field(description="the shopper's words, shown to the analyst")  # type: ignore[valid-type]


class WebhookIn(_Request):
    url: StrictStr = Field(min_length=1, max_length=MAX_URL, description="http(s), on a public address")
    events: list[_ANY(EVENT_TYPES)] = Field(min_length=1, max_length=len(EVENT_TYPES))  # type: ignore[valid-type]


M = TypeVar("M", bound=_Request)


def parse(model: type[M], empty_ok: bool = False) -> M:
    """The request's JSON object as MODEL, or RequestInvalid naming every bad field (400 when it is not an
    object; with EMPTY_OK an empty body is an empty object)."""
    body = json_object(empty_ok=empty_ok)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid([problem(error, body) for error in exc.errors(include_url=False)]) from None


def problem(error: Any, body: Any) -> Problem:
    """A pydantic error as a Problem: the field's path, what was sent, and what was expected."""
    path = error_path(error["loc"])
    ctx = error.get("ctx") or {}
    expected = {
        "missing": "a value", "string_type": "a non-empty string", "string_too_short": "a non-empty string",
        "string_pattern_mismatch": "a non-empty string",
        "blank_text": "text that shows something (not only spaces or invisible characters)",
        "reordered_text": UNREORDERED,
        "string_too_long": f"at most {ctx.get('max_length', 0):,} characters",
        "literal_error": f"one of {ctx.get('expected', '').replace(chr(39), '')}",
        "list_type": "a list", "too_short": f"at least {ctx.get('min_length', 1)} item(s)",
        "too_long": f"at most {ctx.get('max_length', 0)} items", "dict_type": "an object",
        "timestamp": "an ISO 8601 time such as 2026-12-02T10:30:00Z",
        "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
        "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
        "bool_parsing": "true or false",
    }.get(error["type"]) or bound_expected(error["type"], ctx) or error["msg"]
    if error["type"] == "missing":
        return Problem(path, "is required", expected)
    if error["type"] == "extra_forbidden":
        return Problem(path, "is not a field of this request", "only the fields the API reference lists for it")
    return Problem(path, f"got {show(value_at(body, error['loc']))}", expected)


# -- response bodies -------------------------------------------------------------------------------------------


class ErrorBody(_Response):
    error: str
    message: str
    request_id: str | None = None


class FieldProblem(_Response):
    field: str
    problem: str
    expected: str


class ValidationErrorBody(ErrorBody):
    problems: list[FieldProblem]


class ReasonRecord(_Response):
    feature: str
    value: Any
    contribution: float
    sentence: str


class RuleHit(_Response):
    rule: str
    decision: DecisionValue  # type: ignore[valid-type]
    detail: str


class Assessment(_Response):
    assessment_id: str
    return_id: str
    score: float = Field(ge=0, le=1, description="calibrated probability")
    risk_level: Literal["low", "medium", "high", "very_high"]
    decision: DecisionValue  # type: ignore[valid-type]
    model_decision: DecisionValue  # type: ignore[valid-type]
    reasons: list[ReasonRecord]
    rules_fired: list[RuleHit]
    model_version: str
    policy_version: str
    case_id: str | None = Field(description="the case a human works on (review, deny), else null")
    assessed_at: Instant
    evidence: str = Field(description="where GET returns the stored evidence")


class CustomerMessage(_Response):
    code: _ANY(tuple(TEXTS))  # type: ignore[valid-type]
    text: str = Field(description="plain words for the shopper (the default table, or FRAUD_CUSTOMER_MESSAGES)")


class AssessmentOutcome(_Response):
    status: _ANY(OUTCOME_STATUSES)  # type: ignore[valid-type]
    decision: DecisionValue = Field(description="the decision in force")  # type: ignore[valid-type]
    decided_at: Instant
    decided_by: str = Field(description="model, rule, inspection, or the person: user:NAME (key:ID for a key)")
    label: Label | None  # type: ignore[valid-type]
    appealed: bool
    customer_message: CustomerMessage


class Evidence(_Response):
    assessment_id: str
    event_seq: int
    request_hash: str | None = None
    request: dict[str, Any]
    features: dict[str, Any]
    feature_times: dict[str, Any] | None = None
    raw_score: float | None = None
    contributions: list[float] | None = None
    response: Assessment
    outcome: AssessmentOutcome


class InspectionResult(_Response):
    return_id: str
    assessment_id: str
    inspected_at: Instant
    outcome: _ANY(INSPECTION_OUTCOMES)  # type: ignore[valid-type]
    notes: str
    label: Label | None = Field(description="the label it gives the return for training")  # type: ignore[valid-type]
    case_id: str | None
    assessment_outcome: AssessmentOutcome


class AppealResult(_Response):
    assessment_id: str
    return_id: str
    case_id: str = Field(description="the case now at the top of the analysts' queue")
    outcome: AssessmentOutcome
    replayed: bool = Field(description="the same message was relayed before and its appeal is still pending: "
                                        "nothing new was recorded")


class WebhookRecord(_Response):
    id: str
    url: str
    events: list[_ANY(EVENT_TYPES)]  # type: ignore[valid-type]
    created_at: Instant
    created_by: str
    pending: int = Field(ge=0, description="deliveries waiting to be sent")
    dead: int = Field(ge=0, description="deliveries given up after the retry window (replay them)")


class WebhookCreated(WebhookRecord):
    secret: str = Field(description="signs every delivery (Fraud-Signature); shown only now")


class Webhooks(_Response):
    webhooks: list[WebhookRecord]


class Delivery(_Response):
    event_id: str
    type: _ANY(EVENT_TYPES)  # type: ignore[valid-type]
    event_created_at: Instant
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(ge=0)
    next_attempt_at: Instant | None
    last_attempt_at: Instant | None
    last_status: int | None = Field(description="the receiver's HTTP status at the last attempt")
    last_error: str | None
    delivered_at: Instant | None


class Deliveries(_Response):
    deliveries: list[Delivery]


class Replayed(_Response):
    event_id: str
    queued: int = Field(ge=0, description="deliveries pending again")


class AliasSwitch(_Response):
    production: str
    previous: str | None
    serving: str | None = Field(description="this worker's model now")
    shadow_ended: str | None = Field(default=None, description="only when the move made the shadow model production: "
                                                               "it no longer shadows (production is never its own "
                                                               "shadow)")


class Registry(_Response):
    versions: list[dict[str, Any]]
    aliases: dict[str, Any]
    serving: str | None


class CaseSummary(_Response):
    case_id: str
    status: _ANY(STATUSES)  # type: ignore[valid-type]
    assignee: str | None = Field(description="user:NAME or key:ID")
    customer_id: str = Field(description="the customer whose assessment opened the case")
    decision: Literal["review", "deny"]
    reason: str = Field(description="the theme of the riskiest assessment's top reason")
    max_score: float
    amount: float = Field(description="refunds at stake")
    priority: float = Field(description="max_score x amount: the queue's order")
    assessments: int
    opened_at: Instant
    updated_at: Instant
    closed_at: Instant | None
    age_hours: float
    overdue: bool = Field(description="open longer than the SLA (48 hours)")
    appealed_at: Instant | None = Field(default=None, description="a shopper appealed: first in the queue")
    labels: dict[str, int] | None = Field(default=None, description="closed: how many returns carry each label")


class CasePage(_Response):
    cases: list[CaseSummary]
    total: int
    limit: int
    offset: int


class CaseList(_Response):
    cases: list[CaseSummary]


class LabelRecord(_Response):
    return_id: str
    label: Label  # type: ignore[valid-type]
    labelled_at: Instant
    source: str
    reason: str | None = None
    actor: str | None = None
    case_id: str | None = None


class CaseNote(_Response):
    author: str
    body: str
    created_at: Instant
    event_seq: int


class EvidenceEvent(_Response):
    seq: int = Field(description="the event's number, across chains in the order numbers were handed out")
    chain: int = Field(description="the chain it is linked in: 1 is the root, others an evidence writer's segment")
    position: int = Field(description="its place in its chain (1 is the chain's first event)")
    at: Instant
    kind: str
    subject: str
    actor: str
    payload: str = Field(description="canonical JSON, exactly what was hashed")
    prev_hash: str
    hash: str


class CaseLink(_Response):
    entity: str
    value: str


class CaseAssessment(_Response):
    assessment_id: str
    return_id: str
    score: float
    decision: DecisionValue  # type: ignore[valid-type]
    request: dict[str, Any]
    features: dict[str, Any]
    reasons: list[dict[str, Any]]
    rules_fired: list[dict[str, Any]]
    label: LabelRecord | None


class CaseDetail(CaseSummary):
    links: list[CaseLink]
    assessments_total: int = Field(ge=0)
    assessments_offset: int = Field(ge=0)
    assessment_list: list[CaseAssessment]
    notes: list[CaseNote]
    labels: list[LabelRecord]
    events: list[EvidenceEvent]
    histories: list[dict[str, Any]]
    linked_accounts: list[dict[str, Any]]


REQUESTS: tuple[type[BaseModel], ...] = (ModelChange, AssignBody, StatusBody, NoteBody, CloseBody,
                                         ReopenBody, BulkCloseBody, InspectionIn, AppealIn, WebhookIn)
RESPONSES: tuple[type[BaseModel], ...] = (ErrorBody, ValidationErrorBody, Assessment, Evidence,
                                          AliasSwitch, Registry, CaseSummary, CasePage, CaseList, LabelRecord,
                                          CaseNote, EvidenceEvent, CaseDetail, CustomerMessage, AssessmentOutcome,
                                          InspectionResult, AppealResult, WebhookRecord, WebhookCreated, Webhooks,
                                          Delivery, Deliveries, Replayed)
