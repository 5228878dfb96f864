"""Helpers for tests that rewrite datasets: parquet <-> CSV, period splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fraud_service.data.contract import TABLES


def table_to_csv(dataset: Path, table: str,
                 mutate: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Path:
    """Rewrite DATASET/TABLE.parquet as TABLE.csv (ISO timestamps), optionally changed by `mutate`."""
    frame = pd.read_parquet(dataset / f"{table}.parquet")
    text = frame.copy()
    for col in text.columns:
        if pd.api.types.is_datetime64_any_dtype(text[col]):
            text[col] = text[col].map(lambda v: "" if pd.isna(v) else v.isoformat())
    text = text.astype(object).where(text.notna(), "").astype(str)
    if mutate is not None:
        text = mutate(text)
    (dataset / f"{table}.parquet").unlink()
    path = dataset / f"{table}.csv"
    text.to_csv(path, index=False)
    return path


def read_table(dataset: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(dataset / f"{table}.parquet")


def sorted_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The frame in key order with a clean index, for equality checks."""
    return frame.sort_values(list(TABLES[table].key)).reset_index(drop=True)


def split_by_time(dataset: Path, cutoff: pd.Timestamp, first: Path, second: Path) -> None:
    """Write the rows known before `cutoff` to `first` and the rest to `second`."""
    t = {name: read_table(dataset, name) for name in TABLES}
    early_customers = t["customers"]["created_at"] < cutoff
    early_orders = t["orders"]["placed_at"] < cutoff
    early_returns = t["returns"]["requested_at"] < cutoff
    early_items = t["order_items"]["order_id"].isin(t["orders"].loc[early_orders, "order_id"])
    early_labels = t["labels"]["labelled_at"] < cutoff
    early_inspections = t["inspections"]["inspected_at"] < cutoff
    masks = {"customers": early_customers, "orders": early_orders, "order_items": early_items,
             "returns": early_returns, "labels": early_labels, "inspections": early_inspections}
    for target, keep in ((first, True), (second, False)):
        target.mkdir(parents=True)
        for name, mask in masks.items():
            part = t[name][mask if keep else ~mask]
            part.to_parquet(target / f"{name}.parquet", index=False)
