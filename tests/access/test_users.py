"""People's accounts: scrypt hashes that check, names and passwords that are refused with the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from fraud_service.access.users import check_password, create_user, hash_password, sign_in
from fraud_service.cases.service import disable_user
from fraud_service.errors import UserError
from fraud_service.store.db import session_factory
from fraud_service.store.schema import EvidenceEvent, User
from fraud_service.store.uow import UnitOfWork
from tests.store.conftest import BOTH, sqlite_engine
from tests.store.conftest import either_engine as evidence_engine


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
    assert disable_user(UnitOfWork(sessions), "ana.lyst", "cli:root") == []  # held no cases
    assert sign_in(UnitOfWork(sessions), "ana.lyst", generated) is None
    with sessions() as session:
        kinds = session.execute(select(EvidenceEvent.kind, EvidenceEvent.subject).order_by(EvidenceEvent.seq)).all()
    assert [tuple(k) for k in kinds] == [("user_created", "user:ana.lyst"), ("user_disabled", "user:ana.lyst")]


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("Bad Name", "analyst", "long enough pw", "user name 'Bad Name'"),
    ("ok", "scoring", "long enough pw", "unknown role 'scoring'"),
    ("ok", "analyst", "short", "at least 10 are required"),
    # ten spaces were a password: one a shoulder-surfer reads off the keystrokes, and a stray paste sets
    ("ok", "analyst", " " * 10, "the password is only blank characters .*: expected at least 10 characters, not "
                                "all of them blank"),
    ("ok", "analyst", "\t \u00a0\u2003\u200b" * 3, "the password is only blank characters"),
])
def test_bad_accounts_are_refused_with_the_reason(engine: Engine, name: str, role: str, password: str,
                                                  message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_user(UnitOfWork(session_factory(engine)), name, role, password, "test")


def test_failed_sign_ins_back_off_then_lock_and_the_lock_is_evidence(engine: Engine) -> None:
    import datetime as dt

    from fraud_service.access.users import FREE_FAILURES, LOCK, LOCK_AFTER
    from fraud_service.errors import SignInThrottled

    sessions = session_factory(engine)
    create_user(UnitOfWork(sessions), "bea", "analyst", "the right password", "test")
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    for _ in range(FREE_FAILURES):  # the first few failures cost nothing
        assert sign_in(UnitOfWork(sessions), "bea", "wrong guess!", "10.0.0.1", now=t) is None
    with pytest.raises(SignInThrottled, match="try again in 1 second") as waited:
        sign_in(UnitOfWork(sessions), "bea", "the right password", "10.0.0.1", now=t)  # not even checked
    assert waited.value.retry_after == 1
    for n in range(FREE_FAILURES, LOCK_AFTER):
        t += dt.timedelta(seconds=2 ** (n - FREE_FAILURES))  # wait just as long as asked
        assert sign_in(UnitOfWork(sessions), "bea", "wrong guess!", "10.0.0.1", now=t) is None
    with pytest.raises(SignInThrottled) as locked:
        sign_in(UnitOfWork(sessions), "bea", "the right password", "10.0.0.2", now=t + dt.timedelta(minutes=1))
    assert locked.value.retry_after == int((LOCK - dt.timedelta(minutes=1)).total_seconds())
    with sessions() as session:
        kinds = [(e.kind, e.subject) for e in session.execute(select(EvidenceEvent)
                                                              .where(EvidenceEvent.kind == "sign_in_locked"))
                 .scalars()]
    assert sorted(kinds) == [("sign_in_locked", "address:10.0.0.1"), ("sign_in_locked", "user:bea")]
    after = t + LOCK + dt.timedelta(seconds=1)
    assert sign_in(UnitOfWork(sessions), "bea", "the right password", "10.0.0.1", now=after) is not None
    assert sign_in(UnitOfWork(sessions), "bea", "wrong guess!", "10.0.0.1", now=after) is None  # counts afresh


def test_signing_out_ends_every_session_of_the_person_on_the_server(engine: Engine) -> None:
    import datetime as dt

    from fraud_service.access.users import session_person, sign_out

    sessions = session_factory(engine)
    create_user(UnitOfWork(sessions), "cai", "analyst", "the right password", "test")
    since = dt.datetime.now(dt.UTC).isoformat()
    assert session_person(UnitOfWork(sessions), "cai", since) is not None
    sign_out(UnitOfWork(sessions), "cai")
    assert session_person(UnitOfWork(sessions), "cai", since) is None
    assert session_person(UnitOfWork(sessions), "cai", dt.datetime.now(dt.UTC).isoformat()) is not None
    assert session_person(UnitOfWork(sessions), "cai", "not a time") is None


def test_a_user_created_meanwhile_by_another_process_is_named_as_existing(engine: Engine, monkeypatch) -> None:
    """Two `users create` at once on PostgreSQL: the loser printed the database's unique-key violation."""
    from sqlalchemy.orm import Session

    create_user(UnitOfWork(session_factory(engine)), "ana", "analyst", "a long password", "admin")
    real_get = Session.get
    monkeypatch.setattr(Session, "get", lambda self, model, key, **kw: None if model is User else real_get(
        self, model, key, **kw))  # the look happened before the other process committed
    with pytest.raises(UserError, match=r"user 'ana' already exists \(created meanwhile\)"):
        create_user(UnitOfWork(session_factory(engine)), "ana", "admin", "another long password", "admin")


