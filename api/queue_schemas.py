"""The JSON of the named queues and the team dashboard (`api.queues`) as pydantic models: the request body of
`PUT /v1/queues/NAME` (checked again, field by field, by the core's `cases.queues.parse_definition`) and the
responses, all in the OpenAPI document; and the document's paths for them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.schemas import _ANY, CaseSummary, Instant, _Request, _Response
from fraud_service.cases.oversight import MAX_DAYS
from fraud_service.cases.queues import DECISIONS, MAX_CAP, MAX_MEMBERS, MAX_SLA_HOURS
from fraud_service.cases.records import ACTIVE
from fraud_service.data.contract import RETURN_TYPES

Status = _ANY(ACTIVE)


class QueueFilterIn(_Request):
    statuses: list[Status] | None = Field(default=None, min_length=1,  # type: ignore[valid-type]
                                          description="default: every status but closed")
    decision: _ANY(DECISIONS) | None = None  # type: ignore[valid-type]
    reason: str | None = Field(default=None, min_length=1, max_length=80, description="a reason code")
    min_amount: float | None = Field(default=None, ge=0, description="refunds at stake at least")
    return_type: _ANY(RETURN_TYPES) | None = Field(  # type: ignore[valid-type]
        default=None, description="cases with at least one assessment of this return type")
    appealed: bool | None = Field(default=None, description="true: cases a shopper appealed; false: the others")


class QueueIn(_Request):
    filter: QueueFilterIn = Field(default_factory=QueueFilterIn)
    sla_hours: float = Field(gt=0, le=MAX_SLA_HOURS, description="cases older than this are breaches in this queue")
    cap: int = Field(ge=1, le=MAX_CAP, description="the assigner gives no case to a member holding this many cases "
                                                   "not closed")
    members: list[str] = Field(default_factory=list, max_length=MAX_MEMBERS,
                               description="names of active users the assigner hands cases to, in turn")


class QueueRecord(_Response):
    name: str
    filter: dict[str, Any]
    sla_hours: float
    cap: int
    members: list[str]
    updated_at: Instant
    updated_by: str
    last_assignee: str | None = Field(description="the member given a case last (the round robin's turn)")
    cases: int = Field(description="cases not closed the queue holds now")
    unassigned: int
    breaches: int = Field(description="cases held now and older than the queue's SLA")


class Queues(_Response):
    queues: list[QueueRecord]


class QueueCases(_Response):
    queue: QueueRecord
    cases: list[CaseSummary] = Field(description="overdue against the queue's own SLA")
    total: int
    limit: int
    offset: int


class DayCount(_Response):
    day: str
    opened: int
    closed: int


class Flow(_Response):
    opened: int
    closed: int
    breaches: int = Field(description="cases whose SLA ran out in the window while not closed")
    sla_hours: float
    median_hours: float | None = Field(description="time from opening to closing of the cases closed in the window")
    p90_hours: float | None
    per_day: list[DayCount]


class QueueFlow(Flow):
    name: str


class AnalystWork(_Response):
    actor: str
    closed: int
    labels: dict[str, int]
    legit: int
    contradicted: int = Field(description="legit labels a later chargeback (fraud/abuse) or failed inspection "
                                          "contradicted")


class Dashboard(Flow):
    start: Instant
    end: Instant
    days: int
    queues: list[QueueFlow]
    analysts: list[AnalystWork]


QUEUE_MODELS = (QueueFilterIn, QueueIn, QueueRecord, Queues, QueueCases, DayCount, Flow, QueueFlow, AnalystWork,
                Dashboard)


def queue_paths() -> dict[str, Any]:
    """The named queues and the dashboard in the OpenAPI document."""
    from api.openapi import SECURED, _body, _errors, _json, _ref

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/queues": {"get": {
            "summary": "The named queues with their counts, breaches and members (analyst)", "security": SECURED,
            "responses": {"200": _json(_ref("Queues"), "The queues"), **_errors(401, 403, 503)}}},
        "/v1/queues/{name}": {
            "put": {"summary": "Create or change a named queue (admin)", "security": SECURED, "parameters": [name],
                    "requestBody": _body("QueueIn"),
                    "responses": {"200": _json(_ref("QueueRecord"), "Saved"),
                                  **_errors(400, 401, 403, 413, 422, 503)}},
            "delete": {"summary": "Remove a named queue (admin); its cases stay as they are", "security": SECURED,
                       "parameters": [name],
                       "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404, 503)}}},
        "/v1/queues/{name}/cases": {"get": {
            "summary": "A page of a named queue's cases, riskiest first, flagged against its SLA (analyst)",
            "security": SECURED, "parameters": [
                name, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": _json(_ref("QueueCases"), "The page"), **_errors(401, 403, 404, 422, 503)}}},
        "/v1/dashboard": {"get": {
            "summary": "The team dashboard (admin): cases opened and closed per day and per queue, time to decision, "
                       "SLA breaches, each analyst's closed cases and labels and how many legit labels were "
                       "contradicted later", "security": SECURED,
            "parameters": [{"name": "days", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS}}],
            "responses": {"200": _json(_ref("Dashboard"), "The figures"), **_errors(401, 403, 422, 503)}}},
    }
