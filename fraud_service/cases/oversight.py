"""The team dashboard (admins): how the analysts' work went over the last days (`/v1/dashboard`, `/ui/dashboard`).

Over the window [now - DAYS, now], in UTC days:
- cases **opened** (by `opened_at`) and **closed** (by `closed_at`, the last close of a case that is closed now),
  per day, overall and per named queue;
- **time to decision**: hours from opening to closing of the cases closed in the window, median and 90th
  percentile (linear interpolation between the two nearest, as numpy's default);
- **SLA breaches**: cases whose SLA ran out within the window while they were not closed (overall: the default
  48 hours; per queue: its own SLA);
- per actor who closed cases or labelled returns (people as `user:NAME`, keys as `key:ID`): cases closed
  (`case_closed` events), analyst labels given, by label, and how many of the `legit` ones were **contradicted**
  later: a label of source `chargeback` saying fraud or abuse for the same return, labelled after it, or an
  inspection of the return with an outcome other than `ok` recorded (received) after it.

A case counts for a queue when it matches the queue's filter on everything but status (a closed case has left
every live queue; the dashboard counts it where its kind belongs), so a queue defined by status alone (the
escalations) counts every case here. `appealed` matches cases whose appeal is not yet closed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select

from fraud_service.cases.queues import rule_of, selecting
from fraud_service.cases.records import DEFAULT_SLA_HOURS, CaseStatus
from fraud_service.data.labels import BAD
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.store import chain
from fraud_service.store.schema import Case, EvidenceEvent, Inspection, Label, QueueRow
from fraud_service.store.uow import UnitOfWork

MAX_DAYS = 366


@dataclass(frozen=True)
class DayCount:
    day: str
    opened: int
    closed: int


@dataclass(frozen=True)
class Flow:
    """Opened, closed and SLA breaches over the window, per day; and the time to decision of the closed."""

    opened: int
    closed: int
    breaches: int
    sla_hours: float
    median_hours: float | None
    p90_hours: float | None
    per_day: list[DayCount]


@dataclass(frozen=True)
class QueueFlow:
    name: str
    flow: Flow


@dataclass(frozen=True)
class AnalystWork:
    actor: str
    closed: int
    labels: dict[str, int]
    legit: int
    contradicted: int


@dataclass(frozen=True)
class Dashboard:
    """The team dashboard over DAYS days up to END."""

    start: str
    end: str
    days: int
    overall: Flow
    queues: list[QueueFlow] = field(default_factory=list)
    analysts: list[AnalystWork] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def flow(f: Flow) -> dict[str, Any]:
            return {**{k: getattr(f, k) for k in ("opened", "closed", "breaches", "sla_hours", "median_hours",
                                                  "p90_hours")},
                    "per_day": [{"day": d.day, "opened": d.opened, "closed": d.closed} for d in f.per_day]}

        return {"start": self.start, "end": self.end, "days": self.days, **flow(self.overall),
                "queues": [{"name": q.name, **flow(q.flow)} for q in self.queues],
                "analysts": [{"actor": a.actor, "closed": a.closed, "labels": a.labels, "legit": a.legit,
                              "contradicted": a.contradicted} for a in self.analysts]}


def check_days(text: object) -> int:
    """The window in days from a query argument, or RequestInvalid naming `days`."""
    value = str(text).strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12) or not 1 <= int(value) <= MAX_DAYS:
        raise RequestInvalid([Problem("days", f"got {value[:20]!r}", f"an integer from 1 to {MAX_DAYS}")])
    return int(value)


def quantile(values: list[float], q: float) -> float | None:
    """The Q quantile of VALUES by linear interpolation between the nearest two (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _flow(rows: list[tuple[dt.datetime, dt.datetime | None, str]], start: dt.datetime, end: dt.datetime,
          sla_hours: float) -> Flow:
    """The flow of ROWS (opened_at, closed_at, status) over [START, END]."""
    days = [(start.date() + dt.timedelta(days=i)).isoformat() for i in range((end.date() - start.date()).days + 1)]
    opened: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    hours, breaches = [], 0
    for opened_at, closed_at, status in rows:
        if start <= opened_at <= end:
            opened[opened_at.date().isoformat()] += 1
        done = closed_at if status == CaseStatus.CLOSED and closed_at is not None else None
        if done is not None and start <= done <= end:
            closed[done.date().isoformat()] += 1
            hours.append((done - opened_at).total_seconds() / 3600.0)
        due = opened_at + dt.timedelta(hours=sla_hours)
        if start <= due <= end and (done is None or done > due):
            breaches += 1
    median, p90 = quantile(hours, 0.5), quantile(hours, 0.9)
    return Flow(sum(opened.values()), sum(closed.values()), breaches, sla_hours,
                None if median is None else round(median, 2), None if p90 is None else round(p90, 2),
                [DayCount(d, opened[d], closed[d]) for d in days])


def dashboard(uow: UnitOfWork, *, days: int, now: dt.datetime | None = None) -> Dashboard:
    """The team dashboard over the DAYS days up to NOW."""
    if not 1 <= days <= MAX_DAYS:
        raise RequestInvalid([Problem("days", f"got {days}", f"an integer from 1 to {MAX_DAYS}")])
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=days)
    with uow.read():
        session = uow.session
        # every case that can count: opened, closed or due within the window means not closed before it began
        relevant = or_(Case.closed_at.is_(None), Case.closed_at >= start, Case.status != CaseStatus.CLOSED.value)
        found = session.execute(select(Case.id, Case.opened_at, Case.closed_at, Case.status)
                                .where(relevant, Case.opened_at <= end)).all()
        rows = {cid: (chain.aware(o), chain.aware(c) if c is not None else None, s) for cid, o, c, s in found}
        queues = []
        for row in session.execute(select(QueueRow).order_by(QueueRow.name)).scalars():
            ids = set(session.execute(selecting(session, rule_of(row), any_status=True)
                                      .where(relevant, Case.opened_at <= end)
                                      .with_only_columns(Case.id)).scalars())
            queues.append(QueueFlow(row.name, _flow([rows[i] for i in sorted(ids) if i in rows], start, end,
                                                    row.sla_hours)))
        analysts = _analysts(uow, start, end)
    return Dashboard(chain.utc_text(start), chain.utc_text(end), days,
                     _flow(list(rows.values()), start, end, DEFAULT_SLA_HOURS), queues, analysts)


