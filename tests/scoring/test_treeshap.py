"""The flattened TreeSHAP (`scoring.treeshap`) against LightGBM's own leaves and contributions, a brute-force
Shapley computation and the `shap` package, on models with every kind of split LightGBM writes."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from fraud_service.scoring.model import Scorer
from fraud_service.scoring.treeshap import TreeTables
from tests.scoring.test_explanations import brute_force_shapley
from training.trainer import average_models


def _hostile_rows(rng: np.random.Generator, n: int, features: int, categorical: list[int]) -> np.ndarray:
    """Rows with what a split must decide carefully: NaN, zeros of both signs, values below LightGBM's zero
    threshold, and, in categorical columns, unseen, negative, fractional and huge codes."""
    x = rng.normal(size=(n, features)) * 3
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.1] = 0.0
    x[rng.random(x.shape) < 0.05] = -0.0
    x[rng.random(x.shape) < 0.05] = 1e-36
    tiny = float(np.float32(1e-35))  # LightGBM's zero threshold, on either side and just beyond
    for edge in (tiny, -tiny, np.nextafter(tiny, 1.0), -np.nextafter(tiny, 1.0), 1.000000001e-35):
        x[rng.random(x.shape) < 0.02] = edge
    for c in categorical:
        x[:, c] = rng.choice([0, 1, 2, 3, 4, 5, 9, 40, -1, -0.5, 2.7, np.nan, 1e6], n)
    return x


def _train(params: dict, seed: int = 0, rounds: int = 30, categorical: list[int] | None = None,
           features: int = 6) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, features)) * 3
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.1] = 0.0
    for c in categorical or []:
        x[:, c] = rng.integers(0, 6, len(x))
    signal = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) * 0.5 + (x[:, 2] > 1) + np.isnan(x[:, -1])
    if categorical:
        signal = signal + np.isin(x[:, categorical[0]], [1, 3]) * 1.5
    y = (signal + rng.normal(size=len(x)) > 0.5).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "seed": seed, "min_data_in_leaf": 5,
                         "cat_smooth": 1, "min_data_per_group": 5, **params},
                        lgb.Dataset(x, y, categorical_feature=categorical or "auto"), num_boost_round=rounds)
    return booster, _hostile_rows(rng, 400, features, categorical or [])


MODELS = {  # each with the kinds of split (decision type, missing type) it must hold
    "numeric, missing values as NaN": dict(params={"num_leaves": 15}, kinds={("<=", "NaN")}),
    "missing values as zero": dict(params={"num_leaves": 15, "zero_as_missing": True}, kinds={("<=", "Zero")}),
    "no missing values": dict(params={"num_leaves": 15, "use_missing": False}, kinds={("<=", "None")}),
    "categorical splits": dict(params={"num_leaves": 15, "max_cat_to_onehot": 2}, categorical=[4],
                               kinds={("==", "None"), ("<=", "NaN")}),
    "one-hot categorical splits": dict(params={"num_leaves": 15, "max_cat_to_onehot": 8}, categorical=[4],
                                       kinds={("==", "None")}),
    "deep paths on few features": dict(params={"num_leaves": 63, "max_depth": -1, "min_data_in_leaf": 2},
                                       features=3, rounds=10, kinds={("<=", "NaN")}),
}


def _splits(node: dict, above: tuple[int, ...] = ()) -> list[tuple[str, str, bool]]:
    """(decision type, missing type, whether the feature was split on above) of every split under NODE."""
    if "split_index" not in node:
        return []
    here = (node["decision_type"], node["missing_type"], node["split_feature"] in above)
    below = (*above, node["split_feature"])
    return [here, *_splits(node["left_child"], below), *_splits(node["right_child"], below)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_leaves_and_contributions_are_lightgbms(name: str) -> None:
    spec = MODELS[name]
    booster, rows = _train(spec["params"], rounds=spec.get("rounds", 30), categorical=spec.get("categorical"),
                           features=spec.get("features", 6))
    model = booster.dump_model()
    splits = [s for tree in model["tree_info"] for s in _splits(tree["tree_structure"])]
    assert spec["kinds"] <= {(decision, missing) for decision, missing, _ in splits}
    assert any(again for _, _, again in splits)  # a feature split on twice on one path: its slot is AND-ed
    tables = TreeTables.build(model)
    assert tables is not None
    leaves = booster.predict(rows, pred_leaf=True)
    contributions = booster.predict(rows, pred_contrib=True)
    for row, leaf, expected in zip(rows, leaves, contributions, strict=True):
        np.testing.assert_array_equal(tables.leaves(row), leaf)
        np.testing.assert_allclose(tables.contributions(row), expected, rtol=0, atol=1e-10)
    # the raw score: the same leaves' values added in the same order, so the same bits
    np.testing.assert_array_equal(np.array([tables.raw(row) for row in rows]), booster.predict(rows, raw_score=True))


def test_contributions_are_the_brute_force_shapley_values() -> None:
    """An oracle that shares nothing with LightGBM's TreeSHAP: every coalition of 5 features enumerated."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 5))
    x[rng.random(x.shape) < 0.05] = np.nan
    logit = 1.5 * np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + 0.5 * (x[:, 3] > 0)
    y = (rng.random(2000) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "learning_rate": 0.3, "verbose": -1, "seed": 1},
                        lgb.Dataset(x, y), num_boost_round=12)
    tables = TreeTables.build(booster.dump_model())
    assert tables is not None
    for row in x[:20]:
        np.testing.assert_allclose(tables.contributions(row), brute_force_shapley(booster, row), atol=1e-9)


