"""The feature pipeline: contract tables in, timestamped aggregate rows per entity out (DuckDB).

Time rule. A fact with timestamp e (an order's placed_at, a return's requested_at, a label's
labelled_at, an inspection's inspected_at) is known from e + 1 microsecond on, so a return
requested at t sees exactly the facts with e < t (the contract's "strictly before").

Windows. "In the last w days as of t" means e in [t - w, t): the fact enters at e + 1us and
leaves at e + w + 1us. Every row written here is stamped at a moment where some value
changes: each fact's arrival, and each fact's departure from each window. The latest row at
or before t therefore carries the exact values as of t, so Feast's point-in-time join (the
latest row with event_timestamp <= t, no TTL) returns exact rolling windows, not values as
of the last event.

Labels: the latest (labelled_at, source) of a return wins; a revision moves one count down
and another up at the revision's time. All label and inspection counts only see what was
known at the row's time.

This module imports nothing of the project: it takes parquet paths and writes parquet files.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

WINDOWS = (7, 30, 90, 365)
BAD_OUTCOMES = ("worn", "wrong_item", "empty_box", "missing_parts")
NO_KEY = "__none__"
"""Key used at read time for an absent token; no feature row ever carries it."""


@dataclass(frozen=True)
class Metric:
    """One feature: an aggregate of a contribution column, over a window or over all time."""

    name: str
    column: str
    days: int | None = None
    agg: str = "sum"

    @property
    def zero_when_unseen(self) -> bool:
        """A key with no rows yet (a brand-new token) has 0 here; a median or sign-up time stays missing."""
        return self.agg == "sum"

    @property
    def is_count(self) -> bool:
        """Counts are integers; amounts, medians and epochs are floats."""
        return self.column.startswith(("n_", "d_"))

    def sql(self) -> str:
        """The aggregate over the layer's window `w`."""
        if self.agg == "median":  # no returns in the window: no median (NULL), not 0
            return f"median({self.column}) OVER w AS {self.name}"
        kind = "BIGINT" if self.is_count else "DOUBLE"
        return f"CAST(coalesce({self.agg}({self.column}) OVER w, 0) AS {kind}) AS {self.name}"


@dataclass(frozen=True)
class EntitySpec:
    """An entity's key, feature prefix, fact SQL and metrics."""

    name: str
    key: str
    events: str
    metrics: tuple[Metric, ...]

    @property
    def windows(self) -> tuple[int, ...]:
        return tuple(sorted({m.days for m in self.metrics if m.days is not None}))

    @property
    def feature_names(self) -> list[str]:
        return [m.name for m in self.metrics]


# --- facts ---------------------------------------------------------------------------------
# Each fact query yields: key, ts (when it became known) and contribution columns; columns a
# fact does not have are NULL. UNION ALL BY NAME fills them.

_RETURN_FACTS = """
SELECT r.*, o.delivered_at, o.address_token, o.payment_token, o.device_token,
       r.customer_id AS returner
FROM returns r JOIN orders o USING (order_id)
"""

_LABEL_DELTAS = """
SELECT return_id, labelled_at + INTERVAL 1 MICROSECOND AS ts, label,
       lag(label) OVER (PARTITION BY return_id ORDER BY labelled_at, source) AS previous
FROM labels
"""


def _label_delta(kind: str) -> str:
    return f"(CASE WHEN l.label = '{kind}' THEN 1 ELSE 0 END - CASE WHEN l.previous = '{kind}' THEN 1 ELSE 0 END)"


