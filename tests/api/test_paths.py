"""A view answers only the path its route spells, as the client sent it: other spellings of the same path (leading
slashes, percent-encoded letters or slashes of the route's fixed text) are 404s, so a path-based rule in a proxy
cannot be got round. Requests are handed to the app as gunicorn hands them: the request-target as sent in RAW_URI,
the path percent-decoded in PATH_INFO (`gunicorn.http.wsgi`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from gunicorn.util import split_request_uri, unquote_to_wsgi_str
from werkzeug.exceptions import NotFound
from werkzeug.test import TestResponse

from api.app import create_app

GENERIC = NotFound.description  # werkzeug's words when no route took the path (a view's own 404s say more)
SAMPLES = {"path": "ui.css"}  # a variable's sample value by converter (the static files' `<path:filename>`)


@pytest.fixture
def app(settings: Any) -> Iterator[Flask]:
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["fraud"].close()


def sent(app: Flask, method: str, target: str, **headers: str) -> TestResponse:
    """The answer to METHOD TARGET, TARGET being the request line's target exactly as a client wrote it."""
    parts = split_request_uri(target)
    environ = {"RAW_URI": target, "REQUEST_URI": target, "PATH_INFO": unquote_to_wsgi_str(parts.path),
               "QUERY_STRING": parts.query}
    answer = app.test_client().open("/", method=method, environ_overrides=environ, headers=headers)
    answer.get_data()  # read whole (a static file's), then closed
    answer.close()
    return answer


def unrouted(answer: TestResponse) -> bool:
    return answer.status_code == 404 and answer.get_json() == {"error": "not_found", "message": GENERIC,
                                                              "request_id": answer.headers["X-Request-ID"]}


def respellings(path: str) -> list[str]:
    """PATH written otherwise, each of which a server or framework may read as PATH: a leading slash more, the fixed
    text's first letter percent-encoded, its second slash percent-encoded."""
    out = ["/" + path, "//" + path.lstrip("/")]
    letter = re.search(r"[a-z]", path)
    if letter is not None:
        out.append(f"{path[:letter.start()]}%{ord(letter.group()):02x}{path[letter.end():]}")
    if path.count("/") > 1:
        second = path.index("/", 1)
        out.append(f"{path[:second]}%2F{path[second + 1:]}")
    return out


def test_every_route_answers_its_own_spelling_only(app: Flask) -> None:
    """`GET //healthz` was a 200, and so were `//v1/status`, `/%68ealthz` and `/v1%2Fstatus`; `//metrics` reached
    the metrics view (its 401). Each is now the 404 of a path no route spells, on every route, whatever the method
    (not a 405 saying the path exists)."""
    checked = 0
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "", "x1"), rule.rule)
        method = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})[0]
        assert not unrouted(sent(app, method, path)), (method, path)  # the control: this spelling reaches it
        other = "PATCH" if "PATCH" not in (rule.methods or set()) else "DELETE"
        for respelled in respellings(path):
            for verb in (method, other):
                answer = sent(app, verb, respelled)
                assert unrouted(answer), (verb, respelled, answer.status_code, answer.get_data(as_text=True)[:200])
                checked += 1
    assert checked > 300


@pytest.mark.parametrize(("target", "status"), [
    ("/healthz", 200),
    ("//healthz", 404),
    ("///healthz", 404),
    ("/%68ealthz", 404),
    ("/%2Fhealthz", 404),
    ("/healthz?probe=1", 200),
    ("//healthz?probe=1", 404),
    ("http://127.0.0.1:8000/healthz", 200),  # the absolute form of the request-target
    ("http://127.0.0.1:8000//healthz", 404),
    ("/v1/status", 200),
    ("/v1%2Fstatus", 404),
    ("/%2Fv1/status", 404),
    ("/metrics", 401),
    ("//metrics", 404),
    ("/ui", 308),  # werkzeug sends it on to /ui/, the route
    ("//ui", 404),
    ("/%75i/", 404),
])
def test_a_path_is_answered_only_as_its_route_spells_it(app: Flask, target: str, status: int) -> None:
    answer = sent(app, "GET", target)
    assert answer.status_code == status, answer.get_data(as_text=True)[:200]
    if status == 404:
        assert unrouted(answer)
    if status == 308:
        assert answer.headers["Location"].endswith("/ui/")


def test_ids_in_a_path_still_take_any_escapes(app: Flask) -> None:
    """The variable parts of a route are not its fixed text: a token may start with a slash (`%2F`), hold two in a
    row, or be written with escapes; those reach their view (a 401 here: no key was sent)."""
    for target in ("/v1/customers/%2Fc-1", "/v1/tokens/device/dev%2F%2Fx", "/v1/tokens/device//dev-x",
                   "/v1/customers/%63-1", "/static/%75i.css"):
        answer = sent(app, "GET", target)
        assert not unrouted(answer), target
        assert answer.status_code == (200 if target.startswith("/static/") else 401), target


def test_a_respelled_path_on_an_analyst_page_is_the_error_page_for_a_browser(app: Flask) -> None:
    page = sent(app, "GET", "//ui/login", Accept="text/html")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert sent(app, "GET", "/ui/login", Accept="text/html").status_code == 200
