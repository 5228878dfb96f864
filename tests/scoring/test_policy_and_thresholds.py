"""The decision policy and the thresholds proposed from capacity and costs."""

from __future__ import annotations

import numpy as np
import pytest

from fraud_service.scoring.policy import Decision, Policy
from training.thresholds import Costs, propose

POLICY = Policy(version="v0001.p1", inspect_from=0.1, credit_from=0.2, review_from=0.4, deny_from=0.9)


@pytest.mark.parametrize(("score", "channel", "return_type", "decision"), [
    (0.05, "mail", "return", Decision.APPROVE),
    (0.10, "mail", "return", Decision.APPROVE_AFTER_INSPECTION),
    (0.15, "store", "wrong_item", Decision.APPROVE_AFTER_INSPECTION),
    (0.15, "returnless", "return", Decision.STORE_CREDIT_ONLY),
    (0.15, "mail", "item_not_received", Decision.STORE_CREDIT_ONLY),
    (0.25, "mail", "return", Decision.STORE_CREDIT_ONLY),
    (0.40, "mail", "return", Decision.REVIEW),
    (0.95, "returnless", "item_not_received", Decision.DENY),
])
def test_each_band_gives_its_decision(score, channel, return_type, decision):
    assert POLICY.decide(score, channel, return_type) is decision


def test_decisions_are_ordered_by_severity_and_only_review_and_deny_need_a_person():
    assert [d.severity for d in Decision] == [0, 1, 2, 3, 4]
    assert [d for d in Decision if d.needs_human] == [Decision.REVIEW, Decision.DENY]


def test_thresholds_that_fall_are_refused():
    with pytest.raises(ValueError, match="must rise"):
        Policy(version="x", inspect_from=0.3, credit_from=0.2, review_from=0.4, deny_from=0.9)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        Policy(version="x", inspect_from=0.1, credit_from=0.2, review_from=0.4, deny_from=1.5)


def test_a_policy_survives_a_round_trip_through_a_dict():
    assert Policy.from_dict(POLICY.to_dict()) == POLICY


def test_cost_thresholds_follow_the_break_even_formulas_when_capacity_is_ample():
    costs = Costs(reviews_per_day=1e9, loss_per_fraud=200.0, review_cost=10.0, inspection_cost=4.0,
                  inspection_catch=0.5, credit_saving=0.6, credit_friction=30.0, deny_friction=50.0, max_friction=1.0)
    policy = propose(np.linspace(0, 1, 1000), 10, costs, np.array([]))
    assert policy.inspect_from == pytest.approx(4.0 / (200 * 0.5))          # 0.04
    assert policy.credit_from == pytest.approx(30.0 / (200 * 0.6 + 30.0))  # 0.2
    assert policy.review_from == pytest.approx(0.2)  # 10/200 = 0.05 is raised to the credit threshold
    assert policy.deny_from == pytest.approx(1 - 10.0 / 50.0)               # 0.8
    assert policy.basis["capacity_bound"] is False


def test_the_review_band_is_narrowed_to_the_team_capacity():
    rng = np.random.default_rng(3)
    scores = rng.beta(0.5, 5, 20_000)
    days, capacity = 20, 15.0
    costs = Costs(reviews_per_day=capacity, loss_per_fraud=150.0, max_friction=1.0)
    policy = propose(scores, days, costs, np.array([]))
    in_review = ((scores >= policy.review_from) & (scores < policy.deny_from)).sum() / days
    assert policy.basis["capacity_bound"] is True
    assert in_review <= capacity
    one_more = ((scores >= np.nextafter(policy.review_from, -1)) & (scores < policy.deny_from)).sum() / days
    assert in_review >= capacity - 1 / days or one_more > capacity
    assert policy.basis["expected_per_day"]["review"] == pytest.approx(in_review)
    assert policy.inspect_from <= policy.credit_from <= policy.review_from <= policy.deny_from


def test_the_default_loss_is_the_mean_refund_of_labelled_fraud():
    policy = propose(np.linspace(0, 1, 100), 5, Costs(reviews_per_day=1e9, review_cost=12.0),
                     np.array([100.0, 300.0]))
    assert policy.basis["costs"]["loss_per_fraud"] == pytest.approx(200.0)
    assert policy.review_from >= 12.0 / 200.0


def _not_approved(policy: Policy, scores: np.ndarray) -> float:
    return float((scores >= policy.inspect_from).mean())


