"""The command line: helpful --help, clear errors, and the generate -> ingest -> status path."""

from __future__ import annotations

import re

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


def test_every_argument_of_every_command_says_what_it_is():
    """`--help` lists no bare positional (`V`, `RETURN_ID`) or option without a sentence."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        bare = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    bare += walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                bare.append(f"{path} {action.metavar or action.dest}")
        return bare

    assert walk(build_parser(), "fraud-service") == []


@pytest.mark.parametrize("argv", [["-q", "features", "build"], ["features", "build", "-q"], ["-q", "status"],
                                  ["status", "--quiet"]])
def test_quiet_goes_before_or_after_the_command(argv):
    """`fraud-service status -q` was "unrecognized arguments: -q" (only `fraud-service -q status` worked)."""
    assert build_parser().parse_args(argv).quiet is True


def test_quiet_before_the_command_is_not_undone_after_it():
    assert build_parser().parse_args(["-q", "status"]).quiet is True
    assert build_parser().parse_args(["status"]).quiet is False


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
    # a negative or endless label delay trained another model, silently; nan and inf costs went into a live policy
    (["train", "--train-until", "now", "--label-delay", "-5"], "'-5' is not a number from 0 to 3,650"),
    (["train", "--train-until", "now", "--label-delay", "nan"], "'nan' is not a number from 0 to 3,650"),
    (["evaluate", "--test-days", "100000"], "100000 is more than 3650, the most allowed"),
    (["thresholds", "--reviews-per-day", "nan"], "'nan' is not a number from 0 to 1e+09"),
    (["thresholds", "--reviews-per-day", "10", "--loss-per-fraud", "inf"], "'inf' is not a number"),
    (["train", "--train-until", "nan"], "'nan' is not a date"),  # pandas reads it as no time: a traceback later
    (["evaluate", "--until", "2300-01-01"], "'2300-01-01' is not a date (YYYY-MM-DD), an ISO 8601 timestamp, now "
                                            "or now-Nd in the years 1900 to 2200"),
    (["webhooks", "run", "--report-every", "0"], "'0' is not a number from 0.1 to 86,400"),  # printed a million lines
    (["serve", "--workers", "100000"], "100000 is more than 64"),  # forked until the machine stopped answering
    (["serve", "--port", "-1"], "-1 must be greater than 0"),
    (["generate", "--out", "x", "--seed", "-1"], "-1 is less than 0"),
    (["generate", "--out", "x", "--orders-per-year", "inf"], "'inf' is not a number from 0.01 to 1,000"),
    (["queues", "set", "q", "--sla-hours", "-1", "--cap", "3"], "'-1' is not a number from 0.01 to 8,760"),
    # argparse kept the last value of an option given twice and dropped the first without a word
    (["train", "--train-until", "2011-06-01", "--ensemble", "1", "--train-until", "2011-09-01"],
     "argument --train-until: given twice (--train-until, then --train-until); it takes one value"),
    (["score-batch", "--from", "2011-09-01", "--to", "2012-01-01", "--out", "a.csv", "--out", "b.csv"],
     "argument --out: given twice (--out, then --out)"),
    (["-q", "features", "materialize", "--until", "now", "--until", "now-1d"], "argument --until: given twice"),
])
def test_usage_errors_exit_2_with_the_reason(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2
    assert message in err


def test_test_days_with_a_dated_train_until_is_refused_not_ignored(cli, tmp_path):
    code, _, err = cli("train", "--train-until", "2011-09-01", "--test-days", "20")
    assert code == 1
    assert "--test-days sets the test window of --train-until now; with a date, the test window is --test-from" in err


def test_generate_writes_only_into_a_new_or_empty_directory(cli, tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "customers.csv").write_text("kept\n")
    code, _, err = cli("generate", "--out", str(tmp_path / "world"), "--customers", "50", "--days", "20")
    assert code == 1
    assert "is not a new or empty directory: the tables written there would replace or mix with what it holds" in err
    assert [p.name for p in (tmp_path / "world").iterdir()] == ["customers.csv"]
    assert (tmp_path / "world" / "customers.csv").read_text() == "kept\n"
    (tmp_path / "empty").mkdir()
    code, _, err = cli("generate", "--out", str(tmp_path / "empty"), "--customers", "50", "--days", "20")
    assert code == 0, err


def test_ingesting_a_missing_directory_exits_1_with_the_reason(cli, tmp_path):
    code, _, err = cli("ingest", str(tmp_path / "nope"))
    assert code == 1
    assert f"error: {tmp_path / 'nope'}: not a directory" in err


def test_a_generated_world_ends_now_by_default_or_at_end_and_never_in_the_future(cli, tmp_path):
    import datetime as dt

    import pandas as pd

    before = pd.Timestamp(dt.datetime.now(dt.UTC)).floor("s")
    code, out, err = cli("generate", "--out", str(tmp_path / "now"), "--customers", "300", "--days", "60")
    assert code == 0, err
    returns = pd.read_parquet(tmp_path / "now" / "returns.parquet")
    labels = pd.read_parquet(tmp_path / "now" / "labels.parquet")
    after = pd.Timestamp(dt.datetime.now(dt.UTC))
    assert before - pd.Timedelta(days=3) < returns["requested_at"].max() < after
    assert labels["labelled_at"].max() < after
    assert returns["requested_at"].min() >= before - pd.Timedelta(days=60)
    assert "the world runs from " in out

    code, out, err = cli("generate", "--out", str(tmp_path / "past"), "--customers", "300", "--days", "60",
                         "--end", "2025-03-01")
    assert code == 0, err
    past = pd.read_parquet(tmp_path / "past" / "returns.parquet")["requested_at"]
    assert pd.Timestamp("2024-12-31", tz="UTC") <= past.min() and past.max() < pd.Timestamp("2025-03-01", tz="UTC")
    assert "the world runs from 2024-12-31T00:00:00+00:00 to 2025-03-01T00:00:00+00:00" in out

    code, _, err = cli("generate", "--out", str(tmp_path / "f"), "--end", "2999-01-01")
    assert code == 1 and "--end 2999-01-01 is in the future" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "f"), "--end", "the day after")
    assert code == 1 and "is not a date" in err and "in the years" not in err
    code, _, err = cli("generate", "--out", str(tmp_path / "f"), "--end", "1800-01-01")  # a date, but out of range
    assert code == 1 and f"'1800-01-01' is not a date (YYYY-MM-DD), an ISO 8601 time or `now` in the years 1900 to " \
        f"{dt.datetime.now(dt.UTC).year}" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "f"), "--end", "now", "--start", "2025-01-01")
    assert code == 2 and "not allowed with argument" in err


def test_status_on_an_empty_warehouse_says_what_to_do(cli):
    code, out, err = cli("status")
    assert (code, out) == (1, "")
    assert "run `fraud-service ingest DIR` first" in err


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
    world = ("--customers", "3000", "--days", "240", "--fraud-share", "0.03")
    code, out, err = cli("demo", "--out", str(out_dir), *world)
    assert code == 0, err
    assert "ingested into" in out and "(snapshot 000001; new)" in out
    assert "features built from snapshot 000001 and materialised into the sqlite online store" in out
    assert "demo: model v0001 trained on labels known at" in out
    assert re.search(r"demo: assessed the latest \d+ returns;", out) and "wait in the analysts' queue" in out, out
    for whose in (r"the \d+ returns posted live", r"the [\d,]+ returns since the model's label cutoff"):
        rates = re.search(rf"demo: of {whose}.*?, ([\d.]+)% went to review and ([\d.]+)% were not approved at once",
                          out)
        assert rates and float(rates[1]) <= float(rates[2]) <= 100, out
    users = settings.home / "demo-users.txt"
    assert "analyst UI sign-in (user / password): analyst / " in out and (users.stat().st_mode & 0o777) == 0o600
    stamp = (out_dir / "returns.parquet").stat().st_mtime_ns
    built = (settings.home / "features" / "manifest.json").stat().st_mtime_ns
    _the_demo_is_set_in_the_present(settings, out_dir)
    assert _production_moves(settings) == [("model:v0001", None, "v0001")]  # the first one too (it was missing)

    code, out, _ = cli("demo", "--out", str(out_dir), *world)
    assert code == 0
    assert "(snapshot 000001; unchanged)" in out
    assert "demo: production model v0001 (trained on this data)" in out
    assert "assessed the latest" not in out  # the queue is not filled twice
    assert users.read_text().splitlines()[0].replace(" ", " / ", 1) in out  # the same sign-in, shown again
    assert (out_dir / "returns.parquet").stat().st_mtime_ns == stamp
    assert (settings.home / "features" / "manifest.json").stat().st_mtime_ns == built
    assert _production_moves(settings) == [("model:v0001", None, "v0001")]  # recorded once


def _production_moves(settings):
    """The evidence log's model_promoted events, as (subject, from, to)."""
    import json

    from sqlalchemy import select

    from fraud_service.bootstrap import evidence
    from fraud_service.store.schema import EvidenceEvent

    with evidence(settings) as db, db.sessions() as session:
        rows = session.execute(select(EvidenceEvent.subject, EvidenceEvent.payload).where(
            EvidenceEvent.kind == "model_promoted").order_by(EvidenceEvent.seq)).all()
    return [(subject, json.loads(payload)["from"], json.loads(payload)["to"]) for subject, payload in rows]


