"""The returns system hears back: inspections, appeals, and the webhooks that announce outcomes and closed cases.

Scoring keys post inspections and appeals (and read the assessments they made, with their outcome: see
api/returns.py); admin keys manage webhooks. The core's feedback services do the work
(`fraud_service.feedback`).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core
from api.schemas import AppealIn, InspectionIn, WebhookIn, parse
from fraud_service.access.keys import Principal
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.feedback import appeals, inspections, webhooks

bp = Blueprint("feedback", __name__)


def reader() -> Principal | None:
    """Whose assessments the caller may see: a scoring key those of its name only (None: every one)."""
    principal = current_principal()
    return principal if principal.role == "scoring" else None


@bp.post("/v1/returns/<id:return_id>/inspection", merge_slashes=False)  # a return id may hold slashes
@requires("scoring")
def inspection(return_id: str) -> ResponseReturnValue:
    """The warehouse's inspection of a return: stored, labelled, live in features, and deciding a pending inspection
    (201; the same inspection again answers 200 with the stored result)."""
    body = parse(InspectionIn)
    service = core()
    done = inspections.record(service.uow(), return_id=return_id, inspected_at=body.inspected_at,
                              outcome=body.outcome, notes=body.notes or "", actor=current_principal().actor,
                              feedback=service.feedback, now=service.clock(), live=service.inspected,
                              reader=reader())
    return jsonify(done.to_dict()), 200 if done.replayed else 201


@bp.post("/v1/assessments/<assessment_id>/appeal")
@requires("scoring")
def appeal(assessment_id: str) -> ResponseReturnValue:
    """A shopper's objection: the case is reopened (or opened) at the top of the queue with the message (the same
    message again while its appeal is pending answers the outcome in force, `replayed`, and records nothing)."""
    body = parse(AppealIn)
    service = core()
    done = appeals.appeal(service.uow(), assessment_id=assessment_id, message=body.message,
                          actor=current_principal().actor, feedback=service.feedback, reader=reader(),
                          now=service.clock())
    return jsonify(done.to_dict())


@bp.post("/v1/webhooks")
@requires("admin")
def add_webhook() -> ResponseReturnValue:
    """A new webhook; its secret is in this answer only."""
    body = parse(WebhookIn)
    service = core()
    hook, secret = webhooks.add(service.uow(), url=body.url, events=list(body.events),
                                actor=current_principal().actor,
                                allow_private=service.settings.webhook_allow_private, now=service.clock())
    return jsonify({**hook.to_dict(), "secret": secret}), 201


@bp.get("/v1/webhooks")
@requires("admin")
def list_webhooks() -> ResponseReturnValue:
    return jsonify(webhooks=[h.to_dict() for h in webhooks.listing(core().uow())])


@bp.delete("/v1/webhooks/<webhook_id>")
@requires("admin")
def remove_webhook(webhook_id: str) -> ResponseReturnValue:
    webhooks.remove(core().uow(), webhook_id=webhook_id, actor=current_principal().actor, now=core().clock())
    return "", 204


@bp.get("/v1/webhooks/<webhook_id>/deliveries")
@requires("admin")
def deliveries(webhook_id: str) -> ResponseReturnValue:
    """A webhook's deliveries, newest event first (`status`: pending, delivered or dead; `limit`: 1 to 1000)."""
    text = request.args.get("limit") or "100"
    if not (text.isascii() and text.isdigit()):
        raise RequestInvalid([Problem("limit", f"got {text!r}", "an integer from 1 to 1000")])
    digits = text.lstrip("0") or "0"
    limit = int(digits) if len(digits) <= 12 else 10**12  # past every limit, without int() of thousands of digits
    found = webhooks.deliveries(core().uow(), webhook_id=webhook_id, status=request.args.get("status") or None,
                                limit=limit)
    return jsonify(deliveries=[d.to_dict() for d in found])


@bp.post("/v1/webhooks/events/<event_id>/replay")
@requires("admin")
def replay(event_id: str) -> ResponseReturnValue:
    """Send an event again (`webhook_id` in the query: to that webhook only), with a new retry window."""
    service = core()
    queued = webhooks.replay(service.uow(), event_id=event_id, actor=current_principal().actor,
                             webhook_id=request.args.get("webhook_id") or None,
                             retry_hours=service.settings.webhook_retry_hours, now=service.clock())
    return jsonify(event_id=event_id, queued=queued)
