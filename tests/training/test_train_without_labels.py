"""Training stops with a clear message when there is nothing to learn from, e.g. on the Online Retail import."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_online_retail import SOURCE, needs_source

pytestmark = pytest.mark.slow


def test_a_world_without_labels_stops_training_with_a_clear_message(cli, world_copy, settings):
    (world_copy / "labels.parquet").unlink()
    assert cli("ingest", str(world_copy))[0] == 0
    assert cli("features", "build")[0] == 0
    code, out, err = cli("train", "--train-until", "2025-04-01")
    assert code == 1
    assert "has a fraud or abuse label known at 2025-04-01: there is nothing to learn from" in err
    assert "Traceback" not in err
    assert not settings.models_dir.exists() or not any((settings.models_dir / "versions").iterdir())


def test_evaluate_on_a_world_too_small_for_its_folds_names_its_own_flags(cli, world_copy):
    assert cli("ingest", str(world_copy))[0] == 0
    assert cli("features", "build")[0] == 0
    code, _, err = cli("evaluate", "--folds", "3", "--test-days", "20")
    assert code == 1
    assert "use fewer --folds or shorter --test-days" in err or "use fewer folds or shorter windows" in err
    assert "--train-from" not in err and "--train-until" not in err  # flags evaluate does not accept
    assert "Traceback" not in err


def test_training_before_the_features_are_built_says_what_to_run(cli, world_copy):
    assert cli("ingest", str(world_copy))[0] == 0
    code, _, err = cli("train", "--train-until", "2025-04-01")
    assert code == 1
    assert "run `fraud-service features build` first" in err


@needs_source
def test_the_online_retail_import_ingests_builds_features_and_then_refuses_to_train(cli, tmp_path: Path):
    dataset = tmp_path / "uci"
    assert cli("import-online-retail", str(SOURCE), "--out", str(dataset))[0] == 0
    assert cli("ingest", str(dataset))[0] == 0
    assert cli("features", "build")[0] == 0
    code, _, err = cli("train", "--train-until", "2011-09-01")
    assert code == 1
    assert "there is nothing to learn from" in err
    code, _, err = cli("score-batch", "--from", "2011-09-01", "--to", "2011-10-01", "--out", str(tmp_path / "s.csv"))
    assert code == 1
    assert "no model is production yet" in err


@pytest.mark.parametrize("command", [["train", "--train-until", "now"], ["evaluate"]])
def test_a_warehouse_without_returns_is_named_not_a_crash(cli, world_copy, command):
    """The contract lets a dataset leave out a table, and customers and orders alone ingest; training and
    evaluating then failed with DuckDB's 'No files found that match the pattern "None"'."""
    for table in ("returns", "labels", "inspections"):  # labels and inspections name returns
        (world_copy / f"{table}.parquet").unlink(missing_ok=True)
    assert cli("ingest", str(world_copy))[0] == 0
    code, _, err = cli(*command)
    assert code == 1 and "Traceback" not in err and "unexpectedly" not in err, err
    assert "has no returns table" in err, err


def test_train_until_now_too_early_names_now_and_how_it_was_reached(cli, world_copy):
    """It said '--train-until 2026-10-29 is not after the first return', a date the user never typed."""
    assert cli("ingest", str(world_copy))[0] == 0
    assert cli("features", "build")[0] == 0
    code, _, err = cli("train", "--train-until", "now", "--test-days", "3000")
    assert code == 1 and "Traceback" not in err, err
    assert "--train-until now (here " in err and "less the 3000-day test window; --test-days sets it)" in err, err
    assert "is not after the first return the model may learn from" in err, err