def test_a_new_password_replaces_the_old_ends_sessions_and_forgets_failed_sign_ins(engine: Engine) -> None:
    """There was no way to change one: a leaked password meant disabling the person and creating a new name."""
    import datetime as dt

    from fraud_service.access.users import session_person, set_password
    from fraud_service.errors import SignInThrottled

    sessions = session_factory(engine)
    old = create_user(UnitOfWork(sessions), "ana.lyst", "analyst", None, "cli:root")
    signed_in_at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    assert session_person(UnitOfWork(sessions), "ana.lyst", signed_in_at) is not None
    for _ in range(3):
        assert sign_in(UnitOfWork(sessions), "ana.lyst", "wrong password!", address="a") is None
    with pytest.raises(SignInThrottled, match="too many failed sign-ins"):
        sign_in(UnitOfWork(sessions), "ana.lyst", old, address="b")
    with pytest.raises(UserError, match="at least 10 are required"):
        set_password(UnitOfWork(sessions), "ana.lyst", "short", "cli:root")
    with pytest.raises(UserError, match="no user 'nobody'"):
        set_password(UnitOfWork(sessions), "nobody", None, "cli:root")
    new = set_password(UnitOfWork(sessions), "ana.lyst", "a brand new pass", "cli:root")
    assert new == "a brand new pass"
    assert session_person(UnitOfWork(sessions), "ana.lyst", signed_in_at) is None  # signed in before: ended
    assert sign_in(UnitOfWork(sessions), "ana.lyst", old, address="b") is None
    assert sign_in(UnitOfWork(sessions), "ana.lyst", new, address="b") is not None  # the user's failures forgotten
    generated = set_password(UnitOfWork(sessions), "ana.lyst", None, "cli:root")
    assert len(generated) >= 12 and sign_in(UnitOfWork(sessions), "ana.lyst", generated, address="c") is not None
    with sessions() as session:
        events = session.execute(select(EvidenceEvent.kind, EvidenceEvent.payload).where(
            EvidenceEvent.kind == "user_password_set")).all()
    assert [tuple(e) for e in events] == [("user_password_set", '{"name":"ana.lyst"}')] * 2  # no password in them


def test_a_disabled_person_can_be_enabled_again_and_the_derived_check_follows(engine: Engine) -> None:
    """Disabling could not be undone: a person back from leave needed a new name."""
    import datetime as dt

    from fraud_service.access.users import enable_user, session_person, set_password
    from fraud_service.health import verify_derived

    sessions = session_factory(engine)
    password = create_user(UnitOfWork(sessions), "ana.lyst", "analyst", None, "cli:root")
    signed_in_at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    disable_user(UnitOfWork(sessions), "ana.lyst", "cli:root")
    with pytest.raises(UserError, match="is disabled: `fraud-service users enable ana.lyst` first"):
        set_password(UnitOfWork(sessions), "ana.lyst", None, "cli:root")
    assert enable_user(UnitOfWork(sessions), "ana.lyst", "cli:root") is True
    assert enable_user(UnitOfWork(sessions), "ana.lyst", "cli:root") is False  # already enabled: nothing
    assert sign_in(UnitOfWork(sessions), "ana.lyst", password) is not None
    assert session_person(UnitOfWork(sessions), "ana.lyst", signed_in_at) is None  # from before: still ended
    assert verify_derived(UnitOfWork(sessions)).problem is None  # the log's enable matches the table
    with sessions() as session:
        session.get(User, "ana.lyst").disabled_at = dt.datetime.now(dt.UTC)  # type: ignore[union-attr]
        session.commit()  # disabled with SQL, not by an event
    assert "ended in the table, not by the log" in (verify_derived(UnitOfWork(sessions)).problem or "")


@pytest.fixture(params=BOTH)
def either_engine(request, tmp_path) -> Iterator[Engine]:
    yield from evidence_engine(request.param, tmp_path)


