"""The demo's account of what its live returns' decisions did, checked against a hand count."""

from __future__ import annotations

import pandas as pd

from training.demo import decision_figures


def _world(tmp_path, with_truth=True):
    pd.DataFrame({"return_id": ["a", "b", "c", "d", "e"], "refund_amount": [100.0, 300.0, 50.0, 10.0, 40.0]}
                 ).to_parquet(tmp_path / "returns.parquet")
    if with_truth:
        pd.DataFrame({"return_id": ["a", "b", "c", "d", "e"],
                      "truth": ["fraud", "fraud", "abuse", "legit", "legit"]}).to_parquet(
            tmp_path / "ground_truth.parquet")
    return tmp_path


def test_decision_figures_count_review_friction_and_the_true_fraud_value_stopped(tmp_path):
    decisions = {"a": "approve", "b": "review", "c": "store_credit_only", "d": "approve", "e": "approve"}
    text = decision_figures(_world(tmp_path), decisions)
    assert text == ("20.0% went to review and 40.0% were not approved at once; that stopped 75% of the "
                    "refund value of the 2 truly fraudulent ones and 100% of the refund value of the 1 truly "
                    "abusive ones (ground truth)")


def test_decision_figures_without_ground_truth_give_the_rates_only(tmp_path):
    text = decision_figures(_world(tmp_path, with_truth=False), {"d": "approve", "e": "deny"})
    assert text == "0.0% went to review and 50.0% were not approved at once"
    _world(tmp_path)
    assert decision_figures(tmp_path, {"d": "approve", "e": "deny"}).endswith(
        "none of them is truly fraudulent or abusive (ground truth)")
