"""Named queues and the team dashboard through HTTP: who may read and change them (/v1/queues, /v1/dashboard), the
admins' pages (/ui/queues, /ui/dashboard), the queue selector, and the UI recording when a person was last seen."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fraud_service.access.users import present
from fraud_service.cases import oversight
from fraud_service.store.schema import User
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case
from tests.api.test_ui import person, signed_in, token

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DEFINITION = {"filter": {"min_amount": 4_000}, "sla_hours": 6, "cap": 4, "members": []}


def test_analysts_read_queues_admins_change_them_scoring_keys_see_nothing(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy, amount=4_500.0)
    assert api.client.get("/v1/queues", headers=api.headers("scoring")).status_code == 403
    assert api.client.get("/v1/queues").status_code == 401
    assert api.client.put("/v1/queues/api-big", json=DEFINITION, headers=api.headers("analyst")).status_code == 403
    assert api.client.get("/v1/dashboard", headers=api.headers("analyst")).status_code == 403
    saved = api.client.put("/v1/queues/api-big", json=DEFINITION, headers=api.headers("admin"))
    assert saved.status_code == 200
    assert saved.get_json()["filter"] == {"statuses": ["open", "in_review", "escalated"], "min_amount": 4_000.0}
    listed = {q["name"]: q for q in api.client.get("/v1/queues", headers=api.headers("analyst")).get_json()["queues"]}
    assert listed["api-big"]["cases"] >= 1 and listed["api-big"]["sla_hours"] == 6
    held = api.client.get("/v1/queues/api-big/cases?limit=500", headers=api.headers("analyst")).get_json()
    assert case_id in {c["case_id"] for c in held["cases"]}
    assert all(c["amount"] >= 4_000 for c in held["cases"]) and held["total"] == listed["api-big"]["cases"]
    assert api.client.get("/v1/queues/nope/cases", headers=api.headers("analyst")).status_code == 404
    assert api.client.delete("/v1/queues/api-big", headers=api.headers("analyst")).status_code == 403
    assert api.client.delete("/v1/queues/api-big", headers=api.headers("admin")).status_code == 204
    assert api.client.delete("/v1/queues/api-big", headers=api.headers("admin")).status_code == 404


def test_a_bad_definition_names_every_field(api: Api) -> None:
    body = {"filter": {"statuses": ["closed"], "return_type": "swap"}, "sla_hours": -1, "cap": 0,
            "members": ["nobody-here"]}
    bad = api.client.put("/v1/queues/Bad%20Name", json=body, headers=api.headers("admin"))
    assert bad.status_code == 422
    assert {p["field"] for p in bad.get_json()["problems"]} == {"name", "filter.statuses", "filter.return_type",
                                                                "sla_hours", "cap"}
    unknown = api.client.put("/v1/queues/api-members", json={**DEFINITION, "members": ["nobody-here"]},
                             headers=api.headers("admin"))
    assert [p["field"] for p in unknown.get_json()["problems"]] == ["members.nobody-here"]


def test_the_dashboard_answers_what_the_core_computes(api: Api) -> None:
    got = api.client.get("/v1/dashboard?days=7", headers=api.headers("admin"))
    assert got.status_code == 200
    body = got.get_json()
    want = oversight.dashboard(api.service.uow(), days=7, now=dt.datetime.fromisoformat(body["end"])).to_dict()
    assert body == want
    assert len(body["per_day"]) == 8
    assert api.client.get("/v1/dashboard?days=0", headers=api.headers("admin")).status_code == 422


def test_only_admins_open_the_queue_and_dashboard_pages(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy, amount=4_800.0)
    analyst, _ = signed_in(api, person(api, "quinn"))
    assert analyst.get("/ui/queues").status_code == 403
    assert analyst.get("/ui/dashboard").status_code == 403
    admin, csrf = signed_in(api, person(api, "queue-admin", "admin"))
    page = admin.get("/ui/queues")
    assert page.status_code == 200 and "New queue" in page.get_data(as_text=True)
    form = {"csrf_token": csrf, "name": "ui-big", "statuses": ["open", "in_review"], "min_amount": "4000",
            "sla_hours": "8", "cap": "3", "members": ["quinn"]}
    assert admin.post("/ui/queues", data=form).status_code == 302
    assert "ui-big" in admin.get("/ui/queues").get_data(as_text=True)
    saved = {q["name"]: q for q in api.client.get("/v1/queues", headers=api.headers("analyst")).get_json()["queues"]}
    assert (saved["ui-big"]["members"], saved["ui-big"]["cap"], saved["ui-big"]["filter"]["statuses"]) == (
        ["quinn"], 3, ["open", "in_review"])
    bad = admin.post("/ui/queues", data={**form, "sla_hours": "soon", "cap": "0"}, follow_redirects=True)
    assert "sla_hours" in bad.get_data(as_text=True) and "Nothing was saved" in bad.get_data(as_text=True)
    assert analyst.post("/ui/queues", data={**form, "csrf_token": token(analyst.get("/ui/").get_data(as_text=True))}
                        ).status_code == 403
    tabbed = analyst.get("/ui/?queue=ui-big").get_data(as_text=True)
    assert "Queue: ui-big" in tabbed and case_id in tabbed and 'aria-current="page">ui-big' in tabbed
    assert analyst.get("/ui/?queue=missing").status_code == 404
    board = admin.get("/ui/dashboard?days=7").get_data(as_text=True)
    assert "Team dashboard" in board and "ui-big" in board
    assert admin.get("/ui/dashboard?days=%C2%B2").status_code == 200  # '²'.isdigit(), but not int('²'): was a 500
    assert admin.post("/ui/queues/ui-big/remove", data={"csrf_token": csrf}).status_code == 302
    assert "ui-big" not in {q["name"] for q in api.client.get("/v1/queues", headers=api.headers("analyst"))
                            .get_json()["queues"]}


def test_the_ui_records_when_a_person_was_last_seen_and_signing_out_ends_it(api: Api) -> None:
    name = person(api, "seen-sam")
    client, csrf = signed_in(api, name)
    client.get("/ui/")
    with api.service.sessions() as session:
        user = session.get(User, name)
        assert user is not None and user.last_seen_at is not None
        seen_at = user.last_seen_at.replace(tzinfo=dt.UTC)
        assert abs((dt.datetime.now(dt.UTC) - seen_at).total_seconds()) < 120
        assert present(user, dt.datetime.now(dt.UTC), dt.timedelta(minutes=15))
    client.post("/ui/logout", data={"csrf_token": csrf})
    with api.service.sessions() as session:
        user = session.get(User, name)
        assert user is not None and not present(user, dt.datetime.now(dt.UTC), dt.timedelta(minutes=15))
    again, _ = signed_in(api, name)  # a new sign-in counts at once, whatever was cached for the last session
    with api.service.sessions() as session:
        user = session.get(User, name)
        assert user is not None and present(user, dt.datetime.now(dt.UTC), dt.timedelta(minutes=15))


def test_an_admin_held_at_the_enrolment_page_does_not_count_as_signed_in_for_the_assigner(api: Api) -> None:
    """Such an admin can open no case: the queues' assigner must not hand them any (it gives cases to members seen
    lately), however long they stay on the two-factor page."""
    from fraud_service.access.users import create_user

    create_user(api.service.uow(), "held-hal", "admin", "a long enough password", "test")
    client = api.app.test_client()
    page = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"name": "held-hal", "password": "a long enough password",
                                              "csrf_token": token(page)})
    assert response.headers["Location"] == "/ui/two-factor"
    assert client.get("/ui/").headers["Location"] == "/ui/two-factor"
    assert client.get("/ui/two-factor").status_code == 200
    with api.service.sessions() as session:
        user = session.get(User, "held-hal")
        assert user is not None and user.last_seen_at is None
        assert not present(user, dt.datetime.now(dt.UTC), dt.timedelta(minutes=15))
