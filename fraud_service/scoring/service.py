"""The assessor: one return request in, a decision out, with its evidence committed before the answer.

Features (online store and live facts), the model's calibrated score, the decision (`rules.decide`:
policy, lists, hard rules), the SHAP explanation when a human or the shopper will see one, and the
assessment record (`evidence.py`), written with its hash-chained event in one transaction by the
`EvidenceWriter` (grouped with concurrent ones). If that fails, no decision is given (the caller gets
`Unavailable`). A return already stored is detected at that write: the stored answer is returned, or
`AssessmentConflict` when the body differs. The service is framework-free; `api/` turns its outcomes
and exceptions into HTTP.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.access.keys import Principal
from fraud_service.errors import AssessmentConflict, CommitUnconfirmed, DatabaseDown, Unavailable
from fraud_service.featurestore.live import AssessedReturn, FreshnessWriter
from fraud_service.featurestore.online import OnlineFeatures
from fraud_service.featurestore.source import request_entity
from fraud_service.scoring import explain
from fraud_service.scoring.evidence import json_value, request_record, stored_answer
from fraud_service.scoring.lists import ListCache
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.request import ReturnRequest
from fraud_service.scoring.rulebook import RuleCache
from fraud_service.scoring.rules import Subject, case_links, decide
from fraud_service.scoring.shadow import Scored, ShadowScorer
from fraud_service.store.uow import UnitOfWork
from fraud_service.store.writer import EvidenceWriter

NO_DECISION = "no decision was made, retry later"
HUB_CUSTOMERS = 20
"""Default of FRAUD_HUB_CUSTOMERS: a token used by this many customers links no cases (`rules.case_links`)."""


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


def risk_level(score: float, policy: Policy) -> str:
    if score >= policy.deny_from:
        return "very_high"
    if score >= policy.review_from:
        return "high"
    if score >= policy.inspect_from:
        return "medium"
    return "low"


class Assessor:
    """Assesses return requests with one loaded model and policy (built once per worker)."""

    def __init__(self, *, reader: OnlineFeatures, scorer: Scorer, policy: Policy, sessions: sessionmaker[Session],
                 writer: EvidenceWriter, lists: ListCache | None = None, rules: RuleCache | None = None,
                 freshness: FreshnessWriter | None = None,
                 top_reasons: int = 5, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 hub_customers: int = HUB_CUSTOMERS) -> None:
        self.reader = reader
        self.loaded = Loaded.of(scorer, policy)
        self.sessions = sessions
        self.writer = writer
        self.lists = lists or ListCache(sessions)
        self.rules = rules or RuleCache(sessions)
        self.freshness = freshness
        self.top_reasons = top_reasons
        self.clock = clock
        self.hub_customers = hub_customers
        self.shadow: ShadowScorer | None = None  # scores beside production after each answer (`shadow.py`)

    @property
    def scorer(self) -> Scorer:
        return self.loaded.scorer

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.loaded = Loaded(self.loaded.scorer, policy, self.loaded.typical)

    def assess(self, request: ReturnRequest, body_hash: str, actor: str, reader: Principal | None = None) -> Outcome:
        """Score REQUEST, or return the stored assessment when this return was assessed with the same body. READER
        (the caller's scoring key) sees a stored assessment only when a key of its name made it; to any other, the
        return id is taken, as if by another body (AssessmentConflict, nothing of the assessment shown)."""
        loaded = self.loaded  # one model and policy for the whole request, even if a promotion swaps them now
        scorer, policy = loaded.scorer, loaded.policy
        keys, fields = request_entity(request)
        times: dict[str, str | None] = {}
        assessed = assessed_return(request)
        pending = self.freshness.pending(assessed) if self.freshness is not None else None
        vector = self.reader.vector(keys, fields, times, pending)
        x = scorer.row(vector)
        raw = float(scorer.raw(x)[0])
        score = float(scorer.calibration.apply(raw))
        subject = Subject.of(request)
        try:
            matches = self.lists.matches(subject.tokens)
            rules = self.rules.current()
        except DatabaseDown as exc:
            raise Unavailable(f"the evidence database cannot be reached; {NO_DECISION}") from exc
        except DBAPIError as exc:
            raise Unavailable(f"the evidence database cannot be reached; {NO_DECISION}") from exc
        verdict = decide(policy, score, subject, vector, matches, rules)
        reasons: list[explain.Reason] = []
        contributions: list[float] | None = None
        if verdict.decision is not Decision.APPROVE:
            contrib = scorer.contributions(x)[0]
            contributions = [float(c) for c in contrib]
            reasons = explain.reasons(scorer.features, vector, contrib, loaded.typical, self.top_reasons)
        assessment_id = f"asm_{uuid.uuid4().hex}"
        now = self.clock()
        response = {
            "assessment_id": assessment_id, "return_id": request.return_id, "score": round(score, 6),
            "risk_level": risk_level(score, policy), "decision": verdict.decision.value,
            "model_decision": verdict.model_decision.value, "reasons": [r.to_dict() for r in reasons],
            "rules_fired": [h.to_dict() for h in verdict.hits], "model_version": scorer.version,
            "policy_version": policy.version, "case_id": None, "assessed_at": now.isoformat(),
            "evidence": f"/v1/assessments/{assessment_id}",
        }
        record = {
            "request_hash": body_hash,
            "request": request_record(request),
            # every feature of the vector, not only the model's: a backtest replays rules on what was stored
            "features": {name: json_value(value) for name, value in vector.items()},
            "rules_version": rules.version,
            "feature_times": times,
            "raw_score": raw,
            "contributions": contributions,
            "response": response,
        }
        row = {"id": assessment_id, "return_id": request.return_id, "customer_id": request.customer_id,
               "request_hash": body_hash, "created_at": now, "score": score, "decision": verdict.decision.value,
               "risk_level": response["risk_level"], "model_version": scorer.version,
               "policy_version": policy.version, "refund_amount": request.refund_amount, "case_id": None,
               "reason": explain.theme(reasons[0].feature if reasons else None, [h.rule for h in verdict.hits])}
        try:
            links = case_links(subject.tokens, vector, self.hub_customers) if verdict.decision.needs_human else None
            seq = self.writer.store(row, record, actor, now, links)
        except CommitUnconfirmed as exc:
            raise Unavailable(f"{exc}: the assessment may be stored; send the same request again (it returns the "
                              "stored assessment if there is one)") from exc
        except DatabaseDown as exc:
            raise Unavailable(f"{exc}; {NO_DECISION}") from exc
        if seq is None:  # assessed before (or concurrently): the stored answer stands
            return self._replay(request.return_id, body_hash, reader, assessed)
        if self.freshness is not None:
            self.freshness.submit(assessed)
        if self.shadow is not None:
            self.shadow.submit(Scored(assessment_id, vector, subject, tuple(matches), rules))
        return Outcome(response, replayed=False)

    def _replay(self, return_id: str, body_hash: str, reader: Principal | None, assessed: AssessedReturn) -> Outcome:
        """The stored answer to the same request. Its return counts in the live features as a new one does: the
        first answer may have been a 503 sent when the commit went unconfirmed, before any live fact was written
        (`FreshnessWriter.recount`)."""
        # DatabaseDown when unreachable
        stored = stored_answer(UnitOfWork(self.sessions), return_id=return_id, reader=reader)
        if stored.request_hash != body_hash or not stored.visible:
            raise AssessmentConflict(f"return {return_id} was already assessed, with a different request or for "
                                     "another client; an assessment is never replaced (use a new return_id for a new "
                                     "request)")
        if self.freshness is not None:
            requested_at = dt.datetime.fromisoformat(stored.requested_at)
            self.freshness.recount(replace(assessed, requested_at=requested_at),
                                   dt.datetime.fromisoformat(stored.response["assessed_at"]))
        return Outcome(stored.response, replayed=True)


def assessed_return(r: ReturnRequest) -> AssessedReturn:
    """What the live facts keep of an assessed request."""
    order = r.order
    return AssessedReturn(
        return_id=r.return_id, order_id=order.order_id, customer_id=r.customer_id, requested_at=r.requested_at,
        return_type=r.return_type, channel=r.channel, reason=r.reason, refund_amount=r.refund_amount,
        refund_method=r.refund_method, refund_token=r.refund_token, has_receipt=r.has_receipt,
        placed_at=order.placed_at, order_total=order.order_total, address_token=order.address_token,
        payment_token=order.payment_token, device_token=order.device_token)
