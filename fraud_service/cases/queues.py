"""Named queues: the cases a filter selects, each queue with its own SLA, its member analysts and a per-person cap
(the assigner, `cases.assigner`, hands a queue's cases out round robin to its members who are signed in).

A queue is a row of `queues` (its filter as canonical JSON, `records.QueueRule`) and its members; admins create,
change and remove queues (`/v1/queues`, `/ui/queues`, `fraud-service queues`), each change an evidence event
(`queue_set`, `queue_removed`, subject `queue:NAME`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Select, cast, delete, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from fraud_service.cases import service as cases
from fraud_service.cases.records import (
    ACTIVE,
    DECISIONS,
    CaseStatus,
    QueueFilter,
    QueuePage,
    QueueRecord,
    QueueRule,
)
from fraud_service.data.contract import PLAIN_TEXT, RETURN_TYPES, text_problem
from fraud_service.errors import Problem, QueueNotFound, RequestInvalid
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, Case, EvidenceEvent, QueueMember, QueueRow, User
from fraud_service.store.uow import UnitOfWork

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_SLA_HOURS = 24.0 * 90
MAX_CAP = 1000
MAX_MEMBERS = 200
FIELDS = ("filter", "sla_hours", "cap", "members")
RULE_FIELDS = ("statuses", "decision", "reason", "min_amount", "return_type", "appealed")


@dataclasses.dataclass(frozen=True)
class Definition:
    """A queue as an admin defines it (checked)."""

    name: str
    rule: QueueRule
    sla_hours: float
    cap: int
    members: tuple[str, ...]


# -- checking a definition -----------------------------------------------------------------------------------


def check_name(name: object) -> str:
    """NAME, or RequestInvalid naming the field."""
    if not isinstance(name, str) or not NAME.match(name):
        raise RequestInvalid([Problem("name", f"got {str(name)[:60]!r}",
                                      "1-40 characters of a-z, 0-9, '_' or '-', starting with a letter or digit")])
    return name


def parse_rule(data: object, where: str = "filter") -> tuple[QueueRule, list[Problem]]:
    """The rule DATA describes (a JSON object of RULE_FIELDS), and a problem for every bad field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return QueueRule(), [Problem(where, f"got {type(data).__name__}", "an object of " + ", ".join(RULE_FIELDS))]
    problems = [Problem(f"{where}.{k}", "is not a filter field", "one of " + ", ".join(RULE_FIELDS))
                for k in data if k not in RULE_FIELDS]
    statuses = data.get("statuses", list(ACTIVE))
    if (not isinstance(statuses, list) or not statuses or len(set(map(str, statuses))) != len(statuses)
            or any(s not in ACTIVE for s in statuses)):
        problems.append(Problem(f"{where}.statuses", f"got {repr(statuses)[:80]}",
                                "a list of distinct statuses among " + ", ".join(ACTIVE) + " (a queue is work to do)"))
        statuses = list(ACTIVE)
    rule: dict[str, Any] = {"statuses": tuple(s for s in ACTIVE if s in statuses)}
    choices = {"decision": DECISIONS, "return_type": RETURN_TYPES}
    for name, allowed in choices.items():
        value = data.get(name)
        if value is not None and value not in allowed:
            problems.append(Problem(f"{where}.{name}", f"got {str(value)[:60]!r}", "one of " + ", ".join(allowed)))
        else:
            rule[name] = value
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 80 or text_problem(reason)):
        problems.append(Problem(f"{where}.reason", f"got {str(reason)[:60]!r}", "a reason code of 1-80 characters: "
                                + PLAIN_TEXT))
    else:
        rule["reason"] = reason
    amount = data.get("min_amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)
                               or not math.isfinite(amount) or amount < 0):
        problems.append(Problem(f"{where}.min_amount", f"got {repr(amount)[:60]}", "a number >= 0"))
    else:
        rule["min_amount"] = None if amount is None else float(amount)
    appealed = data.get("appealed")
    if appealed is not None and not isinstance(appealed, bool):
        problems.append(Problem(f"{where}.appealed", f"got {repr(appealed)[:60]}", "true, false or null"))
    else:
        rule["appealed"] = appealed
    return QueueRule(**rule), problems


