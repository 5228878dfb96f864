"""End to end: analysts close cases as fraud, `labels sync` puts their labels in the warehouse, and the next
`fraud-service train` learns from them (its manifest counts the analysts' positives)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.cli.main import main
from fraud_service.config import Settings
from fraud_service.data.warehouse import Warehouse
from models.registry import ModelRegistry
from tests.api.conftest import make_api, private_home
from tests.api.test_assess import band_policy, expected
from tests.conftest import TRAIN_UNTIL, TrainedWorld
from training.trainset import positives_by_source

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _unlabelled_returns(snapshot_dir: Path, n: int) -> pd.DataFrame:
    """N returns of different customers, well inside the training window, that carry no label yet."""
    returns = pd.read_parquet(snapshot_dir / "returns.parquet")
    labels = pd.read_parquet(snapshot_dir / "labels.parquet")
    window = returns[(returns["requested_at"] >= TRAIN_UNTIL - pd.Timedelta(days=120))
                     & (returns["requested_at"] < TRAIN_UNTIL - pd.Timedelta(days=60))
                     & ~returns["return_id"].isin(labels["return_id"])]
    return window.drop_duplicates("customer_id").sort_values("return_id").head(n)


def test_analysts_labels_reach_the_next_training_run(serving_home: Path, trained_world: TrainedWorld,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    home = private_home(serving_home, tmp_path / "home")
    env = {"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}"}
    settings = Settings.from_env(env)
    api = make_api(settings, trained_world.dataset, "sqlite")
    before = Warehouse(settings.warehouse_dir).current()
    assert before is not None
    chosen = _unlabelled_returns(before.path, 3)
    assert len(chosen) == 3
    try:
        case_ids = []
        for return_id in chosen["return_id"]:
            body = api.body(return_id)
            api.service.assessor.policy = band_policy(expected(api, body)[2], "review")
            got = api.assess(body)
            assert got.status_code == 201, got.get_json()
            case_ids.append(got.get_json()["case_id"])
        # the analysts decide a day after each request (the world's own time, so the labels fall before the cutoff)
        decided_at = {c: t for c, t in zip(case_ids, chosen["requested_at"], strict=True)}
        for case_id in case_ids:
            when = decided_at[case_id].to_pydatetime() + dt.timedelta(days=1)
            api.service.clock = lambda when=when: when
            closed = api.client.post(f"/v1/cases/{case_id}/close", headers=api.headers("analyst"),
                                     json={"label": "fraud", "reason": "empty box, weighed at the depot"})
            assert closed.status_code == 200, closed.get_json()
    finally:
        api.service.close()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["-q", "labels", "sync"]) == 0
    assert "copied 3 label(s) and 0 inspection(s)" in capsys.readouterr().out
    after = Warehouse(settings.warehouse_dir).current()
    assert after is not None and after.name != before.name
    labels = after.read("labels")
    assert labels is not None
    assert len(labels) == before.rows("labels") + 3  # appended, nothing else touched
    added = labels.iloc[before.rows("labels"):]
    assert sorted(added["return_id"]) == sorted(chosen["return_id"])
    assert set(added["label"]) == {"fraud"} and set(added["source"]) == {"analyst"}
    assert main(["-q", "labels", "sync"]) == 0  # nothing twice
    assert "no label or inspection needed copying" in capsys.readouterr().out

    assert main(["-q", "train", "--train-until", TRAIN_UNTIL.date().isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"features rebuilt from snapshot {after.name}" in out
    registry = ModelRegistry(settings.models_dir)
    newest = registry.versions()[-1]
    manifest: dict[str, Any] = registry.manifest(newest)
    assert manifest["data"]["snapshot"] == after.name
    # the returns the model trained on, from its manifest; the analysts' three are among its positives
    window = manifest["training_window"]
    returns = after.read("returns", ["return_id", "requested_at"])
    assert returns is not None
    trained_on = returns.loc[(returns["requested_at"] >= pd.Timestamp(window["from"]))
                             & (returns["requested_at"] < pd.Timestamp(window["rows_until"])), "return_id"]
    assert set(chosen["return_id"]) <= set(trained_on)
    with_them = positives_by_source(after, TRAIN_UNTIL, trained_on)
    without = positives_by_source(before, TRAIN_UNTIL, trained_on)
    assert manifest["positives_by_source"] == with_them
    assert with_them["analyst"] == without.get("analyst", 0) + 3
    assert sum(with_them.values()) == sum(without.values()) + 3
