"""Labels and inspections into the warehouse: `fraud-service labels sync` (also run by `train` and `features build`).

Closing a case writes one label per return into the evidence database (the data contract's
columns: return_id, label, labelled_at, source `analyst`); an inspection reported through the API
writes the contract's inspection row and, for every outcome but `damaged`, a label of source
`inspection`. Training and features read labels and inspections from the warehouse, so a sync
appends those not yet there to their tables in one new snapshot (atomically, like an ingest) and
marks them with that snapshot's name.

A label whose return is not in the warehouse (a return scored through the API that the
retailer has not exported yet) waits: it is copied by the first sync after an ingest brings
its return. A sync interrupted between the snapshot and the marking copies nothing twice:
labels already in the warehouse table are recognised and only marked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fraud_service.data.warehouse import Warehouse
from fraud_service.progress import SILENT, Progress
from fraud_service.store.chain import aware, utc_text
from fraud_service.store.schema import Inspection, Label
from fraud_service.store.uow import UnitOfWork

COLUMNS = ("return_id", "label", "labelled_at", "source")
INSPECTION_COLUMNS = ("return_id", "inspected_at", "outcome")


@dataclass(frozen=True)
class SyncResult:
    copied: int
    waiting: int
    snapshot: str | None  # the new snapshot, None when nothing had to be written
    inspections: int = 0

    def describe(self) -> str:
        done = (f"copied {self.copied} label(s) and {self.inspections} inspection(s) into warehouse snapshot "
                f"{self.snapshot}" if self.snapshot else "no label or inspection needed copying")
        if self.waiting:
            done += (f"; {self.waiting} wait for their return to be ingested (returns scored through the API that "
                     "the warehouse does not hold yet)")
        return done


@dataclass(frozen=True)
class _Table:
    """Rows of one contract table waiting in the evidence database: their ids and their contract columns."""

    name: str
    model: Any
    columns: tuple[str, ...]
    time: str

    def frame(self, rows: list[Any]) -> pd.DataFrame:
        frame = pd.DataFrame({c: [getattr(r, c) for r in rows] for c in self.columns})
        frame[self.time] = pd.to_datetime(frame[self.time], utc=True).dt.as_unit("us")
        return frame


TABLES = (_Table("labels", Label, COLUMNS, "labelled_at"),
          _Table("inspections", Inspection, INSPECTION_COLUMNS, "inspected_at"))


def sync(warehouse: Warehouse, uow: Callable[[], UnitOfWork], progress: Progress = SILENT) -> SyncResult:
    """Copy labels (analysts' and inspections') and reported inspections not yet in the warehouse into one new
    snapshot. UOW gives a unit of work for the read and one for the marking after the snapshot (a warehouse
    snapshot cannot join a database transaction; see above for why an interruption between the two copies
    nothing twice)."""
    with uow() as reading:
        pending = {t.name: reading.session.execute(select(t.model).where(t.model.synced_to.is_(None))
                                                   .order_by(t.model.id)).scalars().all() for t in TABLES}
    total = sum(len(rows) for rows in pending.values())
    if not total:
        return SyncResult(0, 0, None)
    current = warehouse.current()
    if current is None or current.table_path("returns") is None:
        return SyncResult(0, total, None)
    known = current.holding("returns", "return_id", sorted({r.return_id for rows in pending.values() for r in rows}))
    ready = {name: [r for r in rows if r.return_id in known] for name, rows in pending.items()}
    waiting = total - sum(len(rows) for rows in ready.values())
    if not any(ready.values()):
        return SyncResult(0, waiting, None)
    counts = {t.name: 0 for t in TABLES}
    name = None
    with (progress.step(f"copying {total - waiting} label(s) and inspection(s) into the warehouse"),
          warehouse.writer() as writer):
        for table in TABLES:
            if ready[table.name]:
                counts[table.name] = _append(writer, table, table.frame(ready[table.name]))
        if any(counts.values()):
            name = writer.commit({"source": "labels and inspections from the service (fraud-service labels sync)",
                                  "analyst_labels": counts["labels"], "inspections": counts["inspections"]}).name
    marked = name or (current.name if current else None)
    with uow() as marking:
        for table in TABLES:
            ids = [r.id for r in ready[table.name]]
            if ids:
                marking.session.execute(update(table.model).where(table.model.id.in_(ids)).values(synced_to=marked))
        marking.commit()
    return SyncResult(counts["labels"], waiting, name, counts["inspections"])


def _append(writer: Any, table: _Table, new: pd.DataFrame) -> int:
    """Write TABLE's rows in the snapshot being made: the base's rows and those of NEW it lacks; how many were new."""
    base = writer.base
    old_path = base.table_path(table.name) if base is not None else None
    old = pq.read_table(old_path) if old_path is not None else None
    columns = list(table.columns)
    if old is not None:
        present = old.select(columns).to_pandas()
        present[table.time] = pd.to_datetime(present[table.time], utc=True).dt.as_unit("us")
        merged = new.merge(present.drop_duplicates(), on=columns, how="left", indicator=True)
        new = merged.loc[merged["_merge"] == "left_only", columns]
    if new.empty:
        return 0
    added = pa.Table.from_pandas(new.reset_index(drop=True), preserve_index=False)
    if old is not None:
        added = pa.concat_tables([old, _conform(added, old.schema)])
    pq.write_table(added, writer.path_for(table.name))
    return len(new)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """TABLE with SCHEMA's columns and types (columns it lacks, such as extra ones a retailer sent, are null)."""
    arrays = []
    for column in schema:
        if column.name in table.column_names:
            arrays.append(table[column.name].cast(column.type))
        else:
            arrays.append(pa.nulls(len(table), column.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def ingested(warehouse: Warehouse) -> Callable[[list[str]], list[tuple[str, str, Any]]]:
    """A reader of the labels ingested into the warehouse's current snapshot: return ids -> (return_id, label,
    labelled_at) rows (none when the warehouse holds no labels)."""
    import duckdb

    snapshot = warehouse.current()
    path = snapshot.table_path("labels") if snapshot is not None else None

    def read(return_ids: list[str]) -> list[tuple[str, str, Any]]:
        if path is None or not return_ids:
            return []
        con = duckdb.connect()
        try:
            con.execute("SET threads = 1")
            con.register("wanted", pa.table({"return_id": pa.array(return_ids, pa.string())}))
            return [tuple(row) for row in con.execute(
                "SELECT l.return_id, l.label, l.labelled_at FROM read_parquet(?) l "
                "JOIN wanted w ON l.return_id = w.return_id", [str(path)]).fetchall()]
        finally:
            con.close()
    return read


# -- the label in force: the warehouse's or the evidence log's, whichever came later -------------------------------

BAD = ("fraud", "abuse")
"""The labels that say a return was not honest."""


def latest_logged(session: Session, return_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The latest label the evidence log holds for each of RETURN_IDS that has one (an analyst's, the returns
    system's): {"label", "labelled_at" (UTC text), "source"}; labels given a minute ago included, before any sync."""
    ids = list(set(return_ids))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(select(Label).where(Label.return_id.in_(ids[start:start + 500]))
                               .order_by(Label.labelled_at, Label.id)).scalars()
        for row in rows:
            out[row.return_id] = {"label": row.label, "labelled_at": utc_text(row.labelled_at), "source": row.source}
    return out


def in_force(session: Session, return_ids: Iterable[str],
             warehouse: Mapping[str, tuple[dt.datetime, str]]) -> dict[str, tuple[dt.datetime, str]]:
    """Each of RETURN_IDS' label in force, (labelled_at, label): the warehouse's (WAREHOUSE: return id -> its
    latest) or the evidence log's, whichever came later (the log's on a tie)."""
    ids = list(return_ids)
    latest = {r: warehouse[r] for r in ids if r in warehouse}
    for return_id, logged in latest_logged(session, ids).items():
        when = aware(dt.datetime.fromisoformat(logged["labelled_at"]))
        if return_id not in latest or when >= latest[return_id][0]:
            latest[return_id] = (when, logged["label"])
    return latest
