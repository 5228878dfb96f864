"""A small generated world, built and materialised, with a live-fact log beside it (a SQLite file in the home, and
FRAUD_LIVE_LOG's PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.live import LiveFacts
from fraud_service.featurestore.source import FeatureSource
from tests.store.conftest import BOTH, POSTGRES, scratch_database
from training.datasets.synthetic import WorldConfig, generate


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of a module that sets `LIVE_LOGS = BOTH` run on both kinds of live-fact log, others on SQLite; a test
    marked `live_logs(KIND, ...)` on those only."""
    if "live_log" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker("live_logs")
        kinds = getattr(metafunc.module, "LIVE_LOGS", ["sqlite"])
        if marked is not None:
            kinds = [k for k in BOTH if (k if isinstance(k, str) else k.values[0]) in marked.args]
        metafunc.parametrize("live_log", kinds, indirect=True)


@pytest.fixture
def live_log(request) -> Iterator[dict[str, str]]:
    """The environment choosing where the live-fact log is: the home's SQLite file, or a fresh PostgreSQL
    database (dropped afterwards)."""
    if request.param == "sqlite":
        yield {}
        return
    with scratch_database() as name:
        yield {"FRAUD_LIVE_LOG": f"{POSTGRES}/{name}"}


@pytest.fixture
def live_world(tmp_path, live_log):
    generate(WorldConfig(customers=1500, days=150, seed=41), tmp_path / "world")
    settings = Settings.from_env({"FRAUD_HOME": str(tmp_path / "home"), **live_log})
    ingest(tmp_path / "world", Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build()
    snapshot = Warehouse(settings.warehouse_dir).current()
    returns = snapshot.read("returns")
    opened = returns["requested_at"].max() + pd.Timedelta(hours=1)
    source.materialize(opened.to_pydatetime(), full=True)
    reader = source.reader()
    live = LiveFacts(source, reader)
    yield {"settings": settings, "source": source, "snapshot": snapshot, "opened": opened, "reader": reader,
           "live": live, "root": tmp_path}
    live.close()
    reader.close()
