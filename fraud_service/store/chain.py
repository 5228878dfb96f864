"""The hash chains of evidence events: append under a chain head's lock, verify from the first link.

Each event's hash covers its place (chain and position), time, kind, subject, actor, canonical
JSON payload and the previous event's hash in its chain. Its number (`seq`) is not hashed: the rows
that name events are checked against them (`health.verify_derived`), and a chain's numbers must rise.
Editing any stored field, deleting or inserting an event, or cutting the end off a chain breaks a
link (or the head's agreement with the last event), and `verify` names the first event where it breaks.

There is one root chain, appended to under its head's row lock by every change a person or a job
makes. Each evidence writer (the process that stores assessments, `store.writer`) appends to a
segment of its own, so the busiest writes wait for no lock another writer holds: a segment is opened
by a `chain_opened` event on the root, its first event links to that event's hash, and a
`chain_closed` event on the root records where it ended. Deleting a segment breaks the root (its
opening event names it); cutting a closed segment's end off contradicts its closing event; signed
checkpoints (`store.checkpoint`) cover every chain's head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from fraud_service.store.schema import ChainHead, EvidenceEvent

GENESIS = "0" * 64
ROOT = 1  # the root chain: every change made by a person or a job; writers' segments are opened on it


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


def canonical(payload: Any) -> str:
    """The one JSON text of a payload that is hashed and stored: keys sorted, no spaces, UTF-8 unescaped.
    A float that is not finite has no JSON form and is refused (ValueError)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fast_canonical(payload: Any) -> str:
    """`canonical` written by orjson, for the assessments the evidence writer stores (a 5 KB payload in about
    0.01 ms instead of 0.1 ms, in the writer thread every assessment of a worker passes through). The same JSON values,
    though numbers may be spelled differently (1e-05 is 0.00001), which is harmless: an event is checked
    against its stored text. Unlike `canonical`, a float that is not finite is written as null; the
    assessment's feature values are made null before this anyway (`assess._json_value`). What orjson
    refuses (integers beyond 64 bits, keys that are not strings) goes through `canonical`."""
    try:
        return orjson.dumps(payload, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        return canonical(payload)


def aware(at: dt.datetime) -> dt.datetime:
    """A stored time with its zone: a naive time read back from SQLite is UTC."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


def utc_text(at: dt.datetime) -> str:
    """A time as UTC ISO text with microseconds (a naive time read back from SQLite is UTC)."""
    return aware(at).astimezone(dt.UTC).isoformat(timespec="microseconds")


def link_number(chain_id: int, position: int) -> str:
    """How an event's place enters its hash: its position on the root chain (as every event written before the log
    had segments), the chain and the position on a segment, so that an event cannot be moved between chains."""
    return str(position) if chain_id == ROOT else f"{chain_id}/{position}"


def link_hash(prev_hash: str, number: int | str, at: dt.datetime, kind: str, subject: str, actor: str,
              payload: str) -> str:
    text = "\n".join([prev_hash, str(number), utc_text(at), kind, subject, actor, payload])
    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(prev_hash: str, chain_id: int, position: int, at: dt.datetime, kind: str, subject: str, actor: str,
               payload: str) -> str:
    return link_hash(prev_hash, link_number(chain_id, position), at, kind, subject, actor, payload)


def next_number(session: Session) -> int:
    """A new event number. On PostgreSQL from the sequence the evidence writers' inserts also draw on; on SQLite
    after the largest stored, which is safe because a SQLite writer holds the database's one write lock."""
    if session.get_bind().dialect.name == "postgresql":
        return int(session.execute(text("SELECT nextval('evidence_event_ids')")).scalar_one())
    return int(session.execute(select(func.coalesce(func.max(EvidenceEvent.seq), 0))).scalar_one()) + 1


