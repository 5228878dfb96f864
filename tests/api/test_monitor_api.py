"""Live monitoring on posted traffic: refund amounts shifted tenfold drift, the same world unshifted does not.

The CLI's `monitor --json`, the admin page /ui/monitor and the /metrics gauges give the same figures.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.cli.main import main
from fraud_service.config import Settings
from fraud_service.progress import SILENT
from tests.api.conftest import Api, make_api, private_home
from tests.api.test_ui import person, signed_in
from training import demo
from training.datasets.synthetic import WorldConfig

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
REFUND = ("rt_refund_amount", "rt_refund_to_order")
WORLD = WorldConfig.ending(dt.datetime.now(dt.UTC), 450, customers=4000, seed=12, fraud_share=0.03)


@dataclass
class Present:
    """A world that ends now, its latest returns held out of the history the model and features were built on."""

    home: Path
    dataset: Path
    held_out: list[str]


@pytest.fixture(scope="module")
def present(tmp_path_factory: pytest.TempPathFactory) -> Present:
    root = tmp_path_factory.mktemp("present")
    settings = Settings.from_env({"FRAUD_HOME": str(root / "home")})
    snapshot = demo.world(settings, WORLD, root / "world", SILENT, say=lambda _: None)
    demo.features(settings, snapshot, SILENT, say=lambda _: None)
    demo.model(settings, snapshot, root / "world", SILENT, say=lambda _: None)
    return Present(root / "home", root / "world", demo.held_out(root / "world"))


def _traffic(present: Present, tmp_path: Path, factor: float) -> Iterator[tuple[Api, Settings]]:
    """The held-out returns posted as live traffic, their refunds multiplied by FACTOR, into a fresh database."""
    home = private_home(present.home, tmp_path / "home")
    (home / "fraud.db").unlink(missing_ok=True)  # the demo's own database (a forced promotion) is not needed
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"})
    api = make_api(settings, present.dataset, "sqlite")
    try:
        for return_id in present.held_out:
            body = api.body(return_id)
            body["refund_amount"] = round(body["refund_amount"] * factor, 2)
            answer = api.assess(body)
            assert answer.status_code == 201, answer.get_json()
        yield api, settings
    finally:
        api.service.close()


@pytest.fixture
def unshifted(present: Present, tmp_path: Path) -> Iterator[tuple[Api, Settings]]:
    yield from _traffic(present, tmp_path, 1.0)


@pytest.fixture
def shifted(present: Present, tmp_path: Path) -> Iterator[tuple[Api, Settings]]:
    yield from _traffic(present, tmp_path, 10.0)


def _monitor_json(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict:
    monkeypatch.setenv("FRAUD_HOME", str(settings.home))
    monkeypatch.setenv("FRAUD_DATABASE_URL", settings.database_url)
    capsys.readouterr()
    assert main(["--quiet", "monitor", "--json", "--from", "now-1d"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tenfold_refunds_drift_the_refund_features_and_the_score(present, shifted, monkeypatch, capsys):
    _, settings = shifted
    report = _monitor_json(settings, monkeypatch, capsys)
    assert {"decisions", "friction", "review_precision", "label_delay", "score", "features"} <= set(report)
    assert report["decisions"]["returns"] == len(present.held_out) > 100
    for name in REFUND:
        assert report["features"][name]["drifted"] is True, (name, report["features"][name])
        assert report["features"][name]["psi"] > 1.0
    assert report["score"]["drifted"] is True and report["score"]["model_version"] == "v0001"


def test_unshifted_traffic_from_the_same_world_does_not_drift(present, unshifted, monkeypatch, capsys):
    api, settings = unshifted
    report = _monitor_json(settings, monkeypatch, capsys)
    assert report["decisions"]["returns"] == len(present.held_out)
    for name in REFUND:
        assert report["features"][name]["drifted"] is False, (name, report["features"][name])
    assert report["score"]["drifted"] is False, report["score"]
    rates = report["decisions"]["rates"]
    assert sum(rates[d] for d in ("approve", "approve_after_inspection", "store_credit_only", "review", "deny")) \
        == pytest.approx(1.0)

    page = _admin_page(api, "/ui/monitor")
    assert "Decision mix" in page and "Drift" in page and "rt_refund_amount" in page
    assert "Decision mix" in _admin_page(api, "/ui/monitor?days=%C2%B2")  # a superscript two: the default, not a 500
    metrics = api.client.get("/metrics", headers=api.headers("metrics")).get_data(as_text=True)
    psi = [line for line in metrics.splitlines()
           if line.startswith('fraud_monitor_feature_psi{feature="rt_refund_amount"')]
    assert len(psi) == 1 and float(psi[0].split()[-1]) == pytest.approx(report["features"]["rt_refund_amount"]["psi"])
    assert "fraud_monitor_score_drifted 0.0" in metrics
    assert 'fraud_monitor_decision_rate{decision="review"}' in metrics


def _admin_page(api: Api, path: str) -> str:
    client, _ = signed_in(api, person(api, "boss", role="admin"))
    answer = client.get(path)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    analyst, _ = signed_in(api, person(api, "ana"))
    assert analyst.get(path).status_code == 403
    return answer.get_data(as_text=True)


def test_an_unknown_window_is_refused(monkeypatch, capsys, present, tmp_path):
    home = private_home(present.home, tmp_path / "home")
    monkeypatch.setenv("FRAUD_HOME", str(home))
    monkeypatch.setenv("FRAUD_DATABASE_URL", f"sqlite:///{tmp_path / 'f.db'}")
    assert main(["--quiet", "db", "upgrade"]) == 0
    assert main(["--quiet", "monitor", "--from", "2026-02-01", "--to", "2026-01-01"]) == 1
    assert "the window must end after it starts" in capsys.readouterr().err
    assert main(["--quiet", "monitor", "--drift-threshold", "0"]) == 1
    assert "drift threshold must be a PSI above 0" in capsys.readouterr().err
