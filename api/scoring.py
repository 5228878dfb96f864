"""The returns workflow's API: assess a return, read an assessment's evidence."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.errors import ApiError
from fraud_service.assess import load_assessment, request_hash
from fraud_service.bootstrap import NotReady
from fraud_service.requests import parse_request

bp = Blueprint("scoring", __name__)


def _assessor():  # type: ignore[no-untyped-def]
    service = current_app.extensions["fraud"]
    if service.assessor is None:
        raise NotReady("the service cannot score: " + "; ".join(service.problems))
    return service.assessor


@bp.post("/v1/returns/assess")
@requires("scoring")
def assess() -> ResponseReturnValue:
    """Score one return request; the same return_id again returns the stored assessment."""
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_request", "the body must be a JSON object (Content-Type: application/json)")
    parsed = parse_request(body, dt.datetime.now(dt.UTC))
    outcome = _assessor().assess(parsed, request_hash(body), current_principal().actor)
    if not outcome.replayed:
        current_app.extensions["metrics"].decided(outcome.response)
    response = jsonify(outcome.response)
    response.headers["Location"] = outcome.response["evidence"]
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
        return response, 200
    return response, 201


@bp.get("/v1/assessments/<assessment_id>")
@requires("scoring", "analyst")
def get_assessment(assessment_id: str) -> ResponseReturnValue:
    """The stored evidence of one assessment."""
    found = load_assessment(current_app.extensions["fraud"].sessions, assessment_id)
    if found is None:
        raise ApiError(404, "not_found", f"no assessment {assessment_id!r}")
    return jsonify(found)