def test_an_averaged_model_and_a_tree_of_one_leaf_are_explained() -> None:
    members = [_train({"num_leaves": 7, "bagging_fraction": 0.7, "bagging_freq": 1, "bagging_seed": k}, seed=0)[0]
               for k in range(3)]
    average = lgb.Booster(model_str=average_models([m.model_to_string() for m in members]))
    rows = _hostile_rows(np.random.default_rng(9), 200, 6, [])
    tables = TreeTables.build(average.dump_model())
    assert tables is not None
    np.testing.assert_allclose(np.array([tables.contributions(r) for r in rows]),
                               average.predict(rows, pred_contrib=True), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.array([tables.raw(r) for r in rows]), average.predict(rows, raw_score=True))

    constant = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 500},  # no split possible
                         lgb.Dataset(np.arange(100.0).reshape(50, 2), np.r_[np.zeros(25), np.ones(25)]),
                         num_boost_round=3)
    tables = TreeTables.build(constant.dump_model())
    assert tables is not None and set(tables.nodes["kind"]) == {0}
    got = tables.contributions(np.array([1.0, 2.0]))
    assert tables.raw(np.array([1.0, 2.0])) == constant.predict(np.array([[1.0, 2.0]]), raw_score=True)[0]
    np.testing.assert_allclose(got, constant.predict(np.array([[1.0, 2.0]]), pred_contrib=True)[0], atol=1e-12)
    assert got[:2].tolist() == [0.0, 0.0]


def test_a_model_it_does_not_flatten_keeps_lightgbms_treeshap() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 4))
    y = rng.integers(0, 3, 600)
    multiclass = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, y),
                           num_boost_round=3)
    assert TreeTables.build(multiclass.dump_model()) is None


def test_a_row_of_the_wrong_width_is_refused() -> None:
    booster, rows = _train({"num_leaves": 7}, rounds=3)
    tables = TreeTables.build(booster.dump_model())
    assert tables is not None
    with pytest.raises(ValueError, match="expected one row of 6 values"):
        tables.contributions(rows[0][:5])
    with pytest.raises(ValueError, match="expected one row of 6 values"):
        tables.raw(np.r_[rows[0], 1.0])


@pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
def test_the_scorer_explains_single_rows_as_the_shap_package_does(trained_world) -> None:
    """The service's path (one row at a time, through `Scorer.contributions`) on the registered model."""
    import pandas as pd
    import shap

    from fraud_service.featurestore.source import FeatureSource, entity_rows
    from models.registry import ModelRegistry

    scorer = Scorer.from_registry(ModelRegistry(trained_world.settings.models_dir), "production")
    returns = pd.read_parquet(trained_world.dataset / "returns.parquet").sort_values("return_id").iloc[::40][:40]
    orders = pd.read_parquet(trained_world.dataset / "orders.parquet")
    items = pd.read_parquet(trained_world.dataset / "order_items.parquet")
    x = scorer.matrix(FeatureSource(trained_world.settings).historical(entity_rows(returns, orders, items)))
    ours = np.vstack([scorer.contributions(x[i:i + 1]) for i in range(len(x))])
    assert scorer._explainer is not None and not hasattr(scorer._explainer, "__self__")  # the flattened model
    explainer = shap.TreeExplainer(scorer.booster)
    np.testing.assert_allclose(ours[:, :-1], np.asarray(explainer.shap_values(x)), atol=1e-6)
    np.testing.assert_allclose(ours, scorer.booster.predict(x, pred_contrib=True), rtol=0, atol=1e-10)


def _chain(depth: int) -> dict:
    """A degenerate tree: a chain of DEPTH splits on three features, a leaf hanging off each."""
    node: dict = {"leaf_index": depth, "leaf_value": 0.1, "leaf_count": 1}
    for i in reversed(range(depth)):
        node = {"split_index": i, "split_feature": i % 3, "threshold": float(i % 7), "decision_type": "<=",
                "default_left": True, "missing_type": "None", "internal_count": 1 + (depth - i),
                "left_child": {"leaf_index": i, "leaf_value": 0.01 * (i % 5), "leaf_count": 1}, "right_child": node}
    return {"num_tree_per_iteration": 1, "num_class": 1, "max_feature_idx": 2, "tree_info": [{"tree_structure": node}]}


def test_a_deep_chain_is_flattened_and_adds_up_and_a_deeper_one_is_left_to_lightgbm() -> None:
    tables = TreeTables.build(_chain(400))
    assert tables is not None and tables.depth == 400
    for row in ([3.0, 8.0, 1.0], [9.0, 9.0, 9.0], [np.nan, -1.0, 4.0]):
        x = np.array(row)
        leaf = int(tables.leaves(x)[0])
        value = 0.1 if leaf == 400 else 0.01 * (leaf % 5)
        assert tables.contributions(x).sum() == pytest.approx(value, abs=1e-9)  # local accuracy
    assert TreeTables.build(_chain(600)) is None  # deeper than MAX_DEPTH


def test_a_linear_tree_model_is_not_flattened() -> None:
    """Its leaves hold a linear function, not a constant: LightGBM refuses to explain it, and so does the service."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(800, 3))
    y = (x[:, 0] + rng.normal(size=800) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "linear_tree": True, "num_leaves": 4},
                        lgb.Dataset(x, y), num_boost_round=3)
    assert TreeTables.build(booster.dump_model()) is None


def test_zero_threshold_splits_decide_as_lightgbm() -> None:
    """Values within LightGBM's zero threshold are zero to every split ("x < 0" splits sit at -1e-35)."""
    rng = np.random.default_rng(0)
    for params in ({}, {"zero_as_missing": True}, {"use_missing": False}):
        x = rng.normal(size=(2000, 2))
        x[rng.random(x.shape) < 0.3] = 0.0
        booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4, **params},
                            lgb.Dataset(x, (x[:, 0] < 0).astype(int)), num_boost_round=3)
        tables = TreeTables.build(booster.dump_model())
        assert tables is not None
        tiny = float(np.float32(1e-35))
        rows = np.array([[v, 1.0] for v in (tiny, -tiny, np.nextafter(tiny, 1), -np.nextafter(tiny, 1), 1e-36,
                                            -1e-36, 1.000000001e-35, 0.0, -0.0)])
        np.testing.assert_array_equal(np.array([tables.leaves(r) for r in rows]), booster.predict(rows, pred_leaf=True))
        np.testing.assert_array_equal(np.array([tables.raw(r) for r in rows]), booster.predict(rows, raw_score=True))
        np.testing.assert_allclose(np.array([tables.contributions(r) for r in rows]),
                                   booster.predict(rows, pred_contrib=True), rtol=0, atol=1e-12)
