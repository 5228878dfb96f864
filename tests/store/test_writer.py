"""The group commit: a record the database refuses fails only its own request; its batch-mates are stored."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from fraud_service.errors import DatabaseDown, Unstorable
from fraud_service.scoring.evidence import evidence_writer
from fraud_service.store import chain, locks
from fraud_service.store.db import session_factory
from fraud_service.store.schema import Assessment
from fraud_service.store.writer import Pending

AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def pending(n: int, **changes: Any) -> Pending:
    row = {"id": f"asm_w{n}", "return_id": f"ret-w{n}", "customer_id": f"c-{n}", "request_hash": "h" * 64,
           "created_at": AT, "score": 0.1, "decision": "approve", "risk_level": "low", "model_version": "v1",
           "policy_version": "v1.p1", "refund_amount": 5.0, "case_id": None, "reason": "timing", **changes}
    payload = {"request": {}, "features": {}, "response": {"case_id": None, "decision": row["decision"]}}
    return Pending(row, payload, "key:test", AT, Future())


def _args(p: Pending) -> dict[str, Any]:
    return {"row": p.row, "payload": p.payload, "actor": p.actor, "at": p.at}


def test_a_refused_record_fails_alone_and_its_batch_mates_are_stored(engine: Engine) -> None:
    writer = evidence_writer(engine)
    try:
        batch = [pending(1), pending(2, score=None), pending(3)]  # assessments.score is NOT NULL
        writer._commit(batch)
        assert isinstance(batch[0].future.result(timeout=5), int)
        with pytest.raises(Unstorable, match="refused this assessment's record"):
            batch[1].future.result(timeout=5)
        assert isinstance(batch[2].future.result(timeout=5), int)
    finally:
        writer.close()
    with session_factory(engine)() as session:
        stored = set(session.execute(select(Assessment.return_id)).scalars())
        assert stored == {"ret-w1", "ret-w3"}
        assert chain.verify(session).ok


def test_a_request_that_stops_waiting_leaves_nothing_stored(engine: Engine) -> None:
    """What the assessment needs is locked by another transaction: the request's wait ends with DatabaseDown, and
    when the lock is released the writer leaves its assessment out (its answer said nothing was stored), then
    stores the next."""
    writer = evidence_writer(engine, wait_s=0.3)
    late, next_one = pending(1), pending(2)
    writer.store(**_args(pending(0)))  # the writer's chain segment is open
    try:
        with engine.connect() as holder:
            # SQLite's transactions begin IMMEDIATE (the database's one write lock); on PostgreSQL, the lock on
            # the return (another instance storing the same return)
            if engine.dialect.name == "sqlite":
                holder.exec_driver_sql("SELECT seq FROM chain_head WHERE id = 1")
            else:
                holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": locks.key("return", "ret-w1")})
            with pytest.raises(DatabaseDown, match="within 0.3 s"):
                writer.store(late.row, late.payload, late.actor, late.at)
            holder.rollback()
        assert isinstance(writer.store(next_one.row, next_one.payload, next_one.actor, next_one.at), int)
    finally:
        writer.close()
    with session_factory(engine)() as session:
        assert set(session.execute(select(Assessment.return_id)).scalars()) == {"ret-w0", "ret-w2"}
        assert chain.verify(session).ok
