"""Service status: liveness, the warehouse's contents, and a start page saying what is running."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue

from api.auth import optional_principal
from api.core import core
from api.ui import current_person
from fraud_service.data.contract import TABLES
from fraud_service.data.warehouse import Warehouse
from fraud_service.health import readiness

bp = Blueprint("status", __name__)


PRIVATE = ("source", "fingerprint", "warehouse")
"""What only a caller with a key or a signed-in person sees: where the data lives and came from, its identity."""


def warehouse_status(detail: bool) -> dict[str, Any]:
    """The current snapshot's name and row counts (empty when nothing is ingested); with DETAIL also its origin,
    fingerprint and the warehouse's directory."""
    settings = current_app.config["SETTINGS"]
    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        out: dict[str, Any] = {"snapshot": None, "tables": {}, "warehouse": str(settings.warehouse_dir),
                               "features": None}
    else:
        features = settings.home / "features" / "manifest.json"
        out = {
            "features": json.loads(features.read_text()) if features.exists() else None,
            "snapshot": snapshot.name,
            "created_at": snapshot.manifest.get("created_at"),
            "source": snapshot.manifest.get("source"),
            "fingerprint": snapshot.manifest.get("fingerprint"),
            "tables": {name: snapshot.rows(name) for name in TABLES},
            "warehouse": str(settings.warehouse_dir),
        }
    assessor = core().assessor  # what this worker scores with: /readyz says as much to anyone
    out["model"] = None if assessor is None else {"version": assessor.scorer.version,
                                                  "policy": assessor.policy.version}
    if detail:
        return out
    public = {k: v for k, v in out.items() if k not in PRIVATE}
    if public.get("features"):  # the feature build's manifest names the snapshot's fingerprint too
        public["features"] = {k: v for k, v in public["features"].items() if k in ("snapshot", "built_at", "rows")}
    return public


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to score: model loaded, evidence database and feature store reachable (503 with reasons if not)."""
    checks = readiness(core())
    ready = all(c["ok"] for c in checks.values())
    return jsonify(ready=ready, checks=checks), 200 if ready else 503


def _known_caller() -> bool:
    """A caller with a valid key, or a signed-in person (an admin who has yet to turn on two-factor sign-in is not
    in yet): they see the detail of `warehouse_status`, on either page."""
    person = current_person()
    return optional_principal() is not None or (person is not None and not person.must_enrol)


@bp.get("/v1/status")
def status_json() -> ResponseReturnValue:
    """What data the service holds, as JSON."""
    return jsonify(warehouse_status(detail=_known_caller()))


@bp.get("/")
def index() -> ResponseReturnValue:
    """A start page: what ran, what the data holds, and where to go next."""
    return render_template("status.html", status=warehouse_status(detail=_known_caller()))
