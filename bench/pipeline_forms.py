"""Benchmark: the feature pipeline's running totals against the reference RANGE-frame form, same process, same data.

Each entity's change-point query runs in both forms over the current warehouse snapshot of FRAUD_HOME (key
buckets as the build uses them), written to parquet as the build does; the forms alternate, REPEAT times, and
the medians and their ratio are printed. Point it at the home that bench/features_bench.py prepared:

    FRAUD_HOME=/path/to/bench-home .venv/bin/python bench/pipeline_forms.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from features import pipeline  # noqa: E402
from fraud_service.config import Settings  # noqa: E402
from fraud_service.data.warehouse import Warehouse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    snapshot = Warehouse(Settings.from_env().warehouse_dir).current()
    if snapshot is None:
        sys.exit("nothing is ingested in FRAUD_HOME")
    tables = {t: snapshot.table_path(t) for t in ("customers", "orders", "returns", "labels", "inspections")}
    print(f"snapshot {snapshot.name}: {snapshot.rows('returns'):,} returns, {snapshot.rows('orders'):,} orders")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    pipeline._register_tables(con, tables)  # type: ignore[arg-type]
    totals = {"running": 0.0, "reference": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.parquet"
        for name, spec in pipeline.ENTITIES.items():
            facts = con.execute(f"SELECT count(*) FROM ({spec.events})").fetchall()[0][0]
            buckets = max(1, -(-facts // pipeline.BUCKET_FACTS))
            times: dict[str, list[float]] = {"running": [], "reference": []}
            for _ in range(args.repeat):
                for form, make in (("reference", pipeline.entity_sql_reference), ("running", pipeline.entity_sql)):
                    t0 = time.perf_counter()
                    for b in range(buckets):
                        con.execute(f"COPY ({make(spec, b, buckets)}) TO '{out}' (FORMAT parquet)").fetchall()
                    times[form].append(time.perf_counter() - t0)
            med = {form: statistics.median(v) for form, v in times.items()}
            for form in totals:
                totals[form] += med[form]
            print(f"{name:<9} {facts:>11,} facts {buckets:>3} bucket(s): running totals {med['running']:7.2f}s  "
                  f"reference {med['reference']:7.2f}s  ratio {med['reference'] / med['running']:.2f}x")
    print(f"all entities: running totals {totals['running']:.1f}s, reference {totals['reference']:.1f}s, "
          f"{totals['reference'] / totals['running']:.2f}x faster (medians of {args.repeat})")


if __name__ == "__main__":
    main()
