"""Behaviour statistics of a contract dataset, to compare a generated world with real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fraud_service.data.contract import TABLES
from fraud_service.data.ingest import find_tables, read_raw
from fraud_service.data.validation import Report, parse_table
from fraud_service.errors import DatasetError, ValidationFailed

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


NEEDED = ("orders", "order_items", "returns")


def load_typed(directory: Path, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Read the named tables of a dataset directory with contract types (absent tables are skipped, but for NEEDED
    ones); ValidationFailed naming the problems when a value breaks the contract, as ingest would."""
    files = find_tables(directory)
    missing = [name for name in NEEDED if name in tables and name not in files]
    if missing:
        raise DatasetError(f"{directory}: no {', '.join(missing)} table (statistics need {', '.join(NEEDED)})")
    report = Report()
    typed = {name: parse_table(TABLES[name], read_raw(files[name]), files[name].name, report)
             for name in tables if name in files}
    if report:
        raise ValidationFailed(report, f"{directory}: {report.count} problem(s); no statistics\n{report.render()}")
    return typed


def dataset_stats(directory: Path) -> dict[str, float | int | str]:
    """Return rate, time to return, basket size and returner concentration of one dataset."""
    t = load_typed(directory, ("orders", "order_items", "returns", "labels"))
    orders, items, returns = t["orders"], t["order_items"], t["returns"]
    out: dict[str, float | int | str] = {"dataset": directory.name}
    out["orders"] = len(orders)
    out["returns"] = len(returns)
    out["customers with an order"] = int(orders["customer_id"].nunique())
    out["returns per order"] = round(len(returns) / max(len(orders), 1), 3)
    out["share of orders with a return"] = round(float(orders["order_id"].isin(returns["order_id"]).mean()), 3)
    per_customer_orders = orders.groupby("customer_id").size()
    per_customer_returns = returns.groupby("customer_id").size().reindex(per_customer_orders.index, fill_value=0)
    out["share of customers who return"] = round(float((per_customer_returns > 0).mean()), 3)
    ratio = (per_customer_returns / per_customer_orders)[per_customer_orders >= 3]
    out["heavy returners (>=3 orders, returns/orders > 0.5)"] = round(float((ratio > 0.5).mean()), 3)
    top = per_customer_returns.sort_values(ascending=False)
    top_n = max(int(len(top) * 0.1), 1)
    out["share of returns by top 10% of customers"] = round(float(top.iloc[:top_n].sum() / max(top.sum(), 1)), 3)
    joined = returns.merge(orders[["order_id", "placed_at"]], on="order_id", how="inner")
    days = (joined["requested_at"] - joined["placed_at"]).dt.total_seconds() / 86400
    for q in QUANTILES:
        out[f"days order->return p{int(q * 100)}"] = round(float(days.quantile(q)), 1) if len(days) else "n/a"
    lines = items.groupby("order_id").size()
    out["lines per order p50"] = float(lines.median())
    out["lines per order p90"] = float(lines.quantile(0.9))
    out["order value p50"] = round(float(orders["order_total"].median()), 2)
    out["order value p90"] = round(float(orders["order_total"].quantile(0.9)), 2)
    out["refund amount p50"] = round(float(returns["refund_amount"].median()), 2) if len(returns) else "n/a"
    out["refund amount p90"] = round(float(returns["refund_amount"].quantile(0.9)), 2) if len(returns) else "n/a"
    for kind, share in returns["return_type"].value_counts(normalize=True).items():
        out[f"return type {kind}"] = round(float(share), 3)
    labels = t.get("labels")
    out["labelled returns"] = int(labels["return_id"].nunique()) if labels is not None else 0
    return out


def render_markdown(stats: list[dict[str, float | int | str]]) -> str:
    """A Markdown table with one column per dataset."""
    keys: list[str] = []
    for s in stats:
        keys += [k for k in s if k not in keys and k != "dataset"]
    header = "| statistic | " + " | ".join(str(s["dataset"]) for s in stats) + " |"
    rule = "|---|" + "---:|" * len(stats)
    rows = [f"| {k} | " + " | ".join(_fmt(s.get(k, "")) for s in stats) + " |" for k in keys]
    return "\n".join([header, rule, *rows])


def _fmt(value: object) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
