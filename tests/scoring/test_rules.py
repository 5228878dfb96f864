"""The hard rules, the lists' effect and the one decision function, on plain values (no I/O)."""

from __future__ import annotations

import math

import pytest

from fraud_service.scoring.policy import Decision, Policy
from fraud_service.scoring.rules import ListMatch, Subject, decide, final_decision, hard_rules, list_hits

POLICY = Policy("p-test", inspect_from=0.2, credit_from=0.4, review_from=0.6, deny_from=0.8)


def subject(**changes: object) -> Subject:
    base: dict[str, object] = {"return_type": "return", "channel": "mail", "refund_amount": 50.0,
                               "order_total": 100.0, "tokens": {"customer": "c-1", "device": "d-1"}}
    base.update(changes)
    return Subject(**base)  # type: ignore[arg-type]


def fired(s: Subject, **vector: float) -> list[str]:
    return [h.rule for h in hard_rules(s, vector)]


@pytest.mark.parametrize(("refund", "total", "fires"), [
    (101.0, 100.0, False),  # within 1% + 0.01 of the total: rounding, not abuse
    (101.02, 100.0, True),
    (100.0, 100.0, False),
    (0.02, 0.0, True),
])
def test_a_refund_above_the_order_total_goes_to_review(refund: float, total: float, fires: bool) -> None:
    hits = hard_rules(subject(refund_amount=refund, order_total=total), {})
    assert ("refund_exceeds_order" in [h.rule for h in hits]) is fires
    if fires:
        assert hits[0].decision is Decision.REVIEW and f"{refund:,.2f}" in hits[0].detail


def test_repeated_item_not_received_claims_fire_from_the_third_claim_only_for_that_claim_type() -> None:
    inr = subject(return_type="item_not_received")
    assert fired(inr, cust_inr_90d=1) == []
    assert fired(inr, cust_inr_90d=2) == ["repeated_item_not_received"]
    assert fired(subject(), cust_inr_90d=9) == []  # an ordinary return is not an INR claim


def test_return_velocity_gives_store_credit_from_five_returns_a_week() -> None:
    assert fired(subject(), cust_returns_7d=4) == []
    hits = hard_rules(subject(), {"cust_returns_7d": 5})
    assert [(h.rule, h.decision) for h in hits] == [("return_velocity", Decision.STORE_CREDIT_ONLY)]


def test_a_shared_refund_destination_needs_a_refund_token() -> None:
    with_token = subject(tokens={"customer": "c-1", "refund": "gift-9"})
    assert fired(with_token, rfd_customers=3) == ["shared_refund_destination"]
    assert fired(with_token, rfd_customers=2) == []
    assert fired(subject(), rfd_customers=30) == []


def test_missing_and_nan_features_fire_nothing() -> None:
    inr = subject(return_type="item_not_received")
    assert fired(inr, cust_inr_90d=math.nan, cust_returns_7d=math.nan) == []
    assert fired(inr) == []


def test_a_blocklist_entry_denies_and_outranks_an_allowlist_entry() -> None:
    block = ListMatch("device", "d-1", "block", "chargebacks")
    allow = ListMatch("customer", "c-1", "allow", "VIP")
    hits, allowed = list_hits([allow, block])
    assert [h.rule for h in hits] == ["allowlist_customer", "blocklist_device"]
    assert not allowed
    assert final_decision(Decision.APPROVE, hits, allowed) is Decision.DENY


def test_an_allowlisted_customer_is_approved_whatever_the_model_and_rules_say() -> None:
    verdict = decide(POLICY, 0.95, subject(refund_amount=500.0), {"cust_returns_7d": 9},
                     [ListMatch("customer", "c-1", "allow", "VIP")])
    assert verdict.model_decision is Decision.DENY
    assert verdict.decision is Decision.APPROVE
    assert {h.rule for h in verdict.hits} == {"allowlist_customer", "refund_exceeds_order", "return_velocity"}


@pytest.mark.parametrize(("score", "model", "final"), [
    (0.1, Decision.APPROVE, Decision.REVIEW),  # the rule raises approve to review
    (0.7, Decision.REVIEW, Decision.REVIEW),
    (0.9, Decision.DENY, Decision.DENY),  # a rule never lowers a decision
])
def test_rules_only_raise_the_models_decision(score: float, model: Decision, final: Decision) -> None:
    verdict = decide(POLICY, score, subject(refund_amount=150.0), {}, [])
    assert (verdict.model_decision, verdict.decision) == (model, final)
    assert [h.rule for h in verdict.hits] == ["refund_exceeds_order"]


def test_goods_that_do_not_come_back_get_store_credit_instead_of_an_inspection() -> None:
    assert decide(POLICY, 0.3, subject(), {}, []).decision is Decision.APPROVE_AFTER_INSPECTION
    assert decide(POLICY, 0.3, subject(channel="returnless"), {}, []).decision is Decision.STORE_CREDIT_ONLY


def test_a_hub_token_links_no_cases_but_a_shared_one_does() -> None:
    from fraud_service.scoring.rules import case_links

    tokens = {"customer": "c-1", "address": "locker-7", "payment": "p-1", "device": "d-1", "refund": "gc-1"}
    vector = {"addr_customers": 250, "pay_customers": 1, "dev_customers": 19, "rfd_customers": 20}
    assert case_links(tokens, vector, hub_customers=20) == {"customer": "c-1", "payment": "p-1", "device": "d-1"}
    assert case_links(tokens, {}, hub_customers=20) == tokens  # unknown counts never drop a link
    assert case_links({"customer": "c-1"}, {"addr_customers": 10**6}, hub_customers=1) == {"customer": "c-1"}
