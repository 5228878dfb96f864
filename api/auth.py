"""API keys on every JSON endpoint: `Authorization: Bearer KEY`; 401 without a valid key, 403 without the role."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from fraud_service.access.keys import Principal, well_formed
from fraud_service.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])
CACHE_SECONDS = 30.0
"""A verified key is trusted for this long in a worker; a revocation takes at most this long to bite."""


def verify(app: Flask, presented: str) -> Principal | None:
    """The principal of the key PRESENTED to APP, or None; a verified key (or an unknown one) is remembered for
    CACHE_SECONDS."""
    cache: dict[str, tuple[Principal | None, float]] = app.extensions.setdefault("key_cache", {})
    hit = cache.get(presented)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    if not well_formed(presented):  # not looked up, nor cached: 10,000 junk bearer strings of 8 KB each held 80 MB
        return None
    found = app.extensions["fraud"].authenticate(presented)
    if len(cache) > 10_000:
        cache.clear()
    cache[presented] = (found, now + CACHE_SECONDS)
    return found


def optional_principal() -> Principal | None:
    """The caller when it sent a valid key, else None (for pages that show more to a known caller)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    return verify(current_app, presented.strip())


def current_principal() -> Principal:
    """The caller, or a 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("send an API key as `Authorization: Bearer KEY` "
                           "(create one with `fraud-service keys create --role ROLE`)")
    principal = verify(current_app, presented.strip())
    if principal is None:
        raise Unauthorized("the API key is unknown, malformed or revoked")
    g.principal = principal
    return principal


def requires(*roles: str) -> Callable[[F], F]:
    """Only callers whose key has one of ROLES (admin always may) reach the view."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal.role != "admin" and principal.role not in roles:
                allowed = dict.fromkeys((*roles, "admin"))  # in order, once each
                article = "an" if principal.role[:1] in "aeiou" else "a"
                raise Forbidden(f"{article} {principal.role} key may not do this (needs {' or '.join(allowed)})")
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
