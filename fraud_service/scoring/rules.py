"""Rules next to the model: allow and block lists, and a few hard rules.

A rule can only raise a decision's severity (a blocklisted token denies; a hard rule sets a
floor such as `review`). The one exception is the allowlist: an allowlisted customer or token
is approved whatever the model says, unless something involved is also blocklisted. Every
rule that fires is returned and recorded with the assessment. The hard rules are data
(`RuleSet`: the built-in rules' thresholds, decisions and on/off state, and custom rules over
feature comparisons), saved and versioned by `rulebook`.

`decide` is the one place a decision is made: the scoring API calls it for each request and batch
scoring for each historical return (with the lists and rules as they stood then), so both answer alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fraud_service.errors import Problem, RequestInvalid
from fraud_service.scoring.conditions import Condition
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
           matches: Iterable[ListMatch], rules: RuleSet | None = None) -> Verdict:
    """The decision for a calibrated SCORE: the policy's, then the lists (MATCHES: the subject's list entries)
    and the hard rules (RULES, else the defaults) on the feature VECTOR."""
    return verdict(policy.decide(score, subject.channel, subject.return_type), subject, vector, matches, rules)


def verdict(model: Decision, subject: Subject, vector: Mapping[str, Any], matches: Iterable[ListMatch],
            rules: RuleSet | None = None) -> Verdict:
    """The model's decision MODEL raised by the lists and the hard rules (a backtest replays stored ones)."""
    hits, allowed = list_hits(matches)
    hits += hard_rules(subject, vector, rules)
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


def stored_tokens(request: Mapping[str, Any], customer: str | None = None) -> dict[str, str]:
    """What `tokens` gives for a request as its evidence stores it (JSON): its listable identifiers by list entity,
    absent ones left out. CUSTOMER, when given, is the customer the assessment was made for."""
    order = request.get("order") or {}
    found = {"customer": customer if customer is not None else request.get("customer_id"),
             "address": order.get("address_token"), "payment": order.get("payment_token"),
             "device": order.get("device_token"), "refund": request.get("refund_token")}
    return {entity: value for entity, value in found.items() if isinstance(value, str) and value}


def _number(vector: Mapping[str, Any], name: str) -> float:
    value = vector.get(name)
    if value is None:
        return math.nan
    return float(value)


def hard_rules(subject: Subject, vector: Mapping[str, Any], rules: RuleSet | None = None) -> list[RuleHit]:
    """The hard rules (RULES, else the built-in defaults) that fire for this return and its feature vector."""
    return (rules or DEFAULT_RULES).evaluate(subject, vector)


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


# -- the hard rules as data ----------------------------------------------------------------------------------------

RULE_DECISIONS = tuple(d.value for d in Decision if d is not Decision.APPROVE)
"""What a rule may ask for: anything above approve (a rule only ever raises a decision's severity)."""


@dataclass(frozen=True)
class Builtin:
    """A hard rule written in code, whose threshold, decision and on/off state are data."""

    name: str
    feature: str  # what it reads ("" for the refund against the order total)
    threshold: float
    decision: Decision
    enabled: bool = True

    def fires(self, subject: Subject, vector: Mapping[str, Any]) -> str | None:
        """The hit's detail when the rule fires, else None."""
        if self.name == "refund_exceeds_order":
            total = subject.order_total
            if subject.refund_amount > total * (1 + self.threshold) + 0.01:
                return f"refund {subject.refund_amount:,.2f} exceeds the order total {total:,.2f}"
            return None
        value = _number(vector, self.feature)
        if not value >= self.threshold:  # a missing value (NaN) never fires
            return None
        if self.name == "repeated_item_not_received":
            return (f"another item-not-received claim after {value:.0f} in the last 90 days"
                    if subject.return_type == "item_not_received" else None)
        if self.name == "return_velocity":
            return f"{value:.0f} returns in the last 7 days"
        return (f"refund destination already used by {value:.0f} customers"
                if subject.tokens.get("refund") else None)


