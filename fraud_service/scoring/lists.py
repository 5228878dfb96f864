"""The allow and block lists: the service that changes them, the cache each worker reads, and their history.

Every change (add, remove) is one unit of work with its evidence event, so the log holds the lists'
whole history: batch scoring decides with the lists as they stood at each return's time (`history`).

A worker keeps all entries in memory, re-read at most every second (`ListCache`). Lists are short
(tokens an analyst or admin put there by hand), and reading them for every request
would cost a database round trip per assessment. A change made through this process's API takes
effect at once (`invalidate`); one made through another worker within `ttl` seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.data.contract import (
    IDENTIFIER_TEXT,
    MAX_TEXT,
    PLAIN_TEXT,
    hidden_character,
    shown_text_problem,
    shows_nothing,
    text_problem,
)
from fraud_service.errors import ListEntryExists, ListEntryNotFound, Problem, RequestInvalid
from fraud_service.scoring.request import show
from fraud_service.scoring.rules import LIST_ENTITIES, LISTS, ListMatch
from fraud_service.store import chain
from fraud_service.store.deadline import SingleFlight
from fraud_service.store.schema import SUBJECT_LENGTH, EvidenceEvent, ListEntry
from fraud_service.store.uow import UnitOfWork


class ListCache:
    """The allow and block lists as scoring sees them: read at most once per TTL seconds, by one thread, which
    requests wait for at most WAIT_S (then DatabaseDown: a hung database costs them a 503, not their thread)."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, wait_s: float = 30.0) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str], ListMatch] = {}
        self._expires = -1.0
        self._reads = SingleFlight(wait_s)

    def invalidate(self) -> None:
        self._expires = -1.0

    def matches(self, tokens: Mapping[str, str]) -> list[ListMatch]:
        """The list entries for a request's tokens (entity -> value)."""
        entries = self._current()
        return [entries[key] for key in tokens.items() if key in entries]

    def _current(self) -> dict[tuple[str, str], ListMatch]:
        if self.clock() < self._expires:
            return self._entries
        return self._reads.call("lists", self._read)

    def _read(self) -> dict[tuple[str, str], ListMatch]:
        now = self.clock()
        with UnitOfWork(self.sessions).read() as uow:  # never waits for the evidence writer
            rows = uow.session.execute(select(ListEntry.entity, ListEntry.value, ListEntry.list,
                                              ListEntry.reason, ListEntry.expires_at)).all()
        wall = dt.datetime.now(dt.UTC)
        live = [r for r in rows if r.expires_at is None or chain.aware(r.expires_at) > wall]
        self._entries = {(r.entity, r.value): ListMatch(r.entity, r.value, r.list, r.reason) for r in live}
        # an entry expiring before the TTL is up stops matching when it expires, not up to a TTL later
        left = [(chain.aware(r.expires_at) - wall).total_seconds() for r in live if r.expires_at is not None]
        self._expires = now + min([self.ttl, *left])
        return self._entries


# -- the service: every change is an evidence event in the same unit of work ---------------------------------


@dataclass(frozen=True)
class ListEntryRecord:
    entity: str
    value: str
    list: str
    reason: str
    added_by: str
    added_at: str
    expires_at: str | None = None  # after it, the entry matches nothing (it stays listed until removed)

    def to_dict(self) -> dict[str, str | None]:
        return {"entity": self.entity, "value": self.value, "list": self.list, "reason": self.reason,
                "added_by": self.added_by, "added_at": self.added_at, "expires_at": self.expires_at}

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and dt.datetime.fromisoformat(self.expires_at) <= now


def _record(e: ListEntry) -> ListEntryRecord:
    return ListEntryRecord(e.entity, e.value, e.list, e.reason, e.added_by, chain.utc_text(e.added_at),
                           chain.utc_text(e.expires_at) if e.expires_at is not None else None)


