"""`api.assess_path`: ordinary assessments answered before Flask, every other request handed to the app, and the
answers of both the same, word for word. Each request goes to the app as `create_app` builds it and to a second
app over the same service with the path off (`ASSESS_PATH: False`): the view alone."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from api.app import create_app
from api.assess_path import ROUTE, AssessPath
from fraud_service.errors import CommitUnconfirmed, DatabaseDown
from tests.api.conftest import Api, fresh

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REQUEST_ID = "same-request-id"
VARYING = ("return_id", "assessment_id", "evidence", "assessed_at")  # made afresh for each new assessment


class Pair:
    """The app with the path (`fast`, counting what it hands over) and the app without it (`view`)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.fast: Flask = api.app
        watch = api.service.watch
        self._on_swap = watch.on_swap if watch is not None else None  # create_app points it at its own gauge
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
        if self.api.service.watch is not None:
            self.api.service.watch.on_swap = self._on_swap

    def post(self, app: Flask, path: str = ROUTE, role: str | None = "scoring", client: FlaskClient | None = None,
             **kwargs: Any) -> TestResponse:
        headers = {"X-Request-ID": REQUEST_ID, **kwargs.pop("headers", {})}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.api.keys[role]}"
        return (client or app.test_client()).post(path, headers=headers, **kwargs)

    def both(self, **kwargs: Any) -> tuple[TestResponse, TestResponse]:
        """The same request to each app (a replay or a refusal: the answers must be equal)."""
        return self.post(self.fast, **kwargs), self.post(self.view, **kwargs)


@pytest.fixture
def pair(api: Api) -> Iterator[Pair]:
    pair = Pair(api)
    yield pair
    pair.restore()


def headers_of(response: TestResponse) -> dict[str, str]:
    return dict(response.headers.items())


def same_answer(fast: TestResponse, view: TestResponse) -> None:
    """Status, headers (in the order sent) and bytes alike."""
    assert (fast.status, list(fast.headers.items()), fast.get_data()) == \
        (view.status, list(view.headers.items()), view.get_data())


def masked(response: TestResponse) -> dict[str, Any]:
    body = json.loads(response.get_data())
    return {key: "*" if key in VARYING else value for key, value in body.items()}


def test_a_new_assessment_is_answered_by_the_path_as_the_view_answers_it(pair: Pair, source_return: str) -> None:
    fast = pair.post(pair.fast, json=fresh(pair.api, source_return))
    view = pair.post(pair.view, json=fresh(pair.api, source_return))
    assert pair.handed == []  # answered by the path, not the app
    assert (fast.status_code, view.status_code) == (201, 201)
    assert masked(fast) == masked(view)
    assert masked(fast)["decision"] in {"approve", "approve_after_inspection", "store_credit_only", "review", "deny"}
    fast_headers, view_headers = headers_of(fast), headers_of(view)
    assert list(fast_headers) == list(view_headers)  # the same headers in the same order
    assert {k: v for k, v in fast_headers.items() if k not in ("Location", "Content-Length")} == \
        {k: v for k, v in view_headers.items() if k not in ("Location", "Content-Length")}
    assert fast_headers["Location"] == json.loads(fast.get_data())["evidence"]
    assert int(fast_headers["Content-Length"]) == len(fast.get_data())
    assert fast_headers["X-Request-ID"] == REQUEST_ID


def test_a_replay_and_a_conflict_are_answered_alike_by_both(pair: Pair, source_return: str) -> None:
    body = fresh(pair.api, source_return)
    assert pair.post(pair.view, json=body).status_code == 201
    fast, view = pair.both(json=body)
    assert fast.status_code == 200 and fast.headers["Idempotent-Replayed"] == "true"
    same_answer(fast, view)
    # the same return id with another body: refused inside the decision, so the path answers it itself
    fast, view = pair.both(json={**body, "refund_amount": body["refund_amount"] + 1})
    assert fast.status_code == 409 and fast.get_json()["error"] == "conflict"
    same_answer(fast, view)
    assert pair.handed == []


def test_an_admin_key_assesses_on_the_path(pair: Pair, source_return: str) -> None:
    response = pair.post(pair.fast, role="admin", json=fresh(pair.api, source_return))
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


def test_an_invalid_field_is_refused_by_the_app_naming_it(pair: Pair, source_return: str) -> None:
    fast, view = pair.both(json=fresh(pair.api, source_return, refund_amount=-5))
    assert fast.status_code == 422
    assert [p["field"] for p in fast.get_json()["problems"]] == ["refund_amount"]
    same_answer(fast, view)
    assert len(pair.handed) == 1


def test_a_service_that_cannot_score_is_answered_by_the_app(pair: Pair, source_return: str) -> None:
    service = pair.api.service
    assessor, problems = service.assessor, list(service.problems)
    service.assessor, service.problems[:] = None, ["no production model"]
    try:
        fast, view = pair.both(json=fresh(pair.api, source_return))
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