def lock_head(session: Session, chain_id: int = ROOT) -> ChainHead:
    """A chain's head row (the root's by default), locked until SESSION's transaction ends: whoever holds the
    root's is the root chain's only writer (changes that must not interleave, such as two analysts claiming
    cases, take it first)."""
    head = session.execute(select(ChainHead).where(ChainHead.id == chain_id).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one_or_none()  # as locked, not as cached
    if head is None:
        raise RuntimeError(f"the evidence chain has no head row for chain {chain_id}: run `fraud-service db upgrade`")
    return head


def append(session: Session, *, kind: str, subject: str, actor: str, payload: Any,
           at: dt.datetime | None = None) -> EvidenceEvent:
    """Add the next event to the root chain in SESSION's transaction (its head row is locked until it ends)."""
    head = lock_head(session)
    at = at or dt.datetime.now(dt.UTC)
    body = canonical(payload)
    seq = next_number(session)
    position = head.seq + 1
    digest = event_hash(head.hash, ROOT, position, at, kind, subject, actor, body)
    event = EvidenceEvent(seq=seq, chain=ROOT, position=position, at=at, kind=kind, subject=subject, actor=actor,
                          payload=body, prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq, head.hash = position, digest
    session.flush()
    return event


def open_segment(session: Session, owner: str, at: dt.datetime | None = None) -> tuple[int, str]:
    """Open a chain segment for one writer (OWNER names it: host and process) in SESSION's transaction: a
    `chain_opened` event on the root chain, whose hash the segment's first event links to, and the segment's
    head row. The new chain's id and that hash."""
    lock_head(session)  # the root's lock: chain ids are handed out one at a time
    chain_id = int(session.execute(select(func.max(ChainHead.id))).scalar_one() or ROOT) + 1
    opened = append(session, kind="chain_opened", subject=f"chain:{chain_id}", actor=owner,
                    payload={"chain": chain_id}, at=at)
    session.add(ChainHead(id=chain_id, seq=0, hash=opened.hash))
    session.flush()
    return chain_id, opened.hash


def open_segments(session: Session) -> dict[int, str]:
    """The segments opened and not closed: chain id -> the owner that opened it."""
    opened = {int(subject.removeprefix("chain:")): str(actor) for subject, actor in session.execute(
        select(EvidenceEvent.subject, EvidenceEvent.actor).where(EvidenceEvent.kind == "chain_opened"))}
    for subject in session.execute(select(EvidenceEvent.subject).where(EvidenceEvent.kind == "chain_closed")).scalars():
        opened.pop(int(subject.removeprefix("chain:")), None)
    return opened


def close_segment(session: Session, chain_id: int, owner: str, at: dt.datetime | None = None) -> EvidenceEvent:
    """Record on the root chain where segment CHAIN_ID ends (its last position and hash): after this no event may
    join it, and cutting its end off shows even where its head row is rewritten to match."""
    head = lock_head(session, chain_id)
    return append(session, kind="chain_closed", subject=f"chain:{chain_id}", actor=owner,
                  payload={"chain": chain_id, "position": head.seq, "hash": head.hash}, at=at)


@dataclass(frozen=True)
class Verification:
    """The outcome of checking the chain: how many events, and where it first breaks (if it does)."""

    events: int
    head_hash: str  # the root chain's
    broken_at: int | None = None  # the number of the event where it breaks, when one is to blame
    problem: str | None = None
    chains: int = 1  # the root and the segments checked

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_links(events: Iterable[Any], head_seq: int | None, head_hash: str | None, *, chain_id: int = ROOT,
                 genesis: str = GENESIS) -> Verification:
    """Check one chain's events (objects or dicts with the event fields, in position order) link by link, from
    GENESIS (the root's zeros, or the hash of the event that opened a segment) to its head (HEAD_SEQ is the
    head's position; None: not checked)."""
    previous, expected, count, last_seq = genesis, 1, 0, 0
    for event in events:
        e = event if isinstance(event, dict) else {c: getattr(event, c) for c in _FIELDS}
        seq = e["seq"]
        position = e.get("position") or seq
        at = e["at"] if isinstance(e["at"], dt.datetime) else dt.datetime.fromisoformat(e["at"])
        name = _name(chain_id, position, seq)
        if position != expected:
            if chain_id == ROOT and seq == position:
                return Verification(count, previous, expected, f"event {expected} is missing (next stored event is "
                                                               f"{seq})")
            return Verification(count, previous, seq, f"link {expected} of chain {chain_id} is missing (next "
                                                      f"stored event is {name})")
        if seq <= last_seq:
            return Verification(count, previous, seq, f"{name} is numbered before the event it follows ({last_seq})")
        if e["prev_hash"] != previous:
            return Verification(count, previous, seq, f"{name} does not point to the event before it")
        if event_hash(previous, chain_id, position, at, e["kind"], e["subject"], e["actor"], e["payload"]) != e["hash"]:
            return Verification(count, previous, seq, f"{name} was changed after it was written")
        previous, expected, count, last_seq = e["hash"], expected + 1, count + 1, seq
    if head_seq is not None and (head_seq != count or head_hash != previous):
        what = "the chain head" if chain_id == ROOT else f"the head of chain {chain_id}"
        why = ("events were removed from the end" if head_seq > count else
               "the head, or the last events with their links, were rewritten" if head_seq == count else
               "events were added after the head")
        return Verification(count, previous, None,
                            f"{what} says {head_seq} events ending in {str(head_hash)[:12]}, "
                            f"but {count} events end in {previous[:12]}: {why}")
    return Verification(count, previous)


_FIELDS = ("seq", "chain", "position", "at", "kind", "subject", "actor", "payload", "prev_hash", "hash")


def _name(chain_id: int, position: int, seq: int) -> str:
    if chain_id == ROOT and seq == position:
        return f"event {seq}"
    return f"event {seq} (chain {chain_id}, link {position})"


def verify(session: Session) -> Verification:
    """Check every stored chain, streaming each in position order: the root from its first link to its head, then
    each segment a `chain_opened` event on the root names, from that event's hash to its head and, once closed, to
    the end its `chain_closed` event recorded. An event of a chain the root never opened is a problem too. On
    PostgreSQL run it in a snapshot (`UnitOfWork.read(snapshot=True)`): the heads are read first, and an event a
    writer commits afterwards would look like events added after its head."""
    heads = {h.id: (h.seq, h.hash) for h in session.execute(select(ChainHead)).scalars()}
    root_seq, root_hash = heads.get(ROOT, (0, GENESIS))
    opened: dict[int, str] = {}
    closed: dict[int, tuple[int, str]] = {}

    def watched(events: Iterable[EvidenceEvent]) -> Iterator[EvidenceEvent]:
        for e in events:
            if e.kind in ("chain_opened", "chain_closed"):
                record = json.loads(e.payload)
                if e.kind == "chain_opened":
                    opened[int(record["chain"])] = e.hash
                else:
                    closed[int(record["chain"])] = (int(record["position"]), str(record["hash"]))
            yield e

    root = _stream(session, EvidenceEvent.chain == ROOT)
    try:
        result = verify_links(watched(root.scalars()), root_seq, root_hash)
    finally:
        root.close()  # a server-side cursor left open when the chain breaks early
    if not result.ok:
        return result
    total, checked = result.events, set()
    rest = _stream(session, EvidenceEvent.chain != ROOT)
    try:
        for chain_id, events in itertools.groupby(rest.scalars(), key=lambda e: int(e.chain)):
            checked.add(chain_id)
            problem = _segment(chain_id, events, heads, opened, closed)
            if not problem.ok:
                return Verification(total + problem.events, result.head_hash, problem.broken_at, problem.problem)
            total += problem.events
    finally:
        rest.close()
    for chain_id in sorted((set(opened) | set(heads)) - checked - {ROOT}):
        problem = _segment(chain_id, iter(()), heads, opened, closed)
        if not problem.ok:
            return Verification(total, result.head_hash, None, problem.problem)
    return Verification(total, result.head_hash, chains=1 + len(set(opened) | checked))


def _stream(session: Session, where: Any) -> Any:
    return session.execute(select(EvidenceEvent).where(where).order_by(EvidenceEvent.chain, EvidenceEvent.position)
                           .execution_options(yield_per=2000))


def _segment(chain_id: int, events: Iterator[EvidenceEvent], heads: dict[int, tuple[int, str]],
             opened: dict[int, str], closed: dict[int, tuple[int, str]]) -> Verification:
    """Check segment CHAIN_ID's events against its opening, its head and its closing."""
    if chain_id not in opened:
        first = next(events, None)
        where = f"event {first.seq} belongs to" if first is not None else "a head row names"
        return Verification(0, GENESIS, first.seq if first is not None else None,
                            f"{where} chain {chain_id}, which no chain_opened event on the root chain names")
    if chain_id not in heads:
        return Verification(0, GENESIS, None, f"chain {chain_id} was opened but its head row is gone")
    head_position, head_hash = heads[chain_id]
    result = verify_links(events, head_position, head_hash, chain_id=chain_id, genesis=opened[chain_id])
    if result.ok and chain_id in closed and closed[chain_id] != (result.events, result.head_hash):
        position, digest = closed[chain_id]
        return Verification(result.events, result.head_hash, None,
                            f"chain {chain_id} was closed at link {position} ending in {digest[:12]}, but holds "
                            f"{result.events} events ending in {result.head_hash[:12]}")
    return result
