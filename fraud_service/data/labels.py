"""Analysts' labels into the warehouse: `fraud-service labels sync` (also run by `train` and `features build`).

Closing a case writes one label per return into the evidence database (the data contract's
columns: return_id, label, labelled_at, source `analyst`). Training and features read labels
from the warehouse, so a sync appends the labels not yet there to the labels table in a new
snapshot (atomically, like an ingest) and marks them with that snapshot's name.

A label whose return is not in the warehouse (a return scored through the API that the
retailer has not exported yet) waits: it is copied by the first sync after an ingest brings
its return. A sync interrupted between the snapshot and the marking copies nothing twice:
labels already in the warehouse table are recognised and only marked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select, update

from fraud_service.data.warehouse import Warehouse
from fraud_service.progress import SILENT, Progress
from fraud_service.store.schema import Label
from fraud_service.store.uow import UnitOfWork

COLUMNS = ("return_id", "label", "labelled_at", "source")


@dataclass(frozen=True)
class SyncResult:
    copied: int
    waiting: int
    snapshot: str | None  # the new snapshot, None when nothing had to be written

    def describe(self) -> str:
        done = (f"copied {self.copied} analyst label(s) into warehouse snapshot {self.snapshot}" if self.snapshot
                else "no analyst label needed copying")
        if self.waiting:
            done += (f"; {self.waiting} label(s) wait for their return to be ingested (returns scored through the "
                     "API that the warehouse does not hold yet)")
        return done


def sync(warehouse: Warehouse, uow: Callable[[], UnitOfWork], progress: Progress = SILENT) -> SyncResult:
    """Copy analysts' labels not yet in the warehouse into a new snapshot. UOW gives a unit of work for the read and
    one for the marking after the snapshot (a warehouse snapshot cannot join a database transaction; see above
    for why an interruption between the two copies nothing twice)."""
    with uow() as reading:
        pending = reading.session.execute(select(Label).where(Label.synced_to.is_(None))
                                          .order_by(Label.id)).scalars().all()
    if not pending:
        return SyncResult(0, 0, None)
    current = warehouse.current()
    if current is None or current.table_path("returns") is None:
        return SyncResult(0, len(pending), None)
    known = current.holding("returns", "return_id", sorted({p.return_id for p in pending}))
    ready = [p for p in pending if p.return_id in known]
    waiting = len(pending) - len(ready)
    if not ready:
        return SyncResult(0, waiting, None)
    new = pd.DataFrame({"return_id": [p.return_id for p in ready], "label": [p.label for p in ready],
                        "labelled_at": pd.to_datetime([p.labelled_at for p in ready], utc=True).as_unit("us"),
                        "source": [p.source for p in ready]})
    with progress.step(f"copying {len(ready)} analyst label(s) into the warehouse"), warehouse.writer() as writer:
        base = writer.base
        old_path = base.table_path("labels") if base is not None else None
        old = pq.read_table(old_path) if old_path is not None else None
        if old is not None:
            present = old.select(list(COLUMNS)).to_pandas()
            present["labelled_at"] = pd.to_datetime(present["labelled_at"], utc=True).dt.as_unit("us")
            merged = new.merge(present.drop_duplicates(), on=list(COLUMNS), how="left", indicator=True)
            new = merged.loc[merged["_merge"] == "left_only", list(COLUMNS)]
        name = None
        if not new.empty:
            table = pa.Table.from_pandas(new.reset_index(drop=True), preserve_index=False)
            if old is not None:
                table = pa.concat_tables([old, _conform(table, old.schema)])
            pq.write_table(table, writer.path_for("labels"))
            name = writer.commit({"source": "analyst labels (fraud-service labels sync)",
                                  "analyst_labels": len(new)}).name
    marked = name or (current.name if current else None)
    with uow() as marking:
        marking.session.execute(update(Label).where(Label.id.in_([p.id for p in ready])).values(synced_to=marked))
        marking.commit()
    return SyncResult(len(new), waiting, name)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """TABLE with SCHEMA's columns and types (columns it lacks, such as extra ones a retailer sent, are null)."""
    arrays = []
    for column in schema:
        if column.name in table.column_names:
            arrays.append(table[column.name].cast(column.type))
        else:
            arrays.append(pa.nulls(len(table), column.type))
    return pa.Table.from_arrays(arrays, schema=schema)
