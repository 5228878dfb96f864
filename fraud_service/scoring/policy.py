"""The decision policy: from a calibrated score to a graded decision, with versioned thresholds.

Decisions, from least to most severe: approve, approve_after_inspection (refund once the goods
are checked), store_credit_only, review (a person decides), deny. A return whose goods do not
come back (returnless refunds, item-not-received claims) cannot wait for an inspection, so the
inspection band gives it store credit instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    APPROVE = "approve"
    APPROVE_AFTER_INSPECTION = "approve_after_inspection"
    STORE_CREDIT_ONLY = "store_credit_only"
    REVIEW = "review"
    DENY = "deny"

    @property
    def severity(self) -> int:
        return list(Decision).index(self)

    @property
    def needs_human(self) -> bool:
        return self in (Decision.REVIEW, Decision.DENY)


def goods_come_back(channel: str, return_type: str) -> bool:
    """Whether anything arrives at the warehouse that an inspection could check."""
    return channel != "returnless" and return_type != "item_not_received"


@dataclass(frozen=True)
class Policy:
    """Probability thresholds (each band starts at its threshold) and how they were chosen."""

    version: str
    inspect_from: float
    credit_from: float
    review_from: float
    deny_from: float
    basis: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cuts = [self.inspect_from, self.credit_from, self.review_from, self.deny_from]
        if any(not 0.0 <= c <= 1.0 for c in cuts):
            raise ValueError(f"policy {self.version}: thresholds must lie in [0, 1], got {cuts}")
        if cuts != sorted(cuts):
            raise ValueError(f"policy {self.version}: thresholds must rise from inspection to deny, got {cuts}")

    def decide(self, score: float, channel: str, return_type: str) -> Decision:
        """The decision for one calibrated score."""
        if score >= self.deny_from:
            return Decision.DENY
        if score >= self.review_from:
            return Decision.REVIEW
        if score >= self.credit_from:
            return Decision.STORE_CREDIT_ONLY
        if score >= self.inspect_from:
            if goods_come_back(channel, return_type):
                return Decision.APPROVE_AFTER_INSPECTION
            return Decision.STORE_CREDIT_ONLY
        return Decision.APPROVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls(version=str(data["version"]), inspect_from=float(data["inspect_from"]),
                   credit_from=float(data["credit_from"]), review_from=float(data["review_from"]),
                   deny_from=float(data["deny_from"]), basis=dict(data.get("basis", {})))


def cost_of(decision: str, bad: bool, amount: float, costs: Mapping[str, Any]) -> float:
    """What one decided return cost once its label is known (the table of `training/gate.py`; COSTS as in
    `training.thresholds.Costs`, its defaults for what is missing)."""
    c = {"review_cost": 12.0, "inspection_cost": 4.0, "inspection_catch": 0.5, "credit_saving": 0.6,
         "credit_friction": 3.0, "deny_friction": 60.0, **{k: v for k, v in costs.items() if v is not None}}
    y = 1.0 if bad else 0.0
    if decision == Decision.APPROVE:
        return y * amount
    if decision == Decision.APPROVE_AFTER_INSPECTION:
        return float(c["inspection_cost"]) + y * amount * (1 - float(c["inspection_catch"]))
    if decision == Decision.STORE_CREDIT_ONLY:
        return y * amount * (1 - float(c["credit_saving"])) + (1 - y) * float(c["credit_friction"])
    if decision == Decision.REVIEW:
        return float(c["review_cost"])
    return (1 - y) * float(c["deny_friction"])
