"""The data scientist's workflows: train and register a model; prequential evaluation beside baselines.

Labels. A model trained up to a cutoff only learns from labels known at that cutoff. A return with a label
counts as what it says (a reviewed and cleared return is a true negative). A return nobody has labelled yet
is positive-unlabelled: it counts as legit with the weight F(age), the share of past fraud labels that had
arrived by its age (`trainset.arrival_weights`), and is left out while F(age) is below 0.75, so fresh
returns whose fraud has not surfaced yet do not teach "legit", while old unlabelled ones are legit
(dropping them would train on the investigators' selection, not on the traffic the model will score).
`TrainConfig(unlabelled="legit")` is the earlier rule: the last `label_delay` before the cutoff left out,
every other unlabelled return legit. Test windows are judged with every label known now."""

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
from fraud_service.scoring import drift
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from models.registry import ModelRecord, ModelRegistry, checksum
from training import evaluation, thresholds
from training import gate as gates
from training.baselines import rules_score
from training.trainer import TrainConfig, TrainedModel, fit
from training.trainset import (
    Window,
    arrival_delays,
    arrival_weights,
    contradicted,
    current_snapshot,
    feature_frame,
    inspected,
    label_delay,
    labels_as_of,
    model_features,
    positives_by_source,
    target,
    time_range,
    timestamp,
)

LIBRARIES = ("lightgbm", "numpy", "pandas", "scikit-learn", "feast", "duckdb", "shap")
MAX_DELAY_SHARE = 0.3
DEFAULT_COSTS = thresholds.Costs()
DEFAULT_CONFIG = TrainConfig()
DEFAULT_TEST_DAYS = 30
SIZING_DAYS = 30
SAMPLE_ROWS = 50_000
SAMPLE_DAYS = 90
SAMPLE_FILE = "sample.json"
"""The decision bands are sized on the score distribution of the last SIZING_DAYS days of requests."""


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
    gate: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    reused: bool = False


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


def training_rows(frame: pd.DataFrame, snapshot: Snapshot, train_until: pd.Timestamp, delay: pd.Timedelta,
                  config: TrainConfig = DEFAULT_CONFIG) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The training rows, their targets from labels known at `train_until`, and their weights.

    `weighted` (the default): every return requested before the cutoff; a labelled one weighs 1 (a reviewed and
    cleared return is a true negative), an unlabelled one F(age), or 0 while F(age) < 0.75
    (`trainset.arrival_weights`), so the returns nobody has investigated yet teach "legit" only once time has
    vouched for them. `legit`: the returns of
    the last `delay` before the cutoff are left out and every other unlabelled return is legit, weight 1.
    Either way, a row whose target an inspection known at `train_until` contradicts weighs `config.contradicted`
    times as much (`trainset.contradicted`)."""
    if config.unlabelled not in ("weighted", "legit"):
        raise TrainingDataError(f"unlabelled={config.unlabelled!r}: expected weighted or legit")
    if config.failed_inspections not in ("unlabelled", "bad"):
        raise TrainingDataError(f"failed_inspections={config.failed_inspections!r}: expected unlabelled or bad")
    known = labels_as_of(snapshot, train_until)
    rows = frame[frame["requested_at"] < (train_until - delay if config.unlabelled == "legit" else train_until)
                 ].reset_index(drop=True)
    labelled = rows["return_id"].isin(set(known["return_id"])).to_numpy()
    y = target(rows, known)
    if config.unlabelled == "legit":
        weights = np.ones(len(rows))
    else:
        weights = arrival_weights(rows, labelled, train_until, arrival_delays(snapshot, train_until))
    if config.failed_inspections == "bad":  # the warehouse saw what no label says yet
        unlabelled_failed = inspected(snapshot, train_until, rows)[1] & ~labelled
        y = np.where(unlabelled_failed, 1, y)
        weights = np.where(unlabelled_failed, 1.0, weights)
    if config.contradicted != 1.0:
        weights = np.where(contradicted(snapshot, train_until, rows, y), weights * config.contradicted, weights)
    return rows, y, weights


def fit_or_say(hint: str, *args: Any, **kwargs: Any) -> TrainedModel:
    """`fit(*ARGS, **KWARGS)`, with HINT (what to change, in the words of the calling command) added to a refusal."""
    try:
        return fit(*args, **kwargs)
    except TrainingDataError as exc:
        raise TrainingDataError(f"{exc} ({hint})") from None


def matured(rows: pd.DataFrame, cutoff: pd.Timestamp, delay: pd.Timedelta) -> np.ndarray:
    """Rows requested before CUTOFF - DELAY: their labels have had time to arrive, so they validate (early
    stopping and calibration want a slice whose frauds are labelled; the weighted newest rows only train)."""
    return (rows["requested_at"] < cutoff - delay).to_numpy()


def learnable_rows(frame: pd.DataFrame, snapshot: Snapshot, start: pd.Timestamp, train_until: pd.Timestamp,
                   delay: pd.Timedelta, config: TrainConfig = DEFAULT_CONFIG
                   ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The training rows, targets and weights, or TrainingDataError when there is nothing to learn from."""
    rows, y, w = training_rows(frame, snapshot, train_until, delay, config)
    if rows.empty:
        raise TrainingDataError(f"no returns were requested in {Window(start, train_until - delay)}")
    if not y.any():
        raise TrainingDataError(
            f"none of the {len(rows):,} returns requested in {Window(start, train_until - delay)} has a fraud or abuse "
            f"label known at {train_until.date()}: there is nothing to learn from. Ingest a labels table (see the data "
            "contract) or let analysts decide cases, then train again")
    return rows, y, w


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
    """A generator's ground truth (return_id, truth, typology; parquet, or CSV by its name), if given."""
    if path is None:
        return None
    if not path.is_file():
        raise TrainingDataError(f"ground truth file {path} does not exist" if not path.exists() else
                                f"ground truth file {path} is not a file")
    try:
        truth = pd.read_csv(path, dtype=str) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        kind = "CSV" if path.suffix.lower() == ".csv" else "parquet (a .csv name is read as CSV)"
        raise TrainingDataError(f"ground truth file {path} cannot be read as {kind}: "
                                f"{str(exc).strip().splitlines()[0][:200]}") from None
    missing = {"return_id", "truth", "typology"} - set(truth.columns)
    if missing:
        raise TrainingDataError(f"ground truth file {path} lacks column(s) {', '.join(sorted(missing))}")
    return truth[["return_id", "truth", "typology"]]


