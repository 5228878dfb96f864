"""Drift of features and scores against a model's training sample: the population stability index (PSI).

At training time `reference` bins each feature of the training rows, and the calibrated score, and keeps the
share of rows in each bin (the registry stores it beside the model as `sample.json`). Live values are put in
the same bins and compared:

    PSI = sum over bins of (live_share - train_share) * ln(live_share / train_share)

Numeric features are binned on the training sample's deciles (repeated edges merged); a missing value is a bin
of its own; a categorical feature has one bin per category seen in training plus one for anything else. Empty
bins are smoothed with EPSILON so the logarithm stays finite. A PSI above 0.25 is the usual sign of a shift
that matters (`DRIFTED`); 0.1 to 0.25 is worth watching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BINS = 10
EPSILON = 1e-4
DRIFTED = 0.25
OTHER = "(other)"
MISSING = "(missing)"


def _numeric_edges(values: np.ndarray) -> list[float]:
    present = values[~np.isnan(values)]
    if not len(present):
        return []
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    return [float(e) for e in edges]


def numeric_shares(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Shares of VALUES in the bins (-inf, e1], (e1, e2], ..., (ek, inf) and missing (last)."""
    values = np.asarray(values, dtype=float)
    n = max(len(values), 1)
    missing = np.isnan(values)
    index = np.searchsorted(np.asarray(edges, dtype=float), values[~missing], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
    return [float(c / n) for c in counts] + [float(missing.sum() / n)]


def categorical_shares(values: Sequence[Any], categories: Sequence[str]) -> list[float]:
    """Shares of VALUES per category, then anything else, then missing."""
    n = max(len(values), 1)
    known = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 2)
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            counts[-1] += 1
        else:
            counts[known.get(str(v), len(categories))] += 1
    return [float(c / n) for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of ACTUAL shares against EXPECTED shares (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=float), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def reference(columns: Mapping[str, Sequence[Any]], scores: np.ndarray,
              categorical: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The training sample's bins and shares: per feature (COLUMNS: name -> values) and for the scores."""
    features: dict[str, Any] = {}
    for name, raw in columns.items():
        if name in categorical:
            cats = [str(c) for c in categorical[name]]
            features[name] = {"kind": "categorical", "categories": cats, "shares": categorical_shares(raw, cats)}
        else:
            values = np.asarray(raw, dtype=float)
            edges = _numeric_edges(values)
            features[name] = {"kind": "numeric", "edges": edges, "shares": numeric_shares(values, edges)}
    score_edges = _numeric_edges(np.asarray(scores, dtype=float))
    return {"rows": int(len(scores)), "bins": BINS, "features": features,
            "score": {"kind": "numeric", "edges": score_edges,
                      "shares": numeric_shares(np.asarray(scores, dtype=float), score_edges)}}


def shares_of(spec: Mapping[str, Any], values: Sequence[Any]) -> list[float]:
    """VALUES put in the bins SPEC (one feature's reference) describes."""
    if spec["kind"] == "categorical":
        return categorical_shares(values, spec["categories"])
    return numeric_shares(np.asarray(values, dtype=float), spec["edges"])


def compare(spec: Mapping[str, Any], values: Sequence[Any], threshold: float = DRIFTED) -> dict[str, Any]:
    """{psi, drifted, rows} of live VALUES against one reference SPEC."""
    value = psi(spec["shares"], shares_of(spec, values)) if len(values) else math.nan
    return {"psi": value, "drifted": bool(value > threshold), "rows": int(len(values))}
