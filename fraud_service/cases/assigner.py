"""The assigner: hands each named queue's cases out round robin to its members who are signed in.

`sweep` works one change per transaction, with the chain head locked first like every case change, so two workers
or instances sweeping at once never give one case twice (nor skip a turn). In each queue, by name, it first takes
back a case whose assignee has not used the UI for INACTIVE_AFTER while nobody changed the case for as long
(giving it to the next member in turn, or to nobody when none can take it), then gives the queue's riskiest
unassigned case (the main queue's order: appeals first, then score x money at stake, oldest first) to the next
member in turn who is signed in (`access.users.present`) and holds fewer than the queue's cap of cases not closed
(counted over every queue and cases taken by hand). The turn, the member given a case last, is kept in the queue's
row, so the round robin continues across sweeps, workers and restarts. A case in two queues goes to the first
queue's members (queues by name).

Every change goes through `cases.service.give`: a `case_assigned` event by `system:assigner` whose payload names
the queue and why (`round_robin`, `inactive`). `Sweeper` runs `sweep` on a thread in every `serve` worker
(FRAUD_ASSIGN_SWEEP, every FRAUD_ASSIGN_INTERVAL_S seconds).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from sqlalchemy import func, select

from fraud_service.access.users import present
from fraud_service.cases import service as cases
from fraud_service.cases.queues import rule_of, selecting
from fraud_service.cases.records import ACTIVE, Assignment
from fraud_service.store import chain
from fraud_service.store.schema import Case, QueueMember, QueueRow, User
from fraud_service.store.uow import UnitOfWork

log = logging.getLogger(__name__)
ACTOR = "system:assigner"
MAX_PER_SWEEP = 500


def sweep(uow: Callable[[], UnitOfWork], *, now: dt.datetime, active_within: dt.timedelta,
          inactive_after: dt.timedelta, most: int = MAX_PER_SWEEP) -> list[Assignment]:
    """Assign what the queues hold at NOW, one change per transaction until nothing is left to do (or MOST
    changes); the changes in order. ACTIVE_WITHIN: how recently a member must have used the UI to be given a case;
    INACTIVE_AFTER: how long an assignee may be away (and the case untouched) before it is taken back."""
    done: list[Assignment] = []
    while len(done) < most:
        change = _step(uow(), now, active_within, inactive_after)
        if change is None:
            break
        done.append(change)
    return done


def _step(uow: UnitOfWork, now: dt.datetime, active_within: dt.timedelta,
          inactive_after: dt.timedelta) -> Assignment | None:
    with uow:
        uow.lock_chain()
        queues = uow.session.execute(select(QueueRow).order_by(QueueRow.name)).scalars().all()
        if not queues:
            return None
        people = {u.name: u for u in uow.session.execute(select(User)).scalars()}
        signed_in = {n for n, u in people.items() if present(u, now, active_within)}
        away = {f"user:{n}" for n, u in people.items()
                if u.last_seen_at is None or now - chain.aware(u.last_seen_at) > inactive_after}
        held = dict(uow.session.execute(select(Case.assignee, func.count()).where(
            Case.status.in_(ACTIVE), Case.assignee.is_not(None)).group_by(Case.assignee)).all())
        for row in queues:
            change = _in_queue(uow, row, now, signed_in, away, held, inactive_after)
            if change is not None:
                uow.commit()
                return change
        return None


def _in_queue(uow: UnitOfWork, row: QueueRow, now: dt.datetime, signed_in: set[str], away: set[str],
              held: dict[str | None, int], inactive_after: dt.timedelta) -> Assignment | None:
    """One change in the queue ROW, made in UOW (None: nothing to do there)."""
    members = list(uow.session.execute(select(QueueMember.user_name).where(QueueMember.queue_name == row.name)
                                       .order_by(QueueMember.user_name)).scalars())
    query = selecting(uow.session, rule_of(row)).order_by(*cases.priority_order())
    if away:
        stale = uow.session.execute(query.where(Case.assignee.in_(sorted(away)),
                                                Case.updated_at < now - inactive_after).limit(1)).scalar_one_or_none()
        if stale is not None:
            previous = stale.assignee
            target = _next(row, members, signed_in, held, exclude=str(previous).removeprefix("user:"))
            return _give(uow, row, stale, target, "inactive", now)
    target = _next(row, members, signed_in, held)
    if target is None:
        return None
    case = uow.session.execute(query.where(Case.assignee.is_(None)).limit(1)).scalar_one_or_none()
    return None if case is None else _give(uow, row, case, target, "round_robin", now)


def _next(row: QueueRow, members: list[str], signed_in: set[str], held: dict[str | None, int],
          exclude: str | None = None) -> str | None:
    """The member whose turn it is: the first after the queue's last assignee (in name order, wrapping round) who
    is signed in, is not EXCLUDE and holds fewer than the cap of cases not closed."""
    after = row.last_assignee or ""
    turn = [m for m in members if m > after] + [m for m in members if m <= after]
    for name in turn:
        if name in signed_in and name != exclude and held.get(f"user:{name}", 0) < row.cap:
            return name
    return None


def _give(uow: UnitOfWork, row: QueueRow, case: Case, name: str | None, why: str, now: dt.datetime) -> Assignment:
    previous = case.assignee
    assignee = f"user:{name}" if name is not None else None
    cases.give(uow, case, assignee, actor=ACTOR, now=now, why={"queue": row.name, "why": why})
    if name is not None:
        row.last_assignee = name
    return Assignment(row.name, case.id, assignee, previous, why)


class Sweeper:
    """Runs `sweep` every INTERVAL_S seconds on a thread (`start`, `close`), as the webhook dispatcher sends."""

    def __init__(self, uow: Callable[[], UnitOfWork], *, interval_s: float, active_within: dt.timedelta,
                 inactive_after: dt.timedelta, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.uow, self.interval_s = uow, interval_s
        self.active_within, self.inactive_after = active_within, inactive_after
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="queue-assigner", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run_once(self) -> list[Assignment]:
        """One sweep now."""
        return sweep(self.uow, now=self.clock(), active_within=self.active_within, inactive_after=self.inactive_after)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception as exc:  # the database is down, busy or not migrated: the next round tries again
                log.warning("queue assignment sweep failed (retrying every %g s): %s", self.interval_s, exc)
