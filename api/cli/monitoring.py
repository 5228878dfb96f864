"""`fraud-service monitor`: how the live model is doing, for a returns manager and a data scientist."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from typing import Any

from api.cli.common import Subparsers, add_command, cli_actor, number_in, timestamp
from fraud_service.config import Settings
from fraud_service.errors import BadRequest
from models.registry import ModelRegistry

DEFAULT_DAYS = 30
SHORT = {"approve": "approve", "approve_after_inspection": "inspect", "store_credit_only": "credit",
         "review": "review", "deny": "deny"}


def plain(value: Any) -> Any:
    """VALUE with every NaN as None, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def _days(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} days"


def _print(report: dict[str, Any]) -> None:
    d = report["decisions"]
    print(f"window {report['window']['from'][:19]} to {report['window']['to'][:19]}: {d['returns']:,} assessments")
    print("decisions: " + ", ".join(f"{k.replace('_', ' ')} {_share(v)}" for k, v in d["rates"].items()))
    for day in d["per_day"][-14:]:
        print(f"  {day['day']}  {day['returns']:>6,} returns  " + "  ".join(
            f"{short} {day[k]:,}" for k, short in SHORT.items()))
    f, r, lab = report["friction"], report["review_precision"], report["label_delay"]
    print(f"friction on honest customers: {f['not_approved_at_once']:,} of {f['labelled_legit']:,} returns labelled "
          f"legit were not approved at once ({_share(f['share'])})")
    print(f"review precision: {r['bad']:,} of {r['labelled']:,} reviewed returns labelled by analysts were bad "
          f"({_share(r['precision'])})")
    print(f"labels: {lab['labelled']:,} ({_share(lab['labelled_share'])}) labelled, median delay "
          f"{_days(lab['median_days'])}, p90 {_days(lab['p90_days'])}; recall on the bad labels known "
          f"{_share(lab['recall_known'])}, estimated with the labels still to come {_share(lab['recall_estimated'])}")
    print("money: " + ", ".join(f"{k.replace('_', ' ')} {v:,.2f}" for k, v in report["money"].items()))
    s = report["score"]
    print(f"score drift (PSI against {s.get('model_version')}'s training sample): {s['psi']:.3f}"
          + (" DRIFTED" if s["drifted"] else "") + (f" ({s['note']})" if s.get("note") else ""))
    drifted = sorted(((v["psi"], k) for k, v in report["features"].items() if v["drifted"]), reverse=True)
    print(f"features drifted (PSI > {report['drift_threshold']:g}): "
          + (", ".join(f"{k} {p:.2f}" for p, k in drifted) if drifted else "none"))


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    """Decision mix, friction, review precision, label delay, money and drift of the assessments of a window."""
    import pandas as pd

    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import monitor

    end = args.end if args.end is not None else pd.Timestamp.now(tz="UTC")
    start = args.start if args.start is not None else end - pd.Timedelta(days=DEFAULT_DAYS)
    with evidence(settings) as db:
        report = monitor.live(db.uow(), settings, start=start.to_pydatetime(), end=end.to_pydatetime(),
                              threshold=args.drift_threshold)
    if args.json:
        print(json.dumps(plain(report), indent=2, sort_keys=True))
    else:
        _print(report)
    return 0


def cmd_models_shadow(args: argparse.Namespace, settings: Settings) -> int:
    """Make V the shadow model, or turn the shadow off (an evidence event when there is an evidence database)."""
    from fraud_service.bootstrap import optional_evidence
    from fraud_service.scoring import promotion

    if args.off == (args.version is not None):
        raise BadRequest("give a model version V, or --off (not both)")
    reason = args.reason or ("shadow turned off with the CLI" if args.off else "shadow scoring with the CLI")
    with optional_evidence(settings) as uow:
        change = promotion.shadow(ModelRegistry(settings.models_dir), uow, ref=None if args.off else args.version,
                                  reason=reason, actor=cli_actor())
    if args.off:
        print(f"shadow scoring with {change.previous} is off (running services stop within 5 seconds)")
    else:
        print(f"{change.version} now scores every live request beside production, without changing any answer "
              "(running services start within 5 seconds); compare with `fraud-service models compare`")
    return 0


