"""Batch scoring: every ingested return of a window, with the features it had at its own requested_at, decided
as the scoring API would have decided it then.

Scores come from the same Scorer the API uses, and each decision from the same function
(`fraud_service.scoring.rules.decide`): the model's policy, the allow and block lists as they stood at the
return's time (their history is read from the evidence log, when there is an evidence database) and the hard
rules. Like the API, a return that is not approved gets its top reasons (three here). The output is written to
a temporary file beside the target and renamed, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_service.bootstrap import optional_evidence
from fraud_service.config import Settings
from fraud_service.data.warehouse import Snapshot
from fraud_service.errors import TrainingDataError
from fraud_service.featurestore.source import FeatureSource
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring import explain, lists, rulebook
from fraud_service.scoring.lists import ListHistory
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.rulebook import RuleHistory
from fraud_service.scoring.rules import RULE_FEATURES, Subject, decide
from models.registry import ModelRegistry
from training.trainset import Window, current_snapshot, feature_frame, read_returns_and_orders, timestamp

FORMATS = (".csv", ".parquet")
TOP_REASONS = 3
TOKEN_COLUMNS = {"customer": "customer_id", "address": "address_token", "payment": "payment_token",
                 "device": "device_token", "refund": "refund_token"}
COLUMNS = ["return_id", "score", "decision", "model_decision", "rules_fired", "model_version", "policy_version",
           *(f"reason_{i + 1}" for i in range(TOP_REASONS))]


@dataclass(frozen=True)
class BatchResult:
    rows: int
    model_version: str
    policy_version: str
    decisions: dict[str, int]
    list_entries: int | None  # entries in the lists' history; None without an evidence database
    out: Path
    in_sample: str | None = None  # what of the window the model was trained on, when any of it was


def score_batch(settings: Settings, window: Window, out: Path, model: str = "production",
                progress: Progress = SILENT) -> BatchResult:
    """Score the returns requested in WINDOW with model MODEL into OUT (.csv or .parquet)."""
    if out.suffix not in FORMATS:
        raise TrainingDataError(f"--out {out}: the file name must end in .csv or .parquet")
    _replaceable(out)
    result, scorer, policy, entries = decide_window(settings, window, model, progress)
    _write(result, out)
    counts = result["decision"].value_counts().to_dict()
    return BatchResult(len(result), scorer.version, policy.version, {str(k): int(v) for k, v in counts.items()},
                       entries, out, in_sample(scorer, window))


def in_sample(scorer: Scorer, window: Window) -> str | None:
    """What of WINDOW SCORER learned from (its training rows' requests), or None when none of it: scores there are
    in-sample, not what the model would have said of returns it had not seen."""
    trained = scorer.manifest.get("training_window") or {}
    last = trained.get("rows_until") or trained.get("until")  # the rows trained on end there (the cutoff, or before)
    if not last:
        return None
    start, until = timestamp(trained.get("from") or last), timestamp(last)
    if window.end <= start or window.start >= until:
        return None
    after = until.ceil("min")
    shown = after.date().isoformat() if after == after.normalize() else after.strftime("%Y-%m-%dT%H:%M")
    return (f"model {scorer.version} was trained on the returns requested {start.date()} to {shown}: its "
            f"scores of those in {window} are in-sample, better than on returns it has not seen (--from {shown} "
            "or later for out-of-time scores)")


def decide_window(settings: Settings, window: Window, model: str = "production", progress: Progress = SILENT
                  ) -> tuple[pd.DataFrame, Scorer, Policy, int | None]:
    """Decide the returns requested in WINDOW with model MODEL, as the API would have then: the decided rows (the
    columns `score-batch` writes), the scorer, its policy, and the entries in the lists' history (None without
    an evidence database)."""
    scorer = Scorer.from_registry(ModelRegistry(settings.models_dir), model)
    policy = Policy.from_dict(scorer.policy)
    snapshot = current_snapshot(settings.warehouse_dir)
    frame = feature_frame(FeatureSource(settings), snapshot, window, progress)
    with optional_evidence(settings) as uow:
        history = lists.history(uow) if uow is not None else None
        rules = rulebook.history(uow) if uow is not None else None
    if history is None:
        progress.info("no evidence database at the current schema: the returns are decided without allow/block "
                      "lists (run `fraud-service db upgrade` if there should be one)")
    with progress.step(f"scoring {len(frame):,} returns with model {scorer.version}"):
        result = decide_frame(scorer, policy, frame, subjects(snapshot, window, frame), history or ListHistory(),
                              rules)
    return result, scorer, policy, None if history is None else len(history)


def subjects(snapshot: Snapshot, window: Window, frame: pd.DataFrame) -> list[Subject]:
    """What the rules look at of each return of FRAME (in its order): the request's fields, its order's total and
    the customer's and order's tokens, read from the warehouse."""
    returns, orders = read_returns_and_orders(snapshot, window)
    joined = frame[["return_id"]].merge(returns, on="return_id", how="left", validate="1:1").merge(
        orders, on="order_id", how="left", validate="m:1")
    tokens = {entity: joined[column].to_numpy(dtype=object) for entity, column in TOKEN_COLUMNS.items()}
    out = []
    for i, (rtype, channel, amount, total) in enumerate(zip(joined["return_type"], joined["channel"],
                                                           joined["refund_amount"], joined["order_total"],
                                                           strict=True)):
        found = {entity: str(values[i]) for entity, values in tokens.items() if _present(values[i])}
        out.append(Subject(str(rtype), str(channel), float(amount), float(total), found))
    return out


def decide_frame(scorer: Scorer, policy: Policy, frame: pd.DataFrame, subjects: list[Subject],
                 history: ListHistory, rules: RuleHistory | None = None) -> pd.DataFrame:
    """Each row's score, decision and evidence as the API would have answered at its requested_at (with the lists
    and the rule set in force then)."""
    x = scorer.matrix(frame)
    scores = scorer.probability(x)
    read = set(RULE_FEATURES) | (rules.features() if rules is not None else set())
    rule_inputs = frame[[c for c in frame.columns if c in read]].to_dict("records")  # the hard rules read only these
    times = list(frame["requested_at"])  # pandas Timestamps: datetimes, compared with the lists' times
    out = pd.DataFrame({"return_id": frame["return_id"].to_numpy(), "score": scores})
    verdicts = [decide(policy, float(score), subject, vector, history.matches(subject.tokens, at),
                       rules.at(at) if rules is not None else None)
                for score, subject, vector, at in zip(scores, subjects, rule_inputs, times, strict=True)]
    out["decision"] = [v.decision.value for v in verdicts]
    out["model_decision"] = [v.model_decision.value for v in verdicts]
    out["rules_fired"] = [",".join(h.rule for h in v.hits) for v in verdicts]
    out["model_version"], out["policy_version"] = scorer.version, policy.version
    reasons = _top_reasons(scorer, frame, x, [i for i, v in enumerate(verdicts) if v.decision is not Decision.APPROVE])
    for k in range(TOP_REASONS):
        out[f"reason_{k + 1}"] = [r[k] if k < len(r) else "" for r in reasons]
    return out[COLUMNS]


def _top_reasons(scorer: Scorer, frame: pd.DataFrame, x: Any, flagged: list[int]) -> list[list[str]]:
    """The top reasons of the FLAGGED rows (the API gives none for an approval), as sentences; [] for the others."""
    out: list[list[str]] = [[] for _ in range(len(frame))]
    if not flagged:
        return out
    typical = dict(scorer.manifest.get("typical", {}))
    values = frame.iloc[flagged][scorer.features].to_dict("records")
    for i, vector, contrib in zip(flagged, values, scorer.contributions(x[flagged]), strict=True):
        out[i] = [r.sentence for r in explain.reasons(scorer.features, vector, contrib, typical, TOP_REASONS)]
    return out


def _present(value: object) -> bool:
    return not pd.isna(value) and value != ""


def _replaceable(out: Path) -> None:
    """TrainingDataError unless OUT is new or an earlier `score-batch` output (a daily run writes over
    yesterday's): a dataset's `returns.parquet`, or any other table, was replaced without a word."""
    if out.is_dir():
        raise TrainingDataError(f"--out {out} is a directory: name the file to write")
    if not out.exists() or out.stat().st_size == 0:  # new, or made empty to be written (mkstemp)
        return
    try:
        if out.suffix == ".csv":
            with out.open(encoding="utf-8", errors="replace") as text:
                columns = text.readline(4096).strip().split(",")  # a header, not a whole one-line file
        else:
            import pyarrow.parquet as pq

            columns = pq.read_schema(out).names
    except (OSError, ValueError) as exc:  # not a table at all
        columns = [f"unreadable as {out.suffix[1:]}: {type(exc).__name__}"]
    if columns[:3] != COLUMNS[:3]:
        shown = ", ".join(columns[:4]) + (", ..." if len(columns) > 4 else "")
        raise TrainingDataError(f"--out {out} exists and is not a score-batch output (its columns: {shown}); "
                                "writing would replace it: name a new file, or remove this one first")


def _write(result: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        if out.suffix == ".csv":
            result.to_csv(tmp, index=False, float_format="%.6f")
        else:
            result.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
