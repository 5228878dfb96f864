"""Inject fraud into an existing contract dataset (e.g. the Online Retail import), by other hands than the generator.

The generator's fraud is written from typologies with their own timing and amounts; a model
tuned to those quirks would look good here and fail at a real retailer. This injector works
on real customers' real orders and uses different mechanics:

- `bust_out`: an established customer turns at a random moment and, on each later order,
  claims "damaged on arrival" or "not received" for the whole order 1 to 4 days after delivery.
- `mule_refunds`: a handful of accounts send refunds of ordinary-looking returns to a small
  shared pool of gift cards (refund destination tokens), reused across the accounts.
- `phantom_returns`: returns with no goods back ("returnless", reason "defective") for most of
  the order's value, from customers who previously returned little.

Labels arrive like real ones: late (10-45 days), for about half the fraud, and a few honest
returns are labelled legit or wrongly as abuse. The true typology of every return is written
to `ground_truth.parquet` (which ingest ignores), so the evaluation can report recall by kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TYPOLOGIES = ("bust_out", "mule_refunds", "phantom_returns")


@dataclass(frozen=True)
class InjectionConfig:
    seed: int = 101
    bust_out_share: float = 0.03
    mule_accounts: int = 40
    mule_cards: int = 8
    phantom_share: float = 0.02
    label_share: float = 0.55


def inject(source: Path, out: Path, config: InjectionConfig = InjectionConfig()) -> dict[str, int]:
    """Read the dataset in SOURCE, add fraud and labels, write it to OUT; returns counts by typology."""
    rng = np.random.default_rng(config.seed)
    tables = {name: pd.read_parquet(source / f"{name}.parquet")
              for name in ("customers", "orders", "order_items", "returns")}
    orders, returns = tables["orders"], tables["returns"].copy()
    returns["typology"] = "legit"
    returned = set(returns["order_id"])
    quantities = tables["order_items"].groupby("order_id")["quantity"].sum()
    counts = orders.groupby("customer_id").size()
    established = counts[counts >= 4].index.to_numpy()
    new_rows = []

    # bust-out: claims on every order after a turning point
    for customer in rng.choice(established, int(len(established) * config.bust_out_share), replace=False):
        own = orders[(orders["customer_id"] == customer) & orders["delivered_at"].notna()].sort_values("placed_at")
        turn = int(rng.integers(len(own) // 2, len(own)))
        for _, order in own.iloc[turn:].iterrows():
            if order["order_id"] in returned:
                continue
            kind = "item_not_received" if rng.random() < 0.5 else "damaged_on_arrival"
            new_rows.append(_claim(order, rng, kind, "mail", "not_received" if kind == "item_not_received" else
                                   "damaged", float(order["order_total"]), int(quantities.get(order["order_id"], 1)),
                                   "bust_out", rng.uniform(1, 4)))
            returned.add(order["order_id"])

    # mule refunds: ordinary returns refunded to a shared pool of gift cards
    cards = [f"gc_mule_{i:03d}" for i in range(config.mule_cards)]
    mules = rng.choice(established, config.mule_accounts, replace=False)
    for customer in mules:
        own = orders[(orders["customer_id"] == customer) & orders["delivered_at"].notna()]
        for _, order in own.sample(n=min(len(own), int(rng.integers(2, 5))), random_state=int(rng.integers(1 << 30))
                                   ).iterrows():
            if order["order_id"] in returned:
                continue
            row = _claim(order, rng, "return", "mail", "changed_mind", round(float(order["order_total"]) * 0.8, 2),
                         max(1, int(quantities.get(order["order_id"], 1)) // 2), "mule_refunds", rng.uniform(2, 20))
            row.update(refund_method="gift_card", refund_token=str(rng.choice(cards)))
            new_rows.append(row)
            returned.add(order["order_id"])

    # phantom returns: returnless refunds claiming most of the order
    quiet = counts.index[~counts.index.isin(returns["customer_id"])].to_numpy()
    for customer in rng.choice(quiet, int(len(quiet) * config.phantom_share), replace=False):
        own = orders[(orders["customer_id"] == customer) & orders["delivered_at"].notna()]
        order = own.iloc[int(rng.integers(len(own)))]
        if order["order_id"] in returned:
            continue
        new_rows.append(_claim(order, rng, "return", "returnless", "defective",
                               round(float(order["order_total"]) * rng.uniform(0.7, 1.0), 2),
                               int(quantities.get(order["order_id"], 1)), "phantom_returns", rng.uniform(3, 25)))
        returned.add(order["order_id"])

    injected = pd.DataFrame(new_rows)
    injected["requested_at"] = pd.to_datetime(injected["requested_at"], utc=True)
    end = orders["placed_at"].max()
    injected = injected[injected["requested_at"] <= end]
    returns = pd.concat([returns, injected], ignore_index=True)
    returns["requested_at"] = pd.to_datetime(returns["requested_at"], utc=True).astype("datetime64[us, UTC]")
    labels = _labels(rng, returns, config, end)
    truth = pd.DataFrame({"return_id": returns["return_id"], "customer_id": returns["customer_id"],
                          "truth": np.where(returns["typology"] == "legit", "legit", "fraud"),
                          "typology": returns["typology"]})
    out.mkdir(parents=True, exist_ok=True)
    for name in ("customers", "orders", "order_items"):
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    returns.drop(columns=["typology"]).to_parquet(out / "returns.parquet", index=False)
    labels.to_parquet(out / "labels.parquet", index=False)
    truth.to_parquet(out / "ground_truth.parquet", index=False)
    summary = {str(k): int(v) for k, v in returns["typology"].value_counts().items()}
    summary["labels"] = len(labels)
    return summary


def _claim(order: pd.Series, rng: np.random.Generator, kind: str, channel: str, reason: str, amount: float,
           items: int, typology: str, after_days: float) -> dict[str, object]:
    requested = order["delivered_at"] + pd.Timedelta(days=float(after_days))
    return {"return_id": f"X{order['order_id']}", "order_id": order["order_id"], "customer_id": order["customer_id"],
            "requested_at": requested, "return_type": kind, "channel": channel, "reason": reason,
            "items_count": max(1, items), "refund_amount": max(0.01, round(amount, 2)),
            "refund_method": "original_payment", "refund_token": None, "has_receipt": True, "store_id": None,
            "typology": typology}


def _labels(rng: np.random.Generator, returns: pd.DataFrame, config: InjectionConfig,
            end: pd.Timestamp) -> pd.DataFrame:
    bad = returns["typology"] != "legit"
    n = len(returns)
    labelled_bad = bad & (rng.random(n) < config.label_share)
    labelled_good = ~bad & (rng.random(n) < 0.06)
    wrong = labelled_good & (rng.random(n) < 0.1)
    label = np.where(labelled_bad, "fraud", np.where(wrong, "abuse", "legit"))
    delay = np.where(labelled_bad, rng.uniform(10, 45, n), rng.uniform(3, 20, n))
    frame = pd.DataFrame({
        "return_id": returns["return_id"],
        "label": label,
        "labelled_at": returns["requested_at"] + pd.to_timedelta(delay, unit="D"),
        "source": np.where(labelled_bad, rng.choice(["chargeback", "analyst"], n), "customer_service"),
    })[labelled_bad | labelled_good]
    return frame[frame["labelled_at"] <= end].reset_index(drop=True)
