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
from typing import Any

from sqlalchemy import Engine, select

from fraud_service.cases.service import Flagged, case_event, join_or_open, joined_case, new_case
from fraud_service.scoring.request import ReturnRequest
from fraud_service.store import chain, locks
from fraud_service.store.schema import Assessment, EvidenceEvent
from fraud_service.store.uow import UnitOfWork
from fraud_service.store.writer import EvidenceWriter, Pending, Statements


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


def evidence_writer(engine: Engine, wait_s: float = 30.0) -> EvidenceWriter:
    """The group-commit writer of assessments for ENGINE; a request waits at most WAIT_S for its commit."""
    return EvidenceWriter(engine, write_batch, wait_s=wait_s)


class _Batch:
    """One transaction's worth of assessments: the events it chains on the writer's segment and the rows it inserts."""

    def __init__(self, cursor: Any, sql: Statements, segment: int, position: int, previous: str,
                 numbers: list[int]) -> None:
        self.cursor, self.sql, self.segment = cursor, sql, segment
        self.position, self.previous = position, previous
        self.numbers = iter(numbers)
        self.events: list[tuple[Any, ...]] = []
        self.rows: list[tuple[Any, ...]] = []
        self.cases: dict[tuple[str, str], str] = {}  # links of the cases opened or joined in this batch

    def chain_event(self, kind: str, subject: str, pending: Pending, payload: dict[str, Any]) -> int:
        self.position += 1
        seq = next(self.numbers)
        body = chain.fast_canonical(payload)
        digest = chain.event_hash(self.previous, self.segment, self.position, seq, pending.at, kind, subject,
                                  pending.actor, body)
        self.events.append(self.sql.event_params({
            "seq": seq, "chain": self.segment, "position": self.position, "at": pending.at, "kind": kind,
            "subject": subject, "actor": pending.actor, "payload": body, "prev_hash": self.previous, "hash": digest}))
        self.previous = digest
        return seq

    def case(self, pending: Pending) -> dict[str, Any]:
        """Open or join the case of a flagged assessment; the case event's payload."""
        assert pending.links is not None
        row, sql, cursor = pending.row, self.sql, self.cursor
        flagged = Flagged(row["id"], row["return_id"], row["customer_id"], row["decision"], row["score"],
                          row["refund_amount"], row["reason"], tuple(sorted(pending.links.items())))
        linked: list[tuple[str, str, str]] = []
        if not any(p in self.cases for p in flagged.links):
            cursor.execute(sql.linked_case(len(flagged.links)), [v for p in flagged.links for v in p])
            linked = [(r[0], r[1], r[2]) for r in cursor.fetchall()]
        choice = join_or_open(flagged, linked, self.cases)
        if choice.case_id is None:
            case_id, kind = f"cas_{uuid.uuid4().hex[:20]}", "case_opened"
            cursor.execute(sql.insert_case, sql.case_params(new_case(case_id, flagged, pending.at)))
        else:
            case_id, kind = choice.case_id, "case_joined"
            cursor.execute(sql.case_totals, [case_id])
            assessments, amount, max_score, reason, decision = cursor.fetchone()
            current = {"assessments": assessments, "amount": amount, "max_score": max_score, "reason": reason,
                       "decision": decision}
            cursor.execute(sql.update_case, sql.update_params(case_id, joined_case(current, flagged, pending.at)))
        cursor.executemany(sql.insert_link, [(case_id, e, v) for e, v in flagged.links])
        self.cases.update(dict.fromkeys(flagged.links, case_id))
        row["case_id"] = case_id
        pending.payload["response"]["case_id"] = case_id
        return case_event(kind, case_id, flagged, choice)

    def flush(self) -> None:
        if self.events:
            self.cursor.executemany(self.sql.insert_event, self.events)
            self.cursor.executemany(self.sql.insert_assessment, self.rows)
            self.cursor.execute(self.sql.move_head, (self.position, self.previous, self.segment))


def write_batch(cursor: Any, sql: Statements, segment: int, batch: list[Pending]) -> dict[int, int | None]:
    """Write BATCH in the writer's transaction, on its chain SEGMENT: each new assessment's event number by its
    index, None for a return already stored (its stored answer stands)."""
    ids = [p.row["return_id"] for p in batch]
    if sql.postgres:  # what this batch is about, locked before it is read (`store.locks`); ascending, no deadlock
        keys = locks.keys(ids, [link for p in batch if p.links for link in p.links.items()])
        cursor.executemany(sql.lock, [(k,) for k in keys])
    check, numbers = cursor.connection.cursor(), cursor.connection.cursor()
    cursor.execute(sql.head, [segment])
    check.execute(sql.stored(len(ids)), ids)  # sent together (PostgreSQL's pipeline): one round trip for all
    wanted = len(batch) + sum(1 for p in batch if p.links)  # an event each, and one more for each case
    numbers.execute(sql.numbers, [wanted] if sql.postgres else [])
    position, previous = cursor.fetchone()
    stored = {row[0] for row in check.fetchall()}
    allocated = [int(row[0]) for row in numbers.fetchall()]
    check.close()
    numbers.close()
    if not sql.postgres:  # SQLite: after the largest stored, under the database's one write lock
        allocated = list(range(allocated[0] + 1, allocated[0] + 1 + wanted))
    out = _Batch(cursor, sql, segment, position, previous, allocated)
    outcome: dict[int, int | None] = {}
    for i, pending in enumerate(batch):
        return_id = pending.row["return_id"]
        if return_id in stored:
            outcome[i] = None
            continue
        stored.add(return_id)
        case = out.case(pending) if pending.links else None
        outcome[i] = seq = out.chain_event("assessment", pending.row["id"], pending, pending.payload)
        out.rows.append(sql.assessment_params({**pending.row, "event_seq": seq}))
        if case is not None:
            out.chain_event(case["kind"], case["case_id"], pending, case)
    out.flush()
    return outcome


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: str
    response: dict[str, Any]


def stored_answer(uow: UnitOfWork, *, return_id: str) -> StoredAnswer:
    """The request hash and the answer given when RETURN_ID was assessed."""
    with uow.read():
        row = uow.session.execute(select(Assessment.request_hash, EvidenceEvent.payload)
                                  .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                  .where(Assessment.return_id == return_id)).one()
    return StoredAnswer(row.request_hash, dict(json.loads(row.payload)["response"]))
