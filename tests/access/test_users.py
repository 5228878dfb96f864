"""People's accounts: scrypt hashes that check, names and passwords that are refused with the reason."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, select

from fraud_service.access.users import check_password, create_user, disable_user, hash_password, sign_in
from fraud_service.errors import UserError
from fraud_service.store.db import session_factory
from fraud_service.store.schema import EvidenceEvent, User
from fraud_service.store.uow import UnitOfWork
from tests.store.conftest import sqlite_engine


def test_a_hash_checks_its_own_password_only():
    stored = hash_password("correct horse battery")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert scheme == "scrypt" and len(bytes.fromhex(salt)) == 16
    oracle = hashlib.scrypt(b"correct horse battery", salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                            dklen=32)
    assert oracle.hex() == digest  # the standard library's scrypt, not a look-alike
    assert check_password(stored, "correct horse battery")
    assert not check_password(stored, "correct horse batterY")
    assert hash_password("same") != hash_password("same")  # salted
    assert not check_password("md5$abc", "x") and not check_password("garbage", "x")


@pytest.fixture
def engine(tmp_path) -> Engine:
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


def test_users_are_created_checked_and_disabled_as_evidence(engine: Engine) -> None:
    sessions = session_factory(engine)
    generated = create_user(UnitOfWork(sessions), "ana.lyst", "analyst", None, "cli:root")
    assert len(generated) >= 12
    assert sign_in(UnitOfWork(sessions), "ana.lyst", generated) is not None
    assert sign_in(UnitOfWork(sessions), "ana.lyst", "wrong password!") is None
    assert sign_in(UnitOfWork(sessions), "nobody", generated) is None
    with sessions() as session:
        assert session.get(User, "ana.lyst").password_hash != generated  # type: ignore[union-attr]
    disable_user(UnitOfWork(sessions), "ana.lyst", "cli:root")
    assert sign_in(UnitOfWork(sessions), "ana.lyst", generated) is None
    with sessions() as session:
        kinds = session.execute(select(EvidenceEvent.kind, EvidenceEvent.subject).order_by(EvidenceEvent.seq)).all()
    assert [tuple(k) for k in kinds] == [("user_created", "user:ana.lyst"), ("user_disabled", "user:ana.lyst")]


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("Bad Name", "analyst", "long enough pw", "user name 'Bad Name'"),
    ("ok", "scoring", "long enough pw", "unknown role 'scoring'"),
    ("ok", "analyst", "short", "at least 10 are required"),
])
def test_bad_accounts_are_refused_with_the_reason(engine: Engine, name: str, role: str, password: str,
                                                  message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_user(UnitOfWork(session_factory(engine)), name, role, password, "test")
