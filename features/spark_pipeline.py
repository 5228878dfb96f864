"""The feature pipeline on Apache Spark: the same change-point rows as `features.pipeline` (DuckDB), from the same
contract tables, for histories one machine cannot hold.

Every rule is the DuckDB pipeline's, written with Spark's DataFrame API: a fact is known from its time + 1 µs;
each windowed sum is one running total (a fact adds its contribution on arrival and the same amount is taken
away at its departure, e + w days), counts are integers and money integer micro-units, so the totals are
exact and equal DuckDB's whatever the order of the additions; the median keeps a RANGE frame over the facts
and their departure markers. The metric definitions (names, columns, windows, aggregates) are the ones in
`features.pipeline.ENTITIES`; only the facts are written a second time, here. A test builds a world with
both engines and compares every row of every file.

Spark runs in local mode (`local[*]`) unless a master is given (`FRAUD_SPARK_MASTER`: `spark://host:7077`,
`yarn`, `k8s://...`); other settings come from Spark's own `spark-defaults.conf` (`SPARK_CONF_DIR`) and
environment (`SPARK_DRIVER_MEMORY`). In local mode the driver binds and talks on loopback only and gets a
6 GB heap unless SPARK_DRIVER_MEMORY is set. Each entity is written by Spark as part files, then joined
into one parquet file beside its final name and renamed, as the DuckDB engine writes it.

Like `features.pipeline`, this module imports nothing of the project outside `features`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from features.pipeline import (
    BAD_OUTCOMES,
    ENTITIES,
    MEMBERSHIP_SQL,
    MICRO,
    US_PER_DAY,
    EntitySpec,
    Metric,
    publishing,
    unpublished,
)

LOCAL = "local[*]"
LOCAL_DRIVER_MEMORY = "6g"
"""The driver's heap in local mode unless SPARK_DRIVER_MEMORY says otherwise (it holds the whole computation)."""


