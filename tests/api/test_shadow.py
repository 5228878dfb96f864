"""Shadow scoring: a candidate scores every live request beside production, stored with the assessment, and
never changes an answer; `models compare` reads it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from api.cli.main import main
from fraud_service.config import Settings
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import cost_of
from fraud_service.store.schema import Assessment, EvidenceEvent, ShadowScore
from models.registry import ModelRegistry
from tests.api.conftest import Api, make_api, private_home
from tests.conftest import TRAIN_UNTIL, TrainedWorld

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
POSTED = 120


@pytest.fixture
def two_models(serving_home: Path, trained_world: TrainedWorld, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, Settings]]:
    """v0001 in production; v0002 the same trees with a policy that reviews everything from 0.05."""
    home = private_home(serving_home, tmp_path / "home")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"})
    registry = ModelRegistry(settings.models_dir)
    record = registry.load("production")
    registry.register(record.model_text(), {**record.manifest, "note": "shadow"},
                      {**record.policy, "inspect_from": 0.05, "credit_from": 0.05, "review_from": 0.05,
                       "deny_from": 1.0})
    monkeypatch.setenv("FRAUD_HOME", str(home))
    monkeypatch.setenv("FRAUD_DATABASE_URL", settings.database_url)
    api = make_api(settings, trained_world.dataset, "sqlite")
    yield api, settings
    api.service.close()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_shadow_scores_every_request_beside_production_and_changes_no_answer(two_models, capsys):
    api, settings = two_models
    code, out, err = _cli(capsys, "models", "shadow", "v0002", "--reason", "try the wide policy")
    assert code == 0, err
    assert "v0002 now scores every live request beside production" in out
    shadow = api.service.assessor.shadow
    shadow.check()  # a worker follows the alias within its interval; here at once
    assert shadow.active and shadow.version == "v0002"

    returns = pd.read_parquet(api.dataset / "returns.parquet")
    ids = returns[returns["requested_at"] >= TRAIN_UNTIL]["return_id"].head(POSTED)
    answers = [api.assess(api.body(i)).get_json() for i in ids]
    assert {a["model_version"] for a in answers} == {"v0001"} and all("shadow" not in json.dumps(a) for a in answers)
    shadow.drain()

    candidate = Scorer.from_registry(ModelRegistry(settings.models_dir), "v0002")
    with api.service.sessions() as session:
        rows = session.execute(select(Assessment, ShadowScore, EvidenceEvent.payload)
                               .join(ShadowScore, ShadowScore.assessment_id == Assessment.id)
                               .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)).all()
        events = session.execute(select(EvidenceEvent.kind, EvidenceEvent.payload)
                                 .where(EvidenceEvent.kind.like("model_shadow%"))).all()
    assert len(rows) == POSTED
    for assessment, scored, payload in rows:
        features = json.loads(payload)["features"]
        assert scored.score == pytest.approx(float(candidate.probability(candidate.row(features))[0]), abs=1e-12)
        assert scored.model_version == "v0002" and scored.policy_version == "v0002.p1"
        expected = "approve" if scored.score < 0.05 else "review"
        assert scored.decision == expected or (scored.decision in ("review", "deny") and assessment.decision in (
            "review", "deny"))  # a hard rule or a list raises both alike
    assert [k for k, _ in events] == ["model_shadow_on"]
    assert json.loads(events[0][1])["reason"] == "try the wide policy"

    code, out, err = _cli(capsys, "models", "compare", "--from", "now-1d", "--json")
    assert code == 0, err
    report = json.loads(out)
    same = sum(a.decision == s.decision for a, s, _ in rows)
    assert report["assessments"] == POSTED and report["agreement"] == pytest.approx(same / POSTED)
    assert sum(c["returns"] for c in report["changes"]) == POSTED - same
    held = sum(a.refund_amount for a, s, _ in rows if a.decision == "approve" and s.decision != "approve")
    assert report["money_moved"]["newly_held"] == pytest.approx(round(held, 2))
    costs = {"review_cost": 12.0}
    assert cost_of("review", False, 80.0, costs) == 12.0 and cost_of("approve", True, 80.0, costs) == 80.0
    code, out, _ = _cli(capsys, "models", "compare", "--from", "now-1d")
    assert f"{POSTED:,} assessments scored by production v0001 and shadow v0002" in out
    assert "agreement " in out and "money the change would move" in out
    code, out, _ = _cli(capsys, "models", "compare", "--from", "2000-01-01", "--to", "2000-02-01")
    assert out.startswith("0 assessments scored by production and a shadow from 2000-01-01T00:00:00 to "), out

    code, out, _ = _cli(capsys, "models", "shadow", "--off")
    assert code == 0 and "shadow scoring with v0002 is off" in out
    shadow.check()
    assert not shadow.active
    api.assess(api.body(returns[returns["requested_at"] >= TRAIN_UNTIL]["return_id"].iloc[POSTED]))
    shadow.drain()
    with api.service.sessions() as session:
        assert len(session.execute(select(ShadowScore.assessment_id)).all()) == POSTED


def test_production_cannot_shadow_itself_and_bad_arguments_are_refused(two_models, capsys):
    code, _, err = _cli(capsys, "models", "shadow", "v0001")
    assert code == 1 and "v0001 is the production model" in err
    code, _, err = _cli(capsys, "models", "shadow", "--off")
    assert code == 1 and "there is no shadow model to turn off" in err
    code, _, err = _cli(capsys, "models", "shadow", "v0002", "--off")
    assert code == 1 and "give a model version V, or --off" in err
    code, _, err = _cli(capsys, "models", "shadow", "v0009")
    assert code == 1 and "no model version 'v0009'" in err


def test_a_shadow_that_failed_to_load_is_tried_again_once_mended(two_models, capsys):
    """A shadow model damaged when it was named stayed off after it was mended: its alias had not moved."""
    api, settings = two_models
    model = ModelRegistry(settings.models_dir).root / "versions" / "v0002" / "model.txt"
    original = model.read_text()
    assert _cli(capsys, "models", "shadow", "v0002", "--reason", "try it")[0] == 0
    model.write_text(original.replace("tree", "TREE", 1))
    shadow = api.service.assessor.shadow
    shadow.check()
    assert not shadow.active
    shadow.check()
    assert not shadow.active  # nothing changed: not loaded again
    model.write_text(original)
    shadow.check()
    assert shadow.active and shadow.version == "v0002"
