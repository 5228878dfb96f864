"""Benchmark: one row's TreeSHAP and raw score, the flattened model (`fraud_service.scoring.treeshap`) against
LightGBM's.

Explains the same rows both ways in this process, alternating, and prints the median time per row of each,
their ratio, the largest difference between the two, and what flattening the model cost. Then the same for the
raw score (LightGBM's single-row entry point, as `Scorer` used it before the model is flattened, against
`TreeTables.raw`), twice: with the model's trees in the CPU's caches (rows one after another), and with them
evicted before each row (a 256 MB buffer written between rows, as in a request, where the parsing, the feature
read and the evidence write run between two scores). The rows are the point-in-time feature vectors of returns
from the home's dataset (what the service explains), scored by the home's production model.

    .venv/bin/python bench/treeshap_bench.py --home /work/bench-load      # a home built by bench/load_bench.py
    .venv/bin/python bench/treeshap_bench.py --home H --rows 500 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a FRAUD_HOME with a production model and its dataset")
    parser.add_argument("--rows", type=int, default=300, help="returns to explain (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="alternated passes over the rows (default 5)")
    args = parser.parse_args()

    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    from fraud_service.config import Settings
    from fraud_service.featurestore.source import FeatureSource, entity_rows
    from fraud_service.scoring.model import CONTRIB, Scorer, SingleRow
    from fraud_service.scoring.treeshap import TreeTables
    from models.registry import ModelRegistry

    settings = Settings.from_env({"FRAUD_HOME": args.home})
    scorer = Scorer.from_registry(ModelRegistry(settings.models_dir), "production")
    dataset = Path(args.home) / "dataset"
    returns = pd.read_parquet(dataset / "returns.parquet").sort_values("requested_at").tail(args.rows)
    orders = pd.read_parquet(dataset / "orders.parquet")
    items = pd.read_parquet(dataset / "order_items.parquet")
    x = scorer.matrix(FeatureSource(settings).historical(entity_rows(returns, orders, items)))

    started = time.perf_counter()
    tables = TreeTables.build(scorer.booster.dump_model())
    built = time.perf_counter() - started
    if tables is None:
        raise SystemExit(f"model {scorer.version} is not flattened (see fraud_service/scoring/treeshap.py)")
    started = time.perf_counter()
    tables.contributions(x[0])  # compiles, or loads the compiled kernels from numba's cache
    first = time.perf_counter() - started
    lightgbm = SingleRow(lgb.Booster(model_str=scorer.booster.model_to_string()), CONTRIB, hold_gil=False)

    def per_row(explain) -> float:
        started = time.perf_counter()
        for i in range(len(x)):
            explain(x[i:i + 1])
        return (time.perf_counter() - started) / len(x) * 1000

    times: dict[str, list[float]] = {"lightgbm": [], "flattened": []}
    for _ in range(args.repeats):
        times["lightgbm"].append(per_row(lightgbm.predict))
        times["flattened"].append(per_row(lambda row: tables.contributions(row[0])))
    ours = np.vstack([tables.contributions(row) for row in x])
    theirs = np.vstack([lightgbm.predict(x[i:i + 1]) for i in range(len(x))])
    lgb_ms, flat_ms = statistics.median(times["lightgbm"]), statistics.median(times["flattened"])
    print(f"model {scorer.version}: {scorer.booster.num_trees():,} trees, {scorer.booster.num_feature()} features, "
          f"deepest leaf {tables.depth}; {len(x)} rows x {args.repeats} alternated passes")
    print(f"flattening {built:.2f} s, first explanation {first:.2f} s (numba compile or cache load)")
    for label, name in (("LightGBM pred_contrib", "lightgbm"), ("flattened TreeSHAP", "flattened")):
        passes = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"{label:22s} median {statistics.median(times[name]):.3f} ms/row  (passes: {passes})")
    print(f"ratio {lgb_ms / flat_ms:.2f}x; largest difference {np.max(np.abs(ours - theirs)):.2e}")

    raw_scores(scorer, tables, x, args.repeats)


def raw_scores(scorer, tables, x, repeats: int) -> None:
    """The raw score of each row of X, LightGBM's single-row call against `TreeTables.raw`, alternated REPEATS times,
    with the trees in cache and evicted before each row; and whether the two agree to the bit."""
    import numpy as np

    from fraud_service.scoring.model import RAW_SCORE, SingleRow

    single = SingleRow(scorer.booster, RAW_SCORE, hold_gil=True)
    flat_raw = np.array([tables.raw(row) for row in x])
    lgb_raw = np.array([single.predict(x[i:i + 1])[0, 0] for i in range(len(x))])
    evict = np.zeros(32 * 1024 * 1024)  # 256 MB, beyond the caches

    def raw_per_row(score, cold: bool) -> float:
        total = 0.0
        for i in range(len(x)):
            if cold:
                evict[::8] += 1.0  # a write to every cache line
            started = time.perf_counter()
            score(x[i:i + 1])
            total += time.perf_counter() - started
        return total / len(x) * 1e6

    for cold in (False, True):
        raw_times: dict[str, list[float]] = {"lightgbm": [], "flattened": []}
        for _ in range(repeats):
            raw_times["lightgbm"].append(raw_per_row(single.predict, cold))
            raw_times["flattened"].append(raw_per_row(lambda row: tables.raw(row[0]), cold))
        state = "trees evicted before each row" if cold else "trees in cache"
        print(f"raw score, {state}:")
        for label, name in (("LightGBM single row", "lightgbm"), ("flattened", "flattened")):
            passes = ", ".join(f"{t:.1f}" for t in raw_times[name])
            print(f"  {label:20s} median {statistics.median(raw_times[name]):.1f} us/row  (passes: {passes})")
        print(f"  ratio {statistics.median(raw_times['lightgbm']) / statistics.median(raw_times['flattened']):.2f}x")
    print(f"raw scores equal to the bit: {int(np.sum(flat_raw == lgb_raw))} of {len(x)}")


if __name__ == "__main__":
    main()
