"""Ingest a dataset directory in the data contract into the warehouse: validate all, then write all.

Nothing is written unless every table of the dataset passes every check; re-ingesting the
same rows changes nothing (same keys, same values), and rows of a later period are added.
A row whose key is already stored with other values replaces it (a corrected order, a
revised delivery time); the summary counts those as `updated`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_service.data.contract import TABLES, Kind, Table
from fraud_service.data.files import not_regular
from fraud_service.data.validation import (
    EXAMPLES_PER_GROUP,
    ROW,
    Report,
    check_duplicates,
    check_not_before,
    check_reference,
    check_row_order,
    parse_table,
    without_repeats,
)
from fraud_service.data.warehouse import Snapshot, Warehouse
from fraud_service.errors import DatasetError, ValidationFailed
from fraud_service.progress import SILENT, Progress

CSV_CHUNK_ROWS = 250_000

ARROW_TYPES = {
    Kind.STR: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.DECIMAL: pa.float64(),
    Kind.INT: pa.int64(),
    Kind.BOOL: pa.bool_(),
}


def sql_string(path: Path) -> str:
    """A path as a quoted SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def arrow_schema(table: Table) -> pa.Schema:
    """The arrow schema every stored version of `table` has."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in table.columns])


@dataclass
class TableResult:
    """What ingesting one table did."""

    file: str
    rows: int
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0  # stored rows of what the dataset sends whole (`Table.whole_by`) that it no longer holds
    total_after: int = 0


@dataclass(frozen=True)
class Hub:
    """A token (address, device, card or refund destination) on the orders or returns of very many customers."""

    table: str
    column: str
    value: str
    customers: int
    rows: int
    warned_before: bool = False
    """An earlier ingest into this warehouse warned of it already (`WARNED`)."""

    @property
    def key(self) -> str:
        return f"{self.table}.{self.column}={self.value}"


HUB_LIMIT = 50
"""At most this many hubs are looked for, most shared first: five known real ones must not hide a new one."""
WARNED = "hubs-warned.json"
"""The warehouse's file of the hubs an ingest has warned of (their `key`s): the next ingest names them in one line,
and warns in full only of new ones (a real freight forwarder was warned of on every ingest, in the same words)."""
HUB_CUSTOMERS = 100
HUB_SHARE = 0.01
"""A token is said to be a hub when at least HUB_CUSTOMERS customers, and HUB_SHARE of all, share it: often a
missing value an export spelled its own way (`unknown`, `-`, `0`), which links every customer who has it; sometimes
a real shared place (a freight forwarder, a pickup point)."""
TOKENS = (("orders", "address_token"), ("orders", "device_token"), ("orders", "payment_token"),
          ("returns", "refund_token"))


@dataclass
class IngestResult:
    """What one ingest did; `snapshot` is None when nothing changed."""

    tables: dict[str, TableResult] = field(default_factory=dict)
    snapshot: str | None = None
    previous: str | None = None
    currencies: dict[str, int] = field(default_factory=dict)
    """The warehouse's orders by currency after this ingest (when it brought orders)."""
    hubs: list[Hub] = field(default_factory=list)
    """Tokens the warehouse shares among very many customers after this ingest (`hubs`)."""
    notes: list[str] = field(default_factory=list)
    """Values taken, but not quite as written (`Report.notes`)."""

    @property
    def changed(self) -> bool:
        return self.snapshot is not None


def find_tables(directory: Path) -> dict[str, Path]:
    """Map contract table names to their files in `directory` (NAME.parquet or NAME.csv)."""
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory (expected a dataset directory of contract tables)")
    found: dict[str, Path] = {}
    wanted = {f"{name}.{suffix}" for name in TABLES for suffix in ("parquet", "csv")}
    misnamed = sorted(p.name for p in directory.iterdir() if p.name.lower() in wanted and p.name not in wanted)
    if misnamed:  # RETURNS.csv would otherwise be skipped without a word
        raise DatasetError(f"{directory}: {', '.join(misnamed)}: table files are named in lower case "
                           f"({', '.join(n.lower() for n in misnamed)})")
    for name in TABLES:
        candidates = [p for p in (directory / f"{name}.parquet", directory / f"{name}.csv") if os.path.lexists(p)]
        for path in candidates:
            _regular_file(path)
        if len(candidates) > 1:
            raise DatasetError(
                f"{directory}: both {name}.parquet and {name}.csv exist; keep one so it is clear which to ingest"
            )
        if candidates:
            found[name] = candidates[0]
    if not found:
        expected = ", ".join(f"{n}.parquet|csv" for n in TABLES)
        raise DatasetError(f"{directory}: no contract tables found (expected some of: {expected})")
    return found


