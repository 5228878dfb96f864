"""The analyst UI's webhooks page (admins): each webhook with its pending and dead deliveries, and a button that
sends a dead event again. It is part of the `ui` blueprint (api/ui.py) and calls the same core service as
`/v1/webhooks` and `fraud-service webhooks`."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from api.core import core
from api.ui import _person, admins_only, bp, signed_in
from fraud_service.errors import RequestInvalid, WebhookNotFound
from fraud_service.feedback import webhooks


@bp.get("/webhooks")
@signed_in
def webhooks_page() -> ResponseReturnValue:
    admins_only("Webhooks are managed by admins.")
    hooks = webhooks.listing(core().uow())
    dead = {h.id: webhooks.deliveries(core().uow(), webhook_id=h.id, status="dead", limit=50) for h in hooks if h.dead}
    return render_template("ui/webhooks.html", hooks=hooks, dead=dead)


@bp.post("/webhooks/replay")
@signed_in
def webhooks_replay() -> ResponseReturnValue:
    admins_only("Webhooks are managed by admins.")
    event_id, hook_id = request.form.get("event_id", ""), request.form.get("webhook_id") or None
    try:
        queued = webhooks.replay(core().uow(), event_id=event_id, webhook_id=hook_id, actor=_person().actor,
                                 retry_hours=core().settings.webhook_retry_hours, now=core().clock())
        flash(f"Event {event_id} is queued again ({queued} delivery(ies)).", "info")
    except WebhookNotFound as exc:
        flash(str(exc), "error")
    except RequestInvalid as exc:
        flash("; ".join(f"{p.field}: {p.problem} (expected {p.expected})" for p in exc.problems), "error")
    return redirect(url_for("ui.webhooks_page"))
