"""The returns workflow's API: assess a return, read an assessment's evidence."""

from __future__ import annotations

import datetime as dt

import orjson
from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core, json_body
from api.feedback import reader
from fraud_service.errors import BadRequest
from fraud_service.feedback import outcomes
from fraud_service.scoring.evidence import request_hash
from fraud_service.scoring.request import parse_request

bp = Blueprint("returns", __name__)


@bp.post("/v1/returns/assess")
@requires("scoring")
def assess() -> ResponseReturnValue:
    """Score one return request; the same return_id again returns the stored assessment."""
    body = json_body()
    if body is None:
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    parsed = parse_request(body, dt.datetime.now(dt.UTC))
    outcome = core().require_assessor().assess(parsed, request_hash(body), current_principal().actor, reader())
    if not outcome.replayed:
        current_app.extensions["metrics"].decided(outcome.response)
    response = Response(orjson.dumps(outcome.response, option=orjson.OPT_SERIALIZE_NUMPY), mimetype="application/json")
    response.headers["Location"] = outcome.response["evidence"]
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
        return response, 200
    return response, 201


@bp.get("/v1/assessments/<assessment_id>")
@requires("scoring", "analyst")
def get_assessment(assessment_id: str) -> ResponseReturnValue:
    """The stored evidence of one assessment and its outcome in force (a scoring key: those its name made)."""
    service = core()
    return jsonify(outcomes.read(service.uow(), assessment_id=assessment_id, messages=service.feedback.messages,
                                 reader=reader()))