def _regular_file(path: Path) -> None:
    """DatasetError unless PATH is a regular file itself: a symbolic link (dangling, or reaching outside the
    dataset) or a special file (a FIFO, /dev/zero) is refused by name, never followed or silently skipped."""
    problem = not_regular(path)
    if problem is not None and path.is_dir() and not path.is_symlink():
        parts = len(list(path.glob("part-*")))
        what = f" of {parts} part files (as Spark writes a table)" if parts else ""
        raise DatasetError(f"{path}: is a folder{what}; "
                           "a table is one file (with Spark: `.coalesce(1)`, then move the part file there, or "
                           "`toPandas().to_parquet(...)`; with duckdb: COPY ... TO 'NAME.parquet')")
    if problem is not None:
        advice = ": copy the file in" if problem.startswith("is a symbolic link") else ""
        raise DatasetError(f"{path}: {problem}; only regular files inside the dataset directory are read{advice}")


def _refuse_nul(path: Path) -> None:
    """DatasetError naming the line of the first NUL byte in a CSV file (CSV readers cut the field there)."""
    line, chunk_size = 1, 1 << 20
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            at = chunk.find(b"\x00")
            if at >= 0:
                line += chunk.count(b"\n", 0, at)
                raise DatasetError(f"{path}: line {line} holds a NUL byte; contract files are text without NUL "
                                   "characters (nothing was ingested)")
            line += chunk.count(b"\n")


def _refuse_bad_header(path: Path) -> None:
    """A CSV header naming a column twice is refused (pandas would rename the second `return_id.1` and drop it), and
    one of a single column holding semicolons or tabs is named for what it is (each column was "missing")."""
    import csv

    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        mark = "semicolons" if ";" in header[0] else "tabs"
        raise DatasetError(f"{path}: line 1 (the header) is one column separated by {mark}; a contract CSV is "
                           "separated by commas (nothing was ingested)")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DatasetError(f"{path}: line 1 (the header) names {', '.join(map(repr, twice))} more than once; each "
                           "column once (nothing was ingested)")


def _first_non_utf8(path: Path) -> str | None:
    """Where PATH first stops being UTF-8: its line, and the byte."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}, byte {exc.start + 1} (0x{line[exc.start]:02x}) is not UTF-8"
    return None


def read_raw(path: Path, progress: Progress = SILENT) -> pd.DataFrame:
    """Read one table file as it is (CSV as text), adding each row's 1-based position as ROW."""
    try:
        if path.suffix == ".parquet":
            frame = pq.read_table(path).to_pandas()
            named = [name for name in frame.index.names if name is not None and name not in frame.columns]
            if named:  # pandas wrote its index with the file (`set_index("customer_id").to_parquet`): a column here
                frame = frame.reset_index(named)
            frame = frame.reset_index(drop=True)  # rows are numbered by their position, whatever index pandas kept
        else:
            _refuse_nul(path)
            _refuse_bad_header(path)
            chunks = []
            reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                                 chunksize=CSV_CHUNK_ROWS, encoding="utf-8")
            rows = 0
            for chunk in reader:
                chunks.append(chunk)
                rows += len(chunk)
                if rows >= CSV_CHUNK_ROWS:
                    progress.info(f"  {path.name}: {rows:,} rows read")
            frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {_first_non_utf8(path) or exc}; contract CSV files are UTF-8 (save it as "
                           "UTF-8; nothing was ingested)") from exc
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc
    frame[ROW] = range(1, len(frame) + 1)
    return frame


