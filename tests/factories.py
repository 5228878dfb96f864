"""Factories for service tests: an in-memory evidence database, and flagged assessments written the real way."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from fraud_service.scoring.evidence import evidence_writer
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.migrate import upgrade
from fraud_service.store.uow import UnitOfWork
from fraud_service.store.writer import EvidenceWriter

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@dataclass
class MemoryDb:
    """A migrated in-memory SQLite database (one connection shared by every thread) and its writer."""

    engine: Engine
    sessions: sessionmaker[Session]
    writer: EvidenceWriter

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions)


@contextmanager
def database_on(engine: Engine) -> Iterator[MemoryDb]:
    """ENGINE's database migrated, with its evidence writer; both closed afterwards."""
    upgrade(engine)
    db = MemoryDb(engine, session_factory(engine), evidence_writer(engine))
    try:
        yield db
    finally:
        db.writer.close()
        engine.dispose()


@contextmanager
def memory_db() -> Iterator[MemoryDb]:
    with database_on(make_engine("sqlite://", poolclass=StaticPool)) as db:
        yield db


_ids = itertools.count(1)


def flag(db: MemoryDb, *, customer: str = "c-1", links: dict[str, str] | None = None, score: float = 0.9,
         amount: float = 100.0, decision: str = "review", at: dt.datetime = T0, reason: str = "timing",
         return_id: str | None = None, return_type: str = "return") -> dict[str, Any]:
    """Store an assessment that needs a human (it opens or joins a case); its row, with the case id."""
    n = next(_ids)
    row = {"id": f"asm_{n:06d}", "return_id": return_id or f"ret-{n:06d}", "customer_id": customer,
           "request_hash": "h" * 64, "created_at": at, "score": score, "decision": decision, "risk_level": "high",
           "model_version": "v0001", "policy_version": "v0001.p1", "refund_amount": amount, "case_id": None,
           "reason": reason}
    payload = {"request_hash": row["request_hash"],
               "request": {"return_id": row["return_id"], "customer_id": customer, "refund_amount": amount,
                           "return_type": return_type},
               "features": {"cust_returns_7d": 1},
               "response": {"case_id": None, "decision": decision, "reasons": [], "rules_fired": [],
                            "return_id": row["return_id"], "score": round(score, 6), "risk_level": "high",
                            "model_version": "v0001", "policy_version": "v0001.p1", "assessed_at": at.isoformat()}}
    seq = db.writer.store(row, payload, "key:test", at, {"customer": customer, **(links or {})})
    assert seq is not None
    return row
