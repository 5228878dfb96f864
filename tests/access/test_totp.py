"""Two-factor sign-in: enrolment in two steps, codes in a window of one step and never twice, recovery codes spent
once, throttled like passwords, turned off only with a code or by an admin's reset, every change evidence."""

from __future__ import annotations

import datetime as dt
import json

import pyotp
import pytest
from sqlalchemy import Engine, select, text

from fraud_service.access import totp
from fraud_service.access.users import FREE_FAILURES, Person, create_user, hash_password, session_person, sign_in
from fraud_service.errors import SignInThrottled, TotpError, TotpUnreadable, UserError
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import EvidenceEvent, RecoveryCode, User
from fraud_service.store.uow import UnitOfWork
from tests.store.conftest import sqlite_engine

KEY = b"the app's secret key, as FRAUD_HOME/secret_key holds it"
PASSWORD = "the right password"
T0 = dt.datetime(2026, 5, 1, 9, 0, 15, tzinfo=dt.UTC)  # 15 s into a 30 s step


@pytest.fixture
def engine(tmp_path) -> Engine:
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


def uow(engine: Engine) -> UnitOfWork:
    return UnitOfWork(session_factory(engine))


def code(secret: str, at: dt.datetime) -> str:
    """What the person's authenticator app shows at AT."""
    return pyotp.TOTP(secret).at(at)


def enrolled(engine: Engine, name: str = "tia", role: str = "analyst", at: dt.datetime = T0) -> tuple[str, list[str]]:
    """A user with two-factor sign-in on since AT: its secret and its recovery codes."""
    create_user(uow(engine), name, role, PASSWORD, "test")
    secret = totp.begin(uow(engine), name, KEY).secret
    return secret, totp.confirm(uow(engine), name, code(secret, at), KEY, now=at)


def events(engine: Engine) -> list[tuple[str, str, str, dict]]:
    with session_factory(engine)() as session:
        rows = session.execute(select(EvidenceEvent).order_by(EvidenceEvent.seq)).scalars()
        return [(e.kind, e.subject, e.actor, json.loads(e.payload)) for e in rows]


def test_enrolment_takes_two_steps_and_shows_ten_recovery_codes_once(engine: Engine) -> None:
    create_user(uow(engine), "tia", "analyst", PASSWORD, "test")
    started = totp.begin(uow(engine), "tia", KEY)
    assert started.uri.startswith("otpauth://totp/fraud-service:tia?") and f"secret={started.secret}" in started.uri
    assert len(started.secret) == 32 and pyotp.TOTP(started.secret).byte_secret()  # base32, 160 bits
    assert totp.status(uow(engine), "tia", KEY) == totp.TotpStatus(False, started, 0)  # begun, not on
    assert sign_in(uow(engine), "tia", PASSWORD) == Person("tia", "analyst", totp=False)
    with pytest.raises(TotpError, match="does not match the secret"):
        totp.confirm(uow(engine), "tia", code(started.secret, T0 + dt.timedelta(minutes=5)), KEY, now=T0)
    assert not totp.status(uow(engine), "tia", KEY).on

    codes = totp.confirm(uow(engine), "tia", code(started.secret, T0), KEY, now=T0)
    assert len(codes) == len(set(codes)) == 10
    assert all(len(c) == 14 and c.count("-") == 2 for c in codes)
    assert totp.status(uow(engine), "tia", KEY) == totp.TotpStatus(True, None, 10)
    assert sign_in(uow(engine), "tia", PASSWORD) == Person("tia", "analyst", totp=True)  # half-way in
    with pytest.raises(TotpError, match="already on"):
        totp.begin(uow(engine), "tia", KEY)
    with session_factory(engine)() as session:
        stored = session.execute(text("SELECT totp_secret FROM users WHERE name = 'tia'")).scalar_one()
        hashes = set(session.execute(select(RecoveryCode.code_hash)).scalars())
    assert started.secret not in stored and stored.startswith("aesgcm$")  # encrypted, not in clear
    assert len(hashes) == 10 and not {c.replace("-", "") for c in codes} & hashes
    assert events(engine)[-1] == ("totp_enabled", "user:tia", "user:tia", {"name": "tia", "recovery_codes": 10})
    assert not any(started.secret in json.dumps(e) or any(c in json.dumps(e) for c in codes) for e in events(engine))


