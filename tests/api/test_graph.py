"""The link graph (`/v1/graph/...`, `/v1/cases/{id}/graph`) against a brute-force walk over the world's own tables
in pandas: the same customers and tokens two hops out, every use between them an edge, hubs not expanded, and
customers with fraud or abuse labels marked."""

from __future__ import annotations

from collections import deque
from typing import Any

import pandas as pd
import pytest

from fraud_service.cases import graph
from fraud_service.data.warehouse import Warehouse
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _uses(api: Api) -> pd.DataFrame:
    orders = pd.read_parquet(api.dataset / "orders.parquet")
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    parts = [orders[["customer_id", f"{k}_token"]].rename(columns={f"{k}_token": "value"}).assign(kind=k)
             for k in ("address", "payment", "device")]
    parts.append(returns[["customer_id", "refund_token"]].rename(columns={"refund_token": "value"})
                 .assign(kind="refund"))
    return pd.concat(parts).dropna().drop_duplicates()


def _walk(uses: pd.DataFrame, seed: tuple[str, str], hops: int, hub: int) -> tuple[set[str], set[tuple[str, str]]]:
    """Breadth-first over customer-token uses, hubs not expanded: the nodes and the edges between them."""
    tokens_of: dict[str, set[tuple[str, str]]] = {}
    for c, k, v in uses[["customer_id", "kind", "value"]].itertuples(index=False):
        tokens_of.setdefault(c, set()).add((k, v))
    people_of = uses.groupby(["kind", "value"])["customer_id"].apply(set)
    nodes = {seed: 0}
    queue = deque([seed])
    while queue:
        kind, value = queue.popleft()
        if nodes[(kind, value)] == hops:
            continue
        if kind == "customer":
            neighbours = tokens_of.get(value, set())
        else:
            people = people_of.get((kind, value), set())
            neighbours = set() if len(people) >= hub else {("customer", c) for c in people}
        for n in sorted(neighbours):
            if n not in nodes:
                nodes[n] = nodes[(kind, value)] + 1
                queue.append(n)
    keys = {f"{k}:{v}" for k, v in nodes}
    edges = {(f"customer:{c}", f"{k}:{v}") for c, k, v in uses[["customer_id", "kind", "value"]].itertuples(
        index=False) if f"customer:{c}" in keys and f"{k}:{v}" in keys}
    return keys, edges


def _small_seed(uses: pd.DataFrame) -> str:
    """A customer sharing a token with others whose two-hop graph stays under the cap."""
    shared = uses.groupby(["kind", "value"])["customer_id"].nunique()
    tokens = shared[(shared >= 2) & (shared <= 4)].index
    picked = uses.set_index(["kind", "value"]).loc[list(tokens)]
    return str(sorted(picked["customer_id"])[0])


def test_the_graph_is_the_brute_force_walk(api: Api) -> None:
    uses = _uses(api)
    customer = _small_seed(uses)
    got = api.client.get(f"/v1/graph/customer/{customer}", headers=api.headers("analyst")).get_json()
    assert not got["capped"]
    hub = api.service.settings.hub_customers
    nodes, edges = _walk(uses, ("customer", customer), 2, hub)
    assert {n["key"] for n in got["nodes"]} == nodes
    assert {(e["customer"], e["token"]) for e in got["edges"]} == edges
    by_key = {n["key"]: n for n in got["nodes"]}
    assert by_key[f"customer:{customer}"]["seed"] and by_key[f"customer:{customer}"]["hop"] == 0
    people = uses.groupby(["kind", "value"])["customer_id"].nunique()
    for n in got["nodes"]:
        if n["kind"] != "customer":
            assert n["customers"] == people[(n["kind"], n["id"])], n
            assert n["hub"] == (n["customers"] >= hub)


def test_hubs_are_one_node_with_a_count(api: Api) -> None:
    uses = _uses(api)
    people = uses[uses["kind"] == "address"].groupby("value")["customer_id"].nunique().sort_values(kind="stable")
    token = str(people.index[-1])
    assert people[token] >= 3
    snapshot = Warehouse(api.service.settings.warehouse_dir).current()
    got = graph.entity_graph(api.service.uow(), snapshot, "address", token, hub_customers=3).to_dict()
    (node,) = got["nodes"]  # a hub is not expanded: nobody behind it is drawn
    assert (node["hub"], node["customers"], node["expanded"]) == (True, people[token], False)
    opened = graph.entity_graph(api.service.uow(), snapshot, "address", token, hub_customers=1000).to_dict()
    assert len([n for n in opened["nodes"] if n["kind"] == "customer"]) >= people[token]