def test_the_friction_ceiling_gives_up_the_mildest_bands_first_and_never_overflows():
    rng = np.random.default_rng(4)
    scores = rng.beta(0.6, 4, 10_000)
    costs = Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=0.05)
    free = propose(scores, 30, Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=1.0), np.array([]))
    policy = propose(scores, 30, costs, np.array([]))
    assert _not_approved(free, scores) > 0.2  # the costs alone would touch a fifth of all returns
    assert policy.basis["friction_bound"] is True
    aim = 0.05 - np.sqrt(0.05 * 0.95 / (len(scores) * 7 / 30))  # one standard error of a week's share below
    assert policy.basis["friction_headroom"] == pytest.approx(0.05 - aim)
    assert _not_approved(policy, scores) <= aim
    assert _not_approved(policy, scores) >= aim - 1 / len(scores)  # and what is allowed is used, not undershot
    assert policy.deny_from == free.deny_from  # the harshest band keeps its cost threshold above the cut
    assert policy.basis["inspect_from_by_cost"] == free.inspect_from
    rates = policy.basis["expected_rates"]
    assert rates["not_approved_at_once"] == pytest.approx(_not_approved(policy, scores))
    assert rates["review"] + rates["deny"] + rates["store_credit_or_inspection"] == pytest.approx(
        rates["not_approved_at_once"])


def test_returns_the_hard_rules_stop_count_first_against_both_ceilings():
    rng = np.random.default_rng(5)
    scores = rng.beta(0.6, 4, 10_000)
    ruled = np.zeros(len(scores), dtype=bool)
    ruled[rng.choice(len(scores), 300, replace=False)] = True  # 3% the rules review whatever their score
    costs = Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=0.05)
    policy = propose(scores, 30, costs, np.array([]), ruled=ruled)
    stopped = (scores >= policy.inspect_from) | ruled
    aim = 0.05 - policy.basis["friction_headroom"]
    assert stopped.mean() <= aim and stopped.mean() >= aim - 1 / len(scores)
    assert policy.basis["expected_rates"]["not_approved_at_once"] == pytest.approx(stopped.mean())
    assert policy.basis["ruled_share"] == pytest.approx(0.03)
    capacity = Costs(reviews_per_day=20.0, loss_per_fraud=150.0, max_friction=1.0)
    tight = propose(scores, 30, capacity, np.array([]), ruled=ruled)  # the rules already take 10 of 20 a day
    reviews = (((scores >= tight.review_from) & (scores < tight.deny_from)) | ruled).sum() / 30
    assert reviews <= 20.0 and reviews >= 20.0 - 1 / 30 - 1e-9


def test_the_friction_ceiling_is_a_ceiling_not_a_target():
    scores = np.r_[np.full(990, 0.001), np.full(10, 0.99)]  # 1% risky returns, a 5% ceiling
    costs = Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=0.05)
    policy = propose(scores, 30, costs, np.array([]))
    assert policy.basis["friction_bound"] is False
    assert _not_approved(policy, scores) == pytest.approx(0.01)


def test_the_headroom_below_the_friction_ceiling_shrinks_as_weekly_volume_grows():
    rng = np.random.default_rng(6)
    costs = Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=0.05)
    shares = {}
    for weekly in (150, 1_000, 10_000):
        scores = rng.beta(0.6, 4, weekly * 4)  # four weeks of returns
        policy = propose(scores, 28, costs, np.array([]))
        shares[weekly] = _not_approved(policy, scores)
        assert policy.basis["friction_headroom"] == pytest.approx(np.sqrt(0.05 * 0.95 / weekly))
        # a week at the expected share plus one standard error still fits under the ceiling
        assert shares[weekly] + np.sqrt(0.05 * 0.95 / weekly) <= 0.05 + 1e-9
    assert shares[150] < shares[1_000] < shares[10_000] < 0.05
    assert shares[10_000] > 0.047
    # at ten returns a week the error (6.9 points) would swallow the ceiling: half of it is kept for the bands
    scores = rng.beta(0.6, 4, 40)
    few = propose(scores, 28, costs, np.array([]))
    assert few.basis["friction_headroom"] == pytest.approx(0.025)
    assert 0 < _not_approved(few, scores) <= 0.025


def test_tied_scores_at_the_friction_cut_are_all_left_approved_rather_than_overflow():
    scores = np.r_[np.zeros(900), np.full(100, 0.5)]  # 10% tied at one score, 5% allowed
    policy = propose(scores, 30, Costs(reviews_per_day=1e9, loss_per_fraud=150.0, max_friction=0.05), np.array([]))
    assert _not_approved(policy, scores) == 0.0 and policy.inspect_from > 0.5


@pytest.mark.parametrize(("field", "value", "message"), [
    ("review_cost", -1.0, "review_cost must not be negative"),
    ("credit_saving", 1.5, "credit_saving is a share"),
    ("max_friction", 1.5, "max_friction is a share"),
])
def test_impossible_costs_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        Costs(**{field: value})