def test_a_second_begin_replaces_the_secret_and_the_first_no_longer_confirms(engine: Engine) -> None:
    create_user(uow(engine), "ugo", "analyst", PASSWORD, "test")
    first = totp.begin(uow(engine), "ugo", KEY).secret
    second = totp.begin(uow(engine), "ugo", KEY).secret
    assert first != second
    with pytest.raises(TotpError, match="does not match"):
        totp.confirm(uow(engine), "ugo", code(first, T0), KEY, now=T0)
    assert len(totp.confirm(uow(engine), "ugo", code(second, T0), KEY, now=T0)) == 10


def test_confirming_without_beginning_is_refused(engine: Engine) -> None:
    create_user(uow(engine), "val", "analyst", PASSWORD, "test")
    with pytest.raises(TotpError, match="no enrolment was begun"):
        totp.confirm(uow(engine), "val", "123456", KEY, now=T0)
    with pytest.raises(UserError, match="no active user 'nobody'"):
        totp.begin(uow(engine), "nobody", KEY)


def test_codes_of_the_steps_either_side_pass_and_none_passes_twice(engine: Engine) -> None:
    secret, _ = enrolled(engine, at=T0 - dt.timedelta(minutes=10))
    step = dt.timedelta(seconds=30)

    def passes(at: dt.datetime, now: dt.datetime = T0) -> bool:
        return totp.sign_in_code(uow(engine), "tia", code(secret, at), KEY, now=now) is not None

    assert not passes(T0 - 2 * step) and not passes(T0 + 2 * step)  # outside the window
    assert passes(T0 - step)  # a slow clock, or typed at the turn of a step
    assert not passes(T0 - step)  # the same code again: replayed
    assert passes(T0)
    assert not passes(T0 - step) and not passes(T0)  # a step at or before the last accepted one
    assert passes(T0 + step)
    assert not passes(T0 + step, now=T0 + step)  # still refused in its own step
    assert passes(T0 + 2 * step, now=T0 + step)
    assert sign_in(uow(engine), "tia", PASSWORD) == Person("tia", "analyst", totp=True)
    spaced = code(secret, T0 + 3 * step)
    spaced = f" {spaced[:3]} {spaced[3:]} "  # as a person might type it
    assert totp.sign_in_code(uow(engine), "tia", spaced, KEY, now=T0 + 3 * step) == Person("tia", "analyst", True)


def test_the_code_that_turned_it_on_cannot_sign_in(engine: Engine) -> None:
    secret, _ = enrolled(engine, at=T0)
    assert totp.sign_in_code(uow(engine), "tia", code(secret, T0), KEY, now=T0) is None
    assert totp.sign_in_code(uow(engine), "tia", code(secret, T0 + dt.timedelta(seconds=30)), KEY, now=T0) is not None


def test_a_recovery_code_signs_in_once_and_is_evidence(engine: Engine) -> None:
    _, codes = enrolled(engine, at=T0)
    now = T0 + dt.timedelta(hours=1)
    assert totp.sign_in_code(uow(engine), "tia", codes[3], KEY, now=now) == Person("tia", "analyst", True)
    assert totp.sign_in_code(uow(engine), "tia", codes[3], KEY, now=now) is None  # spent
    typed = codes[4].replace("-", " ").upper()  # as a person might type it
    assert totp.sign_in_code(uow(engine), "tia", typed, KEY, now=now) is not None
    assert totp.sign_in_code(uow(engine), "tia", "aaaa-bbbb-cccc", KEY, now=now) is None
    assert totp.status(uow(engine), "tia", KEY).recovery_left == 8
    used = [e for e in events(engine) if e[0] == "totp_recovery_code_used"]
    assert used == [("totp_recovery_code_used", "user:tia", "user:tia", {"name": "tia", "left": 9}),
                    ("totp_recovery_code_used", "user:tia", "user:tia", {"name": "tia", "left": 8})]


