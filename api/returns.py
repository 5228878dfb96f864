"""The returns workflow's API: assess a return, read an assessment's evidence."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core, json_body
from api.feedback import reader
from api.metrics import Metrics
from fraud_service.access.keys import Principal
from fraud_service.errors import BadRequest
from fraud_service.feedback import outcomes
from fraud_service.scoring.evidence import request_hash
from fraud_service.scoring.request import ReturnRequest, parse_request
from fraud_service.scoring.service import Assessor, Outcome

bp = Blueprint("returns", __name__)


@bp.post("/v1/returns/assess")
@requires("scoring")
def assess() -> ResponseReturnValue:
    """Score one return request; the same return_id again returns the stored assessment.

    An ordinary request (a JSON object, a known key) is answered by `api.assess_path` before Flask sees it; this
    view answers the rest, and any request when that path is off. Both run `decide` and `answer`."""
    body = json_body()
    if body is None:
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    parsed = parse_request(body, dt.datetime.now(dt.UTC))
    outcome = decide(core().require_assessor(), parsed, body, current_principal(), current_app.extensions["metrics"])
    data, status, headers = answer(outcome)
    return Response(data, mimetype="application/json"), status, headers


def decide(assessor: Assessor, parsed: ReturnRequest, body: dict[str, Any], principal: Principal,
           metrics: Metrics) -> Outcome:
    """Assess PARSED (decoded from BODY) for PRINCIPAL; a new decision is counted in METRICS."""
    outcome = assessor.assess(parsed, request_hash(body), principal.actor,
                              principal if principal.role == "scoring" else None)  # as `feedback.reader`
    if not outcome.replayed:
        metrics.decided(outcome.response)
    return outcome


def answer(outcome: Outcome) -> tuple[bytes, int, list[tuple[str, str]]]:
    """OUTCOME's answer: its JSON, 201 (200 for a replay, marked `Idempotent-Replayed`) and headers."""
    data = orjson.dumps(outcome.response, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [("Location", outcome.response["evidence"])]
    if outcome.replayed:
        headers.append(("Idempotent-Replayed", "true"))
        return data, 200, headers
    return data, 201, headers


@bp.get("/v1/assessments/<assessment_id>")
@requires("scoring", "analyst")
def get_assessment(assessment_id: str) -> ResponseReturnValue:
    """The stored evidence of one assessment and its outcome in force (a scoring key: those its name made)."""
    service = core()
    return jsonify(outcomes.read(service.uow(), assessment_id=assessment_id, messages=service.feedback.messages,
                                 reader=reader()))