def _analysts(uow: UnitOfWork, start: dt.datetime, end: dt.datetime) -> list[AnalystWork]:
    session = uow.session
    closed = Counter(session.execute(select(EvidenceEvent.actor).where(
        EvidenceEvent.kind == "case_closed", EvidenceEvent.at >= start, EvidenceEvent.at <= end)).scalars())
    given = session.execute(select(Label.actor, Label.label, Label.return_id, Label.labelled_at).where(
        Label.source == "analyst", Label.labelled_at >= start, Label.labelled_at <= end)).all()
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for actor, label, _, _ in given:
        labels[actor][label] += 1
    legit = [(actor, rid, chain.aware(at)) for actor, label, rid, at in given if label == "legit"]
    returns = sorted({rid for _, rid, _ in legit})
    later: dict[str, list[dt.datetime]] = defaultdict(list)  # return -> when something said it was bad
    for chunk in (returns[i:i + 500] for i in range(0, len(returns), 500)):
        for rid, at in session.execute(select(Label.return_id, Label.labelled_at).where(
                Label.return_id.in_(chunk), Label.source == "chargeback", Label.label.in_(BAD))):
            later[rid].append(chain.aware(at))
        for rid, at in session.execute(select(Inspection.return_id, Inspection.received_at).where(
                Inspection.return_id.in_(chunk), Inspection.outcome != "ok")):
            later[rid].append(chain.aware(at))
    contradicted = Counter(actor for actor, rid, at in legit if any(bad > at for bad in later.get(rid, ())))
    legit_by = Counter(actor for actor, _, _ in legit)
    actors = sorted(set(closed) | set(labels))
    return [AnalystWork(a, closed.get(a, 0), dict(sorted(labels[a].items())), legit_by.get(a, 0),
                        contradicted.get(a, 0)) for a in actors]
