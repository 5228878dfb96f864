"""API keys with roles, stored hashed: `fsk_<id>_<secret>`, shown once when created.

Roles: `scoring` (the returns workflow: assess and read assessments), `analyst` (reads
assessments and lists, works cases), `admin` (everything, including lists and keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fraud_service.errors import FraudServiceError
from fraud_service.store import chain
from fraud_service.store.schema import ApiKey

ROLES = ("scoring", "analyst", "admin")
PREFIX = "fsk"


class ApiKeyError(FraudServiceError):
    """A key cannot be created or found."""


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


def create_key(session: Session, role: str, name: str, actor: str) -> str:
    """A new key for ROLE; returns the full key (the only time it exists in clear)."""
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"
    now = dt.datetime.now(dt.UTC)
    session.add(ApiKey(id=key_id, secret_hash=_digest(key), role=role, name=name, created_at=now))
    chain.append(session, kind="api_key_created", subject=f"key:{key_id}", actor=actor,
                 payload={"key_id": key_id, "role": role, "name": name}, at=now)
    return key


def revoke_key(session: Session, key_id: str, actor: str) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ApiKeyError(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = dt.datetime.now(dt.UTC)
        chain.append(session, kind="api_key_revoked", subject=f"key:{key_id}", actor=actor,
                     payload={"key_id": key_id})


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars())


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal of a presented key, or None when it is malformed, unknown, wrong or revoked."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    row = session.get(ApiKey, parts[1])
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _digest(presented)):
        return None
    return Principal(row.id, row.name, row.role)
