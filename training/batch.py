"""Batch scoring: every ingested return of a window, with the features it had at its own requested_at.

Scores come from the same Scorer and Policy the API uses; the output is written to a temporary
file beside the target and renamed, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud_service.config import Settings
from fraud_service.featurestore.source import FeatureSource
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Policy
from models.registry import ModelRegistry
from training.trainset import TrainingDataError, Window, current_snapshot, feature_frame
from training.workflow import decide_all

FORMATS = (".csv", ".parquet")


@dataclass(frozen=True)
class BatchResult:
    rows: int
    model_version: str
    policy_version: str
    decisions: dict[str, int]
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
    with progress.step(f"scoring {len(frame):,} returns with model {scorer.version}"):
        scores = scorer.score_frame(frame)
        decisions = decide_all(policy, frame, scores)
    result = pd.DataFrame({"return_id": frame["return_id"], "score": scores, "decision": decisions})
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
    counts = result["decision"].value_counts().to_dict()
    return BatchResult(len(result), scorer.version, policy.version, {str(k): int(v) for k, v in counts.items()}, out)
