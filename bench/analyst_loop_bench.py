"""Learning from what analysts decide: does a retrain on six weeks of their decisions beat the model before it?

The protocol of issue 20, on generated worlds (one per seed):

1. M0 is trained on labels known at T0 (the world's own labels: chargebacks, inspections, ...), by each
   trainer (below).
2. For six weeks after T0, analysts review the top 3% of each day's returns by the weighted M0's score and
   label each one correctly (the generator's truth), two days after its request.
3. At T1 = T0 + six weeks + two days, those labels join the world's own labels known by then, the features
   are rebuilt, and M1 is trained on labels known at T1 twice: with unlabelled returns as legit (`legit`, the
   old trainer: the last label-delay days left out, every other unlabelled return legit) and weighted by how
   sure time has made them (`weighted`, the default: `trainset.arrival_weights`). Each M1 is compared with the
   M0 of its own trainer.
4. All three are judged on the four weeks after T1 against the truth (average precision), where none of them
   has seen a label; beside them, a control: the weighted retrain at T1 without the analysts' labels (what the
   six weeks of time add on their own).

The injector and world settings are the generator's defaults but for the size; nothing here was tuned on
its result. Prints per seed and the mean and spread of M1 - M0 for each trainer.

    .venv/bin/python bench/analyst_loop_bench.py                         # 3 seeds, 30,000 customers, 365 days
    .venv/bin/python bench/analyst_loop_bench.py --seeds 1 --customers 12000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fraud_service.config import Settings  # noqa: E402
from fraud_service.data.ingest import ingest  # noqa: E402
from fraud_service.data.warehouse import Warehouse  # noqa: E402
from fraud_service.featurestore.source import FeatureSource  # noqa: E402
from fraud_service.scoring.model import Scorer  # noqa: E402
from training.datasets.synthetic import WorldConfig, generate  # noqa: E402
from training.datasets.writing import write_parquet  # noqa: E402
from training.trainer import TrainConfig  # noqa: E402
from training.trainset import Window, current_snapshot, feature_frame  # noqa: E402
from training.workflow import train  # noqa: E402

REVIEW_WEEKS, LABEL_DAYS, TEST_WEEKS, SHARE = 6, 2, 4, 0.03


def _ap(frame: pd.DataFrame, scores: np.ndarray, truth: pd.DataFrame) -> float:
    from sklearn.metrics import average_precision_score

    y = frame[["return_id"]].merge(truth, on="return_id", how="left")["truth"].isin(["fraud", "abuse"])
    return float(average_precision_score(y.to_numpy(), scores))


def reviews(frame: pd.DataFrame, scores: np.ndarray, truth: pd.DataFrame) -> pd.DataFrame:
    """The top SHARE of each day's returns by score, labelled with the truth LABEL_DAYS after the request."""
    day = frame["requested_at"].dt.floor("D")
    picked = []
    for _, group in frame.assign(score=scores, day=day).groupby("day"):
        picked.append(group.nlargest(max(1, int(np.ceil(SHARE * len(group)))), "score"))
    chosen = pd.concat(picked)[["return_id", "requested_at"]].merge(truth, on="return_id")
    return pd.DataFrame({"return_id": chosen["return_id"],
                         "label": np.where(chosen["truth"].isin(["fraud", "abuse"]), chosen["truth"], "legit"),
                         "labelled_at": chosen["requested_at"] + pd.Timedelta(days=LABEL_DAYS),
                         "source": "analyst"})


