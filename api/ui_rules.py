"""The analyst UI's rules and lists pages. Admins change the hard rules (thresholds, decisions, on or off, custom
rules) after backtesting them over the assessments already made, and add or remove list entries with a reason and
an optional expiry; analysts read both. The same core services as `/v1/rules` and `/v1/lists`. Part of the `ui`
blueprint."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from api import rules as rules_api
from api.core import core
from api.ui import _person, _problems, _who, admins_only, bp, signed_in
from fraud_service.errors import ListEntryExists, ListEntryNotFound, Problem, RequestInvalid
from fraud_service.scoring import lists
from fraud_service.scoring.rules import BUILTINS, LIST_ENTITIES, LISTS, MAX_CUSTOM

BLANK_RULES = 2  # empty rows for new custom rules
ADMINS = "Only admins change the rules and lists."


def rule_set_from(form: MultiDict[str, str]) -> dict[str, Any]:
    """The rule set the rules form describes (the shape PUT /v1/rules takes); a bad value is passed on as typed,
    so the rule set's own checks name it."""
    def number(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    builtin = {}
    for name in BUILTINS:
        builtin[name] = {"enabled": form.get(f"b.{name}.enabled") == "on",
                         "threshold": number(form.get(f"b.{name}.threshold", "")),
                         "decision": form.get(f"b.{name}.decision", "")}
    custom = []
    text = form.get("rows", "0")
    digits = text.lstrip("0") if text.isascii() and text.isdigit() else ""
    rows = min(int(digits[:7] or "0"), MAX_CUSTOM + BLANK_RULES)  # 7 digits are past the cap (int() refuses 4,300)
    for i in range(rows):
        fields = {k: form.get(f"c.{i}.{k}", "").strip() for k in ("name", "when", "decision", "description")}
        if fields["name"] or fields["when"]:
            custom.append({**fields, "enabled": form.get(f"c.{i}.enabled") == "on"})
    return {"builtin": builtin, "custom": custom}


@bp.get("/rules")
@signed_in
def rules_page() -> ResponseReturnValue:
    view = rules_api.rules_view()
    return render_template("ui/rules.html", view=view, proposed=view["rules"], result=None, days=30,
                           blank=BLANK_RULES)


@bp.post("/rules")
@signed_in
def rules_action() -> ResponseReturnValue:
    admins_only(ADMINS)
    proposed = rule_set_from(request.form)
    days_text = request.form.get("days", "30")
    whole = days_text.isascii() and days_text.isdigit() and len(days_text) <= 12  # int() refuses 4,300 digits
    days: Any = int(days_text) if whole else days_text[:20]  # as typed (the backtest names it), cut short
    result = None
    try:
        if request.form.get("action") == "save":
            saved = rules_api.save(proposed, request.form.get("reason", ""), _person().actor)
            flash(f"Rule set version {saved['version']} is in force.", "info")
            return redirect(url_for("ui.rules_page"))
        result = rules_api.run_backtest(proposed, days, None).to_dict()
    except RequestInvalid as exc:
        flash(_problems(exc), "error")
    view = rules_api.rules_view()
    return render_template("ui/rules.html", view=view, proposed={**proposed, "version": None}, result=result,
                           days=days, blank=BLANK_RULES)


@bp.get("/lists")
@signed_in
def lists_page() -> ResponseReturnValue:
    now = core().clock()
    entries = [(e, e.expired(now)) for e in lists.entries(core().uow())]
    return render_template("ui/lists.html", entries=entries, entities=LIST_ENTITIES, names=LISTS)


@bp.post("/lists")
@signed_in
def lists_add() -> ResponseReturnValue:
    admins_only(ADMINS)
    form, now = request.form, core().clock()
    days = form.get("expires_in_days", "").strip()
    try:
        expires = None
        if days:
            try:
                span = float(days)
                if not 0 < span <= 36500:
                    raise ValueError(days)
                expires = now + dt.timedelta(days=span)
            except (ValueError, OverflowError):
                raise RequestInvalid([Problem("expires_in_days", f"got {days!r}", "a number of days above 0 (at most "
                                                                                   "36500)")]) from None
        entry = lists.add(core().uow(), entity=form.get("entity"), value=form.get("value"),
                          list_name=form.get("list"), reason=form.get("reason"), expires_at=expires, **_who())
        core().lists_changed()
        flash(f"{entry.entity} {entry.value} is on the {entry.list} list.", "info")
    except RequestInvalid as exc:
        flash(_problems(exc), "error")
    except ListEntryExists as exc:
        flash(str(exc), "error")
    return redirect(url_for("ui.lists_page"))


@bp.post("/lists/remove")
@signed_in
def lists_remove() -> ResponseReturnValue:
    admins_only(ADMINS)
    form = request.form
    try:
        entry = lists.remove(core().uow(), entity=form.get("entity", ""), value=form.get("value", ""),
                             reason=form.get("reason") or None, **_who())
        core().lists_changed()
        flash(f"{entry.entity} {entry.value} is off the {entry.list} list.", "info")
    except (RequestInvalid, ListEntryNotFound) as exc:
        flash(_problems(exc) if isinstance(exc, RequestInvalid) else str(exc), "error")
    return redirect(url_for("ui.lists_page"))
