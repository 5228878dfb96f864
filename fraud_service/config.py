"""One frozen settings object, read from FRAUD_* environment variables once, at the edge."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from fraud_service.errors import ConfigError

ONLINE_STORES = ("sqlite", "redis")
POSTGRES_URLS = ("postgresql://", "postgresql+psycopg://", "postgres://")
"""How a PostgreSQL URL begins (psycopg's, SQLAlchemy's, libpq's short form)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SPARK_MASTER = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+")
"""The Spark masters `features build --engine spark` may be pointed at (Spark's own forms)."""


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its data and how it reaches its stores."""

    home: Path
    database_url: str
    online_store: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    hub_customers: int = 20
    """FRAUD_HUB_CUSTOMERS: a shared token used by this many customers no longer merges their cases."""
    checkpoint_key_path: Path | None = None
    db_wait_ms: int = 1500
    """FRAUD_DB_WAIT_MS: how long a request waits on the evidence database before it answers 503 (`/readyz`
    waits at most 800 ms)."""
    client_timeout_s: float = 10.0
    """FRAUD_CLIENT_TIMEOUT_S: the longest a client may take to send a whole request once a thread takes it (or go
    without reading its answer) before `serve` drops the connection: a request thread never waits on it longer
    (slow-loris clients, silent or trickling)."""
    writer_lanes: int = 2
    """FRAUD_WRITER_LANES: evidence writer threads per worker on PostgreSQL, each with its own connection and chain
    segment (SQLite always has one). Two keep throughput when the database is a few milliseconds away; one batches
    more per commit when it is near (docs/deployment.md)."""
    trusted_proxies: int = 0
    """FRAUD_TRUSTED_PROXIES: how many proxies (load balancers) in front of `serve` append the address they saw to
    X-Forwarded-For; sign-in failures are counted under the address that many entries from its end. 0 (the
    default): the header is ignored and the connection's own address counts (behind a proxy, the proxy's)."""
    cookie_secure: bool = False
    """Whether the UI's session cookie is sent over HTTPS only (FRAUD_COOKIE_SECURE; default on unless the
    service listens on loopback, where a browser reaches it over plain HTTP)."""
    confirmed_bad_decision: str = "deny"
    """FRAUD_CONFIRMED_BAD_DECISION: the final decision of a return whose case closes as fraud or abuse."""
    customer_messages: Path | None = None
    """FRAUD_CUSTOMER_MESSAGES: a JSON file of message code -> text replacing the default shopper messages."""
    webhook_allow_private: bool = False
    """FRAUD_WEBHOOK_ALLOW_PRIVATE: webhooks may go to loopback and private addresses (never link-local)."""
    webhook_dispatch: bool = True
    """FRAUD_WEBHOOK_DISPATCH: every `serve` worker sends pending webhook deliveries (off: run `webhooks run`)."""
    webhook_timeout_s: float = 5.0
    webhook_backoff_s: float = 15.0
    webhook_retry_hours: float = 24.0
    live_log_url: str | None = None
    """FRAUD_LIVE_LOG: a PostgreSQL database for the live-fact log, which instances on several hosts share (unset:
    `$FRAUD_HOME/features/live.db`, shared by the instances of one host; docs/deployment.md)."""
    spark_master: str = "local[*]"
    """FRAUD_SPARK_MASTER: where `features build --engine spark` runs (`local[*]`, `spark://host:7077`, `yarn`,
    `k8s://https://host:443`); other Spark settings come from Spark's own `spark-defaults.conf`."""
    drift_psi: float = 0.25
    """FRAUD_DRIFT_PSI: the PSI above which `monitor`, /ui/monitor and /metrics call a feature or the score drifted."""
    assign_sweep: bool = True
    """FRAUD_ASSIGN_SWEEP: every `serve` worker hands named queues' cases out to their signed-in members
    (`cases.assigner`; off: `fraud-service queues sweep` does it when run)."""
    assign_interval_s: float = 30.0
    """FRAUD_ASSIGN_INTERVAL_S: seconds between two sweeps of the assigner."""
    assign_active_minutes: float = 15.0
    """FRAUD_ASSIGN_ACTIVE_MINUTES: a member counts as signed in when they used the UI this recently (and have not
    signed out since)."""
    assign_inactive_minutes: float = 60.0
    """FRAUD_ASSIGN_INACTIVE_MINUTES: a queue's case whose assignee has not used the UI for this long, and that
    nobody changed for as long, is taken back and given to the next member in turn."""

    def __post_init__(self) -> None:
        if self.online_store not in ONLINE_STORES:
            raise ConfigError(
                f"FRAUD_ONLINE_STORE={self.online_store!r}: expected one of {', '.join(ONLINE_STORES)}"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"FRAUD_PORT={self.port}: expected a TCP port between 1 and 65535")
        if not SPARK_MASTER.fullmatch(self.spark_master):
            raise ConfigError(f"FRAUD_SPARK_MASTER={self.spark_master!r}: expected local, local[N], local[*], "
                              "spark://HOST:PORT, yarn or k8s://https://HOST:PORT")
        if self.confirmed_bad_decision not in ("deny", "store_credit_only"):
            raise ConfigError(f"FRAUD_CONFIRMED_BAD_DECISION={self.confirmed_bad_decision!r}: expected deny or "
                              "store_credit_only")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"FRAUD_LOG_LEVEL={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise ConfigError(f"FRAUD_DATABASE_URL={self.database_url.split('@')[-1]}: expected a SQLite file "
                              "(sqlite:////path/to/fraud.db; the default is $FRAUD_HOME/fraud.db) or PostgreSQL "
                              "(postgresql+psycopg://USER@HOST/DB)")
        if self.live_log_url is not None and not self.live_log_url.startswith(POSTGRES_URLS):
            raise ConfigError(f"FRAUD_LIVE_LOG={self.live_log_url.split('@')[-1]}: expected a PostgreSQL database "
                              "(postgresql://USER@HOST/DB; the evidence database's URL will do), or leave it unset "
                              "for $FRAUD_HOME/features/live.db")
        if _in_memory(self.database_url):
            raise ConfigError(f"FRAUD_DATABASE_URL={self.database_url}: an in-memory SQLite database lasts as long as "
                              "the process that opened it, so `db upgrade` would migrate a database that is gone when "
                              "it ends, and `serve` would lose every decision and its evidence: expected a file "
                              "(sqlite:////path/to/fraud.db; the default is $FRAUD_HOME/fraud.db) or PostgreSQL "
                              "(postgresql+psycopg://USER@HOST/DB)")

    @property
    def warehouse_dir(self) -> Path:
        """The offline store of ingested contract tables."""
        return self.home / "warehouse"

    @property
    def sqlite_file(self) -> Path | None:
        """The evidence database's file when it is SQLite (None: another database; in memory it is refused)."""
        name = _sqlite_name(self.database_url)
        return None if name is None or _in_memory(self.database_url) else Path(name.removeprefix("file:")).absolute()

    @property
    def checkpoint_key(self) -> Path:
        """The key that signs evidence checkpoints (FRAUD_CHECKPOINT_KEY; its public half beside it, `.pub`)."""
        return self.checkpoint_key_path if self.checkpoint_key_path is not None else self.home / "checkpoint-key.pem"

    @property
    def models_dir(self) -> Path:
        """The model registry directory."""
        return self.model_dir if self.model_dir is not None else self.home / "models"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from FRAUD_* variables; unset ones take the documented defaults."""
        env = os.environ if environ is None else environ
        home = Path(env.get("FRAUD_HOME") or "./var").expanduser().resolve()
        port_text = env.get("FRAUD_PORT") or "8000"
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"FRAUD_PORT={port_text!r}: expected an integer port") from None
        model_dir = env.get("FRAUD_MODEL_DIR")
        checkpoint_key = env.get("FRAUD_CHECKPOINT_KEY")
        host = env.get("FRAUD_HOST") or "127.0.0.1"
        return cls(
            home=home,
            database_url=env.get("FRAUD_DATABASE_URL") or sqlite_url(home / "fraud.db"),
            online_store=(env.get("FRAUD_ONLINE_STORE") or "sqlite").lower(),
            redis_url=env.get("FRAUD_REDIS_URL") or "redis://127.0.0.1:6379/0",
            model_dir=Path(model_dir).expanduser().resolve() if model_dir else None,
            checkpoint_key_path=Path(checkpoint_key).expanduser().resolve() if checkpoint_key else None,
            host=host,
            port=port,
            log_level=(env.get("FRAUD_LOG_LEVEL") or "INFO").upper(),
            cookie_secure=_flag(env, "FRAUD_COOKIE_SECURE", default=host not in LOOPBACK),
            trusted_proxies=_count(env, "FRAUD_TRUSTED_PROXIES", 0, most=5),
            hub_customers=_positive(env, "FRAUD_HUB_CUSTOMERS", 20),
            db_wait_ms=_positive(env, "FRAUD_DB_WAIT_MS", 1500),
            writer_lanes=_at_most(env, "FRAUD_WRITER_LANES", 2, 8),
            client_timeout_s=_seconds(env, "FRAUD_CLIENT_TIMEOUT_S", 10.0, most=300.0),
            confirmed_bad_decision=(env.get("FRAUD_CONFIRMED_BAD_DECISION") or "deny").strip().lower(),
            customer_messages=Path(messages).expanduser().resolve() if (messages := env.get(
                "FRAUD_CUSTOMER_MESSAGES")) else None,
            webhook_allow_private=_flag(env, "FRAUD_WEBHOOK_ALLOW_PRIVATE", default=False),
            webhook_dispatch=_flag(env, "FRAUD_WEBHOOK_DISPATCH", default=True),
            webhook_timeout_s=_seconds(env, "FRAUD_WEBHOOK_TIMEOUT_S", 5.0, most=60.0),
            webhook_backoff_s=_seconds(env, "FRAUD_WEBHOOK_BACKOFF_S", 15.0, most=3600.0),
            webhook_retry_hours=_seconds(env, "FRAUD_WEBHOOK_RETRY_HOURS", 24.0, most=24.0 * 30),
            live_log_url=(env.get("FRAUD_LIVE_LOG") or "").strip() or None,
            spark_master=(env.get("FRAUD_SPARK_MASTER") or "local[*]").strip(),
            drift_psi=_seconds(env, "FRAUD_DRIFT_PSI", 0.25, most=100.0),
            assign_sweep=_flag(env, "FRAUD_ASSIGN_SWEEP", default=True),
            assign_interval_s=_seconds(env, "FRAUD_ASSIGN_INTERVAL_S", 30.0, most=3600.0),
            assign_active_minutes=_seconds(env, "FRAUD_ASSIGN_ACTIVE_MINUTES", 15.0, most=24.0 * 60),
            assign_inactive_minutes=_seconds(env, "FRAUD_ASSIGN_INACTIVE_MINUTES", 60.0, most=24.0 * 60 * 30),
        )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _sqlite_name(url: str) -> str | None:
    """The database part of a SQLite URL (`` for none), its escapes decoded as SQLAlchemy does, or None for another
    database."""
    scheme, _, rest = url.partition("://")
    return unquote(rest.removeprefix("/").partition("?")[0]) if scheme.split("+")[0].lower() == "sqlite" else None


def _in_memory(url: str) -> bool:
    """Whether URL is a SQLite database in memory: `sqlite://`, `sqlite:///:memory:`, `file::memory:` or a URI with
    `mode=memory`."""
    name = _sqlite_name(url)
    return name is not None and (name in ("", ":memory:") or name.startswith("file::memory:")
                                 or "mode=memory" in url.partition("?")[2])


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"{name}={text!r}: expected a whole number of at least 1")
    return int(text)


def _count(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    """A whole number from 0 to MOST, or the default."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or int(text) > most:
        raise ConfigError(f"{name}={text!r}: expected a whole number from 0 to {most}")
    return int(text)


def _at_most(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    """A whole number from 1 to MOST, or the default."""
    value = _positive(env, name, default)
    if value > most:
        raise ConfigError(f"{name}={value}: expected a whole number from 1 to {most}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, most: float) -> float:
    """A positive number of at most MOST (a time), or the default."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= most:
        raise ConfigError(f"{name}={text!r}: expected a number above 0 and at most {most:g}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r}: expected true or false")


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file at PATH. A URL ends its path at `?` (a query) or `#` and decodes `%`
    escapes, so those are escaped: a home named `a?b` put its evidence database in a file named `a`."""
    return "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
