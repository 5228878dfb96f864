"""The core as a view sees it: the service built for this app (`fraud_service.bootstrap.Service`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from fraud_service.bootstrap import Service
from fraud_service.data.contract import MAX_DEPTH, PLAIN_TEXT, text_problem, value_problems
from fraud_service.errors import BadRequest, Problem, RequestInvalid


def core() -> Service:
    """This app's service: units of work, the assessor, settings, the clock."""
    service: Service = current_app.extensions["fraud"]
    return service


def json_body() -> Any:
    """The request's JSON (None when it is not JSON), refused with 422 naming the place when some part of it no
    field could hold (see `contract.value_problems`). orjson reads it in a fraction of `json`'s time; what orjson
    refuses but `json` reads (NaN literals, integers beyond 64 bits, escaped lone surrogates) is read by `json`,
    so validation names the field; nesting too deep for `json` is a 400, and so is a body that is not JSON at all
    (saying where it stops being JSON, or that a number has more digits than Python converts). A body orjson reads
    with no escaped NUL and fewer brackets than the nesting limit has nothing `value_problems` would find, and is
    not walked. A key written twice in one object is a 400 naming it (`refuse_repeated_keys`)."""
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        if not data.strip():
            return None  # no body: the caller says what it needs
        body, utf8 = _read_with_json(data), False
    else:
        if _shallow(data):
            refuse_repeated_keys(data, body)
            return body
        utf8 = True
    problems = value_problems(body)
    if problems:
        raise RequestInvalid([Problem(*p) for p in problems])
    refuse_repeated_keys(data, body, utf8=utf8)  # nests at most MAX_DEPTH levels now
    return body


def plain_object(data: bytes) -> dict[str, Any] | None:
    """DATA's JSON object when orjson reads it and `json_body` would take it as read (`_shallow`, no key written
    twice); else None, and `json_body` says what, if anything, is wrong with it."""
    if not _shallow(data):
        return None
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return body if type(body) is dict and data.count(b'"') <= _quotes(body) else None


def _shallow(data: bytes) -> bool:
    """DATA holds no escaped NUL and fewer brackets than the nesting limit: in what orjson reads of it (it refuses
    lone surrogates, raw control characters and numbers beyond a double) `value_problems` would find nothing."""
    return b"\\u0000" not in data and data.count(b"[") + data.count(b"{") <= MAX_DEPTH


def _read_with_json(data: bytes) -> Any:
    """DATA read by Python's `json` (which takes UTF-16 and UTF-32 too), or BadRequest saying why it cannot be."""
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest(f"the body nests too deeply (at most {MAX_DEPTH} levels)") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start + 1} is not)") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except ValueError:  # an integer of more than 4,300 digits, which Python refuses to convert
        raise BadRequest("the body holds a number of more than 4,300 digits") from None


def refuse_repeated_keys(data: bytes, body: Any, *, utf8: bool = True) -> None:
    """BadRequest naming the first key DATA writes twice in one object: orjson and `json` keep the last value of a
    repeated key, so one value could be checked or logged by one reader and another used by the next. BODY is DATA
    decoded, nesting at most MAX_DEPTH levels. Cheap when nothing repeats (a few microseconds for a 1-2 KB body):
    in UTF-8 JSON a quote byte only opens or closes a key or a text, or is a quote inside one (escaped), so when
    DATA holds no more quote bytes than BODY's keys and texts need, it wrote no key that BODY lost. Otherwise (a
    repeat, a text holding a quote, DATA not UTF-8) DATA is read again with every pair kept, to find the repeat."""
    if utf8 and data.count(b'"') <= _quotes(body):
        return
    place = _first_repeat(json.loads(data, object_pairs_hook=_Pairs), "")
    if place is not None:
        raise BadRequest(f"the body writes the key {place[1][:100]!r} twice in one object (at {place[0][:200]}); "
                         "each key may appear once")