@dataclass(frozen=True)
class Plan:
    """The windows of one training run, and what the data scientist should be told about them."""

    start: pd.Timestamp
    train_until: pd.Timestamp
    delay: pd.Timedelta
    test: Window
    notes: tuple[str, ...] = ()

    @property
    def has_test(self) -> bool:
        return self.test.end > self.test.start


def plan(snapshot: Snapshot, train_until: pd.Timestamp | None, *, train_from: pd.Timestamp | None = None,
         test_from: pd.Timestamp | None = None, test_until: pd.Timestamp | None = None,
         test_days: int = DEFAULT_TEST_DAYS, delay_days: float | None = None) -> Plan:
    """The training and test windows. TRAIN_UNTIL None (`--train-until now`) keeps the last TEST_DAYS days whose
    labels have matured as the test window and trains on what was known before them."""
    first, last = time_range(snapshot)
    mature = mature_end(snapshot, last)
    notes = []
    said = "--train-until"
    if train_until is None:
        train_until = (test_until or mature) - pd.Timedelta(days=test_days)
        end = f"--test-until {test_until.date()}" if test_until else f"the labels matured up to {mature.date()}"
        said = f"--train-until now (here {train_until.date()}: {end}, less the {test_days}-day test window; " \
               "--test-days sets it)"
        notes.append(f"--train-until now: the last {test_days} days with mature labels are the test window; training "
                     f"on labels known at {train_until.isoformat(timespec='seconds')}")
    start = train_from or first
    test = Window(test_from or train_until, test_until or mature)
    if test.start < train_until:
        raise TrainingDataError(f"the test window must start at or after --train-until ({train_until.date()}), "
                                f"not {test.start.date()}: testing on training data is not an evaluation")
    if train_until <= start:
        shown = said if said != "--train-until" else f"--train-until {train_until.date()}"
        raise TrainingDataError(f"{shown} is not after the first return the model may learn from ({start.date()})")
    if test.end <= test.start:
        notes.append(f"no test window: the labels of returns after {test.start.isoformat(timespec='seconds')} have "
                     f"not matured (the labels known so far cover returns up to {mature.isoformat(timespec='seconds')}"
                     "); this model cannot earn production. `--train-until now` keeps the last "
                     f"{test_days} days as a test window")
    return Plan(start, train_until, choose_delay(snapshot, start, train_until, delay_days), test, tuple(notes))