def test_another_persons_recovery_code_does_not_sign_in(engine: Engine) -> None:
    _, codes = enrolled(engine, "tia", at=T0)
    enrolled(engine, "wes", at=T0)
    assert totp.sign_in_code(uow(engine), "wes", codes[0], KEY, now=T0) is None
    assert totp.sign_in_code(uow(engine), "tia", codes[0], KEY, now=T0) is not None


def test_wrong_codes_count_towards_the_sign_in_throttle_and_the_password_does_not_clear_them(engine: Engine) -> None:
    secret, _ = enrolled(engine, at=T0 - dt.timedelta(minutes=10))
    for _ in range(FREE_FAILURES - 1):
        assert totp.sign_in_code(uow(engine), "tia", "000000", KEY, address="10.0.0.9", now=T0) is None
    assert sign_in(uow(engine), "tia", PASSWORD, address="10.0.0.9", now=T0) is not None  # counts stay
    assert totp.sign_in_code(uow(engine), "tia", "000001", KEY, address="10.0.0.9", now=T0) is None
    with pytest.raises(SignInThrottled, match="try again in 1 second") as waited:
        totp.sign_in_code(uow(engine), "tia", code(secret, T0), KEY, address="10.0.0.9", now=T0)  # not even checked
    assert waited.value.retry_after == 1
    with pytest.raises(SignInThrottled):  # the password is held back too: the counts are the same
        sign_in(uow(engine), "tia", PASSWORD, address="10.0.0.10", now=T0)
    later = T0 + dt.timedelta(seconds=1)
    assert totp.sign_in_code(uow(engine), "tia", code(secret, later), KEY, address="10.0.0.9", now=later) is not None
    for _ in range(FREE_FAILURES):  # a success cleared the run: the next failures are free again
        assert sign_in(uow(engine), "tia", "wrong guess!", address="10.0.0.9", now=later) is None


def test_an_analyst_without_two_factor_signs_in_with_the_password_alone(engine: Engine) -> None:
    create_user(uow(engine), "xia", "analyst", PASSWORD, "test")
    create_user(uow(engine), "yan", "admin", PASSWORD, "test")
    analyst = sign_in(uow(engine), "xia", PASSWORD)
    admin = sign_in(uow(engine), "yan", PASSWORD)
    assert analyst == Person("xia", "analyst") and not analyst.must_enrol
    assert admin == Person("yan", "admin") and admin.must_enrol  # an admin may only enrol
    assert totp.sign_in_code(uow(engine), "xia", "123456", KEY, now=T0) is None  # no second factor to prove
    enrolled(engine, "zed", "admin", at=T0)
    assert not Person("zed", "admin", totp=True).must_enrol
    since = dt.datetime.now(dt.UTC).isoformat()
    assert session_person(uow(engine), "zed", since, second_factor=True) == Person("zed", "admin", totp=True)
    assert session_person(uow(engine), "zed", since) is None  # a session that never gave a code


def test_turning_it_off_needs_a_current_code_and_takes_the_recovery_codes(engine: Engine) -> None:
    secret, codes = enrolled(engine, at=T0)
    later = T0 + dt.timedelta(minutes=1)
    with pytest.raises(TotpError, match="wrong or was used already"):
        totp.disable(uow(engine), "tia", "000000", KEY, now=later)
    with pytest.raises(TotpError, match="wrong or was used already"):
        totp.disable(uow(engine), "tia", code(secret, T0), KEY, now=T0)  # the code that turned it on
    assert totp.status(uow(engine), "tia", KEY).on
    totp.disable(uow(engine), "tia", code(secret, later), KEY, now=later)
    assert totp.status(uow(engine), "tia", KEY) == totp.TotpStatus(False, None, 0)
    with session_factory(engine)() as session:
        assert session.execute(select(RecoveryCode)).first() is None
        assert session.get(User, "tia").totp_secret is None  # type: ignore[union-attr]
    assert events(engine)[-1] == ("totp_disabled", "user:tia", "user:tia", {"name": "tia"})
    assert sign_in(uow(engine), "tia", PASSWORD, now=later) == Person("tia", "analyst", totp=False)
    assert totp.sign_in_code(uow(engine), "tia", codes[0], KEY, now=later) is None
    with pytest.raises(TotpError, match="not on"):
        totp.disable(uow(engine), "tia", code(secret, later), KEY, now=later)


