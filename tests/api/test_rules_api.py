"""Rules as data over HTTP and in the UI: reading and saving rule sets, scoring with the set in force, the backtest
against a replay done by hand, and lists that expire."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from fraud_service.config import Settings
from fraud_service.scoring import lists
from fraud_service.scoring.policy import Decision
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent
from tests.api.conftest import Api, make_api, private_home
from tests.api.test_ui import person, signed_in
from tests.conftest import TrainedWorld

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SEVERITY = [d.value for d in Decision]


@pytest.fixture(scope="module")
def own(serving_home: Path, trained_world: TrainedWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A service with an evidence database of its own, holding 60 assessments of real returns (the window the
    backtests replay holds nothing else)."""
    root = tmp_path_factory.mktemp("rules")
    home = private_home(serving_home, root / "home")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{root / 'fraud.db'}"})
    api = make_api(settings, trained_world.dataset, "sqlite")
    returns = pd.read_parquet(trained_world.dataset / "returns.parquet").sort_values("requested_at")
    for return_id in returns["return_id"].iloc[-60:]:
        assert api.assess(api.body(str(return_id))).status_code == 201
    yield api
    api.service.close()


def stored(api: Api) -> list[dict[str, Any]]:
    with api.service.sessions() as session:
        rows = session.execute(select(Assessment.return_id, Assessment.decision, Assessment.refund_amount,
                                      EvidenceEvent.payload).join(EvidenceEvent,
                                                                  EvidenceEvent.seq == Assessment.event_seq)).all()
    return [{"return_id": r, "decision": d, "amount": a, **json.loads(p)} for r, d, a, p in rows]


