"""Locks on what a write is about (a return, a customer, a token), not on the whole evidence log.

The evidence writers append to chains of their own (`store.chain`), so nothing makes two of them wait for
each other, except where they touch the same thing: the same return sent to two instances at once (stored
once), or two flagged returns of one customer (one case, not two). Those take a PostgreSQL advisory lock
per subject, held to the end of the transaction, always in ascending key order so that two writers never
wait for each other in a circle. The lock is on the subject's key, a 64-bit hash of its text; two subjects
that share a key wait for each other without need, which is harmless.

SQLite has one write lock for the whole database (BEGIN IMMEDIATE): its writers are serialised already.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

LOCK = "SELECT pg_advisory_xact_lock(CAST({mark} AS BIGINT))"
"""The statement taking one subject's lock, with the driver's or SQLAlchemy's parameter mark."""


def key(kind: str, value: str) -> int:
    """The advisory-lock key of one subject: a signed 64-bit hash of KIND and VALUE."""
    digest = hashlib.blake2b(f"{kind}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def keys(returns: Iterable[str] = (), links: Iterable[tuple[str, str]] = ()) -> list[int]:
    """The keys of RETURNS (return ids) and LINKS (entity, value: what a case is linked by), ascending."""
    return sorted({key("return", r) for r in returns} | {key(f"link:{e}", v) for e, v in links})


def hold(session: Session, links: Iterable[tuple[str, str]]) -> None:
    """In SESSION's transaction, lock what a case is linked by (before reading which open case holds them), as the
    evidence writer does when it opens or joins a case."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for k in keys(links=links):
        session.execute(text(LOCK.format(mark=":k")), {"k": k})