def _quotes(value: Any) -> int:
    """How many quote bytes VALUE's keys and texts take when written as JSON, quotes inside them not counted."""
    kind = type(value)
    if kind is dict:
        count, items = 2 * len(value), value.values()
    elif kind is list:
        count, items = 0, value
    else:
        return 2 if kind is str else 0
    for item in items:
        kind = type(item)
        if kind is str:
            count += 2
        elif kind is dict or kind is list:
            count += _quotes(item)
    return count


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as written: every key and value, in order, repeats kept."""


def _first_repeat(value: Any, where: str) -> tuple[str, str] | None:
    """(place, key) of the first key written twice in one object of VALUE (read with `_Pairs`), or None."""
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            place = f"{where}.{key}" if where else key
            if key in seen:
                return place, key
            seen.add(key)
            if (found := _first_repeat(item, place)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _first_repeat(item, f"{where}[{index}]")) is not None:
                return found
    return None


def json_object(empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object (with EMPTY_OK, an empty body is an empty object), or BadRequest."""
    if empty_ok and not request.get_data(cache=True).strip():  # no body (a chunked one has no content_length)
        return {}
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)"
                         + (" or empty" if empty_ok else ""))
    return body


def who(actor: str) -> dict[str, Any]:
    """The keyword arguments every change takes: who (ACTOR), and when (the app's clock)."""
    return {"actor": actor, "now": core().clock()}


def refuse_unstorable_text() -> None:
    """Before every request: a path segment, query argument or form field with a NUL character or a lone surrogate
    is a 422 naming it (no store could hold it, and PostgreSQL refuses NUL outright)."""
    places = [("path", (request.view_args or {}).items()), ("query", request.args.items(multi=True))]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        places.append(("form", request.form.items(multi=True)))
    problems = []
    for where, pairs in places:
        for key, value in pairs:
            for text, what in ((str(key), "name"), (value, "value")):
                if isinstance(text, str) and (problem := text_problem(text)) is not None:
                    problems.append(Problem(f"{where}.{key!r}" if what == "value" else where, f"its {what} {problem}",
                                            PLAIN_TEXT))
    if problems:
        raise RequestInvalid(problems)


class _AtMost:
    """A chunked body's stream that raises RequestEntityTooLarge once it holds more than LIMIT bytes. werkzeug reads
    such a body through its own stream capped at the limit, which stops there without a word: this one, when the
    limit is reached, looks for one byte more."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._limit, self._seen = stream, limit, 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # never unbounded: a byte past the limit is enough to know
            size = self._limit + 1 - self._seen
        data = self._part(size)
        self._seen += len(data)
        if self._seen > self._limit or (self._seen == self._limit and self._part(1)):
            raise RequestEntityTooLarge(f"the body is over the limit of {self._limit // 1024:,} KiB")
        return data

    def _part(self, size: int) -> bytes:
        try:
            return bytes(self._stream.read(size))
        except Exception as exc:
            # gunicorn's chunk parser: InvalidChunkSize and ChunkMissingTerminator (its ParseException), NoMoreData
            # (an OSError): the client's doing, a 400 (it was a 500 with a traceback in the log)
            if isinstance(exc, OSError) or type(exc).__module__.startswith("gunicorn.http"):
                raise BadRequest(f"the chunked body is malformed or cut short ({exc})") from None
            raise


class ChunkedBodyLimit:
    """WSGI middleware: a body sent without a Content-Length (chunked) over LIMIT bytes is a 413, as one whose
    Content-Length is over it, when the view reads it (a request whose view never reads its body is not held up by
    it). werkzeug cut such a body at the limit: a JSON body over it was answered "not JSON", and one padded with
    spaces past it was taken."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app, self.limit = app, limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("CONTENT_LENGTH") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            environ["wsgi.input"] = _AtMost(environ["wsgi.input"], self.limit)
        return self.app(environ, start_response)
