"""Modeling commands, for data scientists: train, evaluate, thresholds, score-batch (the registry's: `registry`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from api.cli.common import (
    Subparsers,
    add_command,
    check_windows,
    cli_actor,
    costs_from,
    number_in,
    positive_int,
    positive_int_at_most,
    progress,
    share,
    timestamp,
    writable_beside,
)
from api.cli.common import train_until as until_arg
from fraud_service.config import Settings
from fraud_service.errors import BadRequest
from models.registry import ModelRegistry
from training.gate import summary as gate_summary


def _why_not(settings: Settings, version: str) -> str:
    from fraud_service.scoring.promotion import gate_refusal

    return gate_refusal(ModelRegistry(settings.models_dir), version) or (
        f"it passed its gate; `fraud-service models promote {version}` makes it production")


def _print_rates(basis: dict[str, object]) -> None:
    """The policy's expected decision rates on the window it was sized on."""
    rates = basis.get("expected_rates")
    if isinstance(rates, dict):
        print("expected on the sizing window: " + ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in rates.items()))
    ruled, costs = basis.get("ruled_share"), basis.get("costs")
    headroom = basis.get("friction_headroom", 0.0)
    if isinstance(ruled, float) and isinstance(costs, dict) and isinstance(headroom, float) and \
            ruled >= costs.get("max_friction", 1.0) - headroom:
        print(f"warning: the hard rules alone stop {ruled:.1%} of the sizing window's returns, at or above what "
              f"the friction ceiling ({costs['max_friction']:.1%}, less {headroom:.1%} of headroom for a week's "
              "ups and downs) allows: the model's bands add nothing; a higher --max-friction lets the model act")