@pytest.mark.parametrize(("earlier", "checked"), [(None, 3), ("recent", 1), ("stale", 3)])
def test_guesses_sent_at_once_are_throttled_as_if_sent_one_by_one(either_engine: Engine, earlier: str | None,
                                                                  checked: int) -> None:
    """Sixteen wrong passwords at once were all checked: each read 'no wait' before any failure was counted (a
    helper's burst got the right password through as the sixteenth guess). They are judged one after another: with
    no earlier failures 3 are checked and 13 throttled; after two failures ten minutes ago only one more is checked
    (a review found such held rows deadlocking on PostgreSQL, locked in two orders); after a run an hour old,
    forgotten, 3 again (a review found 14 checked: the old run's rows were deleted under the waiting attempts)."""
    import datetime as dt
    import threading

    from fraud_service.errors import SignInThrottled
    from fraud_service.store.schema import SignInFailure

    sessions = session_factory(either_engine)
    create_user(UnitOfWork(sessions), "bea", "analyst", "the right password", "test")
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    if earlier is not None:
        failures, then = (2, t - dt.timedelta(minutes=10)) if earlier == "recent" else (8, t - dt.timedelta(hours=3))
        with sessions() as session:
            session.add_all([SignInFailure(key=key, failures=failures, last_at=then, locked_until=None)
                             for key in ("user:bea", "address:10.0.0.1")])
            session.commit()
    start, answers, lock = threading.Barrier(16), [], threading.Lock()

    def guess() -> None:
        start.wait()
        try:
            answer = "refused" if sign_in(UnitOfWork(sessions), "bea", "wrong guess!", "10.0.0.1", now=t) is None \
                else "signed in"
        except SignInThrottled:
            answer = "throttled"
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=guess) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == ["refused"] * checked + ["throttled"] * (16 - checked), answers
    with sessions() as session:
        counts = {row.key: row.failures for row in session.execute(select(SignInFailure)).scalars()}
    before = 2 if earlier == "recent" else 0
    assert counts == {"user:bea": before + checked, "address:10.0.0.1": before + checked}


def test_a_right_tenth_attempt_locks_nobody(engine: Engine) -> None:
    """Counted as failed before it is checked, a right password as the tenth attempt locked its user and address
    (with `sign_in_locked` events) before the success took the count back: a lock is set once an attempt proved
    wrong."""
    import datetime as dt

    from fraud_service.access.users import FREE_FAILURES, LOCK_AFTER
    from fraud_service.store.schema import SignInFailure

    sessions = session_factory(engine)
    create_user(UnitOfWork(sessions), "bea", "analyst", "the right password", "test")
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    for n in range(LOCK_AFTER - 1):
        t += dt.timedelta(seconds=2 ** max(0, n - FREE_FAILURES) + 1)
        assert sign_in(UnitOfWork(sessions), "bea", "wrong guess!", "10.0.0.1", now=t) is None
    t += dt.timedelta(seconds=2 ** (LOCK_AFTER - 1 - FREE_FAILURES) + 1)
    assert sign_in(UnitOfWork(sessions), "bea", "the right password", "10.0.0.1", now=t) is not None
    with sessions() as session:
        assert session.execute(select(EvidenceEvent).where(EvidenceEvent.kind == "sign_in_locked")).first() is None
        rows = session.execute(select(SignInFailure)).scalars().all()
        assert {(row.failures, row.locked_until) for row in rows} == {(0, None)}


def test_the_right_password_of_a_two_step_sign_in_counts_no_failure(engine: Engine) -> None:
    """Counted as failed before the password is checked, the attempt is taken back when it was right: a person with
    a second factor, half-way in, has no more failures against them than before, and waits for the code no longer
    than before the password (a review found the code step throttled for 13 s after a right password)."""
    import datetime as dt

    from fraud_service.access import totp
    from fraud_service.access.users import FREE_FAILURES
    from fraud_service.store.schema import SignInFailure

    sessions = session_factory(engine)
    create_user(UnitOfWork(sessions), "tia", "analyst", "the right password", "test")
    with sessions() as session:
        session.get(User, "tia").totp_enabled_at = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
        session.commit()
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    for n in range(FREE_FAILURES + 1):
        t += dt.timedelta(seconds=2 ** max(0, n - FREE_FAILURES) + 1)
        assert sign_in(UnitOfWork(sessions), "tia", "wrong guess!", "10.0.0.1", now=t) is None
    last_wrong, t = t, t + dt.timedelta(seconds=2 + 1)  # waited as long as asked
    person = sign_in(UnitOfWork(sessions), "tia", "the right password", "10.0.0.1", now=t)
    assert person is not None and person.name == "tia"
    with sessions() as session:
        rows = {row.key: (row.failures, row.last_at) for row in session.execute(select(SignInFailure)).scalars()}
    assert {k: (n, at.replace(tzinfo=dt.UTC)) for k, (n, at) in rows.items()} == {
        "user:tia": (FREE_FAILURES + 1, last_wrong), "address:10.0.0.1": (FREE_FAILURES + 1, last_wrong)}
    with pytest.raises(Exception) as refused:  # the code step is judged at once: a wrong code, not a wait
        totp.sign_in_code(UnitOfWork(sessions), "tia", "000000", b"key", "10.0.0.1", now=t)
    assert "try again in" not in str(refused.value)
