"""The hash chain of evidence events: append under the head's lock, verify from the first link.

Each event's hash covers its sequence number, time, kind, subject, actor, canonical JSON
payload and the previous event's hash. Editing any stored field, deleting or inserting an
event, or cutting the end off the log breaks a link (or the head's agreement with the last
event), and `verify` names the first event where it breaks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from fraud_service.store.schema import ChainHead, EvidenceEvent

GENESIS = "0" * 64


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


def link_hash(prev_hash: str, seq: int, at: dt.datetime, kind: str, subject: str, actor: str, payload: str) -> str:
    text = "\n".join([prev_hash, str(seq), utc_text(at), kind, subject, actor, payload])
    return hashlib.sha256(text.encode()).hexdigest()


def lock_head(session: Session) -> ChainHead:
    """The chain's head row, locked until SESSION's transaction ends: whoever holds it is the chain's only
    writer (changes that must not interleave, such as two analysts claiming cases, take it first)."""
    head = session.execute(select(ChainHead).where(ChainHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        raise RuntimeError("the evidence chain has no head row: run `fraud-service db upgrade`")
    return head


def append(session: Session, *, kind: str, subject: str, actor: str, payload: Any,
           at: dt.datetime | None = None) -> EvidenceEvent:
    """Add the next event to the chain in SESSION's transaction (the head row is locked until it ends)."""
    head = lock_head(session)
    at = at or dt.datetime.now(dt.UTC)
    text = canonical(payload)
    seq = head.seq + 1
    digest = link_hash(head.hash, seq, at, kind, subject, actor, text)
    event = EvidenceEvent(seq=seq, at=at, kind=kind, subject=subject, actor=actor, payload=text,
                          prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq, head.hash = seq, digest
    session.flush()
    return event


@dataclass(frozen=True)
class Verification:
    """The outcome of checking the chain: how many events, and where it first breaks (if it does)."""

    events: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_links(events: Iterable[Any], head_seq: int | None, head_hash: str | None) -> Verification:
    """Check a sequence of events (objects or dicts with the event fields) link by link."""
    previous, expected_seq, count = GENESIS, 1, 0
    for event in events:
        e = event if isinstance(event, dict) else {c: getattr(event, c) for c in
                                                    ("seq", "at", "kind", "subject", "actor", "payload",
                                                     "prev_hash", "hash")}
        at = e["at"] if isinstance(e["at"], dt.datetime) else dt.datetime.fromisoformat(e["at"])
        if e["seq"] != expected_seq:
            return Verification(count, previous, expected_seq,
                                f"event {expected_seq} is missing (next stored event is {e['seq']})")
        if e["prev_hash"] != previous:
            return Verification(count, previous, e["seq"], f"event {e['seq']} does not point to event {e['seq'] - 1}")
        if link_hash(previous, e["seq"], at, e["kind"], e["subject"], e["actor"], e["payload"]) != e["hash"]:
            return Verification(count, previous, e["seq"], f"event {e['seq']} was changed after it was written")
        previous, expected_seq, count = e["hash"], expected_seq + 1, count + 1
    if head_seq is not None and (head_seq != count or head_hash != previous):
        return Verification(count, previous, count + 1,
                            f"the chain head says {head_seq} events ending in {str(head_hash)[:12]}, "
                            f"but {count} events end in {previous[:12]}: events were removed from the end")
    return Verification(count, previous)


def verify(session: Session) -> Verification:
    """Check the whole stored chain, streaming it in sequence order."""
    head = session.get(ChainHead, 1)
    events = session.execute(select(EvidenceEvent).order_by(EvidenceEvent.seq).execution_options(yield_per=2000))
    try:
        return verify_links(events.scalars(), head.seq if head else 0, head.hash if head else GENESIS)
    finally:
        events.close()  # a server-side cursor left open when the chain breaks early
