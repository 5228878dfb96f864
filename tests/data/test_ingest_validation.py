"""A corrupted dataset is rejected row by row, and the warehouse keeps what it had."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from fraud_service.data.warehouse import Warehouse
from tests.helpers import table_to_csv


def _set(row: int, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row - 1, column] = value
        return frame
    return mutate


def _copy_key(row: int, from_row: int, column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row - 1, column] = frame.loc[from_row - 1, column]
        return frame
    return mutate


def _drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.drop(columns=[column])


CASES = [
    # table, change, check, column, row (None: whole column), value shown
    ("returns", _drop("refund_amount"), "missing required column", "refund_amount", None, None),
    ("returns", _set(5, "requested_at", "last tuesday"), "wrong type", "requested_at", 5, "last tuesday"),
    ("orders", _set(3, "order_total", "twelve"), "wrong type", "order_total", 3, "twelve"),
    ("returns", _set(6, "has_receipt", "maybe"), "wrong type", "has_receipt", 6, "maybe"),
    ("order_items", _set(4, "line_no", "2.5"), "wrong type", "line_no", 4, "2.5"),
    ("returns", _set(7, "return_type", "stolen"), "unknown value", "return_type", 7, "stolen"),
    ("orders", _set(2, "channel", "Web"), "unknown value", "channel", 2, "Web"),
    ("orders", _copy_key(10, 2, "order_id"), "duplicate id", "order_id", 10, "(first at row 2)"),
    ("returns", _set(4, "order_id", "O-NOPE"), "dangling reference", "order_id", 4, "O-NOPE"),
    ("orders", _set(6, "customer_id", "C-NOPE"), "dangling reference", "customer_id", 6, "C-NOPE"),
    ("labels", _set(1, "return_id", "R-NOPE"), "dangling reference", "return_id", 1, "R-NOPE"),
    ("labels", _set(2, "labelled_at", "2000-01-01T00:00:00+00:00"), "time order", "labelled_at", 2,
     "2000-01-01T00:00:00+00:00"),
    ("inspections", _set(3, "inspected_at", "2000-01-01T00:00:00"), "time order", "inspected_at", 3, None),
    ("order_items", _set(8, "quantity", "-1"), "out of range", "quantity", 8, "-1"),
    ("returns", _set(9, "refund_amount", "-5.00"), "out of range", "refund_amount", 9, "-5.00"),
    ("customers", _set(2, "created_at", "0001-01-01T00:00:00"), "out of range", "created_at", 2, "0001-01-01"),
    ("orders", _set(3, "placed_at", "9999-12-31T23:59:59+00:00"), "out of range", "placed_at", 3, "9999-12-31"),
    ("customers", _set(3, "created_at", ""), "missing value", "created_at", 3, None),
    ("returns", _set(4, "reason", "x" * 201), "too long", "reason", 4, "xxxx"),
    ("orders", _set(5, "payment_token", "p" * 500), "too long", "payment_token", 5, None),
    ("orders", _set(3, "payment_token", "tok\u200b3"), "hidden character", "payment_token", 3, "U+200B"),
    ("returns", _set(2, "return_id", "R\n2"), "hidden character", "return_id", 2, "U+000A (a control character)"),
    ("orders", _set(4, "device_token", "\u00a0dev4"), "hidden character", "device_token", 4, "U+00A0"),
    ("orders", _set(2, "device_token", "dev\u3164"), "hidden character", "device_token", 2, "U+3164"),
    ("returns", _set(5, "customer_id", "C\u034f1"), "hidden character", "customer_id", 5, "U+034F"),
    # an integer as written, not any number pandas reads
    ("order_items", _set(5, "quantity", "1e3"), "wrong type", "quantity", 5, "1e3"),
    ("order_items", _set(6, "quantity", "1_000"), "wrong type", "quantity", 6, "1_000"),
    ("returns", _set(2, "items_count", "0x2"), "wrong type", "items_count", 2, "0x2"),
    ("orders", _set(4, "currency", "\u20ac"), "wrong format", "currency", 4, "\u20ac"),
    ("orders", _set(2, "currency", "US Dollar"), "wrong format", "currency", 2, "US Dollar"),
]


@pytest.fixture
def ingested(world_copy: Path, cli: Callable[..., tuple[int, str, str]], warehouse: Warehouse) -> dict:
    """The clean world, ingested once; returns what the warehouse looked like."""
    code, _, err = cli("ingest", str(world_copy))
    assert code == 0, err
    current = warehouse.current()
    assert current is not None
    return {"name": current.name, "fingerprint": current.manifest["fingerprint"]}


@pytest.mark.parametrize(("table", "change", "check", "column", "row", "value"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_each_kind_of_error_is_reported_by_row_and_nothing_is_written(
        world_copy, cli, warehouse, ingested, table, change, check, column, row, value, tmp_path):
    csv = table_to_csv(world_copy, table, change)
    report_file = tmp_path / "report.json"

    code, out, err = cli("ingest", str(world_copy), "--report", str(report_file))

    assert code == 1
    assert "nothing was ingested" in err
    groups = json.loads(report_file.read_text())["groups"]
    hits = [g for g in groups if g["file"] == csv.name and g["check"] == check and g["column"] == column]
    assert hits, f"no {check} on {csv.name}:{column} in {groups}"
    example = hits[0]["examples"][0]
    assert example["row"] == row
    if value is not None:
        assert value in example["value"]
    assert example["expected"]
    line = f"{csv.name}, row {row}, column {column}" if row else f"{csv.name} column {column}"
    assert line in err
    after = warehouse.current()
    assert after is not None
    assert (after.name, after.manifest["fingerprint"]) == (ingested["name"], ingested["fingerprint"])
    assert not list(warehouse.snapshots_dir.glob(".staging-*"))


def test_rejects_dataset_with_errors_on_first_ingest_and_leaves_warehouse_empty(world_copy, cli, warehouse):
    table_to_csv(world_copy, "returns", _set(1, "channel", "pigeon"))

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "returns.csv, row 1, column channel: got 'pigeon'; expected one of mail, store, returnless" in err
    assert warehouse.current() is None


def test_reports_problems_of_every_table_at_once(world_copy, cli, tmp_path):
    table_to_csv(world_copy, "orders", _set(2, "placed_at", "soon"))
    table_to_csv(world_copy, "returns", _set(3, "refund_method", "cash"))
    report_file = tmp_path / "r.json"

    code, _, _ = cli("ingest", str(world_copy), "--report", str(report_file))

    assert code == 1
    checks = {(g["file"], g["check"]) for g in json.loads(report_file.read_text())["groups"]}
    assert {("orders.csv", "wrong type"), ("returns.csv", "unknown value")} <= checks

    code, _, err = cli("ingest", str(world_copy), "--report", str(tmp_path / "no-such-dir" / "r.json"))
    assert code == 1 and "Traceback" not in err, err
    assert "the report could not be written to" in err and "No such file or directory" in err
    assert "orders.csv, row 2, column placed_at" in err  # the problems still reach the terminal


def test_many_bad_rows_are_counted_exactly_and_shown_by_example(world_copy, cli):
    def break_100(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[:99, "items_count"] = "0"
        return frame
    table_to_csv(world_copy, "returns", break_100)

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "returns.csv column items_count: out of range (100 row(s))" in err
    assert "... and 80 more like these" in err


def test_identifier_stored_as_float_in_parquet_is_a_type_error(world_copy, cli):
    customers = pd.read_parquet(world_copy / "customers.parquet")
    customers["customer_id"] = customers.index.astype(float)
    customers.to_parquet(world_copy / "customers.parquet", index=False)

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "customers.parquet column customer_id" in err
    assert "12346.0" in err


def test_a_nul_in_a_parquet_string_is_named_by_row(world_copy, cli, warehouse):
    returns = pd.read_parquet(world_copy / "returns.parquet")
    returns.loc[2, "reason"] = "size\x00hidden"
    returns.to_parquet(world_copy / "returns.parquet", index=False)

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "returns.parquet, row 3, column reason" in err and "NUL" in err
    assert warehouse.current() is None


def test_a_nul_in_a_csv_file_is_refused_naming_its_line(world_copy, cli, warehouse):
    csv = table_to_csv(world_copy, "returns", lambda frame: frame)
    lines = csv.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b",", b",\x00", 1)  # readers would cut the field at the NUL
    csv.write_bytes(b"\n".join(lines))

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "returns.csv: line 5 holds a NUL byte" in err
    assert warehouse.current() is None


def test_a_list_in_a_text_column_and_an_integer_beyond_64_bits_are_named_by_row(world_copy, cli, warehouse):
    import pyarrow as pa
    import pyarrow.parquet as pq

    returns = pd.read_parquet(world_copy / "returns.parquet")
    table = pa.Table.from_pandas(returns, preserve_index=False)
    reasons = [["size", "colour"] if i == 3 else [str(v)] for i, v in enumerate(returns["reason"])]
    counts = [2**63 + 5 if i == 6 else int(v) for i, v in enumerate(returns["items_count"])]
    table = table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.list_(pa.string())))
    table = table.set_column(table.schema.get_field_index("items_count"), "items_count", pa.array(counts, pa.uint64()))
    pq.write_table(table, world_copy / "returns.parquet")

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1, err
    assert "returns.parquet, row 4, column reason" in err and "not a list, mapping or bytes" in err
    assert "returns.parquet, row 7, column items_count" in err and "9223372036854775813" in err
    assert "Traceback" not in err
    assert warehouse.current() is None


def test_a_csv_header_naming_a_column_twice_or_a_file_not_in_utf8_is_refused_with_its_line(world_copy, cli,
                                                                                            warehouse):
    csv = table_to_csv(world_copy, "returns", lambda frame: frame)
    lines = csv.read_bytes().split(b"\n")
    original = list(lines)
    lines[0] = lines[0] + b",return_id"
    csv.write_bytes(b"\n".join(lines))
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "line 1 (the header) names 'return_id' more than once" in err

    lines = list(original)
    lines[6] = lines[6].replace(b",", "caf\u00e9,".encode("latin-1"), 1)
    csv.write_bytes(b"\n".join(lines))
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "line 7, byte" in err and "(0xe9) is not UTF-8" in err
    assert warehouse.current() is None


@pytest.mark.parametrize("kind", ["dangling link", "link outside", "fifo", "spark folder"])
def test_only_regular_files_inside_the_dataset_are_read(world_copy, cli, warehouse, tmp_path, kind):
    import os

    target = world_copy / "labels.parquet"
    outside = tmp_path / "elsewhere.parquet"
    target.rename(outside)
    if kind == "dangling link":
        target.symlink_to(tmp_path / "gone.parquet")
    elif kind == "link outside":
        target.symlink_to(outside)
    elif kind == "spark folder":  # what Spark's df.write.parquet("labels.parquet") leaves
        target.mkdir()
        for name in ("part-00000-1.snappy.parquet", "part-00001-1.snappy.parquet", "_SUCCESS"):
            (target / name).write_bytes(outside.read_bytes() if name.startswith("part") else b"")
    else:
        os.mkfifo(target)  # reading it would block for ever

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    expected = {"fifo": "is not a regular file", "spark folder": "is a folder of 2 part files (as Spark writes a "
                "table); a table is one file"}.get(kind, "is a symbolic link")
    assert f"labels.parquet: {expected}" in err
    assert warehouse.current() is None


def test_a_changed_row_is_checked_against_the_rows_already_ingested_that_refer_to_it(
        world_copy, cli, warehouse, ingested, tmp_path):
    """A later dataset moves a return after its stored label and inspection (and an order after its stored returns):
    each stored row that would then break the time order is named, and nothing is written, as when both come in one
    dataset. Labels and inspections are events keyed by their time: a return cannot move past them. A move that keeps
    the order goes in."""
    labels = pd.read_parquet(world_copy / "labels.parquet")
    returns = pd.read_parquet(world_copy / "returns.parquet")
    inspections = pd.read_parquet(world_copy / "inspections.parquet")
    label = labels[labels["return_id"].isin(inspections["return_id"])].iloc[0]
    moved = returns[returns["return_id"] == label["return_id"]].copy()
    moved["requested_at"] = label["labelled_at"] + pd.Timedelta(days=10)
    later = tmp_path / "later"
    later.mkdir()
    moved.to_parquet(later / "returns.parquet", index=False)
    report_file = tmp_path / "report.json"

    code, _, err = cli("ingest", str(later), "--report", str(report_file))

    assert code == 1 and "nothing was ingested" in err
    groups = {(g["file"], g["column"], g["check"]): g for g in json.loads(report_file.read_text())["groups"]}
    stored_label = groups[("labels (already ingested)", "labelled_at", "time order")]
    assert stored_label["count"] == (labels["return_id"] == label["return_id"]).sum()
    assert label["return_id"] in stored_label["examples"][0]["value"]
    assert ("inspections (already ingested)", "inspected_at", "time order") in groups
    assert warehouse.current().name == ingested["name"]

    earliest = min(labels.loc[labels["return_id"] == label["return_id"], "labelled_at"].min(),
                   inspections.loc[inspections["return_id"] == label["return_id"], "inspected_at"].min())
    order = pd.read_parquet(world_copy / "orders.parquet").set_index("order_id").loc[moved["order_id"].iloc[0]]
    moved["requested_at"] = order["placed_at"] + (earliest - order["placed_at"]) / 2  # still before them
    moved.to_parquet(later / "returns.parquet", index=False)
    code, _, err = cli("ingest", str(later))
    assert code == 0, err
    assert warehouse.current().name != ingested["name"]

    placed_late = order.to_frame().T.rename_axis("order_id").reset_index()
    placed_late["placed_at"] = pd.to_datetime(moved["requested_at"].iloc[0] + pd.Timedelta(days=1), utc=True)
    (later / "returns.parquet").unlink()
    placed_late.astype({c: pd.read_parquet(world_copy / "orders.parquet")[c].dtype for c in placed_late.columns}
                       ).to_parquet(later / "orders.parquet", index=False)
    code, _, err = cli("ingest", str(later), "--report", str(report_file))
    assert code == 1, err
    files = {(g["file"], g["column"]) for g in json.loads(report_file.read_text())["groups"]}
    assert ("returns (already ingested)", "requested_at") in files, files


def test_an_unsigned_integer_column_keeps_every_value_below_two_to_the_63_exactly() -> None:
    """uint64 values are converted without a float in between; nulls stay null, and only the ones beyond int64 are
    refused (a brute-force conversion value by value is the oracle)."""
    import numpy as np

    from fraud_service.data.contract import Column, Kind
    from fraud_service.data.validation import Report, _parse_int

    values = [0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, None, 7]
    raw = pd.Series(values, dtype="UInt64")
    nulls = raw.isna()
    report = Report()
    parsed = _parse_int(Column("items_count", Kind.INT), raw, nulls, pd.Series(range(1, 9)), "returns.parquet", report)
    expected = [None if v is None or v > np.iinfo(np.int64).max else v for v in values]
    assert [None if pd.isna(v) else int(v) for v in parsed] == expected and str(parsed.dtype) == "Int64"
    assert [(p.row, p.value) for g in report.groups.values() for p in g.examples] == [
        (5, str(2**63)), (6, str(2**64 - 1))]


def test_a_parquet_timestamp_column_with_a_year_the_features_cannot_hold_is_out_of_range(world_copy, cli, warehouse):
    """A parquet timestamp column holds microseconds (years 1 to 9999); the features' nanosecond timestamps do not."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    customers = pd.read_parquet(world_copy / "customers.parquet")
    stamps = [dt.datetime(1500, 1, 1) if i == 2 else v.to_pydatetime() for i, v in enumerate(customers["created_at"])]
    table = pa.Table.from_pandas(customers, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("created_at"), "created_at",
                             pa.array(stamps, pa.timestamp("us", tz="UTC")))
    pq.write_table(table, world_copy / "customers.parquet")

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1 and "Traceback" not in err, err
    assert "customers.parquet, row 3, column created_at" in err and "in the years 1678 to 2261" in err, err
    assert warehouse.current() is None


