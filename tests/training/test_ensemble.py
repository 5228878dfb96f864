"""The final model is the average of several members trained with their own sampling seeds, as one LightGBM model:
its scores are the members' mean and its explanations the members' mean, equal to the `shap` package's."""

from __future__ import annotations

import dataclasses

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.trainer import TrainConfig, average_models, fit

FEATURES = ["rt_refund_amount", "cust_returns_30d", "rt_return_type"]


def _frame(n: int = 3_000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({
        "requested_at": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
        "rt_refund_amount": rng.gamma(2.0, 50.0, n),
        "cust_returns_30d": rng.poisson(1.0, n).astype(float),
        "rt_return_type": rng.choice(["return", "item_not_received", "wrong_item"], n),
    })
    logit = -4 + 0.015 * frame["rt_refund_amount"] + 0.6 * frame["cust_returns_30d"] \
        + 1.5 * (frame["rt_return_type"] == "item_not_received")
    return frame, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def _members(x: np.ndarray, y: np.ndarray, count: int) -> list[lgb.Booster]:
    return [lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7, "bagging_fraction": 0.7,
                       "bagging_freq": 1, "feature_fraction": 0.7, "bagging_seed": k, "feature_fraction_seed": k},
                      lgb.Dataset(x, y, categorical_feature=[2]), num_boost_round=15 + k) for k in range(count)]


@pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
def test_the_average_scores_and_explains_as_the_mean_of_its_members():
    shap = pytest.importorskip("shap")
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.random(600), rng.random(600), rng.integers(0, 4, 600)]).astype(float)
    x[rng.random(600) < 0.1, 1] = np.nan  # missing values take each tree's default direction
    y = (x[:, 0] + 0.3 * (x[:, 2] == 1) + rng.random(600) > 1.1).astype(int)
    members = _members(x, y, 3)
    average = lgb.Booster(model_str=average_models([m.model_to_string() for m in members]))

    assert average.num_trees() == 15 + 16 + 17
    mean_raw = np.mean([m.predict(x, raw_score=True) for m in members], axis=0)
    np.testing.assert_allclose(average.predict(x, raw_score=True), mean_raw, rtol=0, atol=1e-12)
    mean_contrib = np.mean([m.predict(x, pred_contrib=True) for m in members], axis=0)
    contrib = average.predict(x, pred_contrib=True)
    np.testing.assert_allclose(contrib, mean_contrib, rtol=0, atol=1e-12)
    explainer = shap.TreeExplainer(average)
    values = explainer.shap_values(x)
    values = values[1] if isinstance(values, list) else values
    np.testing.assert_allclose(values, contrib[:, :-1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(float(np.ravel(explainer.expected_value)[-1]), contrib[0, -1], atol=1e-9)


def test_the_average_lists_its_own_split_counts_as_lightgbm_would():
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.random(500), rng.random(500), rng.integers(0, 3, 500)]).astype(float)
    y = (x[:, 0] + 0.2 * x[:, 1] + rng.random(500) > 1.1).astype(int)
    average = lgb.Booster(model_str=average_models([m.model_to_string() for m in _members(x, y, 3)]))
    written = average.model_to_string()  # LightGBM writes the section from the trees it holds
    ours = average_models([m.model_to_string() for m in _members(x, y, 3)])
    section = "feature_importances:"
    assert ours[ours.index(section):ours.index("parameters:")] == written[written.index(section):
                                                                          written.index("parameters:")]
    assert dict(zip(average.feature_name(), average.feature_importance().tolist(), strict=True))["Column_0"] > 0


def test_one_model_is_its_own_average_and_strangers_are_refused():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.random(300), rng.random(300), rng.integers(0, 3, 300)]).astype(float)
    y = (x[:, 0] > 0.5).astype(int)
    text = _members(x, y, 1)[0].model_to_string()
    assert average_models([text]) == text
    other = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x[:, :2], y), 5).model_to_string()
    with pytest.raises(ValueError, match="share their header"):
        average_models([text, other])
    with pytest.raises(ValueError, match="no trees"):
        average_models([text, "tree\nversion=v4\n"])
    linear = lgb.train({"objective": "binary", "verbosity": -1, "linear_tree": True},
                       lgb.Dataset(x[:, :2], y), 3).model_to_string()
    with pytest.raises(ValueError, match="linear trees"):
        average_models([linear, linear])


def test_fit_averages_members_that_differ_and_calibrates_on_their_mean():
    frame, y = _frame()
    config = TrainConfig(min_child_samples=10, early_stopping_rounds=20, ensemble=3)
    model = fit(frame, y, FEATURES, config)
    single = fit(frame, y, FEATURES, dataclasses.replace(config, ensemble=1))

    booster = lgb.Booster(model_str=model.model_text)
    assert model.best_iteration == single.best_iteration
    assert booster.num_trees() == 3 * model.best_iteration
    # the members are not copies: with bagging, each samples its own rows
    dumped = booster.dump_model()["tree_info"]
    firsts = [dumped[k * model.best_iteration]["tree_structure"] for k in range(3)]
    assert len({str(t) for t in firsts}) == 3
    # member 0 is the single model's sampling, so averaging moves the validation scores (and the calibration)
    assert model.calibration != single.calibration
    assert model.params["config"]["ensemble"] == 3
    assert model.manifest_part()["ensemble"] == 3 and model.manifest_part()["trees"] == booster.num_trees()
    assert fit(frame, y, FEATURES, config).model_text == model.model_text  # deterministic


def test_without_sampling_one_model_is_trained_not_copies():
    frame, y = _frame(1_500)
    config = TrainConfig(min_child_samples=10, early_stopping_rounds=10, ensemble=4, bagging_fraction=1.0,
                         feature_fraction=1.0)
    model = fit(frame, y, FEATURES, config)
    assert model.members == 1 and model.manifest_part()["ensemble"] == 1
    assert lgb.Booster(model_str=model.model_text).num_trees() == model.best_iteration == model.trees


def test_an_ensemble_of_none_is_refused():
    frame, y = _frame(500)
    with pytest.raises(ValueError, match="a model at least"):
        fit(frame, y, FEATURES, TrainConfig(min_child_samples=10, early_stopping_rounds=5, ensemble=0))


def test_core_members_split_only_on_the_core_features():
    """`core_members` (off by default; docs/training.md measured it): the last members see only CORE's plain counts,
    the others every feature."""
    from training.trainer import CORE

    frame, y = _frame()
    rng = np.random.default_rng(3)
    frame["dev_orders_vs_customer"] = y * 2.0 + rng.normal(0, 1, len(y))  # a strong signal outside the core
    features = [*FEATURES, "dev_orders_vs_customer"]
    assert set(FEATURES) <= set(CORE) and "dev_orders_vs_customer" not in CORE
    config = TrainConfig(min_child_samples=10, early_stopping_rounds=20, ensemble=3, core_members=1)
    model = fit(frame, y, features, config)
    trees = lgb.Booster(model_str=model.model_text).trees_to_dataframe()
    member = trees["tree_index"] // model.best_iteration
    used = {k: set(trees.loc[(member == k) & trees["split_feature"].notna(), "split_feature"]) for k in range(3)}
    assert "dev_orders_vs_customer" in used[0] and "dev_orders_vs_customer" in used[1]
    assert used[2] and used[2] <= set(FEATURES)
    with pytest.raises(ValueError, match="core_members=3: a model at least"):
        fit(frame, y, features, dataclasses.replace(config, core_members=3))
