"""Search (`/v1/search`) and the entity pages (`/v1/customers/{id}`, `/v1/tokens/{kind}/{value}`), checked against
pandas over the trained world's own tables (an independent reading of what was ingested) and against what the
service recorded since (assessments, cases, labels, lists)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fraud_service.cases import entities
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case, post
from tests.api.test_cases_opened import _new_identity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _tables(dataset: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(dataset / f"{t}.parquet") for t in ("customers", "orders", "returns", "labels")}


def _made(return_id: str, prefix: str) -> str:
    """The customer ("cust-") or address token ("adr-") `open_case` made for RETURN_ID (case-TAG-0)."""
    return prefix + return_id.removeprefix("case-").rsplit("-", 1)[0]


def search(api: Api, q: str, role: str = "analyst") -> Any:
    return api.client.get("/v1/search", query_string={"q": q}, headers=api.headers(role))


def test_search_finds_each_kind_by_exact_id_and_prefix(api: Api) -> None:
    t = _tables(api.dataset)
    customer = str(t["customers"]["customer_id"].sort_values().iloc[7])
    hits = search(api, customer).get_json()["hits"]
    assert hits[0] == {"kind": "customer", "id": customer, "summary": hits[0]["summary"], "token_kind": None,
                       "customer_id": None, "case_id": None}

    prefix = customer[:-2]
    expected = sorted(c for c in t["customers"]["customer_id"] if c.startswith(prefix))
    found = search(api, prefix).get_json()
    got = [h["id"] for h in found["hits"] if h["kind"] == "customer"]
    assert got == expected[:entities.PER_KIND]
    assert ("customer" in found["more"]) == (len(expected) > entities.PER_KIND)

    order = t["orders"].sort_values("order_id").iloc[11]
    hit = next(h for h in search(api, order["order_id"]).get_json()["hits"] if h["kind"] == "order")
    assert (hit["id"], hit["customer_id"]) == (order["order_id"], order["customer_id"])

    ret = t["returns"].sort_values("return_id").iloc[5]
    hit = next(h for h in search(api, ret["return_id"]).get_json()["hits"] if h["kind"] == "return")
    assert (hit["id"], hit["customer_id"]) == (ret["return_id"], ret["customer_id"])
    # to the minute, as a person reads it (it showed 2026-05-21T20:23:00.000000+00:00)
    assert f"by {ret['customer_id']}, {ret['requested_at'].tz_convert('UTC'):%Y-%m-%d %H:%M} UTC, refund" in \
        hit["summary"], hit

    users = t["orders"].groupby("address_token")["customer_id"].nunique()
    token = str(users.sort_values().index[-1])
    hit = next(h for h in search(api, token).get_json()["hits"] if h["kind"] == "token")
    assert (hit["id"], hit["token_kind"]) == (token, "address")
    assert f"used by {users[token]} customer" in hit["summary"]


def test_search_finds_what_only_the_evidence_log_knows(api: Api, set_policy: Any) -> None:
    """A return assessed but not ingested, its case, its new customer and the case's tokens."""
    case_id, (return_id,) = open_case(api, set_policy)
    customer = _made(return_id, "cust-")
    hits = search(api, return_id).get_json()["hits"]
    assert [(h["kind"], h["id"], h["case_id"]) for h in hits if h["kind"] == "return"] == [("return", return_id,
                                                                                           case_id)]
    assert [h["id"] for h in search(api, case_id[:-3]).get_json()["hits"] if h["kind"] == "case"] == [case_id]
    assert any(h["kind"] == "customer" and h["id"] == customer for h in search(api, customer).get_json()["hits"])
    address = _made(return_id, "adr-")
    assert ("token", address, "address") in {(h["kind"], h["id"], h["token_kind"])
                                             for h in search(api, address).get_json()["hits"]}


@pytest.mark.parametrize("q, field_problem", [("", "got ''"), ("   ", "got '   '"), ("x" * 201, "201 characters"),
                                              ("a\tb", "a control character")])
def test_bad_queries_are_refused_naming_q(api: Api, q: str, field_problem: str) -> None:
    response = search(api, q)
    assert response.status_code == 422
    (problem,) = response.get_json()["problems"]
    assert problem["field"] == "q" and field_problem in problem["problem"]


def test_wildcards_are_plain_characters(api: Api) -> None:
    """`%` and `_` match themselves: no id starts with them, so nothing is found (a LIKE would find everything)."""
    for q in ("%", "_", "C%", "_0"):
        assert search(api, q).get_json()["hits"] == []