def test_a_timestamp_is_in_range_by_its_year_in_utc_as_in_a_request() -> None:
    """2261-12-31T23:30-01:00 is 2262 in UTC: refused, as the API refuses it; 1677-12-31T23:30-05:00 is 1678 in UTC:
    taken. A date that is not one (9999-99-99) is a wrong type, not out of range."""
    from fraud_service.data.contract import Column, Kind
    from fraud_service.data.validation import Report, _parse_timestamp
    from fraud_service.errors import RequestInvalid
    from fraud_service.scoring.request import _utc

    values = ["2261-12-31T23:30:00-01:00", "1677-12-31T23:30:00-05:00", "9999-99-99 garbage", "9999-12-31",
              "0001-01-01T00:00:00", "2020-01-01T00:00:00Z", None]
    raw = pd.Series(values, dtype=object)
    report = Report()
    parsed = _parse_timestamp(Column("requested_at", Kind.TIMESTAMP), raw, raw.isna(), pd.Series(range(1, 8)),
                              "returns.csv", report)
    assert {g.check: [p.row for p in g.examples] for g in report.groups.values()} == {
        "out of range": [1, 4, 5], "wrong type": [3]}
    assert [None if pd.isna(v) else v.isoformat() for v in parsed] == [
        None, "1678-01-01T04:30:00+00:00", None, None, None, "2020-01-01T00:00:00+00:00", None]
    for text, taken in ((values[0], False), (values[1], True)):  # the request's rule agrees
        try:
            _utc(text)
            assert taken, text
        except (RequestInvalid, ValueError):
            assert not taken, text


