"""The hard rules as data: the rule set in force, saving a new version (an evidence event), its history, and the
cache scoring reads it through.

A rule set (`rules.RuleSet`) holds the built-in rules' thresholds, decisions and on/off state and the custom rules
analysts compose from feature comparisons. Versions only grow; the highest is in force. Until an admin saves one,
scoring uses `rules.DEFAULT_RULES`, the rules as they were written in code. Batch scoring and backtests use the set
in force at each return's time (`RuleHistory`), as they use the lists as they stood (`lists.ListHistory`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.data.contract import MAX_TEXT, shown_text_problem, shows_nothing
from fraud_service.errors import Problem, RequestInvalid
from fraud_service.scoring.rules import DEFAULT_RULES, RuleSet
from fraud_service.store import chain
from fraud_service.store.deadline import SingleFlight
from fraud_service.store.schema import RuleSetRow
from fraud_service.store.uow import UnitOfWork


@lru_cache(maxsize=1)
def known_features() -> dict[str, str]:
    """The features a custom rule may compare, each "number" or "text": every feature of the online vector (the
    views' and the request-time ones)."""
    from features.definitions import DERIVED_FIELDS, feature_names

    return {name: "text" if DERIVED_FIELDS.get(name) == "String" else "number" for name in feature_names()}


def parse(body: object, version: int = 0) -> RuleSet:
    """A proposed rule set from its JSON, or RequestInvalid naming every bad field (custom rules' features checked
    against `known_features`)."""
    return RuleSet.parse(body, known_features(), version)


def _stored(body: str, version: int) -> RuleSet:
    """A saved rule set: its names were checked when it was saved; one a later version no longer computes reads as
    missing (the rule never fires) instead of stopping scoring."""
    return RuleSet.parse(json.loads(body), None, version)


@dataclass(frozen=True)
class Saved:
    version: int
    created_at: str
    created_by: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "created_at": self.created_at, "created_by": self.created_by,
                "reason": self.reason}


def current(session: Session) -> RuleSet:
    """The rule set in force (the defaults until one is saved)."""
    row = session.execute(select(RuleSetRow).order_by(RuleSetRow.version.desc()).limit(1)).scalar_one_or_none()
    return DEFAULT_RULES if row is None else _stored(row.body, row.version)


def in_force(uow: UnitOfWork) -> tuple[RuleSet, list[Saved]]:
    """The rule set in force and every saved version, newest first."""
    with uow.read():
        rows = uow.session.execute(select(RuleSetRow).order_by(RuleSetRow.version.desc())).scalars().all()
        saved = [Saved(r.version, chain.utc_text(r.created_at), r.created_by, r.reason) for r in rows]
        return (_stored(rows[0].body, rows[0].version) if rows else DEFAULT_RULES), saved


def save(uow: UnitOfWork, *, body: object, reason: object, actor: str, now: dt.datetime | None = None) -> RuleSet:
    """Put a new rule set in force (the next version), recorded as a `rules_changed` evidence event naming the
    version it replaces. Every bad field is named (RequestInvalid) before anything is written."""
    problems = []
    if not isinstance(reason, str) or shows_nothing(reason) or len(reason) > MAX_TEXT:
        problems.append(Problem("reason", f"got {reason!r:.60}", f"why, in at most {MAX_TEXT} characters"))
    elif (found := shown_text_problem(reason)) is not None:
        problems.append(Problem("reason", *found))
    try:
        rules = parse(body)
    except RequestInvalid as exc:
        problems = list(exc.problems) + problems
    if problems:
        raise RequestInvalid(problems)
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()  # one save at a time: versions never collide
        previous = uow.session.execute(select(func.max(RuleSetRow.version))).scalar_one_or_none() or 0
        saved = RuleSet(rules.builtins, rules.custom, previous + 1)
        text = json.dumps(saved.to_dict(), sort_keys=True, separators=(",", ":"))
        event = uow.record(kind="rules_changed", subject=f"rules:v{saved.version}", actor=actor, at=now,
                           payload={"version": saved.version, "previous": previous, "reason": reason,
                                    "rules": saved.to_dict()})
        uow.session.add(RuleSetRow(version=saved.version, body=text, created_at=now, created_by=actor,
                                   reason=str(reason), event_seq=event.seq))
        uow.commit()
    return saved


class RuleCache:
    """The rule set as scoring sees it: read at most once per TTL seconds by one thread (others wait at most
    WAIT_S, then DatabaseDown), like the lists (`lists.ListCache`)."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, wait_s: float = 30.0) -> None:
        self.sessions, self.ttl, self.clock = sessions, ttl, clock
        self._rules = DEFAULT_RULES
        self._expires = -1.0
        self._reads = SingleFlight(wait_s)

    def invalidate(self) -> None:
        self._expires = -1.0

    def current(self) -> RuleSet:
        if self.clock() < self._expires:
            return self._rules
        return self._reads.call("rules", self._read)

    def _read(self) -> RuleSet:
        now = self.clock()
        with UnitOfWork(self.sessions).read() as uow:
            self._rules = current(uow.session)
        self._expires = now + self.ttl
        return self._rules


class RuleHistory:
    """Every saved rule set with when it came into force: the set in force at any time."""

    def __init__(self, saved: list[tuple[dt.datetime, RuleSet]]) -> None:
        self._times = [at for at, _ in saved]
        self._sets = [rules for _, rules in saved]

    def at(self, moment: dt.datetime) -> RuleSet:
        i = bisect.bisect_right(self._times, moment)
        return self._sets[i - 1] if i else DEFAULT_RULES

    def features(self) -> set[str]:
        return set().union(DEFAULT_RULES.features(), *(r.features() for r in self._sets))


def history(uow: UnitOfWork) -> RuleHistory:
    with uow.read():
        rows = uow.session.execute(select(RuleSetRow).order_by(RuleSetRow.version)).scalars().all()
        return RuleHistory([(chain.aware(r.created_at), _stored(r.body, r.version)) for r in rows])
