"""The reachability checks talk to the real PostgreSQL and Redis servers of this machine."""

from __future__ import annotations

import pytest

from fraud_service.errors import Unavailable
from fraud_service.health import check_database, check_redis, run_checks

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.mark.postgres
def test_postgres_answers():
    check = check_database(POSTGRES_URL)
    assert check.ok, check.detail
    assert "127.0.0.1:5432/postgres answers" in check.detail


@pytest.mark.redis
def test_redis_answers():
    check = check_redis("redis://127.0.0.1:6379/0")
    assert check.ok, check.detail


def test_a_closed_port_is_reported_with_the_reason():
    db = check_database("postgresql+psycopg://postgres@127.0.0.1:1/postgres")
    cache = check_redis("redis://127.0.0.1:1/0")
    assert not db.ok and "Connection refused" in db.detail
    assert not cache.ok and "Connection refused" in cache.detail


@pytest.mark.redis
def test_the_redis_check_runs_only_when_redis_is_the_online_store(settings):
    from dataclasses import replace

    names = ["warehouse", "database", "features", "model", "customer messages"]
    assert [c.name for c in run_checks(settings)] == names
    checks = run_checks(replace(settings, online_store="redis"))
    assert [c.name for c in checks] == [*names, "redis"]
    assert checks[4].ok and checks[5].ok
    broken = run_checks(replace(settings, customer_messages=settings.home / "no-such-messages.json"))
    assert not broken[4].ok and "FRAUD_CUSTOMER_MESSAGES" in broken[4].detail  # serve would fail on it


def test_doctor_fails_on_a_home_with_nothing_in_it_and_makes_no_database(tmp_path):
    """It created an empty fraud.db and said the database was fine; every other command then asked for
    `db upgrade`. Nor did it look at the features or the model."""
    from fraud_service.config import Settings

    home = tmp_path / "home"
    checks = {c.name: c for c in run_checks(Settings.from_env({"FRAUD_HOME": str(home)}))}
    assert not checks["database"].ok and "db upgrade" in checks["database"].detail
    assert not (home / "fraud.db").exists()
    assert not checks["features"].ok and "features build" in checks["features"].detail
    assert not checks["model"].ok and "train" in checks["model"].detail


def test_a_database_at_an_old_schema_is_named(tmp_path):
    from fraud_service.store.db import make_engine
    from fraud_service.store.migrate import head_revision, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0009")
    engine.dispose()
    check = check_database(url, schema=True)
    assert not check.ok and f"at schema 0009, not {head_revision()}" in check.detail and "db upgrade" in check.detail
    assert check_database(url).ok  # it answers: the schema is looked at only when asked


def test_derived_tables_are_checked_against_their_events():
    from sqlalchemy import update

    from fraud_service.cases import service as cases
    from fraud_service.health import verify_derived
    from fraud_service.store.schema import Assessment, CaseNote, Label
    from tests.factories import flag, memory_db

    with memory_db() as db:
        row = flag(db, customer="c-9", score=0.8)
        cases.add_note(db.uow(), case_id=row["case_id"], body="called the customer", actor="user:ana")
        cases.close(db.uow(), case_id=row["case_id"], dispositions=None, label="fraud", reason="ring",
                    actor="user:ana")
        check = verify_derived(db.uow())
        assert check.ok and check.rows == {"assessments": 1, "case_notes": 1, "labels": 1, "inspections": 0,
                                           "outcomes": 1, "list_entries": 0, "rule_sets": 0, "api_keys": 0,
                                           "users": 0}  # closing the case made its return's outcome final
        edits = [
            (Label, "label", "legit", "fraud", "labels row", "label 'legit'"),
            (Assessment, "score", 0.01, 0.8, f"assessments row {row['id']}", "score 0.01"),
            (CaseNote, "body", "nothing happened", "called the customer", "case_notes row", "body 'nothing happened'"),
        ]
        for model, column, edited, original, where, what in edits:
            with db.sessions.begin() as session:
                session.execute(update(model).values({column: edited}))
            check = verify_derived(db.uow())
            assert not check.ok and check.problem is not None
            assert where in check.problem and what in check.problem, check.problem
            with db.sessions.begin() as session:
                session.execute(update(model).values({column: original}))
            assert verify_derived(db.uow()).ok


def test_the_redis_check_never_prints_the_password() -> None:
    """`doctor` masked PostgreSQL's password but printed Redis's (redis://:secret@host/0)."""
    from fraud_service.health import check_redis

    checked = check_redis("redis://:s3cretpw@127.0.0.1:1/0")  # nothing listens on port 1: a refusal
    assert not checked.ok and "s3cretpw" not in checked.detail and "redis://:***@127.0.0.1:1/0" in checked.detail


@pytest.mark.postgres
def test_doctor_reaches_a_postgresql_live_log_counts_its_facts_and_makes_no_table(settings):
    from dataclasses import replace

    import psycopg

    from fraud_service.featurestore.live_log import open_live_log
    from tests.store.conftest import POSTGRES, scratch_database

    refused = run_checks(replace(settings, live_log_url="postgresql://postgres:s3cret@127.0.0.1:1/live"))[-1]
    assert (refused.name, refused.ok) == ("live log", False)
    assert "Connection refused" in refused.detail and "s3cret" not in refused.detail
    for host in ("a" * 300, "h\u202eost"):  # a host name that cannot be looked up: a failed check, not a crash
        named = run_checks(replace(settings, live_log_url=f"postgresql://postgres@{host}/live"))[-1]
        assert (named.name, named.ok) == ("live log", False) and "idna" in named.detail, named
        log = open_live_log(f"postgresql://postgres@{host}/live")
        with pytest.raises(Unavailable, match=r"the live-fact log \(PostgreSQL\) cannot be reached"), log.unreadable():
            log.execute("SELECT 1")
    with scratch_database() as name:
        url = f"{POSTGRES}/{name}"
        fresh = run_checks(replace(settings, live_log_url=url))[-1]
        assert fresh.ok and "no live fact yet" in fresh.detail, fresh.detail
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}") as conn:  # doctor made nothing
            assert conn.execute("SELECT to_regclass('live_facts')").fetchone() == (None,)
        log = open_live_log(url)
        try:
            with log.writing():
                log.executemany("INSERT OR IGNORE INTO live_facts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [("r-1", "return", entity, "k", "c-1", 1, "{}") for entity in ("customer", "device")])
        finally:
            log.close()
        counted = run_checks(replace(settings, live_log_url=url))[-1]
        assert counted.ok and "2 live facts of 1 returns assessed since the last build" in counted.detail, counted
        assert "only instances on this host may share this log" in counted.detail  # the settings' SQLite store
        shared = run_checks(replace(settings, live_log_url=url, online_store="redis"))
        assert [c.name for c in shared][-2:] == ["redis", "live log"] and "note" not in shared[-1].detail