def _the_demo_is_set_in_the_present(settings, out_dir):
    """The customer with the most item-not-received claims in the demo's last 90 days posts one more now: the
    answer names those claims, and the stored features count them (a world in the past would read zeros)."""
    import datetime as dt

    import pandas as pd

    from fraud_service.bootstrap import assessor, evidence
    from fraud_service.feedback.messages import Messages
    from fraud_service.feedback.outcomes import read
    from fraud_service.scoring.evidence import request_hash
    from fraud_service.scoring.request import parse_request
    from training.datasets.replay import Replay

    now = dt.datetime.now(dt.UTC)
    returns = pd.read_parquet(out_dir / "returns.parquet")
    assert now - dt.timedelta(days=2) < returns["requested_at"].max() <= now
    recent = returns[(returns["return_type"] == "item_not_received")
                     & (returns["requested_at"] > pd.Timestamp(now) - pd.Timedelta(days=90))]
    customer = recent["customer_id"].value_counts().index[0]
    claims = int(recent["customer_id"].value_counts().iloc[0])
    assert claims >= 2
    body = Replay(out_dir).body(returns[returns["customer_id"] == customer]["return_id"].iloc[-1])
    body.update(return_id="R-DEMO-NOW", return_type="item_not_received", requested_at=now.isoformat())
    with evidence(settings) as db:
        scoring = assessor(settings, db.engine, db.sessions, freshness=False)
        try:
            answer = scoring.assess(parse_request(body, now), request_hash(body), "test").response
        finally:
            scoring.writer.close()
        stored = read(db.uow(), assessment_id=answer["assessment_id"], messages=Messages())
    assert stored["features"]["cust_inr_90d"] >= claims - 1 > 0  # minus at most one held out of the history
    said = [r["sentence"] for r in answer["reasons"]] + [r["detail"] for r in answer["rules_fired"]]
    assert any("item-not-received claim" in text for text in said), said


