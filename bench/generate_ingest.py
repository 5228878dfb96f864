"""Benchmark: generate a 1M+ return world, ingest it, re-ingest it; time and peak memory of each.

Each stage runs in its own process so its peak RSS is its own. Beside ingest, a baseline in the
same process reads every table with pyarrow and rewrites it with DuckDB (the I/O floor of an
ingest that checks nothing), so the report can give ingest's cost as a ratio to that floor.

    .venv/bin/python bench/generate_ingest.py                 # 100k customers, >1M returns
    .venv/bin/python bench/generate_ingest.py --customers 20000 --days 365   # quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import peak_mb, run_stage, world_argv, world_parser  # noqa: E402


def stage_generate(args: argparse.Namespace) -> dict[str, object]:
    from training.datasets.synthetic import WorldConfig, generate

    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed,
                         orders_per_year=args.orders_per_year, return_rate=args.return_rate)
    t0 = time.perf_counter()
    summary = generate(config, Path(args.dir))
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb(), "rows": summary}


def stage_ingest(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.data.ingest import ingest
    from fraud_service.data.warehouse import Warehouse

    t0 = time.perf_counter()
    result = ingest(Path(args.dir), Warehouse(Path(args.home) / "warehouse"))
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb(), "snapshot": result.snapshot}


def stage_floor(args: argparse.Namespace) -> dict[str, object]:
    import duckdb
    import pyarrow.parquet as pq

    out = Path(args.home) / "floor"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    con = duckdb.connect()
    for path in sorted(Path(args.dir).glob("*.parquet")):
        if path.stem == "ground_truth":
            continue
        table = pq.read_table(path)
        con.register("t", table)
        con.execute(f"COPY (SELECT * FROM t) TO '{out / path.name}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
        con.unregister("t")
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}


STAGES = {"generate": stage_generate, "ingest": stage_ingest, "floor": stage_floor}


def main() -> None:
    args = world_parser(__doc__, STAGES).parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args), default=str))
        return

    with tempfile.TemporaryDirectory(prefix="bench-gi-") as tmp:
        common = world_argv(args, tmp)
        gen = run_stage(__file__, "generate", common)
        rows = gen["rows"]
        assert isinstance(rows, dict)
        first = run_stage(__file__, "ingest", common)
        again = run_stage(__file__, "ingest", common)
        floor = run_stage(__file__, "floor", common)

    print(f"world: {args.customers:,} customers, {args.days} days, orders/year {args.orders_per_year}, "
          f"return rate {args.return_rate}, seed {args.seed}")
    for table in ("customers", "orders", "order_items", "returns", "labels", "inspections"):
        print(f"  {table:<12} {rows[table]:>12,}")
    print(f"{'stage':<28} {'seconds':>9} {'peak MB':>9}")
    for name, r in (("generate", gen), ("ingest (first)", first), ("ingest again (no change)", again),
                    ("floor: read + rewrite only", floor)):
        print(f"{name:<28} {r['seconds']:>9.1f} {r['peak_mb']:>9.0f}")
    print(f"ingest / floor: {first['seconds'] / floor['seconds']:.1f}x   "
          f"returns per second ingested: {rows['returns'] / first['seconds']:,.0f}")
    assert first["snapshot"] == "000001" and again["snapshot"] is None, "re-ingest must change nothing"


if __name__ == "__main__":
    main()
