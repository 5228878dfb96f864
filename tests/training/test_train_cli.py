"""`fraud-service train | evaluate | models | thresholds | score-batch` on a real generated world."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest

from fraud_service.featurestore.source import FeatureSource
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision
from models.registry import ModelRegistry
from tests.conftest import TRAIN_UNTIL
from training.trainer import TrainConfig
from training.trainset import Window, current_snapshot, feature_frame

pytestmark = pytest.mark.slow
DECISIONS = {d.value for d in Decision}


@pytest.fixture
def on_world(trained_world, tmp_path, monkeypatch):
    """The CLI pointed at the trained world, with a private copy of its model registry."""
    models = tmp_path / "models"
    shutil.copytree(trained_world.settings.models_dir, models)
    monkeypatch.setenv("FRAUD_HOME", str(trained_world.settings.home))
    monkeypatch.setenv("FRAUD_MODEL_DIR", str(models))
    return ModelRegistry(models)


def test_train_registers_a_candidate_reports_beside_the_baselines_and_prints_the_policy(cli, on_world, trained_world):
    code, out, err = cli("train", "--train-until", "2025-07-01", "--ground-truth",
                         str(trained_world.dataset / "ground_truth.parquet"))
    assert code == 0, err
    assert on_world.aliases() == {"production": "v0001", "candidate": "v0002"}
    assert "registered model v0002 (candidate)" in out
    for name in ("model", "rules", "rules+history"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "recall at a 2% review rate by true typology (model): account_takeover" in out
    assert "policy v0002.p1: inspect from" in out
    record = on_world.load("candidate")
    manifest = record.manifest
    assert manifest["label_cutoff"] == "2025-07-01T00:00:00+00:00"
    assert manifest["feature_service"] == "return_fraud_v1"
    assert manifest["data"]["snapshot"] == current_snapshot(trained_world.settings.warehouse_dir).name
    assert manifest["libraries"]["lightgbm"] == __import__("lightgbm").__version__
    # same data, same seed: the same model as the session's first training
    assert record.model_text() == on_world.load("v0001").model_text()
    report = trained_world.settings.home / "reports" / "train-v0002"
    page = (report / "report.html").read_text()
    for heading in ("Out of time, beside the baselines", "by true typology", "SHAP summary", "Precision-recall",
                    "Calibration", "Decision policy v0002.p1"):
        assert heading in page
    figures = json.loads((report / "report.json").read_text())
    assert set(figures["evaluation"]["candidates"]) == {"model", "rules", "rules+history", "production v0001"}
    assert len(figures["figures"]["mean_abs_shap"]) == 20


def test_train_until_now_keeps_the_last_days_as_its_test_window_and_judges_the_gate(cli, on_world, trained_world):
    code, out, err = cli("train", "--train-until", "now", "--test-days", "20")
    assert code == 0, err
    snapshot = current_snapshot(trained_world.settings.warehouse_dir)
    last = snapshot.read("returns")["requested_at"].max()
    cutoff = pd.Timestamp(on_world.load("v0002").manifest["label_cutoff"])
    window = re.search(r"out of time, returns requested (\S+) to (\S+):", out)
    assert window is not None and window.group(1) == str(cutoff.date())
    assert (pd.Timestamp(window.group(2), tz="UTC") - cutoff).days in (19, 20) and cutoff < last
    assert "warning: --train-until now: the last 20 days with mature labels are the test window" in out
    gate = on_world.gate("v0002")
    assert gate is not None and gate["against"] == "v0001"
    assert re.search(r"gate against v0001 on [\d,]+ returns \([\d,]+ labelled bad\): average precision", out)
    assert "expected on the sizing window: " in out and "not approved at once" in out


def test_a_model_with_no_test_window_is_registered_as_a_candidate_and_never_production(cli, trained_world,
                                                                                       tmp_path, monkeypatch):
    models = tmp_path / "empty-registry"
    monkeypatch.setenv("FRAUD_HOME", str(trained_world.settings.home))
    monkeypatch.setenv("FRAUD_MODEL_DIR", str(models))
    last = current_snapshot(trained_world.settings.warehouse_dir).read("returns")["requested_at"].max()
    code, out, err = cli("train", "--train-until", (last - pd.Timedelta(days=2)).isoformat())
    assert code == 0, err
    assert "warning: no test window: the labels of returns after" in out
    assert ModelRegistry(models).aliases() == {"candidate": "v0001"}
    assert "not production: v0001 has no out-of-time evaluation" in out
    assert "[" not in out.split("registered model")[0].split("warning")[0]  # no inverted window is printed
    code, _, err = cli("models", "promote", "v0001")
    assert code == 1 and "v0001 has no out-of-time evaluation" in err and "--force" in err
    code, _, err = cli("models", "promote", "v0001", "--force")
    assert code == 1 and "--force needs --reason TEXT" in err
    assert ModelRegistry(models).aliases() == {"candidate": "v0001"}


def test_score_batch_scores_with_the_newest_model_while_none_is_production_and_says_so(cli, trained_world, tmp_path,
                                                                                        monkeypatch):
    """The path an evaluator runs: `ingest`, `features build`, `train --train-until D`, `score-batch` after D. With no
    label after D (held back, as an evaluation does) `train` has no test window and registers its model without
    promoting it; `score-batch` without --model then stopped at "no model is production yet" and scored nothing. It
    now scores with the newest registered model, as `--model` naming it does, and says so."""
    monkeypatch.setenv("FRAUD_HOME", str(trained_world.settings.home))
    monkeypatch.setenv("FRAUD_MODEL_DIR", str(tmp_path / "empty-registry"))
    last = current_snapshot(trained_world.settings.warehouse_dir).read("returns")["requested_at"].max()
    cutoff = (last - pd.Timedelta(days=10)).isoformat()
    code, out, err = cli("train", "--train-until", cutoff)
    assert code == 0 and "not production" in out, err + out
    window = ["--from", cutoff, "--to", (last + pd.Timedelta(seconds=1)).isoformat()]
    code, out, err = cli("score-batch", *window, "--out", str(tmp_path / "default.csv"))
    assert code == 0, err
    assert "with model v0001" in out
    assert "warning: no model is production yet, so the newest registered one, v0001, scored these (not " \
           "production: v0001 has no out-of-time evaluation" in out, out
    assert cli("score-batch", *window, "--model", "v0001", "--out", str(tmp_path / "named.csv"))[0] == 0
    default, named = pd.read_csv(tmp_path / "default.csv"), pd.read_csv(tmp_path / "named.csv")
    assert len(default) > 50
    pd.testing.assert_frame_equal(default, named)
    code, _, err = cli("score-batch", *window, "--model", "production", "--out", str(tmp_path / "p.csv"))
    assert code == 1 and "no model is production yet: v0001 is the candidate" in err  # named, nothing stands in


def test_a_production_model_trained_on_the_test_window_is_flagged_and_the_gate_judges_after_it(cli, on_world):
    code, out, err = cli("train", "--train-until", "2025-06-01")
    assert code == 0, err
    assert "production v0001 *" in out
    assert "warning: production v0001 was trained on labels known at 2025-07-01, inside this test window" in out
    gate = on_world.gate("v0002")
    assert gate["against"] == "v0001" and gate["window"][0] >= "2025-07-01"
    code, out, err = cli("models", "gate", "v0002", "--from", "2025-06-15", "--to", "2025-08-01")
    assert code == 1 and "must start after both models' label cutoffs (2025-07-01" in err
    code, out, err = cli("models", "gate", "v0002")
    assert code in (0, 1), err
    assert out.startswith("gate against v0001 on ")
    assert on_world.gate("v0002")["revision"] == 2


def test_a_retrain_identical_to_a_registered_model_reuses_it(on_world, trained_world, monkeypatch):
    from fraud_service.config import Settings
    from training.workflow import train

    settings = Settings.from_env({"FRAUD_HOME": str(trained_world.settings.home),
                                  "FRAUD_MODEL_DIR": str(on_world.root)})
    again = train(settings, TRAIN_UNTIL, reuse_identical=True)
    assert again.reused is True and again.record is not None and again.record.version == "v0001"
    assert on_world.versions() == ["v0001"]
    assert train(settings, TRAIN_UNTIL).record.version == "v0002"  # asked for without reuse: registered


def test_ensemble_sets_how_many_models_are_averaged_and_the_registry_shows_their_trees(cli, on_world):
    first = on_world.load("v0001").manifest
    members = TrainConfig().ensemble
    assert members > 1 and first["ensemble"] == members
    trees = lightgbm.Booster(model_str=on_world.load("v0001").model_text()).num_trees()
    assert trees == members * first["best_iteration"]
    code, out, err = cli("train", "--train-until", "2025-07-01", "--ensemble", "1")
    assert code == 0, err
    single = on_world.load("v0002")
    assert single.manifest["ensemble"] == 1 and single.manifest["params"]["config"]["ensemble"] == 1
    assert lightgbm.Booster(model_str=single.model_text()).num_trees() == single.manifest["best_iteration"]
    assert f"{single.manifest['best_iteration']} trees\n" in out
    code, out, _ = cli("models", "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["v0001"][3] == str(members * first["best_iteration"])
    assert rows["v0002"][3] == str(single.manifest["best_iteration"])
    code, _, err = cli("train", "--train-until", "2025-07-01", "--ensemble", "0")
    assert code == 2 and "--ensemble" in err
    code, _, err = cli("train", "--train-until", "2025-07-01", "--ensemble", "21")
    assert code == 2 and "21 is more than 20, the most allowed" in err
    code, out, _ = cli("train", "--help")
    assert code == 0 and f"(default {members}," in " ".join(out.split())  # the help states the default in force


def test_the_test_window_may_not_overlap_the_training_window(cli, on_world):
    code, _, err = cli("train", "--train-until", "2025-07-01", "--test-from", "2025-06-01")
    assert code == 1
    assert "the test window must start at or after --train-until" in err
    assert on_world.versions() == ["v0001"]


def test_a_bad_date_is_a_usage_error(cli, on_world):
    code, _, err = cli("train", "--train-until", "first of July")
    assert code == 2
    assert "'first of July' is not a date" in err


def test_models_list_show_promote_and_rollback(cli, on_world):
    first = on_world.load("v0001")
    on_world.register(first.model_text(), first.manifest, first.policy, gate={"against": "v0001", "passed": True})
    code, out, _ = cli("models", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("v0001    production") and lines[2].startswith("v0002    candidate")
    code, out, _ = cli("models", "show", "candidate")
    assert json.loads(out)["manifest"]["version"] == "v0002"
    assert cli("models", "promote", "2")[1].startswith("v0002 is now production")
    assert cli("models", "rollback")[1].startswith("production rolled back from v0002 to v0001 (")
    code, _, err = cli("models", "rollback")
    assert code == 1 and "no earlier production model" in err
    code, _, err = cli("models", "show", "v0042")
    assert code == 1 and "no model version 'v0042'" in err


def test_score_batch_scores_every_return_of_the_window_with_its_point_in_time_features(cli, on_world, trained_world,
                                                                                      tmp_path):
    out = tmp_path / "scores.csv"
    code, stdout, err = cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(out))
    assert code == 0, err
    scores = pd.read_csv(out)
    settings = trained_world.settings
    snapshot = current_snapshot(settings.warehouse_dir)
    returns = snapshot.read("returns")
    window = returns[(returns["requested_at"] >= TRAIN_UNTIL) & (returns["requested_at"] < "2025-08-01")]
    assert sorted(scores["return_id"]) == sorted(window["return_id"])
    assert set(scores["decision"]) <= DECISIONS
    expected_frame = feature_frame(FeatureSource(settings), snapshot,
                                   Window(TRAIN_UNTIL, pd.Timestamp("2025-08-01", tz="UTC")))
    expected = Scorer.from_registry(on_world).score_frame(expected_frame)
    by_id = dict(zip(expected_frame["return_id"], expected, strict=True))
    np.testing.assert_allclose(scores["score"], scores["return_id"].map(by_id), atol=1e-6)
    assert f"scored {len(window):,} returns with model v0001 (policy v0001.p1, " in stdout

    parquet = tmp_path / "scores.parquet"
    assert cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(parquet),
               "--model", "v0001")[0] == 0
    same = pd.read_parquet(parquet)
    assert list(same["return_id"]) == list(scores["return_id"])
    assert list(same["decision"]) == list(scores["decision"])
    assert "warning" not in stdout  # the window starts at the model's cutoff: out of time
    # a daily run writes over yesterday's scores; any other table it would have replaced without a word
    assert cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(parquet))[0] == 0
    table = tmp_path / "returns.parquet"
    pd.DataFrame({"return_id": ["r1"], "order_id": ["o1"]}).to_parquet(table)
    before = table.read_bytes()
    code, _, err = cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(table))
    assert code == 1 and f"--out {table} exists and is not a score-batch output (its columns: return_id, " \
        "order_id); writing would replace it" in err
    assert table.read_bytes() == before
    empty = tmp_path / "made-by-mkstemp.csv"
    empty.touch()  # a file made empty to be written is written
    assert cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(empty))[0] == 0
    assert list(pd.read_csv(empty)["return_id"]) == list(scores["return_id"])


def test_score_batch_over_the_models_training_window_says_its_scores_are_in_sample(cli, on_world, trained_world,
                                                                                   tmp_path):
    code, stdout, err = cli("score-batch", "--from", "2025-06-01", "--to", "2025-08-01", "--out",
                            str(tmp_path / "scores.csv"))
    assert code == 0, err
    warning = stdout.strip().splitlines()[-1]
    assert warning.startswith("warning: model v0001 was trained on the returns requested ")
    assert f"to {TRAIN_UNTIL.date()}: its scores of those in [2025-06-01, 2025-08-01) are in-sample" in warning
    assert warning.endswith(f"(--from {TRAIN_UNTIL.date()} or later for out-of-time scores)")


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "scores.xlsx"], "must end in .csv or .parquet"),
    (["--out", "scores.csv", "--model", "v0007"], "no model version 'v0007'"),
])
def test_score_batch_refuses_bad_requests_and_writes_nothing(cli, on_world, tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("scores") else a for a in args]
    code, _, err = cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", *args)
    assert code == 1
    assert message in err
    assert list(tmp_path.glob("scores*")) == []


def test_evaluate_trains_and_tests_on_successive_windows_beside_the_baselines(cli, on_world, trained_world):
    code, out, err = cli("evaluate", "--folds", "2", "--test-days", "30", "--label-delay", "10")
    assert code == 0, err
    assert out.startswith("2 folds of 30 days")
    report = Path(out.strip().splitlines()[-1].split("report: ")[1])
    result = json.loads(report.with_name("report.json").read_text())
    assert len(result["folds"]) == 2
    first, second = (f["test"] for f in result["folds"])
    assert first[1] == second[0]  # successive, not overlapping
    assert set(result["summary"]) == {"model", "rules", "rules+history", "production v0001"}
    ap = result["summary"]["model"]["average_precision"]
    assert len(ap["values"]) == 2 and ap["mean"] == pytest.approx(np.mean(ap["values"]))
    assert on_world.versions() == ["v0001"]  # evaluation registers nothing


def test_thresholds_record_the_next_policy_of_a_model(cli, on_world):
    code, out, err = cli("thresholds", "--reviews-per-day", "2", "--days", "30")
    assert code == 0, err
    policy = on_world.load("production").policy
    assert policy["version"] == "v0001.p2"
    assert policy["basis"]["costs"]["reviews_per_day"] == 2
    assert policy["basis"]["expected_per_day"]["review"] <= 2
    assert "policy v0001.p2 recorded" in out


@pytest.mark.parametrize(("window", "words"), [
    (("--train-until", "2025-04-01", "--test-from", "2025-05-01", "--test-until", "2025-04-20"),
     "the window ends (2025-04-20T00:00:00+00:00) before it starts (2025-05-01T00:00:00+00:00)"),
    (("--train-until", "2025-04-01", "--test-until", "2025-03-01"), "the test window"),
    (("--train-from", "2025-04-01", "--train-until", "2025-03-01"), "--train-from ... --train-until"),
    (("--train-until", "2099-01-01"), "--train-until 2099-01-01T00:00:00+00:00 is in the future"),
])
def test_a_window_that_ends_before_it_starts_or_in_the_future_is_refused_and_nothing_registered(
        cli, on_world, window, words):
    """An inverted test window trained and registered a model, blaming unmatured labels; a cutoff in 2099 registered
    a model 'trained until 2099'."""
    before = on_world.versions()
    code, _, err = cli("train", *window)
    assert code == 1 and words in err and "Traceback" not in err, err
    assert on_world.versions() == before


def test_score_batch_to_a_folder_it_cannot_write_says_so_before_scoring(cli, on_world, tmp_path):
    """It scored every return, then failed with a FileNotFoundError traceback."""
    code, out, err = cli("score-batch", "--from", "2025-01-01", "--to", "2025-02-01", "--out",
                         str(tmp_path / "missing" / "scores.csv"))
    assert code == 1 and "Traceback" not in err and "scored" not in out, (out, err)
    assert f"cannot write in {tmp_path / 'missing'}" in err


def test_models_list_names_a_damaged_version_and_lists_the_others(cli, on_world):
    first = on_world.load("v0001")
    on_world.register(first.model_text() + "\n", first.manifest, first.policy)  # v0002, its own files
    model = on_world.root / "versions" / "v0001" / "model.txt"
    model.write_text(model.read_text()[:5000])  # cut short on disk
    code, out, err = cli("models", "list")
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "DAMAGED" in rows["v0001"] and "model.txt does not match its seal" in rows["v0001"]
    assert "DAMAGED" not in rows["v0002"] and rows["v0002"].split()[1] == "candidate"
    assert "v0001 cannot be loaded" in err


def test_a_train_the_registry_refuses_leaves_no_half_report(cli, on_world, trained_world, monkeypatch):
    from fraud_service.errors import RegistryError

    def refuse(*args, **kwargs):
        raise RegistryError("the registry's disk is full")

    monkeypatch.setattr(ModelRegistry, "register", refuse)
    code, _, err = cli("train", "--train-until", "2025-07-01")
    assert code == 1 and "the registry's disk is full" in err
    assert not list((trained_world.settings.home / "reports").glob(".train-*"))
    assert on_world.versions() == ["v0001"]


def test_a_registry_that_lost_its_aliases_file_is_restored_by_naming_production(cli, on_world):
    (on_world.root / "aliases.json").unlink()
    code, _, err = cli("models", "restore-aliases", "--production", "v0001")
    assert code == 2 and "the following arguments are required: --reason" in err
    code, out, err = cli("models", "restore-aliases", "--production", "1", "--reason", "deleted by a cleanup")
    assert code == 0, err
    assert out.startswith("restored the aliases: v0001 is production, the newest version is candidate, no shadow")
    assert on_world.aliases() == {"production": "v0001", "candidate": "v0001"}
    code, _, err = cli("models", "restore-aliases", "--production", "1", "--reason", "again")
    assert code == 1 and "aliases.json exists: there is nothing to restore" in err


def test_a_ground_truth_file_is_read_before_training_and_a_bad_one_named(cli, on_world, trained_world, tmp_path):
    """A CSV named .parquet crashed train after the whole training run (ArrowInvalid: Parquet magic bytes);
    it is refused first, and a CSV ground truth is read as one."""
    truth = pd.read_parquet(trained_world.dataset / "ground_truth.parquet")
    as_csv = tmp_path / "truth.csv"
    truth.drop(columns=["typology"]).to_csv(as_csv, index=False)
    misnamed = tmp_path / "truth.parquet"
    misnamed.write_bytes(as_csv.read_bytes())
    before = on_world.versions()
    for path, words in ((misnamed, f"ground truth file {misnamed} cannot be read as parquet"),
                        (as_csv, f"ground truth file {as_csv} lacks column(s) typology"),
                        (tmp_path, "is not a file")):
        code, out, err = cli("train", "--train-until", TRAIN_UNTIL.isoformat(), "--ground-truth", str(path))
        assert code == 1 and words in err and "unexpectedly" not in err, err
        assert "training LightGBM" not in out + err  # refused before any work
    assert on_world.versions() == before