def test_a_backtest_is_the_replay_done_by_hand(own: Api) -> None:
    rows = stored(own)
    amounts = sorted(r["features"]["rt_refund_amount"] for r in rows)
    cut = amounts[len(amounts) // 2]
    proposed = {"custom": [{"name": "big_refund", "when": f"rt_refund_amount > {cut}", "decision": "review"}]}
    got = own.client.post("/v1/rules/backtest", json={"rules": proposed, "days": 30},
                          headers=own.headers("admin")).get_json()
    # by hand: the stored decision (defaults in force), raised to review where the new rule fires
    after = {r["return_id"]: max(r["decision"], "review", key=SEVERITY.index)
             if r["features"]["rt_refund_amount"] > cut else r["decision"] for r in rows}
    before = {r["return_id"]: r["decision"] for r in rows}
    changes = Counter(f"{before[k]} -> {after[k]}" for k in before if before[k] != after[k])
    assert got["assessments"] == len(rows) == 60 and got["skipped"] == 0
    assert got["changed"] == dict(changes) and changes
    assert got["raised"] == sum(changes.values()) and got["lowered"] == 0
    amount = {r["return_id"]: r["amount"] for r in rows}
    assert got["held_amount"] == pytest.approx(sum(amount[k] for k in before if before[k] == "approve"
                                                   and after[k] != "approve"), abs=0.01)
    assert sum(d["reviews_after"] for d in got["per_day"]) == sum(v in ("review", "deny") for v in after.values())
    labels = pd.read_parquet(own.dataset / "labels.parquet").sort_values("labelled_at")
    latest = labels.groupby("return_id")["label"].last().to_dict()
    held = [k for k, v in after.items() if v != "approve" and k in latest]
    bad = [k for k in after if latest.get(k) in ("fraud", "abuse")]
    assert got["after"]["labelled"] == sum(k in latest for k in after)
    assert got["after"]["held_bad"] == sum(latest[k] in ("fraud", "abuse") for k in held)
    if held:
        assert got["after"]["precision"] == pytest.approx(got["after"]["held_bad"] / len(held))
    if bad:
        assert got["after"]["recall"] == pytest.approx(got["after"]["held_bad"] / len(bad))


def test_turning_a_builtin_off_shows_what_it_had_raised(own: Api) -> None:
    rows = stored(own)
    fired = [r for r in rows if any(h["rule"] == "return_velocity" for h in r["response"]["rules_fired"])]
    off = {"builtin": {name: {"enabled": False} for name in ("refund_exceeds_order", "repeated_item_not_received",
                                                             "return_velocity", "shared_refund_destination")}}
    got = own.client.post("/v1/rules/backtest", json={"rules": off, "days": 30},
                          headers=own.headers("admin")).get_json()
    # with no hard rule, each decision falls back to the model's own (lists are empty)
    expected = Counter(f"{r['decision']} -> {r['response']['model_decision']}" for r in rows
                       if r["decision"] != r["response"]["model_decision"])
    assert got["changed"] == dict(expected)
    assert got["lowered"] == sum(expected.values()) >= len([r for r in fired if r["decision"] != r["response"][
        "model_decision"]])
    assert got["raised"] == 0 and got["rules_fired"] == {}


def test_bad_backtests_and_saves_name_each_field(own: Api) -> None:
    bad = own.client.post("/v1/rules/backtest", json={"rules": {"custom": [{"name": "x", "when": "nope > 1",
                                                                              "decision": "approve"}]}, "days": 7},
                          headers=own.headers("admin"))
    assert bad.status_code == 422
    assert {p["field"] for p in bad.get_json()["problems"]} == {"rules.custom[0].when", "rules.custom[0].decision"}
    for days, expected in ((400, "a number of at most 365"), (0, "a number of at least 1"), ("7", "an integer")):
        answer = own.client.post("/v1/rules/backtest", json={"rules": {}, "days": days}, headers=own.headers("admin"))
        assert answer.status_code == 422 and answer.get_json()["problems"] == [
            {"field": "days", "problem": f"got {days!r}", "expected": expected}], answer.get_json()
    for role in ("analyst", "scoring"):
        assert own.client.post("/v1/rules/backtest", json={"rules": {}}, headers=own.headers(role)).status_code == 403
        assert own.client.put("/v1/rules", json={"rules": {}, "reason": "x"},
                              headers=own.headers(role)).status_code == 403
    assert own.client.get("/v1/rules", headers=own.headers("scoring")).status_code == 403


def test_a_saved_rule_set_decides_the_next_assessment(api: Api) -> None:
    rules = {"custom": [{"name": "every_refund", "when": "rt_refund_amount >= 0", "decision": "deny",
                         "description": "test: deny everything"}]}
    saved = api.client.put("/v1/rules", json={"rules": rules, "reason": "a test"}, headers=api.headers("admin"))
    assert saved.status_code == 200
    version = saved.get_json()["version"]
    try:
        source = str(pd.read_parquet(api.dataset / "returns.parquet").sort_values("return_id")["return_id"].iloc[3])
        body = api.body(source, return_id=f"rules-{version}-{source}")
        answer = api.assess(body).get_json()
        assert answer["decision"] == "deny"
        assert {"rule": "every_refund", "decision": "deny", "detail": "test: deny everything"} in answer["rules_fired"]
        record = api.client.get(f"/v1/assessments/{answer['assessment_id']}", headers=api.headers("admin")).get_json()
        assert record["rules_version"] == version
        view = api.client.get("/v1/rules", headers=api.headers("analyst")).get_json()
        assert view["rules"]["version"] == version and view["versions"][0]["reason"] == "a test"
        assert "rt_refund_amount" in view["features"]
    finally:
        assert api.client.put("/v1/rules", json={"rules": {}, "reason": "back to the defaults"},
                              headers=api.headers("admin")).status_code == 200


def test_an_expired_list_entry_stops_matching_and_can_be_replaced(api: Api) -> None:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    lists.add(api.service.uow(), entity="device", value="dev-expiring", list_name="block", reason="a week's ban",
              actor="test", now=then, expires_at=then + dt.timedelta(hours=1))
    cache = lists.ListCache(api.service.sessions)
    assert cache.matches({"device": "dev-expiring"}) == []  # expired an hour ago
    history = lists.history(api.service.uow())
    assert [m.list for m in history.matches({"device": "dev-expiring"}, then + dt.timedelta(minutes=30))] == ["block"]
    assert history.matches({"device": "dev-expiring"}, then + dt.timedelta(minutes=90)) == []
    listed = api.client.get("/v1/lists", headers=api.headers("analyst")).get_json()["entries"]
    assert next(e for e in listed if e["value"] == "dev-expiring")["expires_at"] is not None
    again = {"entity": "device", "value": "dev-expiring", "list": "allow", "reason": "cleared"}
    assert api.client.post("/v1/lists", json=again, headers=api.headers("admin")).status_code == 201
    assert [m.list for m in lists.ListCache(api.service.sessions).matches({"device": "dev-expiring"})] == ["allow"]
    past = {**again, "value": "dev-past", "expires_at": then.isoformat()}
    response = api.client.post("/v1/lists", json=past, headers=api.headers("admin"))
    assert response.status_code == 422 and response.get_json()["problems"][0]["field"] == "expires_at"
    gone = api.client.delete("/v1/lists/device/dev-expiring?reason=test%20over", headers=api.headers("admin"))
    assert gone.status_code == 204
    with api.service.sessions() as session:
        removals = [json.loads(e.payload) for e in session.execute(
            select(EvidenceEvent).where(EvidenceEvent.kind == "list_removed",
                                        EvidenceEvent.subject == "device:dev-expiring")
            .order_by(EvidenceEvent.seq)).scalars()]
        assert [r.get("removal_reason") for r in removals] == ["expired; replaced by a new entry", "test over"]
        assert chain.verify(session).ok


def test_the_rules_page_backtests_and_saves_for_admins_only(own: Api) -> None:
    client, csrf = signed_in(own, person(own, "rita"))
    page = client.get("/ui/rules").get_data(as_text=True)
    assert 'name="b.return_velocity.threshold"' in page and "disabled" in page and 'value="save"' not in page
    assert client.post("/ui/rules", data={"csrf_token": csrf, "action": "backtest"}).status_code == 403
    admin, csrf = signed_in(own, person(own, "ada", "admin"))
    form = {"csrf_token": csrf, "rows": "1", "days": "30", "action": "backtest",
            "c.0.name": "big_refund", "c.0.when": "rt_refund_amount > 0", "c.0.decision": "review", "c.0.enabled": "on"}
    for name in ("refund_exceeds_order", "repeated_item_not_received", "return_velocity", "shared_refund_destination"):
        form |= {f"b.{name}.enabled": "on", f"b.{name}.threshold": "3", f"b.{name}.decision": "review"}
    form["b.refund_exceeds_order.threshold"] = "0.01"
    result = admin.post("/ui/rules", data=form).get_data(as_text=True)
    assert 'id="backtest"' in result and "60 assessments" in result and "approve → review" in result
    bad = admin.post("/ui/rules", data={**form, "c.0.when": "rt_refund_amount >"}).get_data(as_text=True)
    assert "custom[0].when" in bad and 'id="backtest"' not in bad
    saved = admin.post("/ui/rules", data={**form, "action": "save", "reason": "big refunds to review"})
    assert saved.status_code == 302
    assert own.client.get("/v1/rules", headers=own.headers("analyst")).get_json()["rules"]["custom"][0]["name"] == \
        "big_refund"
    assert own.client.put("/v1/rules", json={"rules": {}, "reason": "defaults"},
                          headers=own.headers("admin")).status_code == 200


def test_the_lists_page_adds_with_an_expiry_and_removes_with_a_reason(own: Api) -> None:
    admin, csrf = signed_in(own, person(own, "ada", "admin"))
    added = admin.post("/ui/lists", data={"csrf_token": csrf, "entity": "address", "value": "addr-ui", "list": "block",
                                          "reason": "drop point", "expires_in_days": "7"})
    assert added.status_code == 302
    entry = next(e for e in own.client.get("/v1/lists", headers=own.headers("analyst")).get_json()["entries"]
                 if e["value"] == "addr-ui")
    left = dt.datetime.fromisoformat(entry["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=6, hours=23) < left <= dt.timedelta(days=7)
    bad = admin.post("/ui/lists", data={"csrf_token": csrf, "entity": "address", "value": "addr-x", "list": "block",
                                        "reason": "x", "expires_in_days": "soon"}, follow_redirects=True)
    assert "expires_in_days" in bad.get_data(as_text=True)
    page = admin.get("/ui/lists").get_data(as_text=True)
    assert "addr-ui" in page and "/ui/tokens/address/addr-ui" in page
    gone = admin.post("/ui/lists/remove", data={"csrf_token": csrf, "entity": "address", "value": "addr-ui",
                                                "reason": "moved on"})
    assert gone.status_code == 302
    assert all(e["value"] != "addr-ui" for e in own.client.get("/v1/lists",
                                                               headers=own.headers("analyst")).get_json()["entries"])
    analyst, csrf = signed_in(own, person(own, "rita"))
    assert analyst.post("/ui/lists", data={"csrf_token": csrf, "entity": "address", "value": "a", "list": "block",
                                           "reason": "r"}).status_code == 403


def test_a_refusal_names_the_roles_that_may(own: Api) -> None:
    """`an analyst key …` and each role once: `(needs admin)`, not `(needs admin or admin)`."""
    response = own.client.put("/v1/rules", json={"rules": {}, "reason": "x"}, headers=own.headers("analyst"))
    assert response.get_json()["message"] == "an analyst key may not do this (needs admin)"
    response = own.client.get("/v1/rules", headers=own.headers("scoring"))
    assert response.get_json()["message"] == "a scoring key may not do this (needs analyst or admin)"


@pytest.mark.parametrize("days", [True, "30", 7.5])
def test_a_backtest_window_is_a_whole_number_of_days(own: Api, days: object) -> None:
    response = own.client.post("/v1/rules/backtest", json={"rules": {}, "days": days}, headers=own.headers("admin"))
    assert response.status_code == 422 and response.get_json()["problems"][0]["field"] == "days"
