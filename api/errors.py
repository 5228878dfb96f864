"""The one place where errors become HTTP responses: JSON bodies, distinct codes, nothing leaked.

The core raises `fraud_service.errors`; `STATUSES` maps each kind to a status and a machine-readable
code (the most specific class in an error's ancestry wins). Anything else is a logged generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from fraud_service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    FraudServiceError,
    ModelNotFound,
    NotFound,
    NotReady,
    PromotionRefused,
    RegistryError,
    RequestInvalid,
    SignInThrottled,
    Unauthorized,
    Unavailable,
    Unstorable,
)

STATUSES: dict[type[FraudServiceError], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    RequestInvalid: (422, "invalid_request"),
    SignInThrottled: (429, "too_many_attempts"),
    Unstorable: (422, "unstorable"),
    NotReady: (503, "not_ready"),
    Unavailable: (503, "unavailable"),
    ModelNotFound: (404, "not_found"),
    PromotionRefused: (409, "conflict"),
    RegistryError: (500, "registry_damaged"),  # a file of the registry is missing or changed: the operator's to repair
    FraudServiceError: (400, "bad_request"),
}

UNEXPECTED = "an unexpected error occurred; it was logged with this request id"


def status_of(exc: FraudServiceError) -> tuple[int, str]:
    """The status and code of EXC: those of the nearest class in its ancestry that has one."""
    for kind in type(exc).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]  # type: ignore[index]
    return STATUSES[FraudServiceError]


def json_error(exc: Exception, request_id: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, JSON body and headers that answer EXC as JSON: a FraudServiceError by its kind (logged first
    when it is the store's unavailability), an HTTPException by its code, anything else as a logged 500."""
    if isinstance(exc, HTTPException):
        return exc.code or 500, _payload((exc.name or "error").lower().replace(" ", "_"),
                                         exc.description or exc.name, request_id), {}
    if not isinstance(exc, FraudServiceError):
        logging.getLogger("api").error("unhandled error", exc_info=exc)
        return 500, _payload("internal_error", UNEXPECTED, request_id), {}
    status, code = status_of(exc)
    log_unavailable(exc, request_id)
    if isinstance(exc, RequestInvalid):
        payload = {"error": code, "message": f"{len(exc.problems)} field(s) break the contract",
                   "request_id": request_id, "problems": [p.to_dict() for p in exc.problems]}
    else:
        payload = {"error": code, "message": str(exc), "request_id": request_id}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="fraud-service"'
    if status == 503:  # unavailable or not ready: both pass
        headers["Retry-After"] = "5"
    return status, payload, headers


def log_unavailable(exc: FraudServiceError, request_id: str | None) -> None:
    """When EXC says a store is unavailable, log the driver's text (its first cause): the answer only names the
    store."""
    if status_of(exc)[1] != "unavailable":
        return
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    logging.getLogger("api").error("unavailable: %s (%s)", exc, cause if cause is not exc else "no cause",
                                   extra={"fields": {"request_id": request_id}})


def _payload(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    return {"error": code, "message": message, "request_id": request_id}


def problems_text(exc: RequestInvalid) -> str:
    """EXC's problems in one line, for a page: field, problem and what was expected, each."""
    return "; ".join(f"{p.field}: {p.problem} (expected {p.expected})" for p in exc.problems)


def _page(status: int, message: str) -> tuple[str, int]:
    return render_template("ui/error.html", code=status, message=message), status


def _wants_page() -> bool:
    """A person's browser on an analyst page: errors are answered with a page, not JSON."""
    return request.path.startswith("/ui/") and request.accept_mimetypes.accept_html


def register(app: Flask) -> None:
    """Install the handlers on APP."""

    @app.errorhandler(FraudServiceError)
    def service_error(exc: FraudServiceError) -> Any:
        if _wants_page():  # e.g. a NUL in a search, refused before any UI view ran
            status = status_of(exc)[0]
            log_unavailable(exc, g.get("request_id"))
            page, status = _page(status, problems_text(exc) if isinstance(exc, RequestInvalid) else str(exc))
            return (page, status, {"Retry-After": "5"}) if status == 503 else (page, status)
        status, payload, headers = json_error(exc, g.get("request_id"))
        return jsonify(payload), status, headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response | str, int]:
        if _wants_page():
            return _page(exc.code or 500, exc.description or exc.name)
        status, payload, _ = json_error(exc, g.get("request_id"))
        return jsonify(payload), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response | str, int]:
        if _wants_page():
            logging.getLogger("api").exception("unhandled error")
            return _page(500, f"{UNEXPECTED}: {g.get('request_id')}")
        status, payload, _ = json_error(exc, g.get("request_id"))
        return jsonify(payload), status