BUILTINS: dict[str, tuple[str, str]] = {
    # name: (the feature it reads, what it says; the threshold's meaning)
    "refund_exceeds_order": ("", "the refund exceeds the order total by more than THRESHOLD (a share: 0.01 = 1%)"),
    "repeated_item_not_received": ("cust_inr_90d", "an item-not-received claim from a customer with at least "
                                                   "THRESHOLD such claims in 90 days"),
    "return_velocity": ("cust_returns_7d", "at least THRESHOLD returns by the customer in 7 days"),
    "shared_refund_destination": ("rfd_customers", "a refund destination at least THRESHOLD customers used"),
}
_DEFAULT_BUILTINS = (("refund_exceeds_order", 0.01, Decision.REVIEW), ("repeated_item_not_received", 2.0,
                     Decision.REVIEW), ("return_velocity", 5.0, Decision.STORE_CREDIT_ONLY),
                     ("shared_refund_destination", 3.0, Decision.REVIEW))


@dataclass(frozen=True)
class CustomRule:
    """A rule an analyst composed from feature comparisons, e.g. `rfd_customers >= 3 and rt_refund_amount > 200`."""

    name: str
    when: Condition
    decision: Decision
    enabled: bool = True
    description: str = ""


@dataclass(frozen=True)
class RuleSet:
    """The hard rules in force: the built-in ones (thresholds, decisions, on or off) and the custom ones."""

    builtins: tuple[Builtin, ...]
    custom: tuple[CustomRule, ...] = ()
    version: int = 0  # 0: the defaults, never saved

    def evaluate(self, subject: Subject, vector: Mapping[str, Any]) -> list[RuleHit]:
        hits = []
        for rule in self.builtins:
            if rule.enabled and (detail := rule.fires(subject, vector)) is not None:
                hits.append(RuleHit(rule.name, rule.decision, detail))
        for custom in self.custom:
            if custom.enabled and custom.when.holds(vector):
                hits.append(RuleHit(custom.name, custom.decision, custom.description or f"when {custom.when.text}"))
        return hits

    def features(self) -> set[str]:
        """Every feature some rule of the set reads (a backtest needs them stored)."""
        names = {b.feature for b in self.builtins if b.feature}
        for custom in self.custom:
            names |= custom.when.names
        return names

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "builtin": {b.name: {"enabled": b.enabled, "threshold": b.threshold, "decision": b.decision.value}
                            for b in self.builtins},
                "custom": [{"name": c.name, "when": c.when.text, "decision": c.decision.value, "enabled": c.enabled,
                            "description": c.description} for c in self.custom]}

    @classmethod
    def parse(cls, body: object, known: Mapping[str, str] | None, version: int = 0) -> RuleSet:
        """A rule set from its JSON (`to_dict`'s shape; built-in rules left out keep their defaults), or
        RequestInvalid naming every bad field. KNOWN: the features a custom rule may compare, with their types
        ("number" or "text"); None for a set saved before (its names were checked then)."""
        problems: list[Problem] = []
        if not isinstance(body, Mapping):
            raise RequestInvalid([Problem("rules", f"got {type(body).__name__}", "an object with `builtin` and "
                                                                                  "`custom`")])
        builtins = _parse_builtins(body.get("builtin", {}), problems)
        custom = _parse_custom(body.get("custom", []), known, problems)
        unknown = sorted(set(body) - {"builtin", "custom", "version"})
        problems += [Problem(k, "is not a field of a rule set", "builtin, custom") for k in unknown]
        if problems:
            raise RequestInvalid(problems)
        return cls(builtins, custom, version)


def _decision(value: object, where: str, problems: list[Problem]) -> Decision | None:
    if value not in RULE_DECISIONS:
        problems.append(Problem(where, f"got {value!r}", "one of " + ", ".join(RULE_DECISIONS)))
        return None
    return Decision(str(value))