def _customer_events() -> str:
    bad = ", ".join(f"'{o}'" for o in BAD_OUTCOMES)
    return f"""
SELECT customer_id AS key, created_at + INTERVAL 1 MICROSECOND AS ts,
       epoch(created_at) AS created_epoch
FROM customers
UNION ALL BY NAME
SELECT customer_id AS key, placed_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_order, order_total AS order_value
FROM orders
UNION ALL BY NAME
SELECT returner AS key, requested_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_return,
       refund_amount AS refund,
       (return_type = 'item_not_received')::INT AS n_inr,
       (return_type IN ('damaged_on_arrival', 'wrong_item'))::INT AS n_claim,
       (channel = 'returnless')::INT AS n_returnless,
       (NOT has_receipt)::INT AS n_no_receipt,
       (reason IN ('size', 'changed_mind'))::INT AS n_size_cm,
       (refund_method IN ('gift_card', 'other_payment'))::INT AS n_refund_elsewhere,
       CASE WHEN delivered_at IS NOT NULL AND delivered_at <= requested_at
            THEN epoch(requested_at - delivered_at) / 86400.0 END AS days_to_return
FROM ret
UNION ALL BY NAME
SELECT ret.returner AS key, i.inspected_at + INTERVAL 1 MICROSECOND AS ts,
       (i.outcome IN ({bad}))::INT AS n_bad_inspection, (i.outcome = 'ok')::INT AS n_ok_inspection
FROM inspections i JOIN ret USING (return_id)
UNION ALL BY NAME
SELECT ret.returner AS key, l.ts, {_label_delta('fraud')} AS d_fraud, {_label_delta('abuse')} AS d_abuse,
       {_label_delta('legit')} AS d_legit
FROM label_deltas l JOIN ret USING (return_id)
"""


def _failed_inspections(token: str) -> str:
    """Failed inspections of the returns that used TOKEN, each known from its inspected_at + 1us.

    Only failures are facts here: a passed inspection changes no token count, so it writes no change point.
    """
    bad = ", ".join(f"'{o}'" for o in BAD_OUTCOMES)
    return f"""
SELECT ret.{token} AS key, i.inspected_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_bad_inspection
FROM inspections i JOIN ret USING (return_id) WHERE ret.{token} IS NOT NULL AND i.outcome IN ({bad})
"""


def _token_events(token: str) -> str:
    bad = f"{_label_delta('fraud')} + {_label_delta('abuse')}"
    return f"""
SELECT {token} AS key, placed_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_order,
       (row_number() OVER (PARTITION BY {token}, customer_id ORDER BY placed_at, order_id) = 1)::INT AS n_new_customer
FROM orders WHERE {token} IS NOT NULL
UNION ALL BY NAME
SELECT {token} AS key, requested_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_return, refund_amount AS refund,
       (return_type = 'item_not_received')::INT AS n_inr
FROM ret WHERE {token} IS NOT NULL
UNION ALL BY NAME
SELECT ret.{token} AS key, l.ts, {bad} AS d_bad
FROM label_deltas l JOIN ret USING (return_id) WHERE ret.{token} IS NOT NULL
UNION ALL BY NAME{_failed_inspections(token)}"""


def _refund_token_events() -> str:
    bad = f"{_label_delta('fraud')} + {_label_delta('abuse')}"
    return f"""
SELECT refund_token AS key, requested_at + INTERVAL 1 MICROSECOND AS ts, 1 AS n_return, refund_amount AS refund,
       (return_type = 'item_not_received')::INT AS n_inr,
       (row_number() OVER (PARTITION BY refund_token, returner ORDER BY requested_at, return_id) = 1)::INT
           AS n_new_customer
FROM ret WHERE refund_token IS NOT NULL
UNION ALL BY NAME
SELECT ret.refund_token AS key, l.ts, {bad} AS d_bad
FROM label_deltas l JOIN ret USING (return_id) WHERE ret.refund_token IS NOT NULL
UNION ALL BY NAME{_failed_inspections("refund_token")}"""


def _linked_metrics(prefix: str, with_orders: bool) -> tuple[Metric, ...]:
    metrics = [
        Metric(f"{prefix}_customers", "n_new_customer"),
        Metric(f"{prefix}_returns_90d", "n_return", 90),
        Metric(f"{prefix}_returns_365d", "n_return", 365),
        Metric(f"{prefix}_inr_365d", "n_inr", 365),
        Metric(f"{prefix}_refund_365d", "refund", 365),
        Metric(f"{prefix}_bad_labels", "d_bad"),
        Metric(f"{prefix}_bad_inspections", "n_bad_inspection"),
    ]
    if with_orders:
        metrics.insert(1, Metric(f"{prefix}_orders_365d", "n_order", 365))
    return tuple(metrics)


