"""The data scientist's workflows: train and register a model; prequential evaluation beside baselines.

Labels. A model trained up to a cutoff only learns from labels known at that cutoff. Returns
requested in the last `label_delay` before the cutoff are left out of training: most of their
fraud labels have not arrived yet, so they would teach the model that fresh fraud is legit.
Returns without a label count as legit (0): in a real returns flow only a small, suspicious
share is ever investigated, so dropping the unlabelled would train on that selection, not on
the traffic the model will score. Test windows are judged with every label known now.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.definitions import FEATURE_SERVICE
from fraud_service.config import Settings
from fraud_service.data.warehouse import Snapshot
from fraud_service.errors import TrainingDataError
from fraud_service.featurestore.source import FeatureSource
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from models.registry import ModelRecord, ModelRegistry
from training import evaluation, thresholds
from training.baselines import rules_score
from training.trainer import TrainConfig, TrainedModel, fit
from training.trainset import (
    Window,
    current_snapshot,
    feature_frame,
    label_delay,
    labels_as_of,
    model_features,
    positives_by_source,
    target,
    time_range,
)

LIBRARIES = ("lightgbm", "numpy", "pandas", "scikit-learn", "feast", "duckdb", "shap")
MAX_DELAY_SHARE = 0.3
DEFAULT_COSTS = thresholds.Costs()
DEFAULT_CONFIG = TrainConfig()


@dataclass
class Candidate:
    """One model being judged, with its scores on the test window."""

    name: str
    score: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    record: ModelRecord | None
    trained: TrainedModel
    policy: Policy
    test: dict[str, Any]
    report_dir: Path


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def mature_end(snapshot: Snapshot, last: pd.Timestamp) -> pd.Timestamp:
    """The default end of a test window: the last request minus the label delay.

    The most recent returns have few of their fraud labels yet; judging on them would call
    every late-labelled fraud a false positive.
    """
    return last + pd.Timedelta(microseconds=1) - label_delay(snapshot, last)


def training_rows(frame: pd.DataFrame, snapshot: Snapshot, train_until: pd.Timestamp,
                  delay: pd.Timedelta) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows requested before `train_until - delay`, with targets from labels known at `train_until`."""
    rows = frame[frame["requested_at"] < train_until - delay].reset_index(drop=True)
    return rows, target(rows, labels_as_of(snapshot, train_until))


def learnable_rows(frame: pd.DataFrame, snapshot: Snapshot, start: pd.Timestamp, train_until: pd.Timestamp,
                   delay: pd.Timedelta) -> tuple[pd.DataFrame, np.ndarray]:
    """The training rows and their targets, or TrainingDataError when there is nothing to learn from."""
    rows, y = training_rows(frame, snapshot, train_until, delay)
    if rows.empty:
        raise TrainingDataError(f"no returns were requested in {Window(start, train_until - delay)}")
    if not y.any():
        raise TrainingDataError(
            f"none of the {len(rows):,} returns requested in {Window(start, train_until - delay)} has a fraud or abuse "
            f"label known at {train_until.date()}: there is nothing to learn from. Ingest a labels table (see the data "
            "contract) or let analysts decide cases, then train again")
    return rows, y


def choose_delay(snapshot: Snapshot, start: pd.Timestamp, train_until: pd.Timestamp,
                 given_days: float | None) -> pd.Timedelta:
    """The label delay: as given, or the 75th percentile of known fraud/abuse label delays, capped."""
    if given_days is not None:
        return pd.Timedelta(days=given_days)
    cap = ((train_until - start) * MAX_DELAY_SHARE).ceil("D")
    return min(label_delay(snapshot, train_until), cap)


def score_candidates(frame: pd.DataFrame, model: Scorer, production: Scorer | None) -> list[Candidate]:
    candidates = [Candidate("model", model.score_frame(frame)), Candidate("rules", rules_score(frame)),
                  Candidate("rules+history", rules_score(frame, history=True))]
    if production is not None:
        candidates.append(Candidate(f"production {production.version}", production.score_frame(frame)))
    return candidates


