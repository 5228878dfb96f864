"""The promotion gate: a model earns production out of time, on a window after its label cutoff.

A candidate is judged beside what it would replace, on the same returns, with the labels known now:

- against the production model: average precision and the realised cost of each one's own decision
  policy must not be worse, beyond the noise of the difference;
- against nothing (the first model ever): it must beat the `rules+history` baseline's average precision.

The noise is the standard deviation of the paired difference over bootstrap resamples of the window's
returns (the same resample for both). "Not worse" means the difference is at least minus one such
deviation: two models that differ by less than the window can tell apart pass. Both the margin and its
noise are written into the gate, which the registry keeps beside the model (`gate-NNN.json`), and the
promotion service reads before it moves the `production` alias.

The realised cost of a policy on a labelled return with refund a (y = 1 for fraud or abuse):

    approve                    y * a
    approve_after_inspection   inspection_cost + y * a * (1 - inspection_catch)
    store_credit_only          y * a * (1 - credit_saving) + (1 - y) * credit_friction
    review                     review_cost
    deny                       (1 - y) * deny_friction
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from fraud_service.scoring.policy import Policy, cost_of
from training.thresholds import Costs

BOOTSTRAP = 200
SEED = 20
BASELINE = "rules+history"


def realised_costs(policy: Policy, frame: pd.DataFrame, scores: np.ndarray, y: np.ndarray,
                   costs: Costs) -> np.ndarray:
    """What POLICY's decision cost on each labelled return of FRAME (see the module's table)."""
    table = asdict(costs)
    return np.array([cost_of(policy.decide(float(s), c, t).value, bool(b), float(a), table)
                     for s, c, t, b, a in zip(scores, frame["channel"], frame["return_type"], y,
                                              frame["refund_amount"], strict=True)], dtype=float)


def _average_precision(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if not 0 < int(y.sum()) < len(y):
        return math.nan
    return float(average_precision_score(y, score))


def paired_noise(y: np.ndarray, new: np.ndarray, old: np.ndarray, new_cost: np.ndarray | None,
                 old_cost: np.ndarray | None, draws: int = BOOTSTRAP) -> tuple[float, float]:
    """Standard deviations of AP(new) - AP(old) and of mean cost(new) - cost(old) over paired resamples."""
    rng = np.random.default_rng(SEED)
    ap, cost = [], []
    n = len(y)
    for _ in range(draws):
        i = rng.integers(0, n, n)
        diff = _average_precision(y[i], new[i]) - _average_precision(y[i], old[i])
        if not math.isnan(diff):
            ap.append(diff)
        if new_cost is not None and old_cost is not None:
            cost.append(float(new_cost[i].mean() - old_cost[i].mean()))
    return (float(np.std(ap)) if len(ap) > 1 else math.nan), (float(np.std(cost)) if len(cost) > 1 else math.nan)


def judge(frame: pd.DataFrame, y: np.ndarray, candidate: tuple[str, np.ndarray, Policy],
          against: tuple[str, np.ndarray, Policy | None], costs: Costs) -> dict[str, Any]:
    """The gate of CANDIDATE (name, scores, policy) against AGAINST on FRAME's returns, labelled Y.

    AGAINST's policy is None for the rules baseline, which is judged on average precision alone.
    """
    name, scores, policy = candidate
    other, other_scores, other_policy = against
    y = np.asarray(y, dtype=np.int64)
    start, end = frame["requested_at"].min(), frame["requested_at"].max()
    gate: dict[str, Any] = {
        "candidate": name, "against": other, "judged_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "window": [start.isoformat(), end.isoformat()] if len(frame) else None,
        "returns": int(len(y)), "positives": int(y.sum()), "costs": asdict(costs), "rule": "",
        "metrics": {}, "margin": {}, "noise": {}, "passed": False, "reasons": [],
    }
    if not 0 < int(y.sum()) < len(y):
        gate["reasons"].append(f"the window holds {len(y):,} returns with {int(y.sum()):,} fraud or abuse labels: "
                               "average precision cannot tell the models apart")
        return gate
    mine = realised_costs(policy, frame, scores, y, costs)
    theirs = realised_costs(other_policy, frame, other_scores, y, costs) if other_policy is not None else None
    ap_noise, cost_noise = paired_noise(y, scores, other_scores, mine, theirs)
    gate["metrics"] = {name: {"average_precision": _average_precision(y, scores),
                              "cost_per_return": float(mine.mean())},
                       other: {"average_precision": _average_precision(y, other_scores),
                               "cost_per_return": None if theirs is None else float(theirs.mean())}}
    ap_margin = gate["metrics"][name]["average_precision"] - gate["metrics"][other]["average_precision"]
    gate["margin"]["average_precision"] = ap_margin
    gate["noise"]["average_precision"] = ap_noise
    if theirs is None:
        gate["rule"] = f"the first model must beat {other}'s average precision out of time"
        if not ap_margin > 0:
            gate["reasons"].append(f"average precision {gate['metrics'][name]['average_precision']:.4f} does not beat "
                                   f"{other}'s {gate['metrics'][other]['average_precision']:.4f}")
    else:
        gate["rule"] = ("average precision and the policy's cost per return must not be worse than the production "
                        "model's by more than one standard deviation of the paired difference")
        cost_margin = float(mine.mean() - theirs.mean())
        gate["margin"]["cost_per_return"] = cost_margin
        gate["noise"]["cost_per_return"] = cost_noise
        if ap_margin < -ap_noise:
            gate["reasons"].append(f"average precision is {-ap_margin:.4f} lower than {other}'s (noise {ap_noise:.4f})")
        if cost_margin > cost_noise:
            gate["reasons"].append(f"the policy costs {cost_margin:.2f} more per return than {other}'s "
                                   f"(noise {cost_noise:.2f})")
    gate["passed"] = not gate["reasons"]
    return gate


def summary(gate: dict[str, Any]) -> str:
    """One line: passed or not, the margins with their noise."""
    if not gate.get("metrics"):
        return f"gate not passed: {'; '.join(gate['reasons'])}"
    name, other = gate["candidate"], gate["against"]
    ap = gate["metrics"][name]["average_precision"]
    parts = [f"average precision {ap:.4f} vs {gate['metrics'][other]['average_precision']:.4f} "
             f"(margin {gate['margin']['average_precision']:+.4f} ± {gate['noise']['average_precision']:.4f})"]
    if "cost_per_return" in gate["margin"]:
        parts.append(f"cost per return {gate['metrics'][name]['cost_per_return']:.2f} vs "
                     f"{gate['metrics'][other]['cost_per_return']:.2f} (margin {gate['margin']['cost_per_return']:+.2f}"
                     f" ± {gate['noise']['cost_per_return']:.2f})")
    verdict = "passed" if gate["passed"] else "not passed: " + "; ".join(gate["reasons"])
    return f"gate against {other} on {gate['returns']:,} returns ({gate['positives']:,} labelled bad): " \
           + ", ".join(parts) + f"; {verdict}"

