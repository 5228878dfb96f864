"""`fraud-service monitor`: how the live model is doing, for a returns manager and a data scientist."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from api.cli.common import Subparsers, add_command, timestamp
from fraud_service.config import Settings

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
    p.add_argument("--drift-threshold", type=float, default=None, metavar="PSI",
                   help="PSI above which a feature or the score is drifted (default $FRAUD_DRIFT_PSI or 0.25)")
