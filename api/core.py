"""The core as a view sees it: the service built for this app (`fraud_service.bootstrap.Service`)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from fraud_service.bootstrap import Service
from fraud_service.errors import BadRequest


def core() -> Service:
    """This app's service: units of work, the assessor, settings, the clock."""
    service: Service = current_app.extensions["fraud"]
    return service


def json_object(empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object (with EMPTY_OK, an empty body is an empty object), or BadRequest."""
    if empty_ok and not request.content_length:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)"
                         + (" or empty" if empty_ok else ""))
    return body


def who(actor: str) -> dict[str, Any]:
    """The keyword arguments every change takes: who (ACTOR), and when (the app's clock)."""
    return {"actor": actor, "now": core().clock()}