def validate(files: dict[str, Path], base: Snapshot | None,
             progress: Progress = SILENT) -> tuple[dict[str, pd.DataFrame], Report]:
    """Parse and check every table; returns typed frames and the (possibly empty) report."""
    report = Report()
    typed: dict[str, pd.DataFrame] = {}
    for name, path in files.items():
        with progress.step(f"reading and checking {path.name}"):
            raw = read_raw(path, progress)
            frame = without_repeats(TABLES[name], parse_table(TABLES[name], raw, path.name, report), path.name, report)
            check_duplicates(TABLES[name], frame, path.name, report)
            check_row_order(TABLES[name], frame, path.name, report)
            typed[name] = frame
    # a table's stored times, read once: the dataset's rows and the stored rows that refer to it both need them
    known_times = functools.cache(lambda target, key, time: _known_times(target, key, time, typed, base))
    with progress.step("checking references and time order across tables"):
        for name, frame in typed.items():
            table = TABLES[name]
            file = files[name].name
            for ref in table.references:
                if ref.target in typed and ref.target_column not in typed[ref.target].columns:
                    continue  # the target's key column is missing (reported): every reference would dangle
                known = _known_keys(ref.target, ref.target_column, typed, base)
                check_reference(file, frame, ref.column, known, ref.target, report)
            for rule in table.time_orders:
                times = known_times(rule.target, rule.target_key, rule.target_time)
                check_not_before(file, frame, rule.column, rule.via, times, rule.target,
                                 rule.target_time, report)
        if base is not None:
            _check_stored_times(typed, base, report, known_times)
            _check_identity(typed, base, files, report)
    return typed, report


IDENTITY = {"orders": ("order_id", ("customer_id",)), "returns": ("return_id", ("order_id", "customer_id"))}
"""What a stored row is about, which a later dataset may not change: an id names one order (of one customer) and
one return (of one order, by one customer) for good. Labels, inspections and evidence hang on these ids, so a
dataset that moves them is another world's ids colliding with these, or a mistake."""


def _check_identity(typed: dict[str, pd.DataFrame], base: Snapshot, files: dict[str, Path], report: Report) -> None:
    """Refuse rows that give a stored order another customer, or a stored return another order or customer."""
    for name, (key, columns) in IDENTITY.items():
        if name not in typed or not {key, *columns} <= set(typed[name].columns):
            continue
        new = typed[name]
        stored = base.read(name, [key, *columns])
        if stored is None or stored.empty:
            continue
        joined = new[[ROW, key, *columns]].merge(stored, on=key, how="inner", suffixes=("", "_stored"))
        for column in columns:
            moved = joined[joined[column].notna() & (joined[column] != joined[f"{column}_stored"])]
            for row, value, ident, was in moved[[ROW, column, key, f"{column}_stored"]].head(
                    EXAMPLES_PER_GROUP).itertuples(index=False):
                report.add_rows(files[name].name, column, "changes a stored row",
                                f"{was!r}, as already ingested for {key} {ident!r} (another {name[:-1]} needs a new "
                                f"{key})", [row], [value], 1)
            report.add_rows(files[name].name, column, "changes a stored row", "", [], [],
                            max(0, len(moved) - EXAMPLES_PER_GROUP))


def _check_stored_times(typed: dict[str, pd.DataFrame], base: Snapshot, report: Report,
                        known_times: Callable[[str, str, str], pd.Series]) -> None:
    """The rows already ingested that refer to rows this dataset changes keep their time order: a return moved
    later than its stored label's labelled_at (or an order placed after its stored returns) is refused, as it would
    be if both came in one dataset. A stored row the dataset replaces is checked as sent. Problems name the stored
    table as `TABLE (already ingested)` and its row in the current snapshot."""
    for name, table in TABLES.items():
        for rule in table.time_orders:
            if rule.target not in typed or not {rule.target_key, rule.target_time} <= set(typed[rule.target].columns):
                continue  # a missing column is reported already
            old = base.read(name, list(dict.fromkeys([*table.key, rule.column, rule.via])))
            if old is None or old.empty:
                continue
            old[ROW] = range(1, len(old) + 1)
            if name in typed and set(table.key) <= set(typed[name].columns):
                replaced = pd.MultiIndex.from_frame(typed[name][list(table.key)].astype(object))
                old = old[~pd.MultiIndex.from_frame(old[list(table.key)].astype(object)).isin(replaced)]
            old = old[old[rule.via].isin(typed[rule.target][rule.target_key])]
            if old.empty:
                continue
            times = known_times(rule.target, rule.target_key, rule.target_time)
            check_not_before(f"{name} (already ingested)", old, rule.column, rule.via, times, rule.target,
                             rule.target_time, report)