def _print_candidates(candidates: dict[str, dict[str, object]], leaked: list[str]) -> None:
    print(f"{'candidate':<22} {'avg prec':>9} {'ROC AUC':>8} {'prec@2%':>8} {'rec@2%':>7} {'rec@5%':>7} "
          f"{'money@2%':>9} {'Brier':>7}")
    for name, m in candidates.items():
        at = m["at_rate"]
        assert isinstance(at, dict)
        label = name + (" *" if name in leaked else "")
        print(f"{label:<22} {m['average_precision']:>9.4f} {m['roc_auc']:>8.4f} {at['2%']['precision']:>8.4f} "
              f"{at['2%']['recall']:>7.4f} {at['5%']['recall']:>7.4f} {at['2%']['money_recall']:>9.4f} "
              f"{m['brier']:>7.4f}")
    if leaked:
        print("* trained on labels from inside this window: not an out-of-time figure (see the warning below)")
    model = candidates.get("model", {})
    by_type = model.get("by_typology")
    if isinstance(by_type, dict):
        print("recall at a 2% review rate by true typology (model): "
              + ", ".join(f"{k} {v['recall']:.2f} (n={v['returns']})" for k, v in by_type.items()))


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train a model, evaluate it out of time beside the baselines, report, and register it."""
    from training.labels import sync_labels
    from training.workflow import first_production_recorded, train

    check_windows(args)
    if args.train_until is not None and "test_days" in getattr(args, "given", ()):
        raise BadRequest("--test-days sets the test window of --train-until now; with a date, the test window is "
                         "--test-from (default: --train-until) to --test-until (default: the last request less the "
                         "label delay)")
    ModelRegistry(settings.models_dir).aliases()  # a registry that lost its aliases file: said before any work
    for line in sync_labels(settings, rebuild_features=True, copy=not args.no_sync, progress=progress(args)):
        print(line)
    result = train(settings, args.train_until, train_from=args.train_from, test_from=args.test_from,
                   test_until=args.test_until, test_days=args.test_days, delay_days=args.label_delay,
                   costs=costs_from(args), truth_path=Path(args.ground_truth) if args.ground_truth else None,  # type: ignore[arg-type]
                   config=_config(args), progress=progress(args))  # type: ignore[arg-type]
    rows = result.trained.rows
    members = result.trained.members
    positives = rows["train_positives"] + rows["validation_positives"]
    print(f"trained on {rows['train'] + rows['validation']:,} returns ({positives:,} fraud/abuse labels), "
          f"{result.trained.best_iteration} trees" + (f" in each of {members} models averaged" if members > 1 else ""))
    if result.test["candidates"]:
        window = result.test["window"]
        print(f"out of time, returns requested {window[0][:10]} to {window[1][:10]}:")
        _print_candidates(result.test["candidates"], result.test.get("leaked", []))
    p = result.policy
    print(f"policy {p.version}: inspect from {p.inspect_from:.3f}, store credit from {p.credit_from:.3f}, "
          f"review from {p.review_from:.3f}, deny from {p.deny_from:.3f}")
    _print_rates(p.basis)
    if result.gate is not None:
        print(gate_summary(result.gate))
    for note in result.notes:
        print(f"warning: {note}")
    if result.record is not None:
        aliases = [a for a, v in ModelRegistry(settings.models_dir).aliases().items() if v == result.record.version]
        print(f"registered model {result.record.version} ({', '.join(aliases)}) in {settings.models_dir}")
        if "production" not in aliases:
            print(f"not production: {_why_not(settings, result.record.version)}")
        else:
            print(first_production_recorded(settings, result.record.version, cli_actor()))
    print(f"report: {result.report_dir / 'report.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Prequential evaluation: successive train/test windows beside the rules and the production model."""
    from training.workflow import prequential

    result, report = prequential(settings, folds=args.folds, test_days=args.test_days, until=args.until,
                                 delay_days=args.label_delay, config=_config(args),  # type: ignore[arg-type]
                                 truth_path=Path(args.ground_truth) if args.ground_truth else None,
                                 progress=progress(args))
    print(f"{len(result['folds'])} folds of {args.test_days} days; mean ± std across folds:")
    for name, summary in result["summary"].items():
        print(f"  {name:<22} " + "  ".join(f"{path} {s['mean']:.4f}±{s['std']:.4f}"
                                           for path, s in summary.items() if path in
                                           ("average_precision", "roc_auc", "at_rate.2%.recall")))
    overlapping = [i + 1 for i, fold in enumerate(result["folds"]) if fold["production_trained_on_test_window"]]
    if overlapping:
        print(f"note: the production model was trained on returns of the test window of fold(s) "
              f"{', '.join(map(str, overlapping))}: its figures there are not out of time")
    print(f"report: {report / 'report.html'}")
    return 0


def cmd_thresholds(args: argparse.Namespace, settings: Settings) -> int:
    """Propose new thresholds for a model from capacity and costs, and record them as its next policy."""
    from training.workflow import repolicy

    policy = repolicy(settings, args.version, costs_from(args), days=args.days,  # type: ignore[arg-type]
                      progress=progress(args))
    print(json.dumps(policy.to_dict(), indent=2))
    _print_rates(policy.basis)
    print(f"policy {policy.version} recorded; running services use it within seconds when that model is "
          "production")
    return 0