def _customer_metrics() -> tuple[Metric, ...]:
    metrics = [Metric("cust_created_epoch", "created_epoch", agg="max")]
    for days in WINDOWS:
        metrics += [
            Metric(f"cust_orders_{days}d", "n_order", days),
            Metric(f"cust_returns_{days}d", "n_return", days),
            Metric(f"cust_refund_{days}d", "refund", days),
        ]
    metrics += [
        Metric("cust_order_value_365d", "order_value", 365),
        Metric("cust_inr_30d", "n_inr", 30),
        Metric("cust_inr_90d", "n_inr", 90),
        Metric("cust_inr_365d", "n_inr", 365),
        Metric("cust_claims_90d", "n_claim", 90),
        Metric("cust_claims_365d", "n_claim", 365),
        Metric("cust_returnless_90d", "n_returnless", 90),
        Metric("cust_returnless_365d", "n_returnless", 365),
        Metric("cust_no_receipt_365d", "n_no_receipt", 365),
        Metric("cust_size_cm_365d", "n_size_cm", 365),
        # refunds sent to a gift card or another instrument than the one that paid: a habit, or a break from one
        Metric("cust_refund_elsewhere_365d", "n_refund_elsewhere", 365),
        Metric("cust_median_days_to_return_365d", "days_to_return", 365, agg="median"),
        Metric("cust_bad_inspections_365d", "n_bad_inspection", 365),
        Metric("cust_bad_inspections", "n_bad_inspection"),
        # returns whose goods came back as sold: the mark of an honest frequent returner
        Metric("cust_passed_inspections_365d", "n_ok_inspection", 365),
        Metric("cust_passed_inspections", "n_ok_inspection"),
        Metric("cust_fraud_labels", "d_fraud"),
        Metric("cust_abuse_labels", "d_abuse"),
        Metric("cust_legit_labels", "d_legit"),
    ]
    return tuple(metrics)


ENTITIES: dict[str, EntitySpec] = {
    "customer": EntitySpec("customer", "customer_id", _customer_events(), _customer_metrics()),
    "address": EntitySpec("address", "address_token", _token_events("address_token"), _linked_metrics("addr", True)),
    "payment": EntitySpec("payment", "payment_token", _token_events("payment_token"), _linked_metrics("pay", True)),
    "device": EntitySpec("device", "device_token", _token_events("device_token"), _linked_metrics("dev", True)),
    "refund": EntitySpec("refund", "refund_token", _refund_token_events(), _linked_metrics("rfd", False)),
}


US_PER_DAY = 86_400_000_000
BUCKET_FACTS = 1_500_000
"""Facts per key bucket in one pass: keeps the window layers in memory (about 2 GB) on big histories."""

MEMBERSHIP_SQL = {
    "address": "SELECT address_token AS token, customer_id, min(placed_at) AS seen FROM orders "
               "WHERE address_token IS NOT NULL GROUP BY ALL",
    "payment": "SELECT payment_token AS token, customer_id, min(placed_at) AS seen FROM orders "
               "WHERE payment_token IS NOT NULL GROUP BY ALL",
    "device": "SELECT device_token AS token, customer_id, min(placed_at) AS seen FROM orders "
              "WHERE device_token IS NOT NULL GROUP BY ALL",
    "refund": "SELECT refund_token AS token, returner AS customer_id, min(requested_at) AS seen FROM ret "
              "WHERE refund_token IS NOT NULL GROUP BY ALL",
}
"""When each customer was first seen on each token (the rows behind the `*_customers` counts)."""