def production_scorer(registry: ModelRegistry) -> Scorer | None:
    """The production model, or None when there is none (or it no longer loads)."""
    if "production" not in registry.aliases():
        return None
    return Scorer.from_registry(registry, "production")


def judge(frame: pd.DataFrame, y: np.ndarray, candidates: list[Candidate],
          truth: pd.DataFrame | None) -> dict[str, Any]:
    """Metrics of each candidate on one test window (and by typology when the truth is known)."""
    out: dict[str, Any] = {}
    for c in candidates:
        scored = evaluation.Scored.of(frame, y, c.score)
        c.metrics = evaluation.evaluate(scored)
        if truth is not None:
            known = frame[["return_id"]].merge(truth, on="return_id", how="left")
            typology = known["typology"].fillna("unknown").to_numpy()
            c.metrics["by_typology"] = evaluation.recall_by_group(scored, typology)
            y_true = known["truth"].isin(["fraud", "abuse"]).to_numpy(dtype=np.int64)
            c.metrics["against_truth"] = evaluation.evaluate(evaluation.Scored.of(frame, y_true, c.score))
        out[c.name] = c.metrics
    return out


def read_truth(path: Path | None) -> pd.DataFrame | None:
    """A generator's ground truth (return_id, truth, typology), if given."""
    if path is None:
        return None
    if not path.exists():
        raise TrainingDataError(f"ground truth file {path} does not exist")
    truth = pd.read_parquet(path)
    missing = {"return_id", "truth", "typology"} - set(truth.columns)
    if missing:
        raise TrainingDataError(f"ground truth file {path} lacks column(s) {', '.join(sorted(missing))}")
    return truth[["return_id", "truth", "typology"]]


