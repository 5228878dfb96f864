"""Rules next to the model: allow and block lists, and a few hard rules.

A rule can only raise a decision's severity (a blocklisted token denies; a hard rule sets a
floor such as `review`). The one exception is the allowlist: an allowlisted customer or token
is approved whatever the model says, unless something involved is also blocklisted. Every
rule that fires is returned and recorded with the assessment.

`decide` is the one place a decision is made: the scoring API calls it for each request and batch
scoring for each historical return (with the lists as they stood then), so both answer alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.request import ReturnRequest

LIST_ENTITIES = ("customer", "address", "payment", "device", "refund")
LISTS = ("allow", "block")
RULE_FEATURES = ("cust_inr_90d", "cust_returns_7d", "rfd_customers")
HUB_FEATURES = {"address": "addr_customers", "payment": "pay_customers", "device": "dev_customers",
                "refund": "rfd_customers"}
"""The feature counting the customers who used each kind of token (the hub test of `case_links`)."""
"""The features the hard rules read (a caller may pass a vector holding only these)."""


@dataclass(frozen=True)
class RuleHit:
    rule: str
    decision: Decision
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "decision": self.decision.value, "detail": self.detail}


@dataclass(frozen=True)
class ListMatch:
    entity: str
    value: str
    list: str
    reason: str


@dataclass(frozen=True)
class Subject:
    """What the rules look at of one return, whether it arrived as a request or was read from the warehouse."""

    return_type: str
    channel: str
    refund_amount: float
    order_total: float
    tokens: dict[str, str]  # list entity -> value, absent tokens left out

    @classmethod
    def of(cls, request: ReturnRequest) -> Subject:
        return cls(request.return_type, request.channel, request.refund_amount, request.order.order_total,
                   tokens(request))


@dataclass(frozen=True)
class Verdict:
    """The model's decision, the decision in force after lists and hard rules, and every rule that fired."""

    model_decision: Decision
    decision: Decision
    hits: list[RuleHit]


def decide(policy: Policy, score: float, subject: Subject, vector: Mapping[str, Any],
           matches: Iterable[ListMatch]) -> Verdict:
    """The decision for a calibrated SCORE: the policy's, then the lists (MATCHES: the subject's list entries)
    and the hard rules on the feature VECTOR."""
    model = policy.decide(score, subject.channel, subject.return_type)
    hits, allowed = list_hits(matches)
    hits += hard_rules(subject, vector)
    return Verdict(model, final_decision(model, hits, allowed), hits)


def case_links(tokens: Mapping[str, str], vector: Mapping[str, Any], hub_customers: int) -> dict[str, str]:
    """The tokens that tie a flagged assessment to a case: the customer always, a shared token only while fewer
    than HUB_CUSTOMERS customers have used it. A freight forwarder, a parcel locker or an office links strangers:
    it stays a feature the model sees, but it does not merge their cases."""
    links = {}
    for entity, value in tokens.items():
        feature = HUB_FEATURES.get(entity)
        if feature is not None and _number(vector, feature) >= hub_customers:
            continue
        links[entity] = value
    return links


def tokens(request: ReturnRequest) -> dict[str, str]:
    """The request's listable identifiers, by list entity (absent tokens left out)."""
    order = request.order
    found = {"customer": request.customer_id, "address": order.address_token, "payment": order.payment_token,
             "device": order.device_token, "refund": request.refund_token}
    return {entity: value for entity, value in found.items() if value}


def _number(vector: Mapping[str, Any], name: str) -> float:
    value = vector.get(name)
    if value is None:
        return math.nan
    return float(value)


def hard_rules(subject: Subject, vector: Mapping[str, Any]) -> list[RuleHit]:
    """The hard rules that fire for this return and its feature vector."""
    hits = []
    total = subject.order_total
    if subject.refund_amount > total * 1.01 + 0.01:
        hits.append(RuleHit("refund_exceeds_order", Decision.REVIEW,
                            f"refund {subject.refund_amount:,.2f} exceeds the order total {total:,.2f}"))
    inr = _number(vector, "cust_inr_90d")
    if subject.return_type == "item_not_received" and inr >= 2:
        hits.append(RuleHit("repeated_item_not_received", Decision.REVIEW,
                            f"another item-not-received claim after {inr:.0f} in the last 90 days"))
    recent = _number(vector, "cust_returns_7d")
    if recent >= 5:
        hits.append(RuleHit("return_velocity", Decision.STORE_CREDIT_ONLY,
                            f"{recent:.0f} returns in the last 7 days"))
    shared = _number(vector, "rfd_customers")
    if subject.tokens.get("refund") and shared >= 3:
        hits.append(RuleHit("shared_refund_destination", Decision.REVIEW,
                            f"refund destination already used by {shared:.0f} customers"))
    return hits


def list_hits(matches: Iterable[ListMatch]) -> tuple[list[RuleHit], bool]:
    """Rule hits from list matches, and whether an allowlist entry applies (no blocklist entry does)."""
    hits, allowed, blocked = [], False, False
    for m in sorted(matches, key=lambda m: (m.list, LIST_ENTITIES.index(m.entity))):
        if m.list == "block":
            blocked = True
            hits.append(RuleHit(f"blocklist_{m.entity}", Decision.DENY, f"{m.entity} {m.value} is blocklisted: "
                                                                        f"{m.reason}"))
        else:
            allowed = True
            hits.append(RuleHit(f"allowlist_{m.entity}", Decision.APPROVE, f"{m.entity} {m.value} is allowlisted: "
                                                                           f"{m.reason}"))
    return hits, allowed and not blocked


def final_decision(model: Decision, hits: Iterable[RuleHit], allowed: bool) -> Decision:
    """The model's decision raised by every hit; approve when allowlisted and nothing is blocklisted."""
    if allowed:
        return Decision.APPROVE
    decision = model
    for hit in hits:
        if hit.decision.severity > decision.severity:
            decision = hit.decision
    return decision
