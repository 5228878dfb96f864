"""Quality check on real data: Online Retail with fraud injected by other hands than the generator.

Imports ../shared/data/online_retail.parquet, injects bust-out claims, mule refunds to shared
gift cards and phantom returnless refunds (training/datasets/injection.py), then runs the
ordinary data-scientist path with the CLI: ingest, features build, train (out of time), and
prints the model beside the rules baselines, with recall by injected typology.

    .venv/bin/python bench/online_retail_injected.py [--train-until 2011-09-01] [--seed 101]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "online_retail.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(SOURCE))
    parser.add_argument("--train-until", default="2011-09-01")
    parser.add_argument("--seed", type=int, default=101)
    args = parser.parse_args()
    import os

    from api.cli.main import main as cli
    from training.datasets.injection import InjectionConfig, inject

    with tempfile.TemporaryDirectory(prefix="bench-uci-") as tmp:
        os.environ["FRAUD_HOME"] = f"{tmp}/home"
        os.environ.pop("FRAUD_MODEL_DIR", None)
        if cli(["-q", "import-online-retail", args.source, "--out", f"{tmp}/uci"]) != 0:
            raise SystemExit("import failed")
        summary = inject(Path(tmp) / "uci", Path(tmp) / "injected", InjectionConfig(seed=args.seed))
        print("injected:", json.dumps(summary), flush=True)
        truth = f"{tmp}/injected/ground_truth.parquet"
        for argv in (["ingest", f"{tmp}/injected"], ["features", "build"],
                     ["train", "--train-until", args.train_until, "--ground-truth", truth]):
            if cli(["-q", *argv]) != 0:
                raise SystemExit(f"{' '.join(argv)} failed")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
