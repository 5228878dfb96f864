"""Two-factor sign-in for people: TOTP codes (RFC 6238, 30-second steps, 6 digits) and single-use recovery codes.

Turning it on takes two steps: `begin` makes a secret (not yet in force) for the person to enter in an
authenticator app, as base32 text or the otpauth:// URI; `confirm` takes a code made from it, turns it on and
returns ten recovery codes, shown once and kept only as hashes. From then on signing in takes the password and
then a code (`sign_in_code`): a TOTP code of the current step or the one either side (pyotp's `valid_window=1`),
never one of a step at or before the last one accepted, so a code seen over someone's shoulder cannot be used
again; or an unused recovery code, which is spent. Wrong codes count towards the password's throttling
(`users.reserve_attempt`). `disable` needs a current code; `reset` (`fraud-service users totp-reset NAME`) is
the admins' way back in for a person who lost the device. Admins must have it on (`Person.must_enrol`).

The secret is stored encrypted (AES-GCM, with a key derived by HKDF from the app's secret: the key that signs
session cookies, `$FRAUD_HOME/secret_key`; the user's name is bound in as associated data). It cannot be stored
as a hash, since checking a code needs it, and this is the evidence database: it is copied to back-ups, read by
`evidence verify` and the checkpoint job from other machines with a read-only role, and handed to auditors. In
clear, whoever reads it could make any person's codes; encrypted, they also need the service's own key file.
The cost: a new `secret_key` makes the stored secrets unreadable (TotpUnreadable says so); recovery codes
still work then, and `users totp-reset` starts a person afresh. No evidence event carries a secret or a code.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, cast

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.orm import Session

from fraud_service.access.users import (
    Person,
    active_in,
    attempt_keys,
    failed_attempt,
    reserve_attempt,
    settle_attempt,
)
from fraud_service.errors import TotpError, TotpUnreadable, UserError
from fraud_service.store.schema import RecoveryCode, User
from fraud_service.store.uow import UnitOfWork

ISSUER = "fraud-service"
"""The name an authenticator app shows beside the account."""
VALID_WINDOW = 1
"""Steps either side of the current one whose codes are accepted (a clock 30 s off, a code typed at the turn)."""
RECOVERY_CODES = 10
_CODE = re.compile(r"^[0-9]{6}$")
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class Enrolment:
    """A secret to enter in an authenticator app: as base32 text, and as the otpauth:// URI a QR code would carry."""

    secret: str
    uri: str


@dataclass(frozen=True)
class TotpStatus:
    """Whether a person's two-factor sign-in is on, the enrolment they began (when not yet on), and how many
    unused recovery codes they have."""

    on: bool
    enrolment: Enrolment | None
    recovery_left: int


def _cipher(app_key: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fraud-service totp secret v1")
    return AESGCM(hkdf.derive(app_key))


def _seal(secret: str, name: str, app_key: bytes) -> str:
    nonce = secrets.token_bytes(12)
    sealed = _cipher(app_key).encrypt(nonce, secret.encode(), name.encode())
    return "aesgcm$" + base64.urlsafe_b64encode(nonce + sealed).decode()


def _unseal(stored: str, name: str, app_key: bytes) -> str:
    """The secret of NAME; TotpUnreadable when it was sealed with another key (or is not a sealed secret)."""
    scheme, _, text = stored.partition("$")
    try:
        if scheme != "aesgcm":
            raise ValueError(scheme)
        raw = base64.urlsafe_b64decode(text)
        return _cipher(app_key).decrypt(raw[:12], raw[12:], name.encode()).decode()
    except (ValueError, InvalidTag) as exc:
        raise TotpUnreadable(f"the two-factor secret of {name!r} cannot be read with this service's key (was "
                             f"$FRAUD_HOME/secret_key replaced?): sign in with a recovery code, or an admin runs "
                             f"`fraud-service users totp-reset {name}`") from exc


def _enrolment(name: str, secret: str) -> Enrolment:
    return Enrolment(secret, pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER))