@contextmanager
def spark_session(master: str = LOCAL, app_name: str = "fraud-service features") -> Iterator[Any]:
    """A SparkSession for the pipeline, stopped on exit. Local masters stay on loopback (driver host, bind
    address and SPARK_LOCAL_IP 127.0.0.1) with the web UI off; timestamps are UTC, written as microseconds."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        cores = os.cpu_count() or 2
        if "SPARK_DRIVER_MEMORY" not in os.environ:  # local mode computes in the driver: Spark's 1 GB is too little
            builder = builder.config("spark.driver.memory", LOCAL_DRIVER_MEMORY)
        builder = (builder.config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", str(max(4, 4 * cores))))
    builder = (builder.config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               .config("spark.sql.ansi.enabled", "false"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


# --- facts ---------------------------------------------------------------------------------------------------


def _known(column: str) -> Any:
    """Microseconds since the epoch at which a fact with this timestamp becomes known (its time + 1 µs)."""
    from pyspark.sql import functions as F

    return F.unix_micros(F.col(column)) + 1


def _epoch(column: str) -> Any:
    """Seconds since the epoch as DuckDB's `epoch(timestamptz)` computes them, bit for bit: whole milliseconds
    / 1000.0 + the remaining microseconds / 1e6 (plain microseconds / 1e6 rounds differently for a quarter of
    sub-second times)."""
    from pyspark.sql import functions as F

    us = F.unix_micros(F.col(column))
    rest = us % 1000
    return (us - rest) / 1000 / 1000.0 + rest / 1e6


def _days_between(later: str, earlier: str) -> Any:
    """LATER - EARLIER in days as DuckDB's `epoch(interval) / 86400.0` computes it: the interval is whole days and
    microseconds, seconds = days * 86400 + microseconds / 1e6."""
    from pyspark.sql import functions as F

    span = F.unix_micros(F.col(later)) - F.unix_micros(F.col(earlier))
    rest = span % US_PER_DAY
    return ((span - rest) / US_PER_DAY * 86400 + rest / 1e6) / 86400.0


def _flag(condition: Any) -> Any:
    """A condition as 0/1 (NULL stays NULL, as DuckDB's `::INT`)."""
    return condition.cast("int")


def _label_delta(kind: str) -> Any:
    from pyspark.sql import functions as F

    now = F.when(F.col("label") == kind, 1).otherwise(0)
    before = F.when(F.col("previous") == kind, 1).otherwise(0)
    return now - before


class Facts:
    """The contract tables read once, and each entity's facts: key, us (when known) and contribution columns."""

    def __init__(self, spark: Any, tables: dict[str, Path]) -> None:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        read = {name: spark.read.parquet(str(tables[name])) for name in
                ("customers", "orders", "returns", "labels", "inspections")}
        self.customers, self.orders, self.inspections = read["customers"], read["orders"], read["inspections"]
        order_cols = read["orders"].select("order_id", "delivered_at", "address_token", "payment_token",
                                           "device_token")
        self.ret = read["returns"].join(order_cols, "order_id").withColumn("returner", F.col("customer_id"))
        self.ret.cache()
        by_return = Window.partitionBy("return_id").orderBy("labelled_at", "source")
        self.label_deltas = read["labels"].select(
            "return_id", _known("labelled_at").alias("us"), "label",
            F.lag("label").over(by_return).alias("previous"))

    def customer(self) -> Any:
        from pyspark.sql import functions as F

        r = self.ret
        delivered = F.col("delivered_at").isNotNull() & (F.col("delivered_at") <= F.col("requested_at"))
        days = _days_between("requested_at", "delivered_at")
        parts = [
            self.customers.select(F.col("customer_id").alias("key"), _known("created_at").alias("us"),
                                  _epoch("created_at").alias("created_epoch")),
            self.orders.select(F.col("customer_id").alias("key"), _known("placed_at").alias("us"),
                               F.lit(1).alias("n_order"), F.col("order_total").cast("double").alias("order_value")),
            r.select(F.col("returner").alias("key"), _known("requested_at").alias("us"), F.lit(1).alias("n_return"),
                     F.col("refund_amount").cast("double").alias("refund"),
                     _flag(F.col("return_type") == "item_not_received").alias("n_inr"),
                     _flag(F.col("return_type").isin("damaged_on_arrival", "wrong_item")).alias("n_claim"),
                     _flag(F.col("channel") == "returnless").alias("n_returnless"),
                     _flag(~F.col("has_receipt")).alias("n_no_receipt"),
                     _flag(F.col("reason").isin("size", "changed_mind")).alias("n_size_cm"),
                     _flag(F.col("refund_method").isin("gift_card", "other_payment")).alias("n_refund_elsewhere"),
                     F.when(delivered, days).alias("days_to_return")),
            self.inspections.join(r.select("return_id", "returner"), "return_id").select(
                F.col("returner").alias("key"), _known("inspected_at").alias("us"),
                _flag(F.col("outcome").isin(*BAD_OUTCOMES)).alias("n_bad_inspection"),
                _flag(F.col("outcome") == "ok").alias("n_ok_inspection")),
            self.label_deltas.join(r.select("return_id", "returner"), "return_id").select(
                F.col("returner").alias("key"), "us", _label_delta("fraud").alias("d_fraud"),
                _label_delta("abuse").alias("d_abuse"), _label_delta("legit").alias("d_legit")),
        ]
        return _union(parts)

    def _failed_inspections(self, token: str) -> Any:
        from pyspark.sql import functions as F

        return (self.inspections.join(self.ret.select("return_id", token), "return_id")
                .where(F.col(token).isNotNull() & F.col("outcome").isin(*BAD_OUTCOMES))
                .select(F.col(token).alias("key"), _known("inspected_at").alias("us"),
                        F.lit(1).alias("n_bad_inspection")))

    def _bad_labels(self, token: str) -> Any:
        from pyspark.sql import functions as F

        return (self.label_deltas.join(self.ret.select("return_id", token), "return_id")
                .where(F.col(token).isNotNull())
                .select(F.col(token).alias("key"), "us",
                        (_label_delta("fraud") + _label_delta("abuse")).alias("d_bad")))

    def token(self, token: str) -> Any:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        first = Window.partitionBy(token, "customer_id").orderBy("placed_at", "order_id")
        parts = [
            self.orders.where(F.col(token).isNotNull()).select(
                F.col(token).alias("key"), _known("placed_at").alias("us"), F.lit(1).alias("n_order"),
                _flag(F.row_number().over(first) == 1).alias("n_new_customer")),
            self.ret.where(F.col(token).isNotNull()).select(
                F.col(token).alias("key"), _known("requested_at").alias("us"), F.lit(1).alias("n_return"),
                F.col("refund_amount").cast("double").alias("refund"),
                _flag(F.col("return_type") == "item_not_received").alias("n_inr")),
            self._bad_labels(token),
            self._failed_inspections(token),
        ]
        return _union(parts)

    def refund(self) -> Any:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        first = Window.partitionBy("refund_token", "returner").orderBy("requested_at", "return_id")
        parts = [
            self.ret.where(F.col("refund_token").isNotNull()).select(
                F.col("refund_token").alias("key"), _known("requested_at").alias("us"), F.lit(1).alias("n_return"),
                F.col("refund_amount").cast("double").alias("refund"),
                _flag(F.col("return_type") == "item_not_received").alias("n_inr"),
                _flag(F.row_number().over(first) == 1).alias("n_new_customer")),
            self._bad_labels("refund_token"),
            self._failed_inspections("refund_token"),
        ]
        return _union(parts)

    def of(self, name: str) -> Any:
        if name == "customer":
            return self.customer()
        if name == "refund":
            return self.refund()
        return self.token(ENTITIES[name].key)

    def membership(self, name: str) -> Any:
        """When each customer was first seen on each token (`features.pipeline.MEMBERSHIP_SQL`)."""
        from pyspark.sql import functions as F

        key = ENTITIES[name].key
        if name == "refund":
            source, customer, at = self.ret, "returner", "requested_at"
        else:
            source, customer, at = self.orders, "customer_id", "placed_at"
        seen = (source.where(F.col(key).isNotNull()).groupBy(key, customer).agg(F.min(at).alias("seen"))
                .withColumnRenamed(customer, "customer_id"))
        stamp = F.timestamp_micros(F.unix_micros("seen") + 1)
        return seen.select(key, "customer_id", stamp.alias("event_timestamp"), stamp.alias("created_timestamp"),
                           _epoch("seen").alias("first_seen_epoch"))


def _union(parts: list[Any]) -> Any:
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part, allowMissingColumns=True)
    return out


