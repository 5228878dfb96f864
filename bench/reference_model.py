"""The plain reference the project's model is measured against: a small LightGBM on simple counts.

What a competent data scientist writes in an afternoon, straight from the contract tables with
pandas, sharing no code with the feature store: the request itself, the customer's orders,
returns, claims, labels and failed inspections known strictly before the request (all time and
30 or 90 days), and how many customers share the order's card, address and device and the
refund's destination. Labels count as they were known at the time (each label row from its
`labelled_at`; revisions are not netted out). Trained on the returns requested before the
cutoff with the labels known at the cutoff (fraud or abuse = 1, everything else 0).

    from reference_model import reference_scores   # with bench/ on sys.path
    scores = reference_scores(dataset_dir, cutoff, test_start, test_end)
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

DAY_US = 86_400_000_000
CATEGORICAL = {"return_type": ["return", "item_not_received", "damaged_on_arrival", "wrong_item"],
               "channel": ["mail", "store", "returnless"],
               "refund_method": ["original_payment", "store_credit", "gift_card", "other_payment"]}
PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20,
          "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1, "seed": 1, "verbose": -1,
          "num_threads": 2}
ROUNDS = 300
FAILED = ("worn", "wrong_item", "empty_box", "missing_parts")
"""Inspection outcomes that count as failed (`damaged` is harm in transit, `ok` a pass)."""


def _us(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _count(events: pd.DataFrame, queries: pd.DataFrame, days: int | None = None) -> np.ndarray:
    """For each query (key, us), the sum of `value` over events of that key with us in [t - days, t)
    (all time before t when DAYS is None). EVENTS: key, us, value."""
    ev = events.dropna(subset=["key"]).sort_values("us", kind="stable")
    ev = ev.assign(cum=ev.groupby("key")["value"].cumsum())[["key", "us", "cum"]]
    q = pd.DataFrame({"key": queries["key"].to_numpy(), "us": queries["us"].to_numpy(), "i": np.arange(len(queries))})
    q = q.dropna(subset=["key"])

    def cum_before(at: np.ndarray) -> pd.Series:
        probe = q.assign(us=at).sort_values("us", kind="stable")
        hit = pd.merge_asof(probe, ev, on="us", by="key", allow_exact_matches=False)
        return hit.set_index("i")["cum"].fillna(0.0)

    out = np.zeros(len(queries))
    total = cum_before(q["us"].to_numpy())
    if days is not None:
        total = total - cum_before(q["us"].to_numpy() - days * DAY_US).reindex(total.index)
    out[total.index.to_numpy()] = total.to_numpy()
    return out


def features(dataset: Path) -> pd.DataFrame:
    """One row per return of DATASET: return_id, requested_at and the reference's features."""
    def read(name: str) -> pd.DataFrame | None:
        path = dataset / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else None

    customers, orders, returns = read("customers"), read("orders"), read("returns")
    labels, inspections = read("labels"), read("inspections")
    assert customers is not None and orders is not None and returns is not None
    r = returns.merge(orders[["order_id", "placed_at", "delivered_at", "order_total", "payment_token",
                              "address_token", "device_token"]], on="order_id", how="left")
    r = r.merge(customers[["customer_id", "created_at"]], on="customer_id", how="left")
    t = _us(r["requested_at"])
    f = pd.DataFrame({"return_id": r["return_id"], "requested_at": pd.to_datetime(r["requested_at"], utc=True)})
    f["refund_amount"] = r["refund_amount"].astype(float)
    f["order_total"] = r["order_total"].astype(float)
    f["refund_ratio"] = f["refund_amount"] / f["order_total"].where(f["order_total"] > 0)
    f["items_count"] = r["items_count"].astype(float)
    f["days_since_order"] = (t - _us(r["placed_at"])) / DAY_US
    delivered = pd.to_datetime(r["delivered_at"], utc=True)
    f["days_since_delivery"] = np.where(delivered.notna(), (t - _us(delivered.fillna(r["placed_at"]))) / DAY_US,
                                        np.nan)
    f["account_age_days"] = (t - _us(r["created_at"])) / DAY_US
    f["hour"] = pd.to_datetime(r["requested_at"], utc=True).dt.hour
    f["has_receipt"] = r["has_receipt"].astype(float)
    for column, values in CATEGORICAL.items():
        f[column] = pd.Categorical(r[column], categories=values).codes

    q = pd.DataFrame({"key": r["customer_id"], "us": t})
    placed = pd.DataFrame({"key": orders["customer_id"], "us": _us(orders["placed_at"])})
    asked = pd.DataFrame({"key": returns["customer_id"], "us": _us(returns["requested_at"])})
    for days in (None, 90):
        suffix = "all" if days is None else f"{days}d"
        f[f"orders_{suffix}"] = _count(placed.assign(value=1.0), q, days)
        f[f"order_value_{suffix}"] = _count(placed.assign(value=orders["order_total"].to_numpy(float)), q, days)
        f[f"refund_{suffix}"] = _count(asked.assign(value=returns["refund_amount"].to_numpy(float)), q, days)
    for days in (None, 30, 90):
        f[f"returns_{'all' if days is None else f'{days}d'}"] = _count(asked.assign(value=1.0), q, days)
    f["inr_all"] = _count(asked.assign(value=(returns["return_type"] == "item_not_received").to_numpy(float)), q)
    f["claims_all"] = _count(asked.assign(
        value=returns["return_type"].isin(["damaged_on_arrival", "wrong_item"]).to_numpy(float)), q)
    f["returnless_all"] = _count(asked.assign(value=(returns["channel"] == "returnless").to_numpy(float)), q)
    owner = returns[["return_id", "customer_id"]]
    if labels is not None and len(labels):
        known = labels.merge(owner, on="return_id")
        for kind in ("fraud", "abuse", "legit"):
            ev = pd.DataFrame({"key": known["customer_id"], "us": _us(known["labelled_at"]),
                               "value": (known["label"] == kind).to_numpy(float)})
            f[f"{kind}_labels"] = _count(ev, q)
    if inspections is not None and len(inspections):
        seen = inspections.merge(owner, on="return_id")
        ev = pd.DataFrame({"key": seen["customer_id"], "us": _us(seen["inspected_at"]),
                           "value": seen["outcome"].isin(FAILED).to_numpy(float)})
        f["failed_inspections"] = _count(ev, q)
    for token in ("payment_token", "address_token", "device_token"):
        first = orders.dropna(subset=[token]).groupby([token, "customer_id"])["placed_at"].min().reset_index()
        ev = pd.DataFrame({"key": first[token], "us": _us(first["placed_at"]), "value": 1.0})
        f[f"{token.split('_')[0]}_customers"] = _count(ev, pd.DataFrame({"key": r[token], "us": t}))
    refunds = returns.dropna(subset=["refund_token"])
    first = refunds.groupby(["refund_token", "customer_id"])["requested_at"].min().reset_index()
    rq = pd.DataFrame({"key": r["refund_token"], "us": t})
    f["refund_token_customers"] = _count(pd.DataFrame({"key": first["refund_token"],
                                                       "us": _us(first["requested_at"]), "value": 1.0}), rq)
    f["refund_token_returns"] = _count(pd.DataFrame({"key": refunds["refund_token"],
                                                     "us": _us(refunds["requested_at"]), "value": 1.0}), rq)
    return f


