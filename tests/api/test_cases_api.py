"""The investigations API (`/v1/cases`): queue order and filters, claiming, statuses, notes, closing with labels,
reopening, bulk close, authorization; every change an evidence event in the change's own transaction."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import select

from fraud_service.access.users import create_user
from fraud_service.store import chain
from fraud_service.store.schema import Case, CaseNote, EvidenceEvent, Label, User
from tests.api.conftest import Api
from tests.api.test_cases_opened import _assess, _new_identity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def open_case(api: Api, set_policy: Any, returns: int = 1, decision: str = "review",
              amount: float | None = None) -> tuple[str, list[str]]:
    """A new case holding RETURNS assessments of one new customer; its id and return ids."""
    body = _new_identity(api)
    if amount is not None:
        body["refund_amount"] = amount
        body["order"]["order_total"] = max(body["order"]["order_total"], amount)
    ids, case_id = [], None
    for i in range(returns):
        b = {**body, "return_id": f"{body['return_id']}-{i}"}
        got = _assess(api, set_policy, b, decision)
        case_id = case_id or got["case_id"]
        assert got["case_id"] == case_id
        ids.append(b["return_id"])
    assert case_id is not None
    return case_id, ids


def events(api: Api, case_id: str) -> list[EvidenceEvent]:
    with api.service.sessions() as session:
        return list(session.execute(select(EvidenceEvent).where(EvidenceEvent.subject == case_id)
                                    .order_by(EvidenceEvent.seq)).scalars())


def post(api: Api, path: str, body: Any = None, role: str = "analyst") -> Any:
    return api.client.post(path, json=body if body is not None else {}, headers=api.headers(role))


def test_scoring_keys_cannot_read_or_work_cases(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy)
    for method, path in (("get", "/v1/cases"), ("get", f"/v1/cases/{case_id}"), ("post", "/v1/cases/next"),
                         ("post", f"/v1/cases/{case_id}/claim"), ("post", f"/v1/cases/{case_id}/bundle")):
        response = getattr(api.client, method)(path, headers=api.headers("scoring"))
        assert response.status_code == 403, (path, response.get_json())
        assert getattr(api.client, method)(path).status_code == 401
    assert api.client.get(f"/v1/cases/{case_id}", headers=api.headers("analyst")).status_code == 200


def test_analysts_cannot_change_rules(api: Api) -> None:
    entry = {"entity": "device", "value": "dev-analyst-try", "list": "block", "reason": "test"}
    assert api.client.post("/v1/lists", json=entry, headers=api.headers("analyst")).status_code == 403
    assert api.client.delete("/v1/lists/device/dev-analyst-try", headers=api.headers("analyst")).status_code == 403
    assert api.client.post("/v1/lists", json=entry, headers=api.headers("admin")).status_code == 201
    assert api.client.delete("/v1/lists/device/dev-analyst-try", headers=api.headers("admin")).status_code == 204


def test_queue_is_ranked_by_score_times_money_and_filters(api: Api, set_policy: Any) -> None:
    small, _ = open_case(api, set_policy, amount=5.0)
    large, _ = open_case(api, set_policy, amount=900.0)
    page = api.client.get("/v1/cases?status=open&limit=500", headers=api.headers("analyst")).get_json()
    appealed = [c for c in page["cases"] if c["appealed_at"]]  # shoppers' appeals first (other tests make some)
    assert page["cases"][:len(appealed)] == appealed
    for group in (appealed, page["cases"][len(appealed):]):
        priorities = [c["priority"] for c in group]
        assert priorities == sorted(priorities, reverse=True)
    for c in page["cases"]:
        assert c["priority"] == pytest.approx(c["max_score"] * c["amount"], abs=0.02)
        assert c["status"] == "open"
    order = [c["case_id"] for c in page["cases"]]
    by_id = {c["case_id"]: c for c in page["cases"]}
    if by_id[large]["priority"] > by_id[small]["priority"]:
        assert order.index(large) < order.index(small)
    rich = api.client.get("/v1/cases?min_amount=800&limit=500", headers=api.headers("analyst")).get_json()
    assert large in {c["case_id"] for c in rich["cases"]} and small not in {c["case_id"] for c in rich["cases"]}
    assert all(c["amount"] >= 800 for c in rich["cases"])
    reason = by_id[large]["reason"]
    same = api.client.get(f"/v1/cases?reason={reason}&limit=500", headers=api.headers("analyst")).get_json()
    assert same["cases"] and all(c["reason"] == reason for c in same["cases"])
    by_amount = api.client.get("/v1/cases?sort=amount&limit=500", headers=api.headers("analyst")).get_json()
    amounts = [c["amount"] for c in by_amount["cases"]]
    assert amounts == sorted(amounts, reverse=True)
    bad = api.client.get("/v1/cases?status=lost&sort=sideways&limit=0&min_amount=x", headers=api.headers("analyst"))
    assert bad.status_code == 422
    assert {p["field"] for p in bad.get_json()["problems"]} == {"min_amount"}  # parsed first, then the rest
    bad = api.client.get("/v1/cases?status=lost&sort=sideways&limit=0", headers=api.headers("analyst"))
    assert {p["field"] for p in bad.get_json()["problems"]} == {"status", "sort", "limit"}
    # an unknown decision filtered every case out and answered 200; Python's int() read these as 5 or 10
    bad = api.client.get("/v1/cases?decision=nope", headers=api.headers("analyst"))
    assert bad.status_code == 422 and bad.get_json()["problems"] == [
        {"field": "decision", "problem": "got 'nope'", "expected": "one of review, deny"}]
    for limit in ("\uff15", "\u0665", "1_0", " 5", "5 "):
        bad = api.client.get("/v1/cases", query_string={"limit": limit}, headers=api.headers("analyst"))
        assert bad.status_code == 422 and bad.get_json()["problems"][0]["field"] == "limit", limit
    assert api.client.get("/v1/cases", query_string={"limit": "+5", "decision": "review"},
                          headers=api.headers("analyst")).status_code == 200
    for amount in ("inf", "1e999", "-inf", "nan"):  # a filter that lets nothing, or everything, through unseen
        bad = api.client.get(f"/v1/cases?min_amount={amount}", headers=api.headers("analyst"))
        assert bad.status_code == 422 and bad.get_json()["problems"][0]["expected"] == "a finite number", amount


def test_case_lifecycle_every_change_is_an_event(api: Api, set_policy: Any) -> None:
    case_id, returns = open_case(api, set_policy, returns=2)
    key_actor = f"key:{api.keys['analyst'].split('_')[1]}"

    claimed = post(api, f"/v1/cases/{case_id}/claim").get_json()
    assert (claimed["status"], claimed["assignee"]) == ("in_review", key_actor)
    assert post(api, f"/v1/cases/{case_id}/status", {"status": "escalated"}).get_json()["status"] == "escalated"
    refused = post(api, f"/v1/cases/{case_id}/status", {"status": "open"})  # escalated goes back to review only
    assert refused.status_code == 409 and "in_review" in refused.get_json()["message"]
    assert post(api, f"/v1/cases/{case_id}/status", {"status": "closed"}).status_code == 409
    assert post(api, f"/v1/cases/{case_id}/status", {"status": "done"}).status_code == 422
    note = post(api, f"/v1/cases/{case_id}/notes", {"body": "  Same card as ring R-17; asked the carrier.  "})
    assert note.status_code == 201 and note.get_json()["body"] == "Same card as ring R-17; asked the carrier."
    assert post(api, f"/v1/cases/{case_id}/notes", {"body": "   "}).status_code == 422

    partial = post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud"}, "reason": "empty box"})
    assert partial.status_code == 422
    assert [p["field"] for p in partial.get_json()["problems"]] == [f"dispositions.{returns[1]}"]
    wrong = post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud", returns[1]: "maybe",
                                                                       "nope": "fraud"}, "reason": "x"})
    assert [p["field"] for p in wrong.get_json()["problems"]] == [f"dispositions.{returns[1]}"]  # the body's schema
    stranger = post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud", returns[1]: "legit",
                                                                          "nope": "fraud"}, "reason": "x"})
    assert [p["field"] for p in stranger.get_json()["problems"]] == ["dispositions.nope"]  # not a return of the case
    both = post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud", returns[1]: "legit"},
                                                    "label": "fraud", "reason": "x"})
    assert both.status_code == 422 and [p["field"] for p in both.get_json()["problems"]] == ["label"]
    misspelt = post(api, f"/v1/cases/{case_id}/close", {"label": "fraud", "reasons": "x", "reason": "x"})
    assert misspelt.status_code == 422
    assert [(p["field"], p["problem"]) for p in misspelt.get_json()["problems"]] == [
        ("reasons", "is not a field of this request")]
    closed = post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud", returns[1]: "legit"},
                                                      "reason": "empty box confirmed by the warehouse"})
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"

    # a closed case is not edited, only reopened
    assert post(api, f"/v1/cases/{case_id}/notes", {"body": "late"}).status_code == 409
    assert post(api, f"/v1/cases/{case_id}/claim").status_code == 409
    assert post(api, f"/v1/cases/{case_id}/status", {"status": "in_review"}).status_code == 409
    assert post(api, f"/v1/cases/{case_id}/assign", {"assignee": None}).status_code == 409
    assert post(api, f"/v1/cases/{case_id}/reopen", {"reason": ""}).status_code == 422
    assert post(api, f"/v1/cases/{case_id}/reopen", {"reason": "chargeback says otherwise"}).get_json()[
        "status"] == "open"
    assert post(api, f"/v1/cases/{case_id}/reopen", {"reason": "again"}).status_code == 409  # not closed
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "abuse", "reason": "wardrobing after all"}
                ).status_code == 200

    kinds = [(e.kind, e.actor) for e in events(api, case_id)]
    assert [k for k, _ in kinds] == ["case_opened", "case_joined", "case_claimed", "case_status", "case_note",
                                     "case_closed", "case_reopened", "case_closed"]
    assert all(actor == key_actor for kind, actor in kinds[2:])
    recorded = events(api, case_id)
    payloads = [json.loads(e.payload) for e in recorded]
    assert payloads[2]["changes"] == {"assignee": [None, key_actor], "status": ["open", "in_review"]}
    assert payloads[3]["changes"] == {"status": ["in_review", "escalated"]}
    assert payloads[5]["changes"] == {"status": ["escalated", "closed"]}
    assert {(x["return_id"], x["label"]) for x in payloads[5]["labels"]} == {(returns[0], "fraud"),
                                                                            (returns[1], "legit")}
    assert payloads[6]["changes"] == {"status": ["closed", "open"]}
    with api.service.sessions() as session:
        labels = session.execute(select(Label).where(Label.case_id == case_id).order_by(Label.id)).scalars().all()
        assert [(x.return_id, x.label, x.source) for x in labels] == [
            (returns[0], "fraud", "analyst"), (returns[1], "legit", "analyst"),
            (returns[0], "abuse", "analyst"), (returns[1], "abuse", "analyst")]
        assert {x.event_seq for x in labels[:2]} == {recorded[5].seq}  # written with the closing event
        note_row = session.execute(select(CaseNote).where(CaseNote.case_id == case_id)).scalar_one()
        assert note_row.event_seq == recorded[4].seq
        assert chain.verify(session).ok

    detail = api.client.get(f"/v1/cases/{case_id}", headers=api.headers("analyst")).get_json()
    assert [a["return_id"] for a in detail["assessment_list"]] == returns
    assert {a["label"]["label"] for a in detail["assessment_list"]} == {"abuse"}  # the latest label wins
    assert detail["notes"][0]["body"].startswith("Same card")
    assert [e["kind"] for e in detail["events"]].count("assessment") == 2
    assert detail["histories"][0]["customer_id"] == detail["customer_id"]


def test_assign_to_people_only(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy)
    with api.service.sessions() as session:
        exists = session.get(User, "dana") is not None
    if not exists:
        create_user(api.service.uow(), "dana", "analyst", "correct horse battery", "test")
    unknown = post(api, f"/v1/cases/{case_id}/assign", {"assignee": "nobody-here"})
    assert unknown.status_code == 422 and unknown.get_json()["problems"][0]["field"] == "assignee"
    assert post(api, f"/v1/cases/{case_id}/assign", {}).status_code == 422
    got = post(api, f"/v1/cases/{case_id}/assign", {"assignee": "dana"}).get_json()
    assert got["assignee"] == "user:dana" and got["status"] == "open"
    taken = post(api, f"/v1/cases/{case_id}/claim")
    assert taken.status_code == 409 and "user:dana" in taken.get_json()["message"]
    assert post(api, f"/v1/cases/{case_id}/assign", {"assignee": None}).get_json()["assignee"] is None
    assert json.loads(events(api, case_id)[-1].payload)["changes"] == {"assignee": ["user:dana", None]}
    assert api.client.get("/v1/cases/cas_missing", headers=api.headers("analyst")).status_code == 404
    assert post(api, "/v1/cases/cas_missing/claim").status_code == 404


def test_two_analysts_asking_for_the_next_case_at_once_get_different_cases(api: Api, set_policy: Any) -> None:
    for _ in range(2):
        open_case(api, set_policy, amount=10_000.0)  # the top of the queue
    got: list[Any] = []

    def ask(role: str) -> None:
        got.append(api.client.post("/v1/cases/next", headers=api.headers(role)))

    threads = [threading.Thread(target=ask, args=(role,)) for role in ("analyst", "admin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in got] == [200, 200]
    ids = {r.get_json()["case_id"] for r in got}
    assert len(ids) == 2
    with api.service.sessions() as session:
        for case_id in ids:
            case = session.get(Case, case_id)
            assert case is not None and case.status == "in_review" and case.assignee is not None
    assert len({r.get_json()["assignee"] for r in got}) == 2


def test_bulk_close_is_all_or_nothing(api: Api, set_policy: Any) -> None:
    first, a = open_case(api, set_policy)
    second, b = open_case(api, set_policy, returns=2)
    third, _ = open_case(api, set_policy)
    assert post(api, f"/v1/cases/{third}/close", {"label": "legit", "reason": "fine"}).status_code == 200
    refused = post(api, "/v1/cases/close", {"case_ids": [first, second, third], "label": "fraud", "reason": "ring"})
    assert refused.status_code == 409 and third in refused.get_json()["message"]
    with api.service.sessions() as session:
        assert session.get(Case, first).status == "open"  # type: ignore[union-attr]
    assert post(api, "/v1/cases/close", {"case_ids": [first, first], "label": "fraud", "reason": "r"}
                ).status_code == 422
    ancient = post(api, "/v1/cases/close", {"case_ids": [first, second], "label": "fraud", "reason": "r",
                                            "unchanged_since": "0001-01-01T00:00:00+01:00"})  # was a 500
    assert ancient.status_code == 422 and "before the first time in UTC" in ancient.get_json()["problems"][0]["problem"]
    loaded = api.service.clock().isoformat()  # the analyst's page of the two cases; then a shopper appeals one
    assessment = json.loads(events(api, second)[0].payload)["assessment_id"]
    assert api.client.post(f"/v1/assessments/{assessment}/appeal", json={"message": "it was full"},
                           headers=api.headers()).status_code == 200
    stale = post(api, "/v1/cases/close", {"case_ids": [first, second], "label": "fraud", "reason": "ring",
                                          "unchanged_since": loaded})
    assert stale.status_code == 409 and second in stale.get_json()["message"] and first not in \
        stale.get_json()["message"].split("changed")[0]
    listed = {c["case_id"]: c["updated_at"] for c in api.client.get(
        "/v1/cases?limit=500", headers=api.headers("analyst")).get_json()["cases"]}
    for unchanged, field in (({first: listed[first]}, "unchanged"), ({**listed, "C-other": "x"}, "unchanged"),
                             ({first: listed[first], second: "soon"}, f"unchanged.{second}")):
        unchanged = {c: t for c, t in unchanged.items() if c in (first, second, "C-other")}
        wrong = post(api, "/v1/cases/close", {"case_ids": [first, second], "label": "fraud", "reason": "r",
                                              "unchanged": unchanged})
        assert wrong.status_code == 422 and wrong.get_json()["problems"][0]["field"] == field, wrong.get_json()
    older = {first: listed[first], second: "2000-01-01T00:00:00Z"}  # the second as an earlier page showed it
    stale = post(api, "/v1/cases/close", {"case_ids": [first, second], "label": "fraud", "reason": "ring",
                                          "unchanged": older})
    assert stale.status_code == 409 and second in stale.get_json()["message"]
    done = post(api, "/v1/cases/close", {"case_ids": [first, second], "label": "fraud", "reason": "ring R-17",
                                         "unchanged_since": api.service.clock().isoformat(),
                                         "unchanged": {first: listed[first], second: listed[second]}})
    assert done.status_code == 200 and {c["status"] for c in done.get_json()["cases"]} == {"closed"}
    with api.service.sessions() as session:
        labelled = set(session.execute(select(Label.return_id, Label.label).where(
            Label.case_id.in_([first, second]))).tuples())
    assert labelled == {(r, "fraud") for r in a + b}
    assert json.loads(events(api, second)[-1].payload)["bulk"] == 2


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/cases/cas_x?assessments_offset=" + "1" * 5000, "assessments_offset"),
    ("/v1/graph/customer/C0001?hops=" + "1" * 5000, "hops"),
    ("/v1/cases/cas_x/graph?hops=" + "1" * 5000, "hops"),
    ("/v1/dashboard?days=" + "1" * 5000, "days"),
])
def test_a_query_number_of_thousands_of_digits_is_422_not_500(api: Api, path: str, field: str) -> None:
    """int() refuses over 4,300 digits; gunicorn's request line limit hides it, a proxy allowing longer lines not."""
    response = api.client.get(path, headers=api.headers("admin"))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["problems"][0]["field"] == field


def test_a_change_the_database_refuses_to_write_is_a_503_naming_it(api: Api) -> None:
    """A read-only evidence database (a fail-over's standby; PostgreSQL's `default_transaction_read_only`) answered the
    analysts' and admins' writes 500 with a traceback; assessments got the 503 they promise (a helper's fault probe)."""
    from sqlalchemy import event

    statement = "PRAGMA query_only = ON" if api.backend == "sqlite" else "SET default_transaction_read_only = on"

    def read_only(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute(statement)
        cursor.close()
        connection.commit()  # a setting made in a transaction the pool rolls back would not last

    entry = {"entity": "device", "value": "dev-read-only", "list": "block", "reason": "test"}
    engine = api.service.engine
    event.listen(engine, "connect", read_only)
    engine.dispose()  # every connection from now on refuses to write
    try:
        refused = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
        assert refused.status_code == 503 and "nothing was changed" in refused.get_json()["message"], \
            refused.get_json()
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    assert api.client.post("/v1/lists", json=entry, headers=api.headers("admin")).status_code == 201
