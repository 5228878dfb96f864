"""`POST /v1/returns/assess` for an ordinary request, answered before Flask builds its request and response.

An assessment is the service's one hot path. Flask's part of it (the request and response objects, the
contexts, routing, the hooks every request runs) cost 0.7 to 1.0 ms of CPU beside 1.1 to 1.4 ms of
scoring (docs/api.md). Here a request that is plainly fine up to the decision is answered with the same steps
the view takes (`returns.decide`, `returns.answer`), the same key check (`auth.verify`), log line, metrics,
request id and headers. Anything else is handed to the app untouched but for its body, already read: another
method, a path not spelled exactly `/v1/returns/assess`, a query string, a body that is not JSON, a chunked
body or one over the limit, a cookie (the app renews a person's session), a key that is missing, unknown or of
another role, a body orjson does not read or that needs a closer look (`core.plain_object`), a request the
contract refuses, a service not ready to score. The app then answers it as it answers every request, errors
included, so they stay the app's in every word. Once the decision is under way nothing is handed over (its
evidence may be written): its errors are answered here, with the bodies and headers the app's handlers give
(`errors.json_error`), the headers in the app's order.

`create_app(test_config={"ASSESS_PATH": False})` turns this path off; the tests run the same requests through
both and compare the answers.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header

from api import errors, logs, returns
from api.auth import verify
from api.core import plain_object
from api.paths import sent_path
from api.ui import PAGE_HEADERS
from fraud_service.errors import NotReady, RequestInvalid
from fraud_service.scoring.request import parse_request

ROUTE = "/v1/returns/assess"
_ROLES = ("scoring", "admin")  # the view's `requires("scoring")`: admin keys may do everything
_PAGE_HEADERS = list(PAGE_HEADERS.items())

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class AssessPath:
    """WSGI middleware: ordinary assessments are answered here, everything else by APP (its `wsgi_app`, INNER)."""

    def __init__(self, app: Flask, inner: Wsgi) -> None:
        self.app, self.inner = app, inner

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != ROUTE
                or environ.get("QUERY_STRING") or sent_path(environ) != ROUTE):
            return self.inner(environ, start_response)
        started = time.perf_counter()
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            principal = self._principal(environ)
        except Exception as exc:  # the key store cannot be read: answered as the app answers it
            return self._failed(start_response, exc, request_id, None, started)
        length = self._length(environ) if principal is not None else None
        if principal is None or length is None:
            return self.inner(environ, start_response)
        data, cut = self._body(environ, length)
        body = plain_object(data) if cut is None and len(data) == length else None
        if body is None:
            environ["wsgi.input"] = io.BytesIO(data) if cut is None else _Cut(data, cut)
            return self.inner(environ, start_response)
        try:
            parsed = parse_request(body, dt.datetime.now(dt.UTC))
            assessor = self.app.extensions["fraud"].require_assessor()
        except (RequestInvalid, NotReady):
            environ["wsgi.input"] = io.BytesIO(data)
            return self.inner(environ, start_response)
        try:
            outcome = returns.decide(assessor, parsed, body, principal, self.app.extensions["metrics"])
            answer, status, headers = returns.answer(outcome)
        except Exception as exc:
            return self._failed(start_response, exc, request_id, principal.key_id, started)
        return self._answered(start_response, status, answer, headers, request_id, principal.key_id, started)

    def _failed(self, start_response: StartResponse, exc: Exception, request_id: str, key_id: str | None,
                started: float) -> Iterable[bytes]:
        """The answer the app's error handlers give to EXC."""
        status, payload, extra = errors.json_error(exc, request_id)
        answer = self.app.json.response(payload).get_data()
        return self._answered(start_response, status, answer, list(extra.items()), request_id, key_id, started)

    def _answered(self, start_response: StartResponse, status: int, answer: bytes, headers: list[tuple[str, str]],
                  request_id: str, key_id: str | None, started: float) -> Iterable[bytes]:
        """ANSWER sent with the app's headers, in its order, logged and counted as the app logs and counts."""
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(answer))), *headers, *_PAGE_HEADERS,
            ("X-Request-ID", request_id)])
        logs.log_request(request_id, "POST", ROUTE, status, started, key_id)
        self.app.extensions["metrics"].observed("POST", ROUTE, status, started)
        return [answer]

    def _length(self, environ: dict[str, Any]) -> int | None:
        """The body's stated length when the path takes the request: stated in ASCII digits, within the limit, JSON
        as werkzeug reads the media type, and no cookie (the app would renew a person's session in its answer)."""
        text = environ.get("CONTENT_LENGTH") or ""
        if not (text.isascii() and text.isdigit()) or "HTTP_TRANSFER_ENCODING" in environ or "HTTP_COOKIE" in environ \
                or parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower() != "application/json":
            return None
        length = int(text)
        return length if 0 < length <= self.app.config["MAX_CONTENT_LENGTH"] else None

    @staticmethod
    def _body(environ: dict[str, Any], length: int) -> tuple[bytes, Exception | None]:
        """The body as far as it came (short when the client stopped sending: werkzeug reads the same, and the app
        says what it says of it), and the error that cut it short, if one did."""
        stream, wanted, parts = environ["wsgi.input"], length, []
        try:
            while wanted > 0:
                part = stream.read(wanted)
                if not part:
                    break
                parts.append(part)
                wanted -= len(part)
        except (OSError, ValueError) as exc:  # gunicorn's NoMoreData, the worker's deadline (TimeoutError)
            return b"".join(parts), exc
        return b"".join(parts), None

    def _principal(self, environ: dict[str, Any]) -> Any:
        """The key's principal when it may assess, else None."""
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        principal = verify(self.app, presented.strip())
        return principal if principal is not None and principal.role in _ROLES else None


class _Cut:
    """The stream of a body whose reading failed: what was read, then the same error, for the app to answer."""

    def __init__(self, data: bytes, error: Exception) -> None:
        self._data, self._error = data, error

    def read(self, size: int | None = -1) -> bytes:
        if not self._data:
            raise self._error
        part = self._data if size is None or size < 0 else self._data[:size]
        self._data = self._data[len(part):]
        return part


def install(app: Flask) -> None:
    """Answer ordinary assessments of APP here (unless its config says `ASSESS_PATH: False`)."""
    if app.config.get("ASSESS_PATH", True):
        app.wsgi_app = AssessPath(app, app.wsgi_app)  # type: ignore[method-assign]