def labels_at(dataset: Path, cutoff: pd.Timestamp) -> pd.Series:
    """return_id -> 1 when its latest label known at CUTOFF is fraud or abuse."""
    labels = pd.read_parquet(dataset / "labels.parquet")
    labels = labels[pd.to_datetime(labels["labelled_at"], utc=True) < cutoff].sort_values("labelled_at")
    latest = labels.groupby("return_id")["label"].last()
    return latest.isin(["fraud", "abuse"]).astype(int)


def reference_scores(dataset: Path, cutoff: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Train on the returns requested before CUTOFF (labels known then) and score those in [START, END):
    return_id, score."""
    f = features(dataset)
    names = [c for c in f.columns if c not in ("return_id", "requested_at")]
    train = f[f["requested_at"] < cutoff]
    y = train["return_id"].map(labels_at(dataset, cutoff)).fillna(0).to_numpy()
    booster = lgb.train(PARAMS, lgb.Dataset(train[names].to_numpy(float), y), num_boost_round=ROUNDS)
    test = f[(f["requested_at"] >= start) & (f["requested_at"] < end)]
    return pd.DataFrame({"return_id": test["return_id"].to_numpy(),
                         "score": booster.predict(test[names].to_numpy(float))})


def rules_scores(dataset: Path, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """A rules baseline on the same counts: one point per rule (3+ returns in 30 days, an item-not-received
    claim, an earlier one, a returnless refund, a refund elsewhere, no receipt, an earlier fraud or abuse label
    or failed inspection), the refund amount breaking ties."""
    f = features(dataset)
    f = f[(f["requested_at"] >= start) & (f["requested_at"] < end)]
    codes = {k: {v: i for i, v in enumerate(values)} for k, values in CATEGORICAL.items()}
    points = ((f["returns_30d"] >= 3).astype(int) + (f["return_type"] == codes["return_type"]["item_not_received"])
              + (f["inr_all"] >= 1) + (f["channel"] == codes["channel"]["returnless"])
              + f["refund_method"].isin([codes["refund_method"]["gift_card"], codes["refund_method"]["other_payment"]])
              + (f["has_receipt"] == 0)
              + ((f.get("fraud_labels", 0) + f.get("abuse_labels", 0) + f.get("failed_inspections", 0)) >= 1))
    money = f["refund_amount"].clip(lower=0)
    return pd.DataFrame({"return_id": f["return_id"].to_numpy(),
                         "score": (points + money / (1 + money) * 0.999).to_numpy(float)})
