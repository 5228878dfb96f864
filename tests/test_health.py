"""The reachability checks talk to the real PostgreSQL and Redis servers of this machine."""

from __future__ import annotations

import pytest

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

    assert [c.name for c in run_checks(settings)] == ["warehouse", "database"]
    checks = run_checks(replace(settings, online_store="redis"))
    assert [c.name for c in checks] == ["warehouse", "database", "redis"]
    assert checks[2].ok