def cmd_score_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Score the returns of a window with a registered model."""
    from training.batch import score_batch
    from training.trainset import Window

    if args.end <= args.start:
        raise BadRequest(f"--from {args.start.isoformat()} --to {args.end.isoformat()}: the window ends before it "
                         "starts")
    out = writable_beside(Path(args.out))  # known before scoring, not after it
    model, stand_in = args.model or "production", None
    registry = ModelRegistry(settings.models_dir)
    if args.model is None and "production" not in registry.aliases() and registry.versions():
        # the first `train` registers its model without promoting it when its gate fails or it has no test window
        # (labels held back after the cutoff): the data scientist's next step is still to score a window with it
        model = registry.versions()[-1]
        stand_in = (f"no model is production yet, so the newest registered one, {model}, scored these (not "
                    f"production: {_why_not(settings, model)}); --model names another")
    result = score_batch(settings, Window(args.start, args.end), out, model, progress(args))
    n = result.list_entries
    lists = "no evidence database, no lists" if n is None else f"{n} list entr{'y' if n == 1 else 'ies'} in its history"
    print(f"scored {result.rows:,} returns with model {result.model_version} (policy {result.policy_version}, "
          f"{lists}): " + ", ".join(f"{v:,} {k}" for k, v in sorted(result.decisions.items())))
    print(f"written to {result.out}")
    if result.in_sample is not None:
        print(f"warning: {result.in_sample}")
    if stand_in is not None:
        print(f"warning: {stand_in}")
    return 0


def register(sub: Subparsers) -> None:
    """The modeling commands."""
    _train(sub)
    p = add_command(sub, "evaluate", cmd_evaluate,
                    "prequential evaluation beside the rules and the production model",
                    "Train on everything before each of --folds successive test windows of --test-days days\n"
                    "(ending at --until, default the last request minus the label delay) and test on the window;\n"
                    "report every metric per fold and its mean and spread, for the model, the rules baseline and\n"
                    "the production model, as HTML + JSON under $FRAUD_HOME/reports. Nothing is registered.")
    p.add_argument("--folds", type=positive_int, default=3, help="number of test windows (default 3)")
    p.add_argument("--test-days", type=positive_int_at_most(MAX_DAYS), default=30,
                   help="days per test window (default 30)")
    p.add_argument("--until", type=timestamp, metavar="DATE", help="end of the last test window")
    _training_options(p)
    p = add_command(sub, "thresholds", cmd_thresholds,
                    "propose decision thresholds for a model from capacity and costs",
                    "Score the returns of the last --days days with model V, choose the probability at which\n"
                    "each decision (approve after inspection, store credit only, review, deny) becomes the\n"
                    "cheapest given the costs, narrow the review band to the team's capacity, and record the\n"
                    "result as the model's next policy version (V.pN).")
    p.add_argument("version", metavar="V", nargs="?", default="production", help="model (default production)")
    p.add_argument("--days", type=positive_int, default=30, help="recent days to size the bands on (default 30)")
    _cost_options(p)
    p = add_command(sub, "score-batch", cmd_score_batch, "score every return of a window with a registered model",
                    "Score each ingested return requested in [--from, --to) with the features it had at its own\n"
                    "requested_at and decide it as the scoring API would have then: the model's policy, the\n"
                    "allow/block lists as they stood at that time (from the evidence log) and the hard rules.\n"
                    "Writes return_id, score, decision, model_decision, rules_fired, model_version,\n"
                    "policy_version and the top three reasons (reason_1..3) to FILE (.csv or .parquet). Uses the\n"
                    "production model (the newest registered one while none is production, with a warning)\n"
                    "unless --model names another: run it twice for a shadow comparison.")
    p.add_argument("--from", dest="start", required=True, type=timestamp, metavar="DATE",
                   help="the first requested_at scored (ISO 8601; naive means UTC)")
    p.add_argument("--to", dest="end", required=True, type=timestamp, metavar="DATE",
                   help="the end of the window, not included")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, .csv or .parquet")
    p.add_argument("--model", metavar="V", help="model version or alias (default production; while no model is "
                                                 "production, the newest registered one)")


def _train(sub: Subparsers) -> None:
    p = add_command(sub, "train", cmd_train, "train a model, evaluate it out of time, register it",
                    "Build the training set through the feature store (each return's features as of its\n"
                    "requested_at), label it with the labels known at --train-until (fraud or abuse = 1; legit = 0;\n"
                    "a return with no label yet weighs by how likely its label would have arrived by then, so the\n"
                    "newest unlabelled returns barely count as legit), train LightGBM with early stopping on the\n"
                    "latest 20% of the matured rows, calibrate there, train again on every row for the rounds\n"
                    "chosen, and evaluate on the returns requested from --test-from (default --train-until) to\n"
                    "--test-until (default: the last request minus the label delay, so the test labels have had\n"
                    "time to arrive) beside the rules baselines and the production model. Proposes decision\n"
                    "thresholds under the review capacity and the friction ceiling, judges the promotion gate,\n"
                    "writes an HTML + JSON report under $FRAUD_HOME/reports and registers the model as candidate\n"
                    "(and production when there is none and it passes its gate; a model without a test window\n"
                    "never is).\n"
                    "Analysts' labels from closed cases are copied into the warehouse first (`labels sync`; the\n"
                    "features are rebuilt "
                    "when that adds any). See docs/training.md.")
    p.add_argument("--no-sync", action="store_true", help="do not copy analysts' labels into the warehouse first")
    p.add_argument("--train-until", required=True, type=until_arg, metavar="DATE|now",
                   help="label cutoff: train on what was known at this time; `now`: keep the last --test-days days "
                        "with mature labels as the test window and train on what was known before them")
    p.add_argument("--train-from", type=timestamp, metavar="DATE", help="first request time to train on")
    p.add_argument("--test-from", type=timestamp, metavar="DATE", help="test window start (default --train-until)")
    p.add_argument("--test-until", type=timestamp, metavar="DATE",
                   help="test window end (default: last request minus the label delay)")
    p.add_argument("--test-days", type=positive_int_at_most(MAX_DAYS), default=30, metavar="D",
                   help="with --train-until now, the days of the test window (default 30; refused with a date)")
    _training_options(p)
    _cost_options(p)


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-delay", type=number_in(0, MAX_DAYS), default=None, metavar="DAYS",
                   help="how long labels take to arrive: the returns of the last DAYS before the cutoff train "
                        "(weighted) but neither validate nor calibrate (default: the 75th percentile of how late "
                        "fraud/abuse labels arrived, at most 30%% of the window)")
    p.add_argument("--ground-truth", metavar="FILE",
                   help="a generator's ground_truth.parquet (or a .csv with return_id, truth, typology): adds "
                        "recall by true typology to the report")
    p.add_argument("--ensemble", type=positive_int_at_most(MAX_MEMBERS), default=None, metavar="N",
                   help="models averaged into the final one, each sampling its own rows and features (default 3, "
                        f"at most {MAX_MEMBERS}; 1 trains a single model: faster to train and to explain, slightly "
                        "less accurate; docs/training.md)")


MAX_MEMBERS = 20
"""Members beyond this add nothing measurable and multiply what training, scoring and explaining cost."""
MAX_DAYS = 3650
"""The longest label delay or test window in days a command takes (ten years)."""
MAX_MONEY = 1e9
"""The largest cost or count a cost option takes (what a request may carry as an amount)."""


def _config(args: argparse.Namespace) -> object:
    """The training configuration (a TrainConfig) the command's options ask for."""
    from training.workflow import DEFAULT_CONFIG

    if args.ensemble is None:
        return DEFAULT_CONFIG
    return dataclasses.replace(DEFAULT_CONFIG, ensemble=args.ensemble)


def _cost_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reviews-per-day", type=number_in(0, MAX_MONEY), default=50.0, metavar="N",
                   help="analyst reviews a day (default 50)")
    p.add_argument("--loss-per-fraud", type=number_in(0, MAX_MONEY), default=None, metavar="N",
                   help="loss when a fraud is paid out (default: mean refund of labelled fraud/abuse)")
    p.add_argument("--review-cost", type=number_in(0, MAX_MONEY), default=12.0, metavar="N",
                   help="cost of one review (default 12)")
    p.add_argument("--inspection-cost", type=number_in(0, MAX_MONEY), default=4.0, metavar="N",
                   help="cost of one inspection (default 4)")
    p.add_argument("--credit-friction", type=number_in(0, MAX_MONEY), default=3.0, metavar="N",
                   help="cost of forcing store credit on an honest customer (default 3)")
    p.add_argument("--deny-friction", type=number_in(0, MAX_MONEY), default=60.0, metavar="N",
                   help="cost of denying an honest customer (default 60)")
    p.add_argument("--max-friction", type=share, default=0.05, metavar="SHARE",
                   help="ceiling on the share of returns not approved at once, e.g. 0.05 or 5%% (default 5%%)")