def cmd_models_compare(args: argparse.Namespace, settings: Settings) -> int:
    """Production against the shadow model on the live assessments the shadow scored."""
    import pandas as pd

    from fraud_service.bootstrap import evidence
    from fraud_service.data.labels import ingested
    from fraud_service.data.warehouse import Warehouse
    from fraud_service.scoring import shadow
    from training.workflow import policy_costs

    end = args.end if args.end is not None else pd.Timestamp.now(tz="UTC")
    start = args.start if args.start is not None else end - pd.Timedelta(days=30)
    if end <= start:
        raise BadRequest(f"the window must end after it starts: {start.isoformat()} to {end.isoformat()}")
    registry = ModelRegistry(settings.models_dir)
    costs = asdict(policy_costs(registry.load("production").policy)) if "production" in registry.aliases() else {}
    with evidence(settings) as db:
        labels = shadow.labels_reader(db.uow, ingested(Warehouse(settings.warehouse_dir)))
        report = shadow.compare(db.uow(), start=start.to_pydatetime(), end=end.to_pydatetime(), labels=labels,
                                costs=costs, version=registry.resolve(args.model) if args.model else None)
    if args.json:
        print(json.dumps(plain(report), indent=2, sort_keys=True))
        return 0
    models = report["models"]
    scored_by = " and ".join(f"{role} {', '.join(models[role])}" for role in ("production", "shadow")
                             if models[role]) or "production and a shadow"
    print(f"{report['assessments']:,} assessments scored by {scored_by} from {report['window']['from'][:19]} to "
          f"{report['window']['to'][:19]}")
    if not report["assessments"]:
        print("nothing to compare: turn a shadow on with `fraud-service models shadow V` and let traffic come")
        return 0
    print(f"agreement {report['agreement']:.1%}; decision changes the shadow would have made: "
          + (", ".join(f"{c['from']} -> {c['to']} {c['returns']:,}" for c in report["changes"]) or "none"))
    ap, cost = report["average_precision"], report["cost_per_return"]
    print(f"on the {report['labelled']:,} labels that have arrived ({report['bad_labels']:,} fraud or abuse; "
          f"unlabelled count as legit): average precision production {ap['production']:.4f}, shadow "
          f"{ap['shadow']:.4f}; cost per return production {cost['production']:.2f}, shadow {cost['shadow']:.2f}")
    moved = report["money_moved"]
    print(f"money the change would move: {moved['newly_held']:,.2f} held that production paid at once, "
          f"{moved['newly_paid']:,.2f} paid at once that production held")
    return 0


def register(sub: Subparsers) -> None:
    """The monitor command."""
    p = add_command(sub, "monitor", cmd_monitor, "how the live model is doing: decisions, friction, labels, drift",
                    "For the assessments made in [--from, --to) (default: the last 30 days): the decision mix per\n"
                    "day and the review, deny and store-credit rates; the friction on honest customers (returns\n"
                    "later labelled legit that were not approved at once); the precision of reviews closed by\n"
                    "analysts; label delay and recall, as known and as estimated for the labels still to come;\n"
                    "the money a returns manager reports; and the PSI of every feature and of the score against\n"
                    "the training sample of the model that scored them. Labels come from the evidence database\n"
                    "and the warehouse. See docs/training.md (Live monitoring).")
    p.add_argument("--from", dest="start", type=timestamp, metavar="DATE",
                   help="window start (default --to minus 30 days)")
    p.add_argument("--to", dest="end", type=timestamp, metavar="DATE", help="window end (default now)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: decisions, friction, review_precision, label_delay, money, score, features")
    p.add_argument("--drift-threshold", type=number_in(0, 100), default=None, metavar="PSI",
                   help="PSI above which a feature or the score is drifted (default $FRAUD_DRIFT_PSI or 0.25)")