def _known_keys(target: str, column: str, typed: dict[str, pd.DataFrame],
                base: Snapshot | None) -> pd.Index:
    parts = []
    if target in typed and column in typed[target].columns:
        parts.append(typed[target][column].dropna())
    if base is not None:
        old = base.read(target, [column])
        if old is not None:
            parts.append(old[column])
    return pd.Index(pd.concat(parts, ignore_index=True).unique()) if parts else pd.Index([])


def _known_times(target: str, key: str, time: str, typed: dict[str, pd.DataFrame],
                 base: Snapshot | None) -> pd.Series:
    parts = []
    if base is not None:
        old = base.read(target, [key, time])
        if old is not None:
            parts.append(old)
    if target in typed and {key, time} <= set(typed[target].columns):
        parts.append(typed[target][[key, time]])
    if not parts:
        return pd.Series(dtype="datetime64[us, UTC]")
    both = pd.concat(parts, ignore_index=True).dropna(subset=[key])
    # the new dataset's value wins, as it will once written
    return both.drop_duplicates(key, keep="last").set_index(key)[time]


def ingest(directory: Path, warehouse: Warehouse, progress: Progress = SILENT) -> IngestResult:
    """Validate the dataset in `directory`; if it is clean, merge it into a new warehouse snapshot.

    Raises ValidationFailed (with the report) and writes nothing when any check fails.
    """
    files = find_tables(directory)
    progress.info("found " + ", ".join(p.name for p in files.values()) + f" in {directory}")
    with warehouse.writer() as writer:
        typed, report = validate(files, writer.base, progress)
        if report:
            raise ValidationFailed(
                report, f"{directory}: {report.count} problem(s); nothing was ingested\n{report.render()}"
            )
        result = IngestResult(previous=writer.base.name if writer.base else None, notes=report.notes)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        # if the merge spills, it spills beside the warehouse, not into the caller's directory
        con.execute(f"SET temp_directory = {sql_string(warehouse.root / '.spill')}")
        for name, frame in typed.items():
            whole_by = TABLES[name].whole_by
            if whole_by is not None:  # the values re-sent whole: orders the dataset brings with their lines
                parent = next(t for t in TABLES.values() if t.key == (whole_by,))
                sent = typed[parent.name][whole_by].dropna().astype(str).unique().tolist() if parent.name in typed \
                    else []
                con.register("resent", pa.table({whole_by: pa.array(sent, pa.string())}))
            with progress.step(f"merging {name} ({len(frame):,} rows)"):
                result.tables[name] = _merge_table(con, TABLES[name], frame, files[name].name,
                                                   writer.base, writer.path_for(name))
        con.close()
        if not any(t.added or t.updated or t.removed for t in result.tables.values()):
            progress.info("nothing new: every row is already ingested with the same values")
            return result
        snapshot = writer.commit({"source": str(directory.resolve()),
                                  "ingest": {n: t.__dict__ for n, t in result.tables.items()}})
        result.snapshot = snapshot.name
        progress.info(f"snapshot {snapshot.name} is now current")
        result.currencies = _currencies(snapshot) if "orders" in result.tables else {}
        if {"orders", "returns"} & set(result.tables):
            try:  # a warning only: the snapshot is current already, and a failure here must not say otherwise
                result.hubs = _marked(hubs(snapshot, HUB_LIMIT, spill=warehouse.root / ".spill"), warehouse.root)
            except (duckdb.Error, OSError) as exc:
                progress.info(f"could not look for tokens shared by very many customers: {exc}")
        return result


def hubs(snapshot: Snapshot, limit: int = 5, spill: Path | None = None) -> list[Hub]:
    """The tokens of SNAPSHOT shared by at least HUB_CUSTOMERS customers and HUB_SHARE of all, most shared first
    (at most LIMIT); DuckDB spills to SPILL, if it must."""
    customers = snapshot.rows("customers")
    least = max(HUB_CUSTOMERS, math.ceil(HUB_SHARE * customers))
    parts = [f"SELECT '{table}' AS t, '{column}' AS c, {column} AS v, count(DISTINCT customer_id) AS k, count(*) AS n "
             f"FROM read_parquet({sql_string(path)}) WHERE {column} IS NOT NULL GROUP BY {column} "
             f"HAVING count(DISTINCT customer_id) >= {least}"
             for table, column in TOKENS if (path := snapshot.table_path(table)) is not None]
    if not parts:
        return []
    con = duckdb.connect()
    try:
        if spill is not None:
            con.execute(f"SET temp_directory = {sql_string(spill)}")
        rows = con.execute(" UNION ALL ".join(parts) + f" ORDER BY k DESC, t, c, v LIMIT {int(limit)}").fetchall()
    finally:
        con.close()
    return [Hub(str(t), str(c), str(v), int(k), int(n)) for t, c, v, k, n in rows]


