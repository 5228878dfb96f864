"""Group commit of assessments: writer threads (lanes) chain and commit what is waiting together.

Each request thread hands its assessment to the writer and waits until the transaction holding it
has committed (the answer is never sent before its evidence is durable). Whatever arrived while
the previous transaction was committing goes into the next one: under load several assessments
share one commit (one fsync on SQLite), without load each is committed on its own at once.

Each lane appends to a chain segment of its own (`store.chain.open_segment`, at its first batch; closed
when the writer closes), so no lock shared by all writers is held across a round trip to the database or
its fsync: two lanes, two processes, or two instances commit side by side. On PostgreSQL a process has
two lanes, so that while one waits for its commit's round trip the next assessments go out on the other;
on SQLite one (the database has one write lock). What must still be serialised is locked
by subject (`store.locks`): the return ids of the batch, so that a return sent to two instances at once is
stored once, and what each flagged assessment's case is linked by, so that one customer's returns join one
case. A deadlock the database breaks (two batches locking two cases in opposite orders) is retried.

What a batch writes is not decided here: `fraud_service.scoring.evidence.write_batch` (the assessment
record, its evidence event and the case it opens or joins) runs inside the transaction.

The statements go to the driver directly (prepared once per process from the SQLAlchemy tables,
with SQLAlchemy's own value conversions): through the expression layer a one-row batch cost
about 2.6 ms of CPU, nearly all of it building statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from fraud_service.errors import BatchAbandoned, CommitUnconfirmed, DatabaseDown, EvidenceFileGone, Unstorable
from fraud_service.store import chain, locks
from fraud_service.store.db import check_file, writes_refused
from fraud_service.store.schema import Assessment, Case, EvidenceEvent

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """An assessment to store: its row (without event_seq) and the evidence payload.

    Its request waits a bounded time. A request that stops waiting before the writer sends its transaction abandons
    its assessment, and the writer leaves it out (its 503 says nothing was stored, and that is true); once the
    writer has sent the transaction that holds it, its commit included, the outcome is not known when the wait ends,
    and the 503 says it may be stored (the same request again returns it if it is)."""

    row: dict[str, Any]
    payload: dict[str, Any]
    actor: str
    at: dt.datetime
    future: Future[int | None]
    links: dict[str, str] | None = None  # entity -> value when the assessment needs a case
    state: str = "waiting"  # then "abandoned" (by its request) or "committing" (by the writer)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def abandon(self) -> bool:
        """The request gives up: True unless the writer is already committing this assessment."""
        with self.lock:
            if self.state == "waiting":
                self.state = "abandoned"
            return self.state == "abandoned"

    def claim(self) -> bool:
        """The writer is about to commit: True unless the request has given up."""
        with self.lock:
            if self.state == "waiting":
                self.state = "committing"
            return self.state == "committing"


@dataclass
class Tail:
    """Where a writer's chain segment ends, as far as the writer knows (it is the segment's only writer). After a
    transaction whose outcome is not known the end is forgotten and read again at the next batch."""

    chain: int
    position: int | None = None
    hash: str | None = None

    def ends(self, position: int, digest: str) -> None:
        self.position, self.hash = position, digest

    def forget(self) -> None:
        self.position = self.hash = None


BatchWrite = Callable[[Any, "Statements", Tail, list[Pending], bool], dict[int, int | None]]
"""Writes a batch through a DB-API cursor inside the writer's transaction, on the writer's chain segment (its Tail,
moved to the batch's last event), checking first which returns are stored when told to; the position of each
pending assessment's event by its index, None for one already stored (`fraud_service.scoring.evidence.write_batch`)."""

LANES = 2
"""Writer threads per process on PostgreSQL, each with its own connection and chain segment."""
RETRIES = 3
"""How many times a batch the database chose as a deadlock's victim (or could not serialise) is tried again."""
RETURN_ID_KEY = "assessments_return_id_key"  # PostgreSQL's name for the unique return id
UNREACHED = "the evidence database cannot be reached"
UNCONFIRMED = "the evidence database's connection failed after the commit was sent"
REFUSED = "the evidence database refuses to write (read-only, out of space, or not permitted)"


def owner() -> str:
    """Who opens a segment: this host, its process namespace and this process (`gone` can tell when it died)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}:{os.getpid()}"


def gone(opener: str) -> bool:
    """Whether OPENER (an `owner()`) was a process of this host and process namespace that no longer runs."""
    host, _, rest = opener.partition(":")
    namespace, _, pid = rest.partition(":")
    mine = owner().split(":")
    if host != mine[0] or namespace != mine[1] or not pid.isdigit() or pid == mine[2]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (under another user)
        return False
    return False


def _closed_by_server(raw: Any) -> bool:
    """Whether the server has closed RAW's connection (PostgreSQL), found without a round trip: what the socket
    already holds is read, and a closed socket or a termination notice shows. A batch is then sent on a new
    connection instead of being lost on a dead one."""
    from psycopg import pq

    pgconn = raw.driver_connection.pgconn
    try:
        # twice: a server ending the session (an administrator's pg_terminate_backend, a restart) sends a FATAL
        # notice and then closes; the first read takes the notice and succeeds, only the second meets the end
        pgconn.consume_input()
        pgconn.consume_input()
    except Exception:
        return True
    return bool(pgconn.status != pq.ConnStatus.OK)


def _rolled_back(cursor: Any, raw: Any) -> bool:
    """Close CURSOR and roll RAW's transaction back; whether that worked (the connection can be used again)."""
    try:
        cursor.close()
        raw.rollback()
    except Exception:
        log.debug("rolling back the writer's transaction failed", exc_info=True)
        return False
    return True


def _stored_return(exc: BaseException) -> bool:
    """Whether EXC is PostgreSQL refusing an assessment whose return is stored already (unique return id)."""
    error = getattr(exc, "orig", None) or exc
    diag = getattr(error, "diag", None)
    return getattr(error, "sqlstate", None) == "23505" and getattr(diag, "constraint_name", None) == RETURN_ID_KEY


@dataclass
class _Lane:
    """One writer thread with its own connection and chain segment: lanes commit side by side, so an assessment that
    arrives while one lane waits for its commit's round trip goes out at once on another."""

    number: int
    tail: Tail | None = None
    connection: Any = None
    thread: threading.Thread | None = None


class EvidenceWriter:
    """Commits assessments and their evidence events in batches; `store` blocks until committed."""

    def __init__(self, engine: Engine, write_batch: BatchWrite, max_batch: int = 64, wait_s: float = 30.0,
                 lanes: int | None = None) -> None:
        self.engine = engine
        self.wait_s = wait_s
        self._sql = Statements(engine)
        self._write_batch = write_batch
        self._sqlite = engine.dialect.name == "sqlite"
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._lock_file = open(f"{database}.writer-lock", "a") if database and database != ":memory:" else None  # noqa: SIM115
        self.max_batch = max_batch
        self.batches = 0
        self.owner = owner()
        # (monotonic time, error type) of the last batch the database refused to write (`writes_refused`), until
        # a batch is stored
        self.failed: tuple[float, str] | None = None
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        # SQLite has one write lock for the database: a second lane would only wait for it
        count = 1 if self._sqlite else (LANES if lanes is None else lanes)
        self._lanes = [_Lane(i) for i in range(count)]
        for lane in self._lanes:
            lane.thread = threading.Thread(target=self._run, args=(lane,), name=f"evidence-writer-{lane.number}",
                                           daemon=True)
            lane.thread.start()

    @property
    def segments(self) -> list[int]:
        """The chains this writer's lanes have opened (each at its first batch), in lane order."""
        return [lane.tail.chain for lane in self._lanes if lane.tail is not None]

    def store(self, row: dict[str, Any], payload: dict[str, Any], actor: str, at: dt.datetime,
              links: dict[str, str] | None = None) -> int | None:
        """Commit one assessment; its event's position in its lane's chain segment, or None when ROW's return_id is
        already stored.

        With LINKS (the customer and tokens of an assessment that needs a human), the assessment joins
        the open case linked to any of them, or opens one, in the same transaction; the case id is
        written into ROW and into the payload's response before either is stored.
        Raises DatabaseDown when the transaction failed (nothing of it was stored), or when it was not confirmed
        within `wait_s` (nothing was stored if it had not been sent; else it may be, and its message says so).
        """
        pending = Pending(row, payload, actor, at, Future(), links)
        self._queue.put(pending)
        try:
            return pending.future.result(timeout=self.wait_s)
        except FutureTimeout:
            if pending.abandon():
                raise DatabaseDown(f"the evidence database did not store the assessment within {self.wait_s:g} s "
                                   "(nothing was stored)") from None
        # the transaction holding it was sent with its commit (on PostgreSQL, in the same round trip as its inserts):
        # its outcome is not known yet, and the statement deadline ends it in the writer
        raise CommitUnconfirmed(f"the evidence database did not confirm the commit within {self.wait_s:g} s")

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

    def close(self, seal: bool = True) -> None:
        """Commit what is waiting, then record on the root chain where each lane's segment ends (unless not SEAL:
        the segments stay open, as a killed process leaves them)."""
        for _ in self._lanes:
            self._queue.put(None)
        for lane in self._lanes:
            assert lane.thread is not None
            lane.thread.join(timeout=30)
            if lane.connection is not None:
                lane.connection.close()
            if seal and lane.tail is not None and not lane.thread.is_alive():
                try:
                    with self._turn(), Session(self.engine) as session, session.begin():
                        chain.close_segment(session, lane.tail.chain, self.owner)
                except Exception:  # the segment stays open: it verifies up to its head all the same
                    log.exception("closing evidence chain %s failed", lane.tail.chain)
                lane.tail = None
        if self._lock_file is not None:
            self._lock_file.close()

    def _open_segment(self, lane: _Lane) -> Tail:
        """LANE's chain segment, opened on the root chain at its first batch (in its own transaction). The first
        lane to open one also closes the segments left open by processes of this machine that are gone."""
        if lane.tail is None:
            with Session(self.engine) as session, session.begin():
                segment, opened = chain.open_segment(session, self.owner)
            lane.tail = Tail(segment, 0, opened)
            if lane.number == 0:
                self._close_orphans()
        return lane.tail

    def _close_orphans(self) -> None:
        """Close the segments a process of this host (and of this process namespace) opened and never closed
        because it was killed: they verify all the same, but every checkpoint would list them forever."""
        try:
            with Session(self.engine) as session, session.begin():
                for chain_id, opener in chain.open_segments(session).items():
                    if gone(opener):
                        chain.close_segment(session, chain_id, self.owner)
                        log.info("closed evidence chain %s, left open by %s (no longer running)", chain_id, opener)
        except Exception:  # they stay open and verify: a checkpoint lists them
            log.exception("closing evidence chains of processes that are gone failed")

    def _run(self, lane: _Lane) -> None:
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
            self._commit(lane, batch)
            if stop:
                return

    def _commit(self, lane: _Lane, batch: list[Pending]) -> None:
        batch = [pending for pending in batch if pending.state != "abandoned"]
        if not batch:
            return
        try:
            with self._turn():
                outcome = self._retried(lane, batch)
        except BatchAbandoned:  # some requests gave up while their assessments were written: commit the others
            self._commit(lane, batch)
            return
        except (DBAPIError, self._driver_error) as exc:
            detail = getattr(exc, "orig", None) or exc
            refused = writes_refused(detail)  # read-only (a fail-over's standby), full: every record alike
            if not self._unreachable(detail) and not refused:
                if len(batch) > 1:  # one record the database refuses fails its own request, not its batch's
                    log.warning("evidence batch of %d refused (%s): committing its assessments one by one",
                                len(batch), detail)
                    for pending in batch:
                        self._commit(lane, [pending])
                    return
                log.error("evidence database refused an assessment: %s", detail)
                batch[0].future.set_exception(Unstorable(
                    f"the evidence database refused this assessment's record ({_first_line(detail)}); nothing was "
                    "decided, and the same request will be refused again"))
                return
            log.error("evidence batch of %d failed: %s", len(batch), detail)
            if refused:
                self.failed = (time.monotonic(), type(detail).__name__)  # not its text: /readyz shows it to anyone
            for pending in batch:
                # once its commit was sent, whether it was stored is not known; unless the database answered that
                # it writes nothing
                unknown = pending.state == "committing" and not refused
                # the driver's text (host, port, database) is the cause, for the log, not the caller's answer
                failure = (CommitUnconfirmed(UNCONFIRMED) if unknown else
                           DatabaseDown(REFUSED if refused else UNREACHED))
                failure.__cause__ = detail
                pending.future.set_exception(failure)
            return
        except EvidenceFileGone as exc:
            log.error("evidence batch of %d not written: %s (%s)", len(batch), exc, self.engine.url.database)
            for pending in batch:
                pending.future.set_exception(exc)
            return
        except Exception as exc:  # never leave a request thread waiting
            log.exception("evidence batch of %d failed", len(batch))
            for pending in batch:
                pending.future.set_exception(exc)
            return
        self.batches += 1
        self.failed = None
        for i, pending in enumerate(batch):
            pending.future.set_result(outcome[i])

    def _retried(self, lane: _Lane, batch: list[Pending]) -> dict[int, int | None]:
        """`_transaction`, tried again when the database ended it to break a deadlock or a serialisation conflict
        (nothing of it was stored)."""
        check = self._sqlite  # on PostgreSQL a stored return is found by its unique id, and the batch tried again
        for attempt in range(RETRIES + 1):
            try:
                return self._transaction(lane, batch, check)
            except (DBAPIError, self._driver_error) as exc:
                state = str(getattr(getattr(exc, "orig", None) or exc, "sqlstate", "") or "")
                if _stored_return(exc) and not check:
                    check = True  # a return stored before (or by another instance meanwhile): leave it out
                    continue
                if not state.startswith("40") or attempt == RETRIES:
                    raise
                log.warning("evidence batch of %d ended by the database (%s): trying it again", len(batch), state)
        return self._transaction(lane, batch, True)

    def _unreachable(self, error: BaseException) -> bool:
        """Whether ERROR (the driver's) means the database is gone or busy, rather than refusing this data."""
        driver = self.engine.dialect.loaded_dbapi
        return isinstance(error, OperationalError | InterfaceError | driver.OperationalError | driver.InterfaceError)

    def _transaction(self, lane: _Lane, batch: list[Pending], check: bool) -> dict[int, int | None]:
        """Write BATCH in one transaction on LANE's own connection (checked out once, replaced after an error); the
        position of each assessment's event in the lane's segment, or None for a return already stored."""
        tail = self._open_segment(lane)
        if lane.connection is not None and not self._sqlite and _closed_by_server(lane.connection):
            with contextlib.suppress(Exception):
                lane.connection.invalidate()
            lane.connection = None  # cut while the lane was idle (a restart, a proxy): the batch goes on a new one
        if lane.connection is None:
            lane.connection = self.engine.raw_connection()
        raw = lane.connection
        cursor = raw.cursor()
        try:
            # PostgreSQL in pipeline mode: statements are sent without waiting for each answer, and the transaction
            # waits only where it reads one (the flagged assessments' linked cases, the stored returns after a
            # refused duplicate, the segment's end after a failure: all in one round trip) and at its commit.
            with contextlib.nullcontext() if self._sqlite else raw.driver_connection.pipeline():
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    check_file(self.engine)  # the file may have been removed or replaced: nothing is written then
                outcome = self._write_batch(cursor, self._sql, tail, batch, check)
                if not all([pending.claim() for pending in batch]):  # every one is claimed or abandoned
                    tail.forget()
                    if self._sqlite:
                        cursor.execute("ROLLBACK")
                    else:
                        raw.rollback()
                    cursor.close()
                    raise BatchAbandoned
                if self._sqlite:
                    cursor.execute("COMMIT")
                else:
                    raw.commit()
        except BatchAbandoned:
            raise
        except BaseException as exc:
            tail.forget()  # committed or not, the next batch reads where the segment ends
            if _stored_return(exc) and _rolled_back(cursor, raw):  # the database answered: the connection is sound
                raise
            lane.connection = None
            with contextlib.suppress(Exception):  # the connection may be gone already
                cursor.close()
            try:
                raw.invalidate()  # the server rolls back what it holds; the connection is never reused
            except Exception:
                log.debug("invalidating the writer's connection failed", exc_info=True)
            raise  # the original error, not one from cleaning up after it
        cursor.close()
        return outcome


class Statements:
    """The writer's SQL in the driver's parameter style, and the column conversions SQLAlchemy would apply."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.postgres = dialect.name == "postgresql"
        m = self.mark
        lock = " FOR UPDATE" if self.postgres else ""  # SQLite: BEGIN IMMEDIATE holds the database's one write lock
        self.head = f"SELECT seq, hash FROM chain_head WHERE id = {m}{lock}"  # the writer's own segment: uncontended
        self.move_head = f"UPDATE chain_head SET seq = {m}, hash = {m} WHERE id = {m}"
        self.lock = locks.LOCK.format(mark=m)  # PostgreSQL only
        # events are numbered by the database as they are inserted (the sequence's default; SQLite's rowid), and an
        # assessment names the event inserted just before it
        self.last_event = "currval('evidence_event_ids')" if self.postgres else "last_insert_rowid()"
        self.insert_event, self.event_params = self._insert(EvidenceEvent.__table__, dialect, numbered="seq")  # type: ignore[arg-type]
        self.insert_assessment, self.assessment_params = self._insert(Assessment.__table__, dialect,  # type: ignore[arg-type]
                                                                      last_event="event_seq")
        self.insert_case, self.case_params = self._insert(Case.__table__, dialect)  # type: ignore[arg-type]
        self.insert_link = (f"INSERT INTO case_links (case_id, entity, value) VALUES ({m}, {m}, {m}) "
                            "ON CONFLICT DO NOTHING")
        self.update_case = (f"UPDATE cases SET updated_at = {m}, assessments = {m}, amount = {m}, max_score = {m}, "
                            f"reason = {m}, decision = {m} WHERE id = {m}")
        self._time = Case.__table__.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)

    def update_params(self, case_id: str, values: dict[str, Any]) -> tuple[Any, ...]:
        at = values["updated_at"]
        return (at if self._time is None else self._time(at), values["assessments"], values["amount"],
                values["max_score"], values["reason"], values["decision"], case_id)

    def linked_case(self, n: int) -> str:
        """Cases not closed that are linked to any of N (entity, value) pairs, with the matching pairs and the
        cases' totals, earliest opened first; on PostgreSQL locked until the commit (a case being closed meanwhile
        is waited for, then not found: a closed case is never joined)."""
        match = " OR ".join([f"(l.entity = {self.mark} AND l.value = {self.mark})"] * n)
        return ("SELECT c.id, l.entity, l.value, c.assessments, c.amount, c.max_score, c.reason, c.decision "
                "FROM case_links l JOIN cases c ON c.id = l.case_id "
                f"WHERE c.status <> 'closed' AND ({match}) ORDER BY c.opened_at, c.id"
                + (" FOR UPDATE OF c" if self.postgres else ""))

    def lock_cases(self, n: int) -> str:
        """Lock, in id order, the cases not closed that are linked to any of N (entity, value) pairs: every writer
        and a bulk close lock cases in the same order, so none waits for another in a circle."""
        match = " OR ".join([f"(l.entity = {self.mark} AND l.value = {self.mark})"] * n)
        return (f"SELECT c.id FROM cases c WHERE c.status <> 'closed' AND c.id IN (SELECT l.case_id FROM case_links l "
                f"WHERE {match}) ORDER BY c.id FOR UPDATE OF c")

    def stored(self, n: int) -> str:
        return f"SELECT return_id FROM assessments WHERE return_id IN ({', '.join([self.mark] * n)})"

    def _insert(self, table: Table, dialect: Any, numbered: str = "", last_event: str = "") -> tuple[str, Any]:
        """The INSERT of TABLE's columns and the function making its parameters from a row; NUMBERED names a column
        the database fills in, LAST_EVENT one that takes the number of the event inserted just before."""
        columns = [c for c in table.columns
                   if not (c.primary_key and c.autoincrement is True) and c.name not in (numbered, last_event)]
        names = [c.name for c in columns]
        processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        targets, values = names + [last_event] * bool(last_event), [self.mark] * len(names) + [self.last_event] * bool(
            last_event)
        sql = f"INSERT INTO {table.name} ({', '.join(targets)}) VALUES ({', '.join(values)})"

        def params(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(row[name] if convert is None else convert(row[name])
                         for name, convert in zip(names, processors, strict=True))

        return sql, params


def _first_line(error: BaseException) -> str:
    """The driver's primary message of ERROR (what it refused), without the lines of detail and context after it
    (which may quote stored rows); at most 200 characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
