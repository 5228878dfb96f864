"""API keys with roles, stored hashed: `fsk_<id>_<secret>`, shown once when created.

Roles: `scoring` (the returns workflow: assess and read assessments), `analyst` (reads
assessments and lists, works cases), `admin` (everything, including lists and keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from fraud_service.data.contract import hidden_character, text_problem
from fraud_service.errors import ApiKeyError
from fraud_service.store.schema import ApiKey
from fraud_service.store.uow import UnitOfWork

ROLES = ("scoring", "analyst", "admin", "metrics")
PREFIX = "fsk"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (never the secret), its name and role."""

    key_id: str
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A key as `keys list` shows it (never the secret)."""

    id: str
    role: str
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


MAX_NAME = 120
"""The longest key name (the `api_keys.name` column: PostgreSQL refuses a longer one)."""


def create_key(uow: UnitOfWork, role: str, name: str | None, actor: str) -> str:
    """A new key for ROLE; returns the full key (the only time it exists in clear). Scoring keys of one NAME see each
    other's assessments (a key rotated under the same name keeps its client's); without a NAME the key is named
    after itself (`scoring key 1a2b3c4d5e6f`), a client of its own: two keys made without one used to share the
    name "scoring key", and each read and appealed the other's assessments."""
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    name = f"{role} key {key_id}" if name is None else name
    # the name is printed in `keys list` and shown on pages: no terminal escapes, invisible or control characters
    if not name.strip() or len(name) > MAX_NAME or hidden_character(name) or text_problem(name):
        raise ApiKeyError(f"key name {name[:60]!r}{'...' if len(name) > 60 else ''}: expected 1 to {MAX_NAME} "
                          "characters, without control or invisible characters or spaces at either end")
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"
    now = dt.datetime.now(dt.UTC)
    with uow:
        uow.session.add(ApiKey(id=key_id, secret_hash=_digest(key), role=role, name=name, created_at=now))
        uow.record(kind="api_key_created", subject=f"key:{key_id}", actor=actor,
                   payload={"key_id": key_id, "role": role, "name": name}, at=now)
        uow.commit()
    return key


def revoke_key(uow: UnitOfWork, key_id: str, actor: str) -> None:
    """Revoke a key by its id (revoking a revoked key changes nothing)."""
    with uow:
        row = uow.session.get(ApiKey, key_id)
        if row is None:
            raise ApiKeyError(f"no API key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = dt.datetime.now(dt.UTC)
            uow.record(kind="api_key_revoked", subject=f"key:{key_id}", actor=actor, payload={"key_id": key_id})
        uow.commit()


def list_keys(uow: UnitOfWork) -> list[KeyRecord]:
    with uow.read():
        rows = uow.session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars()
        return [KeyRecord(k.id, k.role, k.name, k.created_at, k.revoked_at) for k in rows]


KEY_SHAPE = re.compile(rf"{PREFIX}_[0-9a-f]{{1,32}}_[A-Za-z0-9_-]{{1,100}}")
"""What a key `create_key` makes looks like (with room): anything else is refused unlooked-up and uncached."""


def well_formed(presented: str) -> bool:
    """Whether PRESENTED has the shape of a key (`KEY_SHAPE`)."""
    return KEY_SHAPE.fullmatch(presented) is not None


def authenticate(uow: UnitOfWork, presented: str) -> Principal | None:
    """The principal of a presented key, or None when it is malformed, unknown, wrong or revoked."""
    if not well_formed(presented):
        return None
    parts = presented.split("_", 2)
    with uow.read():
        row = uow.session.get(ApiKey, parts[1])
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash,
                                                                               _digest(presented)):
            return None
        return Principal(row.id, row.name, row.role)
