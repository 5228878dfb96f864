"""What a proposed rule set would have done to the returns already assessed, before anyone switches it on.

Each stored assessment of the window is decided again: the model's decision as it was (stored with the answer),
the lists as they stood at that moment (`lists.ListHistory`), and the proposed rules on the features stored with
it. Nothing is saved. The result says how many decisions change and which way, the review volume per day against
the team's capacity, precision and recall on the labels that have arrived (an analyst's, the returns system's, or
the warehouse's), and the money the change holds back or releases.

The assessments of the window are read in one pass, their evidence payloads parsed with orjson; the cost grows
with the number of assessments in the window (bench/backtest_bench.py measures it).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from fraud_service.data.labels import BAD, in_force
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.scoring import lists, rulebook
from fraud_service.scoring.policy import Decision
from fraud_service.scoring.rules import RuleSet, Subject, stored_tokens, verdict
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent
from fraud_service.store.uow import UnitOfWork

MAX_DAYS = 365


@dataclass(frozen=True)
class Quality:
    """How well a set of decisions caught the returns labelled so far: held = not approved at once."""

    held: int
    labelled: int
    labelled_bad: int
    held_bad: int
    held_labelled: int

    @property
    def precision(self) -> float | None:
        return self.held_bad / self.held_labelled if self.held_labelled else None

    @property
    def recall(self) -> float | None:
        return self.held_bad / self.labelled_bad if self.labelled_bad else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall}


@dataclass(frozen=True)
class Backtest:
    start: str
    end: str
    assessments: int
    skipped: int  # stored records without a request or an answer to replay (written by hand, not by scoring)
    missing_features: dict[str, int]  # a feature the proposed rules read: assessments that did not store it
    changed: dict[str, int]  # "before -> after": count
    raised: int
    lowered: int
    per_day: list[dict[str, Any]]  # day, reviews before and after, over capacity
    capacity_per_day: float | None
    before: Quality
    after: Quality
    held_amount: float  # refunds approved at once before, not after
    released_amount: float  # refunds not approved at once before, approved after
    rules_fired: dict[str, int]  # by the proposed set
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["before"], out["after"] = self.before.to_dict(), self.after.to_dict()
        return out


def check_days(days: object) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise RequestInvalid([Problem("days", f"got {days!r}", f"an integer from 1 to {MAX_DAYS}")])
    return days


def run(uow: UnitOfWork, *, rules: object, days: object, now: dt.datetime, capacity: float | None = None,
        warehouse_labels: dict[str, tuple[dt.datetime, str]] | None = None) -> Backtest:
    """Replay the proposed RULES (a rule set's JSON) over the assessments of the last DAYS days before NOW.
    WAREHOUSE_LABELS: return id -> (labelled_at, label) from the warehouse, joined with the evidence log's."""
    problems = []
    try:
        proposed = rulebook.parse(rules)
    except RequestInvalid as exc:
        problems += [Problem(f"rules.{p.field}", p.problem, p.expected) for p in exc.problems]
    try:
        span = check_days(days)
    except RequestInvalid as exc:
        problems += exc.problems
    if problems:
        raise RequestInvalid(problems)
    began = time.perf_counter()
    start = now - dt.timedelta(days=span)
    history = lists.history(uow)
    skipped: list[str] = []
    missing: Counter[str] = Counter()
    with uow.read():
        rows = list(_replayed(uow, proposed, history, start, now, skipped, missing))
        labels = _labels(uow, [r[0] for r in rows], warehouse_labels or {})
    return _summarise(rows, labels, start, now, capacity, began, len(skipped), dict(missing))


Replayed = tuple[str, dt.datetime, float, Decision, Decision, list[str]]  # return, at, amount, before, after, rules


def _replayed(uow: UnitOfWork, proposed: RuleSet, history: lists.ListHistory, start: dt.datetime,
              end: dt.datetime, skipped: list[str], missing: Counter[str]) -> Iterator[Replayed]:
    read = proposed.features()
    query = (select(Assessment.return_id, Assessment.created_at, Assessment.refund_amount, Assessment.decision,
                    EvidenceEvent.payload).join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
             .where(Assessment.created_at >= start, Assessment.created_at < end).order_by(Assessment.created_at))
    for return_id, created, amount, decision, payload in uow.session.execute(query.execution_options(yield_per=2000)):
        record = orjson.loads(payload)
        request, response = record.get("request"), record.get("response")
        if not isinstance(request, dict) or not isinstance(response, dict):
            skipped.append(return_id)
            continue
        order = request.get("order") or {}
        subject = Subject(request.get("return_type", ""), request.get("channel", ""), float(amount),
                          float(order.get("order_total", amount)), stored_tokens(request))
        at = chain.aware(created)
        model = Decision(response.get("model_decision") or decision)
        features = record.get("features") or {}
        missing.update(name for name in read if name not in features)  # stored since: every feature of the vector
        again = verdict(model, subject, features, history.matches(subject.tokens, at), proposed)
        yield (return_id, at, float(amount), Decision(decision), again.decision,
               [h.rule for h in again.hits])


def _labels(uow: UnitOfWork, return_ids: list[str],
            warehouse: dict[str, tuple[dt.datetime, str]]) -> dict[str, str]:
    """The label in force of each return, the warehouse's or the evidence log's, whichever came later."""
    return {r: label for r, (_, label) in in_force(uow.session, return_ids, warehouse).items()}


def _quality(rows: list[Replayed], labels: dict[str, str], after: bool) -> Quality:
    held = [r for r in rows if (r[4] if after else r[3]) is not Decision.APPROVE]
    labelled = [r for r in rows if r[0] in labels]
    return Quality(len(held), len(labelled), sum(labels[r[0]] in BAD for r in labelled),
                   sum(labels.get(r[0]) in BAD for r in held), sum(r[0] in labels for r in held))


def _summarise(rows: list[Replayed], labels: dict[str, str], start: dt.datetime, end: dt.datetime,
               capacity: float | None, began: float, skipped: int, missing: dict[str, int]) -> Backtest:
    changed = Counter(f"{b.value} -> {a.value}" for _, _, _, b, a, _ in rows if a is not b)
    days: dict[str, list[int]] = {}
    for _, at, _, before, after, _ in rows:
        counts = days.setdefault(at.date().isoformat(), [0, 0])
        counts[0] += before.needs_human
        counts[1] += after.needs_human
    per_day = [{"day": day, "reviews_before": b, "reviews_after": a,
                "over_capacity": capacity is not None and a > capacity} for day, (b, a) in sorted(days.items())]
    fired = Counter(rule for *_, hit in rows for rule in hit)
    return Backtest(
        start=chain.utc_text(start), end=chain.utc_text(end), assessments=len(rows), skipped=skipped,
        missing_features=missing,
        changed=dict(changed),
        raised=sum(a.severity > b.severity for *_, b, a, _ in rows),
        lowered=sum(a.severity < b.severity for *_, b, a, _ in rows), per_day=per_day, capacity_per_day=capacity,
        before=_quality(rows, labels, False), after=_quality(rows, labels, True),
        held_amount=round(sum(m for _, _, m, b, a, _ in rows if b is Decision.APPROVE and a is not Decision.APPROVE),
                          2),
        released_amount=round(sum(m for _, _, m, b, a, _ in rows
                                  if b is not Decision.APPROVE and a is Decision.APPROVE), 2),
        rules_fired=dict(fired), seconds=round(time.perf_counter() - began, 3))


_LABELS: dict[str, dict[str, tuple[dt.datetime, str]]] = {}  # the latest snapshot's, by its identity


def warehouse_labels(warehouse_dir: Path) -> dict[str, tuple[dt.datetime, str]]:
    """The warehouse's latest label of each return (the labels ingested from the retailer), read once per
    snapshot (a snapshot never changes)."""
    from fraud_service.data.warehouse import Warehouse

    snapshot = Warehouse(warehouse_dir).current()
    if snapshot is None:
        return {}
    latest = _LABELS.get(snapshot.identity)
    if latest is None:
        frame = snapshot.read("labels", ["return_id", "label", "labelled_at"])
        latest = {}
        if frame is not None and not frame.empty:
            frame = frame.sort_values("labelled_at").drop_duplicates("return_id", keep="last")
            latest = {r: (chain.aware(t.to_pydatetime()), str(label))
                      for r, label, t in frame[["return_id", "label", "labelled_at"]].itertuples(index=False)}
        _LABELS.clear()  # one snapshot's at a time
        _LABELS[snapshot.identity] = latest
    return latest
