"""The analyst UI's search box and entity pages: every id links to its page, an exact id opens its page at once,
and what a page shows escapes what it was given."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest

from tests.api.conftest import Api
from tests.api.test_cases_api import open_case, post
from tests.api.test_ui import person, signed_in

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _links(page: str) -> set[str]:
    return {html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)}


def test_every_page_has_the_search_box_and_search_needs_a_person(api: Api) -> None:
    assert api.app.test_client().get("/ui/search?q=C").status_code == 302
    client, _ = signed_in(api, person(api, "sam"))
    for path in ("/ui/", "/ui/search", "/ui/?status=closed"):
        page = client.get(path).get_data(as_text=True)
        assert 'id="search-box"' in page and 'action="/ui/search"' in page, path


def test_an_exact_id_opens_its_page_and_a_prefix_lists_hits(api: Api) -> None:
    client, _ = signed_in(api, person(api, "sam"))
    customers = pd.read_parquet(api.dataset / "customers.parquet")["customer_id"].sort_values()
    customer = str(customers.iloc[3])
    response = client.get("/ui/search", query_string={"q": customer, "go": "1"})
    assert response.status_code == 302 and response.headers["Location"] == f"/ui/customers/{customer}"
    listed = client.get("/ui/search", query_string={"q": customer[:-1]}).get_data(as_text=True)
    expected = [c for c in customers if c.startswith(customer[:-1])][:10]
    assert [f"/ui/customers/{c}" for c in expected] == [h for h in re.findall(r'<a class="mono" href="([^"]+)"',
                                                                                listed) if "/customers/" in h]
    bad = client.get("/ui/search", query_string={"q": "x" * 300})
    assert bad.status_code == 400 and "at most 200" in bad.get_data(as_text=True)
    assert "Nothing has this id" in client.get("/ui/search?q=zz-none").get_data(as_text=True)


def test_ids_link_between_case_customer_and_token_pages(api: Api, set_policy: Any) -> None:
    case_id, (return_id,) = open_case(api, set_policy)
    tag = return_id.removeprefix("case-").rsplit("-", 1)[0]
    customer, address, payment = f"cust-{tag}", f"adr-{tag}", f"pay-{tag}"
    client, _ = signed_in(api, person(api, "sam"))
    case_page = client.get(f"/ui/cases/{case_id}").get_data(as_text=True)
    assert {f"/ui/customers/{customer}", f"/ui/tokens/address/{address}",
            f"/ui/tokens/payment/{payment}"} <= _links(case_page)
    page = client.get(f"/ui/customers/{customer}").get_data(as_text=True)
    assert f"/ui/cases/{case_id}" in _links(page)
    token_page = client.get(f"/ui/tokens/address/{address}").get_data(as_text=True)
    assert {f"/ui/cases/{case_id}", f"/ui/customers/{customer}#return-{return_id}"} <= _links(token_page)
    assert client.get("/ui/customers/nobody-at-all").status_code == 404
    assert client.get("/ui/tokens/shoe/x").status_code == 404


def test_a_warehouse_customer_page_links_each_token_and_other_customer(api: Api) -> None:
    orders = pd.read_parquet(api.dataset / "orders.parquet")
    shared = orders.groupby("address_token")["customer_id"].nunique()
    token = str(shared[shared >= 2].sort_values(kind="stable").index[0])
    first, second = sorted(orders[orders["address_token"] == token]["customer_id"].unique())[:2]
    client, _ = signed_in(api, person(api, "sam"))
    links = _links(client.get(f"/ui/customers/{first}").get_data(as_text=True))
    assert {f"/ui/tokens/address/{token}", f"/ui/customers/{second}"} <= links
    mine = orders[orders["customer_id"] == first]
    assert {f"/ui/customers/{first}#order-{o}" for o in mine["order_id"]} <= links


def test_pages_escape_what_they_show(api: Api) -> None:
    client, _ = signed_in(api, person(api, "sam"))
    evil = "<script>alert(1)</script>"
    for path in (f"/ui/customers/{quote(evil)}", f"/ui/search?q={quote(evil)}"):
        page = client.get(path).get_data(as_text=True)
        assert evil not in page and "&lt;script&gt;" in page, path


def test_the_closed_list_shows_labels(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy)
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "abuse", "reason": "wardrobing"}).status_code == 200
    client, _ = signed_in(api, person(api, "sam"))
    page = client.get("/ui/?status=closed&sort=age&limit=500").get_data(as_text=True)
    row = page[page.index(f"/ui/cases/{case_id}"):]
    row = row[:row.index("</tr>")]
    assert '<span class="badge b-abuse">abuse</span>' in row


def test_ids_with_slashes_and_dots_link_to_their_own_pages(api: Api, set_policy: Any) -> None:
    """A token starting with `/` and a customer id such as `../rules` stay one path segment in every link (a
    browser would merge the slashes or resolve the dots of a plainly written one, landing on another page)."""
    from tests.api.test_cases_opened import _assess, _new_identity

    body = _new_identity(api, address_token="/lead/slash.token")
    body["customer_id"] = "../rules"
    _assess(api, set_policy, body, "review")
    client, _ = signed_in(api, person(api, "sam"))
    found = client.get("/ui/search", query_string={"q": "/lead/slash"}).get_data(as_text=True)
    token_link = "/ui/tokens/address/%2Flead%2Fslash%2Etoken"
    assert f'href="{token_link}"' in found
    page = client.get(token_link)
    assert page.status_code == 200 and "/lead/slash.token" in page.get_data(as_text=True)
    customer_link = "/ui/customers/%2E%2E%2Frules"
    assert f'href="{customer_link}' in page.get_data(as_text=True)
    customer = client.get(customer_link)
    assert customer.status_code == 200 and '<h1 class="mono wrap">../rules</h1>' in customer.get_data(as_text=True)
    api_page = api.client.get("/v1/tokens/address/%2Flead%2Fslash%2Etoken", headers=api.headers("analyst"))
    assert api_page.status_code == 200 and api_page.get_json()["id"] == "/lead/slash.token"