# --- change points ------------------------------------------------------------------------------------------


def entity_rows(spec: EntitySpec, facts: Any) -> Any:
    """An entity's change-point rows from its facts (`features.pipeline.entity_sql`, on Spark)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    windowed = sorted({m.column for m in spec.metrics if m.days is not None})
    ev = facts.where(F.col("key").isNotNull())
    counted = F.coalesce(*[F.col(c) for c in windowed]).isNotNull() if windowed else F.lit(False)
    running = [m for m in spec.metrics if m.agg in ("sum", "max")]
    medians = [m for m in spec.metrics if m.agg == "median"]

    def signal(m: Metric) -> Any:
        if m.agg == "max" or m.is_count:
            return F.col(m.column).cast("double") if m.agg == "max" else F.col(m.column).cast("long")
        return F.round(F.col(m.column) * MICRO).cast("long")

    arrivals = ev.select("key", "us", *[signal(m).alias(f"s_{i}") for i, m in enumerate(running)])
    departures = [
        ev.where(counted).select("key", (F.col("us") + d * US_PER_DAY).alias("us"), *[
            (-signal(m) if m.days == d else F.lit(None).cast("double" if m.agg == "max" else "long")).alias(f"s_{i}")
            for i, m in enumerate(running)])
        for d in spec.windows]
    sig = _union([arrivals, *departures])
    grouped = sig.groupBy("key", "us").agg(*[
        (F.max if m.agg == "max" else F.sum)(f"s_{i}").alias(f"s_{i}") for i, m in enumerate(running)])
    upto = Window.partitionBy("key").orderBy("us").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    run = grouped.select("key", "us", *[
        (F.max if m.agg == "max" else F.sum)(f"s_{i}").over(upto).alias(f"s_{i}") for i, m in enumerate(running)])

    def final(i: int, m: Metric) -> Any:
        value = F.coalesce(F.col(f"s_{i}"), F.lit(0))
        if m.agg == "max":
            return value.cast("double").alias(m.name)
        if m.is_count:
            return value.cast("long").alias(m.name)
        return (value.cast("double") / MICRO).alias(m.name)

    outputs = {m.name: final(i, m) for i, m in enumerate(running)}
    if medians:
        run = run.join(_medians(spec, ev, medians, counted), ["key", "us"])
        outputs.update({m.name: F.col(m.name) for m in medians})
    stamp = F.timestamp_micros("us")
    return run.select(F.col("key").alias(spec.key), stamp.alias("event_timestamp"), stamp.alias("created_timestamp"),
                      *[outputs[name] for name in spec.feature_names])


def _medians(spec: EntitySpec, ev: Any, medians: list[Metric], counted: Any) -> Any:
    """The medians at every change point: a RANGE frame per window over the facts and their departure markers."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    columns = sorted({m.column for m in medians})
    points = _union([ev.select("key", "us", *columns)] + [
        ev.where(counted).select("key", (F.col("us") + d * US_PER_DAY).alias("us"),
                                 *[F.lit(None).cast("double").alias(c) for c in columns])
        for d in spec.windows])
    for m in medians:
        start = Window.unboundedPreceding if m.days is None else -(m.days * US_PER_DAY - 1)
        frame = Window.partitionBy("key").orderBy("us").rangeBetween(start, Window.currentRow)
        points = points.withColumn(m.name, _median(F.collect_list(m.column).over(frame)))
    # every row of one (key, us) has the same frame (RANGE includes its peers): keep one
    return points.select("key", "us", *[m.name for m in medians]).dropDuplicates(["key", "us"])


