"""PostgreSQL refused, then hung, behind a TCP proxy the test starts: assess answers 503 fast and stores nothing
for them, `/readyz` answers within a second, and the service recovers when the database does, without a restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text

from fraud_service.config import Settings
from fraud_service.store import chain
from fraud_service.store.db import make_engine
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import Assessment
from tests.api.conftest import Api, make_api, private_home
from tests.conftest import TrainedWorld
from tests.proxy import FaultProxy
from tests.store.conftest import POSTGRES

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ASSESS_WITHIN_S = 2.0
READY_WITHIN_S = 1.0


@pytest.fixture
def proxied(serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> Iterator[tuple[Api, FaultProxy, Any]]:
    """A service whose evidence database is a fresh PostgreSQL database reached through a FaultProxy, and an
    engine on the same database that bypasses the proxy (to see what was stored)."""
    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    direct = make_engine(f"{POSTGRES}/{name}")
    upgrade(direct)
    proxy = FaultProxy(("127.0.0.1", 5432))
    settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                  "FRAUD_DATABASE_URL": f"postgresql+psycopg://postgres@{proxy.address}/{name}"})
    api = make_api(settings, trained_world.dataset, "postgres")
    try:
        yield api, proxy, direct
    finally:
        api.service.close()
        proxy.close()
        direct.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _until_ready(api: Api, seconds: float = 15) -> None:
    """Poll /readyz until it says ready (the database is back); AssertionError after SECONDS."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if api.client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)  # polling for recovery, not timing anything
    raise AssertionError(api.client.get("/readyz").get_json())


def test_refused_then_hung_database_gives_fast_503s_stores_nothing_and_recovers(proxied: tuple[Api, FaultProxy, Any]
                                                                                ) -> None:
    api, proxy, direct = proxied
    sources = [str(s) for s in pd.read_parquet(api.dataset / "returns.parquet")["return_id"].iloc[:6]]

    def assess(n: int, return_id: str) -> Any:
        return api.assess(api.body(sources[n], return_id=return_id))

    assert assess(0, "chaos-before").status_code == 201

    proxy.refuse()
    refused, took = _timed(lambda: assess(1, "chaos-refused"))
    assert refused.status_code == 503 and took < ASSESS_WITHIN_S, (refused.get_json(), took)
    ready, took = _timed(lambda: api.client.get("/readyz"))
    assert ready.status_code == 503 and took < READY_WITHIN_S, took
    proxy.forward()
    _until_ready(api)
    assert assess(2, "chaos-after-refused").status_code == 201

    proxy.hang()
    hung = [_timed(lambda n=n: assess(3 + n, f"chaos-hung-{n}")) for n in range(2)]
    for response, took in hung:  # the second waits behind a writer that is stuck on the first: still bounded
        assert response.status_code == 503 and took < ASSESS_WITHIN_S, (response.get_json(), took)
        assert "no decision was made" in response.get_json()["message"]
    ready, took = _timed(lambda: api.client.get("/readyz"))
    assert ready.status_code == 503 and took < READY_WITHIN_S, took
    assert "did not answer" in ready.get_json()["checks"]["database"]["detail"]

    proxy.forward()  # the hang ends as partitions do: its connections are cut, new ones work
    _until_ready(api)
    again = assess(3, "chaos-hung-0")
    assert again.status_code == 201  # assessed now: the 503 before stored nothing, so this is no replay

    with direct.connect() as connection:
        stored = sorted(connection.execute(select(Assessment.return_id)).scalars())
    assert stored == ["chaos-after-refused", "chaos-before", "chaos-hung-0"]
    with direct.connect() as connection, connection.begin():
        from sqlalchemy.orm import Session

        verified = chain.verify(Session(bind=connection))
    assert verified.ok and verified.events >= 3
