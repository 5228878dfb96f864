"""Evaluation metrics against independent oracles: sklearn, and brute-force loops over days and customers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from training import evaluation
from training.evaluation import Scored


def _window(seed: int, n: int = 600) -> Scored:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    score = np.clip(rng.random(n) * 0.6 + y * rng.random(n) * 0.5, 0, 1)
    score[rng.integers(0, n, 40)] = 0.5  # ties
    day = np.datetime64("2025-03-01") + rng.integers(0, 12, n).astype("timedelta64[D]")
    customer = np.array([f"C{i}" for i in rng.integers(0, 150, n)])
    amount = np.round(rng.gamma(2.0, 40.0, n), 2)
    return Scored(y, score, day, customer, amount)


def _order(s: Scored, idx: list[int]) -> list[int]:
    """Brute-force ranking: highest score first, ties by position."""
    return sorted(idx, key=lambda i: (-s.score[i], i))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ranking_metrics_equal_sklearn(seed):
    s = _window(seed)
    result = evaluation.evaluate(s)
    assert result["average_precision"] == pytest.approx(average_precision_score(s.y, s.score))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(s.y, s.score))
    assert result["brier"] == pytest.approx(brier_score_loss(s.y, s.score))


@pytest.mark.parametrize("rate", [0.01, 0.02, 0.05, 0.5])
def test_precision_recall_and_money_at_a_review_rate_equal_a_brute_force_count(rate):
    s = _window(4)
    n = math.ceil(rate * len(s.y))
    top = _order(s, list(range(len(s.y))))[:n]
    caught = [i for i in top if s.y[i] == 1]
    got = evaluation.at_rate(s, rate)
    assert got["reviewed"] == n
    assert got["precision"] == pytest.approx(len(caught) / n)
    assert got["recall"] == pytest.approx(len(caught) / s.y.sum())
    assert got["money_caught"] == pytest.approx(sum(s.amount[i] for i in caught))
    assert got["money_recall"] == pytest.approx(sum(s.amount[i] for i in caught) / s.amount[s.y == 1].sum())


@pytest.mark.parametrize("k", [1, 3, 10])
def test_daily_top_k_equals_a_loop_over_days(k):
    s = _window(5)
    precisions, caught = [], 0
    for day in sorted(set(s.day.tolist())):
        idx = [i for i in range(len(s.y)) if s.day[i] == day]
        top = _order(s, idx)[:k]
        precisions.append(sum(s.y[i] for i in top) / len(top))
        caught += sum(s.y[i] for i in top)
    got = evaluation.per_day_top_k(s, k)
    assert got["precision"] == pytest.approx(sum(precisions) / len(precisions))
    assert got["recall"] == pytest.approx(caught / s.y.sum())


@pytest.mark.parametrize("k", [1, 5])
def test_customer_precision_counts_each_customer_once_a_day(k):
    s = _window(6)
    precisions = []
    for day in sorted(set(s.day.tolist())):
        customers: dict[str, tuple[float, int]] = {}
        for i in range(len(s.y)):
            if s.day[i] != day:
                continue
            best, bad = customers.get(s.customer[i], (-1.0, 0))
            customers[s.customer[i]] = (max(best, s.score[i]), max(bad, int(s.y[i])))
        ranked = sorted(customers.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        precisions.append(sum(bad for _, (_, bad) in ranked) / len(ranked))
    assert evaluation.customer_top_k(s, k) == pytest.approx(sum(precisions) / len(precisions))


def test_reliability_bins_cover_every_return_once_and_average_correctly():
    s = _window(7)
    curve = evaluation.reliability(s, bins=10)
    assert sum(curve["count"]) == len(s.y)
    weighted = sum(p * c for p, c in zip(curve["predicted"], curve["count"], strict=True)) / len(s.y)
    assert weighted == pytest.approx(s.score.mean())
    observed = sum(o * c for o, c in zip(curve["observed"], curve["count"], strict=True)) / len(s.y)
    assert observed == pytest.approx(s.y.mean())
    assert curve["predicted"] == sorted(curve["predicted"])


def test_recall_by_group_is_the_share_of_each_group_in_the_top():
    s = _window(8)
    groups = np.where(s.y == 1, np.where(np.arange(len(s.y)) % 2 == 0, "ring", "fake_inr"), "legit")
    n = math.ceil(0.02 * len(s.y))
    top = set(_order(s, list(range(len(s.y))))[:n])
    got = evaluation.recall_by_group(s, groups, 0.02)
    for group in ("ring", "fake_inr", "legit"):
        members = [i for i in range(len(s.y)) if groups[i] == group]
        assert got[group]["returns"] == len(members)
        assert got[group]["recall"] == pytest.approx(sum(i in top for i in members) / len(members))


def test_a_window_without_positives_has_no_ranking_metrics_but_does_not_fail():
    s = _window(9)
    empty = Scored(np.zeros_like(s.y), s.score, s.day, s.customer, s.amount)
    result = evaluation.evaluate(empty)
    assert math.isnan(result["average_precision"]) and math.isnan(result["roc_auc"])
    assert math.isnan(result["at_rate"]["2%"]["recall"])
    assert result["positives"] == 0


def test_summaries_give_mean_and_spread_across_folds():
    folds = [{"a": {"b": 0.2}}, {"a": {"b": 0.4}}]
    summary = evaluation.summarize(folds, ["a.b"])
    assert summary["a.b"]["mean"] == pytest.approx(0.3)
    assert summary["a.b"]["std"] == pytest.approx(0.1)
    assert summary["a.b"]["values"] == [0.2, 0.4]


def test_mismatched_lengths_are_refused():
    s = _window(10)
    with pytest.raises(ValueError, match="same length"):
        Scored(s.y[:-1], s.score, s.day, s.customer, s.amount)
