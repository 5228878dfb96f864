"""Benchmark: training-set build (point-in-time features of every return) and LightGBM training at 1M returns.

Stages run in their own processes (so each peak RSS is its own) on one generated world:
generate + ingest -> features build -> training set (Feast historical retrieval of every
return, in chunks, plus labels) -> training (LightGBM with early stopping, calibration).
The training stage also times one LightGBM round-trip baseline in the same process: training
on the same matrix with early stopping switched off at the same number of trees, so the
figure separates our own overhead (encoding, calibration, validation) from LightGBM's.

    .venv/bin/python bench/training_bench.py                     # 100k customers, >1M returns
    .venv/bin/python bench/training_bench.py --customers 20000 --days 365   # quicker
    .venv/bin/python bench/training_bench.py --keep /work/bench-home          # keep the world for reuse
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


def _settings(home: str):
    from fraud_service.config import Settings

    return Settings.from_env({"FRAUD_HOME": home})


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

    t0 = time.perf_counter()
    FeatureSource(_settings(args.home)).build()
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}


def stage_trainset(args: argparse.Namespace) -> dict[str, object]:
    from fraud_service.featurestore.source import FeatureSource
    from training.trainset import Window, current_snapshot, feature_frame, labels_as_of, target

    settings = _settings(args.home)
    snapshot = current_snapshot(settings.warehouse_dir)
    t0 = time.perf_counter()
    frame = feature_frame(FeatureSource(settings), snapshot, Window())
    frame["y"] = target(frame, labels_as_of(snapshot))
    seconds = time.perf_counter() - t0
    frame.to_parquet(Path(args.dir) / "trainset.parquet", index=False)
    return {"seconds": seconds, "peak_mb": peak_mb(), "rows": len(frame), "positives": int(frame["y"].sum())}


def stage_fit(args: argparse.Namespace) -> dict[str, object]:
    import lightgbm as lgb
    import pandas as pd

    from fraud_service.scoring.model import encode
    from training.trainer import TrainConfig, fit
    from training.trainset import model_features

    frame = pd.read_parquet(Path(args.dir) / "trainset.parquet")
    y = frame.pop("y").to_numpy()
    features = model_features()
    config = TrainConfig()
    t0 = time.perf_counter()
    trained = fit(frame, y, features, config)
    seconds = time.perf_counter() - t0
    peak = peak_mb()
    # baseline: LightGBM alone on the already-encoded matrix, same parameters, one member's rounds; the fit trains
    # each member twice (early stopping, then the refit on every row)
    x = encode(frame, features, trained.categories)
    params = config.params(features)
    t1 = time.perf_counter()
    lgb.train(params, lgb.Dataset(x, y, feature_name=features,
                                  categorical_feature=[i for i, f in enumerate(features) if f in trained.categories]),
              num_boost_round=trained.best_iteration)
    base = time.perf_counter() - t1
    return {"seconds": seconds, "peak_mb": peak, "trees": trained.best_iteration, "members": trained.members,
            "runs": trained.members * (2 if config.refit else 1), "rows": trained.rows, "lightgbm_only_seconds": base}


STAGES = {"prepare": stage_prepare, "build": stage_build, "trainset": stage_trainset, "fit": stage_fit}


def main() -> None:
    parser = world_parser(__doc__, STAGES)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args), default=str))
        return
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = args.keep or tmp
        Path(work).mkdir(parents=True, exist_ok=True)
        common = world_argv(args, work)
        ingested = (Path(work) / "home" / "warehouse" / "CURRENT").exists()
        world = run_stage(__file__, "prepare", common) if not ingested else None
        build = run_stage(__file__, "build", common)
        trainset = run_stage(__file__, "trainset", common)
        fitted = run_stage(__file__, "fit", common)
    if world:
        print(f"world: {args.customers:,} customers, {args.days} days: {world['orders']:,} orders, "
              f"{world['returns']:,} returns")
    print(f"features build: {build['seconds']:7.1f} s   peak {build['peak_mb']:6.0f} MB")
    print(f"training set:  {trainset['seconds']:7.1f} s   peak {trainset['peak_mb']:6.0f} MB   "
          f"{trainset['rows']:,} returns, {trainset['positives']:,} labelled fraud/abuse")
    print(f"training:      {fitted['seconds']:7.1f} s   peak {fitted['peak_mb']:6.0f} MB   {fitted['trees']} trees "
          f"in each of {fitted['members']} members on {fitted['rows']['train']:,} rows (validation "
          f"{fitted['rows']['validation']:,}); LightGBM alone on the same matrix, one member's trees "
          f"{fitted['lightgbm_only_seconds']:.1f} s; the fit ran LightGBM {fitted['runs']} times "
          f"({fitted['seconds'] / (fitted['lightgbm_only_seconds'] * fitted['runs']):.2f}x the runs alone)")


if __name__ == "__main__":
    main()