def test_a_recovery_code_can_turn_it_off_when_the_device_is_lost(engine: Engine) -> None:
    _, codes = enrolled(engine, at=T0)
    totp.disable(uow(engine), "tia", codes[9], KEY, now=T0)
    assert [e[0] for e in events(engine)[-2:]] == ["totp_recovery_code_used", "totp_disabled"]


def test_an_admin_reset_turns_it_off_ends_the_sessions_and_names_the_admin(engine: Engine) -> None:
    secret, codes = enrolled(engine, at=T0)
    since = dt.datetime.now(dt.UTC).isoformat()
    assert session_person(uow(engine), "tia", since, second_factor=True) is not None
    assert totp.reset(uow(engine), "tia", "cli:root") is True
    assert session_person(uow(engine), "tia", since, second_factor=True) is None  # signed out everywhere
    assert events(engine)[-1] == ("totp_reset", "user:tia", "cli:root", {"name": "tia", "was": "on"})
    assert totp.status(uow(engine), "tia", KEY) == totp.TotpStatus(False, None, 0)
    assert totp.sign_in_code(uow(engine), "tia", codes[0], KEY, now=T0) is None
    assert totp.reset(uow(engine), "tia", "cli:root") is False  # nothing to reset: no event
    assert events(engine)[-1][0] == "totp_reset" and len([e for e in events(engine) if e[0] == "totp_reset"]) == 1
    totp.begin(uow(engine), "tia", KEY)
    assert totp.reset(uow(engine), "tia", "cli:root") is True
    assert events(engine)[-1][3] == {"name": "tia", "was": "begun"}
    with pytest.raises(UserError, match="no user 'nobody'"):
        totp.reset(uow(engine), "nobody", "cli:root")


def test_a_secret_sealed_with_another_key_is_named_unreadable_and_recovery_codes_still_work(engine: Engine) -> None:
    secret, codes = enrolled(engine, at=T0)
    other = b"a new secret_key file"
    with pytest.raises(TotpUnreadable, match="totp-reset tia"):
        totp.sign_in_code(uow(engine), "tia", code(secret, T0 + dt.timedelta(seconds=30)), other, now=T0)
    assert totp.sign_in_code(uow(engine), "tia", codes[0], other, now=T0) is not None
    create_user(uow(engine), "eve", "analyst", PASSWORD, "test")
    with session_factory(engine).begin() as session:  # a sealed secret copied to another user's row does not open
        tia, eve = session.get(User, "tia"), session.get(User, "eve")
        assert tia is not None and eve is not None
        eve.totp_secret, eve.totp_enabled_at = tia.totp_secret, T0
    with pytest.raises(TotpUnreadable):
        totp.sign_in_code(uow(engine), "eve", code(secret, T0 + dt.timedelta(seconds=60)), KEY, now=T0)


def test_an_existing_database_upgrades_with_its_people_signing_in_as_before(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0006")  # the schema before two-factor sign-in, with an admin in it
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO users (name, role, password_hash, created_at) VALUES "
                                    "('old.timer', 'admin', :h, '2026-01-01 00:00:00')"),
                               {"h": hash_password(PASSWORD)})
        upgrade(engine)
        person = sign_in(uow(engine), "old.timer", PASSWORD)
        assert person == Person("old.timer", "admin", totp=False) and person.must_enrol
    finally:
        engine.dispose()