def test_search_and_pages_need_an_analyst_key(api: Api) -> None:
    for path in ("/v1/search?q=C", "/v1/customers/C1", "/v1/tokens/address/x"):
        assert api.client.get(path).status_code == 401
        assert api.client.get(path, headers=api.headers("scoring")).status_code == 403


def test_customer_page_holds_everything_the_warehouse_knows(api: Api) -> None:
    t = _tables(api.dataset)
    returns = t["returns"]
    busiest = returns.groupby("customer_id").size().sort_values(kind="stable")
    customer = str(busiest.index[-1])
    page = api.client.get(f"/v1/customers/{customer}", headers=api.headers("analyst")).get_json()
    mine = returns[returns["customer_id"] == customer]
    orders = t["orders"][t["orders"]["customer_id"] == customer]
    labels = t["labels"][t["labels"]["return_id"].isin(mine["return_id"])]
    assert page["profile"]["orders"] == len(orders)
    assert page["profile"]["returns"] == len(mine)
    assert page["profile"]["refund_total"] == pytest.approx(mine["refund_amount"].sum())
    assert page["profile"]["bad_labels"] == labels[labels["label"].isin(["fraud", "abuse"])]["return_id"].nunique()
    assert page["counts"]["order"] == len(orders) and page["counts"]["return"] == len(mine)
    assert page["counts"]["label"] >= len(labels)
    kinds: dict[str, set[str]] = {}
    for e in page["timeline"]:
        kinds.setdefault(e["kind"], set()).add(e["id"])
    assert kinds["order"] == set(orders["order_id"]) and kinds["return"] == set(mine["return_id"])
    assert kinds.get("label", set()) >= set(labels["return_id"])
    times = [e["at"] for e in page["timeline"]]
    assert times == sorted(times, reverse=True)

    # every token the customer used, with everyone else who used it
    uses = pd.concat([t["orders"][["customer_id", c]].rename(columns={c: "value"}).assign(kind=k)
                      for k, c in (("address", "address_token"), ("payment", "payment_token"),
                                   ("device", "device_token"))]
                     + [returns[["customer_id", "refund_token"]].rename(columns={"refund_token": "value"})
                        .assign(kind="refund")]).dropna()
    used = uses[uses["customer_id"] == customer][["kind", "value"]].drop_duplicates()
    assert {(x["kind"], x["value"]) for x in page["tokens"]} == set(map(tuple, used.to_numpy()))
    for x in page["tokens"]:
        everyone = set(uses[(uses["kind"] == x["kind"]) & (uses["value"] == x["value"])]["customer_id"])
        assert x["customers"] == len(everyone)
        assert set(x["others"]) <= everyone - {customer}
        assert len(x["others"]) == min(len(everyone) - 1, entities.OTHERS_PER_TOKEN)
        assert x["hub"] == (len(everyone) >= api.service.settings.hub_customers)


def test_customer_page_features_are_the_online_stores(api: Api) -> None:
    source = str(pd.read_parquet(api.dataset / "returns.parquet").sort_values("return_id")["return_id"].iloc[-1])
    body = api.body(source)
    page = api.client.get(f"/v1/customers/{body['customer_id']}", headers=api.headers("analyst")).get_json()
    reader = api.service.assessor.reader
    stored = reader.stored({"customer_id": body["customer_id"], "address_token": "", "payment_token": "",
                            "device_token": "", "refund_token": ""})[0]
    values = page["features"]["values"]
    assert set(values) == set(stored)
    for name, value in stored.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        assert values[name] == pytest.approx(value), name
    assert page["features"]["computed_at"] is not None


def test_token_page_lists_everyone_who_used_it(api: Api) -> None:
    orders = _tables(api.dataset)["orders"]
    users = orders.groupby("payment_token")["customer_id"].nunique().sort_values(kind="stable")
    token = str(users.index[-1])
    page = api.client.get(f"/v1/tokens/payment/{token}", headers=api.headers("analyst")).get_json()
    holders = orders[orders["payment_token"] == token]
    assert page["profile"]["customers"] == holders["customer_id"].nunique()
    assert {c["customer_id"] for c in page["customers"]} == set(holders["customer_id"])
    for c in page["customers"]:
        assert c["uses"] == int((holders["customer_id"] == c["customer_id"]).sum())
    assert {e["id"] for e in page["timeline"] if e["kind"] == "order"} == set(holders["order_id"])
    assert page["counts"]["order"] == len(holders)


