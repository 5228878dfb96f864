"""Bounded waits on the evidence database.

A database that hangs (a stalled server, a network that drops packets without resetting) must cost a
request a 503 within its deadline, not a worker thread for as long as the hang lasts. Two tools:

- `SingleFlight` runs a read on a helper thread and lets callers wait for it at most a deadline. Callers
  that arrive while it is running wait for the same call, so a hung database holds one helper thread,
  not one per request.
- `DeadlineConnection` (PostgreSQL, see `store.db.make_engine`) gives every round trip to the server a
  client-side deadline. Past it the connection is closed and the statement fails, so the helper thread
  and the evidence writer are free again, and the pool replaces the connection: when the database
  answers again, the service recovers without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

from fraud_service.errors import DatabaseDown

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")


class SingleFlight:
    """Calls that callers wait for at most SECONDS; one call per key at a time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._running: dict[Hashable, Future[Any]] = {}
        self._lock = threading.Lock()

    def call(self, key: Hashable, fn: Callable[[], T]) -> T:
        """FN's result, or DatabaseDown when it takes longer than the deadline (FN goes on, on its thread, until
        its own deadline ends it). Its exceptions are raised here."""
        return self.result(self.start(key, fn), self.seconds)

    def start(self, key: Hashable, fn: Callable[[], T]) -> Future[T]:
        """FN running on a helper thread (or the call for KEY that already runs)."""
        with self._lock:
            future = self._running.get(key)
            if future is None:
                future = Future()
                self._running[key] = future
                threading.Thread(target=self._run, args=(key, fn, future), name="single-flight", daemon=True).start()
        return future

    @staticmethod
    def result(future: Future[T], seconds: float) -> T:
        """FUTURE's result within SECONDS, else DatabaseDown."""
        try:
            return future.result(timeout=max(seconds, 0.0))
        except FutureTimeout:
            raise DatabaseDown(f"the evidence database did not answer within {seconds:g} s") from None

    def _run(self, key: Hashable, fn: Callable[[], Any], future: Future[Any]) -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to every waiting caller
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with self._lock:
            del self._running[key]
        if outcome[0]:
            future.set_result(outcome[1])
        else:
            future.set_exception(outcome[1])


def deadline_connection(seconds: float) -> type[psycopg.Connection[Any]]:
    """A psycopg connection class whose every wait on the server ends after SECONDS: the connection is then
    closed (it is in an unknown state half-way through a message) and OperationalError raised."""
    import psycopg
    from psycopg import errors

    class DeadlineConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if timeout is not None:  # a caller with its own timeout (notifies) handles its expiry itself
                return super().wait(gen, interval=interval, timeout=timeout)
            try:
                return super().wait(gen, interval=interval, timeout=seconds)
            except errors._WaitTimeout:  # psycopg's own "wait timeout expired"
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {seconds:g} s; the connection was closed") from None

    return DeadlineConnection