def _median(values: Any) -> Any:
    """The median of an array column (NULLs already left out by `collect_list`), as DuckDB's `median` gives it:
    (lo + hi) / 2 of the middle two for an even count (bit for bit), NULL for none. (Spark refuses `median`
    over a window frame.)"""
    from pyspark.sql import functions as F

    ordered = F.array_sort(values)
    n = F.size(ordered)
    lo = F.element_at(ordered, ((n + 1) / 2).cast("int"))
    hi = F.element_at(ordered, (n / 2).cast("int") + 1)
    return F.when(n == 0, F.lit(None).cast("double")).otherwise((lo + hi) / 2)


# --- point-in-time retrieval -------------------------------------------------------------------------------


def historical(entities: Any, views: dict[str, tuple[str, Path, list[str]]], master: str = LOCAL) -> Any:
    """The stored features of each entity row as of its `event_timestamp` (the latest row of its key at or before
    it, as the ASOF offline store joins), on Spark: a pyarrow table of ENTITIES' columns, in their order, then
    each view's features. VIEWS: name -> (join key, rows file, feature names).

    Per view, entity rows and the feature rows of the keys asked about are put in one frame ordered by (key, time,
    feature rows first), and each entity row takes the last feature row before it: the features travel as one
    struct, so a NULL value (a median of nothing) is carried as it is, not skipped for an older one."""
    import pyarrow as pa
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = pa.Table.from_pandas(entities.reset_index(drop=True), preserve_index=False)
    with spark_session(master, "fraud-service historical") as spark:
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        keys = sorted({key for key, _, _ in views.values()})
        probe = spark.createDataFrame(entities[keys + ["event_timestamp"]].reset_index(drop=True)
                                      .assign(__row=range(len(entities))))
        joined = probe.select("__row")
        for key, path, names in views.values():
            stored = spark.read.parquet(str(path)).join(probe.select(key).distinct(), key, "left_semi")
            asked = probe.select(F.col(key).alias("k"), F.col("event_timestamp").alias("t"), F.lit(1).alias("entity"),
                                 "__row", F.lit(None).alias("v"))
            known = stored.select(F.col(key).alias("k"), F.col("event_timestamp").alias("t"), F.lit(0).alias("entity"),
                                  F.lit(None).cast("long").alias("__row"), F.struct(*names).alias("v"))
            upto = Window.partitionBy("k").orderBy("t", "entity").rowsBetween(Window.unboundedPreceding, 0)
            asof = (asked.unionByName(known).withColumn("v", F.last("v", ignorenulls=True).over(upto))
                    .where(F.col("entity") == 1).select("__row", *[F.col(f"v.{n}").alias(n) for n in names]))
            joined = joined.join(asof, "__row", "left")
        features = joined.orderBy("__row").toArrow()
    for name in features.column_names:
        if name != "__row":
            rows = rows.append_column(name, features[name])
    return rows


# --- the build ----------------------------------------------------------------------------------------------


def build(tables: dict[str, Path], out_dir: Path, master: str = LOCAL,
          report: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """`features.pipeline.build` on Spark: every entity's change-point rows and the `*_seen` membership rows into
    OUT_DIR/<name>.parquet (all written beside their final names, then renamed together, as the DuckDB build
    does: a failed build leaves the previous files). Returns the row count per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    names = [*ENTITIES, *(f"{name}_seen" for name in MEMBERSHIP_SQL)]
    with publishing(out_dir, names), spark_session(master) as spark:
        facts = Facts(spark, tables)
        for name in names:
            t0 = time.perf_counter()
            parts = out_dir / f".{name}.spark"
            shutil.rmtree(parts, ignore_errors=True)
            if name in ENTITIES:
                frame = entity_rows(ENTITIES[name], facts.of(name))
            else:
                frame = facts.membership(name.removesuffix("_seen"))
            frame.write.parquet(str(parts), compression="zstd")
            counts[name] = _join_parts(parts, unpublished(out_dir, name))
            report(f"features (spark): {name}: {counts[name]:,} rows in {time.perf_counter() - t0:.1f}s")
    return counts


def _join_parts(parts: Path, tmp: Path) -> int:
    """Spark's part files of one output, streamed into one parquet file TMP (timestamps as UTC microseconds)."""
    import pyarrow.parquet as pq

    files = sorted(parts.glob("part-*.parquet"))
    rows = 0
    schema = pq.read_schema(files[0])
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for file in files:
            source = pq.ParquetFile(file)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                rows += table.num_rows
                writer.write_table(table)
    shutil.rmtree(parts, ignore_errors=True)
    return rows