@pytest.mark.parametrize("how", ["stopped", "failed", "stopped, input terminated"])
def test_a_body_cut_short_is_handed_over_as_it_came(pair: Pair, how: str) -> None:
    data = b'{"return_id": "cut"}'
    answers = []
    for app in (pair.fast, pair.view):
        environ = EnvironBuilder(ROUTE, method="POST", data=data, content_type="application/json", headers={
            "X-Request-ID": REQUEST_ID, "Authorization": f"Bearer {pair.api.keys['scoring']}"}).get_environ()
        environ["CONTENT_LENGTH"] = str(len(data) + 10)  # the client stopped 10 bytes early
        if how == "failed":
            environ["wsgi.input"] = Dropped(data)
        if how.endswith("terminated"):  # as gunicorn marks its input: werkzeug reads to the end of the stream
            environ["wsgi.input_terminated"] = True
        chunks, status, headers = run_wsgi_app(app, environ)
        answers.append((status, list(headers.items()), b"".join(chunks)))
    assert answers[0] == answers[1]
    # werkzeug: the client went away before its body was whole; or, the input marked terminated, the body as it
    # came, which lacks the contract's fields
    assert answers[0][0] == ("422 UNPROCESSABLE ENTITY" if how.endswith("terminated") else "400 BAD REQUEST")
    assert len(pair.handed) == 1


@pytest.mark.parametrize("content_type", ["application/json\xa0", "\xa0application/json", "application/json\x85",
                                          "APPLICATION/JSON\xa0; charset=utf-8"])
def test_a_media_type_werkzeug_does_not_read_as_json_is_the_apps_to_refuse(pair: Pair, source_return: str,
                                                                           content_type: str) -> None:
    """Python's `str.strip` takes a no-break space or NEL off `application/json`; werkzeug does not, so the app
    refuses such a body as not JSON. The path assessed it (a helper's review found it)."""
    body = fresh(pair.api, source_return)
    fast, view = pair.both(data=json.dumps(body), content_type=content_type)
    assert fast.status_code == 400
    same_answer(fast, view)
    assert pair.handed == [ROUTE]


def test_a_request_with_a_session_cookie_is_the_apps(pair: Pair, source_return: str) -> None:
    """The app renews a signed-in person's session in every answer (Set-Cookie, Vary: Cookie)."""
    body = fresh(pair.api, source_return)
    assert pair.post(pair.view, json=body).status_code == 201
    signer = pair.fast.session_interface.get_signing_serializer(pair.fast)  # type: ignore[attr-defined]
    cookie = signer.dumps({"user": "someone", "since": dt.datetime.now(dt.UTC).isoformat(), "_permanent": True})
    answers = []
    for app in (pair.fast, pair.view):
        client = app.test_client()
        client.set_cookie("fraud_session", cookie)
        answers.append(pair.post(app, json=body, client=client))
    assert "Set-Cookie" in answers[0].headers
    same_answer(*answers)
    assert pair.handed == [ROUTE]


def test_a_content_length_of_other_digits_is_the_apps(pair: Pair) -> None:
    """'²' is a digit to `str.isdigit` and not to `int` (gunicorn refuses such a header; another server may not)."""
    answers = []
    for app in (pair.fast, pair.view):
        environ = EnvironBuilder(ROUTE, method="POST", data=b'{"a": 1}', content_type="application/json", headers={
            "X-Request-ID": REQUEST_ID, "Authorization": f"Bearer {pair.api.keys['scoring']}"}).get_environ()
        environ["CONTENT_LENGTH"] = "\u00b2"
        chunks, status, headers = run_wsgi_app(app, environ)
        answers.append((status, list(headers.items()), b"".join(chunks)))
    assert answers[0] == answers[1] and answers[0][0].startswith("4")


FAULTS = {
    "unexpected": RuntimeError("boom"),
    "database down": DatabaseDown("the evidence database cannot be reached"),
    "commit unconfirmed": CommitUnconfirmed("the commit was not confirmed"),
    "an HTTP error": ServiceUnavailable("later"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_in_the_decision_is_answered_as_the_app_answers_it(pair: Pair, source_return: str, fault: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence write fails (injected): the path answers it itself, with the app's status, body and headers."""
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise FAULTS[fault]

    monkeypatch.setattr(pair.api.service.assessor.writer, "store", fail)
    fast, view = pair.both(json=fresh(pair.api, source_return))
    assert fast.status_code == {"unexpected": 500, "an HTTP error": 503}.get(fault, 503)
    same_answer(fast, view)
    assert pair.handed == []


def test_the_key_store_down_is_answered_as_the_app_answers_it(pair: Pair, source_return: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def down(presented: str) -> Any:
        raise DatabaseDown("the evidence database cannot be reached")

    pair.fast.extensions["key_cache"], pair.view.extensions["key_cache"] = {}, {}
    monkeypatch.setattr(pair.api.service, "authenticate", down)
    fast, view = pair.both(json=fresh(pair.api, source_return))
    assert fast.status_code == 503 and fast.headers["Retry-After"] == "5"
    same_answer(fast, view)
    assert pair.handed == []


def test_the_path_stands_in_for_every_hook_the_app_runs(api: Api) -> None:
    """A hook added to the app (a rate limit, a header, a check) would not run for the requests the path answers.
    This names the app-wide hooks the path stands in for (request id and log line, latency, exact path, unstorable
    text: nothing in an ordinary assessment's path or query; page headers) and fails when they change, so that the
    path changes with them."""
    app = api.app
    assert [f.__qualname__ for f in app.before_request_funcs[None]] == [
        "install.<locals>._start", "install.<locals>._request_id", "install.<locals>.<lambda>",
        "refuse_unstorable_text"]
    assert [f.__qualname__ for f in app.after_request_funcs[None]] == [
        "install.<locals>._observe", "install.<locals>._log", "_page_headers"]
    assert not app.teardown_request_funcs and not app.url_value_preprocessors
    assert [f.__qualname__ for f in app.before_request_funcs.get("returns", [])] == []
    assert type(app.wsgi_app).__name__ == "AssessPath"
    assert type(app.wsgi_app.inner).__name__ == "ChunkedBodyLimit"  # type: ignore[attr-defined]
