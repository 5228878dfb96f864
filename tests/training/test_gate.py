"""The promotion gate: realised policy costs against a row-by-row oracle, and the verdicts it gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from fraud_service.scoring.policy import Decision, Policy
from training import gate as gates
from training.thresholds import Costs

POLICY = Policy(version="a.p1", inspect_from=0.2, credit_from=0.4, review_from=0.6, deny_from=0.9)
COSTS = Costs(review_cost=12.0, inspection_cost=4.0, inspection_catch=0.5, credit_saving=0.6, credit_friction=3.0,
              deny_friction=60.0)


def _window(n: int, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "requested_at": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        "refund_amount": rng.uniform(5, 400, n).round(2),
        "channel": rng.choice(["mail", "store", "returnless"], n),
        "return_type": rng.choice(["return", "item_not_received", "damaged_on_arrival"], n),
    })
    return frame, (rng.random(n) < 0.1).astype(np.int64)


def _cost_of_one(decision: Decision, bad: int, amount: float) -> float:
    """What one decided return cost, written out case by case (the oracle)."""
    if decision is Decision.APPROVE:
        return amount if bad else 0.0
    if decision is Decision.APPROVE_AFTER_INSPECTION:
        return COSTS.inspection_cost + (amount * (1 - COSTS.inspection_catch) if bad else 0.0)
    if decision is Decision.STORE_CREDIT_ONLY:
        return amount * (1 - COSTS.credit_saving) if bad else COSTS.credit_friction
    if decision is Decision.REVIEW:
        return COSTS.review_cost
    return 0.0 if bad else COSTS.deny_friction


def test_realised_costs_equal_a_row_by_row_computation_through_the_policy():
    frame, y = _window(600)
    scores = np.random.default_rng(2).random(600)
    scores[:5] = [0.2, 0.4, 0.6, 0.9, 0.19999]  # on and just below the cuts
    got = gates.realised_costs(POLICY, frame, scores, y, COSTS)
    expected = [_cost_of_one(POLICY.decide(float(s), c, t), int(b), float(a)) for s, c, t, b, a in
                zip(scores, frame["channel"], frame["return_type"], y, frame["refund_amount"], strict=True)]
    assert got == pytest.approx(np.array(expected))


def test_a_model_judged_against_itself_passes_with_no_margin_and_no_noise():
    frame, y = _window(500)
    scores = np.random.default_rng(3).random(500) * 0.5 + y * 0.5
    gate = gates.judge(frame, y, ("v0002", scores, POLICY), ("v0001", scores, POLICY), COSTS)
    assert gate["passed"] is True and gate["reasons"] == []
    assert gate["margin"] == {"average_precision": 0.0, "cost_per_return": 0.0}
    assert gate["noise"] == {"average_precision": 0.0, "cost_per_return": 0.0}
    assert gate["metrics"]["v0002"]["average_precision"] == pytest.approx(average_precision_score(y, scores))
    assert (gate["returns"], gate["positives"]) == (500, int(y.sum()))


def test_a_model_clearly_worse_than_production_fails_and_says_by_how_much():
    frame, y = _window(2000)
    rng = np.random.default_rng(4)
    good = np.clip(rng.random(2000) * 0.4 + y * 0.6, 0, 1)
    noise = rng.random(2000)
    gate = gates.judge(frame, y, ("v0002", noise, POLICY), ("v0001", good, POLICY), COSTS)
    assert gate["passed"] is False
    assert gate["margin"]["average_precision"] < -gate["noise"]["average_precision"] < 0
    assert any(r.startswith("average precision is") and "lower than v0001's" in r for r in gate["reasons"])
    assert "gate against v0001 on 2,000 returns" in gates.summary(gate) and "not passed" in gates.summary(gate)


def test_the_noise_is_the_spread_of_the_paired_difference_over_resamples():
    frame, y = _window(800)
    rng = np.random.default_rng(5)
    a, b = rng.random(800) + y * 0.3, rng.random(800) + y * 0.35
    ap_noise, _ = gates.paired_noise(y, a, b, None, None, draws=60)
    draws = np.random.default_rng(gates.SEED)
    diffs = []
    for _ in range(60):
        i = draws.integers(0, 800, 800)
        diffs.append(average_precision_score(y[i], a[i]) - average_precision_score(y[i], b[i]))
    assert ap_noise == pytest.approx(float(np.std(diffs)))
    assert ap_noise > 0


def test_the_first_model_must_beat_the_rules_baseline_on_average_precision():
    frame, y = _window(1000)
    rng = np.random.default_rng(6)
    model = rng.random(1000) * 0.5 + y * 0.5
    rules = rng.random(1000)
    passed = gates.judge(frame, y, ("model", model, POLICY), (gates.BASELINE, rules, None), COSTS)
    assert passed["passed"] is True and passed["against"] == "rules+history"
    assert passed["metrics"]["rules+history"]["cost_per_return"] is None  # the rules have no policy to cost
    failed = gates.judge(frame, y, ("model", rules, POLICY), (gates.BASELINE, model, None), COSTS)
    assert failed["passed"] is False and "does not beat rules+history's" in failed["reasons"][0]


def test_a_window_without_fraud_labels_cannot_pass():
    frame, _ = _window(100)
    y = np.zeros(100, dtype=np.int64)
    gate = gates.judge(frame, y, ("v2", np.random.default_rng(7).random(100), POLICY),
                       (gates.BASELINE, np.zeros(100), None), COSTS)
    assert gate["passed"] is False and "0 fraud or abuse labels" in gate["reasons"][0]
    assert gates.summary(gate).startswith("gate not passed: the window holds 100 returns")


def test_train_warns_when_the_hard_rules_alone_fill_the_friction_ceiling(capsys):
    from api.cli.modeling import _print_rates

    _print_rates({"expected_rates": {"review": 0.088}, "ruled_share": 0.088, "costs": {"max_friction": 0.05}})
    out = capsys.readouterr().out
    assert "warning: the hard rules alone stop 8.8% of the sizing window's returns" in out
    _print_rates({"expected_rates": {"review": 0.04}, "ruled_share": 0.01, "costs": {"max_friction": 0.05}})
    assert "warning" not in capsys.readouterr().out
