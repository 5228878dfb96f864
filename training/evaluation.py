"""Metrics a fraud team can act on, computed on one test window.

Ranking quality (average precision, ROC AUC), what a review team of a given size would see
(precision and recall in the top 1/2/5% and at k reviews a day; customer-level precision at k a
day, each customer counted once a day as in the Fraud Detection Handbook's card precision
top-k), money at stake caught, and calibration (reliability curve, Brier score).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

RATES = (0.01, 0.02, 0.05)


@dataclass(frozen=True)
class Scored:
    """One test window: targets, scores and the context the metrics group by."""

    y: np.ndarray
    score: np.ndarray
    day: np.ndarray  # datetime64[D] of requested_at
    customer: np.ndarray
    amount: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.y)
        if any(len(a) != n for a in (self.score, self.day, self.customer, self.amount)):
            raise ValueError("targets, scores, days, customers and amounts must have the same length")

    @classmethod
    def of(cls, frame: pd.DataFrame, y: np.ndarray, score: np.ndarray) -> Scored:
        day = frame["requested_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
        return cls(np.asarray(y, dtype=np.int64), np.asarray(score, dtype=float), day,
                   frame["customer_id"].to_numpy(), frame["refund_amount"].to_numpy(dtype=float))

    @property
    def days(self) -> int:
        return len(np.unique(self.day)) if len(self.day) else 0


def ranking(score: np.ndarray) -> np.ndarray:
    """Indices from highest to lowest score; ties keep their original order (deterministic)."""
    return np.argsort(-score, kind="stable")


def at_rate(s: Scored, rate: float) -> dict[str, float]:
    """Precision, recall and money caught when the top RATE share of returns is reviewed."""
    n = max(1, math.ceil(rate * len(s.y)))
    top = ranking(s.score)[:n]
    positives = int(s.y.sum())
    bad_money = float(s.amount[s.y == 1].sum())
    caught = s.y[top] == 1
    return {"reviewed": n, "precision": float(caught.mean()),
            "recall": float(caught.sum() / positives) if positives else math.nan,
            "money_caught": float(s.amount[top][caught].sum()),
            "money_recall": float(s.amount[top][caught].sum() / bad_money) if bad_money else math.nan}


def per_day_top_k(s: Scored, k: int) -> dict[str, float]:
    """Review the k riskiest returns each day: mean daily precision and overall recall."""
    frame = pd.DataFrame({"day": s.day, "score": s.score, "y": s.y, "i": np.arange(len(s.y))})
    frame = frame.sort_values(["day", "score", "i"], ascending=[True, False, True], kind="stable")
    top = frame.groupby("day", sort=True).head(k)
    daily = top.groupby("day")["y"].mean()
    positives = int(s.y.sum())
    return {"k": k, "precision": float(daily.mean()) if len(daily) else math.nan,
            "recall": float(top["y"].sum() / positives) if positives else math.nan}


def customer_top_k(s: Scored, k: int) -> float:
    """Customer precision at k a day: a customer's daily score is their riskiest return's; bad if any is bad."""
    frame = pd.DataFrame({"day": s.day, "customer": s.customer, "score": s.score, "y": s.y})
    per_customer = frame.groupby(["day", "customer"], sort=True).agg(score=("score", "max"), y=("y", "max"))
    per_customer = per_customer.reset_index().sort_values(["day", "score", "customer"],
                                                          ascending=[True, False, True], kind="stable")
    top = per_customer.groupby("day", sort=True).head(k)
    daily = top.groupby("day")["y"].mean()
    return float(daily.mean()) if len(daily) else math.nan


def reliability(s: Scored, bins: int = 10) -> dict[str, list[float]]:
    """Calibration curve on score-quantile bins: mean predicted vs observed rate, and bin sizes."""
    order = ranking(-s.score)  # ascending
    groups = np.array_split(order, min(bins, len(order)))
    return {"predicted": [float(s.score[g].mean()) for g in groups if len(g)],
            "observed": [float(s.y[g].mean()) for g in groups if len(g)],
            "count": [int(len(g)) for g in groups if len(g)]}


def evaluate(s: Scored, k_per_day: Sequence[int] = (5, 10, 20)) -> dict[str, Any]:
    """Every metric of one scored window."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    positives = int(s.y.sum())
    both = 0 < positives < len(s.y)
    return {
        "returns": int(len(s.y)),
        "positives": positives,
        "base_rate": float(s.y.mean()) if len(s.y) else math.nan,
        "days": s.days,
        "average_precision": float(average_precision_score(s.y, s.score)) if both else math.nan,
        "roc_auc": float(roc_auc_score(s.y, s.score)) if both else math.nan,
        "brier": float(brier_score_loss(s.y, np.clip(s.score, 0, 1))) if len(s.y) else math.nan,
        "at_rate": {f"{rate:.0%}": at_rate(s, rate) for rate in RATES},
        "per_day": {str(k): per_day_top_k(s, k) for k in k_per_day},
        "customer_precision_per_day": {str(k): customer_top_k(s, k) for k in k_per_day},
        "money_at_stake": float(s.amount[s.y == 1].sum()),
        "reliability": reliability(s),
    }


def recall_by_group(s: Scored, groups: np.ndarray, rate: float = 0.02) -> dict[str, dict[str, float]]:
    """Per group (e.g. true typology): how many returns, and the share of them in the top RATE."""
    n = max(1, math.ceil(rate * len(s.y)))
    flagged = np.zeros(len(s.y), bool)
    flagged[ranking(s.score)[:n]] = True
    out = {}
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        out[str(group)] = {"returns": int(mask.sum()), "recall": float(flagged[mask].mean())}
    return out


def summarize(folds: Sequence[dict[str, Any]], paths: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation across folds of the metrics at the given dotted PATHS."""
    out = {}
    for path in paths:
        values = []
        for fold in folds:
            value: Any = fold
            for key in path.split("."):
                value = value[key]
            values.append(float(value))
        array = np.array(values)
        out[path] = {"mean": float(np.nanmean(array)) if len(array) else math.nan,
                     "std": float(np.nanstd(array)) if len(array) else math.nan,
                     "values": values}
    return out
