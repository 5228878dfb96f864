"""POST /v1/returns/assess through the Flask test client: each decision path, rules, explanations, evidence and
idempotency, on SQLite and on the real PostgreSQL, with the real model and feature store."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from features.definitions import feature_names
from fraud_service.featurestore.source import request_entity
from fraud_service.scoring.policy import Policy
from fraud_service.scoring.request import parse_request
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent
from tests.api.conftest import Api, fresh

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _sample_returns(api: Api, n: int = 40) -> list[str]:
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    return list(returns.sort_values("return_id")["return_id"].iloc[::max(len(returns) // n, 1)][:n])


def expected(api: Api, body: dict[str, Any]) -> tuple[np.ndarray, float, float, np.ndarray]:
    """The vector, raw score, probability and contributions computed directly from the loaded parts."""
    assessor = api.service.assessor
    keys, fields = request_entity(parse_request(body, pd.Timestamp.now(tz="UTC").to_pydatetime()))
    x = assessor.scorer.row(assessor.reader.vector(keys, fields))
    raw = float(assessor.scorer.booster.predict(x, raw_score=True)[0])
    contributions = assessor.scorer.booster.predict(x, pred_contrib=True)[0]
    return x, raw, float(assessor.scorer.calibration.apply(raw)), contributions


def band_policy(score: float, decision: str) -> Policy:
    """A policy putting SCORE in DECISION's band."""
    lo, hi = max(score - 1e-4, 0.0), min(score + 1e-4, 1.0)
    cuts = {"approve": (hi, hi, hi, hi), "approve_after_inspection": (lo, hi, hi, hi),
            "store_credit_only": (0.0, lo, hi, hi), "review": (0.0, 0.0, lo, hi), "deny": (0.0, 0.0, 0.0, lo)}
    return Policy(f"test-{decision}", *cuts[decision])


def test_assess_scores_with_the_production_model_and_records_evidence(api: Api, source_return: str) -> None:
    body = fresh(api, source_return)
    response = api.assess(body)
    assert response.status_code == 201, response.get_json()
    got = response.get_json()
    _, raw, probability, _ = expected(api, body)
    assert got["return_id"] == body["return_id"]
    assert got["score"] == pytest.approx(probability, abs=1e-6)
    assert got["model_version"] == api.service.assessor.scorer.version
    assert got["policy_version"] == api.service.assessor.policy.version
    assert got["decision"] in {"approve", "approve_after_inspection", "store_credit_only", "review", "deny"}
    assert got["evidence"] == f"/v1/assessments/{got['assessment_id']}"
    assert response.headers["Location"] == got["evidence"]

    evidence = api.client.get(got["evidence"], headers=api.headers("analyst"))
    assert evidence.status_code == 200
    stored = evidence.get_json()
    assert stored["response"] == got
    assert stored["raw_score"] == pytest.approx(raw, abs=1e-9)
    assert stored["request"]["order"]["order_id"] == body["order"]["order_id"]
    # every feature of the online vector (the model's and the rest: a rule backtest may read any of them)
    assert set(stored["features"]) == set(feature_names()) >= set(api.service.assessor.scorer.features)
    assert stored["features"]["rt_refund_amount"] == pytest.approx(body["refund_amount"])
    # when the customer's stored row became true is kept beside the values
    assert pd.Timestamp(stored["feature_times"]["customer_features"]) <= pd.Timestamp.now(tz="UTC")
    with api.service.sessions() as session:
        event = session.execute(select(EvidenceEvent).where(EvidenceEvent.subject == got["assessment_id"])).scalar_one()
        assert event.kind == "assessment" and event.actor.startswith("key:")
        assert chain.verify(session).ok


@pytest.mark.parametrize("decision", ["approve", "approve_after_inspection", "store_credit_only", "review", "deny"])
def test_each_decision_path(api: Api, source_return: str, set_policy: Any, decision: str) -> None:
    body = fresh(api, source_return)
    _, raw, probability, contributions = expected(api, body)
    set_policy(band_policy(probability, decision))
    got = api.assess(body).get_json()
    assert got["decision"] == decision and got["model_decision"] == decision
    assert got["rules_fired"] == []
    stored = api.client.get(got["evidence"], headers=api.headers()).get_json()
    if decision == "approve":
        assert got["reasons"] == [] and stored["contributions"] is None
        return
    # every non-approve decision is explained: LightGBM's exact TreeSHAP, adding up to the raw score
    assert stored["contributions"] == pytest.approx(list(contributions), abs=1e-9)
    assert sum(stored["contributions"]) == pytest.approx(raw, abs=1e-6)
    positive = sorted((c for c in contributions[:-1] if c > 0), reverse=True)[:5]
    assert [r["contribution"] for r in got["reasons"]] == pytest.approx(positive, abs=1e-6)
    for reason in got["reasons"]:
        assert reason["feature"] in api.service.assessor.scorer.features
        assert len(reason["sentence"]) > 10