@pytest.mark.slow
def test_a_demo_world_too_small_to_train_on_still_gets_its_features_and_says_why(cli, tmp_path, settings):
    code, out, err = cli("demo", "--out", str(tmp_path / "demo"), "--customers", "200", "--days", "40")
    assert code == 0, err
    assert "features built from snapshot 000001" in out
    assert "demo: no model trained (" in out and "use a larger world" in out
    assert ModelRegistry(settings.models_dir).versions() == []


@pytest.mark.slow
def test_a_demo_run_again_keeps_its_world_and_refuses_another_that_would_mix_with_it(cli, tmp_path, settings):
    """`make run` again days later, or with other DEMO_* sizes: a world generated again would move every stored id
    in time (ingest refused it row by row) or mix two worlds; the demo keeps its world, or says what to remove."""
    import json

    import pandas as pd

    from fraud_service.data.warehouse import Warehouse
    from training.datasets.synthetic import META_FILE

    out_dir = tmp_path / "demo"
    world = ("--customers", "200", "--days", "40")
    code, _, err = cli("demo", "--out", str(out_dir), *world)
    assert code == 0, err
    snapshot = Warehouse(settings.warehouse_dir).current().name
    code, out, err = cli("demo", "--out", str(out_dir), "--customers", "250", "--days", "40")
    assert code == 1 and "Traceback" not in err
    assert f"{settings.home} already holds the demo world of 200 customers over 40 days (seed 7)" in err, err
    assert "a world of 250 customers over 40 days (seed 7) would be mixed into it" in err
    assert "Remove" in err and Warehouse(settings.warehouse_dir).current().name == snapshot
    meta = json.loads((out_dir / META_FILE).read_text())  # three days pass: the world ended three days ago
    meta["config"]["start"] = (pd.Timestamp(meta["config"]["start"]) - pd.Timedelta(days=3)).isoformat()
    (out_dir / META_FILE).write_text(json.dumps(meta))
    code, out, err = cli("demo", "--out", str(out_dir), *world)
    assert code == 0, err
    assert f"demo: keeping the demo world in {out_dir}, which ended" in out
    assert "(snapshot 000001; unchanged)" in out and Warehouse(settings.warehouse_dir).current().name == snapshot