def membership_sql(name: str) -> str:
    key = ENTITIES[name].key
    return (f"SELECT token AS {key}, customer_id, seen + INTERVAL 1 MICROSECOND AS event_timestamp, "
            f"seen + INTERVAL 1 MICROSECOND AS created_timestamp, epoch(seen) AS first_seen_epoch "
            f"FROM ({MEMBERSHIP_SQL[name]}) ORDER BY {key}, customer_id")


MICRO = 1_000_000
"""Money is summed as integer micro-units: running totals that add arrivals and subtract departures are then
exact (up to 2**53 micro-units, nine billion in money, in one key's window)."""


def entity_sql(spec: EntitySpec, bucket: int = 0, buckets: int = 1) -> str:
    """The query that turns an entity's facts into its change-point rows (for one hash bucket of keys).

    Every windowed sum is one running total: a fact adds its contribution when it arrives and the same
    amount is subtracted when it leaves the window (a departure row at e + w days), so all the sums of an
    entity come from a single cumulative pass over its change points (grouped first, one row per key and
    time), instead of one RANGE frame per window. Counts are integers and money is integer micro-units,
    so the additions and subtractions are exact. A median cannot be a running total: it keeps a RANGE
    frame over the facts (`_median_sql`) and is joined on (key, time).
    """
    windowed = sorted({m.column for m in spec.metrics if m.days is not None})
    counted = f"coalesce({', '.join(windowed)}) IS NOT NULL" if windowed else "false"
    in_bucket = "" if buckets == 1 else f" AND hash(key) % {buckets} = {bucket}"
    running = [m for m in spec.metrics if m.agg in ("sum", "max")]
    medians = [m for m in spec.metrics if m.agg == "median"]

    def signal(m: Metric, sign: str = "") -> str:
        if m.agg == "max":
            return m.column
        scaled = m.column if m.is_count else f"CAST(round({m.column} * {MICRO}) AS BIGINT)"
        return f"{sign}{scaled}"

    arrivals = ", ".join(f"{signal(m)} AS s_{i}" for i, m in enumerate(running))
    departures = []
    for d in spec.windows:
        cols = ", ".join(f"{signal(m, '-') if m.days == d else 'NULL'} AS s_{i}" for i, m in enumerate(running))
        departures.append(f"UNION ALL BY NAME SELECT key, us + {d * US_PER_DAY} AS us, {cols} FROM ev WHERE {counted}")
    # the running totals add doubles: DuckDB's window sums them far faster than the 128-bit integers a sum of
    # BIGINT gives, and every value is an integer below 2**53, where doubles add exactly
    grouped = ", ".join(f"max(s_{i}) AS s_{i}" if m.agg == "max" else f"CAST(sum(s_{i}) AS DOUBLE) AS s_{i}"
                        for i, m in enumerate(running))
    totals = ", ".join(f"{'max' if m.agg == 'max' else 'sum'}(s_{i}) OVER w AS s_{i}" for i, m in enumerate(running))

    def final(i: int, m: Metric) -> str:
        value = f"coalesce(s_{i}, 0)"
        if m.agg == "max":
            return f"CAST({value} AS DOUBLE) AS {m.name}"
        if m.is_count:
            return f"CAST({value} AS BIGINT) AS {m.name}"
        return f"CAST({value} AS DOUBLE) / {MICRO} AS {m.name}"

    outputs = {m.name: final(i, m) for i, m in enumerate(running)}
    outputs.update({m.name: f"md.{m.name}" for m in medians})
    median_join = ""
    median_cte = ""
    if medians:
        median_cte = f",\nmd AS ({_median_sql(spec, medians, counted)})"
        median_join = " JOIN md USING (key, us)"
    return f"""
WITH ev AS (SELECT *, epoch_us(ts) AS us FROM ({spec.events}) WHERE key IS NOT NULL{in_bucket}),
sig AS (SELECT key, us, {arrivals} FROM ev
{chr(10).join(departures)}),
pts AS (SELECT key, us, {grouped} FROM sig GROUP BY key, us),
run AS (SELECT key, us, {totals} FROM pts
        WINDOW w AS (PARTITION BY key ORDER BY us ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)){median_cte}
SELECT key AS {spec.key}, make_timestamptz(us) AS event_timestamp, make_timestamptz(us) AS created_timestamp,
       {", ".join(outputs[name] for name in spec.feature_names)}
FROM run{median_join}
"""


