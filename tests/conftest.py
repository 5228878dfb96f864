"""Shared fixtures: settings on a temporary FRAUD_HOME, a small generated world, a trained world, a CLI runner."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from api.cli.main import main
from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import FeatureSource
from training.datasets.synthetic import WorldConfig, generate
from training.workflow import TrainResult, train

SERVICES = {"postgres": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379)}
SMALL_WORLD = WorldConfig(customers=600, days=120, seed=11)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


CHROMIUM = Path("/usr/bin/chromium")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked postgres/redis/browser/spark skip when what they need is missing, but fail under CI=true."""
    missing = [f"{marker} is not reachable on {host}:{port}" for marker, (host, port) in SERVICES.items()
               if item.get_closest_marker(marker) and not _reachable(host, port)]
    if item.get_closest_marker("browser") and not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is not installed (make test installs Debian's chromium package)")
    if item.get_closest_marker("spark") and shutil.which("java") is None:
        missing.append("java is not on PATH (Spark needs Java 17 or later)")
    for message in missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on an empty FRAUD_HOME (it exists: the CLI refuses a home that does not, but to set one up); the
    environment points there too, for the CLI."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("FRAUD_HOME", str(home))
    for name in ("FRAUD_DATABASE_URL", "FRAUD_ONLINE_STORE", "FRAUD_REDIS_URL", "FRAUD_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    return Settings.from_env()


@pytest.fixture
def warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse_dir)


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated world, made once per test session; copy it before changing it."""
    out = tmp_path_factory.mktemp("world") / "small"
    generate(SMALL_WORLD, out)
    return out


@pytest.fixture
def world_copy(small_world_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the small world that a test may corrupt."""
    target = tmp_path / "dataset"
    shutil.copytree(small_world_dir, target)
    return target


@pytest.fixture
def cli(settings: Settings, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `fraud-service ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(["--quiet", *args])
        except SystemExit as exc:  # argparse usage errors and --help
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


TRAINING_WORLD = WorldConfig(customers=4000, days=240, seed=5, orders_per_year=8.0)
TRAIN_UNTIL = pd.Timestamp("2025-07-01", tz="UTC")


@dataclass
class TrainedWorld:
    settings: Settings
    dataset: Path
    result: TrainResult


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> TrainedWorld:
    root = tmp_path_factory.mktemp("trained")
    generate(TRAINING_WORLD, root / "world")
    settings = Settings.from_env({"FRAUD_HOME": str(root / "home")})
    ingest(root / "world", Warehouse(settings.warehouse_dir))
    FeatureSource(settings).build()
    result = train(settings, TRAIN_UNTIL, truth_path=root / "world" / "ground_truth.parquet")
    return TrainedWorld(settings, root / "world", result)
