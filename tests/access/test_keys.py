"""API key names against the column that keeps them, on SQLite and on the real PostgreSQL (which enforces lengths)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from fraud_service.access.keys import authenticate, create_key
from fraud_service.errors import ApiKeyError
from fraud_service.store.db import session_factory
from fraud_service.store.schema import ApiKey, EvidenceEvent
from fraud_service.store.uow import UnitOfWork


def test_a_key_name_is_at_most_what_its_column_holds_and_a_longer_one_is_refused_by_name(engine: Engine) -> None:
    """Names of up to 200 characters were let through to a column of 120: PostgreSQL then refused the insert ("the
    evidence database failed: value too long"), and SQLite kept a name longer than the schema says."""
    sessions = session_factory(engine)
    key = create_key(UnitOfWork(sessions), "scoring", "r" * 120, "test")
    principal = authenticate(UnitOfWork(sessions), key)
    assert principal is not None and principal.name == "r" * 120
    with pytest.raises(ApiKeyError, match=r"key name 'r{60}'\.\.\.: expected 1 to 120 characters"):
        create_key(UnitOfWork(sessions), "scoring", "r" * 121, "test")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 1
        assert session.scalar(select(func.count()).select_from(EvidenceEvent)
                              .where(EvidenceEvent.kind == "api_key_created")) == 1