def _median_sql(spec: EntitySpec, medians: list[Metric], counted: str) -> str:
    """The medians at every change point: a RANGE frame per window over the facts and their departure markers."""
    columns = sorted({m.column for m in medians})
    nulls = ", ".join(f"NULL AS {c}" for c in columns)
    query = f"SELECT key, us, {', '.join(columns)} FROM ev" + "".join(
        f" UNION ALL BY NAME SELECT key, us + {d * US_PER_DAY} AS us, {nulls} FROM ev WHERE {counted}"
        for d in spec.windows)
    by_window: dict[int | None, list[Metric]] = {}
    for metric in medians:
        by_window.setdefault(metric.days, []).append(metric)
    for days, metrics in by_window.items():
        frame = "UNBOUNDED PRECEDING" if days is None else f"{days * US_PER_DAY - 1} PRECEDING"
        query = (f"SELECT *, {', '.join(m.sql() for m in metrics)} FROM ({query}) "
                 f"WINDOW w AS (PARTITION BY key ORDER BY us RANGE BETWEEN {frame} AND CURRENT ROW)")
    return f"SELECT DISTINCT ON (key, us) key, us, {', '.join(m.name for m in medians)} FROM ({query})"


def entity_sql_reference(spec: EntitySpec, bucket: int = 0, buckets: int = 1) -> str:
    """The straightforward form of `entity_sql`, one RANGE frame per window: kept as the reference the running
    totals are tested against (tests/features/test_pipeline_forms.py) and benchmarked beside
    (bench/pipeline_forms.py).

    Time is handled as integer microseconds, and each window gets its own query layer: DuckDB
    computes one RANGE frame per layer far faster than several frames in one SELECT. Only
    facts that count in some window get departure markers (labels and sign-ups do not).
    """
    contribution_cols = sorted({m.column for m in spec.metrics})
    windowed = sorted({m.column for m in spec.metrics if m.days is not None})
    nulls = ", ".join(f"NULL AS {c}" for c in contribution_cols)
    counted = f"coalesce({', '.join(windowed)}) IS NOT NULL" if windowed else "false"
    markers = "\n".join(
        f"UNION ALL BY NAME SELECT key, us + {d * US_PER_DAY} AS us, {nulls} FROM ev WHERE {counted}"
        for d in spec.windows)
    in_bucket = "" if buckets == 1 else f" AND hash(key) % {buckets} = {bucket}"
    by_window: dict[int | None, list[Metric]] = {}
    for metric in spec.metrics:
        by_window.setdefault(metric.days, []).append(metric)
    layers, previous = [], "tl"
    for i, (days, metrics) in enumerate(by_window.items()):
        frame = ("UNBOUNDED PRECEDING" if days is None else f"{days * US_PER_DAY - 1} PRECEDING")
        layers.append(f"l{i} AS (SELECT *, {', '.join(m.sql() for m in metrics)} FROM {previous} "
                      f"WINDOW w AS (PARTITION BY key ORDER BY us RANGE BETWEEN {frame} AND CURRENT ROW))")
        previous = f"l{i}"
    layer_sql = ",\n".join(layers)
    return f"""
WITH ev AS (SELECT *, epoch_us(ts) AS us FROM ({spec.events}) WHERE key IS NOT NULL{in_bucket}),
tl AS (SELECT key, us, {", ".join(contribution_cols)} FROM ev
{markers}),
{layer_sql}
SELECT DISTINCT ON (key, us) key AS {spec.key}, make_timestamptz(us) AS event_timestamp,
       make_timestamptz(us) AS created_timestamp, {", ".join(spec.feature_names)}
FROM {previous}
"""


