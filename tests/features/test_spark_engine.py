"""`features build --engine spark` writes the DuckDB pipeline's rows, bit for bit; the training set's point-in-time
retrieval then runs on Spark too and gives Feast's DuckDB retrieval's frame, and score-batch agrees on either.

Spark runs in local mode (Java 17 on the machine, pyspark installed by `make venv`), bound to loopback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import FeatureSource, entity_rows
from tests.conftest import TRAIN_UNTIL, TrainedWorld
from training.batch import decide_window
from training.trainset import Window

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def _rows(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    keys = list(frame.columns[:2])  # the entity key and event_timestamp (for *_seen: token and customer)
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def test_spark_builds_the_same_rows_and_score_batch_agrees(trained_world: TrainedWorld, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_world.settings.home, home)
    settings = Settings.from_env({"FRAUD_HOME": str(home)})
    duckdb_dir = tmp_path / "duckdb-features"
    shutil.copytree(trained_world.settings.home / "features", duckdb_dir)

    manifest = FeatureSource(settings).build(engine="spark")

    assert manifest["engine"] == "spark"
    built = sorted(p.name for p in duckdb_dir.glob("*.parquet") if not p.name.startswith("empty_"))
    assert built == sorted(p.name for p in (home / "features").glob("*.parquet") if not p.name.startswith("empty_"))
    assert len(built) == 9  # five entities and four *_seen memberships
    for name in built:
        want, got = _rows(duckdb_dir / name), _rows(home / "features" / name)
        assert list(got.columns) == list(want.columns), name
        assert dict(got.dtypes) == dict(want.dtypes), name
        assert len(got) == len(want) > 0, name
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)  # every value, bit for bit

    snapshot = Warehouse(settings.warehouse_dir).current()
    probe = entity_rows(snapshot.read("returns").sample(1500, random_state=8), snapshot.read("orders"),
                        snapshot.read("order_items"))
    on_spark = FeatureSource(settings).historical(probe)  # built on Spark: retrieved on Spark
    pd.testing.assert_frame_equal(on_spark, FeatureSource(trained_world.settings).historical(probe), check_exact=True)

    window = Window(TRAIN_UNTIL, TRAIN_UNTIL + pd.Timedelta(days=60))
    decided_duckdb = decide_window(trained_world.settings, window)[0].set_index("return_id")
    decided_spark = decide_window(settings, window)[0].set_index("return_id").loc[decided_duckdb.index]
    assert len(decided_duckdb) > 200
    assert (decided_spark["score"] - decided_duckdb["score"]).abs().max() <= 1e-9
    assert (decided_spark["decision"] == decided_duckdb["decision"]).all()