def unlogged(session: Session) -> tuple[int, str | None]:
    """The list entries held, and the first the table and the evidence log disagree on (None when none): an entry
    the log's list_added and list_removed events leave on a list must be in the table as added, and the table may
    hold no other (an allow entry inserted with SQL lets a fraudster through unseen)."""
    logged: dict[tuple[str, str], dict[str, str | None]] = {}
    for kind, _, record in _list_events(session):
        key = (str(record.get("entity")), str(record.get("value")))
        if kind == "list_added":
            logged[key] = {name: record.get(name) for name in ListEntryRecord.__dataclass_fields__}
        else:
            logged.pop(key, None)
    held = {(e.entity, e.value): _record(e).to_dict() for e in session.scalars(select(ListEntry))}
    for key in sorted(set(logged) | set(held)):
        entity, value = key
        if key not in held:
            return len(held), f"list_entries: {entity} {value!r} is on the {logged[key]['list']} list by the log, " \
                              "but not in the table (deleted)"
        if key not in logged:
            return len(held), f"list_entries: {entity} {value!r} is on the {held[key]['list']} list in the table, " \
                              "but no event put it there"
        wrong = [f"{name} {held[key][name]!r} (the log says {logged[key][name]!r})" for name in held[key]
                 if held[key][name] != logged[key][name]]
        if wrong:
            return len(held), f"list_entries: {entity} {value!r}: " + "; ".join(wrong)
    return len(held), None


def entries(uow: UnitOfWork) -> list[ListEntryRecord]:
    """Every allow and block list entry, by entity and value."""
    with uow.read():
        rows = uow.session.execute(select(ListEntry).order_by(ListEntry.entity, ListEntry.value)).scalars()
        return [_record(e) for e in rows]


def check_entry(entity: object, list_name: object, value: object, reason: object) -> None:
    """RequestInvalid naming every field of a list entry that breaks the rules."""
    problems = []
    for name, given, allowed in (("entity", entity, LIST_ENTITIES), ("list", list_name, LISTS)):
        if given not in allowed:
            problems.append(Problem(name, _got(given), "one of " + ", ".join(allowed)))
    for name, given in (("value", value), ("reason", reason)):
        if not isinstance(given, str) or shows_nothing(given) or len(given) > MAX_TEXT:
            problems.append(Problem(name, _got(given), f"a non-empty string of at most {MAX_TEXT} characters"))
        elif name == "reason" and (found := shown_text_problem(given)) is not None:  # text a person reads
            problems.append(Problem(name, *found))
        elif name == "value" and (problem := text_problem(given)) is not None:
            problems.append(Problem(name, problem, PLAIN_TEXT))
        elif name == "value" and (hidden := hidden_character(given)) is not None:  # as a request's ids
            problems.append(Problem(name, f"holds {hidden}", IDENTIFIER_TEXT))
    if problems:
        raise RequestInvalid(problems)


def _got(given: object) -> str:
    """What a field held, for a problem: a field left out (None, from a form or JSON) is missing, not "got None"."""
    return "is missing" if given is None else f"got {show(given)}"


def add(uow: UnitOfWork, *, entity: object, value: object, list_name: object, reason: object, actor: str,
        now: dt.datetime | None = None, expires_at: dt.datetime | None = None) -> ListEntryRecord:
    """Put a token on the allow or block list (recorded as evidence), until EXPIRES_AT if given; a token is on one
    list at most (an expired entry of it is replaced, its removal recorded first). The fields are checked here
    (RequestInvalid names each bad one), so a face may pass what it was sent."""
    check_entry(entity, list_name, value, reason)
    entity, value, list_name, reason = str(entity), str(value), str(list_name), str(reason)
    now = now or dt.datetime.now(dt.UTC)
    if expires_at is not None:
        expires_at = chain.aware(expires_at).astimezone(dt.UTC)  # stored as UTC whatever zone it came in
        if expires_at <= now:
            raise RequestInvalid([Problem("expires_at", f"got {chain.utc_text(expires_at)}", "a time in the future")])
    with uow:
        uow.lock_chain()  # every list change is serialised: the check below cannot race another add
        found = _find(uow, entity, value)
        if found is not None and not _record(found).expired(now):
            raise ListEntryExists(f"{entity} {value} is already on a list; delete it first to move it")
        if found is not None:
            _drop(uow, found, actor, now, "expired; replaced by a new entry")
        entry = ListEntry(entity=entity, value=value, list=list_name, reason=reason, added_by=actor, added_at=now,
                          expires_at=expires_at)
        uow.session.add(entry)
        record = _record(entry)
        uow.record(kind="list_added", subject=_subject(entity, value), actor=actor, payload=record.to_dict(), at=now)
        uow.commit()
        return record


