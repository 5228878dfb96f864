"""The rules baselines: what a fraud team without a model would flag, scored on the same features.

Each rule that fires adds one point; among returns with the same number of points, more money
at stake ranks first. Two baselines: `rules` looks at the request and the customer's recent
volume and claims (velocity, item-not-received, returnless, refund elsewhere, no receipt);
`rules+history` adds what a team with a case history and blocklists knows (earlier fraud or
abuse labels, failed inspections, tokens linked to known-bad returns). The model has to beat
both on the same windows to earn its keep.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RULES: dict[str, str] = {
    "many_recent_returns": "3 or more returns in the last 30 days",
    "item_not_received": "an item-not-received claim",
    "earlier_inr_claims": "an item-not-received claim in the last 365 days",
    "returnless_refund": "a refund without sending the goods back",
    "refund_elsewhere": "refund to a gift card or another payment instrument",
    "no_receipt": "a store return without a receipt",
}
HISTORY_RULES: dict[str, str] = {
    "known_bad_history": "an earlier fraud or abuse label or a failed inspection",
    "shared_with_bad": "an address, card, device or refund destination linked to a known-bad return",
}


def fired(frame: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per rule."""
    def col(name: str) -> pd.Series:
        return pd.to_numeric(frame[name], errors="coerce").fillna(0)

    linked_bad = sum(col(f"{prefix}_bad_labels") for prefix in ("addr", "pay", "dev", "rfd"))
    return pd.DataFrame({
        "many_recent_returns": col("cust_returns_30d") >= 3,
        "item_not_received": frame["rt_return_type"] == "item_not_received",
        "earlier_inr_claims": col("cust_inr_365d") >= 1,
        "returnless_refund": frame["rt_channel"] == "returnless",
        "refund_elsewhere": frame["rt_refund_method"].isin(["gift_card", "other_payment"]),
        "known_bad_history": (col("cust_fraud_labels") + col("cust_abuse_labels") + col("cust_bad_inspections")) >= 1,
        "shared_with_bad": linked_bad >= 1,
        "no_receipt": col("rt_has_receipt") == 0,
    }, index=frame.index)


def rules_score(frame: pd.DataFrame, history: bool = False) -> np.ndarray:
    """Points in [0, 1] (share of rules fired), money breaking ties; HISTORY adds the history rules."""
    names = [*RULES, *HISTORY_RULES] if history else list(RULES)
    points = fired(frame)[names].sum(axis=1).to_numpy(dtype=float)
    money = np.clip(pd.to_numeric(frame["rt_refund_amount"], errors="coerce").fillna(0).to_numpy(dtype=float), 0, None)
    return (points + money / (1.0 + money) * 0.999) / (len(names) + 1)
