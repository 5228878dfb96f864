"""A scoring service on the trained world: real features (materialised), the real registered model, and a
migrated evidence database on SQLite or on the real PostgreSQL; API keys for each role."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from fraud_service import bootstrap
from fraud_service.access.keys import create_key
from fraud_service.config import Settings
from fraud_service.featurestore.source import FeatureSource
from fraud_service.scoring.policy import Policy
from fraud_service.store.migrate import upgrade
from tests.conftest import TrainedWorld
from tests.store.conftest import postgres_engine
from training.datasets.replay import Replay

ROLES = ("scoring", "analyst", "admin", "metrics")


_REPLAYS: dict[Path, Replay] = {}


def body_from_dataset(dataset: Path, source: str, **changes: Any) -> dict[str, Any]:
    """The assess request body for the dataset's return SOURCE, with CHANGES applied."""
    if dataset not in _REPLAYS:
        _REPLAYS[dataset] = Replay(dataset)
    return {**_REPLAYS[dataset].body(source), **changes}


@pytest.fixture
def source_return(api: Api) -> str:
    """A mail return of the dataset (goods come back, so every decision band is reachable)."""
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    mail = returns[(returns["channel"] == "mail") & (returns["return_type"] == "return")]
    return str(mail.sort_values("return_id")["return_id"].iloc[0])


def fresh(api: Api, source: str, **changes: Any) -> dict[str, Any]:
    """SOURCE's request under a new return id (each test's assessments are its own)."""
    return api.body(source, return_id=f"t-{uuid.uuid4().hex[:12]}", **changes)


@pytest.fixture(scope="session")
def serving_home(trained_world: TrainedWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained world's FRAUD_HOME (warehouse, features, model) copied, with the online store materialised."""
    home = tmp_path_factory.mktemp("serving") / "home"
    shutil.copytree(trained_world.settings.home, home)
    FeatureSource(Settings.from_env({"FRAUD_HOME": str(home)})).materialize()
    return home


def private_home(serving_home: Path, target: Path) -> Path:
    shutil.copytree(serving_home, target)
    return target


@dataclass
class Api:
    """A running app, its service, and a key per role."""

    app: Flask
    service: bootstrap.Service
    keys: dict[str, str]
    dataset: Path
    backend: str

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def headers(self, role: str = "scoring", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}", **extra}

    def body(self, source: str, **changes: Any) -> dict[str, Any]:
        return body_from_dataset(self.dataset, source, **changes)

    def assess(self, body: Any, role: str = "scoring", **kwargs: Any) -> Any:
        return self.client.post("/v1/returns/assess", json=body, headers=self.headers(role), **kwargs)


def make_api(settings: Settings, dataset: Path, backend: str, freshness: bool = False) -> Api:
    service = bootstrap.build(settings, freshness=freshness, dispatch=False, assign=False)  # tests run their own
    upgrade(service.engine)
    service.problems[:] = [p for p in service.problems if "schema" not in p]  # migrated just now
    assert not service.problems, service.problems
    keys = {}
    for role in ROLES:
        keys[role] = create_key(service.uow(), role, f"test {role}", "test")
    app = create_app(settings, {"SERVICE": service, "TESTING": True})
    return Api(app, service, keys, dataset, backend)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, serving_home: Path, trained_world: TrainedWorld,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The scoring service on SQLite and on PostgreSQL (live-fact writes off, so vectors stay as materialised)."""
    env = {"FRAUD_HOME": str(serving_home)}
    engines = None
    if request.param == "postgres":
        engines = postgres_engine()
        engine = next(engines)
        env["FRAUD_DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
        engine.dispose()
    else:
        env["FRAUD_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('evidence') / 'fraud.db'}"
    api = make_api(Settings.from_env(env), trained_world.dataset, request.param)
    yield api
    api.service.close()
    if engines is not None:
        next(engines, None)


@pytest.fixture
def set_policy(api: Api) -> Iterator[Callable[[Policy], None]]:
    """Swap the assessor's policy for one test; the model's own policy comes back afterwards."""
    original = api.service.assessor.policy

    def swap(policy: Policy) -> None:
        api.service.assessor.policy = policy

    yield swap
    api.service.assessor.policy = original