def parse_definition(name: object, body: Mapping[str, Any]) -> Definition:
    """The queue NAME as BODY defines it (filter, sla_hours, cap, members), or RequestInvalid listing every bad
    field."""
    problems = []
    try:
        name = check_name(name)
    except RequestInvalid as exc:
        problems += exc.problems
    problems += [Problem(k, "is not a queue field", "one of " + ", ".join(FIELDS)) for k in body if k not in FIELDS]
    rule, bad = parse_rule(body.get("filter"))
    problems += bad
    sla = body.get("sla_hours")
    if isinstance(sla, bool) or not isinstance(sla, int | float) or not 0 < sla <= MAX_SLA_HOURS:
        problems.append(Problem("sla_hours", f"got {repr(sla)[:40]}", f"a number of hours above 0, at most "
                                                                     f"{MAX_SLA_HOURS:g}"))
    cap = body.get("cap")
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_CAP:
        problems.append(Problem("cap", f"got {repr(cap)[:40]}",
                                f"an integer from 1 to {MAX_CAP}: the most cases not closed a member may hold"))
    members = body.get("members", [])
    if (not isinstance(members, list) or len(members) > MAX_MEMBERS or not all(isinstance(m, str) for m in members)
            or len(set(members)) != len(members)):
        problems.append(Problem("members", f"got {repr(members)[:80]}", f"a list of at most {MAX_MEMBERS} distinct "
                                                                       "user names"))
        members = []
    if problems:
        raise RequestInvalid(problems)
    assert isinstance(name, str) and isinstance(cap, int) and isinstance(sla, int | float)
    return Definition(name, rule, float(sla), cap, tuple(sorted(m.removeprefix("user:") for m in members)))


# -- which cases a queue holds -------------------------------------------------------------------------------


