"""Training sets: every ingested return in a time range with the feature vector it had when requested.

Features come from the feature store's historical retrieval (point in time, through Feast), in
time-ordered chunks so a million returns do not need one giant join. Labels are a separate
step (`labels_as_of`) because what is known about a return depends on when you ask.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.definitions import DERIVED_FIELDS, feature_names
from features.pipeline import BAD_OUTCOMES
from fraud_service.data.labels import BAD
from fraud_service.data.warehouse import Snapshot, Warehouse
from fraud_service.errors import TrainingDataError
from fraud_service.featurestore.source import FeatureSource, entity_rows
from fraud_service.progress import SILENT, Progress

CHUNK_ROWS = 200_000
CATEGORICAL = [name for name, kind in DERIVED_FIELDS.items() if kind == "String"]
EXCLUDED = ("cust_created_epoch",)
"""Served features the model does not use: an absolute sign-up time says when, not how (account age does)."""
CONTEXT = ["return_id", "customer_id", "requested_at", "refund_amount", "channel", "return_type", "refund_method"]


def model_features() -> list[str]:
    """The features the model is trained on, in the feature service's order."""
    return [name for name in feature_names() if name not in EXCLUDED]


def current_snapshot(warehouse_dir: Path) -> Snapshot:
    """The current snapshot, pinned (`Snapshot.pin`): ingests meanwhile do not remove it under a long job."""
    snapshot = Warehouse(warehouse_dir).current()
    if snapshot is None:
        raise TrainingDataError("the warehouse is empty: run `fraud-service ingest DIR` first")
    return snapshot.pin()


@dataclass(frozen=True)
class Window:
    """Returns requested in [start, end); None means unbounded."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def sql(self, column: str) -> str:
        parts = ["TRUE"]
        if self.start is not None:
            parts.append(f"{column} >= TIMESTAMPTZ '{self.start.isoformat()}'")
        if self.end is not None:
            parts.append(f"{column} < TIMESTAMPTZ '{self.end.isoformat()}'")
        return " AND ".join(parts)

    def __str__(self) -> str:
        start = self.start.date().isoformat() if self.start is not None else "the beginning"
        end = self.end.date().isoformat() if self.end is not None else "the end"
        return f"[{start}, {end})"


def timestamp(text: str | dt.date | dt.datetime | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp from a date or ISO text (naive means UTC)."""
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _tables(snapshot: Snapshot, *names: str) -> dict[str, Path]:
    """The paths of the snapshot's tables NAMES; TrainingDataError naming the first it lacks (the contract lets a
    dataset leave a table out, and nothing can be trained or scored without returns and their orders)."""
    paths = {name: snapshot.table_path(name) for name in names}
    for name, path in paths.items():
        if path is None:
            raise TrainingDataError(f"snapshot {snapshot.name} has no {name} table: ingest a dataset that holds "
                                    f"{name}.parquet or {name}.csv (docs/data.md)")
    return {name: path for name, path in paths.items() if path is not None}


def time_range(snapshot: Snapshot) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last `requested_at` in the warehouse."""
    path = _tables(snapshot, "returns")["returns"]
    con = duckdb.connect()
    try:
        first, last = con.execute(f"SELECT min(requested_at), max(requested_at) FROM read_parquet('{path}')").fetchone()
    finally:
        con.close()
    if first is None:
        raise TrainingDataError(f"snapshot {snapshot.name} has no returns")
    return timestamp(first), timestamp(last)


def read_context(snapshot: Snapshot, window: Window) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Returns in WINDOW (time order) and the orders and order items they refer to."""
    paths = _tables(snapshot, "returns", "orders", "order_items")
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP TABLE r AS SELECT * FROM read_parquet('{paths['returns']}') "
                    f"WHERE {window.sql('requested_at')} ORDER BY requested_at, return_id")
        returns = con.sql("SELECT * FROM r").df()
        orders = con.sql(f"SELECT * FROM read_parquet('{paths['orders']}') "
                         "WHERE order_id IN (SELECT order_id FROM r)").df()
        items = con.sql(f"SELECT * FROM read_parquet('{paths['order_items']}') "
                        "WHERE order_id IN (SELECT order_id FROM r)").df()
    finally:
        con.close()
    return returns, orders, items


