"""Group commit of assessments: one writer thread per process chains and commits what is waiting together.

Each request thread hands its assessment to the writer and waits until the transaction holding it
has committed (the answer is never sent before its evidence is durable). Whatever arrived while
the previous transaction was committing goes into the next one: under load several assessments
share one commit (one fsync on SQLite), without load each is committed on its own at once.

Inside the transaction the chain head is locked first, so the duplicate check on `return_id` and
the inserts are serialised with every other writer of the chain (other workers, the lists API,
the CLI): a return assessed twice, even concurrently, is stored once.

The statements go to the driver directly (prepared once per process from the SQLAlchemy tables,
with SQLAlchemy's own value conversions): through the expression layer a one-row batch cost
about 2.6 ms of CPU, nearly all of it building statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError

from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """An assessment to store: its row (without event_seq) and the evidence payload."""

    row: dict[str, Any]
    payload: dict[str, Any]
    actor: str
    at: dt.datetime
    future: Future[int | None]


class DatabaseDown(Exception):
    """The batch holding this assessment could not be committed."""


class EvidenceWriter:
    """Commits assessments and their evidence events in batches; `store` blocks until committed."""

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self.engine = engine
        self._sql = _Statements(engine)
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._lock_file = open(f"{database}.writer-lock", "a") if database and database != ":memory:" else None  # noqa: SIM115
        self.max_batch = max_batch
        self.batches = 0
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
        self._thread.start()

    def store(self, row: dict[str, Any], payload: dict[str, Any], actor: str, at: dt.datetime,
              timeout: float = 30.0) -> int | None:
        """Commit one assessment; its event's sequence number, or None when ROW's return_id is already stored.

        Raises DatabaseDown when the transaction failed (nothing of it was stored).
        """
        future: Future[int | None] = Future()
        self._queue.put(Pending(row, payload, actor, at, future))
        return future.result(timeout=timeout)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, writer processes queue on a file lock, woken the moment it is free: SQLite's own busy
        handler polls with sleeps of up to 100 ms, which under load puts whole batches to sleep."""
        if self._lock_file is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self._lock_file is not None:
            self._lock_file.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Pending]) -> None:
        outcome: dict[int, int | None] = {}
        try:
            with self._turn(), self.engine.begin() as connection:  # BEGIN IMMEDIATE on SQLite (fraud_service.store.db)
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.execute(self._sql.head)
                seq, previous = cursor.fetchone()
                ids = [p.row["return_id"] for p in batch]
                cursor.execute(self._sql.stored(len(ids)), ids)
                stored = {row[0] for row in cursor.fetchall()}
                events, rows = [], []
                for i, pending in enumerate(batch):
                    return_id = pending.row["return_id"]
                    if return_id in stored:
                        outcome[i] = None
                        continue
                    stored.add(return_id)
                    seq += 1
                    subject = pending.row["id"]
                    text = chain.canonical(pending.payload)
                    digest = chain.link_hash(previous, seq, pending.at, "assessment", subject, pending.actor, text)
                    events.append(self._sql.event_params({
                        "seq": seq, "at": pending.at, "kind": "assessment", "subject": subject,
                        "actor": pending.actor, "payload": text, "prev_hash": previous, "hash": digest}))
                    rows.append(self._sql.assessment_params({**pending.row, "event_seq": seq}))
                    previous = digest
                    outcome[i] = seq
                if events:
                    cursor.executemany(self._sql.insert_event, events)
                    cursor.executemany(self._sql.insert_assessment, rows)
                    cursor.execute(self._sql.move_head, (seq, previous))
                cursor.close()
        except DBAPIError as exc:
            log.error("evidence batch of %d failed: %s", len(batch), exc.orig)
            for pending in batch:
                pending.future.set_exception(DatabaseDown(str(exc.orig)))
            return
        except Exception as exc:  # never leave a request thread waiting
            log.exception("evidence batch of %d failed", len(batch))
            for pending in batch:
                pending.future.set_exception(exc)
            return
        self.batches += 1
        for i, pending in enumerate(batch):
            pending.future.set_result(outcome[i])


class _Statements:
    """The writer's SQL in the driver's parameter style, and the column conversions SQLAlchemy would apply."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        lock = "" if dialect.name == "sqlite" else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE holds the lock
        self.head = f"SELECT seq, hash FROM chain_head WHERE id = 1{lock}"
        self.move_head = f"UPDATE chain_head SET seq = {self.mark}, hash = {self.mark} WHERE id = 1"
        self.insert_event, self.event_params = self._insert(EvidenceEvent.__table__, dialect)  # type: ignore[arg-type]
        self.insert_assessment, self.assessment_params = self._insert(Assessment.__table__, dialect)  # type: ignore[arg-type]

    def stored(self, n: int) -> str:
        return f"SELECT return_id FROM assessments WHERE return_id IN ({', '.join([self.mark] * n)})"

    def _insert(self, table: Table, dialect: Any) -> tuple[str, Any]:
        columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        names = [c.name for c in columns]
        processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([self.mark] * len(names))})"

        def params(values: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(values[name] if convert is None else convert(values[name])
                         for name, convert in zip(names, processors, strict=True))

        return sql, params