def one_seed(seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    started = time.perf_counter()
    world = root / f"world-{seed}"
    config = WorldConfig(customers=args.customers, days=args.days, seed=seed, orders_per_year=args.orders_per_year)
    generate(config, world)
    truth = pd.read_parquet(world / "ground_truth.parquet")[["return_id", "truth"]]
    settings = Settings.from_env({"FRAUD_HOME": str(root / f"home-{seed}")})
    ingest(world, Warehouse(settings.warehouse_dir))
    FeatureSource(settings).build()
    end = config.end_ts()
    t1 = end - pd.Timedelta(weeks=TEST_WEEKS) - pd.Timedelta(days=1)
    t0 = t1 - pd.Timedelta(weeks=REVIEW_WEEKS, days=LABEL_DAYS)
    test = Window(t1, t1 + pd.Timedelta(weeks=TEST_WEEKS))
    snapshot = current_snapshot(settings.warehouse_dir)
    test_frame = feature_frame(FeatureSource(settings), snapshot, test)
    before = {}
    for mode in ("legit", "weighted"):  # each trainer's own model before the reviews
        m0 = train(settings, t0, test_from=test.start, test_until=test.end, register=False,
                   config=TrainConfig(unlabelled=mode))
        before[mode] = Scorer(f"m0-{mode}", m0.trained.manifest_part(), m0.trained.model_text)
    # the analysts review what the production model of the day (the weighted one) ranks highest
    review = feature_frame(FeatureSource(settings), snapshot, Window(t0, t0 + pd.Timedelta(weeks=REVIEW_WEEKS)))
    labelled = reviews(review, before["weighted"].score_frame(review), truth)
    # the control: the weighted retrain at T1 without the analysts' labels (what time alone adds)
    control = train(settings, t1, test_from=test.start, test_until=test.end, register=False, config=TrainConfig())
    ap_control = _ap(test_frame, Scorer("c", control.trained.manifest_part(), control.trained.model_text)
                     .score_frame(test_frame), truth)

    with_labels = root / f"world-{seed}-reviewed"
    shutil.copytree(world, with_labels)
    labels = pd.read_parquet(world / "labels.parquet")
    write_parquet(pd.concat([labels, labelled.astype({"labelled_at": labels["labelled_at"].dtype})],
                            ignore_index=True), with_labels / "labels.parquet")
    ingest(with_labels, Warehouse(settings.warehouse_dir))
    FeatureSource(settings).build()
    snapshot = current_snapshot(settings.warehouse_dir)
    test_frame = feature_frame(FeatureSource(settings), snapshot, test)
    out: dict[str, Any] = {"seed": seed, "t0": t0.isoformat(), "t1": t1.isoformat(), "reviewed": len(labelled),
                           "reviewed_bad": int((labelled["label"] != "legit").sum()),
                           "test_returns": len(test_frame),
                           "ap": {**{f"m0_{m}": _ap(test_frame, before[m].score_frame(test_frame), truth)
                                     for m in before}, "m1_weighted_no_reviews": ap_control}}
    for mode in ("legit", "weighted"):
        m1 = train(settings, t1, test_from=test.start, test_until=test.end, register=False,
                   config=TrainConfig(unlabelled=mode))
        model1 = Scorer(f"m1-{mode}", m1.trained.manifest_part(), m1.trained.model_text)
        out["ap"][f"m1_{mode}"] = _ap(test_frame, model1.score_frame(test_frame), truth)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="worlds, seeds 101, 102, ... (default 3)")
    parser.add_argument("--customers", type=int, default=30000, help="per world (default 30,000)")
    parser.add_argument("--days", type=int, default=365, help="per world (default 365)")
    parser.add_argument("--orders-per-year", type=float, default=8.0, help="per customer (default 8)")
    parser.add_argument("--keep", help="keep the worlds and homes in this directory")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="analyst-loop-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [one_seed(101 + i, args, root) for i in range(args.seeds)]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {"seeds": len(results)}
    for mode in ("legit", "weighted", "weighted_no_reviews"):
        base = f"m0_{mode.split('_')[0]}"
        deltas = [r["ap"][f"m1_{mode}"] - r["ap"][base] for r in results]
        summary[f"m1_{mode}_minus_{base}"] = {"mean": statistics.mean(deltas), "min": min(deltas), "max": max(deltas),
                                         "per_seed": [round(d, 4) for d in deltas]}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
