"""`labels sync` carries inspections reported through the API into the warehouse: the contract's inspection row and
its `inspection` label, in one new snapshot, once; one whose return the warehouse lacks waits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_service.data.labels import sync
from fraud_service.data.warehouse import Warehouse
from fraud_service.store.schema import Inspection, Label
from tests.factories import memory_db

T = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _warehouse(root: Path) -> Warehouse:
    warehouse = Warehouse(root)
    with warehouse.writer() as writer:
        pq.write_table(pa.table({"return_id": ["r1", "r2"], "requested_at": pd.to_datetime([T, T], utc=True)}),
                       writer.path_for("returns"))
        pq.write_table(pa.table({"return_id": ["r2"], "inspected_at": pd.to_datetime([T], utc=True).as_unit("us"),
                                 "outcome": ["ok"]}), writer.path_for("inspections"))
        writer.commit({"source": "test"})
    return warehouse


def test_sync_copies_reported_inspections_and_their_labels_once(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path / "warehouse")
    with memory_db() as db:
        with db.uow() as uow:
            for return_id, outcome, label in (("r1", "empty_box", "fraud"), ("r3", "worn", "abuse")):
                at = T + dt.timedelta(days=2)
                event = uow.record(kind="inspection", subject=return_id, actor="key:test", at=at, payload={})
                uow.session.add(Inspection(return_id=return_id, inspected_at=at, outcome=outcome, notes="",
                                           actor="key:test", received_at=at, event_seq=event.seq))
                uow.session.add(Label(return_id=return_id, label=label, labelled_at=at, source="inspection",
                                      reason=f"inspection: {outcome}", actor="key:test", event_seq=event.seq))
            uow.commit()
        done = sync(warehouse, db.uow)
        assert (done.copied, done.inspections, done.waiting) == (1, 1, 2)  # r3's inspection and label wait
        assert "copied 1 label(s) and 1 inspection(s)" in done.describe()
        snapshot = warehouse.current()
        assert snapshot is not None and snapshot.name == done.snapshot
        inspections = snapshot.read("inspections")
        assert inspections is not None
        assert list(zip(inspections["return_id"], inspections["outcome"], strict=True)) == [
            ("r2", "ok"), ("r1", "empty_box")]  # appended to what the warehouse held
        assert pd.Timestamp(inspections["inspected_at"].iloc[1]) == pd.Timestamp(T + dt.timedelta(days=2))
        labels = snapshot.read("labels")
        assert labels is not None and list(zip(labels["return_id"], labels["label"], labels["source"],
                                               strict=True)) == [("r1", "fraud", "inspection")]
        again = sync(warehouse, db.uow)
        assert (again.copied, again.inspections, again.snapshot, again.waiting) == (0, 0, None, 2)
        with db.uow() as uow:
            marked = {(i.return_id, i.synced_to) for i in uow.session.query(Inspection)}
        assert marked == {("r1", done.snapshot), ("r3", None)}
