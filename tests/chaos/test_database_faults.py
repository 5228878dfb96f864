"""PostgreSQL refused, then hung, behind a TCP proxy the test starts: assess answers 503 fast and stores nothing
for them, `/readyz` answers within a second, and the service recovers when the database does, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from api.app import create_app
from fraud_service import bootstrap
from fraud_service.access.keys import create_key
from fraud_service.config import Settings
from fraud_service.store import chain
from fraud_service.store.db import make_engine
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import Assessment
from tests.api.conftest import Api, make_api, private_home
from tests.conftest import TrainedWorld
from tests.proxy import FaultProxy
from tests.store.conftest import POSTGRES, scratch_database

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ASSESS_WITHIN_S = 2.0
READY_WITHIN_S = 1.0


@pytest.fixture
def behind_proxy(serving_home: Path, tmp_path: Path) -> Iterator[tuple[Settings, FaultProxy, Any]]:
    """Settings whose evidence database is a fresh, migrated PostgreSQL database reached through a FaultProxy, the
    proxy, and an engine on the same database that bypasses it (to see what was stored)."""
    with scratch_database() as name:
        direct = make_engine(f"{POSTGRES}/{name}")
        upgrade(direct)
        proxy = FaultProxy(("127.0.0.1", 5432))
        settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                      "FRAUD_DATABASE_URL": f"postgresql+psycopg://postgres@{proxy.address}/{name}"})
        try:
            yield settings, proxy, direct
        finally:
            proxy.close()
            direct.dispose()


@pytest.fixture
def proxied(behind_proxy: tuple[Settings, FaultProxy, Any], trained_world: TrainedWorld
            ) -> Iterator[tuple[Api, FaultProxy, Any]]:
    """A service on `behind_proxy`'s database, the proxy, and the direct engine."""
    settings, proxy, direct = behind_proxy
    api = make_api(settings, trained_world.dataset, "postgres")
    try:
        yield api, proxy, direct
    finally:
        api.service.close()


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


def test_a_service_started_while_the_database_was_down_is_ready_once_it_answers(
        behind_proxy: tuple[Settings, FaultProxy, Any], trained_world: TrainedWorld) -> None:
    settings, proxy, _ = behind_proxy
    proxy.refuse()
    service = bootstrap.build(settings, freshness=False, dispatch=True, assign=True)
    try:
        assert [p for p in service.problems if "evidence database" in p] == [
            "the evidence database cannot be reached (OperationalError)"]
        assert service.dispatcher is None and service.assigner is None  # not on a schema nobody checked
        client = create_app(settings, {"SERVICE": service, "TESTING": True}).test_client()
        assert client.get("/readyz").status_code == 503
        proxy.forward()
        api = Api(client.application, service, {}, trained_world.dataset, "postgres")
        _until_ready(api)  # it stayed 503 for the worker's life: the start's problem was never looked at again
        assert service.problems == []
        assert service.dispatcher is not None and service.assigner is not None  # started once it was checked
        key = create_key(service.uow(), "scoring", "after the outage", "test")
        body = api.body(str(pd.read_parquet(api.dataset / "returns.parquet")["return_id"].iloc[0]),
                        return_id="chaos-started-down")
        assert client.post("/v1/returns/assess", json=body, headers={"Authorization": f"Bearer {key}"}
                           ).status_code == 201
    finally:
        service.close()
