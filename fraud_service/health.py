"""Checks of the service's stores: reachability (`fraud-service doctor`, the web app), the evidence chain's
integrity (`fraud-service evidence verify`) and what the evidence database holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fraud_service.config import Settings
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import ENTITY_KEYS
from fraud_service.store import chain
from fraud_service.store.chain import Verification
from fraud_service.store.schema import Assessment, Case
from fraud_service.store.uow import UnitOfWork

if TYPE_CHECKING:
    from fraud_service.bootstrap import Service

CONNECT_TIMEOUT_S = 2


@dataclass(frozen=True)
class Check:
    """The outcome of one check, with a sentence saying what was seen."""

    name: str
    ok: bool
    detail: str


def check_database(url: str) -> Check:
    """Open a connection to the evidence database and run SELECT 1."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return Check("database", True, f"{engine.url.render_as_string(hide_password=True)} answers")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0]
        return Check("database", False, f"{engine.url.render_as_string(hide_password=True)}: {reason}")
    finally:
        engine.dispose()


def check_redis(url: str) -> Check:
    """PING the Redis server."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
        return Check("redis", True, f"{url} answers PING")
    except redis.RedisError as exc:
        return Check("redis", False, f"{url}: {exc}")
    finally:
        client.close()


def check_warehouse(settings: Settings) -> Check:
    """Is there ingested data, and which snapshot is current?"""
    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        return Check("warehouse", False, f"{settings.warehouse_dir} is empty: run `fraud-service ingest DIR`")
    return Check("warehouse", True, f"snapshot {snapshot.name}, {snapshot.rows('returns'):,} returns")


def run_checks(settings: Settings) -> list[Check]:
    """Every check that applies to these settings."""
    checks = [check_warehouse(settings), check_database(settings.database_url)]
    if settings.online_store == "redis":
        checks.append(check_redis(settings.redis_url))
    return checks


def verify_evidence(uow: UnitOfWork) -> Verification:
    """Re-hash the whole evidence chain; where it first breaks, if it does."""
    with uow.read():
        return chain.verify(uow.session)


@dataclass(frozen=True)
class EvidenceCounts:
    assessments: int
    cases: int


def evidence_counts(uow: UnitOfWork) -> EvidenceCounts:
    """How many assessments and cases the evidence database holds."""
    from sqlalchemy import func, select

    with uow.read():
        assessments = uow.session.execute(select(func.count()).select_from(Assessment)).scalar_one()
        cases = uow.session.execute(select(func.count()).select_from(Case)).scalar_one()
    return EvidenceCounts(int(assessments), int(cases))


def readiness(service: Service) -> dict[str, dict[str, Any]]:
    """What `/readyz` reports: the model loaded, the evidence database and the online store reachable; each check
    with `ok` and, when not, a `detail`."""
    checks: dict[str, dict[str, Any]] = {}
    assessor = service.assessor
    checks["model"] = ({"ok": True, "version": assessor.scorer.version, "policy": assessor.policy.version}
                       if assessor is not None else {"ok": False, "detail": "; ".join(service.problems)})
    if service.watch is not None and service.watch.problem:  # still serving, but not what the alias names
        checks["model"]["problem"] = service.watch.problem
    try:
        with service.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        problem = next((p for p in service.problems if "evidence database" in p), None)
        checks["database"] = {"ok": problem is None, **({"detail": problem} if problem else {})}
    except Exception as exc:  # any driver error means not ready
        checks["database"] = {"ok": False, "detail": f"cannot reach the evidence database: {type(exc).__name__}"}
    if assessor is not None:
        try:
            assessor.reader.stored(dict.fromkeys(ENTITY_KEYS, "readyz-probe"))
            checks["feature_store"] = {"ok": True, "online_store": assessor.reader.kind}
        except Exception as exc:  # sqlite or redis errors alike
            checks["feature_store"] = {"ok": False, "detail": f"cannot read the online store: {type(exc).__name__}"}
    else:
        checks["feature_store"] = {"ok": False, "detail": "not loaded"}
    return checks
