"""The command line: helpful --help, clear errors, and the generate -> ingest -> status path."""

from __future__ import annotations

import pytest

from api.cli.main import build_parser
from models.registry import ModelRegistry

COMMANDS = ["ingest", "status", "doctor", "import-online-retail", "generate", "stats", "demo", "serve", "features",
            "train", "evaluate", "models", "thresholds", "score-batch", "users", "labels", "keys", "evidence"]


def test_every_command_is_listed_in_the_top_level_help(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out
    assert "FRAUD_HOME" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0
    parser = build_parser()
    assert len(out.splitlines()) >= 3
    assert f"usage: {parser.prog} {command}" in out


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "--out", "x", "--customers", "0"], "0 must be greater than 0"),
    (["generate", "--out", "x", "--days", "many"], "'many' is not an integer"),
    (["ingest"], "the following arguments are required: DIR"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_with_the_reason(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2
    assert message in err


def test_ingesting_a_missing_directory_exits_1_with_the_reason(cli, tmp_path):
    code, _, err = cli("ingest", str(tmp_path / "nope"))
    assert code == 1
    assert f"error: {tmp_path / 'nope'}: not a directory" in err


def test_status_on_an_empty_warehouse_says_what_to_do(cli):
    code, out, _ = cli("status")
    assert code == 1
    assert "run `fraud-service ingest DIR` first" in out


def test_generate_ingest_status_stats_round_trip(cli, tmp_path):
    out_dir = tmp_path / "w"
    code, out, _ = cli("generate", "--out", str(out_dir), "--customers", "300", "--days", "60", "--seed", "2")
    assert code == 0
    assert "customers" in out and "300" in out

    code, out, _ = cli("ingest", str(out_dir))
    assert code == 0
    assert "warehouse snapshot 000001 is current (was empty)" in out

    code, out, _ = cli("status")
    assert code == 0
    assert "snapshot 000001" in out and "returns" in out

    code, out, _ = cli("stats", str(out_dir))
    assert code == 0
    assert "| returns per order |" in out


@pytest.mark.slow
def test_demo_generates_ingests_builds_features_and_trains_once(cli, tmp_path, settings):
    out_dir = tmp_path / "demo"
    world = ("--customers", "3000", "--days", "240")
    code, out, err = cli("demo", "--out", str(out_dir), *world)
    assert code == 0, err
    assert "ingested into" in out and "(snapshot 000001; new)" in out
    assert "features built from snapshot 000001 and materialised into the sqlite online store" in out
    assert "demo: model v0001 trained on labels known at" in out
    assert "demo: assessed the latest 300 returns;" in out and "wait in the analysts' queue" in out
    users = settings.home / "demo-users.txt"
    assert "analyst UI sign-in (user / password): analyst / " in out and (users.stat().st_mode & 0o777) == 0o600
    stamp = (out_dir / "returns.parquet").stat().st_mtime_ns
    built = (settings.home / "features" / "manifest.json").stat().st_mtime_ns

    code, out, _ = cli("demo", "--out", str(out_dir), *world)
    assert code == 0
    assert "(snapshot 000001; unchanged)" in out
    assert "demo: production model v0001 (trained on this data)" in out
    assert "assessed the latest" not in out  # the queue is not filled twice
    assert users.read_text().splitlines()[0].replace(" ", " / ", 1) in out  # the same sign-in, shown again
    assert (out_dir / "returns.parquet").stat().st_mtime_ns == stamp
    assert (settings.home / "features" / "manifest.json").stat().st_mtime_ns == built


@pytest.mark.slow
def test_a_demo_world_too_small_to_train_on_still_gets_its_features_and_says_why(cli, tmp_path, settings):
    code, out, err = cli("demo", "--out", str(tmp_path / "demo"), "--customers", "200", "--days", "40")
    assert code == 0, err
    assert "features built from snapshot 000001" in out
    assert "demo: no model trained (" in out and "use a larger world" in out
    assert ModelRegistry(settings.models_dir).versions() == []


def test_a_bad_setting_is_reported_not_raised(cli, monkeypatch):
    monkeypatch.setenv("FRAUD_ONLINE_STORE", "memcached")
    code, _, err = cli("status")
    assert code == 1
    assert "FRAUD_ONLINE_STORE='memcached'" in err