def _request_field(session: Session, name: str) -> ColumnElement[Any]:
    """A field of the assessment's stored request (in its evidence event's JSON payload)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(EvidenceEvent.payload, JSONB)["request"][name].astext
    return func.json_extract(EvidenceEvent.payload, f"$.request.{name}")


def selecting(session: Session, rule: QueueRule, *, any_status: bool = False) -> Select[Any]:
    """The cases RULE selects (ANY_STATUS: whatever their status, as the dashboard counts a queue's kind of case)."""
    statuses = (*ACTIVE, CaseStatus.CLOSED.value) if any_status else rule.statuses
    query = cases.filtered(QueueFilter(statuses=statuses, decision=rule.decision, reason=rule.reason,
                                       min_amount=rule.min_amount))
    if rule.return_type is not None:
        query = query.where(exists().where(Assessment.case_id == Case.id, EvidenceEvent.seq == Assessment.event_seq,
                                           _request_field(session, "return_type") == rule.return_type))
    if rule.appealed is not None:
        query = query.where(Case.appealed_at.is_not(None) if rule.appealed else Case.appealed_at.is_(None))
    return query


def rule_of(row: QueueRow) -> QueueRule:
    """The stored rule of a queue row."""
    rule, problems = parse_rule(json.loads(row.filter))
    assert not problems, problems  # stored only after the same check
    return rule


def _record(session: Session, row: QueueRow, now: dt.datetime) -> QueueRecord:
    rule = rule_of(row)
    members = session.execute(select(QueueMember.user_name).where(QueueMember.queue_name == row.name)
                              .order_by(QueueMember.user_name)).scalars().all()
    held = selecting(session, rule).subquery()
    cutoff = now - dt.timedelta(hours=row.sla_hours)
    total, unassigned, breaches = session.execute(select(
        func.count(), func.count().filter(held.c.assignee.is_(None)), func.count().filter(held.c.opened_at < cutoff))
        .select_from(held)).one()
    return QueueRecord(row.name, rule.to_dict(), row.sla_hours, row.cap, list(members), chain.utc_text(row.updated_at),
                       row.updated_by, row.last_assignee, int(total), int(unassigned or 0), int(breaches or 0))


def listing(uow: UnitOfWork, *, now: dt.datetime | None = None) -> list[QueueRecord]:
    """Every named queue (by name) with what it holds now: cases, those unassigned, those past its SLA."""
    now = now or dt.datetime.now(dt.UTC)
    with uow.read():
        rows = uow.session.execute(select(QueueRow).order_by(QueueRow.name)).scalars().all()
        return [_record(uow.session, row, now) for row in rows]


def page(uow: UnitOfWork, *, name: str, now: dt.datetime | None = None, limit: int = 50,
         offset: int = 0) -> tuple[QueueRecord, QueuePage]:
    """The queue NAME and a page of its cases in the main queue's priority order, each flagged against the
    queue's own SLA."""
    now = now or dt.datetime.now(dt.UTC)
    f = QueueFilter(limit=limit, offset=offset)
    cases.check_filter(f)
    with uow.read():
        row = uow.session.get(QueueRow, name)
        if row is None:
            raise QueueNotFound(f"no queue {name!r}: admins define queues (/ui/queues, fraud-service queues set)")
        record = _record(uow.session, row, now)
        found = uow.session.execute(selecting(uow.session, rule_of(row)).order_by(*cases.priority_order())
                                    .limit(limit).offset(offset)).scalars().all()
        return record, QueuePage([cases.summary(c, now, row.sla_hours) for c in found], record.cases, f)


# -- changing queues -----------------------------------------------------------------------------------------


def put(uow: UnitOfWork, *, name: str, body: Mapping[str, Any], actor: str,
        now: dt.datetime | None = None) -> QueueRecord:
    """Create or change the queue NAME as BODY defines it (every member must be an active user); a `queue_set`
    evidence event with the definition before and after."""
    d = parse_definition(name, body)
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()
        users = {u.name: u for u in uow.session.execute(select(User).where(User.name.in_(d.members))).scalars()}
        bad = [Problem(f"members.{m}", "is not an active user", "the name of a user (fraud-service users create "
                                                                "NAME)")
               for m in d.members if m not in users or users[m].disabled_at is not None]
        if bad:
            raise RequestInvalid(bad)
        row = uow.session.get(QueueRow, d.name)
        before = _definition(uow.session, row) if row is not None else None
        if row is None:
            row = QueueRow(name=d.name, last_assignee=None)
            uow.session.add(row)
        row.filter, row.sla_hours, row.cap = chain.canonical(d.rule.to_dict()), d.sla_hours, d.cap
        row.updated_at, row.updated_by = now, actor
        uow.session.flush()
        uow.session.execute(delete(QueueMember).where(QueueMember.queue_name == d.name))
        uow.session.add_all([QueueMember(queue_name=d.name, user_name=m) for m in d.members])
        uow.session.flush()
        after = _definition(uow.session, row)
        uow.record(kind="queue_set", subject=f"queue:{d.name}", actor=actor, at=now,
                   payload={"name": d.name, "before": before, "after": after})
        uow.commit()
        return _record(uow.session, row, now)


def remove(uow: UnitOfWork, *, name: str, actor: str, now: dt.datetime | None = None) -> None:
    """Remove the queue NAME (its cases stay as they are); a `queue_removed` evidence event with its definition."""
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()
        row = uow.session.get(QueueRow, name)
        if row is None:
            raise QueueNotFound(f"no queue {name!r}")
        before = _definition(uow.session, row)
        uow.session.execute(delete(QueueMember).where(QueueMember.queue_name == name))
        uow.session.delete(row)
        uow.record(kind="queue_removed", subject=f"queue:{name}", actor=actor, at=now,
                   payload={"name": name, "before": before})
        uow.commit()


def _definition(session: Session, row: QueueRow) -> dict[str, Any]:
    members = session.execute(select(QueueMember.user_name).where(QueueMember.queue_name == row.name)
                              .order_by(QueueMember.user_name)).scalars().all()
    return {"filter": json.loads(row.filter), "sla_hours": row.sla_hours, "cap": row.cap, "members": list(members)}


DEFAULTS: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("appeals", {"appealed": True}, 12.0),
    ("item-not-received", {"return_type": "item_not_received"}, 24.0),
    ("large-refunds", {"min_amount": 500}, 24.0),
    ("escalations", {"statuses": ["escalated"]}, 72.0),
)
"""The queues `fraud-service demo` makes (name, filter, SLA hours)."""


def ensure_defaults(uow: Callable[[], UnitOfWork], *, members: list[str], actor: str, cap: int = 20) -> int:
    """Make the DEFAULTS queues with MEMBERS when there is no queue at all; how many were made."""
    with uow().read() as first:
        if first.session.execute(select(func.count()).select_from(QueueRow)).scalar_one():
            return 0
    for name, rule, sla in DEFAULTS:
        put(uow(), name=name, body={"filter": rule, "sla_hours": sla, "cap": cap, "members": members}, actor=actor)
    return len(DEFAULTS)
