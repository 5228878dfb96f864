"""Assess one return: features, rules, model, policy, explanation, and the evidence, committed before answering.

The service is framework-free; `api/` turns its outcomes and exceptions into HTTP. Each step
that a later investigation needs is kept: the request, every feature value with the time
its stored row was computed, the model and policy versions, the raw and calibrated score,
the SHAP contributions, the rules that fired and the decision. The assessment row and its
hash-chained evidence event are written in one transaction (grouped with concurrent ones by the
`EvidenceWriter`); if that fails, no decision is given (the caller gets `Unavailable`). A return
already stored is detected at that write: the stored answer is returned, or `Conflict` when the
body differs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.errors import FraudServiceError
from fraud_service.featurestore.live import AssessedReturn, FreshnessWriter
from fraud_service.featurestore.online import OnlineFeatures
from fraud_service.featurestore.source import request_entity
from fraud_service.scoring import explain
from fraud_service.scoring.lists import ListCache
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.request import ReturnRequest
from fraud_service.scoring.rules import final_decision, hard_rules, list_hits, tokens
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent
from fraud_service.store.writer import DatabaseDown, EvidenceWriter


class Conflict(FraudServiceError):
    """The return was already assessed with a different request body."""


class Unavailable(FraudServiceError):
    """A store the assessment depends on (the evidence database) cannot be reached; no decision was made."""


@dataclass(frozen=True)
class Loaded:
    """The model and policy assessments are made with, swapped as one (a request never mixes two)."""

    scorer: Scorer
    policy: Policy
    typical: dict[str, Any]

    @classmethod
    def of(cls, scorer: Scorer, policy: Policy) -> Loaded:
        return cls(scorer, policy, dict(scorer.manifest.get("typical", {})))


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    replayed: bool


def request_hash(body: Mapping[str, Any]) -> str:
    """The identity of a request body: its canonical JSON, hashed (key order and spacing do not matter)."""
    return hashlib.sha256(chain.canonical(body).encode()).hexdigest()


def risk_level(score: float, policy: Policy) -> str:
    if score >= policy.deny_from:
        return "very_high"
    if score >= policy.review_from:
        return "high"
    if score >= policy.inspect_from:
        return "medium"
    return "low"


def _json_value(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is str or value is None:  # most feature values: nothing to convert
        return value
    if kind is float or isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # other numpy scalars
        return value.item()
    return value


class Assessor:
    """Assesses return requests with one loaded model and policy (built once per worker)."""

    def __init__(self, *, reader: OnlineFeatures, scorer: Scorer, policy: Policy, sessions: sessionmaker[Session],
                 writer: EvidenceWriter, lists: ListCache | None = None, freshness: FreshnessWriter | None = None,
                 top_reasons: int = 5, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.reader = reader
        self.loaded = Loaded.of(scorer, policy)
        self.sessions = sessions
        self.writer = writer
        self.lists = lists or ListCache(sessions)
        self.freshness = freshness
        self.top_reasons = top_reasons
        self.clock = clock

    @property
    def scorer(self) -> Scorer:
        return self.loaded.scorer

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.loaded = Loaded(self.loaded.scorer, policy, self.loaded.typical)

    def assess(self, request: ReturnRequest, body_hash: str, actor: str) -> Outcome:
        """Score REQUEST, or return the stored assessment when this return was assessed with the same body."""
        loaded = self.loaded  # one model and policy for the whole request, even if a promotion swaps them now
        scorer, policy = loaded.scorer, loaded.policy
        keys, fields = request_entity(request)
        times: dict[str, str | None] = {}
        vector = self.reader.vector(keys, fields, times)
        x = scorer.row(vector)
        raw = float(scorer.raw(x)[0])
        score = float(scorer.calibration.apply(raw))
        model_decision = policy.decide(score, request.channel, request.return_type)
        identities = tokens(request)
        try:
            hits, allowed = list_hits(self.lists.matches(identities))
        except DBAPIError as exc:
            raise Unavailable(f"the evidence database cannot be reached: {exc.orig}") from exc
        hits += hard_rules(request, vector)
        decision = final_decision(model_decision, hits, allowed)
        reasons: list[explain.Reason] = []
        contributions: list[float] | None = None
        if decision is not Decision.APPROVE:
            contrib = scorer.contributions(x)[0]
            contributions = [float(c) for c in contrib]
            reasons = explain.reasons(scorer.features, vector, contrib, loaded.typical, self.top_reasons)
        assessment_id = f"asm_{uuid.uuid4().hex}"
        now = self.clock()
        response = {
            "assessment_id": assessment_id, "return_id": request.return_id, "score": round(score, 6),
            "risk_level": risk_level(score, policy), "decision": decision.value,
            "model_decision": model_decision.value, "reasons": [r.to_dict() for r in reasons],
            "rules_fired": [h.to_dict() for h in hits], "model_version": scorer.version,
            "policy_version": policy.version, "case_id": None, "assessed_at": now.isoformat(),
            "evidence": f"/v1/assessments/{assessment_id}",
        }
        record = {
            "request_hash": body_hash,
            "request": _request_record(request),
            "features": {name: _json_value(vector.get(name)) for name in scorer.features},
            "feature_times": times,
            "raw_score": raw,
            "contributions": contributions,
            "response": response,
        }
        row = {"id": assessment_id, "return_id": request.return_id, "customer_id": request.customer_id,
               "request_hash": body_hash, "created_at": now, "score": score, "decision": decision.value,
               "risk_level": response["risk_level"], "model_version": scorer.version,
               "policy_version": policy.version, "refund_amount": request.refund_amount, "case_id": None,
               "reason": explain.theme(reasons[0].feature if reasons else None, [h.rule for h in hits])}
        try:
            links = identities if decision.needs_human else None
            seq = self.writer.store(row, record, actor, now, links)
        except DatabaseDown as exc:
            raise Unavailable(f"the evidence database cannot be reached: {exc}") from exc
        if seq is None:  # assessed before (or concurrently): the stored answer stands
            return self._replay(request.return_id, body_hash)
        if self.freshness is not None:
            self.freshness.submit(request.order.order_id, _assessed(request))
        return Outcome(response, replayed=False)

    def _replay(self, return_id: str, body_hash: str) -> Outcome:
        try:
            with self.sessions() as session:
                row = session.execute(select(Assessment.request_hash, EvidenceEvent.payload)
                                      .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)
                                      .where(Assessment.return_id == return_id)).one()
        except DBAPIError as exc:
            raise Unavailable(f"the evidence database cannot be reached: {exc.orig}") from exc
        if row.request_hash != body_hash:
            raise Conflict(f"return {return_id} was already assessed with a different request; an assessment is "
                           "never replaced (use a new return_id for a new request)")
        return Outcome(dict(json.loads(row.payload)["response"]), replayed=True)


def load_assessment(sessions: sessionmaker[Session], assessment_id: str) -> dict[str, Any] | None:
    """The stored evidence of an assessment (its evidence event's payload), or None."""
    try:
        with sessions() as session:
            row = session.execute(select(EvidenceEvent.seq, EvidenceEvent.payload)
                                  .join(Assessment, Assessment.event_seq == EvidenceEvent.seq)
                                  .where(Assessment.id == assessment_id)).first()
    except DBAPIError as exc:
        raise Unavailable(f"the evidence database cannot be reached: {exc.orig}") from exc
    return None if row is None else {"assessment_id": assessment_id, "event_seq": row.seq, **json.loads(row.payload)}


def _request_record(r: ReturnRequest) -> dict[str, Any]:
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


def _assessed(r: ReturnRequest) -> AssessedReturn:
    order = r.order
    return AssessedReturn(
        return_id=r.return_id, customer_id=r.customer_id, requested_at=r.requested_at, return_type=r.return_type,
        channel=r.channel, reason=r.reason, refund_amount=r.refund_amount, refund_method=r.refund_method,
        refund_token=r.refund_token, has_receipt=r.has_receipt, placed_at=order.placed_at,
        order_total=order.order_total, address_token=order.address_token, payment_token=order.payment_token,
        device_token=order.device_token)
