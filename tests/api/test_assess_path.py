"""`api.assess_path`: ordinary assessments answered before Flask, every other request handed to the app, and the
answers of both the same, word for word. Each request goes to the app as `create_app` builds it and to a second
app over the same service with the path off (`ASSESS_PATH: False`): the view alone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from api.app import create_app
from api.assess_path import ROUTE, AssessPath
from tests.api.conftest import Api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REQUEST_ID = "same-request-id"
VARYING = ("return_id", "assessment_id", "evidence", "assessed_at")  # made afresh for each new assessment


class Pair:
    """The app with the path (`fast`, counting what it hands over) and the app without it (`view`)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.fast: Flask = api.app
        self.view = create_app(api.app.config["SETTINGS"], {"SERVICE": api.service, "TESTING": True,
                                                            "ASSESS_PATH": False})
        assert isinstance(self.fast.wsgi_app, AssessPath) and not isinstance(self.view.wsgi_app, AssessPath)
        self.handed: list[str] = []
        self._inner = self.fast.wsgi_app.inner

        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            self.handed.append(environ["PATH_INFO"])
            return self._inner(environ, start_response)

        self.fast.wsgi_app.inner = counted

    def restore(self) -> None:
        assert isinstance(self.fast.wsgi_app, AssessPath)
        self.fast.wsgi_app.inner = self._inner

    def post(self, app: Flask, path: str = ROUTE, role: str | None = "scoring", **kwargs: Any) -> TestResponse:
        headers = {"X-Request-ID": REQUEST_ID, **kwargs.pop("headers", {})}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.api.keys[role]}"
        return app.test_client().post(path, headers=headers, **kwargs)

    def both(self, **kwargs: Any) -> tuple[TestResponse, TestResponse]:
        """The same request to each app (a replay or a refusal: the answers must be equal)."""
        return self.post(self.fast, **kwargs), self.post(self.view, **kwargs)


@pytest.fixture
def pair(api: Api) -> Iterator[Pair]:
    pair = Pair(api)
    yield pair
    pair.restore()


@pytest.fixture(scope="module")
def source(api: Api) -> str:
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    mail = returns[(returns["channel"] == "mail") & (returns["return_type"] == "return")]
    return str(mail.sort_values("return_id")["return_id"].iloc[0])


def fresh(api: Api, source: str, **changes: Any) -> dict[str, Any]:
    return api.body(source, return_id=f"p-{uuid.uuid4().hex[:12]}", **changes)


def headers_of(response: TestResponse) -> dict[str, str]:
    return dict(response.headers.items())


def same_answer(fast: TestResponse, view: TestResponse) -> None:
    assert (fast.status, headers_of(fast), fast.get_data()) == (view.status, headers_of(view), view.get_data())


def masked(response: TestResponse) -> dict[str, Any]:
    body = json.loads(response.get_data())
    return {key: "*" if key in VARYING else value for key, value in body.items()}


def test_a_new_assessment_is_answered_by_the_path_as_the_view_answers_it(pair: Pair, source: str) -> None:
    fast = pair.post(pair.fast, json=fresh(pair.api, source))
    view = pair.post(pair.view, json=fresh(pair.api, source))
    assert pair.handed == []  # answered by the path, not the app
    assert (fast.status_code, view.status_code) == (201, 201)
    assert masked(fast) == masked(view)
    assert masked(fast)["decision"] in {"approve", "approve_after_inspection", "store_credit_only", "review", "deny"}
    fast_headers, view_headers = headers_of(fast), headers_of(view)
    assert fast_headers.keys() == view_headers.keys()
    assert {k: v for k, v in fast_headers.items() if k not in ("Location", "Content-Length")} == \
        {k: v for k, v in view_headers.items() if k not in ("Location", "Content-Length")}
    assert fast_headers["Location"] == json.loads(fast.get_data())["evidence"]
    assert int(fast_headers["Content-Length"]) == len(fast.get_data())
    assert fast_headers["X-Request-ID"] == REQUEST_ID


def test_a_replay_and_a_conflict_are_answered_alike_by_both(pair: Pair, source: str) -> None:
    body = fresh(pair.api, source)
    assert pair.post(pair.view, json=body).status_code == 201
    fast, view = pair.both(json=body)
    assert fast.status_code == 200 and fast.headers["Idempotent-Replayed"] == "true"
    same_answer(fast, view)
    # the same return id with another body: refused inside the decision, so the path answers it itself
    fast, view = pair.both(json={**body, "refund_amount": body["refund_amount"] + 1})
    assert fast.status_code == 409 and fast.get_json()["error"] == "conflict"
    same_answer(fast, view)
    assert pair.handed == []