def test_inspection_band_without_goods_coming_back_gives_store_credit(api: Api, set_policy: Any) -> None:
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    claim = str(returns[returns["return_type"] == "item_not_received"].sort_values("return_id")["return_id"].iloc[0])
    body = fresh(api, claim)
    set_policy(band_policy(expected(api, body)[2], "approve_after_inspection"))
    assert api.assess(body).get_json()["decision"] == "store_credit_only"


def test_scores_differ_between_requests_and_match_direct_scoring(api: Api) -> None:
    scores = []
    for rid in _sample_returns(api, 12):
        body = fresh(api, rid)
        got = api.assess(body).get_json()
        assert got["score"] == pytest.approx(expected(api, body)[2], abs=1e-6)
        scores.append(got["score"])
    assert len(set(scores)) > 6  # the vectors (and so the scores) really come from each request's history


def test_new_customer_and_unknown_order_are_scored(api: Api, source_return: str) -> None:
    body = fresh(api, source_return, customer_id=f"new-{uuid.uuid4().hex[:8]}")
    body["order"] = {**body["order"], "order_id": f"new-order-{uuid.uuid4().hex[:8]}", "customer_id": None,
                     "payment_token": f"new-pay-{uuid.uuid4().hex[:8]}", "address_token": None, "device_token": None}
    body["refund_token"] = None
    got = api.assess(body)
    assert got.status_code == 201, got.get_json()
    stored = api.client.get(got.get_json()["evidence"], headers=api.headers()).get_json()
    assert stored["feature_times"]["customer_features"] is None  # never seen: no stored row
    assert stored["features"]["cust_returns_365d"] == 0  # a present key with no rows yet has zero counts
    assert stored["features"]["pay_customers"] == 0


# --- idempotency -----------------------------------------------------------------------------------------
def _count(api: Api, model: Any, **where: Any) -> int:
    with api.service.sessions() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(session.execute(query).scalar_one())


def test_same_return_again_gives_the_stored_assessment(api: Api, source_return: str) -> None:
    body = fresh(api, source_return)
    first = api.assess(body)
    events = _count(api, EvidenceEvent) - _count(api, EvidenceEvent, kind="chain_opened")
    reordered = dict(reversed(list(body.items())))  # key order does not change a request's identity
    again = api.assess(reordered)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert _count(api, Assessment, return_id=body["return_id"]) == 1
    # nothing recorded but, when this is the first test on PostgreSQL, the other writer lane's chain segment
    assert _count(api, EvidenceEvent) - _count(api, EvidenceEvent, kind="chain_opened") == events


def test_changed_body_for_the_same_return_is_a_conflict(api: Api, source_return: str) -> None:
    body = fresh(api, source_return)
    assert api.assess(body).status_code == 201
    changed = {**body, "refund_amount": body["refund_amount"] + 1}
    response = api.assess(changed)
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    assert body["return_id"] in response.get_json()["message"]
    assert _count(api, Assessment, return_id=body["return_id"]) == 1


def test_a_key_of_another_name_gets_no_replay_but_a_rotated_key_does(api: Api, source_return: str) -> None:
    """Another client's key sending a return id already assessed sees nothing of that assessment: the same 409 as
    for a changed body, whatever body it sends. A new key under the same name (a rotation) gets the replay."""
    from fraud_service.access.keys import create_key

    body = fresh(api, source_return)
    first = api.assess(body)
    assert first.status_code == 201
    foreign = {"Authorization": f"Bearer {create_key(api.service.uow(), 'scoring', 'another store', 'test')}"}
    rotated = {"Authorization": f"Bearer {create_key(api.service.uow(), 'scoring', 'test scoring', 'test')}"}
    theirs = api.client.post("/v1/returns/assess", json=body, headers=foreign)
    changed = api.client.post("/v1/returns/assess", json={**body, "refund_amount": body["refund_amount"] + 1},
                              headers=foreign)
    for answer in (theirs, changed):
        assert answer.status_code == 409
        assert "Idempotent-Replayed" not in answer.headers and "Location" not in answer.headers
        assert set(answer.get_json()) == {"error", "message", "request_id"}
        assert first.get_json()["assessment_id"] not in answer.get_data(as_text=True)
    assert {**theirs.get_json(), "request_id": ""} == {**changed.get_json(), "request_id": ""}
    again = api.client.post("/v1/returns/assess", json=body, headers=rotated)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert _count(api, Assessment, return_id=body["return_id"]) == 1