def test_pages_show_cases_and_lists(api: Api, set_policy: Any) -> None:
    case_id, (return_id,) = open_case(api, set_policy)
    customer, address = _made(return_id, "cust-"), _made(return_id, "adr-")
    entry = {"entity": "address", "value": address, "list": "block", "reason": "drop address"}
    assert api.client.post("/v1/lists", json=entry, headers=api.headers("admin")).status_code == 201
    page = api.client.get(f"/v1/customers/{customer}", headers=api.headers("analyst")).get_json()
    assert [c["case_id"] for c in page["cases"]] == [case_id]
    assert [(e["kind"], e["id"]) for e in page["timeline"]] == [("assessment", return_id)]
    token = api.client.get(f"/v1/tokens/address/{address}", headers=api.headers("analyst")).get_json()
    assert [c["case_id"] for c in token["cases"]] == [case_id]
    assert [(x["list"], x["reason"]) for x in token["lists"]] == [("block", "drop address")]
    assert [(e["kind"], e["id"]) for e in token["timeline"]] == [("assessment", return_id)]
    # closing labels the return: the customer's timeline and the closed queue show it
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "fraud", "reason": "ring"}).status_code == 200
    page = api.client.get(f"/v1/customers/{customer}", headers=api.headers("analyst")).get_json()
    assert [(e["kind"], e["data"].get("label")) for e in page["timeline"]][0] == ("label", "fraud")
    closed = api.client.get("/v1/cases?status=closed&limit=500", headers=api.headers("analyst")).get_json()["cases"]
    assert next(c for c in closed if c["case_id"] == case_id)["labels"] == {"fraud": 1}


def test_closed_list_counts_each_returns_label_in_force(api: Api, set_policy: Any) -> None:
    case_id, ids = open_case(api, set_policy, returns=3)
    dispositions = {ids[0]: "fraud", ids[1]: "legit", ids[2]: "legit"}
    assert post(api, f"/v1/cases/{case_id}/close", {"dispositions": dispositions, "reason": "checked"}).status_code \
        == 200
    assert post(api, f"/v1/cases/{case_id}/reopen", {"reason": "one more look"}).status_code == 200
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "fraud", "reason": "ring"}).status_code == 200
    closed = api.client.get("/v1/cases?status=closed&limit=500", headers=api.headers("analyst")).get_json()["cases"]
    assert next(c for c in closed if c["case_id"] == case_id)["labels"] == {"fraud": 3}
    still_open = api.client.get("/v1/cases?limit=500", headers=api.headers("analyst")).get_json()["cases"]
    assert all(c["labels"] is None for c in still_open)


def test_unknown_entities_are_404(api: Api) -> None:
    for path in ("/v1/customers/no-such-customer", "/v1/tokens/address/no-such-token", "/v1/tokens/shoe/x"):
        response = api.client.get(path, headers=api.headers("analyst"))
        assert response.status_code == 404 and response.get_json()["error"] == "not_found", path


def test_a_new_customer_with_only_an_assessment_has_a_page(api: Api, set_policy: Any) -> None:
    body = _new_identity(api)
    from tests.api.test_cases_opened import _assess

    _assess(api, set_policy, body, "approve")
    page = api.client.get(f"/v1/customers/{body['customer_id']}", headers=api.headers("analyst")).get_json()
    assert page["profile"]["assessments"] == 1 and page["profile"]["orders"] == 0
    assert page["cases"] == [] and [e["kind"] for e in page["timeline"]] == ["assessment"]


def test_search_is_case_sensitive_on_both_sources(api: Api, set_policy: Any) -> None:
    """An id is matched as written: the warehouse's side never ignored case, and neither does the evidence log's
    (SQLite's LIKE would)."""
    case_id, (return_id,) = open_case(api, set_policy)
    customer = _made(return_id, "cust-")
    assert any(h["id"] == customer for h in search(api, customer).get_json()["hits"])
    assert search(api, customer.upper()).get_json()["hits"] == []
    assert search(api, case_id.upper()).get_json()["hits"] == []


def test_a_huge_unknown_id_is_not_echoed_back_whole(api: Api) -> None:
    response = api.client.get("/v1/customers/" + "x" * 5000, headers=api.headers("analyst"))
    assert response.status_code == 404
    message = response.get_json()["message"]
    assert len(message) < 250 and "5,000 characters" in message
