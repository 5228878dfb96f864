"""The model registry over HTTP: analysts read it, only admins promote or roll back.

A promotion or rollback moves the registry's `production` alias and is recorded as an evidence event
(`fraud_service.scoring.promotion`, shared with the CLI); this worker swaps the model at once, the
others within seconds (fraud_service/scoring/model_watch.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core
from api.schemas import ModelChange, parse
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.scoring import promotion
from fraud_service.scoring.promotion import AliasChange
from models.registry import ModelRegistry

bp = Blueprint("models", __name__)


def _registry() -> ModelRegistry:
    return ModelRegistry(core().settings.models_dir)


def _change(default: str) -> tuple[object, bool]:
    """The body's `reason` (checked by the promotion service; DEFAULT when the body has none) and `force`.
    A forced promotion must say why: its reason has no default."""
    body = parse(ModelChange, empty_ok=True)
    if body.force and body.reason is None:
        raise RequestInvalid([Problem("reason", "missing", "why the gate is overridden, when force is true")])
    return body.reason or default, body.force


def _serving() -> str | None:
    assessor = core().assessor
    return None if assessor is None else str(assessor.scorer.version)


def _switched(change: AliasChange) -> dict[str, Any]:
    """Swap this worker's model now; what moved and what is served."""
    watch = core().watch
    if watch is not None:
        watch.check()
    ended = {"shadow_ended": change.shadow_ended} if change.shadow_ended else {}
    return {"production": change.version, "previous": change.previous, "serving": _serving(), **ended}


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
    """Make REF (a version, `latest` or `candidate`) the production model, if it passed its promotion gate against
    the production model (409 saying why, otherwise; `force` with a `reason` overrides, recorded as evidence)."""
    reason, force = _change("promoted through the API")
    change = promotion.promote(_registry(), core().uow(), ref=ref, reason=reason, actor=current_principal().actor,
                               force=force)
    return jsonify(_switched(change))


@bp.post("/v1/models/rollback")
@requires("admin")
def rollback() -> ResponseReturnValue:
    """Put back the production model the current one replaced."""
    reason, _ = _change("rolled back through the API")
    change = promotion.rollback(_registry(), core().uow(), reason=reason, actor=current_principal().actor)
    return jsonify(_switched(change))