def test_a_world_too_small_to_hold_anything_out_holds_nothing_out(tmp_path):
    from training import demo
    from training.datasets.synthetic import WorldConfig, generate

    generate(WorldConfig(customers=200, days=40, seed=3), tmp_path / "w")
    assert demo.latest_returns(tmp_path / "w", 0) == []
    history = demo.history(tmp_path / "w", 300)
    import pandas as pd
    kept = len(pd.read_parquet(history / "returns.parquet"))
    assert kept == len(pd.read_parquet(tmp_path / "w" / "returns.parquet")) - len(demo.held_out(tmp_path / "w"))
    assert len(demo.held_out(tmp_path / "w")) * 5 <= kept + len(demo.held_out(tmp_path / "w"))


def test_a_bad_setting_is_reported_not_raised(cli, monkeypatch):
    monkeypatch.setenv("FRAUD_ONLINE_STORE", "memcached")
    code, _, err = cli("status")
    assert code == 1
    assert "FRAUD_ONLINE_STORE='memcached'" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--customers", "30"], "customers must be at least 50"),
    (["--start", "1500-01-01"], "--start '1500-01-01' and days=365: a world runs within the years 1678 to 2261"),
])
def test_a_world_that_cannot_be_made_is_refused_in_one_line(cli, tmp_path, args, message):
    code, _, err = cli("generate", "--out", str(tmp_path / "w"), *args)
    assert code == 1 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_a_reversed_window_and_a_world_ending_in_the_future_are_named(cli, tmp_path):
    code, _, err = cli("score-batch", "--from", "now", "--to", "now-10d", "--out", str(tmp_path / "s.csv"))
    assert code == 1 and "the window ends before it starts" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "w"), "--start", "2200-01-01", "--customers", "100")
    assert code == 1 and "in the future; ingest takes only times that have come" in err


def test_an_out_file_that_is_a_directory_or_a_world_that_is_a_file_is_refused(cli, tmp_path):
    (tmp_path / "scores.csv").mkdir()
    code, _, err = cli("score-batch", "--from", "2025-01-01", "--to", "2025-02-01", "--out",
                       str(tmp_path / "scores.csv"))
    assert code == 1 and "is a directory: name a file to write" in err
    (tmp_path / "file").write_text("")
    code, _, err = cli("generate", "--out", str(tmp_path / "file"), "--customers", "100", "--days", "10")
    assert code == 1 and "is a file, not a directory" in err


def test_a_failure_no_check_foresaw_is_one_line_unless_debugging(cli, monkeypatch):
    import api.cli.data as data

    def broken(args, settings):
        raise KeyError("orders")

    monkeypatch.setattr(data, "cmd_status", broken)  # the parser main builds takes it
    code, _, err = cli("status")
    assert code == 1 and err.strip().startswith("error: status failed unexpectedly (KeyError: 'orders')")
    assert "FRAUD_DEBUG=1" in err and "Traceback" not in err


