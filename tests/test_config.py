"""Settings come from FRAUD_* variables, with documented defaults and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fraud_service.config import Settings
from fraud_service.errors import ConfigError


def test_defaults_put_everything_under_var():
    s = Settings.from_env({})
    assert s.home == Path("./var").resolve()
    assert s.database_url == f"sqlite:///{Path('./var').resolve() / 'fraud.db'}"
    assert (s.online_store, s.redis_url, s.port) == ("sqlite", "redis://127.0.0.1:6379/0", 8000)
    assert s.warehouse_dir == s.home / "warehouse"
    assert s.models_dir == s.home / "models"
    assert s.live_log_url is None


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgresql+psycopg://u@h:5433/db", "postgres://u@h/db"])
def test_the_live_fact_log_may_be_a_postgresql_database(tmp_path, url):
    from fraud_service.featurestore.source import FeatureSource

    s = Settings.from_env({"FRAUD_HOME": str(tmp_path), "FRAUD_LIVE_LOG": f" {url} "})
    assert s.live_log_url == url and FeatureSource(s).live_log == url
    assert FeatureSource(Settings.from_env({"FRAUD_HOME": str(tmp_path)})).live_log == tmp_path / "features" / "live.db"


def test_every_variable_is_read(tmp_path):
    s = Settings.from_env({
        "FRAUD_HOME": str(tmp_path), "FRAUD_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "FRAUD_ONLINE_STORE": "Redis", "FRAUD_REDIS_URL": "redis://r:1/2", "FRAUD_MODEL_DIR": str(tmp_path / "m"),
        "FRAUD_HOST": "0.0.0.0", "FRAUD_PORT": "9000", "FRAUD_LOG_LEVEL": "debug",
    })
    assert (s.home, s.database_url, s.online_store, s.redis_url) == (
        tmp_path, "postgresql+psycopg://u@h/db", "redis", "redis://r:1/2")
    assert (s.models_dir, s.host, s.port, s.log_level) == (tmp_path / "m", "0.0.0.0", 9000, "DEBUG")


@pytest.mark.parametrize(("env", "message"), [
    ({"FRAUD_ONLINE_STORE": "memcached"}, "FRAUD_ONLINE_STORE='memcached': expected one of sqlite, redis"),
    ({"FRAUD_PORT": "eighty"}, "FRAUD_PORT='eighty': expected an integer port"),
    ({"FRAUD_PORT": "70000"}, "FRAUD_PORT=70000"),
    ({"FRAUD_SPARK_MASTER": "bogus"}, r"FRAUD_SPARK_MASTER='bogus': expected local, local\[N\]"),
    ({"FRAUD_LOG_LEVEL": "loud"}, "FRAUD_LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING"),
    ({"FRAUD_LIVE_LOG": "/srv/live.db"}, "FRAUD_LIVE_LOG=/srv/live.db: expected a PostgreSQL database"),
    ({"FRAUD_LIVE_LOG": "mysql://u:secret@h/db"}, "FRAUD_LIVE_LOG=h/db: expected"),  # no password in the message
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("env", "secure"), [
    ({}, False),
    ({"FRAUD_HOST": "0.0.0.0"}, True),
    ({"FRAUD_HOST": "0.0.0.0", "FRAUD_COOKIE_SECURE": "false"}, False),
    ({"FRAUD_COOKIE_SECURE": "1"}, True),
])
def test_the_session_cookie_is_secure_by_default_off_loopback(env, secure):
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", **env}).cookie_secure is secure


def test_a_malformed_cookie_flag_names_the_variable():
    with pytest.raises(ConfigError, match="FRAUD_COOKIE_SECURE='maybe'"):
        Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_COOKIE_SECURE": "maybe"})


def test_the_hub_threshold_is_a_positive_whole_number():
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x"}).hub_customers == 20
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_HUB_CUSTOMERS": "5"}).hub_customers == 5
    with pytest.raises(ConfigError, match="FRAUD_HUB_CUSTOMERS='0'"):
        Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_HUB_CUSTOMERS": "0"})


def test_the_writer_lanes_are_a_whole_number_from_one_to_eight():
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x"}).writer_lanes == 2
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_WRITER_LANES": "1"}).writer_lanes == 1
    for bad, message in (("0", "FRAUD_WRITER_LANES='0': expected a whole number of at least 1"),
                         ("9", "FRAUD_WRITER_LANES=9: expected a whole number from 1 to 8"),
                         ("two", "FRAUD_WRITER_LANES='two'")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_WRITER_LANES": bad})


def test_the_client_timeout_is_a_positive_number_of_seconds_up_to_five_minutes():
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x"}).client_timeout_s == 10.0
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_CLIENT_TIMEOUT_S": "2.5"}).client_timeout_s == 2.5
    for bad in ("0", "301", "soon"):
        with pytest.raises(ConfigError, match="FRAUD_CLIENT_TIMEOUT_S"):
            Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_CLIENT_TIMEOUT_S": bad})


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:",
                                 "sqlite:///file::memory:?cache=shared&uri=true",
                                 "sqlite:///file:evidence?mode=memory&cache=shared&uri=true"])
def test_an_in_memory_sqlite_evidence_database_is_refused(url):
    """`db upgrade` migrated a database gone when it ended, and `serve` would have lost every decision."""
    with pytest.raises(ConfigError, match=re.escape(f"FRAUD_DATABASE_URL={url}: an in-memory SQLite database lasts "
                                                    "as long as the process that opened it")):
        Settings.from_env({"FRAUD_DATABASE_URL": url})


@pytest.mark.parametrize(("url", "file"), [
    ("sqlite:////srv/fraud/fraud.db", Path("/srv/fraud/fraud.db")),
    ("sqlite:///relative.db", Path("relative.db").absolute()),
    ("sqlite:///file:/srv/fraud.db?uri=true", Path("/srv/fraud.db")),
    ("postgresql+psycopg://u@h/db", None),
])
def test_a_sqlite_file_is_read_from_the_url(url, file):
    assert Settings.from_env({"FRAUD_DATABASE_URL": url}).sqlite_file == file


@pytest.mark.parametrize("name", ["a?b", "a#b", "a%41b", "a b+c"])
def test_the_default_database_is_in_the_home_whatever_its_name(tmp_path, name):
    """A home named `a?b` put its evidence database in a file named `a` beside it: a URL's path ends at `?`."""
    from sqlalchemy import create_engine, make_url, text

    home = tmp_path / name / "home"
    home.mkdir(parents=True)
    settings = Settings.from_env({"FRAUD_HOME": str(home)})
    assert make_url(settings.database_url).database == str(home / "fraud.db")
    assert settings.sqlite_file == home / "fraud.db"
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and (home / "fraud.db").is_file()


def test_the_trusted_proxies_are_a_whole_number_from_zero_to_five():
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x"}).trusted_proxies == 0
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_TRUSTED_PROXIES": "1"}).trusted_proxies == 1
    assert Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_TRUSTED_PROXIES": "0"}).trusted_proxies == 0
    for bad in ("6", "-1", "one", "1" * 5000):
        with pytest.raises(ConfigError, match=re.escape("expected a whole number from 0 to 5")):
            Settings.from_env({"FRAUD_HOME": "/tmp/x", "FRAUD_TRUSTED_PROXIES": bad})
