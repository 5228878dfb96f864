"""The OpenAPI 3 document of the JSON API, built from the contract (`/openapi.json`).

A schema-driven fuzzer (schemathesis, tests/api/test_openapi_fuzz.py) checks that the service
never answers 500 and never answers anything the document does not describe.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from fraud_service.cases.records import LABELS, SORTS, STATUSES
from fraud_service.data.contract import ORDER_CHANNELS, REFUND_METHODS, RETURN_CHANNELS, RETURN_TYPES
from fraud_service.scoring.policy import Decision
from fraud_service.scoring.request import MAX_AMOUNT, MAX_COUNT, MAX_ITEMS, MAX_TEXT
from fraud_service.scoring.rules import LIST_ENTITIES, LISTS

bp = Blueprint("openapi", __name__)

TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S"}
OPTIONAL_TEXT = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S"}
TIME = {"type": "string", "format": "date-time"}
MONEY = {"type": "number", "minimum": 0, "maximum": MAX_AMOUNT}
LINE = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
COUNT = {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "The body is not a JSON object", 401: "No valid API key", 403: "The key's role may not do this",
            404: "Not found", 409: "Conflict", 413: "The body is larger than 256 KiB",
            422: "Fields break the contract (every bad field is listed)",
            503: "A store is unavailable or nothing is loaded to score with; no decision was made"}
    return {str(c): _json(_ref("ValidationError" if c == 422 else "Error"), text[c]) for c in codes}


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
            "schemas": {**_scoring_schemas(), **_common_schemas(), **_case_schemas()},
        },
        "paths": {**_scoring_paths(), **_cases_paths(SECURED), **_model_paths(), **_service_paths()},
    }


def _scoring_schemas() -> dict[str, Any]:
    """The return request, the assessment and its stored evidence."""
    item = {"type": "object", "required": ["line_no", "sku", "category", "unit_price", "quantity"],
            "properties": {"line_no": LINE, "sku": TEXT, "category": TEXT,
                           "unit_price": MONEY, "quantity": COUNT}}
    order = {
        "type": "object",
        "required": ["order_id", "placed_at", "channel", "order_total", "payment_token", "items"],
        "properties": {
            "order_id": TEXT, "customer_id": {**OPTIONAL_TEXT, "description": "the buyer (default: the returner)"},
            "placed_at": TIME, "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "channel": {"enum": list(ORDER_CHANNELS)}, "order_total": MONEY, "currency": OPTIONAL_TEXT,
            "payment_token": TEXT, "address_token": OPTIONAL_TEXT, "device_token": OPTIONAL_TEXT,
            "items": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": item},
        },
    }
    return_request = {
        "type": "object",
        "description": "One return request in the data contract's field names, with its order context. "
                       "Semantic checks beyond this schema (requested_at not in the future nor before the order, "
                       "delivered_at not before placed_at, unique line numbers) also answer 422.",
        "required": ["return_id", "customer_id", "return_type", "channel", "reason", "items_count",
                     "refund_amount", "refund_method", "order"],
        "properties": {
            "return_id": TEXT, "customer_id": TEXT,
            "requested_at": {**TIME, "description": "default: now"},
            "return_type": {"enum": list(RETURN_TYPES)}, "channel": {"enum": list(RETURN_CHANNELS)},
            "reason": TEXT, "items_count": COUNT, "refund_amount": MONEY,
            "refund_method": {"enum": list(REFUND_METHODS)}, "refund_token": OPTIONAL_TEXT,
            "has_receipt": {"type": "boolean", "description": "default: true"}, "store_id": OPTIONAL_TEXT,
            "order": order,
        },
    }
    reason = {"type": "object", "required": ["feature", "value", "contribution", "sentence"],
              "properties": {"feature": {"type": "string"}, "value": {},
                             "contribution": {"type": "number"}, "sentence": {"type": "string"}}}
    rule = {"type": "object", "required": ["rule", "decision", "detail"],
            "properties": {"rule": {"type": "string"}, "decision": {"enum": [d.value for d in Decision]},
                           "detail": {"type": "string"}}}
    decision = {"enum": [d.value for d in Decision]}
    assessment = {
        "type": "object",
        "required": ["assessment_id", "return_id", "score", "risk_level", "decision", "model_decision", "reasons",
                     "rules_fired", "model_version", "policy_version", "case_id", "assessed_at", "evidence"],
        "properties": {
            "assessment_id": {"type": "string"}, "return_id": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "calibrated probability"},
            "risk_level": {"enum": ["low", "medium", "high", "very_high"]}, "decision": decision,
            "model_decision": decision, "reasons": {"type": "array", "items": reason},
            "rules_fired": {"type": "array", "items": rule}, "model_version": {"type": "string"},
            "policy_version": {"type": "string"}, "case_id": {"type": ["string", "null"],
                        "description": "the case a human works on (review, deny), else null"},
            "assessed_at": {"type": "string", "format": "date-time"},
            "evidence": {"type": "string", "description": "where GET returns the stored evidence"},
        },
    }
    evidence = {"type": "object", "required": ["assessment_id", "event_seq", "request", "features", "response"],
                "properties": {"assessment_id": {"type": "string"}, "event_seq": {"type": "integer"},
                               "request_hash": {"type": "string"}, "request": {"type": "object"},
                               "features": {"type": "object"}, "feature_times": {"type": "object"},
                               "raw_score": {"type": "number"},
                               "contributions": {"type": ["array", "null"], "items": {"type": "number"}},
                               "response": _ref("Assessment")}}
    return {"ReturnRequest": return_request, "Assessment": assessment, "Evidence": evidence}


def _common_schemas() -> dict[str, Any]:
    """List entries and the error bodies."""
    entry = {"type": "object", "required": ["entity", "value", "list", "reason"],
             "properties": {"entity": {"enum": list(LIST_ENTITIES)}, "value": TEXT, "list": {"enum": list(LISTS)},
                            "reason": TEXT, "added_by": {"type": "string"},
                            "added_at": {"type": "string", "format": "date-time"}}}
    error = {"type": "object", "required": ["error", "message"],
             "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                            "request_id": {"type": ["string", "null"]}}}
    problem = {"type": "object", "required": ["field", "problem", "expected"],
               "properties": {"field": {"type": "string"}, "problem": {"type": "string"},
                              "expected": {"type": "string"}}}
    validation = {"allOf": [error, {"type": "object", "required": ["problems"],
                                    "properties": {"problems": {"type": "array", "items": problem}}}]}
    return {"ListEntry": entry, "Error": error, "ValidationError": validation}


SECURED = [{"bearer": []}]
PAGE_OFFSET = {"name": "assessments_offset", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}}
PLAIN = {"type": "object"}


def _scoring_paths() -> dict[str, Any]:
    """Assessing returns, reading evidence, the lists."""
    return {
        "/v1/returns/assess": {"post": {
            "summary": "Assess one return (idempotent on return_id)", "security": SECURED,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ReturnRequest")}}},
            "responses": {"201": _json(_ref("Assessment"), "Assessed now"),
                          "200": _json(_ref("Assessment"), "Assessed before with the same body: the stored "
                                                           "assessment"),
                          **_errors(400, 401, 403, 409, 413, 422, 503)}}},
        "/v1/assessments/{assessment_id}": {"get": {
            "summary": "The stored evidence of an assessment", "security": SECURED,
            "parameters": [{"name": "assessment_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("Evidence"), "The evidence"), **_errors(401, 403, 404, 503)}}},
        "/v1/lists": {
            "get": {"summary": "Allow and block list entries", "security": SECURED,
                    "responses": {"200": _json({"type": "object", "required": ["entries"], "properties": {
                        "entries": {"type": "array", "items": _ref("ListEntry")}}}, "The entries"),
                        **_errors(401, 403, 503)}},
            "post": {"summary": "Add a list entry (admin)", "security": SECURED,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ListEntry")}}},
                     "responses": {"201": _json(_ref("ListEntry"), "Added"),
                                   **_errors(400, 401, 403, 409, 413, 422, 503)}}},
        "/v1/lists/{entity}/{value}": {"delete": {
            "summary": "Remove a list entry (admin)", "security": SECURED,
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "value", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404, 503)}}},
    }


def _model_paths() -> dict[str, Any]:
    """The model registry: read, promote, roll back."""
    model_change = {"type": "object", "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000,
                                                                "pattern": r"\S"}}}
    switched = {"type": "object", "required": ["production", "previous", "serving"],
                "properties": {"production": {"type": "string"}, "previous": {"type": ["string", "null"]},
                               "serving": {"type": ["string", "null"], "description": "this worker's model now"}}}
    return {
        "/v1/models": {"get": {
            "summary": "Registered models with aliases (analyst)", "security": SECURED,
            "responses": {"200": _json({"type": "object", "required": ["versions", "aliases", "serving"],
                                        "properties": {"versions": {"type": "array", "items": PLAIN},
                                                       "aliases": PLAIN, "serving": {"type": ["string", "null"]}}},
                                       "The registry"), **_errors(401, 403)}}},
        "/v1/models/{ref}/promote": {"post": {
            "summary": "Make a version the production model (admin); workers swap it within seconds",
            "security": SECURED,
            "parameters": [{"name": "ref", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "v0003, 3, latest or candidate"}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": model_change}}},
            "responses": {"200": _json(switched, "Promoted"), **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/models/rollback": {"post": {
            "summary": "Put back the production model the current one replaced (admin)", "security": SECURED,
            "requestBody": {"required": False, "content": {"application/json": {"schema": model_change}}},
            "responses": {"200": _json(switched, "Rolled back"), **_errors(400, 401, 403, 409, 413, 422, 503)}}},
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


def _case_schemas() -> dict[str, Any]:
    when = {"type": "string", "format": "date-time"}
    summary = {
        "type": "object",
        "required": ["case_id", "status", "assignee", "customer_id", "decision", "reason", "max_score", "amount",
                     "priority", "assessments", "opened_at", "updated_at", "closed_at", "age_hours", "overdue"],
        "properties": {
            "case_id": {"type": "string"}, "status": {"enum": list(STATUSES)},
            "assignee": {"type": ["string", "null"], "description": "user:NAME or key:ID"},
            "customer_id": {"type": "string", "description": "the customer whose assessment opened the case"},
            "decision": {"enum": ["review", "deny"]},
            "reason": {"type": "string", "description": "the theme of the riskiest assessment's top reason"},
            "max_score": {"type": "number"}, "amount": {"type": "number", "description": "refunds at stake"},
            "priority": {"type": "number", "description": "max_score x amount: the queue's order"},
            "assessments": {"type": "integer"}, "opened_at": when, "updated_at": when,
            "closed_at": {"type": ["string", "null"], "format": "date-time"}, "age_hours": {"type": "number"},
            "overdue": {"type": "boolean", "description": "open longer than the SLA (48 hours)"},
        },
    }
    label = {"type": "object", "required": ["return_id", "label", "labelled_at", "source"],
             "properties": {"return_id": {"type": "string"}, "label": {"enum": list(LABELS)}, "labelled_at": when,
                            "source": {"type": "string"}, "reason": {"type": "string"}, "actor": {"type": "string"},
                            "case_id": {"type": ["string", "null"]}}}
    note = {"type": "object", "required": ["author", "body", "created_at", "event_seq"],
            "properties": {"author": {"type": "string"}, "body": {"type": "string"}, "created_at": when,
                           "event_seq": {"type": "integer"}}}
    event = {"type": "object", "required": ["seq", "at", "kind", "subject", "actor", "payload", "prev_hash", "hash"],
             "properties": {"seq": {"type": "integer"}, "at": when, "kind": {"type": "string"},
                            "subject": {"type": "string"}, "actor": {"type": "string"},
                            "payload": {"type": "string", "description": "canonical JSON, exactly what was hashed"},
                            "prev_hash": {"type": "string"}, "hash": {"type": "string"}}}
    detail = {"allOf": [_ref("CaseSummary"), {
        "type": "object",
        "required": ["links", "assessment_list", "notes", "labels", "events", "histories", "linked_accounts",
                     "assessments_total", "assessments_offset"],
        "properties": {
            "links": {"type": "array", "items": {"type": "object", "required": ["entity", "value"]}},
            "assessments_total": {"type": "integer", "minimum": 0},
            "assessments_offset": {"type": "integer", "minimum": 0},
            "assessment_list": {"type": "array", "items": {
                "type": "object", "required": ["assessment_id", "return_id", "score", "decision", "request",
                                               "features", "reasons", "rules_fired", "label"]}},
            "notes": {"type": "array", "items": _ref("CaseNote")},
            "labels": {"type": "array", "items": _ref("Label")},
            "events": {"type": "array", "items": _ref("EvidenceEvent")},
            "histories": {"type": "array", "items": {"type": "object"}},
            "linked_accounts": {"type": "array", "items": {"type": "object"}},
        }}]}
    return {"CaseSummary": summary, "CaseDetail": detail, "Label": label, "CaseNote": note, "EvidenceEvent": event}


def _cases_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    case_id = [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    reason = {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": r"\S"}

    def action(summary: str, body: dict[str, Any] | None, ok: int = 200, response: str = "CaseSummary",
               errors: tuple[int, ...] = (400, 401, 403, 404, 409, 413, 422, 503)) -> dict[str, Any]:
        spec: dict[str, Any] = {"summary": summary, "security": secured, "parameters": case_id,
                                "responses": {str(ok): _json(_ref(response), "Done"), **_errors(*errors)}}
        if body is not None:
            spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
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
    page = {"type": "object", "required": ["cases", "total", "limit", "offset"],
            "properties": {"cases": {"type": "array", "items": _ref("CaseSummary")}, "total": {"type": "integer"},
                           "limit": {"type": "integer"}, "offset": {"type": "integer"}}}
    dispositions = {"type": "object", "additionalProperties": {"enum": list(LABELS)},
                    "description": "return_id -> label, one for every return of the case"}
    return {
        "/v1/cases": {"get": {
            "summary": "The case queue (analyst): riskiest first (score x money at stake), filtered",
            "security": secured, "parameters": query,
            "responses": {"200": _json(page, "A page of cases"), **_errors(401, 403, 422, 503)}}},
        "/v1/cases/next": {"post": {
            "summary": "Claim the highest-priority unassigned open case", "security": secured,
            "responses": {"200": _json(_ref("CaseSummary"), "The case, now yours and in review"),
                          "204": {"description": "No open unassigned case"}, **_errors(401, 403, 503)}}},
        "/v1/cases/close": {"post": {
            "summary": "Close several cases with one label for all their returns (all or none)",
            "security": secured,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["case_ids", "label", "reason"],
                "properties": {"case_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                            "maxItems": 500},
                               "label": {"enum": list(LABELS)}, "reason": reason}}}}},
            "responses": {"200": _json({"type": "object", "required": ["cases"], "properties": {
                "cases": {"type": "array", "items": _ref("CaseSummary")}}}, "Closed"),
                **_errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/v1/cases/{case_id}": {"get": {
            "summary": "A case: a page of its assessments (100 from assessments_offset) with their evidence, notes, "
                       "labels, events, histories, linked accounts; assessments_total counts them all",
            "security": secured, "parameters": [*case_id, PAGE_OFFSET],
            "responses": {"200": _json(_ref("CaseDetail"), "The case"), **_errors(401, 403, 404, 422, 503)}}},
        "/v1/cases/{case_id}/claim": action("Assign the case to the caller (open moves to in_review)", None,
                                            errors=(401, 403, 404, 409, 503)),
        "/v1/cases/{case_id}/assign": action("Assign the case to a user, or to nobody (null)", {
            "type": "object", "required": ["assignee"], "properties": {"assignee": {"type": ["string", "null"]}}}),
        "/v1/cases/{case_id}/status": action("Move the case (open, in_review, escalated; closing needs labels)", {
            "type": "object", "required": ["status"],
            "properties": {"status": {"enum": ["open", "in_review", "escalated"]}, "comment": {"type": "string"}}}),
        "/v1/cases/{case_id}/notes": action("Add a note", {
            "type": "object", "required": ["body"],
            "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 10000, "pattern": r"\S"}}},
            ok=201, response="CaseNote"),
        "/v1/cases/{case_id}/close": action("Close with a label per return (or one label for all), with a reason", {
            "type": "object", "required": ["reason"],
            "properties": {"dispositions": dispositions, "label": {"enum": list(LABELS)}, "reason": reason}}),
        "/v1/cases/{case_id}/reopen": action("Reopen a closed case", {
            "type": "object", "required": ["reason"], "properties": {"reason": reason}}),
        "/v1/cases/{case_id}/bundle": {"post": {
            "summary": "Export the evidence bundle (recorded as an evidence event): a zip of JSON (with the "
                       "hash-chain proof) and a printable HTML page",
            "security": secured, "parameters": case_id,
            "responses": {"200": {"description": "The bundle; check it with `fraud-service evidence verify --bundle`",
                                  "content": {"application/zip": {"schema": {"type": "string",
                                                                             "format": "binary"}}}},
                          **_errors(401, 403, 404, 503)}}},
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The OpenAPI document."""
    return jsonify(document())