def _register_tables(con: duckdb.DuckDBPyConnection, tables: dict[str, Path]) -> None:
    for name in ("customers", "orders", "returns", "labels", "inspections"):
        path = tables.get(name)
        if path is None:
            raise FileNotFoundError(f"the feature pipeline needs the {name} table; ingest it first")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{_q(path)}')")
    con.execute(f"CREATE TEMP TABLE ret AS {_RETURN_FACTS}")
    con.execute(f"CREATE TEMP TABLE label_deltas AS {_LABEL_DELTAS}")


def _q(path: Path) -> str:
    return str(path).replace("'", "''")


def build(tables: dict[str, Path], out_dir: Path, memory_limit: str = "8GB",
          report: Callable[[str], None] = lambda _: None, bucket_facts: int = BUCKET_FACTS) -> dict[str, int]:
    """Compute every entity's change-point rows from the contract tables into OUT_DIR/<entity>.parquet.

    Files are written beside their final names and renamed once all of them are written (`publish`), so readers
    never see half a file and a build that fails part-way leaves the previous build's files as they were.
    Returns the row count per entity.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    # spill next to the output, not into whatever directory the command runs in
    con.execute(f"SET temp_directory = '{_q(out_dir / '.spill')}'")
    _register_tables(con, tables)
    counts = {}
    jobs: list[tuple[str, list[str]]] = []
    for name, spec in ENTITIES.items():
        facts = con.execute(f"SELECT count(*) FROM ({spec.events})").fetchall()[0][0]
        buckets = max(1, -(-facts // bucket_facts))
        jobs.append((name, [entity_sql(spec, b, buckets) for b in range(buckets)]))
    jobs += [(f"{name}_seen", [membership_sql(name)]) for name in MEMBERSHIP_SQL]
    with publishing(out_dir, [name for name, _ in jobs]):
        for name, parts in jobs:
            counts[name] = _write(con, out_dir, name, parts, report)
    con.close()
    return counts


def _write(con: duckdb.DuckDBPyConnection, out_dir: Path, name: str, parts: list[str],
           report: Callable[[str], None]) -> int:
    """One output's rows into its temporary file (`unpublished`); its row count."""
    t0 = time.perf_counter()
    tmp = unpublished(out_dir, name)
    if len(parts) == 1:
        con.execute(f"COPY ({parts[0]}) TO '{_q(tmp)}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
    else:
        # key buckets bound the memory of the window layers; the parts are then streamed into one file
        part_files = [out_dir / f".{name}.part{i}.parquet" for i in range(len(parts))]
        for sql, part in zip(parts, part_files, strict=True):
            con.execute(f"COPY ({sql}) TO '{_q(part)}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
        listing = ", ".join(f"'{_q(p)}'" for p in part_files)
        con.execute(f"COPY (SELECT * FROM read_parquet([{listing}])) TO '{_q(tmp)}' "
                    "(FORMAT parquet, COMPRESSION zstd)").fetchall()
        for part in part_files:
            part.unlink()
    rows = int(con.execute(f"SELECT count(*) FROM read_parquet('{_q(tmp)}')").fetchall()[0][0])
    report(f"features: {name}: {rows:,} rows in {time.perf_counter() - t0:.1f}s")
    return rows


def unpublished(out_dir: Path, name: str) -> Path:
    """Where a build writes output NAME before `publishing` renames it to OUT_DIR/NAME.parquet."""
    return out_dir / f".{name}.parquet.tmp"


@contextlib.contextmanager
def publishing(out_dir: Path, names: list[str]) -> Iterator[None]:
    """Around a build of outputs NAMES: when it ends, every finished temporary file is renamed onto its final name
    (each rename atomic, all after the last file is complete); when it fails, the temporary files are removed and
    the previous build's files stay as they were."""
    try:
        yield
    except BaseException:
        for name in names:
            unpublished(out_dir, name).unlink(missing_ok=True)
        raise
    for name in names:
        unpublished(out_dir, name).replace(out_dir / f"{name}.parquet")
