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
from fraud_service.scoring import explain, lists
from fraud_service.scoring.lists import ListHistory
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.rules import Subject, decide
from models.registry import ModelRegistry
from training.trainset import Window, current_snapshot, feature_frame, read_context

FORMATS = (".csv", ".parquet")
TOP_REASONS = 3
COLUMNS = ["return_id", "score", "decision", "model_decision", "rules_fired", "model_version", "policy_version",
           *(f"reason_{i + 1}" for i in range(TOP_REASONS))]


@dataclass(frozen=True)
class BatchResult:
    rows: int
    model_version: str
    policy_version: str
    decisions: dict[str, int]
    list_entries: int
    out: Path


def score_batch(settings: Settings, window: Window, out: Path, model: str = "production",
                progress: Progress = SILENT) -> BatchResult:
    """Score the returns requested in WINDOW with model MODEL into OUT (.csv or .parquet)."""
    if out.suffix not in FORMATS:
        raise TrainingDataError(f"--out {out}: the file name must end in .csv or .parquet")
    scorer = Scorer.from_registry(ModelRegistry(settings.models_dir), model)
    policy = Policy.from_dict(scorer.policy)
    snapshot = current_snapshot(settings.warehouse_dir)
    frame = feature_frame(FeatureSource(settings), snapshot, window, progress)
    with optional_evidence(settings) as uow:
        history = lists.history(uow) if uow is not None else ListHistory()
    with progress.step(f"scoring {len(frame):,} returns with model {scorer.version}"):
        result = decide_frame(scorer, policy, frame, subjects(snapshot, window, frame), history)
    _write(result, out)
    counts = result["decision"].value_counts().to_dict()
    return BatchResult(len(result), scorer.version, policy.version, {str(k): int(v) for k, v in counts.items()},
                       len(history), out)


def subjects(snapshot: Snapshot, window: Window, frame: pd.DataFrame) -> list[Subject]:
    """What the rules look at of each return of FRAME (in its order): the request's fields, its order's total and
    the customer's and order's tokens, read from the warehouse."""
    returns, orders, _ = read_context(snapshot, window)
    joined = returns.merge(orders.drop(columns=["customer_id"], errors="ignore"), on="order_id", how="left",
                           suffixes=("", "_order"))
    by_id = joined.set_index("return_id")
    out = []
    for return_id in frame["return_id"]:
        r = by_id.loc[return_id]
        found = {"customer": r.get("customer_id"), "address": r.get("address_token"),
                 "payment": r.get("payment_token"), "device": r.get("device_token"), "refund": r.get("refund_token")}
        out.append(Subject(str(r["return_type"]), str(r["channel"]), float(r["refund_amount"]),
                           float(r["order_total"]), {k: str(v) for k, v in found.items() if _present(v)}))
    return out


def decide_frame(scorer: Scorer, policy: Policy, frame: pd.DataFrame, subjects: list[Subject],
                 history: ListHistory) -> pd.DataFrame:
    """Each row's score, decision and evidence as the API would have answered at its requested_at."""
    x = scorer.matrix(frame)
    scores = scorer.probability(x)
    typical = dict(scorer.manifest.get("typical", {}))
    rows: list[dict[str, Any]] = []
    flagged = []
    records = frame.to_dict("records")
    for i, (vector, subject) in enumerate(zip(records, subjects, strict=True)):
        at = vector["requested_at"].to_pydatetime()
        verdict = decide(policy, float(scores[i]), subject, vector, history.matches(subject.tokens, at))
        rows.append({"return_id": vector["return_id"], "score": float(scores[i]),
                     "decision": verdict.decision.value, "model_decision": verdict.model_decision.value,
                     "rules_fired": ",".join(h.rule for h in verdict.hits), "model_version": scorer.version,
                     "policy_version": policy.version, **dict.fromkeys(COLUMNS[-TOP_REASONS:], "")})
        if verdict.decision is not Decision.APPROVE:
            flagged.append(i)
    if flagged:
        contributions = scorer.contributions(x[flagged])
        for row_index, contrib in zip(flagged, contributions, strict=True):
            top = explain.reasons(scorer.features, records[row_index], contrib, typical, TOP_REASONS)
            for k, reason in enumerate(top):
                rows[row_index][f"reason_{k + 1}"] = reason.sentence
    return pd.DataFrame(rows, columns=COLUMNS)


def _present(value: object) -> bool:
    return not pd.isna(value) and value != ""


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