def _warned(root: Path) -> set[str]:
    """The hubs an ingest into the warehouse at ROOT has warned of (none when the list is missing or unreadable:
    each is warned of again rather than none)."""
    try:
        listed = json.loads((root / WARNED).read_text())
    except (OSError, ValueError):
        return set()
    return {key for key in listed if isinstance(key, str)} if isinstance(listed, list) else set()


def _marked(found: list[Hub], root: Path) -> list[Hub]:
    """FOUND, each marked when an earlier ingest into the warehouse at ROOT warned of it."""
    warned = _warned(root)
    return [dataclasses.replace(hub, warned_before=hub.key in warned) for hub in found]


def remember_hubs(found: list[Hub], warehouse: Warehouse) -> None:
    """Record FOUND as warned of (`ingest --report` or its terminal showed them), with those warned of before: written
    whole under another name, then renamed, so a crash leaves the old list or the new one. OSError when it cannot."""
    path = warehouse.root / WARNED
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        staged.write_text(json.dumps(sorted(_warned(warehouse.root) | {hub.key for hub in found})))
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _currencies(snapshot: Snapshot) -> dict[str, int]:
    """The orders of SNAPSHOT by currency, most first."""
    orders = snapshot.read("orders", ["currency"])
    if orders is None:
        return {}
    return {str(k): int(v) for k, v in orders["currency"].value_counts().items()}


def _merge_table(con: duckdb.DuckDBPyConnection, table: Table, frame: pd.DataFrame, file: str,
                 base: Snapshot | None, out: Path) -> TableResult:
    new = pa.Table.from_pandas(frame[table.column_names], schema=arrow_schema(table),
                               preserve_index=False)
    con.register("new_rows", new)
    result = TableResult(file=file, rows=new.num_rows)
    old_path = base.table_path(table.name) if base is not None else None
    keys = ", ".join(table.key)
    order = ", ".join(([table.time_column] if table.time_column else []) + list(table.key))
    if old_path is None:
        result.added = new.num_rows
        source = "SELECT * FROM new_rows"
    else:
        old = f"read_parquet({sql_string(old_path)})"
        result.added = _scalar(con, f"SELECT count(*) FROM new_rows ANTI JOIN {old} USING ({keys})")
        same = " AND ".join(f"n.{c} IS NOT DISTINCT FROM o.{c}" for c in table.column_names)
        result.unchanged = _scalar(
            con, f"SELECT count(*) FROM new_rows n JOIN {old} o USING ({keys}) WHERE {same}")
        result.updated = result.rows - result.added - result.unchanged
        if table.whole_by:  # an order sent again with its lines: its stored lines go, the dataset's take their place
            whole = table.whole_by
            groups = f"(SELECT DISTINCT {whole} FROM new_rows SEMI JOIN resent USING ({whole}))"
            result.removed = _scalar(con, f"SELECT count(*) FROM {old} SEMI JOIN {groups} USING ({whole}) "
                                          f"ANTI JOIN new_rows USING ({keys})")
            kept = f"SELECT * FROM {old} ANTI JOIN {groups} USING ({whole}) ANTI JOIN new_rows USING ({keys})"
            source = f"SELECT * FROM new_rows UNION ALL BY NAME {kept}"
        else:
            source = (
                f"SELECT * EXCLUDE (_prio) FROM (SELECT *, 0 AS _prio FROM new_rows "
                f"UNION ALL BY NAME SELECT *, 1 AS _prio FROM {old}) "
                f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _prio) = 1"
            )
    if result.added or result.updated or result.removed:
        columns = ", ".join(table.column_names)
        con.execute(f"COPY (SELECT {columns} FROM ({source}) ORDER BY {order}) "
                    f"TO {sql_string(out)} (FORMAT parquet, COMPRESSION zstd)").fetchall()
        result.total_after = pq.ParquetFile(out).metadata.num_rows
    else:
        result.total_after = base.rows(table.name) if base is not None else 0
    con.unregister("new_rows")
    return result


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()
    return int(rows[0][0])