def train(settings: Settings, train_until: pd.Timestamp, *, train_from: pd.Timestamp | None = None,
          test_from: pd.Timestamp | None = None, test_until: pd.Timestamp | None = None,
          delay_days: float | None = None, costs: thresholds.Costs = DEFAULT_COSTS,
          config: TrainConfig = DEFAULT_CONFIG, truth_path: Path | None = None, register: bool = True,
          progress: Progress = SILENT) -> TrainResult:
    """Build the training set, train, evaluate out of time beside the baselines, report, register."""
    from training.report import MODEL_TOKEN, POLICY_TOKEN, stamp_report, write_report

    snapshot = current_snapshot(settings.warehouse_dir)
    first, last = time_range(snapshot)
    start = train_from or first
    test_from = test_from or train_until
    test_until = test_until or mature_end(snapshot, last)
    if test_from < train_until:
        raise TrainingDataError(f"the test window must start at or after --train-until ({train_until.date()}), "
                                f"not {test_from.date()}: testing on training data is not an evaluation")
    delay = choose_delay(snapshot, start, train_until, delay_days)
    progress.info(f"training on returns requested in {Window(start, train_until - delay)} "
                  f"(label delay {delay.days} days), labels known at {train_until.isoformat()}; "
                  f"testing on {Window(test_from, test_until)}")
    source = FeatureSource(settings)
    frame = feature_frame(source, snapshot, Window(start, max(test_until, train_until)), progress)
    rows, y = learnable_rows(frame, snapshot, start, train_until, delay)
    features = model_features()
    with progress.step(f"training LightGBM on {len(rows):,} returns ({int(y.sum()):,} fraud/abuse labels)"):
        trained = fit(rows, y, features, config)
    model = Scorer("unregistered", trained.manifest_part(), trained.model_text)
    registry = ModelRegistry(settings.models_dir)
    production = production_scorer(registry)
    test_frame = frame[(frame["requested_at"] >= test_from) & (frame["requested_at"] < test_until)]
    test_frame = test_frame.reset_index(drop=True)
    truth = read_truth(truth_path)
    test: dict[str, Any] = {"window": [test_from.isoformat(), test_until.isoformat()], "candidates": {}}
    candidates: list[Candidate] = []
    y_test = np.zeros(len(test_frame), dtype=np.int64)
    if test_frame.empty:
        progress.info(f"no returns in the test window {Window(test_from, test_until)}: no out-of-time metrics")
        policy_frame, policy_scores = rows, model.score_frame(rows)
    else:
        with progress.step(f"evaluating on {len(test_frame):,} returns after the training window"):
            y_test = target(test_frame, labels_as_of(snapshot))
            candidates = score_candidates(test_frame, model, production)
            test["candidates"] = judge(test_frame, y_test, candidates, truth)
        policy_frame, policy_scores = test_frame, candidates[0].score
    days = max(1, (policy_frame["requested_at"].max() - policy_frame["requested_at"].min()).days + 1)
    bad_amounts = policy_frame["refund_amount"].to_numpy()[target(policy_frame, labels_as_of(snapshot)) == 1]
    policy = thresholds.propose(policy_scores, days, costs, bad_amounts)
    if not test_frame.empty:
        test["decisions"] = decision_counts(policy, test_frame, policy_scores)
    manifest = {
        "feature_service": FEATURE_SERVICE,
        **trained.manifest_part(),
        "training_window": {"from": start.isoformat(), "until": train_until.isoformat(),
                            "rows_until": (train_until - delay).isoformat(), "label_delay_days": delay.days},
        "label_cutoff": train_until.isoformat(),
        "positives_by_source": positives_by_source(snapshot, train_until, rows["return_id"]),
        "data": {"snapshot": snapshot.name, "fingerprint": snapshot.manifest.get("fingerprint")},
        "metrics": {"test": test["candidates"].get("model"), "validation": trained.validation},
        "libraries": library_versions(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # the report is written first, so a failure there registers nothing
    reports = settings.home / "reports"
    staging = reports / f".train-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
    with progress.step("writing the report"):
        write_report(staging, title=f"Model {MODEL_TOKEN}, trained on labels known at {train_until.date()}",
                     manifest=manifest, evaluation=test, policy=replace(policy, version=POLICY_TOKEN), scorer=model,
                     explain_frame=test_frame if not test_frame.empty else rows, test_frame=test_frame,
                     test_y=y_test, test_scores={c.name: c.score for c in candidates})
    record = registry.register(trained.model_text, manifest, policy.to_dict()) if register else None
    if record is not None:
        policy = Policy.from_dict(record.policy)
    report_dir = reports / f"train-{record.version if record is not None else staging.name[7:]}"
    stamp_report(staging, record.version if record else "unregistered", policy.version)
    if report_dir.exists():
        shutil.rmtree(report_dir)
    os.replace(staging, report_dir)
    return TrainResult(record, trained, policy, test, report_dir)


def decision_counts(policy: Policy, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, int]:
    """How many returns of FRAME each decision takes."""
    decisions = decide_all(policy, frame, scores)
    return {d.value: int((decisions == d.value).sum()) for d in Decision}


def decide_all(policy: Policy, frame: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """The policy's bands alone, row by row: what thresholds are sized on and reports count. (What a return was
    actually answered, with lists and hard rules, is `training.batch`, through `rules.decide`.)"""
    return np.array([policy.decide(float(s), c, t).value
                     for s, c, t in zip(scores, frame["channel"], frame["return_type"], strict=True)], dtype=object)


def prequential(settings: Settings, *, folds: int = 3, test_days: int = 30, until: pd.Timestamp | None = None,
                delay_days: float | None = None, config: TrainConfig = DEFAULT_CONFIG,
                truth_path: Path | None = None, progress: Progress = SILENT) -> tuple[dict[str, Any], Path]:
    """Train and test on FOLDS successive windows of TEST_DAYS each; mean and spread beside the baselines."""
    from training.report import write_prequential_report

    if folds < 1 or test_days < 1:
        raise TrainingDataError("--folds and --test-days must be at least 1")
    snapshot = current_snapshot(settings.warehouse_dir)
    first, last = time_range(snapshot)
    end = until or mature_end(snapshot, last)
    cutoffs = [end - pd.Timedelta(days=test_days * (folds - i)) for i in range(folds)]
    if cutoffs[0] <= first + pd.Timedelta(days=test_days):
        raise TrainingDataError(f"{folds} folds of {test_days} days leave too little history before "
                                f"{cutoffs[0].date()} (data starts {first.date()}): use fewer folds or shorter windows")
    frame = feature_frame(FeatureSource(settings), snapshot, Window(first, end), progress)
    y_now = target(frame, labels_as_of(snapshot))
    production = production_scorer(ModelRegistry(settings.models_dir))
    truth = read_truth(truth_path)
    results = []
    for i, cutoff in enumerate(cutoffs):
        test_end = cutoff + pd.Timedelta(days=test_days)
        delay = choose_delay(snapshot, first, cutoff, delay_days)
        rows, y = training_rows(frame, snapshot, cutoff, delay)
        with progress.step(f"fold {i + 1}/{folds}: train on {Window(first, cutoff - delay)}, "
                           f"test on {Window(cutoff, test_end)}"):
            trained = fit(rows, y, model_features(), config)
            model = Scorer(f"fold {i + 1}", trained.manifest_part(), trained.model_text)
            mask = ((frame["requested_at"] >= cutoff) & (frame["requested_at"] < test_end)).to_numpy()
            test_frame = frame[mask].reset_index(drop=True)
            if test_frame.empty:
                raise TrainingDataError(f"fold {i + 1} has no returns in {Window(cutoff, test_end)}")
            metrics = judge(test_frame, y_now[mask], score_candidates(test_frame, model, production), truth)
        overlap = production is not None and pd.Timestamp(production.manifest["training_window"]["rows_until"]) > cutoff
        results.append({"train": [first.isoformat(), (cutoff - delay).isoformat()],
                        "production_trained_on_test_window": overlap,
                        "test": [cutoff.isoformat(), test_end.isoformat()],
                        "label_delay_days": delay.days, "rows": trained.rows, "candidates": metrics})
    paths = ["average_precision", "roc_auc", "brier", "at_rate.1%.recall", "at_rate.2%.recall",
             "at_rate.2%.precision", "at_rate.5%.recall", "at_rate.2%.money_recall", "per_day.10.precision",
             "customer_precision_per_day.10"]
    summary = {name: evaluation.summarize([fold["candidates"][name] for fold in results], paths)
               for name in results[0]["candidates"]}
    out = {"folds": results, "summary": summary, "data": {"snapshot": snapshot.name}}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    report_dir = settings.home / "reports" / f"evaluate-{stamp}"
    write_prequential_report(report_dir, out)
    return out, report_dir


def repolicy(settings: Settings, ref: str, costs: thresholds.Costs, days: int = 30,
             progress: Progress = SILENT) -> Policy:
    """Propose thresholds for model REF from the last DAYS days of returns and record them as its next policy."""
    registry = ModelRegistry(settings.models_dir)
    scorer = Scorer.from_registry(registry, ref)
    snapshot = current_snapshot(settings.warehouse_dir)
    _, last = time_range(snapshot)
    end = last + pd.Timedelta(microseconds=1)
    frame = feature_frame(FeatureSource(settings), snapshot, Window(end - pd.Timedelta(days=days), end), progress)
    scores = scorer.score_frame(frame)
    bad = frame["refund_amount"].to_numpy()[target(frame, labels_as_of(snapshot)) == 1]
    proposed = thresholds.propose(scores, days, costs, bad)
    return Policy.from_dict(registry.add_policy(scorer.version, proposed.to_dict()))