def _parse_builtins(body: object, problems: list[Problem]) -> tuple[Builtin, ...]:
    given = body if isinstance(body, Mapping) else {}
    if not isinstance(body, Mapping):
        problems.append(Problem("builtin", f"got {type(body).__name__}", "an object: rule name -> settings"))
    problems += [Problem(f"builtin.{k}", "is not a built-in rule", ", ".join(BUILTINS)) for k in given
                 if k not in BUILTINS]
    out = []
    for name, threshold, decision in _DEFAULT_BUILTINS:
        spec = given.get(name, {})
        where = f"builtin.{name}"
        if not isinstance(spec, Mapping):
            problems.append(Problem(where, f"got {type(spec).__name__}", "{enabled, threshold, decision}"))
            continue
        problems += [Problem(f"{where}.{k}", "is not a setting", "enabled, threshold, decision") for k in spec
                     if k not in ("enabled", "threshold", "decision")]
        enabled, value = spec.get("enabled", True), spec.get("threshold", threshold)
        if not isinstance(enabled, bool):
            problems.append(Problem(f"{where}.enabled", f"got {enabled!r}", "true or false"))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e9:
            problems.append(Problem(f"{where}.threshold", f"got {value!r}", "a number from 0 to 1e9"))
            value = threshold
        chosen = _decision(spec.get("decision", decision.value), f"{where}.decision", problems)
        out.append(Builtin(name, BUILTINS[name][0], float(value), chosen or decision, enabled is True))
    return tuple(out)


def _parse_custom(body: object, known: Mapping[str, str] | None, problems: list[Problem]) -> tuple[CustomRule, ...]:
    if not isinstance(body, list):
        problems.append(Problem("custom", f"got {type(body).__name__}", "a list of rules"))
        return ()
    if len(body) > MAX_CUSTOM:
        problems.append(Problem("custom", f"holds {len(body)} rules", f"at most {MAX_CUSTOM}"))
        return ()
    out, seen = [], set[str]()
    for i, spec in enumerate(body):
        where = f"custom[{i}]"
        if not isinstance(spec, Mapping):
            problems.append(Problem(where, f"got {type(spec).__name__}", "{name, when, decision, enabled, "
                                                                        "description}"))
            continue
        problems += [Problem(f"{where}.{k}", "is not a field of a rule", "name, when, decision, enabled, "
                                                                         "description")
                     for k in spec if k not in ("name", "when", "decision", "enabled", "description")]
        name, description, enabled = spec.get("name"), spec.get("description", ""), spec.get("enabled", True)
        if not isinstance(name, str) or not _RULE_NAME.match(name) or name in BUILTINS or name in seen \
                or name.startswith(RESERVED_PREFIXES):
            twice = isinstance(name, str) and name in seen
            problems.append(Problem(f"{where}.name", f"got {name!r:.80}" + (" twice" if twice else ""),
                                    "a new name of lower-case letters, digits and _ (at most 60), not a built-in's, "
                                    "not starting with " + " or ".join(RESERVED_PREFIXES)))
        if isinstance(name, str):
            seen.add(name)
        if not isinstance(description, str) or len(description) > 500:
            problems.append(Problem(f"{where}.description", f"got {str(description)[:40]!r}", "text of at most 500"))
        if not isinstance(enabled, bool):
            problems.append(Problem(f"{where}.enabled", f"got {enabled!r}", "true or false"))
        decision = _decision(spec.get("decision"), f"{where}.decision", problems)
        try:
            when = Condition.parse(spec.get("when"), known)
        except ValueError as exc:
            problems.append(Problem(f"{where}.when", str(exc), "comparisons of features with numbers or quoted "
                                                                "text, joined by and / or, e.g. `rfd_customers >= 3 "
                                                                "and rt_refund_amount > 200`"))
            continue
        if decision is not None and isinstance(name, str):
            out.append(CustomRule(name, when, decision, enabled is True, description if isinstance(
                description, str) else ""))
    return tuple(out)


MAX_CUSTOM = 50
RESERVED_PREFIXES = ("blocklist_", "allowlist_")  # the names list hits fire under
_RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
DEFAULT_RULES = RuleSet(tuple(Builtin(n, BUILTINS[n][0], t, d) for n, t, d in _DEFAULT_BUILTINS))
"""The hard rules as written before rules were data: what scoring uses until an admin saves a rule set."""