@pytest.mark.parametrize("later", [False, True], ids=["first ingest", "later ingest"])
@pytest.mark.parametrize(("table", "key"), [("returns", "return_id"), ("orders", "order_id")])
def test_a_misnamed_key_column_is_named_for_what_it_is(world_copy, cli, warehouse, table, key, later):
    """A key column whose header differs in case or spaces. After a first ingest this crashed (KeyError) in the
    check of stored rows' time order; on a first ingest the missing column hid under thousands of 'dangling
    reference' lines of the tables that refer to it."""
    if later:
        assert cli("ingest", str(world_copy))[0] == 0
    before = warehouse.current()
    misnamed = f"{key.capitalize()} "
    table_to_csv(world_copy, table, lambda frame: frame.rename(columns={key: misnamed}))

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1 and "Traceback" not in err and "failed unexpectedly" not in err, err
    assert f"{table}.csv column {key}: missing required column" in err, err
    assert f"the file has {misnamed!r} (names are exact" in err, err
    assert "dangling reference" not in err, err  # the tables referring to it are not blamed for it
    assert (warehouse.current() and warehouse.current().name) == (before and before.name)


ZONED_FORMS = ["20260314T145913Z", "2026-03-14T14Z", "2026-03-14T14+01:00", "2026-03-14 14:59:13+0100",
               "2026-03-14T1459-0530", "2026-03-14T14:59:13.5+05"]