def test_a_rollback_to_the_shadow_model_says_that_the_shadow_is_off(cli, settings):
    registry = ModelRegistry(settings.models_dir)
    for text in ("one", "two"):  # stand-in model texts: a rollback loads the model, it does not score with it
        registry.register(text, {"features": ["a"]}, {"review_from": 0.5}, first_production=True)
    registry.promote("v0002")
    registry.set_shadow("v0001", "compare")
    code, out, err = cli("models", "rollback")
    assert code == 0, err
    assert out.splitlines()[1] == ("v0001 was the shadow model and is production now, so the shadow is off "
                                   "(`fraud-service models shadow V` starts another)")
    assert registry.aliases() == {"production": "v0001", "candidate": "v0002"}


def test_train_refuses_a_registry_that_lost_its_aliases_file_before_any_work_and_list_still_shows_it(cli, settings):
    """With aliases.json gone, the next `train` registered its model as production, as in a new registry."""
    registry = ModelRegistry(settings.models_dir)
    for text in ("one", "two"):
        registry.register(text, {"features": ["a"], "label_cutoff": "2026-01-01T00:00:00+00:00", "trees": 3,
                                 "registered_at": "x"}, {"review_from": 0.5}, first_production=True)
    (settings.models_dir / "aliases.json").unlink()
    code, _, err = cli("train", "--train-until", "now")
    assert code == 1
    assert err.startswith(f"error: {settings.models_dir / 'aliases.json'} is missing, but 2 version(s) are "
                          "registered (v0001 to v0002): which one is production is not known")
    assert "`fraud-service models restore-aliases --production V --reason TEXT`" in err
    assert registry.versions() == ["v0001", "v0002"] and not (settings.home / "warehouse").exists()
    code, out, err = cli("models", "list")
    assert code == 1
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["v0001", "v0002"]
    assert "aliases.json is missing" in err


@pytest.mark.parametrize("args", [["status"], ["doctor"], ["models", "list"], ["keys", "list"], ["db", "upgrade"],
                                  ["evidence", "verify"], ["users", "list"], ["labels", "sync"],
                                  ["train", "--train-until", "now"], ["features", "materialize"]], ids=" ".join)
def test_a_command_refuses_a_home_that_does_not_exist_and_makes_nothing_there(cli, tmp_path, monkeypatch, args):
    """A mistyped FRAUD_HOME got an empty fraud.db (keys, users, evidence, db upgrade) or read as an empty home."""
    typo = tmp_path / "hmoe"
    monkeypatch.setenv("FRAUD_HOME", str(typo))
    code, out, err = cli(*args)
    assert (code, out) == (1, "")
    assert err == (f"error: FRAUD_HOME {typo} does not exist: check the path, nothing was made there. "
                   "`fraud-service ingest DIR` or `fraud-service demo --out DIR` sets up a new home\n")
    assert not typo.exists()


