"""People who sign in to the analyst UI: analysts and admins, with scrypt-hashed passwords.

Machines use API keys (`fraud_service.access.keys`); people use a name and a password here, and a TOTP code
too once they have turned two-factor sign-in on (`fraud_service.access.totp`; admins must). Creating,
disabling and changing a user are evidence events; a person's actions are recorded as `user:NAME`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fraud_service.data.contract import shows_nothing
from fraud_service.errors import Problem, RequestInvalid, SignInThrottled, UserError
from fraud_service.store import chain
from fraud_service.store.schema import SignInFailure, User
from fraud_service.store.uow import UnitOfWork

ROLES = ("analyst", "admin")
MIN_PASSWORD = 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Person:
    """A signed-in person; `totp` says whether they have two-factor sign-in on."""

    name: str
    role: str
    totp: bool = False

    @property
    def actor(self) -> str:
        return f"user:{self.name}"

    @property
    def must_enrol(self) -> bool:
        """An admin without two-factor sign-in may do nothing but turn it on."""
        return self.role == "admin" and not self.totp


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(actual.hex(), digest)


@dataclass(frozen=True)
class UserRecord:
    """A user as `users list` shows it (never the password hash)."""

    name: str
    role: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    totp: bool = False


def create_user(uow: UnitOfWork, name: str, role: str, password: str | None, actor: str) -> str:
    """Add a user; returns the password (generated when PASSWORD is None)."""
    return create_users(uow, [(name, role, password)], actor)[0]


def create_users(uow: UnitOfWork, people: list[tuple[str, str, str | None]], actor: str) -> list[str]:
    """Add users (name, role, password or None to generate one), all or none; their passwords."""
    checked = [(name, role, _checked(name, role, password)) for name, role, password in people]
    names = [name for name, _, _ in checked]
    if len(set(names)) != len(names):
        raise UserError(f"a user name is given twice: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    now = dt.datetime.now(dt.UTC)
    try:
        with uow:
            for name, role, password in checked:
                if uow.session.get(User, name) is not None:
                    raise UserError(f"user {name!r} already exists")
                uow.session.add(User(name=name, role=role, password_hash=hash_password(password), created_at=now))
                uow.record(kind="user_created", subject=f"user:{name}", actor=actor,
                           payload={"name": name, "role": role}, at=now)
            uow.commit()
    except IntegrityError:  # created meanwhile by another process, between the look and the commit
        raise UserError(f"user {', '.join(map(repr, names))} already exists (created meanwhile)") from None
    return [password for _, _, password in checked]


def _checked(name: str, role: str, password: str | None) -> str:
    """PASSWORD (generated when None) once NAME, ROLE and it pass the rules; UserError says which did not."""
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: expected 2-64 characters of a-z, 0-9, '.', '_' or '-', "
                        "starting with a letter or digit")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return _password(password)


def _password(password: str | None) -> str:
    """PASSWORD (generated when None) once it passes the rules, or UserError saying why not."""
    if password is None:
        password = secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password has {len(password)} characters; at least {MIN_PASSWORD} are required")
    if shows_nothing(password):
        raise UserError(f"the password is only blank characters (spaces, tabs or invisible ones): expected at least "
                        f"{MIN_PASSWORD} characters, not all of them blank (letters, digits, punctuation)")
    return password


def mark_disabled(uow: UnitOfWork, name: str, actor: str, now: dt.datetime) -> bool:
    """Disable the user NAME in the transaction the caller holds (their signed-in sessions end at their next
    request): True when they were enabled. `cases.service.disable_user` also takes back their cases."""
    user = uow.session.get(User, name)
    if user is None:
        raise UserError(f"no user {name!r}")
    if user.disabled_at is not None:
        return False
    user.disabled_at = now
    uow.record(kind="user_disabled", subject=f"user:{name}", actor=actor, payload={"name": name}, at=now)
    return True


def set_password(uow: UnitOfWork, name: str, password: str | None, actor: str) -> str:
    """Give the user NAME a new password (generated when None; returned), end their signed-in sessions and forget
    their failed sign-ins (a `user_password_set` event, which holds no password). A leaked or forgotten password
    needed a new user before."""
    password = _password(password)
    now = dt.datetime.now(dt.UTC)
    with uow:
        user = _known(uow, name)
        if user.disabled_at is not None:
            raise UserError(f"user {name!r} is disabled: `fraud-service users enable {name}` first")
        _store_password(uow, user, password, actor, now)
        uow.session.execute(delete(SignInFailure).where(SignInFailure.key == f"user:{name}"))
        uow.commit()
    return password


def change_password(uow: UnitOfWork, name: str, current: str, new: str, address: str = "unknown",
                    now: dt.datetime | None = None) -> dt.datetime:
    """A signed-in person's own change of password: CURRENT must be theirs (a wrong one counts as a failed sign-in,
    with its throttling; SignInThrottled meanwhile), NEW must pass the rules and differ from it. Ends every session
    of theirs signed in before; returns that moment (the caller's own session signs in again after it). A
    `user_password_set` event by the person."""
    now = now or dt.datetime.now(dt.UTC)
    attempt = reserve_attempt(uow, attempt_keys(name, address), now)
    with uow.read():
        user = uow.session.get(User, name)
        stored = None if user is None or user.disabled_at is not None else user.password_hash
    if stored is None or not check_password(stored, current):
        failed_attempt(uow, attempt)
        raise UserError("the current password is not right; nothing was changed")
    with uow:
        settle_attempt(uow, attempt, clear=True)
        uow.commit()
    new = _password(new)
    if new == current:
        raise UserError("the new password is the current one: expected another")
    with uow:
        _store_password(uow, _known(uow, name), new, f"user:{name}", now)
        uow.commit()
    return now


def _known(uow: UnitOfWork, name: str) -> User:
    """The user NAME in the caller's transaction, or UserError."""
    user = uow.session.get(User, name)
    if user is None:
        raise UserError(f"no user {name!r} (`fraud-service users list` names them)")
    return user


def _store_password(uow: UnitOfWork, user: User, password: str, actor: str, now: dt.datetime) -> None:
    """USER's new PASSWORD, hashed; every session of theirs signed in before NOW ends (a `user_password_set` event,
    without the password)."""
    user.password_hash = hash_password(password)
    user.sessions_revoked_at = now
    uow.record(kind="user_password_set", subject=f"user:{user.name}", actor=actor, payload={"name": user.name},
               at=now)


def enable_user(uow: UnitOfWork, name: str, actor: str) -> bool:
    """Let a disabled user sign in again (a `user_enabled` event): True when they were disabled. Sessions from
    before stay ended; the cases taken back when they were disabled stay with their queues."""
    now = dt.datetime.now(dt.UTC)
    with uow:
        user = _known(uow, name)
        if user.disabled_at is None:
            return False
        user.disabled_at = None
        user.sessions_revoked_at = now
        uow.record(kind="user_enabled", subject=f"user:{name}", actor=actor, payload={"name": name}, at=now)
        uow.commit()
    return True


def list_users(uow: UnitOfWork) -> list[UserRecord]:
    with uow.read():
        rows = uow.session.execute(select(User).order_by(User.name)).scalars()
        return [UserRecord(u.name, u.role, u.created_at, u.disabled_at, u.totp_enabled_at is not None) for u in rows]


FREE_FAILURES = 3
"""Failed sign-ins in a row before each next attempt must wait (1 s, 2 s, 4 s, ...)."""
LOCK_AFTER = 10
"""Failed sign-ins in a row that lock the user or address for LOCK (an evidence event)."""
LOCK = dt.timedelta(minutes=15)
FORGET = dt.timedelta(hours=1)
"""A run of failures older than this is forgotten."""


def sign_in(uow: UnitOfWork, name: str, password: str, address: str = "unknown",
            now: dt.datetime | None = None) -> Person | None:
    """The person when NAME and PASSWORD match an active user, else None (the same answer for every failure).

    Failures are counted per user and per address: after FREE_FAILURES in a row each next attempt must wait
    longer, after LOCK_AFTER the user or address is locked for LOCK; SignInThrottled says how long, and no
    password is checked meanwhile (so guessing gains nothing). A success clears both counts, except for a person
    whose `totp` is on: they are only half-way in, and `totp.sign_in_code` (which counts its failures here too)
    clears them, so that the right password cannot wipe a run of wrong codes."""
    now = now or dt.datetime.now(dt.UTC)
    keys = attempt_keys(name, address)
    attempt = reserve_attempt(uow, keys, now)
    with uow.read():
        user = uow.session.get(User, name) if len(keys) == 2 else None
        found = None if user is None or user.disabled_at is not None else (user.name, user.role, user.password_hash,
                                                                          user.totp_enabled_at is not None)
    if found is None:
        hash_password(password or "x")  # the same work either way: failures take the same time
    if found is None or not check_password(found[2], password or ""):
        failed_attempt(uow, attempt)
        return None
    with uow:
        settle_attempt(uow, attempt, clear=not found[3])
        uow.commit()
    return Person(found[0], found[1], found[3])


def attempt_keys(name: object, address: str) -> list[str]:
    """What sign-in attempts are counted under: the address, and the user when NAME could be one."""
    keys = [f"address:{address[:100]}"]
    if isinstance(name, str) and 0 < len(name) <= 64:
        keys.append(f"user:{name}")
    return keys


@dataclass(frozen=True)
class Attempt:
    """An attempt counted as failed before its secret is checked (`reserve_attempt`): its keys, its time, and each
    key's run of failures as it was before it (the time of its last failure; None when the attempt began a run)."""

    keys: tuple[str, ...]
    at: dt.datetime
    before: dict[str, dt.datetime | None]


def reserve_attempt(uow: UnitOfWork, keys: list[str], now: dt.datetime) -> Attempt:
    """Count an attempt under KEYS as failed before its secret is checked, or SignInThrottled (nothing counted)
    while one of them must wait. The rows are held for the transaction (PostgreSQL: made if missing, then FOR
    UPDATE in key order; SQLite: its one write lock), so attempts sent at once are judged one after another, each
    seeing the ones before: a burst of guesses gains nothing over guesses one by one. Then either `failed_attempt`
    (which locks a user or address that reached LOCK_AFTER) or `settle_attempt` (which takes the count back)."""
    keys = sorted(keys)  # every transaction holds its rows in one order
    with uow:
        rows = _held(uow, keys, now)
        wait = max(_wait(row, now) for row in rows.values())
        if wait > 0:
            raise SignInThrottled(f"too many failed sign-ins: try again in {wait} second(s)", retry_after=wait)
        before: dict[str, dt.datetime | None] = {}
        for key, row in rows.items():
            fresh = row.failures == 0 or now - chain.aware(row.last_at) > FORGET  # a run older than FORGET is over
            before[key] = None if fresh else chain.aware(row.last_at)
            if fresh:  # reset in place: a row deleted under waiting attempts left them holding nothing
                row.failures, row.locked_until = 0, None
            row.failures += 1
            row.last_at = now
        uow.commit()
    return Attempt(tuple(keys), now, before)


def failed_attempt(uow: UnitOfWork, attempt: Attempt) -> None:
    """ATTEMPT was wrong: a user or address whose run reached LOCK_AFTER is locked for LOCK, as an evidence event
    (only once the secret proved wrong: a right tenth attempt locks nobody)."""
    with uow:
        for key in attempt.keys:
            row = uow.session.get(SignInFailure, key, with_for_update=True, populate_existing=True)
            if row is None or row.failures < LOCK_AFTER:
                continue
            if row.locked_until is None or chain.aware(row.locked_until) <= attempt.at:
                row.locked_until = attempt.at + LOCK
                uow.record(kind="sign_in_locked", subject=key[:80], actor="system", at=attempt.at,
                           payload={"key": key, "failures": row.failures, "until": chain.utc_text(row.locked_until)})
        uow.commit()


def settle_attempt(uow: UnitOfWork, attempt: Attempt, clear: bool) -> None:
    """ATTEMPT was right, in the caller's unit of work: with CLEAR, the runs under its keys end (a success clears
    them); without, only ATTEMPT is taken back (a person half-way in, whose second factor is still to come): its
    count, and its time where no attempt came after it, so that the next step waits no longer than before it."""
    for key in attempt.keys:
        row = uow.session.get(SignInFailure, key, with_for_update=True, populate_existing=True)
        if row is None:
            continue
        if clear:
            row.failures, row.locked_until = 0, None
            continue
        row.failures = max(0, row.failures - 1)
        previous = attempt.before.get(key)
        if previous is not None and chain.aware(row.last_at) == attempt.at:
            row.last_at = previous


def _held(uow: UnitOfWork, keys: list[str], now: dt.datetime) -> dict[str, SignInFailure]:
    """The rows of KEYS (made, counting nothing, where missing), held until the transaction ends."""
    session = uow.session
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        for key in keys:  # a row to hold even for a key never counted: two first attempts queue on it
            session.execute(insert(SignInFailure).values(key=key, failures=0, last_at=now, locked_until=None)
                            .on_conflict_do_nothing(index_elements=["key"]))
        held = session.execute(select(SignInFailure).where(SignInFailure.key.in_(keys)).order_by(SignInFailure.key)
                               .with_for_update().execution_options(populate_existing=True)).scalars()
        return {row.key: row for row in held}
    rows = {}
    for key in keys:
        row = session.get(SignInFailure, key)
        if row is None:
            row = SignInFailure(key=key, failures=0, last_at=now, locked_until=None)
            session.add(row)
        rows[key] = row
    return rows


def _wait(row: SignInFailure | None, now: dt.datetime) -> int:
    """Seconds before KEY may try again (0: now)."""
    if row is None or now - chain.aware(row.last_at) > FORGET:
        return 0
    if row.locked_until is not None and chain.aware(row.locked_until) > now:
        return math.ceil((chain.aware(row.locked_until) - now).total_seconds())
    if row.failures < FREE_FAILURES:
        return 0
    ready = chain.aware(row.last_at) + dt.timedelta(seconds=2 ** (row.failures - FREE_FAILURES))
    return max(0, math.ceil((ready - now).total_seconds()))


def sign_out(uow: UnitOfWork, name: str, now: dt.datetime | None = None) -> None:
    """End every session of NAME on the server (a copied cookie stops working too)."""
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        user = uow.session.get(User, name)
        if user is None:
            return
        user.sessions_revoked_at = now
        uow.record(kind="user_signed_out", subject=f"user:{name}", actor=f"user:{name}", payload={"name": name},
                   at=now)
        uow.commit()


def session_person(uow: UnitOfWork, name: str, signed_in_at: str, second_factor: bool = False) -> Person | None:
    """The person of a session cookie (NAME, signed in at SIGNED_IN_AT), while the user is active and has not
    signed out (or been disabled) since. SECOND_FACTOR says the session proved a TOTP or recovery code (at sign-in,
    or by turning two-factor sign-in on in it): for a user who has it on, a session that did not (one signed in
    with the password alone before it was turned on, perhaps elsewhere) is no longer signed in."""
    try:
        since = dt.datetime.fromisoformat(signed_in_at)
    except (TypeError, ValueError):
        return None
    with uow.read():
        user = uow.session.get(User, name)
        if user is None or user.disabled_at is not None:
            return None
        if user.sessions_revoked_at is not None and chain.aware(user.sessions_revoked_at) >= since:
            return None
        if user.totp_enabled_at is not None and not second_factor:
            return None
        return Person(user.name, user.role, user.totp_enabled_at is not None)


def active_in(session: Session, name: str) -> Person | None:
    """The person NAME if the user exists and is not disabled, in a transaction the caller holds."""
    user = session.get(User, name)
    if user is None or user.disabled_at is not None:
        return None
    return Person(user.name, user.role, user.totp_enabled_at is not None)


def assignee_in(session: Session, name: object) -> str | None:
    """The actor of the active user NAME (`user:` prefix allowed), to assign a case to; None unassigns."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise RequestInvalid([Problem("assignee", f"got {type(name).__name__}", "a user name or null")])
    person = active_in(session, name.removeprefix("user:"))
    if person is None:
        raise RequestInvalid([Problem("assignee", f"no active user {name!r}",
                                      "the name of a user (fraud-service users create NAME)")])
    return person.actor


SEEN_EVERY = dt.timedelta(minutes=1)
"""A person's `last_seen_at` is written at most this often (the UI's requests call `seen`)."""


def seen(uow: UnitOfWork, name: str, now: dt.datetime | None = None) -> None:
    """Record that NAME used the UI at NOW (the assigner gives cases only to people seen lately). One small
    UPDATE, no evidence event: presence is not a decision; callers skip it when they wrote it under SEEN_EVERY ago."""
    with uow:
        uow.session.execute(update(User).where(User.name == name).values(last_seen_at=now or dt.datetime.now(dt.UTC)))
        uow.commit()


def present(user: User, now: dt.datetime, within: dt.timedelta) -> bool:
    """Whether USER counts as signed in at NOW: active, seen in the UI within WITHIN, and not signed out since."""
    if user.disabled_at is not None or user.last_seen_at is None:
        return False
    last = chain.aware(user.last_seen_at)
    if now - last > within:
        return False
    return user.sessions_revoked_at is None or last > chain.aware(user.sessions_revoked_at)
