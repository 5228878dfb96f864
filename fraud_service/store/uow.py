"""The unit of work: one transaction that a service function does all its reads and writes in.

A service takes a `UnitOfWork`, works through `uow.session`, appends evidence with `uow.record`
and calls `uow.commit()` at the end; leaving the block without committing (an exception, an early
return) rolls everything back, so a state change and its evidence event are stored together or
not at all. A database that cannot be reached surfaces as `DatabaseDown` (the faces answer 503),
never as a driver's exception.
"""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.errors import DatabaseDown
from fraud_service.store import chain
from fraud_service.store.db import READ_ONLY, writes_refused
from fraud_service.store.schema import EvidenceEvent

UNREACHABLE = (OperationalError, InterfaceError)
"""Driver errors that mean the database is gone or refused us (not that the statement was wrong)."""


class UnitOfWork:
    """`with uow: ...; uow.commit()`; a block left without `commit()` is rolled back."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._session: Session | None = None
        self._read_only = False
        self._snapshot = False
        self.committed = False

    def read(self, snapshot: bool = False) -> UnitOfWork:
        """This unit of work only reads: on SQLite its transaction begins deferred, so it neither waits for the
        evidence writer nor blocks it (`with uow.read(): ...`). With SNAPSHOT, every statement of the block sees the
        database as it was at the first (PostgreSQL: REPEATABLE READ; SQLite's read transaction does already): a
        check that reads the chain heads, then the events, must not see events committed in between."""
        self._read_only = True
        self._snapshot = snapshot
        return self

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._session

    def __enter__(self) -> UnitOfWork:
        self._session = self._sessions()
        self.committed = False
        if self._read_only:  # the options reach the connection before its transaction begins
            options: dict[str, Any] = {READ_ONLY: True}
            if self._snapshot and self._session.get_bind().dialect.name == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            try:
                self._session.connection(execution_options=options)
            except BaseException as exc:  # __exit__ does not run when __enter__ fails: end the block here
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        session, self._session = self._session, None
        self._read_only = self._snapshot = False  # the next block of this unit of work may write
        try:
            if session is not None:
                # rolls back what was not committed and returns the connection; what the block read stays
                # readable (objects are detached, not expired)
                session.close()
        except UNREACHABLE as failed:
            if exc is None:  # the block's own error, if any, is the one to report
                raise DatabaseDown("the evidence database cannot be reached; nothing was changed") from failed
        except Exception:
            if exc is None:
                raise
        if isinstance(exc, DBAPIError) and exc.orig is not None and writes_refused(exc.orig):
            # read-only (a fail-over's standby), or full: a 503 like the assessments', not a 500 with a traceback
            raise DatabaseDown("the evidence database answers but refuses to write (read-only, or full); nothing was "
                               "changed, retry later") from exc
        if isinstance(exc, UNREACHABLE):
            raise DatabaseDown("the evidence database cannot be reached; nothing was decided or changed, "
                               "retry later") from exc

    def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        self.session.commit()
        self.committed = True

    def lock_chain(self) -> None:
        """Serialise this transaction with every other writer of the root chain (until it ends): every change a person
        or a job makes. The evidence writers' assessments go to segments of their own and do not wait for it."""
        chain.lock_head(self.session)

    def record(self, *, kind: str, subject: str, actor: str, payload: Any,
               at: dt.datetime | None = None) -> EvidenceEvent:
        """Append an evidence event in this transaction (it commits with the change it records)."""
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot record evidence")
        return chain.append(self.session, kind=kind, subject=subject, actor=actor, payload=payload, at=at)
