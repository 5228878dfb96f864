"""The hard rules as data (`/v1/rules`): read them (analysts), put a new version in force (admins), and backtest a
proposed set over the assessments already made before switching it on (admins). The UI's rules page
(api/ui_rules.py) calls the same functions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core, who
from api.rule_schemas import BacktestIn, RulesIn
from api.schemas import parse
from fraud_service.scoring import backtest, rulebook
from fraud_service.scoring.rules import BUILTINS, RULE_DECISIONS

bp = Blueprint("rules", __name__)


def rules_view() -> dict[str, Any]:
    """The rule set in force, its versions, and what a rule may read and ask for."""
    rules, saved = rulebook.in_force(core().uow())
    return {"rules": rules.to_dict(), "versions": [s.to_dict() for s in saved],
            "builtins": {name: text for name, (_, text) in BUILTINS.items()},
            "features": sorted(rulebook.known_features()), "decisions": list(RULE_DECISIONS)}


def save(rules: object, reason: object, actor: str) -> dict[str, Any]:
    saved = rulebook.save(core().uow(), body=rules, reason=reason, **who(actor))
    core().lists_changed()  # this worker decides with it at once, the others within a second
    return saved.to_dict()


def run_backtest(rules: object, days: object, capacity: float | None) -> backtest.Backtest:
    """A backtest of RULES over the last DAYS days; the team's capacity from the production policy unless given."""
    service = core()
    if capacity is None and service.assessor is not None:
        costs = service.assessor.policy.basis.get("costs") or {}
        capacity = costs.get("reviews_per_day")
    return backtest.run(service.uow(), rules=rules, days=days, now=service.clock(),
                        capacity=float(capacity) if capacity is not None else None,
                        warehouse_labels=backtest.warehouse_labels(service.settings.warehouse_dir))


@bp.get("/v1/rules")
@requires("analyst")
def get_rules() -> ResponseReturnValue:
    """The hard rules in force (thresholds, decisions, on or off; custom rules), every saved version, and the
    features a custom rule may compare."""
    return jsonify(rules_view())


@bp.put("/v1/rules")
@requires("admin")
def put_rules() -> ResponseReturnValue:
    """Put a new rule set in force (the next version; an evidence event). Rules only raise a decision's severity."""
    body = parse(RulesIn)
    return jsonify(save(body.rules, body.reason, current_principal().actor))


@bp.post("/v1/rules/backtest")
@requires("admin")
def post_backtest() -> ResponseReturnValue:
    """What a proposed rule set would have done to the last `days` days of assessments; nothing is saved."""
    body = parse(BacktestIn)
    return jsonify(run_backtest(body.rules, body.days, body.capacity).to_dict())