def remove(uow: UnitOfWork, *, entity: str, value: str, actor: str, now: dt.datetime | None = None,
           reason: str | None = None) -> ListEntryRecord:
    """Take a token off its list (recorded as evidence, with the entry as it was and REASON when given)."""
    if missing := [name for name, given in (("entity", entity), ("value", value)) if not given]:
        raise RequestInvalid([Problem(name, "is missing", "the entity and the value of the entry to remove")
                              for name in missing])
    if entity not in LIST_ENTITIES or len(value) > MAX_TEXT or text_problem(value) is not None:
        raise ListEntryNotFound(f"{entity!r} {value!r} is on no list (no list holds such an entry)")
    if reason is not None and (shows_nothing(reason) or len(reason) > MAX_TEXT
                               or shown_text_problem(reason) is not None):
        raise RequestInvalid([Problem("reason", f"got {reason!r:.60}", f"why, in at most {MAX_TEXT} characters")])
    with uow:
        uow.lock_chain()
        entry = _find(uow, entity, value)
        if entry is None:
            raise ListEntryNotFound(f"{entity} {value} is on no list")
        record = _drop(uow, entry, actor, now or dt.datetime.now(dt.UTC), reason)
        uow.commit()
        return record


def _subject(entity: str, value: str) -> str:
    """The evidence event's subject for an entry: `entity:value`, cut to what the subject column holds (a token may be
    200 characters; PostgreSQL refuses a longer subject). The payload names the entry whole."""
    return f"{entity}:{value}"[:SUBJECT_LENGTH]


def _drop(uow: UnitOfWork, entry: ListEntry, actor: str, now: dt.datetime, why: str | None) -> ListEntryRecord:
    record = _record(entry)
    payload: dict[str, object] = {**record.to_dict(), **({"removal_reason": why} if why else {})}
    uow.record(kind="list_removed", subject=_subject(entry.entity, entry.value), actor=actor, payload=payload, at=now)
    uow.session.delete(entry)
    uow.session.flush()
    return record


def _find(uow: UnitOfWork, entity: str, value: str) -> ListEntry | None:
    return uow.session.execute(select(ListEntry).where(ListEntry.entity == entity, ListEntry.value == value)
                               ).scalar_one_or_none()


# -- the lists as they stood at any time (batch scoring decides with these) ------------------------------


@dataclass(frozen=True)
class _Span:
    match: ListMatch
    start: dt.datetime
    end: dt.datetime | None  # removed at; None while on the list


class ListHistory:
    """Every list entry there has been, with when it was added and removed, read from the evidence log."""

    def __init__(self, spans: Sequence[_Span] = ()) -> None:
        self._spans: dict[tuple[str, str], list[_Span]] = {}
        for span in spans:
            self._spans.setdefault((span.match.entity, span.match.value), []).append(span)

    def matches(self, tokens: Mapping[str, str], at: dt.datetime) -> list[ListMatch]:
        """The entries for TOKENS (entity -> value) that were on a list at AT."""
        found = []
        for key in tokens.items():
            for span in self._spans.get(key, ()):
                if span.start <= at and (span.end is None or at < span.end):
                    found.append(span.match)
        return found

    def __len__(self) -> int:
        return sum(len(v) for v in self._spans.values())


def _list_events(session: Session) -> Iterator[tuple[str, dt.datetime, dict[str, Any]]]:
    """The list_added and list_removed events in chain order: (kind, when, the entry as the event records it)."""
    for kind, at, payload in session.execute(select(EvidenceEvent.kind, EvidenceEvent.at, EvidenceEvent.payload)
                                             .where(EvidenceEvent.kind.in_(("list_added", "list_removed")))
                                             .order_by(EvidenceEvent.seq)):
        yield kind, chain.aware(at), json.loads(payload)


def history(uow: UnitOfWork) -> ListHistory:
    """The lists' history from the `list_added` and `list_removed` evidence events, in chain order."""
    with uow.read():
        rows = list(_list_events(uow.session))
    spans: list[_Span] = []
    open_: dict[tuple[str, str], tuple[ListMatch, dt.datetime, dt.datetime | None]] = {}
    for kind, when, entry in rows:
        key = (entry["entity"], entry["value"])
        if kind == "list_added":
            expires = entry.get("expires_at")
            open_[key] = (ListMatch(entry["entity"], entry["value"], entry["list"], entry["reason"]), when,
                          dt.datetime.fromisoformat(expires) if expires else None)
        elif key in open_:
            match, start, expires = open_.pop(key)
            spans.append(_Span(match, start, min(when, expires) if expires else when))
    spans.extend(_Span(match, start, expires) for match, start, expires in open_.values())
    return ListHistory(spans)