def test_known_bad_customers_are_marked(api: Api) -> None:
    uses = _uses(api)
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    labels = pd.read_parquet(api.dataset / "labels.parquet").sort_values("labelled_at")
    latest = labels.groupby("return_id")["label"].last()
    bad_returns = set(latest[latest.isin(["fraud", "abuse"])].index)
    bad = returns[returns["return_id"].isin(bad_returns)].groupby("customer_id")["return_id"].nunique()
    shared = uses[uses["customer_id"].isin(bad.index)].groupby(["kind", "value"])["customer_id"].nunique()
    kind, value = shared[shared >= 2].index[0]
    got = api.client.get(f"/v1/graph/{kind}/{value}?hops=1", headers=api.headers("analyst")).get_json()
    customers = [n for n in got["nodes"] if n["kind"] == "customer"]
    assert customers and any(n["bad_labels"] for n in customers)
    for n in customers:
        assert n["bad_labels"] == int(bad.get(n["id"], 0)), n


def test_a_case_graph_holds_what_only_its_requests_show(api: Api, set_policy: Any) -> None:
    case_id, (return_id,) = open_case(api, set_policy)
    tag = return_id.removeprefix("case-").rsplit("-", 1)[0]
    got = api.client.get(f"/v1/cases/{case_id}/graph", headers=api.headers("analyst")).get_json()
    keys = {n["key"]: n for n in got["nodes"]}
    assert keys[f"customer:cust-{tag}"]["seed"]
    assert {(e["customer"], e["token"]) for e in got["edges"]} >= {(f"customer:cust-{tag}", f"address:adr-{tag}"),
                                                                   (f"customer:cust-{tag}", f"payment:pay-{tag}")}
    assert api.client.get("/v1/cases/cas_none/graph", headers=api.headers("analyst")).status_code == 404


@pytest.mark.parametrize("path", ["/v1/graph/customer/C1?hops=0", "/v1/graph/customer/C1?hops=4",
                                  "/v1/graph/customer/C1?hops=two", "/v1/graph/shoe/C1"])
def test_bad_graph_requests_name_the_field(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.headers("analyst"))
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["field"] in ("hops", "kind")


def test_labels_count_as_they_stand_now_on_pages_and_in_the_graph(api: Api, set_policy: Any) -> None:
    """An analyst's label counts at once, and a later one replaces it: fraud, then reopened and cleared as legit."""
    case_id, (return_id,) = open_case(api, set_policy)
    customer = "cust-" + return_id.removeprefix("case-").rsplit("-", 1)[0]
    analyst = api.headers("analyst")

    def counts() -> tuple[int, int]:
        page = api.client.get(f"/v1/customers/{customer}", headers=analyst).get_json()
        graph = api.client.get(f"/v1/graph/customer/{customer}", headers=analyst).get_json()
        node = next(n for n in graph["nodes"] if n["key"] == f"customer:{customer}")
        return page["profile"]["bad_labels"], node["bad_labels"]

    assert counts() == (0, 0)
    assert api.client.post(f"/v1/cases/{case_id}/close", json={"label": "fraud", "reason": "ring"},
                           headers=analyst).status_code == 200
    assert counts() == (1, 1)
    assert api.client.post(f"/v1/cases/{case_id}/reopen", json={"reason": "check"}, headers=analyst).status_code == 200
    assert api.client.post(f"/v1/cases/{case_id}/close", json={"label": "legit", "reason": "cleared"},
                           headers=analyst).status_code == 200
    assert counts() == (0, 0)


def test_an_entity_nobody_knows_has_no_graph(api: Api) -> None:
    for path in ("/v1/graph/customer/nobody-anywhere", "/v1/graph/device/no-such-device"):
        response = api.client.get(path, headers=api.headers("analyst"))
        assert response.status_code == 404 and response.get_json()["error"] == "not_found", path
