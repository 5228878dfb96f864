"""A small generated world, built and materialised, with a live-fact log beside it."""

from __future__ import annotations

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.live import LiveFacts
from fraud_service.featurestore.source import FeatureSource
from training.datasets.synthetic import WorldConfig, generate


@pytest.fixture
def live_world(tmp_path):
    generate(WorldConfig(customers=1500, days=150, seed=41), tmp_path / "world")
    settings = Settings.from_env({"FRAUD_HOME": str(tmp_path / "home")})
    ingest(tmp_path / "world", Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build()
    snapshot = Warehouse(settings.warehouse_dir).current()
    returns = snapshot.read("returns")
    opened = returns["requested_at"].max() + pd.Timedelta(hours=1)
    source.materialize(opened.to_pydatetime(), full=True)
    reader = source.reader()
    return {"settings": settings, "source": source, "snapshot": snapshot, "opened": opened, "reader": reader,
            "live": LiveFacts(source, reader), "root": tmp_path}
