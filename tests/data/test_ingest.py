"""Ingest writes whole snapshots: idempotent on the same data, additive for later periods, atomic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import fraud_service.data.ingest as ingest_module
from fraud_service.data.contract import TABLES
from fraud_service.data.ingest import ingest
from fraud_service.errors import DatasetError, WarehouseError
from tests.helpers import read_table, sorted_frame, split_by_time, table_to_csv


def test_ingests_every_table_with_contract_types(world_copy, warehouse):
    result = ingest(world_copy, warehouse)

    snapshot = warehouse.current()
    assert snapshot is not None and snapshot.name == result.snapshot
    for name in TABLES:
        source = read_table(world_copy, name)
        stored = snapshot.read(name)
        assert stored is not None
        assert result.tables[name].added == len(source) == len(stored)
        pd.testing.assert_frame_equal(sorted_frame(stored, name), sorted_frame(source, name))
    assert str(snapshot.read("returns")["requested_at"].dtype) == "datetime64[us, UTC]"


def test_reingesting_the_same_data_changes_nothing(world_copy, warehouse, cli):
    first = ingest(world_copy, warehouse)
    fingerprint = warehouse.current().manifest["fingerprint"]

    code, out, _ = cli("ingest", str(world_copy))

    assert code == 0
    assert f"nothing changed: snapshot {first.snapshot} stays current" in out
    assert warehouse.current().manifest["fingerprint"] == fingerprint
    assert sorted(p.name for p in warehouse.snapshots_dir.iterdir()) == [first.snapshot]


def test_a_later_period_appends_to_what_is_stored(world_copy, warehouse, tmp_path, settings):
    cutoff = pd.Timestamp("2025-03-01", tz="UTC")
    split_by_time(world_copy, cutoff, tmp_path / "p1", tmp_path / "p2")

    ingest(tmp_path / "p1", warehouse)
    second = ingest(tmp_path / "p2", warehouse)

    assert second.tables["returns"].added == len(read_table(tmp_path / "p2", "returns"))
    assert second.tables["returns"].unchanged == 0
    snapshot = warehouse.current()
    for name in TABLES:
        pd.testing.assert_frame_equal(sorted_frame(snapshot.read(name), name),
                                      sorted_frame(read_table(world_copy, name), name))


def test_a_later_period_referencing_unknown_customers_is_rejected(world_copy, warehouse, tmp_path):
    cutoff = pd.Timestamp("2025-03-01", tz="UTC")
    split_by_time(world_copy, cutoff, tmp_path / "p1", tmp_path / "p2")
    with pytest.raises(Exception, match="dangling reference"):
        ingest(tmp_path / "p2", warehouse)
    assert warehouse.current() is None


def test_csv_and_parquet_datasets_store_the_same_rows(world_copy, tmp_path, settings):
    from fraud_service.data.warehouse import Warehouse

    as_csv = tmp_path / "csv"
    shutil.copytree(world_copy, as_csv)
    for name in TABLES:
        table_to_csv(as_csv, name)
    a, b = Warehouse(tmp_path / "wa"), Warehouse(tmp_path / "wb")

    ingest(world_copy, a)
    ingest(as_csv, b)

    for name in TABLES:
        pd.testing.assert_frame_equal(a.current().read(name), b.current().read(name))


def test_a_changed_row_replaces_the_stored_one_and_is_counted_as_updated(world_copy, warehouse):
    ingest(world_copy, warehouse)
    orders = read_table(world_copy, "orders")
    order_id = orders.loc[orders["delivered_at"].notna(), "order_id"].iloc[0]
    orders.loc[orders["order_id"] == order_id, "delivered_at"] += pd.Timedelta(hours=5)
    orders.to_parquet(world_copy / "orders.parquet", index=False)

    result = ingest(world_copy, warehouse)

    assert (result.tables["orders"].updated, result.tables["orders"].added) == (1, 0)
    stored = warehouse.current().read("orders").set_index("order_id")
    assert stored.loc[order_id, "delivered_at"] == orders.set_index("order_id").loc[order_id, "delivered_at"]


def test_a_crash_while_writing_leaves_the_previous_snapshot_current(world_copy, warehouse, tmp_path,
                                                                      monkeypatch):
    ingest(world_copy, warehouse)
    before = warehouse.current()
    later = tmp_path / "later"
    shutil.copytree(world_copy, later)
    returns = read_table(later, "returns")
    returns["return_id"] = returns["return_id"] + "-B"
    returns.to_parquet(later / "returns.parquet", index=False)
    real_merge = ingest_module._merge_table
    calls = []

    def merge_then_fail(*args, **kwargs):
        calls.append(args[1].name)
        if args[1].name == "labels":
            raise OSError("disk full")
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_merge_table", merge_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ingest(later, warehouse)

    assert "returns" in calls
    after = warehouse.current()
    assert (after.name, after.manifest["fingerprint"]) == (before.name, before.manifest["fingerprint"])
    assert len(after.read("returns")) == len(returns)
    assert not list(warehouse.snapshots_dir.glob(".staging-*"))


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(world_copy, warehouse):
    with warehouse.writer():
        with pytest.raises(WarehouseError, match="another process is writing the warehouse"):
            ingest(world_copy, warehouse)


def test_old_snapshots_are_pruned_but_the_current_one_is_kept(world_copy, warehouse):
    returns = read_table(world_copy, "returns")
    for _ in range(5):
        returns["refund_amount"] = returns["refund_amount"] + 1
        returns.to_parquet(world_copy / "returns.parquet", index=False)
        ingest(world_copy, warehouse)
    names = sorted(p.name for p in warehouse.snapshots_dir.iterdir() if p.name.isdigit())
    assert names == ["000003", "000004", "000005"]
    assert warehouse.current().name == "000005"


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: shutil.rmtree(d), "not a directory"),
    (lambda d: [p.unlink() for p in d.glob("*.parquet")], "no contract tables found"),
    (lambda d: table_to_csv(d, "orders") and shutil.copy(d / "customers.parquet", d / "orders.parquet"),
     "both orders.parquet and orders.csv exist"),
    (lambda d: (d / "returns.parquet").write_bytes(b"not parquet"), "returns.parquet: cannot be read"),
    (lambda d: (d / "labels.parquet").rename(d / "Labels.parquet"),
     r"Labels.parquet: table files are named in lower case \(labels.parquet\)"),
])
def test_unreadable_datasets_get_a_clear_error(world_copy, warehouse, setup, message):
    setup(world_copy)
    with pytest.raises(DatasetError, match=message):
        ingest(world_copy, warehouse)
    assert warehouse.current() is None


def test_extra_columns_are_ignored_and_offsets_are_converted_to_utc(world_copy, warehouse):
    def shift(frame: pd.DataFrame) -> pd.DataFrame:
        frame["note"] = "extra"
        frame.loc[0, "created_at"] = "2024-06-01T12:00:00+02:00"
        frame.loc[1, "created_at"] = "2024-06-01 12:00:00"
        return frame
    table_to_csv(world_copy, "customers", shift)

    ingest(world_copy, warehouse)

    stored = warehouse.current().read("customers")
    assert "note" not in stored.columns
    source = pd.read_csv(world_copy / "customers.csv", dtype=str)
    by_id = stored.set_index("customer_id")["created_at"]
    assert by_id[source.loc[0, "customer_id"]] == pd.Timestamp("2024-06-01T10:00:00", tz="UTC")
    assert by_id[source.loc[1, "customer_id"]] == pd.Timestamp("2024-06-01T12:00:00", tz="UTC")


def test_ingest_does_not_touch_the_dataset(world_copy, warehouse):
    before = {p.name: p.stat().st_mtime_ns for p in Path(world_copy).iterdir()}
    ingest(world_copy, warehouse)
    assert {p.name: p.stat().st_mtime_ns for p in Path(world_copy).iterdir()} == before


def test_the_in_memory_key_index_answers_as_the_table_does(world_copy, warehouse):
    ingest(world_copy, warehouse)
    snapshot = warehouse.current()
    stored = set(read_table(world_copy, "orders")["order_id"])
    probe = sorted(stored)[::7] + ["not-an-order", "O-does-not-exist", ""]
    expected = {order_id for order_id in probe if order_id in stored}  # the oracle: a plain set

    index = snapshot.key_index("orders", "order_id")

    assert len(index.hashes) == len(stored)
    assert index.holding(probe) == expected == snapshot.holding("orders", "order_id", probe)
    assert index.holding([]) == set()
    assert all(index.holding([order_id]) == {order_id} & stored for order_id in probe)  # one id, as a request asks
    assert snapshot.key_index("no_such_table", "order_id").holding(probe) == set()


def test_an_order_sent_again_with_fewer_lines_has_fewer_lines_and_a_line_alone_is_added(world_copy, warehouse):
    ingest(world_copy, warehouse)
    items = read_table(world_copy, "order_items")
    counts = items.groupby("order_id").size()
    order_id = counts[counts >= 2].index[0]
    kept = items[items["order_id"] == order_id].iloc[[0]]  # the order's first line only: the others were cancelled
    single = counts[counts == 1].index[0]  # an order of one line, sent again whole with a changed quantity
    other = items[items["order_id"] == single].assign(quantity=lambda f: f["quantity"] + 1)
    orders = read_table(world_copy, "orders")
    for path in world_copy.glob("*.parquet"):
        if path.stem not in ("order_items", "ground_truth"):
            path.unlink()
    pd.concat([kept, other]).to_parquet(world_copy / "order_items.parquet", index=False)
    orders[orders["order_id"].isin([order_id, single])].to_parquet(world_copy / "orders.parquet", index=False)

    result = ingest(world_copy, warehouse)

    table = result.tables["order_items"]
    assert (table.unchanged, table.updated, table.removed) == (1, 1, counts[order_id] - 1)
    stored = warehouse.current().read("order_items")
    assert stored[stored["order_id"] == order_id]["line_no"].tolist() == kept["line_no"].tolist()
    # every other order keeps all of its lines, the one sent again with its change
    assert len(stored) == len(items) - (counts[order_id] - 1)
    line = stored[(stored["order_id"] == other["order_id"].iloc[0]) & (stored["line_no"] == other["line_no"].iloc[0])]
    assert line["quantity"].tolist() == other["quantity"].tolist()

    # lines alone, for an order the dataset does not bring: a line added to it, the others kept
    third = counts[counts >= 2].index[1]
    added = items[items["order_id"] == third].iloc[[0]].assign(line_no=999)
    (world_copy / "orders.parquet").unlink()
    added.to_parquet(world_copy / "order_items.parquet", index=False)
    result = ingest(world_copy, warehouse)
    assert (result.tables["order_items"].added, result.tables["order_items"].removed) == (1, 0)
    stored = warehouse.current().read("order_items")
    assert len(stored[stored["order_id"] == third]) == counts[third] + 1


def test_a_dataset_moving_a_stored_return_or_order_to_another_owner_is_refused(world_copy, warehouse, cli):
    ingest(world_copy, warehouse)
    before = warehouse.current().manifest["fingerprint"]
    orders, returns = read_table(world_copy, "orders"), read_table(world_copy, "returns")
    customers = orders["customer_id"].unique()
    orders.loc[0, "customer_id"] = next(c for c in customers if c != orders.loc[0, "customer_id"])
    orders.to_parquet(world_copy / "orders.parquet", index=False)
    stored_order = returns.loc[1, "order_id"]
    returns.loc[1, "order_id"] = next(o for o in orders["order_id"] if o != stored_order)

    returns.to_parquet(world_copy / "returns.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "orders.parquet" in err and "changes a stored row" in err
    assert f"{stored_order!r}, as already ingested for return_id {returns.loc[1, 'return_id']!r}" in err
    assert warehouse.current().manifest["fingerprint"] == before


def test_times_ahead_of_the_clock_and_absurd_amounts_and_counts_are_refused(world_copy, warehouse, cli):
    returns, items = read_table(world_copy, "returns"), read_table(world_copy, "order_items")
    returns.loc[0, "requested_at"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)
    returns.loc[1, "refund_amount"] = 1e13  # its features' sums in millionths would not fit in 64 bits
    returns.to_parquet(world_copy / "returns.parquet", index=False)
    items["quantity"] = items["quantity"].astype(object)
    items.loc[0, "quantity"] = "99999999999999999999"  # as a CSV brings it: beyond any 64-bit integer
    items.to_csv(world_copy / "order_items.csv", index=False)
    (world_copy / "order_items.parquet").unlink()

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1, err
    assert "in the future" in err and "a time that has come" in err
    assert "refund_amount" in err and "at most 1,000,000,000" in err
    assert "quantity" in err and "99999999999999999999" in err and "at most 1,000,000" in err
    assert "Traceback" not in err
    assert warehouse.current() is None


def test_a_snapshot_a_job_reads_is_not_pruned_under_it(world_copy, warehouse):
    returns = read_table(world_copy, "returns")
    ingest(world_copy, warehouse)
    reading = warehouse.current().pin()  # a training run started on 000001
    for _ in range(4):
        returns["refund_amount"] = returns["refund_amount"] + 1
        returns.to_parquet(world_copy / "returns.parquet", index=False)
        ingest(world_copy, warehouse)

    assert len(reading.read("returns")) == len(returns)  # still there for the job
    names = sorted(p.name for p in warehouse.snapshots_dir.iterdir() if p.name.isdigit())
    assert names == ["000001", "000003", "000004", "000005"]
    del reading  # the job ends: the next ingest removes it
    returns["refund_amount"] = returns["refund_amount"] + 1
    returns.to_parquet(world_copy / "returns.parquet", index=False)
    ingest(world_copy, warehouse)
    assert sorted(p.name for p in warehouse.snapshots_dir.iterdir() if p.name.isdigit()) == [
        "000004", "000005", "000006"]


def test_what_a_killed_writer_staged_is_cleared_by_the_next(world_copy, warehouse):
    warehouse.snapshots_dir.mkdir(parents=True)
    left = warehouse.snapshots_dir / ".staging-killed"
    (left / "returns.parquet").parent.mkdir()
    (left / "returns.parquet").write_bytes(b"half")
    ingest(world_copy, warehouse)
    assert not left.exists() and warehouse.current().name == "000001"


def test_the_same_amounts_as_csv_or_float32_parquet_change_nothing(world_copy, warehouse):
    """pandas' text reader read 25.389999999999997 as 25.39, and a float32 column stored 22.06 as
    22.059999465942383: the same data sent as CSV, or as float32, made a new snapshot 'updating' thousands of rows."""
    items = pd.read_parquet(world_copy / "order_items.parquet")
    items["unit_price"] = items["unit_price"] * 1.1  # discounts: prices a float holds only approximately
    assert any(repr(v) != repr(round(v, 2)) for v in items["unit_price"])  # e.g. 25.410000000000004
    items.to_parquet(world_copy / "order_items.parquet", index=False)
    returns = pd.read_parquet(world_copy / "returns.parquet")
    amounts = returns["refund_amount"]
    assert (amounts == amounts.round(2)).all() and amounts.max() < 1e5  # cents a float32 holds to the cent
    first = ingest(world_copy, warehouse)
    assert first.changed

    table_to_csv(world_copy, "order_items")
    assert not ingest(world_copy, warehouse).changed  # the same prices, as text

    returns.astype({"refund_amount": "float32"}).to_parquet(world_copy / "returns.parquet", index=False)
    assert not ingest(world_copy, warehouse).changed  # the same amounts to the cent, as float32
    assert warehouse.current().name == first.snapshot
