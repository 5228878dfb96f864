"""The OpenAPI 3 document of the JSON API (`/openapi.json`); its schemas are generated from the pydantic models
that validate the bodies (`api/schemas.py`, and the core's return request built from the data contract).

A schema-driven fuzzer (schemathesis, tests/api/test_openapi_fuzz.py) checks that the service
never answers 500 and never answers anything the document does not describe.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic.json_schema import models_json_schema

from api.entity_schemas import ENTITY_RESPONSES
from api.queue_schemas import QUEUE_MODELS
from api.queue_schemas import queue_paths as _queue_paths
from api.rule_schemas import RULE_REQUESTS, RULE_RESPONSES
from api.schemas import REQUESTS, RESPONSES
from fraud_service.cases.records import SORTS, STATUSES
from fraud_service.scoring.request import ReturnRequestBody

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "The body is not a JSON object, or writes a key twice in one object", 401: "No valid API key",
            403: "The key's role may not do this", 404: "Not found", 409: "Conflict",
            413: "The body is larger than 256 KiB",
            422: "Fields break the contract (every bad field is listed)",
            503: "A store is unavailable or nothing is loaded to score with; no decision was made"}
    return {str(c): _json(_ref("ValidationErrorBody" if c == 422 else "ErrorBody"), text[c]) for c in codes}


def schemas() -> dict[str, Any]:
    """Every body's JSON schema, generated from the pydantic models that validate requests (and describe
    responses)."""
    models = [ReturnRequestBody, *REQUESTS, *RESPONSES, *ENTITY_RESPONSES, *RULE_REQUESTS, *RULE_RESPONSES,
              *QUEUE_MODELS]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    return dict(top["$defs"])


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "fraud-service", "version": "1",
                 "description": "Scores e-commerce return requests for fraud and abuse, explains each flag and "
                                "keeps every decision as hash-chained evidence."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key from `fraud-service keys create`"}},
            "schemas": schemas(),
        },
        "paths": {**_scoring_paths(), **_feedback_paths(), **_cases_paths(SECURED), **_entity_paths(),
                  **_queue_paths(),
                  **_model_paths(), **_service_paths()},
    }


SECURED = [{"bearer": []}]
PAGE_OFFSET = {"name": "assessments_offset", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}}
PLAIN = {"type": "object"}


def _scoring_paths() -> dict[str, Any]:
    """Assessing returns, reading evidence, the lists."""
    return {
        "/v1/returns/assess": {"post": {
            "summary": "Assess one return (idempotent on return_id)", "security": SECURED,
            "requestBody": _body("ReturnRequest"),
            "responses": {"201": _json(_ref("Assessment"), "Assessed now"),
                          "200": _json(_ref("Assessment"), "Assessed before with the same body: the stored "
                                                           "assessment"),
                          **_errors(400, 401, 403, 409, 413, 422, 503)}}},
        "/v1/assessments/{assessment_id}": {"get": {
            "summary": "The stored evidence of an assessment and its outcome in force (a scoring key: the ones it "
                       "made)", "security": SECURED,
            "parameters": [{"name": "assessment_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("Evidence"), "The evidence"), **_errors(401, 403, 404, 503)}}},
        "/v1/lists": {
            "get": {"summary": "Allow and block list entries", "security": SECURED,
                    "responses": {"200": _json(_ref("ListEntries"), "The entries"), **_errors(401, 403, 503)}},
            "post": {"summary": "Add a list entry (admin)", "security": SECURED, "requestBody": _body("ListEntryIn"),
                     "responses": {"201": _json(_ref("ListEntry"), "Added"),
                                   **_errors(400, 401, 403, 409, 413, 422, 503)}}},
        "/v1/lists/{entity}/{value}": {"delete": {
            "summary": "Remove a list entry (admin)", "security": SECURED,
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "value", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "why it comes off (kept in the evidence)"}],
            "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404, 422, 503)}}},
        "/v1/rules": {
            "get": {"summary": "The hard rules in force, every saved version, and what a custom rule may compare",
                    "security": SECURED,
                    "responses": {"200": _json(_ref("RulesOut"), "The rules"), **_errors(401, 403, 503)}},
            "put": {"summary": "Put a new rule set in force (admin; the next version, an evidence event)",
                    "security": SECURED, "requestBody": _body("RulesIn"),
                    "responses": {"200": _json(_ref("RuleSetOut"), "In force"),
                                  **_errors(400, 401, 403, 413, 422, 503)}}},
        "/v1/rules/backtest": {"post": {
            "summary": "What a proposed rule set would have done to the last `days` days of assessments (admin; "
                       "nothing is saved)", "security": SECURED, "requestBody": _body("BacktestIn"),
            "responses": {"200": _json(_ref("BacktestOut"), "The replay"), **_errors(400, 401, 403, 413, 422, 503)}}},
    }


def _feedback_paths() -> dict[str, Any]:
    """Inspections, appeals, webhooks."""
    def path(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    return {
        "/v1/returns/{return_id}/inspection": {"post": {
            "summary": "Report the warehouse's inspection of a return (idempotent on return_id and inspected_at)",
            "security": SECURED, "parameters": [path("return_id")], "requestBody": _body("InspectionIn"),
            "responses": {"201": _json(_ref("InspectionResult"), "Stored, with what it decided"),
                          "200": _json(_ref("InspectionResult"), "Reported before: the stored result"),
                          **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/assessments/{assessment_id}/appeal": {"post": {
            "summary": "Relay a shopper's appeal: the case goes to the top of the analysts' queue",
            "security": SECURED, "parameters": [path("assessment_id")], "requestBody": _body("AppealIn"),
            "responses": {"200": _json(_ref("AppealResult"), "Appealed"),
                          **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/webhooks": {
            "get": {"summary": "The webhooks in use (admin)", "security": SECURED,
                    "responses": {"200": _json(_ref("Webhooks"), "The webhooks"), **_errors(401, 403, 503)}},
            "post": {"summary": "Add a webhook (admin); the answer holds its signing secret, shown once",
                     "security": SECURED, "requestBody": _body("WebhookIn"),
                     "responses": {"201": _json(_ref("WebhookCreated"), "Added"),
                                   **_errors(400, 401, 403, 413, 422, 503)}}},
        "/v1/webhooks/{webhook_id}": {"delete": {
            "summary": "Stop sending to a webhook (admin)", "security": SECURED, "parameters": [path("webhook_id")],
            "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404, 503)}}},
        "/v1/webhooks/{webhook_id}/deliveries": {"get": {
            "summary": "A webhook's deliveries, newest first (admin)", "security": SECURED,
            "parameters": [path("webhook_id"),
                           {"name": "status", "in": "query", "required": False,
                            "schema": {"enum": ["pending", "delivered", "dead"]}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": _json(_ref("Deliveries"), "The deliveries"), **_errors(401, 403, 404, 422, 503)}}},
        "/v1/webhooks/events/{event_id}/replay": {"post": {
            "summary": "Send an event again with a new retry window (admin)", "security": SECURED,
            "parameters": [path("event_id"), {"name": "webhook_id", "in": "query", "required": False,
                                              "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("Replayed"), "Queued"), **_errors(401, 403, 404, 503)}}},
    }


def _model_paths() -> dict[str, Any]:
    """The model registry: read, promote, roll back."""
    return {
        "/v1/models": {"get": {
            "summary": "Registered models with aliases (analyst)", "security": SECURED,
            "responses": {"200": _json(_ref("Registry"), "The registry"), **_errors(401, 403)}}},
        "/v1/models/{ref}/promote": {"post": {
            "summary": "Make a version the production model (admin); workers swap it within seconds",
            "security": SECURED,
            "parameters": [{"name": "ref", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "v0003, 3, latest or candidate"}],
            "requestBody": _body("ModelChange", required=False),
            "responses": {"200": _json(_ref("AliasSwitch"), "Promoted"),
                          **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/models/rollback": {"post": {
            "summary": "Put back the production model the current one replaced (admin)", "security": SECURED,
            "requestBody": _body("ModelChange", required=False),
            "responses": {"200": _json(_ref("AliasSwitch"), "Rolled back"),
                          **_errors(400, 401, 403, 409, 413, 422, 503)}}},
    }


def _service_paths() -> dict[str, Any]:
    """Status, health, metrics and this document."""
    return {
        "/v1/status": {"get": {"summary": "The warehouse snapshot and feature build the service holds (with any "
                                          "valid key also its origin, fingerprint and directory)",
                               "responses": {"200": _json(PLAIN, "Snapshot name and row counts")}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(PLAIN, "Up")}}},
        "/readyz": {"get": {"summary": "Readiness: model, database, feature store",
                            "responses": {"200": _json(PLAIN, "Ready"), "503": _json(PLAIN, "Not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (a metrics or admin key)", "security": SECURED,
                             "responses": {
            "200": {"description": "Text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(401, 403)}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json(PLAIN, "OpenAPI 3.1")}}},
    }


def _cases_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    case_id = [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}]

    def action(summary: str, body: str | None, ok: int = 200, response: str = "CaseSummary",
               errors: tuple[int, ...] = (400, 401, 403, 404, 409, 413, 422, 503)) -> dict[str, Any]:
        spec: dict[str, Any] = {"summary": summary, "security": secured, "parameters": case_id,
                                "responses": {str(ok): _json(_ref(response), "Done"), **_errors(*errors)}}
        if body is not None:
            spec["requestBody"] = _body(body)
        return {"post": spec}

    query = [
        {"name": "status", "in": "query", "schema": {"type": "string"}, "description":
            "comma-separated statuses (" + ", ".join(STATUSES) + ") or `all`; default: every status but closed"},
        {"name": "assignee", "in": "query", "schema": {"type": "string"},
         "description": "user:NAME, key:ID, or `none` for unassigned"},
        {"name": "decision", "in": "query", "schema": {"type": "string"}},
        {"name": "reason", "in": "query", "schema": {"type": "string"}},
        {"name": "min_amount", "in": "query", "schema": {"type": "number", "minimum": 0}},
        {"name": "sort", "in": "query", "schema": {"enum": list(SORTS)}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    ]
    return {
        "/v1/cases": {"get": {
            "summary": "The case queue (analyst): riskiest first (score x money at stake), filtered",
            "security": secured, "parameters": query,
            "responses": {"200": _json(_ref("CasePage"), "A page of cases"), **_errors(401, 403, 422, 503)}}},
        "/v1/cases/next": {"post": {
            "summary": "Claim the highest-priority unassigned open case", "security": secured,
            "responses": {"200": _json(_ref("CaseSummary"), "The case, now yours and in review"),
                          "204": {"description": "No open unassigned case"}, **_errors(401, 403, 503)}}},
        "/v1/cases/close": {"post": {
            "summary": "Close several cases with one label for all their returns (all or none)",
            "security": secured,
            "requestBody": _body("BulkCloseBody"),
            "responses": {"200": _json(_ref("CaseList"), "Closed"),
                          **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/cases/{case_id}": {"get": {
            "summary": "A case: a page of its assessments (100 from assessments_offset) with their evidence, notes, "
                       "labels, events, histories, linked accounts; assessments_total counts them all",
            "security": secured, "parameters": [*case_id, PAGE_OFFSET],
            "responses": {"200": _json(_ref("CaseDetail"), "The case"), **_errors(401, 403, 404, 422, 503)}}},
        "/v1/cases/{case_id}/claim": action("Assign the case to the caller (open moves to in_review)", None,
                                            errors=(401, 403, 404, 409, 503)),
        "/v1/cases/{case_id}/assign": action("Assign the case to a user, or to nobody (null)", "AssignBody"),
        "/v1/cases/{case_id}/status": action("Move the case (open, in_review, escalated; closing needs labels)",
                                             "StatusBody"),
        "/v1/cases/{case_id}/notes": action("Add a note", "NoteBody", ok=201, response="CaseNote"),
        "/v1/cases/{case_id}/close": action("Close with a label per return (or one label for all), with a reason",
                                            "CloseBody"),
        "/v1/cases/{case_id}/reopen": action("Reopen a closed case", "ReopenBody"),
        "/v1/cases/{case_id}/bundle": {"post": {
            "summary": "Export the evidence bundle (recorded as an evidence event): a zip of JSON (with the "
                       "hash-chain proof) and a printable HTML page",
            "security": secured, "parameters": case_id,
            "responses": {"200": {"description": "The bundle; check it with `fraud-service evidence verify --bundle`",
                                  "content": {"application/zip": {"schema": {"type": "string",
                                                                             "format": "binary"}}}},
                          **_errors(401, 403, 404, 503)}}},
    }


TOKENS = ["address", "payment", "device", "refund"]


def _entity_paths() -> dict[str, Any]:
    def text(name: str, where: str = "path") -> dict[str, Any]:
        return {"name": name, "in": where, "required": True, "schema": {"type": "string"}}

    def page(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"summary": summary, "security": SECURED, "parameters": parameters,
                        "responses": {"200": _json(_ref("EntityPage"), "The page"), **_errors(401, 403, 404, 503)}}}

    def graph(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        hops = {"name": "hops", "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 3, "default": 2}}
        return {"get": {"summary": summary, "security": SECURED, "parameters": [*parameters, hops],
                        "responses": {"200": _json(_ref("Graph"), "The graph"),
                                      **_errors(401, 403, 404, 422, 503)}}}

    return {
        "/v1/search": {"get": {
            "summary": "Customers, returns, orders, tokens and cases whose id is `q` or starts with it (analyst)",
            "security": SECURED, "parameters": [{**text("q", "query"), "schema": {"type": "string", "maxLength": 200}}],
            "responses": {"200": _json(_ref("SearchResult"), "What was found"), **_errors(401, 403, 422, 503)}}},
        "/v1/customers/{customer_id}": page(
            "Everything known about a customer: profile, features now, timeline of orders, returns, labels, "
            "inspections and assessments, cases, tokens with who else used them, lists", [text("customer_id")]),
        "/v1/graph/{kind}/{value}": graph("The link graph around a customer or token: customers and the tokens "
                                          "they used, `hops` out; hubs are one node, not expanded",
                                          [{**text("kind"), "schema": {"enum": ["customer", *TOKENS]}},
                                           text("value")]),
        "/v1/cases/{case_id}/graph": graph("The link graph around a case's customers and the tokens tying it",
                                           [text("case_id")]),
        "/v1/tokens/{kind}/{value}": page(
            "Everything known about a token (address, payment, device, refund): who used it, when, its orders and "
            "returns, cases, lists", [{**text("kind"), "schema": {"enum": TOKENS}},
                                      text("value")]),
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The OpenAPI document."""
    return jsonify(document())