def _active(session: Session, name: str) -> User:
    user = session.get(User, name)
    if user is None or user.disabled_at is not None:
        raise UserError(f"no active user {name!r}")
    return user


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def begin(uow: UnitOfWork, name: str, app_key: bytes) -> Enrolment:
    """Make a new secret for NAME, not yet in force (`confirm` turns it on); a secret begun before is replaced."""
    secret = pyotp.random_base32()
    with uow:
        user = _active(uow.session, name)
        if user.totp_enabled_at is not None:
            raise TotpError(f"two-factor sign-in is already on for {name!r}; turn it off first (with a current code)")
        user.totp_secret = _seal(secret, name, app_key)
        uow.commit()
    return _enrolment(name, secret)


def confirm(uow: UnitOfWork, name: str, code: str, app_key: bytes, now: dt.datetime | None = None) -> list[str]:
    """Turn NAME's two-factor sign-in on, once CODE shows the app makes the codes of the secret `begin` made; the
    ten recovery codes, in clear this once (an evidence event). NAME's sessions signed in before NOW end."""
    now = _now(now)
    with uow:
        user = _active(uow.session, name)
        if user.totp_enabled_at is not None:
            raise TotpError(f"two-factor sign-in is already on for {name!r}")
        if user.totp_secret is None:
            raise TotpError("no enrolment was begun: start again from the two-factor page")
        step = _step(_unseal(user.totp_secret, name, app_key), code, now)
        if step is None:
            raise TotpError("that code does not match the secret: check the app has the secret shown, and that "
                            "the device's clock is right, then enter its current code")
        # every session from before ends (the caller's signs in again after NOW): one signed in with a stolen password
        # alone came back to life when two-factor sign-in was turned off again
        turned = uow.session.execute(update(User).where(User.name == name, User.totp_enabled_at.is_(None))
                                     .values(totp_enabled_at=now, totp_last_step=step, sessions_revoked_at=now))
        if not _rows(turned):
            raise TotpError(f"two-factor sign-in is already on for {name!r}")
        codes = _new_recovery_codes(uow.session, name, now)
        uow.record(kind="totp_enabled", subject=f"user:{name}", actor=f"user:{name}", at=now,
                   payload={"name": name, "recovery_codes": len(codes)})
        uow.commit()
    return codes


def status(uow: UnitOfWork, name: str, app_key: bytes) -> TotpStatus:
    """NAME's two-factor sign-in: on or not, the enrolment begun (None when none, or unreadable: begin again)."""
    with uow.read():
        user = _active(uow.session, name)
        on, enrolment = user.totp_enabled_at is not None, None
        if not on and user.totp_secret is not None:
            try:
                enrolment = _enrolment(name, _unseal(user.totp_secret, name, app_key))
            except TotpUnreadable:
                enrolment = None
        left = uow.session.execute(select(func.count()).select_from(RecoveryCode).where(
            RecoveryCode.user_name == name, RecoveryCode.used_at.is_(None))).scalar_one()
    return TotpStatus(on, enrolment, left if on else 0)


def sign_in_code(uow: UnitOfWork, name: str, code: str, app_key: bytes, address: str = "unknown",
                 now: dt.datetime | None = None) -> Person | None:
    """The second step of signing in, after `users.sign_in` accepted NAME's password: the person when CODE is a
    current TOTP code not used before or an unused recovery code, else None. Throttled like the password."""
    now = _now(now)
    if _prove(uow, name, code, app_key, address, now) is None:
        return None
    with uow.read():
        return active_in(uow.session, name)


def disable(uow: UnitOfWork, name: str, code: str, app_key: bytes, address: str = "unknown",
            now: dt.datetime | None = None) -> None:
    """Turn NAME's two-factor sign-in off, proven by a current code or an unused recovery code (an evidence event);
    its recovery codes go with it. A wrong code counts like a wrong password. (An admin is then sent to turn it on
    again before anything else: that is how an admin moves to a new device.)"""
    now = _now(now)
    with uow.read():
        if _active(uow.session, name).totp_enabled_at is None:
            raise TotpError(f"two-factor sign-in is not on for {name!r}")
    if _prove(uow, name, code, app_key, address, now) is None:
        raise TotpError("that code is wrong or was used already: enter the app's current code, or an unused "
                        "recovery code; nothing was changed")
    with uow:
        user = _active(uow.session, name)
        if user.totp_enabled_at is not None:
            _clear(uow.session, user)
            uow.record(kind="totp_disabled", subject=f"user:{name}", actor=f"user:{name}", payload={"name": name},
                       at=now)
        uow.commit()