def test_a_home_left_unset_is_named_as_the_default(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("FRAUD_HOME")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("status")
    assert code == 1
    assert err.startswith(f"error: FRAUD_HOME {tmp_path / 'var'} does not exist (FRAUD_HOME is not set: the "
                          "default is ./var, here)")


def test_ingest_sets_up_a_new_home_and_says_so(small_world_dir, tmp_path, monkeypatch, capsys):
    from api.cli.main import main

    home = tmp_path / "new" / "home"
    monkeypatch.setenv("FRAUD_HOME", str(home))
    monkeypatch.delenv("FRAUD_DATABASE_URL", raising=False)
    assert main(["ingest", str(small_world_dir)]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (f"FRAUD_HOME {home} does not exist yet: setting up a new home "
                                                       "there")
    assert (home / "warehouse").is_dir()


def test_a_refused_first_ingest_leaves_no_home_behind(tmp_path, monkeypatch, capsys):
    """A refused first ingest left an empty home (snapshot folder, lock file) that then counted as real: the next
    command no longer said the path may be a typo."""
    from api.cli.main import main

    home = tmp_path / "typo"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "returns.csv").write_text("x\n1\n")
    monkeypatch.setenv("FRAUD_HOME", str(home))
    monkeypatch.delenv("FRAUD_DATABASE_URL", raising=False)
    assert main(["-q", "ingest", str(bad)]) == 1
    assert not home.exists()
    assert main(["status"]) == 1
    assert f"FRAUD_HOME {home} does not exist" in capsys.readouterr().err


def test_commands_that_do_not_use_the_home_run_without_one(cli, tmp_path, monkeypatch):
    typo = tmp_path / "nowhere"
    monkeypatch.setenv("FRAUD_HOME", str(typo))
    code, _, err = cli("generate", "--out", str(tmp_path / "world"), "--customers", "50", "--days", "20")
    assert code == 0, err
    assert cli("stats", str(tmp_path / "world"))[0] == 0
    assert not typo.exists()


@pytest.mark.parametrize(("url", "refused"), [
    ("postgresql+psycopg://u@127.0.0.1/db", None),  # the home plays no part in the database commands then
    ("sqlite:///{missing}/fraud.db", "FRAUD_DATABASE_URL=sqlite:///{missing}/fraud.db: the folder {missing} does "
                                     "not exist (a typo?)"),
    ("sqlite:///{home}/fraud.db", "FRAUD_HOME {home} does not exist"),
])
def test_database_commands_need_only_the_folder_of_a_sqlite_database(tmp_path, url, refused):
    import argparse

    from api.cli.common import check_home
    from fraud_service.config import Settings
    from fraud_service.errors import ConfigError

    names = {"missing": tmp_path / "elsewhere", "home": tmp_path / "home"}
    settings = Settings.from_env({"FRAUD_HOME": str(names["home"]), "FRAUD_DATABASE_URL": url.format(**names)})
    args = argparse.Namespace(home="database")
    if refused is None:
        assert check_home(args, settings) is None
    else:
        with pytest.raises(ConfigError, match=re.escape(refused.format(**names))):
            check_home(args, settings)


INTERRUPTED_IMPORT = """
import sys

class CtrlC:  # Ctrl-C while the start imports pandas (the slow part: about half a second)
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from api.cli.main import main  # what the console script does
sys.exit(main(["status"]))
"""


def test_ctrl_c_during_the_start_exits_130_with_one_line(tmp_path):
    """It was a traceback from the console script's `from api.cli.main import main` (and death by SIGINT)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "FRAUD_HOME": str(tmp_path), "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], env=env, cwd=root, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (130, "")
    assert done.stderr == "interrupted before the command started: nothing was done\n"


def test_ctrl_c_while_parsing_is_caught_too(monkeypatch, capsys):
    import argparse

    from api.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", interrupted)
    try:
        code = main(["status"])
    except KeyboardInterrupt:  # would stop the whole test run, not fail this test
        code = -2
    assert code == 130
    assert capsys.readouterr().err == "interrupted before the command started: nothing was done\n"


def test_a_world_too_small_for_an_order_and_a_database_url_of_another_kind_are_said(cli, tmp_path, monkeypatch):
    """Both failed "unexpectedly" with a traceback's last line (a helper's CLI probe): a TypeError from a world with
    no orders, a ModuleNotFoundError for MySQL's driver."""
    code, _, err = cli("generate", "--out", str(tmp_path / "w"), "--customers", "50", "--days", "1")
    assert code == 1 and "50 customers over 1 day(s) placed no order: give the world more --customers" in err
    monkeypatch.setenv("FRAUD_DATABASE_URL", "mysql://someone:secret@db.internal/fraud")
    code, _, err = cli("doctor")
    assert code == 1
    assert "FRAUD_DATABASE_URL=db.internal/fraud: expected a SQLite file" in err and "secret" not in err


def test_a_disk_that_refuses_to_write_is_said_in_one_line(cli, tmp_path):
    """A read-only home, a full disk or a folder the user may not write were each "failed unexpectedly" with the
    OS error's class name (a helper's operations probe). /sys refuses new folders on this kind of machine."""
    import os

    target = "/sys/fraud-service-test-world"
    try:
        os.mkdir(target)
    except OSError:
        pass
    else:
        os.rmdir(target)
        pytest.skip("/sys takes new folders here")
    code, out, err = cli("generate", "--out", target, "--customers", "50", "--days", "20")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: generate: the disk refused to write ({target}): ")
    assert "unexpectedly" not in err
