"""Named queues and the team dashboard for machines: `/v1/queues` (read: analysts; change: admins) and
`/v1/dashboard` (admins). The UI (`api/ui_queues.py`) and `fraud-service queues` call the same core services
(`fraud_service.cases.queues`, `fraud_service.cases.oversight`)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.cases import queue_filter
from api.core import core, json_object
from fraud_service.cases import oversight, queues

bp = Blueprint("queues", __name__)


@bp.get("/v1/queues")
@requires("analyst")
def listing() -> ResponseReturnValue:
    """Every named queue with what it holds now."""
    return jsonify(queues=[q.to_dict() for q in queues.listing(core().uow(), now=core().clock())])


@bp.put("/v1/queues/<name>")
@requires("admin")
def put(name: str) -> ResponseReturnValue:
    """Create or change a queue (admin)."""
    saved = queues.put(core().uow(), name=name, body=json_object(), actor=current_principal().actor,
                       now=core().clock())
    return jsonify(saved.to_dict())


@bp.delete("/v1/queues/<name>")
@requires("admin")
def remove(name: str) -> ResponseReturnValue:
    """Remove a queue (admin)."""
    queues.remove(core().uow(), name=name, actor=current_principal().actor, now=core().clock())
    return "", 204


@bp.get("/v1/queues/<name>/cases")
@requires("analyst")
def queue_cases(name: str) -> ResponseReturnValue:
    """A page of the queue's cases, riskiest first, each flagged against the queue's SLA."""
    f = queue_filter(request.args)
    record, page = queues.page(core().uow(), name=name, now=core().clock(), limit=f.limit, offset=f.offset)
    return jsonify(queue=record.to_dict(), cases=[c.to_dict() for c in page.cases], total=page.total,
                   limit=f.limit, offset=f.offset)


@bp.get("/v1/dashboard")
@requires("admin")
def dashboard() -> ResponseReturnValue:
    """The team dashboard over the last `days` days (default 30; admin)."""
    days = oversight.check_days(request.args.get("days") or "30")
    return jsonify(oversight.dashboard(core().uow(), days=days, now=core().clock()).to_dict())