def reset(uow: UnitOfWork, name: str, actor: str, now: dt.datetime | None = None) -> bool:
    """Turn NAME's two-factor sign-in off without a code, for a person who lost the device (an admin's recovery;
    an evidence event naming ACTOR), and end their sessions; False when it was neither on nor begun."""
    now = _now(now)
    with uow:
        user = uow.session.get(User, name)
        if user is None:
            raise UserError(f"no user {name!r}")
        was = "on" if user.totp_enabled_at is not None else "begun" if user.totp_secret is not None else None
        if was is None:
            return False
        _clear(uow.session, user)
        user.sessions_revoked_at = now
        uow.record(kind="totp_reset", subject=f"user:{name}", actor=actor, payload={"name": name, "was": was}, at=now)
        uow.commit()
    return True


def _prove(uow: UnitOfWork, name: str, code: str, app_key: bytes, address: str, now: dt.datetime) -> str | None:
    """'totp' or 'recovery' when CODE proves NAME holds their second factor, else None. A failure is counted under
    the user and the address as a failed sign-in is (SignInThrottled while they must wait; no code is checked
    then), a success clears the counts."""
    keys = attempt_keys(name, address)
    attempt = reserve_attempt(uow, keys, now)  # counted as failed until the code proves right
    unreadable = None
    with uow:
        user = uow.session.get(User, name) if len(keys) == 2 else None
        how = None
        if user is not None and user.disabled_at is None and user.totp_enabled_at is not None:
            try:
                how = _accept(uow, user, code, app_key, now)
            except TotpUnreadable as exc:
                unreadable = exc
        if how is not None:
            settle_attempt(uow, attempt, clear=True)
        uow.commit()
    if how is None:
        failed_attempt(uow, attempt)
    if unreadable is not None:
        raise unreadable
    return how


def _accept(uow: UnitOfWork, user: User, code: str, app_key: bytes, now: dt.datetime) -> str | None:
    """Spend CODE: a TOTP code moves the user's last accepted step forward, a recovery code is marked used (an
    evidence event). Each is one conditional UPDATE, so two requests racing with the same code cannot both win."""
    text = "".join(code.split()) if isinstance(code, str) and len(code) <= 64 else ""
    if _CODE.fullmatch(text):
        assert user.totp_secret is not None
        step = _step(_unseal(user.totp_secret, user.name, app_key), text, now)
        if step is None:
            return None
        moved = uow.session.execute(update(User).where(
            User.name == user.name, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step))
        return "totp" if _rows(moved) else None
    spent = uow.session.execute(update(RecoveryCode).where(
        RecoveryCode.user_name == user.name, RecoveryCode.code_hash == _recovery_hash(user.name, text),
        RecoveryCode.used_at.is_(None)).values(used_at=now))
    if not _rows(spent):
        return None
    left = uow.session.execute(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_name == user.name, RecoveryCode.used_at.is_(None))).scalar_one()
    uow.record(kind="totp_recovery_code_used", subject=f"user:{user.name}", actor=f"user:{user.name}", at=now,
               payload={"name": user.name, "left": left})
    return "recovery"


def _step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The 30-second step, within VALID_WINDOW of NOW's, whose code CODE is; None when none is."""
    try:
        return pyotp.TOTP(secret).verify_and_get_timecode(code, for_time=now, valid_window=VALID_WINDOW)
    except OTPVerificationError:
        return None


def _rows(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _recovery_hash(name: str, code: str) -> str:
    """A recovery code's hash: SHA-256 is enough for 60 random bits (as for API keys); the name keeps one
    person's hashes from matching another's. Dashes and case are ignored, as people type them."""
    plain = code.replace("-", "").lower()
    return hashlib.sha256(f"{name}:{plain}".encode()).hexdigest()


def _new_recovery_codes(session: Session, name: str, now: dt.datetime) -> list[str]:
    """RECOVERY_CODES fresh codes (`xxxx-xxxx-xxxx`, 60 random bits each) replacing any NAME had; stored hashed."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_name == name))
    codes = []
    for _ in range(RECOVERY_CODES):
        plain = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{plain[:4]}-{plain[4:8]}-{plain[8:]}")
        session.add(RecoveryCode(user_name=name, code_hash=_recovery_hash(name, plain), created_at=now))
    return codes


def _clear(session: Session, user: User) -> None:
    """USER's two-factor sign-in off: no secret, no step, no recovery codes."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_name == user.name))
