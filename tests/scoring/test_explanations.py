"""TreeSHAP in the hot path (LightGBM's pred_contrib) against two oracles: a brute-force Shapley computation
over every feature subset (independent of LightGBM and shap), and the `shap` package's TreeExplainer."""

from __future__ import annotations

import itertools
import math
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from fraud_service.scoring.model import Scorer
from tests.conftest import TrainedWorld


def _value(node: dict[str, Any], x: np.ndarray, known: frozenset[int]) -> float:
    """The tree's expected output given only the features in KNOWN (path-dependent: unknown splits are averaged
    over the training data that reached each child), as TreeSHAP defines it."""
    if "leaf_value" in node:
        return float(node["leaf_value"])
    left, right = node["left_child"], node["right_child"]
    feature = node["split_feature"]
    if feature in known:
        value = x[feature]
        if math.isnan(value):
            go_left = node["default_left"]
        else:
            go_left = value <= node["threshold"]
        return _value(left if go_left else right, x, known)

    def count(child: dict[str, Any]) -> float:
        return float(child.get("internal_count", child.get("leaf_count")))

    n_left, n_right = count(left), count(right)
    return (n_left * _value(left, x, known) + n_right * _value(right, x, known)) / (n_left + n_right)


def brute_force_shapley(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """Exact Shapley values by enumerating every coalition (2^n per feature, fine for a handful of features)."""
    trees = [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    n = len(x)

    def v(known: frozenset[int]) -> float:
        return sum(_value(tree, x, known) for tree in trees)

    phi = np.zeros(n + 1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                phi[i] += weight * (v(s | {i}) - v(s))
    phi[n] = v(frozenset())
    return phi


@pytest.fixture(scope="module")
def tiny_model() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 5))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the default branch
    logit = 1.5 * np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + 0.5 * (x[:, 3] > 0)
    y = (rng.random(2000) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "learning_rate": 0.3, "verbose": -1, "seed": 1},
                        lgb.Dataset(x, y), num_boost_round=12)
    return booster, x[:25]


def test_pred_contrib_equals_brute_force_shapley(tiny_model: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, rows = tiny_model
    contributions = booster.predict(rows, pred_contrib=True)
    for row, got in zip(rows, contributions, strict=True):
        np.testing.assert_allclose(got, brute_force_shapley(booster, row), atol=1e-9)
    # and they add up to the raw score
    np.testing.assert_allclose(contributions.sum(axis=1), booster.predict(rows, raw_score=True), atol=1e-9)


@pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
def test_pred_contrib_equals_shap_tree_explainer_on_the_trained_model(trained_world: TrainedWorld) -> None:
    """On the registered model and real feature vectors (historical retrieval of 60 returns)."""
    import pandas as pd
    import shap

    from fraud_service.featurestore.source import FeatureSource, entity_rows
    from models.registry import ModelRegistry

    scorer = Scorer.from_registry(ModelRegistry(trained_world.settings.models_dir), "production")
    returns = pd.read_parquet(trained_world.dataset / "returns.parquet").sort_values("return_id").iloc[::40][:60]
    orders = pd.read_parquet(trained_world.dataset / "orders.parquet")
    items = pd.read_parquet(trained_world.dataset / "order_items.parquet")
    vectors = FeatureSource(trained_world.settings).historical(entity_rows(returns, orders, items))
    x = scorer.matrix(vectors)
    ours = scorer.contributions(x)
    explainer = shap.TreeExplainer(scorer.booster)
    np.testing.assert_allclose(ours[:, :-1], np.asarray(explainer.shap_values(x)), atol=1e-6)
    np.testing.assert_allclose(ours[:, -1], float(np.ravel(explainer.expected_value)[0]), atol=1e-6)
    np.testing.assert_allclose(ours.sum(axis=1), scorer.raw(x), atol=1e-6)
    assert np.abs(ours[:, :-1]).sum(axis=0).astype(bool).sum() >= 10  # many features really contribute
