"""The live-fact log in PostgreSQL (FRAUD_LIVE_LOG), as instances on several hosts keep it: made once by workers that
start together, a 503 naming it while it cannot be reached, and back without a restart once it answers.

What it records and reads is the same as the SQLite log's: tests/featurestore/test_live.py and test_new_orders.py run
on both kinds."""

from __future__ import annotations

import multiprocessing

import psycopg
import pytest

from fraud_service.errors import Unavailable
from fraud_service.featurestore import live_log
from fraud_service.featurestore.live_log import open_live_log, postgres_sql
from tests.featurestore.test_live_log_open import PROCESSES
from tests.store.conftest import POSTGRES, admin_sql, scratch_database

ROUNDS = 8


def _open_and_count(url: str) -> None:
    log = open_live_log(url)
    assert log.execute("SELECT count(*) FROM live_facts").fetchone() == (0,)
    log.close()


def test_the_sqlite_statements_of_the_log_are_rewritten_for_postgresql() -> None:
    assert postgres_sql("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", True) == \
        "INSERT INTO live_orders VALUES (%s, %s) ON CONFLICT DO NOTHING"
    assert postgres_sql("SELECT 1 FROM live_facts WHERE key = ? AND "
                        "json_extract(contributions, '$.n_new_customer') = 1", True) == \
        "SELECT 1 FROM live_facts WHERE key = %s AND (contributions::jsonb ->> 'n_new_customer') = '1'"
    # a literal % survives: doubled when parameters are passed, left alone when none are
    assert postgres_sql("SELECT 1 WHERE fact LIKE 'inspection:%' AND key = ?", True) == \
        "SELECT 1 WHERE fact LIKE 'inspection:%%' AND key = %s"
    assert postgres_sql("SELECT 1 WHERE fact LIKE 'inspection:%'", False) == "SELECT 1 WHERE fact LIKE 'inspection:%'"


@pytest.mark.postgres
def test_workers_making_a_new_live_log_database_together_all_succeed() -> None:
    """Four processes opening a new database's log at once: its tables are made once, under an advisory lock
    (without it, concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalogue)."""
    context = multiprocessing.get_context("forkserver")
    codes: list[int | None] = []
    for _ in range(ROUNDS):
        with scratch_database() as name:
            processes = [context.Process(target=_open_and_count, args=(f"{POSTGRES}/{name}",))
                         for _ in range(PROCESSES)]
            for process in processes:
                process.start()
            for process in processes:
                process.join(timeout=120)
                codes.append(process.exitcode)
                if process.is_alive():
                    process.kill()
    assert codes == [0] * (ROUNDS * PROCESSES)


@pytest.mark.postgres
def test_a_live_log_database_that_cannot_be_reached_is_a_503_until_it_answers_again(monkeypatch) -> None:
    with scratch_database() as name:
        pass  # dropped again: the name of a database that does not exist
    url = f"{POSTGRES}/{name}"
    log = open_live_log(url)  # a worker starts all the same: the log is reached at its first use
    with pytest.raises(Unavailable, match=r"the live-fact log \(PostgreSQL\) cannot be reached; no decision was "
                                          r"made: retry; if it persists, check that FRAUD_LIVE_LOG") as refused:
        with log.unreadable():
            log.execute("SELECT count(*) FROM live_facts")
    assert "does not exist" in str(refused.value.__cause__)
    with pytest.raises(Unavailable) as again, log.unreadable():  # the next request, at once: no second attempt yet
        log.execute("SELECT count(*) FROM live_facts")
    assert f"failed less than {live_log.RECONNECT_S:g} s ago" in str(again.value.__cause__)
    monkeypatch.setattr(live_log, "RECONNECT_S", 0.0)  # the rest without waiting out the pause
    try:
        admin_sql(f'CREATE DATABASE "{name}"')
        with log.unreadable():  # it answers now: the same object connects and makes its tables
            log.execute("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", ("o-1", "r-1"))
            assert log.execute("SELECT count(*) FROM live_orders").fetchone() == (1,)
        before = log.execute("SELECT pg_backend_pid()").fetchone()[0]
        ended = admin_sql("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :name) ended", name=name)  # its server ends the session (a fail-over)
        assert ended == 1
        with log.unreadable():  # the read finds its connection gone, and is sent again on a new one
            assert log.execute("SELECT count(*), pg_backend_pid() FROM live_orders").fetchone()[0] == 1
        assert log.execute("SELECT pg_backend_pid()").fetchone()[0] != before
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as operator:
            operator.execute("DROP TABLE live_orders")  # an operator drops a table under it
        with pytest.raises(Unavailable, match=r"refuses this service \(SQLSTATE 42P01\)"), log.unreadable():
            log.execute("SELECT count(*) FROM live_orders")
        with log.unreadable():  # a 503 once; the next use makes the tables again
            assert log.execute("SELECT count(*) FROM live_orders").fetchone() == (0,)
    finally:
        log.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_writes_go_through_again_once_a_live_log_database_that_was_read_only_is_writable() -> None:
    """A session opened while the database was read-only (a fail-over's standby) keeps refusing writes after it is
    writable again; the log now opens another after such a refusal, so the writer's next try succeeds."""
    with scratch_database() as name:
        log = open_live_log(f"{POSTGRES}/{name}")
        try:
            log.execute("SELECT count(*) FROM live_orders")  # the tables are made
            log.close()
            admin_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), log.writing():
                log.executemany("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", [("o-1", "r-1")])
            admin_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            with log.writing():
                log.executemany("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", [("o-1", "r-1")])
            assert log.execute("SELECT count(*) FROM live_orders").fetchone() == (1,)
        finally:
            log.close()