def test_every_iso_8601_zone_form_is_converted_to_utc_beside_naive_times() -> None:
    """Basic-format and hour-only times with a zone crashed ingest (the zone was not seen, and pandas gave zoned
    times where naive ones were expected); each is converted as Python's own ISO reader converts it, and the naive
    values beside them stay UTC."""
    import datetime as dt

    from fraud_service.data.contract import Column, Kind
    from fraud_service.data.validation import Report, _parse_timestamp

    values = [*ZONED_FORMS, "2026-03-14T14:59:13", "20260314T145913"]
    raw = pd.Series(values, dtype=object)
    report = Report()
    parsed = _parse_timestamp(Column("requested_at", Kind.TIMESTAMP), raw, raw.isna(),
                              pd.Series(range(1, len(values) + 1)), "returns.csv", report)
    assert not report.groups
    oracle = [dt.datetime.fromisoformat(v) for v in values]
    assert [p.to_pydatetime() for p in parsed] == [o.astimezone(dt.UTC) if o.tzinfo else o.replace(tzinfo=dt.UTC)
                                                   for o in oracle]


def test_a_zoned_time_the_pattern_misses_does_not_move_the_naive_ones_beside_it() -> None:
    """pandas applies one value's offset to every naive value parsed in the same call: a zoned value among the naive
    ones (a form the offset pattern does not know) sends them through one at a time."""
    from fraud_service.data.validation import _iso_times

    parsed = _iso_times(pd.Series(["2026-03-14T14:00:00", "2026-03-14T14:00:00.1+05", "not a time"]), zoned=False)
    assert [None if pd.isna(v) else v.isoformat() for v in parsed] == [
        "2026-03-14T14:00:00+00:00", "2026-03-14T09:00:00.100000+00:00", None]


