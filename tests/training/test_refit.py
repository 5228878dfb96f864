"""The final model trains on every row once early stopping has chosen its rounds, deterministically."""

from __future__ import annotations

import dataclasses

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.trainer import TrainConfig, fit

FEATURES = ["rt_refund_amount", "cust_returns_30d"]
CONFIG = TrainConfig(bagging_fraction=1.0, feature_fraction=1.0, min_child_samples=5, early_stopping_rounds=20)


def _frame(n: int = 2_000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "requested_at": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
        "rt_refund_amount": rng.gamma(2.0, 50.0, n),
        "cust_returns_30d": rng.poisson(1.0, n).astype(float),
    })
    logit = -4 + 0.015 * frame["rt_refund_amount"] + 0.6 * frame["cust_returns_30d"]
    return frame, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def _rows_seen(model_text: str) -> int:
    """The rows the first tree was grown on (its root's count: every row, with no bagging)."""
    return int(lgb.Booster(model_str=model_text).dump_model()["tree_info"][0]["tree_structure"]["internal_count"])


def test_the_refit_trains_on_every_row_for_the_chosen_rounds_and_is_deterministic():
    frame, y = _frame()
    model = fit(frame, y, FEATURES, CONFIG)
    again = fit(frame, y, FEATURES, CONFIG)
    early = fit(frame, y, FEATURES, dataclasses.replace(CONFIG, refit=False))

    assert model.model_text == again.model_text
    assert model.rows["final_model"] == len(frame) == _rows_seen(model.model_text)
    assert early.rows["final_model"] == early.rows["train"] == _rows_seen(early.model_text) == int(len(frame) * 0.8)
    assert model.best_iteration == early.best_iteration
    # without row or feature sampling, members would be copies: one model is trained
    assert model.members == 1 and lgb.Booster(model_str=model.model_text).num_trees() == model.best_iteration
    # the calibration is the one fitted out of sample on the early-stopping model's validation scores
    assert (model.calibration.a, model.calibration.b) == (early.calibration.a, early.calibration.b)
    assert model.validation["of"] == "the early-stopping models, before the refit"
    assert model.model_text != early.model_text
