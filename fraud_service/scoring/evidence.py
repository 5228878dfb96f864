"""The assessment record: what is kept of every decision, how a batch of them is written, how a replay reads it back.
(`GET /v1/assessments/ID` reads it with its outcome in force: `fraud_service.feedback.outcomes.read`.)

Each step a later investigation needs is kept: the request, every feature value with the time its
stored row was computed, the model and policy versions, the raw and calibrated score, the SHAP
contributions, the rules that fired and the decision. `write_batch` runs inside the evidence
writer's transaction (`store.writer.EvidenceWriter`, which groups concurrent assessments into one
commit): the duplicate check on `return_id`, the hash-chained events on the writer's own chain segment, the
assessment rows and the case each flagged assessment opens or joins (`cases.service.join_or_open`).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from fraud_service.cases.service import Flagged, case_event, join_or_open, joined_case, new_case
from fraud_service.scoring.request import ReturnRequest
from fraud_service.store import chain, locks
from fraud_service.store.schema import Assessment, EvidenceEvent
from fraud_service.store.uow import UnitOfWork
from fraud_service.store.writer import EvidenceWriter, Pending, Statements, Tail

if TYPE_CHECKING:
    from fraud_service.access.keys import Principal


def request_hash(body: Mapping[str, Any]) -> str:
    """The identity of a request body: its canonical JSON, hashed (key order and spacing do not matter)."""
    return hashlib.sha256(chain.canonical(body).encode()).hexdigest()


def json_value(value: Any) -> Any:
    """A feature value as JSON can hold it: NaN and infinities become null, numpy scalars plain values."""
    kind = type(value)
    if kind is int or kind is str or value is None:  # most feature values: nothing to convert
        return value
    if kind is float or isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # other numpy scalars
        return value.item()
    return value


def request_record(r: ReturnRequest) -> dict[str, Any]:
    """The request as the evidence keeps it."""
    order = r.order
    return {
        "return_id": r.return_id, "customer_id": r.customer_id, "requested_at": r.requested_at.isoformat(),
        "return_type": r.return_type, "channel": r.channel, "reason": r.reason, "items_count": r.items_count,
        "refund_amount": r.refund_amount, "refund_method": r.refund_method, "refund_token": r.refund_token,
        "has_receipt": r.has_receipt, "store_id": r.store_id,
        "order": {
            "order_id": order.order_id, "customer_id": order.customer_id, "placed_at": order.placed_at.isoformat(),
            "delivered_at": order.delivered_at.isoformat() if order.delivered_at else None,
            "channel": order.channel, "order_total": order.order_total, "currency": order.currency,
            "payment_token": order.payment_token, "address_token": order.address_token,
            "device_token": order.device_token,
            "items": [{"line_no": i.line_no, "sku": i.sku, "category": i.category, "unit_price": i.unit_price,
                       "quantity": i.quantity} for i in order.items],
        },
    }


def evidence_writer(engine: Engine, wait_s: float = 30.0, lanes: int | None = None) -> EvidenceWriter:
    """The group-commit writer of assessments for ENGINE; a request waits at most WAIT_S for its commit. LANES:
    writer threads, each with its own chain segment (default: two on PostgreSQL, one on SQLite)."""
    return EvidenceWriter(engine, write_batch, wait_s=wait_s, lanes=lanes)


TOTALS = ("assessments", "amount", "max_score", "reason", "decision")


class _Batch:
    """One transaction's worth of assessments: the events it chains on the writer's segment and the rows it inserts."""

    def __init__(self, cursor: Any, sql: Statements, tail: Tail) -> None:
        assert tail.position is not None and tail.hash is not None
        self.cursor, self.sql, self.segment = cursor, sql, tail.chain
        self.position, self.previous = tail.position, tail.hash
        self.cases: dict[tuple[str, str], str] = {}  # links of the cases opened or joined in this batch
        self.totals: dict[str, dict[str, Any]] = {}  # each case's totals as this batch leaves them

    def chain_event(self, kind: str, subject: str, pending: Pending, payload: dict[str, Any]) -> int:
        """Insert the segment's next event (the database numbers it); its position."""
        self.position += 1
        body = chain.fast_canonical(payload)
        digest = chain.event_hash(self.previous, self.segment, self.position, pending.at, kind, subject,
                                  pending.actor, body)
        self.cursor.execute(self.sql.insert_event, self.sql.event_params({
            "chain": self.segment, "position": self.position, "at": pending.at, "kind": kind, "subject": subject,
            "actor": pending.actor, "payload": body, "prev_hash": self.previous, "hash": digest}))
        self.previous = digest
        return self.position

    def case(self, pending: Pending, found: list[tuple[Any, ...]]) -> dict[str, Any]:
        """Open or join the case of a flagged assessment (FOUND: the open cases linked to it, with their totals, as
        read at the start of the transaction); the case event's payload."""
        assert pending.links is not None
        row, sql, cursor = pending.row, self.sql, self.cursor
        flagged = Flagged(row["id"], row["return_id"], row["customer_id"], row["decision"], row["score"],
                          row["refund_amount"], row["reason"], tuple(sorted(pending.links.items())))
        for case_id, *_, assessments, amount, max_score, reason, decision in found:
            self.totals.setdefault(case_id, dict(zip(TOTALS, (assessments, amount, max_score, reason, decision),
                                                     strict=True)))
        choice = join_or_open(flagged, [(r[0], r[1], r[2]) for r in found], self.cases)
        if choice.case_id is None:
            case_id, kind = f"cas_{uuid.uuid4().hex[:20]}", "case_opened"
            opened = new_case(case_id, flagged, pending.at)
            cursor.execute(sql.insert_case, sql.case_params(opened))
            self.totals[case_id] = {k: opened[k] for k in TOTALS}
        else:
            case_id, kind = choice.case_id, "case_joined"
            joined = joined_case(self.totals[case_id], flagged, pending.at)
            cursor.execute(sql.update_case, sql.update_params(case_id, joined))
            self.totals[case_id] = {k: joined[k] for k in TOTALS}
        cursor.executemany(sql.insert_link, [(case_id, e, v) for e, v in flagged.links])
        self.cases.update(dict.fromkeys(flagged.links, case_id))
        row["case_id"] = case_id
        pending.payload["response"]["case_id"] = case_id
        return case_event(kind, case_id, flagged, choice)

    def assessment(self, pending: Pending) -> int:
        """Insert the assessment's event and its row, which names that event; the event's position."""
        position = self.chain_event("assessment", pending.row["id"], pending, pending.payload)
        self.cursor.execute(self.sql.insert_assessment, self.sql.assessment_params(pending.row))
        return position