def test_a_semicolon_separated_csv_is_named_for_what_it_is(world_copy, cli, warehouse):
    csv = table_to_csv(world_copy, "returns", lambda frame: frame)
    frame = pd.read_csv(csv)
    frame.to_csv(csv, sep=";", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "one column separated by semicolons; a contract CSV is separated by commas" in err
    assert "missing required column" not in err


def test_docs_list_every_contract_column_with_its_type() -> None:
    """docs/data.md shows the tables and columns the service ingests (the contract's file is not in the
    repository); a column added to contract.py and not to the page fails here."""
    import re

    from fraud_service.data.contract import TABLES

    page = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for table in TABLES.values():
        section = page.split(f"**`{table.name}`**", 1)[1].split("\n\n")[1]  # its heading line, then its table
        listed = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, flags=re.MULTILINE)
        assert listed == [(c.name, c.kind.value) for c in table.columns], table.name
        for column in table.columns:
            for value in column.values:
                assert f"`{value}`" in section, (table.name, column.name, value)
            if column.shape:  # what a value must look like beyond its type (the currency's ISO 4217 code)
                assert re.search(rf"^\| `{column.name}` \|.*ISO 4217", section, flags=re.MULTILINE), column.name


def test_a_dataset_refused_as_a_whole_still_writes_the_report(world_copy, cli, warehouse, tmp_path):
    """--report was written only for row-level problems: a table that cannot be read at all left no report."""
    (world_copy / "returns.parquet").unlink()
    (world_copy / "returns.parquet").mkdir()
    report = tmp_path / "report.json"

    code, _, err = cli("ingest", str(world_copy), "--report", str(report))

    assert code == 1 and "returns.parquet" in err, err
    written = json.loads(report.read_text())
    assert written["problems"] == 1 and written["groups"] == [] and "returns.parquet" in written["refused"]
    assert warehouse.current() is None


def test_integers_written_with_a_sign_spaces_or_a_point_zero_are_taken(world_copy, cli, warehouse):
    sent = pd.read_parquet(world_copy / "order_items.parquet")
    forms = [" {} ", "+{}", "{}.0", "{}.", "{}"]
    table_to_csv(world_copy, "order_items", lambda f: f.assign(
        quantity=[forms[i].format(q) if i < len(forms) else q for i, q in enumerate(f["quantity"])]))

    code, _, err = cli("ingest", str(world_copy))

    assert code == 0, err
    current = warehouse.current()
    assert current is not None
    stored = current.read("order_items", ["order_id", "line_no", "quantity"])
    assert stored is not None
    both = sent.head(len(forms)).merge(stored, on=["order_id", "line_no"], suffixes=("_sent", ""))
    assert len(both) == len(forms)
    assert both["quantity"].tolist() == both["quantity_sent"].tolist()


def test_a_table_pandas_wrote_with_its_key_as_the_index_is_read_with_that_column(world_copy, cli, warehouse):
    """`frame.set_index("customer_id").to_parquet(...)` keeps the column in the file (pyarrow, duckdb and polars all
    list it), but reading it back through pandas made it the index again: "missing required column customer_id"."""
    customers = pd.read_parquet(world_copy / "customers.parquet")
    customers.set_index("customer_id").to_parquet(world_copy / "customers.parquet")
    items = pd.read_parquet(world_copy / "order_items.parquet")
    items.set_index(["order_id", "line_no"]).to_parquet(world_copy / "order_items.parquet")
    orders = pd.read_parquet(world_copy / "orders.parquet")
    orders.iloc[::-1].to_parquet(world_copy / "orders.parquet")  # an unnamed index, out of order: not a column
    returns = pd.read_parquet(world_copy / "returns.parquet")
    returns.set_index("return_id", drop=False).to_parquet(world_copy / "returns.parquet")  # index and column alike

    code, _, err = cli("ingest", str(world_copy))

    assert code == 0, err
    current = warehouse.current()
    assert sorted(current.read("customers")["customer_id"]) == sorted(customers["customer_id"])
    stored = current.read("order_items", ["order_id", "line_no", "sku"])
    assert len(stored) == len(items)
    assert set(zip(stored["order_id"], stored["line_no"], stored["sku"], strict=True)) == set(
        zip(items["order_id"], items["line_no"], items["sku"], strict=True))
    assert sorted(current.read("orders", ["order_id"])["order_id"]) == sorted(orders["order_id"])
    assert sorted(current.read("returns", ["return_id"])["return_id"]) == sorted(returns["return_id"])


