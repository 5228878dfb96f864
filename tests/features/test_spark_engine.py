"""`features build --engine spark` writes the DuckDB pipeline's rows, bit for bit; the training set's point-in-time
retrieval then runs on Spark too and gives Feast's DuckDB retrieval's frame, and score-batch agrees on either.

Spark runs in local mode (Java 17 on the machine, pyspark installed by `make venv`), bound to loopback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import FeatureSource, entity_rows
from tests.conftest import TRAIN_UNTIL, TrainedWorld
from training.batch import decide_window
from training.datasets.synthetic import WorldConfig, generate
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


JITTERED = {"customers": ["created_at"], "orders": ["placed_at", "delivered_at"], "returns": ["requested_at"],
            "labels": ["labelled_at"], "inspections": ["inspected_at"]}


def test_sub_second_times_give_the_same_epochs_and_medians(tmp_path: Path) -> None:
    """Generated worlds have whole seconds; real deliveries do not. DuckDB turns a time into seconds as whole
    milliseconds / 1000 + microseconds / 1e6, which differs in the last bit from microseconds / 1e6 for about a
    quarter of times: the account and first-seen epochs and the days-to-return median must follow it."""
    generate(WorldConfig(customers=600, days=120, seed=11), tmp_path / "world")
    rng = np.random.default_rng(3)
    for table, columns in JITTERED.items():
        path = tmp_path / "world" / f"{table}.parquet"
        frame = pd.read_parquet(path)
        shift = pd.to_timedelta(rng.integers(0, 1_000_000, len(frame)), unit="us")  # one shift per row keeps order
        for column in columns:
            frame[column] = frame[column] + shift
        frame.to_parquet(path, index=False)
    built = {}
    for engine in ("duckdb", "spark"):
        settings = Settings.from_env({"FRAUD_HOME": str(tmp_path / engine)})
        ingest(tmp_path / "world", Warehouse(settings.warehouse_dir))
        FeatureSource(settings).build(engine=engine)
        built[engine] = settings.home / "features"
    customers = _rows(built["duckdb"] / "customer.parquet")
    assert (customers["cust_created_epoch"] % 1 != 0).mean() > 0.9  # the times really are sub-second
    assert customers["cust_median_days_to_return_365d"].notna().sum() > 100
    for name in ("customer.parquet", "address_seen.parquet", "refund_seen.parquet"):
        pd.testing.assert_frame_equal(_rows(built["spark"] / name), _rows(built["duckdb"] / name), check_exact=True,
                                      obj=name)
