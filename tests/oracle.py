"""A brute-force oracle for the feature definitions: plain pandas filters over the raw tables, one return at a time.

It shares no code with features.pipeline: it re-reads the definitions from docs/features.md
(facts known strictly before t; window w = [t - w, t); latest (labelled_at, source) label of
a return wins) and applies them literally.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

WINDOWS = (7, 30, 90, 365)
BAD = {"worn", "wrong_item", "empty_box", "missing_parts"}
DAY = pd.Timedelta(days=1)


class Oracle:
    """Indexes the raw tables by entity once; `features(row)` computes one return's vector."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        self.customers = tables["customers"].set_index("customer_id")
        orders = tables["orders"]
        returns = tables["returns"].merge(
            orders[["order_id", "delivered_at", "address_token", "payment_token", "device_token"]], on="order_id")
        self.orders = orders
        self.returns = returns
        self.labels = tables["labels"]
        self.inspections = tables["inspections"]
        self.orders_by = {k: g for k, g in orders.groupby("customer_id")}
        self.returns_by = {k: g for k, g in returns.groupby("customer_id")}
        self.orders_by_token = {t: {k: g for k, g in orders.groupby(t)} for t in
                                ("address_token", "payment_token", "device_token")}
        self.returns_by_token = {t: {k: g for k, g in returns.groupby(t)} for t in
                                 ("address_token", "payment_token", "device_token", "refund_token")}
        self.labels_by = {k: g for k, g in self.labels.groupby("return_id")}
        self.inspections_by = {k: g for k, g in self.inspections.groupby("return_id")}

    def _label_counts(self, return_ids: pd.Series, t: pd.Timestamp) -> dict[str, int]:
        counts = {"fraud": 0, "abuse": 0, "legit": 0}
        for rid in return_ids:
            labels = self.labels_by.get(rid)
            if labels is None:
                continue
            known = labels[labels["labelled_at"] < t]
            if len(known):
                latest = known.sort_values(["labelled_at", "source"]).iloc[-1]
                counts[latest["label"]] += 1
        return counts

    def _bad_inspections(self, return_ids: pd.Series, t: pd.Timestamp, outcomes: set[str] | tuple[str, ...] = BAD
                         ) -> tuple[int, int]:
        """Inspections of these returns with one of OUTCOMES (default: failed) known before t: all time, and in
        the last 365 days."""
        bad_all = bad_365 = 0
        for rid in return_ids:
            ins = self.inspections_by.get(rid)
            if ins is None:
                continue
            known = ins[(ins["inspected_at"] < t) & ins["outcome"].isin(outcomes)]
            bad_all += len(known)
            bad_365 += int((known["inspected_at"] >= t - 365 * DAY).sum())
        return bad_all, bad_365

    def customer(self, c: str, t: pd.Timestamp) -> dict[str, float]:
        out: dict[str, float] = {}
        created = self.customers.loc[c, "created_at"]
        out["cust_created_epoch"] = (created - pd.Timestamp(0, tz="UTC")).total_seconds() if created < t else 0.0
        orders = self.orders_by.get(c, self.orders.iloc[:0])
        returns = self.returns_by.get(c, self.returns.iloc[:0])
        for w in WINDOWS:
            o = orders[(orders["placed_at"] < t) & (orders["placed_at"] >= t - w * DAY)]
            r = returns[(returns["requested_at"] < t) & (returns["requested_at"] >= t - w * DAY)]
            out[f"cust_orders_{w}d"] = len(o)
            out[f"cust_returns_{w}d"] = len(r)
            out[f"cust_refund_{w}d"] = float(r["refund_amount"].sum())
            if w == 365:
                out["cust_order_value_365d"] = float(o["order_total"].sum())
                out["cust_returnless_365d"] = int((r["channel"] == "returnless").sum())
                out["cust_no_receipt_365d"] = int((~r["has_receipt"]).sum())
                out["cust_size_cm_365d"] = int(r["reason"].isin(["size", "changed_mind"]).sum())
                out["cust_refund_elsewhere_365d"] = int(r["refund_method"].isin(["gift_card", "other_payment"]).sum())
                pairs = zip(r["requested_at"], r["delivered_at"], strict=True)
                days = [(q - d).total_seconds() / 86400 for q, d in pairs if not pd.isna(d) and d <= q]
                out["cust_median_days_to_return_365d"] = float(np.median(days)) if days else math.nan
            if w in (30, 90, 365):
                out[f"cust_inr_{w}d"] = int((r["return_type"] == "item_not_received").sum())
            if w in (90, 365):
                out[f"cust_claims_{w}d"] = int(r["return_type"].isin(["damaged_on_arrival", "wrong_item"]).sum())
            if w == 90:
                out["cust_returnless_90d"] = int((r["channel"] == "returnless").sum())
        out["cust_bad_inspections"], out["cust_bad_inspections_365d"] = self._bad_inspections(returns["return_id"], t)
        out["cust_passed_inspections"], out["cust_passed_inspections_365d"] = self._bad_inspections(
            returns["return_id"], t, ("ok",))
        labels = self._label_counts(returns["return_id"], t)
        out["cust_fraud_labels"], out["cust_abuse_labels"], out["cust_legit_labels"] = (
            labels["fraud"], labels["abuse"], labels["legit"])
        return out

    def token(self, column: str, prefix: str, token: str, t: pd.Timestamp) -> dict[str, float]:
        out: dict[str, float] = {}
        returns = self.returns_by_token[column].get(token, self.returns.iloc[:0])
        if column == "refund_token":
            out[f"{prefix}_customers"] = returns.loc[returns["requested_at"] < t, "customer_id"].nunique()
        else:
            orders = self.orders_by_token[column].get(token, self.orders.iloc[:0])
            out[f"{prefix}_customers"] = orders.loc[orders["placed_at"] < t, "customer_id"].nunique()
            o = orders[(orders["placed_at"] < t) & (orders["placed_at"] >= t - 365 * DAY)]
            out[f"{prefix}_orders_365d"] = len(o)
        for w in (90, 365):
            r = returns[(returns["requested_at"] < t) & (returns["requested_at"] >= t - w * DAY)]
            out[f"{prefix}_returns_{w}d"] = len(r)
            if w == 365:
                out[f"{prefix}_inr_365d"] = int((r["return_type"] == "item_not_received").sum())
                out[f"{prefix}_refund_365d"] = float(r["refund_amount"].sum())
        labels = self._label_counts(returns["return_id"], t)
        out[f"{prefix}_bad_labels"] = labels["fraud"] + labels["abuse"]
        out[f"{prefix}_bad_inspections"] = self._bad_inspections(returns["return_id"], t)[0]
        return out

    def features(self, row: pd.Series) -> dict[str, float]:
        """Every stored feature of one entity row (keys + event_timestamp); absent tokens give NaN."""
        t = row["event_timestamp"]
        out = self.customer(row["customer_id"], t)
        for column, prefix in (("address_token", "addr"), ("payment_token", "pay"), ("device_token", "dev"),
                               ("refund_token", "rfd")):
            if row[column] == "__none__":
                continue
            out.update(self.token(column, prefix, row[column], t))
        return out