def write_batch(cursor: Any, sql: Statements, tail: Tail, batch: list[Pending], check: bool) -> dict[int, int | None]:
    """Write BATCH in the writer's transaction, on its chain segment (TAIL: where it ends): the position of each new
    assessment's event by its index, None for a return already stored (its stored answer stands). With CHECK, the
    batch's return ids are looked up first and those stored are left out; without it, a stored one fails the
    transaction on the unique return id (the writer then tries again with CHECK).

    On PostgreSQL everything is sent in pipeline mode: a batch with nothing to read (no flagged assessment, the
    segment's end known) is one round trip, its commit included; reads (the open cases linked to flagged
    assessments, the stored returns, the segment's end after a failure) are sent together, one more round trip."""
    ids = [p.row["return_id"] for p in batch]
    flagged = [(p, list(p.links.items())) for p in batch if p.links]
    connection = cursor.connection
    if sql.postgres:  # what this batch is about, locked before anything is read (`store.locks`); ascending
        keys = locks.keys(ids, [link for _, links in flagged for link in links])
        cursor.executemany(sql.lock, [(k,) for k in keys])
    reads: dict[str, Any] = {}

    def read(name: str, statement: str, params: list[Any]) -> None:
        reads[name] = connection.cursor()
        reads[name].execute(statement, params)

    if tail.position is None:
        read("head", sql.head, [tail.chain])
    if check:
        read("stored", sql.stored(len(ids)), ids)
    if flagged and sql.postgres:
        every = sorted({link for _, links in flagged for link in links})
        read("locked", sql.lock_cases(len(every)), [v for link in every for v in link])
    for i, (_, links) in enumerate(flagged):
        read(f"case{i}", sql.linked_case(len(links)), [v for link in links for v in link])
    results = {name: c.fetchall() for name, c in reads.items()}  # one round trip for all of them
    for c in reads.values():
        c.close()
    if "head" in results:
        tail.ends(int(results["head"][0][0]), str(results["head"][0][1]))
    stored = {row[0] for row in results.get("stored", [])}
    found = {id(p): results[f"case{i}"] for i, (p, _) in enumerate(flagged)}
    out = _Batch(cursor, sql, tail)
    outcome: dict[int, int | None] = {}
    for i, pending in enumerate(batch):
        return_id = pending.row["return_id"]
        if return_id in stored:
            outcome[i] = None
            continue
        stored.add(return_id)
        case = out.case(pending, found[id(pending)]) if pending.links else None
        outcome[i] = out.assessment(pending)
        if case is not None:
            out.chain_event(case["kind"], case["case_id"], pending, case)
    if out.position != tail.position:
        cursor.execute(sql.move_head, (out.position, out.previous, tail.chain))
        tail.ends(out.position, out.previous)
    return outcome


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: str
    response: dict[str, Any]
    visible: bool  # whether the asker may see it (a scoring key: one of the name that made it)
    requested_at: str  # as the assessment recorded it (the time it was made when the request left it out)


def stored_answer(uow: UnitOfWork, *, return_id: str, reader: Principal | None = None) -> StoredAnswer:
    """The request hash and the answer given when RETURN_ID was assessed, and whether READER (a scoring key; None:
    anyone) may see it (`outcomes.owns`)."""
    from fraud_service.feedback.outcomes import owns

    with uow.read():
        row = uow.session.execute(select(Assessment.request_hash, EvidenceEvent.payload, EvidenceEvent.actor)
                                  .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                  .where(Assessment.return_id == return_id)).one()
        visible = reader is None or owns(uow.session, row.actor, reader)
    payload = json.loads(row.payload)
    return StoredAnswer(row.request_hash, dict(payload["response"]), visible, str(payload["request"]["requested_at"]))
