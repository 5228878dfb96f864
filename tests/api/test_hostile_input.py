"""Input an attacker would send never reaches a 500: nesting, NaN, NUL, lone surrogates, times at the ends of the
calendar, huge offsets, CR/LF in a redirect target; on SQLite and on PostgreSQL (where NUL is refused by the
server itself, and used to fail every request of the same group commit)."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import pytest

from tests.api.conftest import Api


@pytest.fixture
def body(api: Api) -> dict[str, Any]:
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    return api.body(str(returns["return_id"].iloc[5]), return_id=f"h-{uuid.uuid4().hex[:12]}")


def post_raw(api: Api, text: str) -> Any:
    return api.client.post("/v1/returns/assess", data=text.encode("utf-8", "surrogatepass"),
                           content_type="application/json", headers=api.headers("scoring"))


@pytest.mark.parametrize(("text", "words"), [
    ('{"return_id": "x", "refund_amount": ' + "9" * 5000 + "}", "a number of more than 4,300 digits"),
    ('{"return_id": "x",}', "the body is not JSON: Expecting property name enclosed in double quotes at line 1"),
    ("{'return_id': 'x'}", "the body is not JSON"),
    ('{"return_id": "\xff"}', "the body is not UTF-8 (byte 16 is not)"),
])
def test_a_body_that_is_not_json_says_why_not_that_it_is_no_object(api: Api, text: str, words: str) -> None:
    """A 5,000-digit number or a trailing comma was answered 'the body must be a JSON object'."""
    for path, role in (("/v1/returns/assess", "scoring"), ("/v1/lists", "admin")):
        response = api.client.post(path, data=text.encode("latin-1"), content_type="application/json",
                                   headers=api.headers(role))
        assert response.status_code == 400 and words in response.get_json()["message"], response.get_json()


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
def test_deeply_nested_bodies_are_refused_not_crashed(api: Api, body: dict[str, Any], depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for text in (nested, '{"return_id": "x", "extra": ' + nested + "}"):
        response = post_raw(api, text)
        assert response.status_code in (400, 422), response.get_data(as_text=True)[:300]
        assert "nest" in response.get_json()["message"] + str(response.get_json().get("problems"))


def test_nan_inside_an_extra_field_is_named(api: Api, body: dict[str, Any]) -> None:
    import json

    text = json.dumps({**body, "extra": {"weight": float("nan")}})
    response = post_raw(api, text)
    assert response.status_code == 422
    assert {"field": "extra.weight", "problem": "got nan", "expected": "a finite number"} in \
        response.get_json()["problems"]


@pytest.mark.parametrize("place", ["return_id", "customer_id", "reason", "order.payment_token",
                                   "order.items[0].sku", "extra"])
@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800"])
def test_nul_and_lone_surrogates_are_422_naming_the_field(api: Api, body: dict[str, Any], place: str,
                                                          bad: str) -> None:
    import json

    marker = "@@BAD@@"
    target: Any = {**body, "order": {**body["order"], "items": [dict(i) for i in body["order"]["items"]]}}
    if place == "extra":
        target["extra"] = marker
    elif place.startswith("order.items"):
        target["order"]["items"][0]["sku"] = f"a{marker}b"
    elif place.startswith("order."):
        target["order"][place.split(".")[1]] = f"a{marker}b"
    else:
        target[place] = f"a{marker}b"
    response = post_raw(api, json.dumps(target).replace(marker, bad))
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert [p["field"] for p in response.get_json()["problems"]] == [place]


def test_a_bad_request_does_not_fail_a_good_one_sent_with_it(api: Api, body: dict[str, Any]) -> None:
    bad = post_raw(api, '{"return_id": "nul\\u0000id"}')
    assert bad.status_code == 422
    good = api.assess(body)
    assert good.status_code == 201, good.get_json()


@pytest.mark.parametrize("when", ["1600-01-01T00:00:00Z", "1677-12-31T23:59:59Z", "2262-01-01T00:00:00Z"])
def test_times_the_features_cannot_hold_are_refused_as_out_of_range(api: Api, body: dict[str, Any],
                                                                     when: str) -> None:
    """A year before 1678 was assessed (201) and then failed the live-fact writer's nanosecond timestamps, which
    dropped the other returns of its batch from the live features; it is a 422, as in a dataset."""
    for changed in ({**body, "requested_at": when, "order": {**body["order"], "placed_at": when}},
                    {**body, "order": {**body["order"], "placed_at": when}}):
        response = api.client.post("/v1/returns/assess", json=changed, headers=api.headers("scoring"))
        assert response.status_code == 422, response.get_json()
        problems = response.get_json()["problems"]
        assert any(p["expected"] == "a time in the years 1678 to 2261 (UTC)" for p in problems), problems
    inspection = api.client.post(f"/v1/returns/{body['return_id']}/inspection",
                                 json={"inspected_at": when, "outcome": "ok"}, headers=api.headers("scoring"))
    assert inspection.status_code == 422 and "1678 to 2261" in str(inspection.get_json()), inspection.get_json()


@pytest.mark.parametrize(("when", "edge"), [("0001-01-01T00:30:00+01:00", "before the first"),
                                            ("9999-12-31T23:30:00-01:00", "after the last")])
def test_times_beyond_the_calendar_in_utc_are_named(api: Api, body: dict[str, Any], when: str, edge: str) -> None:
    response = api.client.post("/v1/returns/assess", json={**body, "requested_at": when},
                               headers=api.headers("scoring"))
    assert response.status_code == 422
    assert any(p["field"] == "requested_at" for p in response.get_json()["problems"])
    from fraud_service.data.contract import utc_instant
    from fraud_service.errors import TimeOutOfRange

    with pytest.raises(TimeOutOfRange, match=f"is {edge} time in UTC"):  # a time after 9999 said "before"
        utc_instant(when)


@pytest.mark.parametrize("invisible", ["\u034f", "\ufe0f", "\U000e0100", "\u3164", "\u115f", "\uffa0", "\u180b"])
def test_an_id_with_a_character_that_shows_as_nothing_is_refused(api: Api, body: dict[str, Any],
                                                                  invisible: str) -> None:
    """Unicode's default-ignorable characters outside the control and format categories (a combining grapheme
    joiner, variation selectors, Hangul fillers): a blocked `C-BL7` followed by one passed the block list."""
    entry = {"entity": "customer", "value": "C-BL7" + invisible, "list": "block", "reason": "ring"}
    listed = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
    assert listed.status_code == 422 and listed.get_json()["problems"][0]["field"] == "value"
    response = api.client.post("/v1/returns/assess", json={**body, "customer_id": "C-BL7" + invisible},
                               headers=api.headers("scoring"))
    assert response.status_code == 422
    [problem] = response.get_json()["problems"]
    assert problem["field"] == "customer_id" and problem["problem"].startswith(f"holds U+{ord(invisible):04X}")


@pytest.mark.parametrize("blank", ["\u200b\u200b\u2060", "\u3164", " \u034f "])
def test_free_text_that_shows_nothing_is_refused_like_blank_text(api: Api, body: dict[str, Any], blank: str) -> None:
    """Notes and appeals of zero-width characters were stored (201, 200) where spaces alone were 422: an
    appeal nobody can read moved its case to the top of the queue."""
    answer = api.client.post("/v1/returns/assess", json=body, headers=api.headers("scoring"))
    assert answer.status_code == 201
    appealed = api.client.post(f"/v1/assessments/{answer.get_json()['assessment_id']}/appeal",
                               json={"message": blank}, headers=api.headers())
    assert appealed.status_code == 422
    assert appealed.get_json()["problems"][0]["field"] == "message"
    entry = {"entity": "device", "value": "dev-x", "list": "block", "reason": blank}
    listed = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
    assert listed.status_code == 422 and listed.get_json()["problems"][0] == {
        "field": "reason", "problem": f"got {blank!r}",
        "expected": "text that shows something (not only spaces or invisible characters)"}


@pytest.mark.parametrize("control", ["\u202e", "\u2066", "\u202b"])
def test_free_text_that_reorders_how_it_shows_is_refused(api: Api, body: dict[str, Any], control: str) -> None:
    """An appeal or a list reason with a right-to-left override showed an analyst another text than was written
    (`refund \u202elanigiro` reads `refund original`). Right-to-left writing itself is taken."""
    answer = api.client.post("/v1/returns/assess", json=body, headers=api.headers("scoring"))
    assessment = answer.get_json()["assessment_id"]
    appealed = api.client.post(f"/v1/assessments/{assessment}/appeal", json={"message": f"refund {control}lanigiro"},
                               headers=api.headers())
    assert appealed.status_code == 422
    assert appealed.get_json()["problems"][0] == {
        "field": "message", "problem": f"got 'refund \\u{ord(control):04x}lanigiro'",  # the control shown escaped
        "expected": "text without bidirectional controls (U+202A-U+202E, U+2066-U+2069), which reorder how it shows"}
    entry = {"entity": "device", "value": f"dev-{uuid.uuid4().hex[:8]}", "list": "block", "reason": f"ring {control}x"}
    listed = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
    assert listed.status_code == 422
    assert listed.get_json()["problems"][0]["field"] == "reason"
    assert "bidirectional controls" in listed.get_json()["problems"][0]["expected"]
    assert api.client.post("/v1/lists", json={**entry, "reason": "טבעת הונאה"},  # Hebrew, right to left
                           headers=api.headers("admin")).status_code == 201
    import datetime as dt

    inspected = api.client.post(f"/v1/returns/{body['return_id']}/inspection", headers=api.headers(), json={
        "inspected_at": dt.datetime.now(dt.UTC).isoformat(), "outcome": "ok", "notes": f"box {control}kao"})
    assert inspected.status_code == 422  # an inspector's notes, shown to analysts, were taken
    assert inspected.get_json()["problems"][0]["field"] == "notes"


def test_a_huge_queue_offset_is_422(api: Api) -> None:
    response = api.client.get("/v1/cases?offset=" + "9" * 24, headers=api.headers("analyst"))
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["field"] == "offset"


@pytest.mark.parametrize("path", ["/v1/cases/cas%00x", "/v1/assessments/asm%00x", "/v1/cases?reason=a%00b"])
def test_nul_in_a_path_or_query_is_422(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.headers("analyst"))
    assert response.status_code == 422
    assert "NUL" in response.get_json()["problems"][0]["problem"]


def test_nul_on_an_analyst_page_is_a_422_page_for_a_browser(api: Api) -> None:
    page = api.client.get("/ui/search?q=a%00b", headers={"Accept": "text/html"})
    assert page.status_code == 422 and page.mimetype == "text/html"
    assert "query.&#39;q&#39;: its value contains a NUL character" in page.get_data(as_text=True)
    script = api.client.get("/ui/search?q=a%00b", headers={"Accept": "application/json"})  # not a browser: JSON
    assert script.status_code == 422 and script.get_json()["problems"][0]["field"] == "query.'q'"


def test_nul_in_notes_list_entries_and_assignees_is_422(api: Api) -> None:
    entry = {"entity": "device", "value": "dev\u0000x", "list": "block", "reason": "ring"}
    listed = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
    assert listed.status_code == 422 and listed.get_json()["problems"][0]["field"] == "value"
    removed = api.client.delete("/v1/lists/device/" + "x" * 500, headers=api.headers("admin"))
    assert removed.status_code == 404
    assigned = api.client.post("/v1/cases/cas_x/assign", json={"assignee": "ana\u0000"},
                               headers=api.headers("analyst"))
    assert assigned.status_code == 422


@pytest.mark.parametrize("target", ["/ui/%0d%0aSet-Cookie:x=y", "/ui/\r\nLocation: //evil", "//evil.example/ui/"])
def test_a_sign_in_target_with_cr_lf_or_another_host_is_ignored(api: Api, target: str) -> None:
    from fraud_service.access.users import create_user
    from fraud_service.store.schema import User

    with api.service.sessions() as session:
        exists = session.get(User, "hostile") is not None
    if not exists:
        create_user(api.service.uow(), "hostile", "analyst", "a long enough password", "test")
    assert api.client.get("/ui/login", query_string={"next": target}).status_code == 200
    client = api.app.test_client()
    client.get("/ui/login")
    with client.session_transaction() as session:
        session["csrf"] = csrf = "fixed-token-for-the-test"
    response = client.post("/ui/login", data={"name": "hostile", "password": "a long enough password",
                                              "next": target, "csrf_token": csrf})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert "\r" not in location and "\n" not in location and "evil" not in location
    assert location == ("/ui/" if ("\n" in target or not target.startswith("/ui/")) else target)


def test_nul_in_a_body_with_more_brackets_than_the_nesting_limit_is_named(api: Api, body: dict[str, Any]) -> None:
    """A body of many lines is walked in full (only small bodies with no escaped NUL skip the walk)."""
    import json

    lines = [{**body["order"]["items"][0], "line_no": n + 1} for n in range(40)]
    lines[-1]["sku"] = "a@@BAD@@b"
    text = json.dumps({**body, "order": {**body["order"], "items": lines}}).replace("@@BAD@@", "\\u0000")
    response = post_raw(api, text)
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert [p["field"] for p in response.get_json()["problems"]] == ["order.items[39].sku"]


def _repeating(body: dict[str, Any], place: str, lines: int = 1) -> str:
    """BODY as JSON text with the key at PLACE written twice: first a value of its own, then BODY's (which both
    JSON readers kept: the last value won)."""
    import json

    marker = "@@REPEAT@@"
    items = [{**body["order"]["items"][0], "line_no": n + 1} for n in range(lines)]
    target: Any = {**body, "order": {**body["order"], "items": items}}
    *parents, key = place.replace("[0]", ".0").split(".")
    holder = target
    for part in parents:
        holder = holder[int(part)] if part.isdigit() else holder[part]
    kept = json.dumps(holder[key])
    holder[key] = marker
    return json.dumps(target).replace(f'"{marker}"', f'"first-{uuid.uuid4().hex[:6]}", "{key}": {kept}')


@pytest.mark.parametrize(("place", "lines", "encoding"), [
    ("return_id", 1, "utf-8"),
    ("customer_id", 1, "utf-8"),
    ("order.payment_token", 1, "utf-8"),
    ("order.items[0].sku", 1, "utf-8"),
    ("order.items[0].sku", 40, "utf-8"),  # more brackets than the nesting limit: the walked path
    ("refund_token", 1, "utf-16"),  # read by Python's json, not orjson
])
def test_a_key_written_twice_is_400_naming_it_and_nothing_is_assessed(api: Api, body: dict[str, Any], place: str,
                                                                        lines: int, encoding: str) -> None:
    """`{"return_id": "a", "return_id": "b", ...}` was assessed as "b" (the last value won): one reader of the text
    (a proxy, a log, the returns platform's own check) could see one value and the service use another."""
    text = _repeating(body, place, lines)
    response = api.client.post("/v1/returns/assess", data=text.encode(encoding), content_type="application/json",
                               headers=api.headers("scoring"))
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    assert set(answer) == {"error", "message", "request_id"} and answer["error"] == "bad_request"
    key = place.rsplit(".", 1)[-1]
    assert answer["message"] == (f"the body writes the key {key!r} twice in one object (at {place}); "
                                 "each key may appear once")
    assert api.assess(body).status_code == 201  # the return was not assessed: its first assessment is this one


@pytest.mark.parametrize("written", [
    '{"return_id": "a", "return_id": "b"}',  # the issue's own
    '{"return_id" : "a",\n  "return_id"\t:\r\n"b"}',  # spaces before the colon
    '{"return_id": "a", "\\u0072eturn_id": "b"}',  # the same key, escaped
])
def test_a_key_written_twice_in_any_form_is_400(api: Api, written: str) -> None:
    response = post_raw(api, written)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["message"].startswith("the body writes the key 'return_id' twice in one object")


def test_a_key_written_twice_is_400_on_every_json_endpoint(api: Api) -> None:
    """Every body passes through one reader (`api.core.json_body`): the lists, as one more endpoint."""
    value = f"dup-{uuid.uuid4().hex[:8]}"
    text = ('{"entity": "device", "value": "' + value + '", "list": "allow", "reason": "regular", '
            '"list": "block"}')
    response = api.client.post("/v1/lists", data=text, content_type="application/json", headers=api.headers("admin"))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["message"] == ("the body writes the key 'list' twice in one object (at list); "
                                              "each key may appear once")
    listed = api.client.get("/v1/lists", headers=api.headers("analyst")).get_json()["entries"]
    assert [e for e in listed if e["value"] == value] == []


def test_quotes_and_colons_inside_text_are_no_repeat(api: Api) -> None:
    """A text holding `\\":` looks like one more key to the quick count: the body is read again, and is taken."""
    import json

    value = f"quoted-{uuid.uuid4().hex[:8]}"
    entry = {"entity": "device", "value": value, "list": "block", "reason": 'said "no": twice, "then": yes'}
    response = api.client.post("/v1/lists", data=json.dumps(entry, indent=2), content_type="application/json",
                               headers=api.headers("admin"))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["reason"] == 'said "no": twice, "then": yes'