def test_an_admin_key_assesses_on_the_path(pair: Pair, source: str) -> None:
    response = pair.post(pair.fast, role="admin", json=fresh(pair.api, source))
    assert response.status_code == 201 and pair.handed == []


REFUSALS: dict[str, dict[str, Any]] = {
    "no key": {"role": None, "json": {}},
    "unknown key": {"role": None, "json": {}, "headers": {"Authorization": "Bearer fsk_" + "0" * 40}},
    "junk key": {"role": None, "json": {}, "headers": {"Authorization": "Bearer not a key"}},
    "an analyst's key": {"role": "analyst", "json": {}},
    "not JSON": {"data": b"{not json", "content_type": "application/json"},
    "not a JSON object": {"json": [1, 2]},
    "a key written twice": {"data": b'{"return_id": "a", "return_id": "b"}', "content_type": "application/json"},
    "a field the contract refuses": {"json": {"return_id": "x"}},
    "text/plain": {"data": b"{}", "content_type": "text/plain"},
    "a query string": {"path": ROUTE + "?x=1", "json": {}},
    "a doubled slash": {"path": "/" + ROUTE, "json": {}},
    "an escaped letter": {"path": "/v1/returns/%61ssess", "json": {}},
    "an empty body": {"data": b"", "content_type": "application/json"},
    "a body over the limit": {"data": b"{" + b" " * (256 * 1024) + b"}", "content_type": "application/json"},
    "an escaped NUL": {"data": b'{"return_id": "a\\u0000"}', "content_type": "application/json"},
    "UTF-16": {"data": '{"return_id": 1}'.encode("utf-16"), "content_type": "application/json"},
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_the_path_does_not_take_the_app_answers_as_without_it(pair: Pair, case: str) -> None:
    fast, view = pair.both(**REFUSALS[case])
    assert fast.status_code >= 400
    same_answer(fast, view)
    assert len(pair.handed) == 1


def test_an_invalid_field_is_refused_by_the_app_naming_it(pair: Pair, source: str) -> None:
    fast, view = pair.both(json=fresh(pair.api, source, refund_amount=-5))
    assert fast.status_code == 422
    assert [p["field"] for p in fast.get_json()["problems"]] == ["refund_amount"]
    same_answer(fast, view)
    assert len(pair.handed) == 1


def test_a_service_that_cannot_score_is_answered_by_the_app(pair: Pair, source: str) -> None:
    service = pair.api.service
    assessor, problems = service.assessor, list(service.problems)
    service.assessor, service.problems[:] = None, ["no production model"]
    try:
        fast, view = pair.both(json=fresh(pair.api, source))
    finally:
        service.assessor, service.problems[:] = assessor, problems
    assert fast.status_code == 503 and fast.headers["Retry-After"] == "5"
    same_answer(fast, view)
    assert len(pair.handed) == 1


class Dropped:
    """A client's body stream that sends DATA, then fails as a socket does when the client is gone or too slow."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        if not self.data:
            raise TimeoutError("the client did not send its whole request in time")
        part, self.data = self.data[:max(size, 1)], self.data[max(size, 1):]
        return part


@pytest.mark.parametrize("failing", [False, True], ids=["stopped", "failed"])
def test_a_body_cut_short_is_handed_over_as_it_came(pair: Pair, failing: bool) -> None:
    data = b'{"return_id": "cut"}'
    answers = []
    for app in (pair.fast, pair.view):
        environ = EnvironBuilder(ROUTE, method="POST", data=data, content_type="application/json", headers={
            "X-Request-ID": REQUEST_ID, "Authorization": f"Bearer {pair.api.keys['scoring']}"}).get_environ()
        environ["CONTENT_LENGTH"] = str(len(data) + 10)  # the client stopped 10 bytes early
        if failing:
            environ["wsgi.input"] = Dropped(data)
        chunks, status, headers = run_wsgi_app(app, environ)
        answers.append((status, dict(headers.items()), b"".join(chunks)))
    assert answers[0] == answers[1]
    assert answers[0][0] == "400 BAD REQUEST"  # werkzeug: the client went away before its body was whole
    assert len(pair.handed) == 1