def read_returns_and_orders(snapshot: Snapshot, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The returns in WINDOW (the columns the rules read) and their orders' totals and tokens."""
    paths = _tables(snapshot, "returns", "orders")
    con = duckdb.connect()
    try:
        returns = con.sql(f"SELECT return_id, order_id, customer_id, return_type, channel, refund_amount, "
                          f"refund_token FROM read_parquet('{paths['returns']}') "
                          f"WHERE {window.sql('requested_at')}").df()
        orders = con.sql(f"SELECT order_id, order_total, address_token, payment_token, device_token "
                         f"FROM read_parquet('{paths['orders']}') WHERE order_id IN "
                         f"(SELECT order_id FROM read_parquet('{paths['returns']}') "
                         f"WHERE {window.sql('requested_at')})").df()
    finally:
        con.close()
    return returns, orders


def feature_frame(source: FeatureSource, snapshot: Snapshot, window: Window, progress: Progress = SILENT,
                  chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """The returns in WINDOW with their context columns and point-in-time features, in time order."""
    unfinished = source.unfinished()
    if unfinished:
        raise TrainingDataError(f"the feature files are no whole build: {unfinished}")
    built = source.built_from()
    if built != snapshot.name:
        when = f"were built from snapshot {built}" if built else "are not built (or their last build was interrupted)"
        raise TrainingDataError(f"the features {when}, and the warehouse is at {snapshot.name}: run `fraud-service "
                                "features build` first")
    returns, orders, items = read_context(snapshot, window)
    if returns.empty:
        raise TrainingDataError(f"no returns were requested in {window}")
    entities = entity_rows(returns, orders, items)
    if source.built_engine() == "spark":  # one Spark job: chunks bound DuckDB's memory, Spark spills on its own
        chunk_rows = max(chunk_rows, len(entities))
    parts = []
    for begin in range(0, len(entities), chunk_rows):
        part = entities.iloc[begin:begin + chunk_rows]
        with progress.step(f"features of returns {begin + 1:,}-{begin + len(part):,} of {len(entities):,}"):
            vectors = source.historical(part)
        parts.append(vectors[["return_id", *feature_names()]])
    features = pd.concat(parts, ignore_index=True)
    context = returns[CONTEXT].copy()
    context["requested_at"] = pd.to_datetime(context["requested_at"], utc=True)
    frame = context.merge(features, on="return_id", how="left", validate="1:1")
    return frame


def labels_as_of(snapshot: Snapshot, cutoff: pd.Timestamp | None = None) -> pd.DataFrame:
    """Each return's latest label known at CUTOFF (all labels when None): return_id, label, labelled_at."""
    path = snapshot.table_path("labels")
    if path is None:
        return pd.DataFrame({"return_id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                             "labelled_at": pd.Series(dtype="datetime64[us, UTC]")})
    known = Window(end=cutoff + pd.Timedelta(microseconds=1)) if cutoff is not None else Window()
    con = duckdb.connect()
    try:
        frame = con.sql(f"""
            SELECT return_id, arg_max(label, (labelled_at, source)) AS label, max(labelled_at) AS labelled_at
            FROM read_parquet('{path}') WHERE {known.sql('labelled_at')} GROUP BY return_id""").df()
    finally:
        con.close()
    return frame


def positives_by_source(snapshot: Snapshot, cutoff: pd.Timestamp, return_ids: pd.Series) -> dict[str, int]:
    """How many of RETURN_IDS are fraud/abuse by their latest label known at CUTOFF, by that label's source
    (analyst, inspection, chargeback, customer_service): whose decisions a model learned from."""
    path = snapshot.table_path("labels")
    if path is None or return_ids.empty:
        return {}
    known = Window(end=cutoff + pd.Timedelta(microseconds=1))
    con = duckdb.connect()
    try:
        rows = con.execute(f"""
            SELECT source, count(*) FROM (
                SELECT return_id, arg_max(label, (labelled_at, source)) AS label,
                       arg_max(source, (labelled_at, source)) AS source
                FROM read_parquet('{path}') WHERE {known.sql('labelled_at')} GROUP BY return_id)
            WHERE label IN (SELECT unnest(?)) AND return_id IN (SELECT unnest(?))
            GROUP BY source ORDER BY source""", [sorted(BAD), return_ids.astype(str).tolist()]).fetchall()
    finally:
        con.close()
    return {str(source): int(n) for source, n in rows}


def target(frame: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """1 for fraud or abuse, 0 for legit or unlabelled (see docs/training.md for why)."""
    bad = set(labels.loc[labels["label"].isin(BAD), "return_id"])
    return frame["return_id"].isin(bad).to_numpy(dtype=np.int64)


def inspected(snapshot: Snapshot, cutoff: pd.Timestamp, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ROWS: whether an inspection known at CUTOFF passed its goods (`ok`), and whether one failed them
    (`BAD_OUTCOMES`: worn, wrong item, empty box, missing parts; `damaged` may be harm in transit)."""
    path = snapshot.table_path("inspections")
    if path is None or rows.empty:
        return np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)
    con = duckdb.connect()
    try:
        found = con.execute(f"""
            SELECT return_id, bool_or(outcome = 'ok') AS passed, bool_or(outcome IN (SELECT unnest(?))) AS failed
            FROM read_parquet('{path}') WHERE inspected_at <= ? GROUP BY return_id""",
                            [list(BAD_OUTCOMES), cutoff.to_pydatetime()]).df()
    finally:
        con.close()
    joined = rows[["return_id"]].merge(found, on="return_id", how="left", validate="1:1")
    return joined["passed"].eq(True).to_numpy(), joined["failed"].eq(True).to_numpy()


def contradicted(snapshot: Snapshot, cutoff: pd.Timestamp, rows: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Per training row: whether an inspection known at CUTOFF contradicts its target Y. A return labelled fraud or
    abuse whose goods came back as sold (an `ok` inspection, none failed), or one counted as legit (labelled so, or
    unlabelled) whose inspection failed. Labels are sometimes wrong; the warehouse's own independent evidence says
    which ones may be (docs/training.md: off by default)."""
    passed, failed = inspected(snapshot, cutoff, rows)
    bad = np.asarray(y) == 1
    return (bad & passed & ~failed) | (~bad & failed)


RIPE = 0.75
"""An unlabelled return whose fraud label would have arrived by now with less than this chance is left out."""
HORIZON = pd.Timedelta(days=120)
"""Label delays are measured on returns at least this old, each capped at it."""


def arrival_delays(snapshot: Snapshot, cutoff: pd.Timestamp, horizon: pd.Timedelta = HORIZON,
                   uninvestigated: bool = True) -> np.ndarray:
    """Days from request to label of the fraud/abuse labels known at CUTOFF on returns requested at least HORIZON
    before it (so late labels are not cut off more for some returns than others), each capped at HORIZON.

    UNINVESTIGATED: only labels that arrive without anyone reviewing the return (every source but `analyst`):
    how long a fraud that was paid out takes to show up. With fewer than 30 such labels, any label counts;
    with fewer than 30 returns old enough, any return does."""
    labels = snapshot.table_path("labels")
    returns = snapshot.table_path("returns")
    if labels is None or returns is None:
        return np.array([])
    con = duckdb.connect()
    try:
        def delays(old_only: bool, sources: bool) -> np.ndarray:
            where = [f"l.labelled_at <= TIMESTAMPTZ '{cutoff.isoformat()}'", "l.label IN ('fraud', 'abuse')"]
            if old_only:
                where.append(f"r.requested_at <= TIMESTAMPTZ '{(cutoff - horizon).isoformat()}'")
            if sources:
                where.append("l.source <> 'analyst'")
            rows = con.execute(f"""
                SELECT least(epoch(l.labelled_at) - epoch(r.requested_at), {horizon.total_seconds()}) / 86400
                FROM read_parquet('{labels}') l JOIN read_parquet('{returns}') r USING (return_id)
                WHERE {' AND '.join(where)}""").fetchall()
            return np.array([max(0.0, float(r[0])) for r in rows])
        for old_only, sources in ((True, uninvestigated), (True, False), (False, uninvestigated), (False, False)):
            found = delays(old_only, sources)
            if len(found) >= 30:
                return found
        return found
    finally:
        con.close()


def arrival_weights(rows: pd.DataFrame, labelled: np.ndarray, cutoff: pd.Timestamp, delays: np.ndarray
                    ) -> np.ndarray:
    """Per training row: 1 for a labelled return; for an unlabelled one, F(age), the share of past fraud labels
    that had arrived by its age at CUTOFF (how sure it is, by now, that no fraud label is coming), or 0 while
    that is below RIPE. A return nobody has looked at yet counts as legit only once time has vouched for it
    (positive-unlabelled learning with a known labelling delay)."""
    ordered = np.sort(np.asarray(delays, dtype=float))
    age = ((cutoff - rows["requested_at"]).dt.total_seconds() / 86400).to_numpy(dtype=float)
    arrived = np.searchsorted(ordered, age, side="right") / len(ordered) if len(ordered) else np.ones(len(age))
    return np.where(labelled, 1.0, np.where(arrived >= RIPE, arrived, 0.0))


def label_delay(snapshot: Snapshot, cutoff: pd.Timestamp, quantile: float = 0.75) -> pd.Timedelta:
    """How long fraud/abuse labels known at CUTOFF took to arrive after the request (a quantile)."""
    labels = snapshot.table_path("labels")
    returns = snapshot.table_path("returns")
    if labels is None:
        return pd.Timedelta(0)
    con = duckdb.connect()
    try:
        row = con.execute(f"""
            SELECT quantile_cont(epoch(l.labelled_at) - epoch(r.requested_at), {quantile})
            FROM read_parquet('{labels}') l JOIN read_parquet('{returns}') r USING (return_id)
            WHERE l.label IN ('fraud', 'abuse') AND l.labelled_at <= TIMESTAMPTZ '{cutoff.isoformat()}'
        """).fetchone()
    finally:
        con.close()
    seconds = row[0] if row and row[0] is not None else 0.0
    return pd.Timedelta(seconds=float(seconds)).ceil("D")
