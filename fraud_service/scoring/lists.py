"""The allow and block lists as each worker sees them: all entries in memory, re-read at most every second.

Lists are short (tokens an analyst or admin put there by hand), and reading them for every request
would cost a database round trip per assessment. A change made through this process's API takes
effect at once (`invalidate`); one made through another worker within `ttl` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.scoring.rules import ListMatch
from fraud_service.store.schema import ListEntry


class ListCache:
    def __init__(self, sessions: sessionmaker[Session], ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str], ListMatch] = {}
        self._expires = -1.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._expires = -1.0

    def matches(self, tokens: Mapping[str, str]) -> list[ListMatch]:
        """The list entries for a request's tokens (entity -> value)."""
        entries = self._current()
        return [entries[key] for key in tokens.items() if key in entries]

    def _current(self) -> dict[tuple[str, str], ListMatch]:
        now = self.clock()
        if now < self._expires:
            return self._entries
        with self._lock:
            if self.clock() >= self._expires:
                with self.sessions() as session:
                    rows = session.execute(select(ListEntry.entity, ListEntry.value, ListEntry.list,
                                                  ListEntry.reason)).all()
                self._entries = {(r.entity, r.value): ListMatch(r.entity, r.value, r.list, r.reason) for r in rows}
                self._expires = now + self.ttl
        return self._entries