def test_concurrent_duplicates_make_one_assessment(api: Api, source_return: str) -> None:
    body = fresh(api, source_return)
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def post() -> None:
        client = api.app.test_client()
        barrier.wait()
        r = client.post("/v1/returns/assess", json=body, headers=api.headers())
        results.append((r.status_code, r.get_json()))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in results) == [200, 200, 200, 201]
    assert len({payload["assessment_id"] for _, payload in results}) == 1
    assert _count(api, Assessment, return_id=body["return_id"]) == 1


# --- rules next to the model -----------------------------------------------------------------------------
def _add(api: Api, entity: str, value: str, kind: str) -> None:
    r = api.client.post("/v1/lists", json={"entity": entity, "value": value, "list": kind, "reason": "test"},
                        headers=api.headers("admin"))
    assert r.status_code == 201, r.get_json()


def _remove(api: Api, entity: str, value: str) -> None:
    assert api.client.delete(f"/v1/lists/{entity}/{value}", headers=api.headers("admin")).status_code == 204


def test_blocklisted_token_denies(api: Api, source_return: str, set_policy: Any) -> None:
    body = fresh(api, source_return)
    set_policy(band_policy(expected(api, body)[2], "approve"))
    _add(api, "payment", body["order"]["payment_token"], "block")
    try:
        got = api.assess(body).get_json()
    finally:
        _remove(api, "payment", body["order"]["payment_token"])
    assert got["model_decision"] == "approve" and got["decision"] == "deny"
    assert [r["rule"] for r in got["rules_fired"]] == ["blocklist_payment"]
    assert got["reasons"]  # a deny is explained even when a rule caused it


def test_allowlisted_customer_is_approved_unless_something_is_blocklisted(api: Api, source_return: str,
                                                                       set_policy: Any) -> None:
    body = fresh(api, source_return)
    set_policy(band_policy(expected(api, body)[2], "deny"))
    _add(api, "customer", body["customer_id"], "allow")
    try:
        allowed = api.assess(body).get_json()
        assert allowed["decision"] == "approve" and allowed["model_decision"] == "deny"
        assert [r["rule"] for r in allowed["rules_fired"]] == ["allowlist_customer"]
        _add(api, "payment", body["order"]["payment_token"], "block")
        try:
            both = api.assess(fresh(api, source_return)).get_json()
        finally:
            _remove(api, "payment", body["order"]["payment_token"])
    finally:
        _remove(api, "customer", body["customer_id"])
    assert both["decision"] == "deny"
    assert {r["rule"] for r in both["rules_fired"]} == {"allowlist_customer", "blocklist_payment"}


def test_hard_rule_raises_but_never_lowers(api: Api, source_return: str, set_policy: Any) -> None:
    body = fresh(api, source_return)
    body["refund_amount"] = body["order"]["order_total"] * 2 + 10
    probability = expected(api, body)[2]
    set_policy(band_policy(probability, "approve"))
    raised = api.assess(body).get_json()
    assert raised["model_decision"] == "approve" and raised["decision"] == "review"
    assert raised["rules_fired"][0]["rule"] == "refund_exceeds_order"
    set_policy(band_policy(probability, "deny"))
    kept = api.assess({**body, "return_id": f"t-{uuid.uuid4().hex[:12]}"}).get_json()
    assert kept["decision"] == "deny" and kept["rules_fired"][0]["rule"] == "refund_exceeds_order"


# --- reading evidence ------------------------------------------------------------------------------------
def test_assessment_lookup(api: Api, source_return: str) -> None:
    got = api.assess(fresh(api, source_return)).get_json()
    for role in ("scoring", "analyst", "admin"):
        assert api.client.get(got["evidence"], headers=api.headers(role)).status_code == 200
    missing = api.client.get("/v1/assessments/asm_nope", headers=api.headers())
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