def train(settings: Settings, train_until: pd.Timestamp | None, *, train_from: pd.Timestamp | None = None,
          test_from: pd.Timestamp | None = None, test_until: pd.Timestamp | None = None,
          test_days: int = DEFAULT_TEST_DAYS, delay_days: float | None = None, costs: thresholds.Costs = DEFAULT_COSTS,
          config: TrainConfig = DEFAULT_CONFIG, truth_path: Path | None = None, register: bool = True,
          reuse_identical: bool = False, progress: Progress = SILENT) -> TrainResult:
    """Build the training set, train, evaluate out of time beside the baselines, judge the gate, report, register.

    The model becomes production only when there is none and it beat the rules+history baseline out of time.
    REUSE_IDENTICAL: a model byte-identical to a registered version trained to the same cutoff is not registered
    again; the result names that version (`reused`)."""
    ModelRegistry(settings.models_dir).aliases()  # a registry that lost its aliases file: said before training
    truth = read_truth(truth_path)  # so is a ground truth file that cannot be read
    snapshot = current_snapshot(settings.warehouse_dir)
    windows = plan(snapshot, train_until, train_from=train_from, test_from=test_from, test_until=test_until,
                   test_days=test_days, delay_days=delay_days)
    start, cutoff, delay = windows.start, windows.train_until, windows.delay
    rows_until = cutoff if config.unlabelled == "weighted" else cutoff - delay
    progress.info(f"training on returns requested in {Window(start, rows_until)} (label delay {delay.days} days), "
                  f"labels known at {cutoff.isoformat()}; testing on {windows.test}")
    last = time_range(snapshot)[1] + pd.Timedelta(microseconds=1)
    frame = feature_frame(FeatureSource(settings), snapshot, Window(start, max(windows.test.end, cutoff, last)),
                          progress)
    rows, y, weights = learnable_rows(frame, snapshot, start, cutoff, delay, config)
    with progress.step(f"training LightGBM on {len(rows):,} returns ({int(y.sum()):,} fraud/abuse labels)"):
        trained = fit_or_say("ingest labels, or widen the window with --train-from/--train-until",
                             rows, y, model_features(), config, weights, mature=matured(rows, cutoff, delay))
    registry = ModelRegistry(settings.models_dir)
    outcome = _evaluate(frame, snapshot, windows, trained, production_scorer(registry), costs,
                        truth, rows, progress)
    manifest = {
        "feature_service": FEATURE_SERVICE,
        **trained.manifest_part(),
        "training_window": {"from": start.isoformat(), "until": cutoff.isoformat(),
                            "rows_until": rows_until.isoformat(),
                            "label_delay_days": delay.days, "unlabelled": config.unlabelled,
                            "unlabelled_weight_mean": float(weights[y == 0].mean()) if (y == 0).any() else None},
        "label_cutoff": cutoff.isoformat(),
        "positives_by_source": positives_by_source(snapshot, cutoff, rows["return_id"]),
        "data": {"snapshot": snapshot.name, "fingerprint": snapshot.manifest.get("fingerprint")},
        "metrics": {"test": outcome.test["candidates"].get("model"), "validation": trained.validation},
        "libraries": library_versions(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    first = outcome.gate is not None and outcome.gate["passed"] and outcome.gate["against"] == gates.BASELINE
    same = registry.find(checksum(trained.model_text), label_cutoff=manifest["label_cutoff"])
    if reuse_identical and same is not None:
        progress.info(f"the model is byte-identical to {same.version}, trained to the same cutoff: reusing it")
        report_dir = settings.home / "reports" / f"train-{same.version}"
        return TrainResult(same, trained, Policy.from_dict(same.policy), outcome.test, report_dir, outcome.gate,
                           windows.notes + outcome.notes, reused=True)
    sample = training_sample(rows, trained, outcome.model)
    record, policy, report_dir = _report_and_register(settings, registry, manifest, outcome, trained, rows, sample,
                                                      register=register, first_production=first, progress=progress)
    return TrainResult(record, trained, policy, outcome.test, report_dir, outcome.gate, windows.notes + outcome.notes)


@dataclass
class _Outcome:
    """What the evaluation of a freshly trained model found: metrics, its policy, the gate, warnings."""

    test: dict[str, Any]
    policy: Policy
    model: Scorer
    test_frame: pd.DataFrame
    y_test: np.ndarray
    candidates: list[Candidate]
    gate: dict[str, Any] | None
    notes: tuple[str, ...]


def _evaluate(frame: pd.DataFrame, snapshot: Snapshot, windows: Plan, trained: TrainedModel,
              production: Scorer | None, costs: thresholds.Costs, truth: pd.DataFrame | None, rows: pd.DataFrame,
              progress: Progress) -> _Outcome:
    """Score the test window beside the baselines and production, propose the policy, judge the gate."""
    model = Scorer("unregistered", trained.manifest_part(), trained.model_text)
    window = windows.test
    test_frame = frame[(frame["requested_at"] >= window.start) & (frame["requested_at"] < window.end)]
    test_frame = test_frame.reset_index(drop=True)
    test: dict[str, Any] = {"window": [window.start.isoformat(), window.end.isoformat()], "candidates": {},
                            "leaked": []}
    candidates: list[Candidate] = []
    y_test = np.zeros(len(test_frame), dtype=np.int64)
    notes: list[str] = []
    if test_frame.empty:
        if windows.has_test:
            notes.append(f"no returns in the test window {window}: no out-of-time metrics, no gate")
        labelled = rows
    else:
        with progress.step(f"evaluating on {len(test_frame):,} returns after the training window"):
            y_test = target(test_frame, labels_as_of(snapshot))
            candidates = score_candidates(test_frame, model, production)
            test["candidates"] = judge(test_frame, y_test, candidates, truth)
        labelled = test_frame
        if production is not None and production_cutoff(production) > window.start:
            name = f"production {production.version}"
            test["leaked"].append(name)
            notes.append(f"{name} was trained on labels known at {production_cutoff(production).date()}, inside this "
                         "test window: its figures here are not out of time and flatter it")
    # the bands are sized on the latest traffic, labelled or not (rates need no labels); the loss on labelled returns
    recent = frame[frame["requested_at"] > frame["requested_at"].max() - pd.Timedelta(days=SIZING_DAYS)]
    days = max(1, (recent["requested_at"].max() - recent["requested_at"].min()).days + 1)
    bad_amounts = labelled["refund_amount"].to_numpy()[target(labelled, labels_as_of(snapshot)) == 1]
    policy = thresholds.propose(model.score_frame(recent), days, costs, bad_amounts, ruled=ruled(snapshot, recent))
    gate = None
    if not test_frame.empty:
        test["decisions"] = decision_counts(policy, test_frame, candidates[0].score)
        gate = training_gate(test_frame, y_test, candidates, policy, production, costs)
    return _Outcome(test, policy, model, test_frame, y_test, candidates, gate, tuple(notes))


def ruled(snapshot: Snapshot, frame: pd.DataFrame) -> np.ndarray:
    """Which returns of FRAME the hard rules alone take out of instant approval (`rules.hard_rules`, on the
    request and order read from the warehouse and the point-in-time features)."""
    from fraud_service.scoring.rules import RULE_FEATURES, hard_rules
    from training.batch import subjects

    if frame.empty:
        return np.zeros(0, dtype=bool)
    window = Window(frame["requested_at"].min(), frame["requested_at"].max() + pd.Timedelta(microseconds=1))
    vectors = frame[list(RULE_FEATURES)].to_dict("records")
    return np.array([bool(hard_rules(subject, vector)) for subject, vector in
                     zip(subjects(snapshot, window, frame), vectors, strict=True)], dtype=bool)


def production_cutoff(scorer: Scorer) -> pd.Timestamp:
    """The label cutoff the production model was trained with."""
    return timestamp(scorer.manifest["label_cutoff"])


def training_gate(frame: pd.DataFrame, y: np.ndarray, candidates: list[Candidate], policy: Policy,
                  production: Scorer | None, costs: thresholds.Costs) -> dict[str, Any]:
    """The new model's gate: against production on the part of the test window after production's cutoff, or,
    when there is no production model, against the rules+history baseline on the whole window."""
    scores = {c.name: c.score for c in candidates}
    if production is None:
        return gates.judge(frame, y, ("model", scores["model"], policy),
                           (gates.BASELINE, scores[gates.BASELINE], None), costs)
    after = (frame["requested_at"] >= production_cutoff(production)).to_numpy()
    name = production.version
    return gates.judge(frame[after].reset_index(drop=True), y[after], ("model", scores["model"][after], policy),
                       (name, scores[f"production {name}"][after], Policy.from_dict(production.policy)), costs)


def training_sample(rows: pd.DataFrame, trained: TrainedModel, model: Scorer) -> dict[str, Any]:
    """The feature and score distributions (`fraud_service.scoring.drift`) of the training rows of the last
    SAMPLE_DAYS days before the cutoff, at most SAMPLE_ROWS of them drawn at random: what live drift is measured
    against. The latest rows, because a long training window's early months (younger accounts, other prices)
    would call the present drifted."""
    recent = rows[rows["requested_at"] > rows["requested_at"].max() - pd.Timedelta(days=SAMPLE_DAYS)]
    sample = recent.sample(n=SAMPLE_ROWS, random_state=0) if len(recent) > SAMPLE_ROWS else recent
    columns = {f: (sample[f].astype(object).where(sample[f].notna(), None).tolist() if f in trained.categories
                   else pd.to_numeric(sample[f], errors="coerce").to_numpy(dtype=float, na_value=np.nan))
               for f in trained.features}
    return drift.reference(columns, model.score_frame(sample), trained.categories)


def _report_and_register(settings: Settings, registry: ModelRegistry, manifest: dict[str, Any], outcome: _Outcome,
                         trained: TrainedModel, rows: pd.DataFrame, sample: dict[str, Any], *, register: bool,
                         first_production: bool, progress: Progress) -> tuple[ModelRecord | None, Policy, Path]:
    """Write the report (first: a failure there registers nothing), register, and put the report in place."""
    from training.report import MODEL_TOKEN, POLICY_TOKEN, stamp_report, write_report

    reports = settings.home / "reports"
    staging = reports / f".train-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
    cutoff = manifest["label_cutoff"][:10]
    record = None
    policy = outcome.policy
    try:
        with progress.step("writing the report"):
            write_report(staging, title=f"Model {MODEL_TOKEN}, trained on labels known at {cutoff}",
                         manifest=manifest, evaluation=outcome.test | {"gate": outcome.gate},
                         policy=replace(outcome.policy, version=POLICY_TOKEN), scorer=outcome.model,
                         explain_frame=outcome.test_frame if not outcome.test_frame.empty else rows,
                         test_frame=outcome.test_frame, test_y=outcome.y_test,
                         test_scores={c.name: c.score for c in outcome.candidates})
        if register:
            record = registry.register(trained.model_text, manifest, policy.to_dict(), gate=outcome.gate,
                                       extra={SAMPLE_FILE: sample}, first_production=first_production)
            policy = Policy.from_dict(record.policy)
    except BaseException:  # nothing registered, or the registry refused: the half report goes too
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report_dir = reports / f"train-{record.version if record is not None else staging.name[7:]}"
    stamp_report(staging, record.version if record else "unregistered", policy.version)
    if report_dir.exists():
        shutil.rmtree(report_dir)
    os.replace(staging, report_dir)
    return record, policy, report_dir


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
    truth = read_truth(truth_path)
    snapshot = current_snapshot(settings.warehouse_dir)
    first, last = time_range(snapshot)
    end = until or mature_end(snapshot, last)
    cutoffs = [end - pd.Timedelta(days=test_days * (folds - i)) for i in range(folds)]
    if cutoffs[0] <= first + pd.Timedelta(days=test_days):
        shorter = "use fewer folds or shorter windows" if folds > 1 or test_days > 1 else "ingest a longer history"
        raise TrainingDataError(f"{folds} fold(s) of {test_days} days, ending {end.date()} (where labels have had "
                                f"time to arrive), leave too little history before {cutoffs[0].date()} (data starts "
                                f"{first.date()}; each fold trains on at least as many days as it tests): {shorter}")
    frame = feature_frame(FeatureSource(settings), snapshot, Window(first, end), progress)
    y_now = target(frame, labels_as_of(snapshot))
    production = production_scorer(ModelRegistry(settings.models_dir))
    results = []
    for i, cutoff in enumerate(cutoffs):
        test_end = cutoff + pd.Timedelta(days=test_days)
        delay = choose_delay(snapshot, first, cutoff, delay_days)
        rows, y, weights = training_rows(frame, snapshot, cutoff, delay, config)
        with progress.step(f"fold {i + 1}/{folds}: train on {Window(first, cutoff - delay)}, "
                           f"test on {Window(cutoff, test_end)}"):
            trained = fit_or_say(f"fold {i + 1} trains on returns before {cutoff.date()}: use fewer --folds or "
                                 "shorter --test-days so it has more history, or a larger world",
                                 rows, y, model_features(), config, weights, mature=matured(rows, cutoff, delay))
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
    proposed = thresholds.propose(scores, days, costs, bad, ruled=ruled(snapshot, frame))
    return Policy.from_dict(registry.add_policy(scorer.version, proposed.to_dict()))


def policy_costs(policy: dict[str, Any]) -> thresholds.Costs:
    """The costs a policy was sized with (the defaults for a policy that does not say)."""
    try:
        return thresholds.Costs(**policy.get("basis", {}).get("costs", {}))
    except (TypeError, ValueError):
        return DEFAULT_COSTS


def judge_gate(settings: Settings, ref: str, window: Window | None = None,
               progress: Progress = SILENT) -> dict[str, Any]:
    """Judge model REF's promotion gate against today's production model (or, with none, the rules+history
    baseline) on WINDOW (default: from the later of both label cutoffs to the last mature request); record it."""
    registry = ModelRegistry(settings.models_dir)
    candidate = Scorer.from_registry(registry, ref)
    production = production_scorer(registry)
    if production is not None and production.version == candidate.version:
        raise TrainingDataError(f"{candidate.version} is production already: there is nothing to judge it against")
    snapshot = current_snapshot(settings.warehouse_dir)
    cutoffs = [production_cutoff(s) for s in (candidate, production) if s is not None]
    if window is None:
        window = Window(max(cutoffs), mature_end(snapshot, time_range(snapshot)[1]))
    elif window.start < max(cutoffs):
        raise TrainingDataError(f"the gate's window must start after both models' label cutoffs "
                                f"({max(cutoffs).isoformat()}), not at {window.start.isoformat()}: before it, one of "
                                "them is judged on returns it learned from")
    if window.end <= window.start:
        raise TrainingDataError(f"no window after both label cutoffs ({max(cutoffs).isoformat()}) has mature labels "
                                f"yet (they reach {window.end.isoformat()}): wait for labels, or promote with --force")
    frame = feature_frame(FeatureSource(settings), snapshot, window, progress)
    if frame.empty:
        raise TrainingDataError(f"no returns were requested in {window}")
    y = target(frame, labels_as_of(snapshot))
    mine = (candidate.version, candidate.score_frame(frame), Policy.from_dict(candidate.policy))
    if production is None:
        against = (gates.BASELINE, rules_score(frame, history=True), None)
    else:
        against = (production.version, production.score_frame(frame), Policy.from_dict(production.policy))
    with progress.step(f"judging {candidate.version} against {against[0]} on {len(frame):,} returns"):
        gate = gates.judge(frame, y, mine, against, policy_costs(candidate.policy))
    registry.add_gate(candidate.version, gate)
    return gate


def first_production_recorded(settings: Settings, version: str, actor: str) -> str:
    """Record in the evidence log that VERSION became production as it was registered (the first model), when
    there is an evidence database; what happened, as a sentence."""
    from sqlalchemy.exc import SQLAlchemyError

    from fraud_service.bootstrap import evidence, evidence_exists
    from fraud_service.errors import FraudServiceError
    from fraud_service.scoring.promotion import record_first_production

    if not evidence_exists(settings):
        return (f"{version} is production; there is no evidence database yet, so the log does not record it "
                "(`fraud-service db upgrade` before the first `train` does)")
    try:
        with evidence(settings, migrated=False) as db:
            problem = db.schema_problem()
            if problem is None and record_first_production(ModelRegistry(settings.models_dir), db.uow(),
                                                           version=version, actor=actor):
                return f"{version} is the first production model: the evidence log records it (model_promoted)"
    except (FraudServiceError, SQLAlchemyError) as exc:  # registered and production all the same: said, not failed
        return f"warning: {version} is production, but the evidence log could not record it: {exc}"
    if problem is not None:
        return f"warning: {version} is production, but the evidence log does not record it: {problem}"
    return f"{version} is production"
