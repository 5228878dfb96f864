"""Behaviour of a real trained model: invariances, monotone evidence, registry round trip, explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import feature_names
from fraud_service.errors import RegistryError
from fraud_service.featurestore.source import FeatureSource
from fraud_service.scoring.model import Scorer
from models.registry import ModelRegistry
from tests.conftest import TRAIN_UNTIL
from training.trainer import MONOTONE_UP
from training.trainset import Window, current_snapshot, feature_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(trained_world) -> Scorer:
    return Scorer.from_registry(ModelRegistry(trained_world.settings.models_dir), "production")


@pytest.fixture(scope="module")
def test_frame(trained_world) -> pd.DataFrame:
    settings = trained_world.settings
    snapshot = current_snapshot(settings.warehouse_dir)
    return feature_frame(FeatureSource(settings), snapshot, Window(start=TRAIN_UNTIL))


def test_the_model_has_learned_something_and_uses_the_service_features(scorer, trained_world):
    assert scorer.booster.num_trees() >= 5
    assert scorer.features == [f for f in feature_names() if f != "cust_created_epoch"]
    assert scorer.feature_service == "return_fraud_v1"
    metrics = trained_world.result.test["candidates"]
    assert metrics["model"]["average_precision"] > metrics["rules"]["average_precision"]


def test_identical_requests_get_identical_scores(scorer, test_frame):
    once = scorer.score_frame(test_frame)
    twice = scorer.score_frame(pd.concat([test_frame.iloc[::-1], test_frame]).reset_index(drop=True))
    np.testing.assert_array_equal(twice[len(test_frame):], once)
    np.testing.assert_array_equal(twice[:len(test_frame)], once[::-1])


def test_the_dict_path_scores_exactly_like_the_frame_path(scorer, test_frame):
    rows = test_frame.head(200)
    by_frame = scorer.score_frame(rows)
    by_row = np.array([scorer.probability(scorer.row(r))[0] for r in rows.to_dict(orient="records")])
    np.testing.assert_array_equal(by_row, by_frame)


def test_one_row_at_a_time_gives_exactly_the_batch_scores_and_contributions_in_any_thread(scorer, test_frame):
    """Single rows are scored through LightGBM's fast single-row entry point (one prepared configuration per
    thread) and explained on the flattened model (`scoring.treeshap`); batches go through `Booster.predict`. Scores
    agree to the bit, also when threads predict at once; explanations agree to the bit between threads and to
    1e-12 with the batch's (another order of the same additions)."""
    import threading

    x = scorer.matrix(test_frame.head(150))
    assert np.isnan(x).any()  # missing values and categorical codes are among the inputs
    raw, contributions = scorer.raw(x), scorer.contributions(x)
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def one_by_one(n: int) -> None:
        rows = range(len(x)) if n % 2 else range(len(x) - 1, -1, -1)
        got_raw = {i: scorer.raw(x[i:i + 1]) for i in rows}
        got_contrib = {i: scorer.contributions(x[i:i + 1]) for i in rows}
        results[n] = (np.concatenate([got_raw[i] for i in range(len(x))]),
                      np.vstack([got_contrib[i] for i in range(len(x))]))

    threads = [threading.Thread(target=one_by_one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]
    for got_raw, got_contrib in results.values():
        assert got_raw.shape == raw.shape == (len(x),)
        np.testing.assert_array_equal(got_raw, raw)
        np.testing.assert_array_equal(got_contrib, results[0][1])
        np.testing.assert_allclose(got_contrib, contributions, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one row of"):
        scorer._single_raw.predict(x[:1, :-1])


def test_once_flattened_single_rows_are_scored_on_the_flattened_model_to_the_bit(trained_world, test_frame):
    """After the first explanation a single row's raw score comes from the flattened trees (`TreeTables.raw`), not
    LightGBM's single-row call; it still equals the batch score to the bit, as it did before."""
    scorer = Scorer.from_registry(ModelRegistry(trained_world.settings.models_dir), "production")  # a fresh one
    x = scorer.matrix(test_frame.head(200))
    before = np.concatenate([scorer.raw(x[i:i + 1]) for i in range(len(x))])
    assert scorer._tables is None
    scorer.contributions(x[:1])
    assert scorer._tables is not None
    after = np.concatenate([scorer.raw(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(after, scorer.raw(x))
    np.testing.assert_array_equal(after, before)
    with pytest.raises(ValueError, match="one row of"):
        scorer.raw(x[:1, :-1])


@pytest.mark.parametrize("feature", MONOTONE_UP)
def test_more_evidence_of_bad_behaviour_never_lowers_the_score(scorer, test_frame, feature):
    rows = test_frame.head(300).copy()
    base = scorer.score_frame(rows)
    for extra in (1, 2, 5):
        raised = rows.copy()
        raised[feature] = pd.to_numeric(raised[feature]).fillna(0) + extra
        # a missing value and 0 are not the same input: compare against the filled base as well
        filled = rows.copy()
        filled[feature] = pd.to_numeric(filled[feature]).fillna(0)
        assert (scorer.score_frame(raised) >= scorer.score_frame(filled) - 1e-12).all(), feature
    assert base.shape == (300,)


def test_recent_item_not_received_claims_raise_the_score_of_an_ordinary_return(scorer, test_frame):
    ordinary = test_frame[test_frame["rt_return_type"] == "return"].head(100).copy()
    calm = ordinary.assign(cust_inr_30d=0, cust_inr_90d=0, cust_inr_365d=0)
    busy = ordinary.assign(cust_inr_30d=3, cust_inr_90d=4, cust_inr_365d=4)
    assert (scorer.score_frame(busy) >= scorer.score_frame(calm)).all()


def test_an_unknown_category_scores_as_missing_not_as_an_error(scorer, test_frame):
    rows = test_frame.head(20).copy()
    missing = rows.assign(rt_channel=None)
    unknown = rows.assign(rt_channel="carrier_pigeon")
    np.testing.assert_array_equal(scorer.score_frame(unknown), scorer.score_frame(missing))


def test_scores_are_the_same_after_a_round_trip_through_the_registry(trained_world, scorer, test_frame, tmp_path):
    record = ModelRegistry(trained_world.settings.models_dir).load("production")
    copy = ModelRegistry(tmp_path / "copy")
    again = copy.register(record.model_text(), record.manifest, record.policy)
    reloaded = Scorer.from_record(copy.load(again.version, expected_features=feature_names()))
    np.testing.assert_array_equal(reloaded.score_frame(test_frame), scorer.score_frame(test_frame))


def test_a_model_with_a_feature_the_service_does_not_have_is_refused(trained_world, tmp_path):
    record = ModelRegistry(trained_world.settings.models_dir).load("production")
    other = ModelRegistry(tmp_path / "other")
    renamed = [*record.manifest["features"][:-1], "cust_shoe_size"]
    other.register(record.model_text(), {**record.manifest, "features": renamed}, record.policy)
    with pytest.raises(RegistryError, match="does not provide: cust_shoe_size"):
        Scorer.from_registry(other, "latest")


def test_contributions_add_up_to_the_raw_score_and_equal_the_shap_package(scorer, test_frame):
    import shap

    x = scorer.matrix(test_frame.head(300))
    contributions = scorer.contributions(x)
    np.testing.assert_allclose(contributions.sum(axis=1), scorer.raw(x), rtol=1e-9, atol=1e-9)
    explanation = shap.TreeExplainer(scorer.booster)(x)
    np.testing.assert_allclose(contributions[:, :-1], explanation.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(contributions[:, -1], explanation.base_values, rtol=1e-6, atol=1e-6)


def test_scores_are_calibrated_probabilities_on_the_test_window(trained_world):
    model = trained_world.result.test["candidates"]["model"]
    curve = model["reliability"]
    mean_predicted = np.average(curve["predicted"], weights=curve["count"])
    assert 0 < mean_predicted < 1
    assert abs(mean_predicted - model["base_rate"]) < 0.5 * model["base_rate"] + 0.02
    base = model["base_rate"]
    assert model["brier"] < base * (1 - base)  # better than predicting the base rate for everyone
