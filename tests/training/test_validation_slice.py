"""The validation slice reaches back in time when the latest rows hold too few labelled positives.

With few labels (a retailer's first months, a low fraud rate, labels that arrive weeks late) the latest fifth of
the matured rows can hold one or two fraud labels: training used to refuse. The slice now grows back until it holds
MIN_VALIDATION_POSITIVES, never past half the rows; when labels only began lately it starts later instead, so the
training part keeps 10, as long as the slice keeps 5 and a negative.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fraud_service.errors import TrainingDataError
from training.trainer import MIN_VALIDATION_POSITIVES, TrainConfig, _validation_start, fit

FEATURES = ["rt_refund_amount", "cust_returns_30d"]
CONFIG = TrainConfig(bagging_fraction=1.0, feature_fraction=1.0, min_child_samples=5, early_stopping_rounds=20,
                     ensemble=1)


def _oracle(y: np.ndarray, share: float, already: int = 0) -> int:
    """The start, by brute force: the latest share if it holds enough, else the latest start that does, at most half;
    then, if the training part (the rows before it and ALREADY) holds fewer than 10 positives, the earliest later
    start that leaves it 10 while the slice keeps 5, provided the slice still holds a negative."""
    start = int(len(y) * (1 - share))
    if y[start:].sum() < MIN_VALIDATION_POSITIVES:
        for candidate in range(start, len(y) - len(y) // 2 - 1, -1):
            start = candidate
            if y[candidate:].sum() >= MIN_VALIDATION_POSITIVES:
                break
    if y[:start].sum() + already < 10:
        for candidate in range(start, len(y) + 1):
            if y[:candidate].sum() + already >= 10 and y[candidate:].sum() >= 5:
                return candidate if (y[candidate:] == 0).any() else start
    return start


@pytest.mark.parametrize("seed", range(90))
def test_the_start_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    y = (rng.random(n) < rng.choice([0.0, 0.01, 0.03, 0.1, 0.5, 0.9])).astype(int)
    if seed % 3 == 0:  # labels that only began lately
        y[:int(n * rng.uniform(0.5, 0.95))] = 0
    if seed % 5 == 0:  # a run of positives at the very end
        y[-int(rng.integers(1, 20)):] = 1
    share, already = float(rng.choice([0.2, 0.2, 0.5, 0.7])), int(rng.choice([0, 0, 3, 12]))
    assert _validation_start(y, share, already) == _oracle(y, share, already)


def test_the_latest_fifth_is_kept_when_it_holds_enough():
    y = np.zeros(1000, dtype=int)
    y[-MIN_VALIDATION_POSITIVES:] = 1
    assert _validation_start(y, 0.2) == 800
    y[-1] = 0  # one short: the slice reaches back to the tenth positive from the end
    y[300] = 1
    assert _validation_start(y, 0.2) == 500  # but never past half


def _few_recent_labels(n: int = 3_000) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose positives are all in the first 70% of time: the latest fifth holds none."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({
        "requested_at": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
        "rt_refund_amount": rng.gamma(2.0, 50.0, n),
        "cust_returns_30d": rng.poisson(1.0, n).astype(float),
    })
    logit = -5 + 0.02 * frame["rt_refund_amount"] + 0.6 * frame["cust_returns_30d"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    y[int(n * 0.7):] = 0
    return frame, y


def test_training_reaches_back_for_validation_labels_instead_of_refusing():
    frame, y = _few_recent_labels()
    assert y[int(len(y) * 0.8):].sum() == 0 and y[:int(len(y) * 0.7)].sum() >= 40
    model = fit(frame, y, FEATURES, CONFIG)
    assert model.rows["validation_positives"] >= MIN_VALIDATION_POSITIVES
    assert model.rows["validation"] == len(y) - _validation_start(y, 0.2) > len(y) * 0.2
    assert model.rows["train_positives"] + model.rows["validation_positives"] == y.sum()
    early = fit(frame, y, FEATURES, dataclasses.replace(CONFIG, refit=False))
    assert early.rows["train"] == _validation_start(y, 0.2)


def test_too_few_labels_still_refuse_with_the_count():
    frame, y = _few_recent_labels(400)
    y[:] = 0
    y[np.arange(10, 200, 10)] = 1  # 19 in all
    with pytest.raises(TrainingDataError, match="^19 fraud/abuse labels among 400 returns; at least 20"):
        fit(frame, y, FEATURES, CONFIG)
    y[np.arange(250, 400, 20)] = 1  # 27, 8 of them in the latest half: the slice stops at half, 19 train
    rows = fit(frame, y, FEATURES, CONFIG).rows
    assert (rows["train_positives"], rows["validation_positives"], rows["validation"]) == (19, 8, 200)
    y[:] = 0
    y[np.arange(0, 90, 10)] = 1
    y[np.arange(320, 400, 5)] = 1  # 25, 16 in the latest fifth: the slice starts later, leaving 10 to train
    rows = fit(frame, y, FEATURES, CONFIG).rows
    assert (rows["train_positives"], rows["validation_positives"]) == (10, 15)
    for early in (np.arange(200, 240, 5), np.arange(300, 320, 5)):  # 8 or 4 before the latest fifth
        y[:] = 0
        y[early] = 1
        y[np.arange(340 if len(early) == 8 else 320, 400, 5)] = 1  # 20 in all: labels that began lately
        rows = fit(frame, y, FEATURES, CONFIG).rows
        assert (rows["train_positives"], rows["validation_positives"]) == (10, 10)


def test_a_slice_of_fraud_labels_alone_refuses_rather_than_failing_the_calibration():
    frame, y = _few_recent_labels(400)
    y[:] = 0
    y[np.arange(300, 390, 10)] = 1
    y[389:] = 1  # 20 positives, the last 11 in a row: a slice leaving 10 to train would hold no legit return
    assert _validation_start(y, 0.2) == 320  # it does not start later
    with pytest.raises(TrainingDataError, match="the training slice has 2 fraud/abuse labels"):
        fit(frame, y, FEATURES, CONFIG)
    y[:] = 1
    y[:150] = 0
    y[np.arange(0, 150, 10)] = 1  # the whole latest part fraud: refused with a reason, not a solver error
    with pytest.raises(TrainingDataError, match="holds only fraud/abuse labels"):
        fit(frame, y, FEATURES, CONFIG)


def test_positives_among_the_unmatured_rows_count_for_the_training_part():
    frame, y = _few_recent_labels(400)
    mature = np.arange(400) < 300  # the last 100 rows' labels have not had time to arrive: they only train
    y[:] = 0
    y[np.arange(242, 298, 4)] = 1  # 14 matured, all in the latest fifth of the matured rows
    y[np.arange(310, 400, 15)] = 1  # 6 unmatured
    rows = fit(frame, y, FEATURES, CONFIG, mature=mature).rows
    assert (rows["train_positives"], rows["validation_positives"]) == (10, 10)
