"""The one place where errors become HTTP responses: JSON bodies, distinct codes, nothing leaked."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from fraud_service.bootstrap import NotReady
from fraud_service.cases.service import CaseConflict, CaseNotFound
from fraud_service.errors import FraudServiceError
from fraud_service.scoring.request import RequestInvalid
from fraud_service.scoring.service import Conflict, Unavailable


class ApiError(Exception):
    """An error with its HTTP status and machine-readable code, raised by views."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _body(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    payload = {"error": code, "message": message, "request_id": g.get("request_id"), **extra}
    return jsonify(payload), status


def _unavailable(message: str) -> tuple[Response, int]:
    logging.getLogger("api").error("unavailable: %s", message)
    response, status = _body(503, "unavailable", message)
    response.headers["Retry-After"] = "5"
    return response, status


def register(app: Flask) -> None:
    """Install the handlers on APP."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        response, status = _body(exc.status, exc.code, exc.message, **exc.extra)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="fraud-service"'
        return response, status

    @app.errorhandler(RequestInvalid)
    def invalid(exc: RequestInvalid) -> tuple[Response, int]:
        return _body(422, "invalid_request", f"{len(exc.problems)} field(s) break the contract",
                     problems=[p.to_dict() for p in exc.problems])

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict) -> tuple[Response, int]:
        return _body(409, "conflict", str(exc))

    @app.errorhandler(CaseNotFound)
    def case_not_found(exc: CaseNotFound) -> tuple[Response, int]:
        return _body(404, "not_found", str(exc))

    @app.errorhandler(CaseConflict)
    def case_conflict(exc: CaseConflict) -> tuple[Response, int]:
        return _body(409, "conflict", str(exc))

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> tuple[Response, int]:
        return _unavailable(f"{exc}; no decision was made, retry later")

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_down(exc: Exception) -> tuple[Response, int]:
        return _unavailable("the evidence database cannot be reached; nothing was decided or changed, retry later")

    @app.errorhandler(NotReady)
    def not_ready(exc: NotReady) -> tuple[Response, int]:
        return _body(503, "not_ready", str(exc))

    @app.errorhandler(FraudServiceError)
    def service_error(exc: FraudServiceError) -> tuple[Response, int]:
        return _body(400, "bad_request", str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return _body(status, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        logging.getLogger("api").exception("unhandled error")
        return _body(500, "internal_error", "an unexpected error occurred; it was logged with this request id")