def test_ids_as_whole_decimals_or_uuids_are_their_text_and_an_empty_table_typed_by_pandas_is_empty(
        world_copy, cli, warehouse):
    """Other writers' ids: NUMBER(38,0) exports give decimal ids, duckdb and Spark UUIDs; each is read as the text
    everyone writes for it, as an integer id is (both were refused row by row: 398,017 "wrong type" problems). An
    empty optional table made with `pd.DataFrame({"return_id": [], ...})` has float64 columns: nothing to misread, so
    it is taken as empty ("identifiers must be text: a float" refused it)."""
    import decimal
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    items = pd.read_parquet(world_copy / "order_items.parquet")
    skus = {sku: uuid.UUID(int=n + 1) for n, sku in enumerate(sorted(items["sku"].unique()))}
    table = pa.Table.from_pandas(items.drop(columns="sku"), preserve_index=False).append_column(
        "sku", pa.array([skus[s].bytes for s in items["sku"]], pa.uuid()))
    pq.write_table(table, world_copy / "order_items.parquet")
    customers = pd.read_parquet(world_copy / "customers.parquet")
    customers["loyalty_tier"] = None  # a nullable column wholly null, typed object
    customers.to_parquet(world_copy / "customers.parquet", index=False)
    numbered = pd.read_parquet(world_copy / "labels.parquet")
    pd.DataFrame({"return_id": [], "inspected_at": [], "outcome": []}).to_parquet(
        world_copy / "inspections.parquet", index=False)
    stores = pd.read_parquet(world_copy / "returns.parquet")
    stores["store_id"] = [None if s is None else decimal.Decimal(7000 + n) for n, s in enumerate(stores["store_id"])]
    stores.to_parquet(world_copy / "returns.parquet", index=False)

    code, _, err = cli("ingest", str(world_copy))

    assert code == 0, err
    current = warehouse.current()
    stored = current.read("order_items", ["order_id", "line_no", "sku"]).merge(
        items[["order_id", "line_no", "sku"]], on=["order_id", "line_no"], suffixes=("", "_sent"))
    assert len(stored) == len(items)
    assert (stored["sku"] == stored["sku_sent"].map(lambda s: str(skus[s]))).all()
    stored_ids = current.read("returns", ["return_id", "store_id"]).set_index("return_id")["store_id"]
    sent_ids = stores.set_index("return_id")["store_id"].map(lambda d: None if d is None else str(int(d)))
    assert stored_ids.reindex(sent_ids.index).equals(sent_ids)
    assert sent_ids.notna().sum() > 10
    assert current.rows("inspections") == 0 and current.rows("labels") == len(numbered)

    # a decimal with a scale is refused once for the column, as a float one is: 7000.00 is no id anyone writes
    stores["store_id"] = [None if d is None else decimal.Decimal(f"{d}.00") for d in stores["store_id"]]
    stores.to_parquet(world_copy / "returns.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "returns.parquet column store_id: wrong type (the whole column)" in err, err
    assert "decimals with a scale" in err


def test_timestamps_as_dictionary_encoded_text_are_read(world_copy, cli, warehouse):
    """ISO 8601 text stored as a pandas category (a parquet dictionary) was "stored as category", though the same
    text plain, and dictionary-encoded ids and enums, were taken."""
    orders = pd.read_parquet(world_copy / "orders.parquet")
    sent = orders["placed_at"]
    orders["placed_at"] = sent.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00").astype("category")
    orders.to_parquet(world_copy / "orders.parquet", index=False)

    code, _, err = cli("ingest", str(world_copy))

    assert code == 0, err
    stored = warehouse.current().read("orders", ["order_id", "placed_at"]).set_index("order_id")["placed_at"]
    assert stored.reindex(orders["order_id"]).to_numpy().tolist() == pd.to_datetime(sent, utc=True).tolist()


def test_ids_padded_with_spaces_by_a_char_column_are_taken_without_them_and_said(world_copy, cli, warehouse):
    """A SQL export's CHAR(12) pads every id with spaces; refused as a hidden character, it failed the whole export
    (a helper's probe). Taken without the spaces, with a note; a no-break space is still refused, and two ids that
    differ only by padding are one id, so a key written both ways is a duplicate."""
    width = 12
    for table in ("customers", "orders", "returns"):
        frame = pd.read_parquet(world_copy / f"{table}.parquet")
        frame["customer_id"] = frame["customer_id"].str.ljust(width)
        frame.to_parquet(world_copy / f"{table}.parquet", index=False)

    code, out, err = cli("ingest", str(world_copy))

    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 3 and all("spaces at either end, as CHAR(n) columns of SQL exports pad ids" in n
                                   for n in notes), out
    stored = warehouse.current().read("customers", ["customer_id"])["customer_id"]
    sent = pd.read_parquet(world_copy / "customers.parquet")["customer_id"]
    assert sorted(stored) == sorted(sent.str.strip(" ")) and not stored.str.endswith(" ").any()

    customers = pd.read_parquet(world_copy / "customers.parquet")
    twice = pd.concat([customers, customers.head(1).assign(customer_id=customers["customer_id"].iloc[0].strip(),
                                                           loyalty_tier="another tier")])  # not the same row again
    twice.to_parquet(world_copy / "customers.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "duplicate id" in err
    customers.assign(customer_id=customers["customer_id"].str.strip() + "\u00a0").to_parquet(
        world_copy / "customers.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "hidden character" in err and "NO-BREAK SPACE" in err


def test_a_token_shared_by_very_many_customers_is_taken_with_a_warning(world_copy, cli, warehouse):
    """An export that spells a missing device its own way (`unknown`) gives every such order one device, linking
    all their customers: a helper's dataset with `NA` put 5,518 orders on one device, and every return was flagged
    for review. The spellings ingest knows are refused; any other value that many customers share is said."""
    orders = pd.read_parquet(world_copy / "orders.parquet")
    first = orders.drop_duplicates("customer_id").head(120).index  # 120 customers of 600: a hub
    orders.loc[first, "device_token"] = "unknown"
    orders.loc[orders.index[:3], "address_token"] = "warehouse-7"  # three customers: no hub
    orders.to_parquet(world_copy / "orders.parquet", index=False)

    code, out, err = cli("ingest", str(world_copy), "--report", str(world_copy.parent / "first.json"))

    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, out
    held = (orders["device_token"] == "unknown").sum()
    assert f"orders.device_token 'unknown' is on {held:,} orders of 120 customers" in warnings[0]
    assert "write an empty cell" in warnings[0]
    assert warehouse.current().read("orders", ["device_token"])["device_token"].eq("unknown").sum() == held
    [reported] = json.loads((world_copy.parent / "first.json").read_text())["warnings"]
    assert (reported["kind"], reported["value"], reported["customers"], reported["rows"], reported["warned_before"]) \
        == ("hub", "unknown", 120, held, False)

    # the next ingest (one more order) names it in a line, not in the same warning again (a real freight forwarder
    # was warned of on every ingest); the report still lists it, marked
    later = orders.tail(1).assign(order_id="o-one-more")
    pd.concat([orders, later]).to_parquet(world_copy / "orders.parquet", index=False)
    code, out, err = cli("ingest", str(world_copy), "--report", str(world_copy.parent / "second.json"))
    assert code == 0, err
    assert not [line for line in out.splitlines() if line.startswith("warning:")], out
    assert "note: still shared by very many customers, as an earlier ingest warned: orders.device_token 'unknown' " \
           "(120 customers)" in out, out
    [reported] = json.loads((world_copy.parent / "second.json").read_text())["warnings"]
    assert (reported["value"], reported["warned_before"]) == ("unknown", True)


def test_known_hubs_do_not_hide_a_new_one(world_copy, cli, warehouse, monkeypatch):
    """Only the five most shared tokens were looked at, and known real hubs (pickup points) were among them: a sixth,
    new one (an export's `unknown`) was never warned of (a review of the change that remembers warned hubs)."""
    from fraud_service.data import ingest

    monkeypatch.setattr(ingest, "HUB_CUSTOMERS", 20)  # the world has 274 customers with orders, not 600
    orders = pd.read_parquet(world_copy / "orders.parquet")
    customers = list(orders["customer_id"].drop_duplicates())
    assert len(customers) >= 240
    for n in range(5):  # five pickup points of 40 customers each
        orders.loc[orders["customer_id"].isin(customers[40 * n:40 * (n + 1)]), "address_token"] = f"pickup-{n}"
    orders.to_parquet(world_copy / "orders.parquet", index=False)
    code, out, err = cli("ingest", str(world_copy))
    assert code == 0, err
    assert sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("warning:")) == \
        [f"pickup-{n}" for n in range(5)], out

    orders.loc[orders["customer_id"].isin(customers[200:240]), "device_token"] = "unknown"  # then a new one
    orders.to_parquet(world_copy / "orders.parquet", index=False)
    code, out, err = cli("ingest", str(world_copy))
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "orders.device_token 'unknown' is on" in warnings[0], out
    [note] = [line for line in out.splitlines() if line.startswith("note: still shared")]
    assert all(f"'pickup-{n}' (40 customers)" in note for n in range(5)), note


def test_orders_in_more_than_one_currency_are_taken_with_a_warning(world_copy, cli, warehouse):
    table_to_csv(world_copy, "orders", lambda f: _set(3, "currency", "usd ")(_set(4, "currency", " eur")(f)))

    code, out, err = cli("ingest", str(world_copy))

    assert code == 0, err
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "the orders are in 2 currencies" in warning and "USD 1" in warning
    assert "add amounts up as one currency" in warning
    # a code's casing and padding are no reason to refuse a dataset: taken as the code, in capitals
    stored = warehouse.current().read("orders", ["order_id", "currency"])["currency"]
    assert set(stored) == {"EUR", "USD"}


def test_a_numeric_currency_code_in_an_integer_column_is_refused_by_row(world_copy, cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    orders = pq.read_table(world_copy / "orders.parquet")
    codes = pa.array([978] * orders.num_rows, pa.int64())  # ISO 4217's number for EUR
    pq.write_table(orders.set_column(orders.schema.get_field_index("currency"), "currency", codes),
                   world_copy / "orders.parquet")

    code, _, err = cli("ingest", str(world_copy))

    assert code == 1
    assert "orders.parquet, row 1, column currency: got '978'; expected an ISO 4217 currency code" in err


def test_a_clean_ingest_writes_its_report_too(world_copy, cli, warehouse, tmp_path):
    """--report was written only when there were problems: a nightly job reading it after a clean run found the last
    failed run's 600 problems."""
    report = tmp_path / "report.json"
    table_to_csv(world_copy, "orders", _set(3, "order_total", "twelve"))
    assert cli("ingest", str(world_copy), "--report", str(report))[0] == 1
    assert json.loads(report.read_text())["problems"] == 1
    orders = world_copy / "orders.csv"
    orders.write_text(orders.read_text().replace(",twelve,", ",12.5,"))

    code, _, err = cli("ingest", str(world_copy), "--report", str(report))

    assert code == 0, err
    assert json.loads(report.read_text()) == {"problems": 0, "groups": [], "snapshot": warehouse.current().name,
                                              "warnings": []}


def test_a_row_repeated_whole_is_taken_once_with_a_note_and_one_key_with_two_values_is_still_refused(
        world_copy, cli, warehouse):
    """An export that writes a row twice (a label sent by two systems, a join that fans out) refused the whole
    dataset as a duplicate id (a helper's contract probe), though both rows say the same thing. Each is taken once,
    with a note; two rows with one key and different values are still refused, since which one holds is unknown."""
    labels = pd.read_parquet(world_copy / "labels.parquet")
    returns = pd.read_parquet(world_copy / "returns.parquet")
    pd.concat([labels, labels.head(3)], ignore_index=True).to_parquet(world_copy / "labels.parquet", index=False)
    pd.concat([returns, returns.iloc[[4]]], ignore_index=True).to_parquet(world_copy / "returns.parquet", index=False)
    code, out, err = cli("ingest", str(world_copy))
    assert code == 0, err
    first = len(labels) + 1
    assert f"note: labels.parquet: 3 row(s) repeat an earlier row in every column (the first at row {first}); each " \
           "is taken once" in out, out
    assert "note: returns.parquet: 1 row(s) repeat an earlier row in every column" in out, out
    snapshot = warehouse.current()
    assert len(snapshot.read("labels")) == len(labels) and len(snapshot.read("returns")) == len(returns)

    flipped = labels.head(1).assign(label=labels["label"].iloc[0] == "legit" and "fraud" or "legit")
    pd.concat([labels, flipped], ignore_index=True).to_parquet(world_copy / "labels.parquet", index=False)
    returns.to_parquet(world_copy / "returns.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "labels.parquet, row" in err and "duplicate id" in err, err


def test_words_exports_write_for_a_missing_value_are_read_as_missing_where_a_column_may_be_empty(
        world_copy, cli, warehouse):
    """R writes a missing value as NA, SQL dumps as NULL or \\N, spreadsheets as #N/A. The contract's empty cell is
    the same thing: in a nullable timestamp or number they were refused as the wrong type, which refused the whole
    export (406,743 problems for an R-written dataset in a helper's probe), and in a token they were refused, since
    taken as text every such order would share one device. They are read as missing, with a note per column; the
    same word in a column that may not be empty is still refused, and free text keeps it as written."""
    def orders(frame: pd.DataFrame) -> pd.DataFrame:
        for row, column, word in ((1, "delivered_at", "NA"), (2, "delivered_at", "NULL"), (3, "device_token", "NA"),
                                  (4, "device_token", "\uff2e\uff35\uff2c\uff2c"), (5, "address_token", "#N/A"),
                                  (6, "address_token", "\\N")):
            frame.loc[row - 1, column] = word
        return frame

    def items(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "list_price"] = "null"
        return frame

    def customers(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "loyalty_tier"] = "None"
        return frame

    sent = pd.read_parquet(world_copy / "orders.parquet")
    first_customer = pd.read_parquet(world_copy / "customers.parquet")["customer_id"].iloc[0]
    table_to_csv(world_copy, "orders", orders)
    table_to_csv(world_copy, "order_items", items)
    table_to_csv(world_copy, "customers", customers)
    code, out, err = cli("ingest", str(world_copy))
    assert code == 0, err
    for note in ("orders.csv column delivered_at: 2 value(s) written as 'NA', 'NULL' read as missing",
                 "orders.csv column device_token: 2 value(s) written as 'NA', 'ＮＵＬＬ' read as missing",
                 "orders.csv column address_token: 2 value(s) written as '#N/A', '\\\\N' read as missing",
                 "order_items.csv column list_price: 1 value(s) written as 'null' read as missing"):
        assert f"note: {note}" in out, out
    snapshot = warehouse.current()
    stored = snapshot.read("orders").set_index("order_id").loc[sent["order_id"].iloc[:6]]
    assert stored["delivered_at"].iloc[:2].isna().all() and stored["device_token"].iloc[2:4].isna().all()
    assert stored["address_token"].iloc[4:6].isna().all()
    assert not stored["device_token"].isin(["NA", "NULL"]).any()
    tiers = snapshot.read("customers").set_index("customer_id")["loyalty_tier"]
    assert tiers[first_customer] == "None"  # free text, as written

    table_to_csv(world_copy, "returns", _set(3, "return_type", "NA"))  # may not be empty: refused
    code, _, err = cli("ingest", str(world_copy))
    assert code == 1 and "returns.csv, row 3, column return_type" in err, err


def test_categories_and_reasons_are_stored_in_small_letters_as_the_api_takes_them(world_copy, cli, warehouse):
    """A retailer's `Apparel` and `Changed_Mind` are the contract's `apparel` and `changed_mind`: stored as written,
    they left the features that match those names at zero (a helper's probe moved scores by up to 0.088)."""
    items = pd.read_parquet(world_copy / "order_items.parquet")
    returns = pd.read_parquet(world_copy / "returns.parquet")
    items.assign(category=" " + items["category"].str.title()).to_parquet(world_copy / "order_items.parquet",
                                                                           index=False)
    returns.assign(reason=returns["reason"].str.upper()).to_parquet(world_copy / "returns.parquet", index=False)
    code, _, err = cli("ingest", str(world_copy))
    assert code == 0, err
    snapshot = warehouse.current()
    assert sorted(snapshot.read("order_items")["category"].unique()) == sorted(items["category"].unique())
    stored = snapshot.read("returns").set_index("return_id")["reason"]
    assert stored.reindex(returns["return_id"]).tolist() == returns["reason"].tolist()
