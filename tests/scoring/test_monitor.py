"""Live monitoring's figures on hand-made assessments, each checked against a count done by hand, and PSI."""

from __future__ import annotations

import datetime as dt
import math
from collections import namedtuple

import numpy as np
import pytest

from fraud_service.scoring import drift, monitor

Row = namedtuple("Row", "id return_id created_at score decision model_version refund_amount event_seq")
T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def _row(i: int, decision: str, day: int = 0, amount: float = 100.0) -> Row:
    return Row(f"a{i}", f"R{i}", T0 + dt.timedelta(days=day), 0.5, decision, "v0001", amount, i)


def test_the_decision_mix_counts_each_day_and_the_rates():
    rows = [_row(1, "approve"), _row(2, "review"), _row(3, "approve", 1), _row(4, "deny", 1),
            _row(5, "store_credit_only", 1)]
    mix = monitor.decision_mix(rows)
    assert mix["returns"] == 5
    assert mix["per_day"][0] == {"day": "2026-11-01", "returns": 2, "approve": 1, "approve_after_inspection": 0,
                                 "store_credit_only": 0, "review": 1, "deny": 0}
    assert mix["per_day"][1]["deny"] == 1 and mix["per_day"][1]["store_credit_only"] == 1
    assert mix["rates"]["review"] == pytest.approx(0.2) and mix["rates"]["not_approved_at_once"] == pytest.approx(0.6)


def test_money_friction_and_known_recall_by_hand():
    rows = [_row(1, "approve", amount=50), _row(2, "review", amount=200), _row(3, "deny", amount=300),
            _row(4, "store_credit_only", amount=40), _row(5, "approve", amount=70)]
    at = T0 + dt.timedelta(days=3)
    labels = monitor.latest_labels([("R1", "fraud", at), ("R2", "abuse", at), ("R3", "legit", at),
                                    ("R4", "legit", at), ("R5", "legit", T0), ("R5", "fraud", at)])
    money = monitor.money(rows, labels, {"credit_friction": 3.0, "deny_friction": 60.0})
    assert money == {"refunds_approved_at_once": 120.0, "refunds_held": 240.0, "refunds_denied": 300.0,
                     "fraud_loss_caught": 200.0, "fraud_loss_missed": 120.0, "friction_cost": 63.0}
    figures = monitor.label_figures(rows, labels, now=T0 + dt.timedelta(days=400))
    assert figures["labelled"] == 5 and figures["bad_known"] == 3
    assert figures["recall_known"] == pytest.approx(1 / 3)
    assert figures["recall_estimated"] == pytest.approx(1 / 3)  # all old: every label that will come, came
    assert figures["median_days"] == pytest.approx(3.0)


def test_a_label_known_before_the_assessment_counts_as_no_delay():
    rows = [_row(1, "approve"), _row(2, "approve")]
    labels = {"R1": ("fraud", T0 - dt.timedelta(days=30)),  # a backfilled return, labelled in the warehouse first
              "R2": ("legit", T0 + dt.timedelta(days=2))}
    figures = monitor.label_figures(rows, labels, now=T0 + dt.timedelta(days=10))
    assert figures["median_days"] == pytest.approx(1.0)  # 0 and 2 days; it was -14
    assert figures["p90_days"] == pytest.approx(1.8)


def test_recall_estimated_counts_the_labels_still_to_come_of_young_returns():
    old = [_row(i, "approve", day=-100) for i in range(10)]
    young = [_row(20, "approve", day=0), _row(21, "review", day=0)]
    labels = {f"R{i}": ("fraud", T0 + dt.timedelta(days=-100 + 10 + i)) for i in range(10)}  # delays 10..19 days
    labels["R20"] = ("fraud", T0 + dt.timedelta(days=1))  # a chargeback that came unusually fast
    labels["R21"] = ("fraud", T0 + dt.timedelta(days=1))
    now = T0 + dt.timedelta(days=12)  # the young ones are 12 days old: 3 of 11 approved-fraud delays were <= 12
    figures = monitor.label_figures(old + young, labels, now)
    arrived = monitor.delay_curve([10 + i for i in range(10)] + [1.0])(12.0)
    assert arrived == pytest.approx(4 / 11)
    caught, missed = 1.0, 10.0 + 1 / arrived  # the 100-day-old ones weigh 1, the 12-day-old one 1 / F(12)
    assert figures["recall_known"] == pytest.approx(1 / 12)
    assert figures["recall_estimated"] == pytest.approx(caught / (caught + missed))


def test_psi_equals_a_term_by_term_sum_and_is_zero_for_the_same_distribution():
    rng = np.random.default_rng(1)
    train = rng.gamma(2.0, 50.0, 5000)
    spec = drift.reference({"x": train}, rng.random(5000), {})["features"]["x"]
    assert len(spec["edges"]) == 9 and sum(spec["shares"]) == pytest.approx(1.0)
    assert drift.compare(spec, train)["psi"] == pytest.approx(0.0, abs=1e-12)
    live = train * 10
    shares = drift.numeric_shares(live, spec["edges"])
    expected = sum((max(a, drift.EPSILON) - max(e, drift.EPSILON)) * math.log(max(a, drift.EPSILON) /
                                                                                max(e, drift.EPSILON))
                   for a, e in zip(shares, spec["shares"], strict=True))
    result = drift.compare(spec, live)
    assert result["psi"] == pytest.approx(expected) and result["drifted"] is True
    same_world = rng.gamma(2.0, 50.0, 800)
    assert drift.compare(spec, same_world)["drifted"] is False


def test_missing_values_and_unseen_categories_have_bins_of_their_own():
    sample = drift.reference({"c": ["mail", "store", "mail", None]}, np.zeros(4), {"c": ["mail", "store"]})
    spec = sample["features"]["c"]
    assert spec["shares"] == [0.5, 0.25, 0.0, 0.25]
    assert drift.shares_of(spec, ["kiosk", None, "mail", "mail"]) == [0.5, 0.0, 0.25, 0.25]
    numeric = drift.reference({"x": np.array([1.0, 2.0, np.nan, 4.0])}, np.zeros(4), {})["features"]["x"]
    assert numeric["shares"][-1] == 0.25
