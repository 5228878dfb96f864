"""Benchmark: feature build for 1M+ returns, historical retrieval for 200k returns, online reads.

Stages run in their own processes (so each peak RSS is its own) on one generated world:
generate -> ingest -> features build -> historical retrieval (200k returns) -> materialise ->
online reads. Online reads are timed one request at a time, three ways in the same process:
Feast's get_online_features (the baseline), this service's one-round-trip reader on sqlite,
and the same reader on Redis (db 9 of the local server, flushed first).

    .venv/bin/python bench/features_bench.py                       # 100k customers, >1M returns
    .venv/bin/python bench/features_bench.py --customers 20000 --days 365   # quicker
    .venv/bin/python bench/features_bench.py --work /work/bench-1m --engine both --only build
        # keep the world in /work/bench-1m (made once, reused), build it with DuckDB and with Spark

With `--engine spark` the build runs on Spark in local mode (`local[*]`); its peak memory counts the
Spark driver's JVM (a child process), sampled from /proc.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import TreePeak, peak_mb, run_stage, world_argv, world_parser  # noqa: E402

REDIS_DB = 9


def _settings(home: str, store: str = "sqlite"):
    from fraud_service.config import Settings

    return Settings.from_env({"FRAUD_HOME": home, "FRAUD_ONLINE_STORE": store,
                              "FRAUD_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}"})


def stage_prepare(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.data.ingest import ingest
    from fraud_service.data.warehouse import Warehouse
    from training.datasets.synthetic import WorldConfig, generate

    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed, orders_per_year=args.orders_per_year,
                         return_rate=args.return_rate)
    summary = generate(config, Path(args.dir) / "world")
    ingest(Path(args.dir) / "world", Warehouse(_settings(args.home).warehouse_dir))
    return {"returns": summary["returns"], "orders": summary["orders"]}


def stage_build(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.featurestore.source import FeatureSource

    with TreePeak() as peak:
        t0 = time.perf_counter()
        manifest = FeatureSource(_settings(args.home)).build(engine=args.engine)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mb": peak.peak_mb, "rows": manifest["rows"], "engine": args.engine}


def stage_historical(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.data.warehouse import Warehouse
    from fraud_service.featurestore.source import FeatureSource, entity_rows

    settings = _settings(args.home)
    snapshot = Warehouse(settings.warehouse_dir).current()
    returns = snapshot.read("returns")
    sample = returns.sample(min(args.historical_rows, len(returns)), random_state=1)
    entities = entity_rows(sample, snapshot.read("orders"), snapshot.read("order_items"))
    source = FeatureSource(settings)
    source.store()
    t0 = time.perf_counter()
    frame = source.historical(entities)
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb(), "rows": len(frame)}


def stage_materialize(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.featurestore.source import FeatureSource

    source = FeatureSource(_settings(args.home, args.store))
    if args.store == "redis":
        import redis

        redis.Redis(db=REDIS_DB).flushdb()
    t0 = time.perf_counter()
    source.materialize(full=True)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    source.materialize()
    return {"seconds": first, "incremental_seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}


def stage_online(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np

    from features import definitions
    from fraud_service.data.warehouse import Warehouse
    from fraud_service.featurestore.source import ENTITY_KEYS, FeatureSource, entity_rows

    settings = _settings(args.home, args.store)
    snapshot = Warehouse(settings.warehouse_dir).current()
    sample = snapshot.read("returns").sample(500, random_state=2)
    entities = entity_rows(sample, snapshot.read("orders"), snapshot.read("order_items"))
    request_cols = [c for c in entities.columns if c.startswith("req_")]
    keys = [{k: row[k] for k in ENTITY_KEYS} for _, row in entities.iterrows()]
    requests = [{c: row[c] for c in request_cols} for _, row in entities.iterrows()]
    source = FeatureSource(settings)
    store = source.store()
    service = store.get_feature_service(definitions.FEATURE_SERVICE)
    reader = source.reader()  # stored rows + the live-fact log (empty here, as after a build)

    def feast_read(i: int) -> None:
        store.get_online_features(features=service, entity_rows=[{**keys[i], **requests[i]}]).to_dict()

    def fast_read(i: int) -> None:
        reader.vector(keys[i], requests[i])

    out: dict[str, object] = {}
    for name, fn, n in (("feast get_online_features", feast_read, 1000), ("fast reader", fast_read, 5000)):
        for i in range(50):
            fn(i % len(keys))
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i % len(keys))
            lat.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000)}
    return out


STAGES = {"prepare": stage_prepare, "build": stage_build, "historical": stage_historical,
          "materialize": stage_materialize, "online": stage_online}


def main() -> None:
    parser = world_parser(__doc__, STAGES)
    parser.add_argument("--historical-rows", type=int, default=200_000)
    parser.add_argument("--store", default="sqlite", help="online store of a stage (internal)")
    parser.add_argument("--engine", choices=("duckdb", "spark", "both"), default="duckdb",
                        help="what features build runs on (both: DuckDB, then Spark, on the same world)")
    parser.add_argument("--work", help="keep the world in this directory and reuse it when it is there (default: a "
                                       "temporary directory, removed after)")
    parser.add_argument("--only", choices=("build",), help="stop after the features build")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args), default=str))
        return
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        _run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            _run(args, tmp)


def _run(args: argparse.Namespace, work: str) -> None:
    common = [*world_argv(args, work), "--historical-rows", str(args.historical_rows)]
    marker = Path(work) / "world.json"
    shape = {"customers": args.customers, "days": args.days, "seed": args.seed,
             "orders_per_year": args.orders_per_year, "return_rate": args.return_rate}
    if marker.exists() and json.loads(marker.read_text())["shape"] == shape:
        world = json.loads(marker.read_text())["world"]
    elif marker.exists() or any(Path(work).iterdir()):
        raise SystemExit(f"--work {work} holds something else than a world of {shape}: name an empty directory")
    else:
        world = run_stage(__file__, "prepare", common)
        marker.write_text(json.dumps({"shape": shape, "world": world}))
    engines = ["duckdb", "spark"] if args.engine == "both" else [args.engine]
    builds = {engine: run_stage(__file__, "build", [*common, "--engine", engine]) for engine in engines}
    print(f"world: {args.customers:,} customers, {args.days} days: {world['orders']:,} orders, "
          f"{world['returns']:,} returns")
    for engine, build in builds.items():
        print(f"features build ({engine}): {build['seconds']:7.1f} s   peak {build['peak_mb']:6.0f} MB   rows "
              + ", ".join(f"{k} {v:,}" for k, v in build["rows"].items()))
    if len(builds) == 2:
        print(f"spark / duckdb: time {builds['spark']['seconds'] / builds['duckdb']['seconds']:.2f}x, peak memory "
              f"{builds['spark']['peak_mb'] / builds['duckdb']['peak_mb']:.2f}x")
    if args.only == "build":
        return
    historical = run_stage(__file__, "historical", common)
    mat_sqlite = run_stage(__file__, "materialize", [*common, "--store", "sqlite"])
    online_sqlite = run_stage(__file__, "online", [*common, "--store", "sqlite"])
    mat_redis = run_stage(__file__, "materialize", [*common, "--store", "redis"])
    online_redis = run_stage(__file__, "online", [*common, "--store", "redis"])
    print(f"historical retrieval:  {historical['seconds']:7.1f} s   peak {historical['peak_mb']:6.0f} MB   "
          f"for {historical['rows']:,} returns")
    for store, mat in (("sqlite", mat_sqlite), ("redis", mat_redis)):
        print(f"materialise ({store}):  {mat['seconds']:7.1f} s full, {mat['incremental_seconds']:.1f} s incremental "
              "with nothing new")
    for store, online in (("sqlite", online_sqlite), ("redis", online_redis)):
        base = online["feast get_online_features"]
        fast = online["fast reader"]
        print(f"online read ({store}), full vector: fast reader p50 {fast['p50_ms']:.3f} ms "
              f"p99 {fast['p99_ms']:.3f} ms; Feast get_online_features p50 {base['p50_ms']:.3f} ms "
              f"p99 {base['p99_ms']:.3f} ms ({base['p50_ms'] / fast['p50_ms']:.1f}x)")


if __name__ == "__main__":
    main()
