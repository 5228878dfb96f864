"""Rules as data: conditions analysts write, rule sets (parse, evaluate, defaults equal to the rules as written in
code), and saving them (versions, evidence, the cache scoring reads)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random

import pytest
from sqlalchemy import select

from fraud_service.errors import RequestInvalid
from fraud_service.scoring import rulebook
from fraud_service.scoring.conditions import Condition
from fraud_service.scoring.policy import Decision
from fraud_service.scoring.rules import DEFAULT_RULES, RuleSet, Subject, hard_rules
from fraud_service.store import chain
from fraud_service.store.schema import EvidenceEvent
from tests.factories import memory_db

KNOWN = {"rfd_customers": "number", "rt_refund_amount": "number", "cust_returns_7d": "number",
         "rt_return_type": "text", "cust_inr_90d": "number"}
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _old_hard_rules(s: Subject, v: dict[str, float]) -> list[str]:
    """The hard rules exactly as they were written in code before they were data (the oracle for the defaults)."""
    def num(name: str) -> float:
        x = v.get(name)
        return math.nan if x is None else float(x)

    out = []
    if s.refund_amount > s.order_total * 1.01 + 0.01:
        out.append("refund_exceeds_order")
    if s.return_type == "item_not_received" and num("cust_inr_90d") >= 2:
        out.append("repeated_item_not_received")
    if num("cust_returns_7d") >= 5:
        out.append("return_velocity")
    if s.tokens.get("refund") and num("rfd_customers") >= 3:
        out.append("shared_refund_destination")
    return out


def test_the_default_rule_set_decides_as_the_rules_written_in_code() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        s = Subject(rng.choice(["return", "item_not_received"]), rng.choice(["mail", "returnless"]),
                    round(rng.uniform(0, 200), 2), round(rng.uniform(0, 200), 2),
                    {"customer": "c", **({"refund": "r"} if rng.random() < 0.5 else {})})
        v = {k: rng.choice([None, math.nan, 0, 1, 2, 3, 4, 5, 6]) for k in ("cust_inr_90d", "cust_returns_7d",
                                                                           "rfd_customers")}
        assert [h.rule for h in hard_rules(s, v)] == _old_hard_rules(s, v), (s, v)


@pytest.mark.parametrize(("text", "vector", "holds"), [
    ("rfd_customers >= 3 and rt_refund_amount > 200", {"rfd_customers": 3, "rt_refund_amount": 250.0}, True),
    ("rfd_customers >= 3 and rt_refund_amount > 200", {"rfd_customers": 3, "rt_refund_amount": 200.0}, False),
    ("rfd_customers >= 3 or rt_refund_amount > 200 and cust_returns_7d > 1",  # and binds tighter
     {"rfd_customers": 5, "rt_refund_amount": 0.0, "cust_returns_7d": 0}, True),
    ("(rfd_customers >= 3 or rt_refund_amount > 200) and cust_returns_7d > 1",
     {"rfd_customers": 5, "rt_refund_amount": 0.0, "cust_returns_7d": 0}, False),
    ("rt_return_type == 'item_not_received'", {"rt_return_type": "item_not_received"}, True),
    ("rt_return_type != \"return\"", {"rt_return_type": "return"}, False),
    ("rfd_customers > 1", {"rfd_customers": math.nan}, False),  # missing never fires
    ("rfd_customers > 1", {}, False),
    ("not rfd_customers > 1", {"rfd_customers": 0}, True),
    ("not rfd_customers > 1", {}, False),  # not unknown is unknown
    ("rfd_customers > 1 or rt_refund_amount > 5", {"rt_refund_amount": 9.0}, True),  # true or unknown
    ("not (rfd_customers > 1 and rt_refund_amount > 5)", {"rt_refund_amount": 1.0}, True),  # false and unknown
    ("not (rfd_customers > 1 or rt_refund_amount > 5)", {"rt_refund_amount": 1.0}, False),
    ("rt_return_type == 'a  b'", {"rt_return_type": "a  b"}, True),
    ("rt_refund_amount > -5e1", {"rt_refund_amount": -49.0}, True),
])
def test_conditions_evaluate_as_written(text: str, vector: dict[str, object], holds: bool) -> None:
    assert Condition.parse(text, KNOWN).holds(vector) is holds


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"), ("nope > 3", "'nope' is not a feature"), ("rfd_customers >", "expected a comparison"),
    ("(rfd_customers > 3", "not closed"), ("rfd_customers > 3 rt_refund_amount", "unexpected"),
    ("rt_return_type > 'x'", "only be compared with == or !="), ("rfd_customers > 3; drop", "cannot read"),
    ("__import__('os') > 1", "expected a comparison"), (" or ".join(["rfd_customers > 1"] * 21), "comparisons"),
    ("rt_return_type == 3", "holds text, not number"), ("rfd_customers == '3'", "holds number, not text"),
    ("(" * 25 + "rfd_customers > 1" + ")" * 25, "nests more than"), ("not " * 25 + "rfd_customers > 1", "nests"),
])
def test_bad_conditions_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        Condition.parse(text, KNOWN)
    assert says in str(caught.value)


def test_a_rule_set_round_trips_and_its_custom_rules_fire() -> None:
    body = {"builtin": {"return_velocity": {"threshold": 3, "decision": "review"},
                        "shared_refund_destination": {"enabled": False}},
            "custom": [{"name": "big_shared_refund", "when": "rfd_customers >= 3 and rt_refund_amount > 200",
                        "decision": "deny", "description": "a big refund to a shared destination"}]}
    rules = RuleSet.parse(body, KNOWN)
    assert RuleSet.parse(rules.to_dict(), KNOWN) == rules
    s = Subject("return", "mail", 250.0, 300.0, {"customer": "c", "refund": "r"})
    hits = rules.evaluate(s, {"rfd_customers": 4, "rt_refund_amount": 250.0, "cust_returns_7d": 3})
    assert [(h.rule, h.decision) for h in hits] == [("return_velocity", Decision.REVIEW),
                                                     ("big_shared_refund", Decision.DENY)]
    assert rules.features() == {"cust_inr_90d", "cust_returns_7d", "rfd_customers", "rt_refund_amount"}


def test_every_bad_field_of_a_rule_set_is_named() -> None:
    body = {"builtin": {"return_velocity": {"threshold": -1, "decision": "approve", "colour": 1}, "nope": {}},
            "custom": [{"name": "Bad Name", "when": "x > 1", "decision": "review"},
                       {"name": "ok_rule", "when": "rfd_customers > 1", "decision": "maybe", "enabled": "yes"},
                       {"name": ["a"], "when": "rfd_customers > 1", "decision": "review"},
                       {"name": "blocklist_customer", "when": "rfd_customers > 1", "decision": "deny"}],
            "extra": 1}
    with pytest.raises(RequestInvalid) as caught:
        RuleSet.parse(body, KNOWN)
    fields = {p.field for p in caught.value.problems}
    assert fields == {"builtin.return_velocity.threshold", "builtin.return_velocity.decision",
                      "builtin.return_velocity.colour", "builtin.nope", "custom[0].name", "custom[0].when",
                      "custom[1].decision", "custom[1].enabled", "custom[2].name", "custom[3].name", "extra"}


def test_saving_puts_a_new_version_in_force_with_its_evidence() -> None:
    with memory_db() as db:
        cache = rulebook.RuleCache(db.sessions, ttl=3600)
        assert cache.current() == DEFAULT_RULES
        first = rulebook.save(db.uow(), body={"builtin": {"return_velocity": {"threshold": 3}}},
                              reason="more velocity", actor="user:ann", now=T0)
        second = rulebook.save(db.uow(), body={"custom": [{"name": "inr_big", "when": "rt_refund_amount > 500",
                                                           "decision": "review"}]},
                               reason="big claims", actor="user:ann", now=T0 + dt.timedelta(days=1))
        assert (first.version, second.version) == (1, 2)
        assert cache.current() == DEFAULT_RULES  # cached until invalidated (or the TTL passes)
        cache.invalidate()
        assert cache.current().version == 2 and cache.current().custom[0].name == "inr_big"
        history = rulebook.history(db.uow())
        assert history.at(T0 - dt.timedelta(seconds=1)) == DEFAULT_RULES
        assert history.at(T0 + dt.timedelta(hours=1)).version == 1
        assert history.at(T0 + dt.timedelta(days=2)).version == 2
        with db.sessions() as session:
            events = session.execute(select(EvidenceEvent).where(EvidenceEvent.kind == "rules_changed")
                                     .order_by(EvidenceEvent.seq)).scalars().all()
            assert [json.loads(e.payload)["previous"] for e in events] == [0, 1]
            assert chain.verify(session).ok
        with pytest.raises(RequestInvalid) as caught:
            rulebook.save(db.uow(), body={"custom": "no"}, reason="", actor="user:ann")
        assert {p.field for p in caught.value.problems} == {"custom", "reason"}
        assert rulebook.in_force(db.uow())[0].version == 2  # nothing was written


def test_custom_rules_only_name_real_features() -> None:
    known = rulebook.known_features()
    assert {"rfd_customers", "rt_refund_amount", "cust_returns_7d"} <= known.keys()
    assert (known["rt_return_type"], known["rt_refund_amount"]) == ("text", "number")
    for a, b in itertools.combinations(sorted(rulebook.known_features())[:5], 2):
        assert Condition.parse(f"{a} > 1 and {b} < 2", rulebook.known_features()).names == {a, b}


def test_a_saved_rule_on_a_feature_no_longer_computed_reads_as_missing_not_as_an_outage() -> None:
    """A deploy that drops a feature must not stop scoring: the stored set still loads, its rule never fires."""
    from fraud_service.store.schema import RuleSetRow

    with memory_db() as db:
        with db.uow() as uow:
            event = uow.record(kind="rules_changed", subject="rules:v1", actor="test", payload={}, at=T0)
            body = {"version": 1, "builtin": {}, "custom": [{"name": "old", "when": "dropped_feature > 1",
                                                            "decision": "review", "enabled": True,
                                                            "description": ""}]}
            uow.session.add(RuleSetRow(version=1, body=json.dumps(body), created_at=T0, created_by="test",
                                       reason="before the deploy", event_seq=event.seq))
            uow.commit()
        cache = rulebook.RuleCache(db.sessions)
        rules = cache.current()
        assert rules.version == 1 and rules.custom[0].when.names == {"dropped_feature"}
        s = Subject("return", "mail", 10.0, 20.0, {"customer": "c"})
        assert rules.evaluate(s, {"other": 5}) == []
        with pytest.raises(RequestInvalid):  # proposing it again is refused, naming the field
            rulebook.parse(body)
