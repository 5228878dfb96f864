"""Decision thresholds from review capacity and costs.

With a calibrated probability p that a return is fraud or abuse and L the loss when one is paid
out, each decision's expected cost per return is:

    approve                    p * L
    approve_after_inspection   inspection_cost + p * L * (1 - inspection_catch)
    store_credit_only          p * L * (1 - credit_saving) + (1 - p) * credit_friction
    review                     review_cost            (an analyst finds the fraud)
    deny                       (1 - p) * deny_friction

Each band starts where its decision becomes cheaper than the milder one; the thresholds are
then made to rise (a harsher decision never starts below a milder one). Two ceilings follow, and
both are ceilings, never targets (a band is only ever narrowed, never widened to fill them):

- review capacity: the review band is narrowed from below until the expected reviews a day fit the
  team's capacity (the returns it gives up go to store credit only);
- friction: the share of returns that are not approved at once (inspection, store credit, review,
  deny) is at most `max_friction`; past it, the mildest bands are given up first, so the riskiest
  returns keep their review or denial. A week's share wanders around its expectation, so the bands
  aim one standard error of a week's share below the ceiling (`basis.friction_headroom`: 0.7 points
  at a thousand returns a week, 0.2 at ten thousand; never more than half the ceiling) and the
  ceiling holds about five weeks in six, not one in two.

The returns the hard rules take out of instant approval whatever their score count first, against
both ceilings (as reviews): the model's bands get what is left.

L is the mean refund of the labelled fraud and abuse. `basis.expected_rates` holds each decision's
share of the sizing window under the final thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fraud_service.scoring.policy import Policy


@dataclass(frozen=True)
class Costs:
    """What each outcome costs, in the dataset's currency (defaults: a mid-size apparel retailer)."""

    reviews_per_day: float = 50.0
    loss_per_fraud: float | None = None  # None: the mean refund of the labelled fraud and abuse
    review_cost: float = 12.0
    inspection_cost: float = 4.0
    inspection_catch: float = 0.5
    credit_saving: float = 0.6
    credit_friction: float = 3.0
    deny_friction: float = 60.0
    max_friction: float = 0.05  # a ceiling on the share of returns not approved at once

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        for name in ("inspection_catch", "credit_saving", "max_friction"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a share and must be at most 1, got {getattr(self, name)}")


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def propose(scores: np.ndarray, days: int, costs: Costs, bad_amounts: np.ndarray, version: str = "proposed",
            ruled: np.ndarray | None = None) -> Policy:
    """Thresholds for SCORES (calibrated, from a recent window of DAYS days). RULED marks the returns the hard
    rules take out of instant approval whatever their score: they count against the friction ceiling and, as
    reviews, against the capacity, so the model's bands get only what is left."""
    scores = np.asarray(scores, dtype=float)
    ruled = np.zeros(len(scores), dtype=bool) if ruled is None else np.asarray(ruled, dtype=bool)
    free = scores[~ruled]
    loss = costs.loss_per_fraud
    if loss is None:
        loss = float(np.mean(bad_amounts)) if len(bad_amounts) else 100.0
    loss = max(loss, 1e-9)
    review_from = _clip(costs.review_cost / loss)
    # inspection pays when it prevents more loss than it costs
    inspect_from = _clip(costs.inspection_cost / (loss * costs.inspection_catch)) if costs.inspection_catch else 1.0
    saving = loss * costs.credit_saving
    credit_from = _clip(costs.credit_friction / (saving + costs.credit_friction)) if saving else 1.0
    deny_from = _clip(1.0 - costs.review_cost / costs.deny_friction) if costs.deny_friction else 0.0
    cuts = np.maximum.accumulate([inspect_from, credit_from, review_from, deny_from])
    inspect_from, credit_from, review_from, deny_from = (float(c) for c in cuts)
    per_day = _per_day(scores, days)
    ruled_per_day = float(ruled.sum() / max(days, 1))
    capacity = max(0.0, costs.reviews_per_day - ruled_per_day)  # the rules' reviews come first
    cost_review_from, cost_inspect_from = review_from, inspect_from
    if _per_day(free, days)(review_from, deny_from) > capacity:
        review_from = _capacity_cut(free, days, deny_from, capacity)
        credit_from = min(credit_from, review_from)
        inspect_from = min(inspect_from, credit_from)
    headroom = friction_headroom(costs.max_friction, len(scores), days)
    allowed = max(0.0, costs.max_friction - headroom - (float(ruled.mean()) if len(ruled) else 0.0))
    friction_cut = _top_share_cut(free, allowed * len(scores) / max(len(free), 1))
    friction_bound = inspect_from < friction_cut
    if friction_bound:
        inspect_from, credit_from, review_from, deny_from = (max(c, friction_cut) for c in
                                                             (inspect_from, credit_from, review_from, deny_from))
    n = max(len(scores), 1)
    basis: dict[str, Any] = {
        "costs": asdict(costs) | {"loss_per_fraud": loss},
        "window_days": days,
        "returns_in_window": int(len(scores)),
        "review_from_by_cost": cost_review_from,
        "inspect_from_by_cost": cost_inspect_from,
        "capacity_bound": review_from > cost_review_from,
        "friction_bound": friction_bound,
        "friction_headroom": headroom,
        "ruled_share": float(ruled.mean()) if len(ruled) else 0.0,
        "expected_rates": {
            "review": float((((scores >= review_from) & (scores < deny_from)) | ruled).sum() / n),
            "deny": float(((scores >= deny_from) & ~ruled).sum() / n),
            "store_credit_or_inspection": float(((scores >= inspect_from) & (scores < review_from) & ~ruled).sum()
                                                / n),
            "not_approved_at_once": float(((scores >= inspect_from) | ruled).sum() / n),
        },
        "expected_per_day": {
            "approve": per_day(0.0, inspect_from),
            "approve_after_inspection_or_credit": per_day(inspect_from, credit_from),
            "store_credit_only": per_day(credit_from, review_from),
            "review": per_day(review_from, deny_from),
            "deny": per_day(deny_from, 1.0 + 1e-12),
        },
    }
    return Policy(version=version, inspect_from=inspect_from, credit_from=credit_from, review_from=review_from,
                  deny_from=deny_from, basis=basis)


def friction_headroom(ceiling: float, returns: int, days: int) -> float:
    """One standard error of a week's share of not-approved returns at the CEILING, for RETURNS in DAYS days,
    at most half the ceiling."""
    if ceiling >= 1.0 or returns <= 0:
        return 0.0
    per_week = returns * 7 / max(days, 1)
    # at a few dozen returns a week the error would swallow the ceiling: never more than half of it
    return float(min(np.sqrt(ceiling * (1 - ceiling) / per_week), ceiling / 2))


def _per_day(scores: np.ndarray, days: int) -> Any:
    def count(low: float, high: float) -> float:
        return float(((scores >= low) & (scores < high)).sum() / max(days, 1))
    return count


def _top_share_cut(scores: np.ndarray, share: float) -> float:
    """The lowest threshold t with at most SHARE of SCORES at or above it (1.0 + the next float: nothing)."""
    ordered = np.sort(np.asarray(scores, dtype=float))[::-1]
    allowed = int(np.floor(share * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return 0.0
    # strictly above the first score that does not fit, so ties never overflow the ceiling
    return float(min(1.0, np.nextafter(ordered[allowed], np.inf)))


def _capacity_cut(scores: np.ndarray, days: int, deny_from: float, capacity: float) -> float:
    """The lowest threshold whose review band [t, deny_from) holds at most CAPACITY returns a day."""
    below_deny = np.sort(scores[scores < deny_from])[::-1]
    allowed = int(capacity * max(days, 1))
    if allowed <= 0 or len(below_deny) == 0:
        return deny_from
    if allowed >= len(below_deny):
        return float(below_deny[-1])
    # strictly above the first score that does not fit, so ties never overflow the capacity
    return float(np.nextafter(below_deny[allowed], np.inf))
