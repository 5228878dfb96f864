"""The model registry over HTTP: analysts read it, only admins promote or roll back.

A promotion or rollback moves the registry's `production` alias and is recorded as an evidence event;
this worker swaps the model at once, the others within seconds (fraud_service/model_watch.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.errors import ApiError
from fraud_service.scoring.request import Problem, RequestInvalid
from fraud_service.store import chain
from models.registry import ModelRegistry, RegistryError

bp = Blueprint("models", __name__)


def _registry() -> ModelRegistry:
    return ModelRegistry(current_app.config["SETTINGS"].models_dir)


def _reason(default: str) -> str:
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object (or empty)")
    reason = body.get("reason", default)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise RequestInvalid([Problem("reason", f"got {reason!r}", "why, in 1 to 2,000 characters")])
    return reason.strip()


def _serving() -> str | None:
    assessor = current_app.extensions["fraud"].assessor
    return None if assessor is None else str(assessor.scorer.version)


def _switched(kind: str, previous: str | None, version: str, reason: str) -> dict[str, Any]:
    """Record the alias change as evidence and swap this worker's model now."""
    actor = current_principal().actor
    payload = {"alias": "production", "from": previous, "to": version, "reason": reason}
    with current_app.extensions["fraud"].sessions.begin() as session:
        chain.append(session, kind=kind, subject=f"model:{version}", actor=actor, payload=payload)
    watch = current_app.extensions["fraud"].watch
    if watch is not None:
        watch.check()
    return {"production": version, "previous": previous, "serving": _serving()}


@bp.get("/v1/models")
@requires("analyst")
def list_models() -> ResponseReturnValue:
    """Registered versions with their aliases, training cutoff and test average precision."""
    registry = _registry()
    aliases = registry.aliases()
    versions = []
    for version in registry.versions():
        m = registry.manifest(version)
        test = (m.get("metrics") or {}).get("test") or {}
        versions.append({"version": version, "aliases": sorted(a for a, v in aliases.items() if v == version),
                         "label_cutoff": m.get("label_cutoff"), "registered_at": m.get("registered_at"),
                         "test_average_precision": test.get("average_precision")})
    return jsonify(versions=versions, aliases=aliases, serving=_serving())


@bp.post("/v1/models/<ref>/promote")
@requires("admin")
def promote(ref: str) -> ResponseReturnValue:
    """Make REF (a version, `latest` or `candidate`) the production model."""
    registry = _registry()
    reason = _reason("promoted through the API")
    try:
        version = registry.resolve(ref)
    except RegistryError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    previous = registry.aliases().get("production")
    try:
        registry.promote(version, reason)
    except RegistryError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return jsonify(_switched("model_promoted", previous, version, reason))


@bp.post("/v1/models/rollback")
@requires("admin")
def rollback() -> ResponseReturnValue:
    """Put back the production model the current one replaced."""
    reason = _reason("rolled back through the API")
    try:
        previous, version = _registry().rollback()
    except RegistryError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return jsonify(_switched("model_rolled_back", previous, version, reason))
