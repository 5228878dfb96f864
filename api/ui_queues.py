"""The analyst UI's named queues and team dashboard: a named queue's cases on the queue page (`/ui/?queue=NAME`,
flagged against its own SLA), the admins' page that defines queues (`/ui/queues`) and the team dashboard
(`/ui/dashboard`). Part of the `ui` blueprint (api/ui.py); the same core services as `/v1/queues`,
`/v1/dashboard` and `fraud-service queues`."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from api import cases as case_api
from api.core import core
from api.ui import WINDOWS, _named, _person, _problems, admins_only, bp, page_args, signed_in, window_days
from fraud_service.access.users import list_users
from fraud_service.cases import oversight, queues
from fraud_service.cases.queues import DECISIONS
from fraud_service.cases.records import ACTIVE, LABELS, QueueFilter
from fraud_service.data.contract import RETURN_TYPES
from fraud_service.errors import QueueNotFound, RequestInvalid


def named_queue(name: str) -> ResponseReturnValue:
    """The queue page showing the named queue NAME's cases (the main queue's order, its SLA)."""
    try:
        f = case_api.queue_filter(MultiDict({k: v for k, v in request.args.items() if k in ("limit", "offset")}))
        record, page = queues.page(core().uow(), name=name, now=core().clock(), limit=f.limit, offset=f.offset)
    except QueueNotFound:
        abort(404, f"There is no queue {name}.")
    except RequestInvalid as exc:
        abort(400, _problems(exc))
    return render_template("ui/queue.html", page=page, f=QueueFilter(limit=f.limit, offset=f.offset), reasons=[],
                           assignees=[], statuses=(), active=ACTIVE, sorts=(), labels=LABELS, decisions=[],
                           args=page_args(), closed_list=False, named=_named(), selected=record)


@bp.get("/queues")
@signed_in
def queues_page() -> ResponseReturnValue:
    admins_only("Defining queues is for admins.")
    people = [u.name for u in list_users(core().uow()) if u.disabled_at is None]
    return render_template("ui/queues.html", queues=queues.listing(core().uow(), now=core().clock()), people=people,
                           active=ACTIVE, decisions=DECISIONS, return_types=RETURN_TYPES)


def _body(form: Any) -> dict[str, Any]:
    """A queue definition from the page's form (numbers as typed, so the core names a bad one)."""
    def number(text: str, kind: type) -> Any:
        try:
            return kind(text)
        except ValueError:
            return text

    rule: dict[str, Any] = {"statuses": form.getlist("statuses") or list(ACTIVE)}
    for name in ("decision", "reason", "return_type"):
        if form.get(name):
            rule[name] = form[name]
    if form.get("min_amount"):
        rule["min_amount"] = number(form["min_amount"], float)
    if form.get("appealed") in ("true", "false"):
        rule["appealed"] = form["appealed"] == "true"
    return {"filter": rule, "sla_hours": number(form.get("sla_hours", ""), float),
            "cap": number(form.get("cap", ""), int), "members": form.getlist("members")}


@bp.post("/queues")
@signed_in
def queues_save() -> ResponseReturnValue:
    admins_only("Defining queues is for admins.")
    name = request.form.get("name", "").strip()
    try:
        queues.put(core().uow(), name=name, body=_body(request.form), actor=_person().actor, now=core().clock())
        flash(f"Queue {name} saved.", "info")
    except RequestInvalid as exc:
        flash(f"Nothing was saved: {_problems(exc)}", "error")
    return redirect(url_for("ui.queues_page"))


@bp.post("/queues/<name>/remove")
@signed_in
def queues_remove(name: str) -> ResponseReturnValue:
    admins_only("Defining queues is for admins.")
    try:
        queues.remove(core().uow(), name=name, actor=_person().actor, now=core().clock())
        flash(f"Queue {name} removed; its cases stay as they are.", "info")
    except QueueNotFound:
        flash(f"There is no queue {name}.", "error")
    return redirect(url_for("ui.queues_page"))


@bp.get("/dashboard")
@signed_in
def dashboard_page() -> ResponseReturnValue:
    admins_only("The team dashboard is for admins.")
    days = window_days()
    board = oversight.dashboard(core().uow(), days=days, now=core().clock())
    peak = max([1, *(d.opened for d in board.overall.per_day), *(d.closed for d in board.overall.per_day)])
    return render_template("ui/dashboard.html", board=board, days=days, choices=WINDOWS, peak=peak)
