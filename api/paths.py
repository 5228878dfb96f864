"""Exact paths: a view answers only a path that spells its route's fixed text as the route does.

werkzeug drops a path's leading slashes before it routes (`//healthz` answered as `/healthz`), and the WSGI
server percent-decodes the path first (`/%68ealthz`, `/v1%2Fstatus`, `/%2Fmetrics` reached their views too). A
proxy in front that allows or refuses by path sees the path as sent, so each of those spellings could get past
a rule written for the route. Here they are 404s, as any path that is no route is. A route's variable parts
(ids, tokens, file names) still take any escapes: a token may hold `/` (sent as `%2F`) or start with one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, MapAdapter, RequestRedirect, Rule
from werkzeug.routing.exceptions import RoutingException

_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def sent_path(environ: dict[str, Any]) -> str:
    """The request's path as the client sent it, escapes and all (gunicorn's `RAW_URI`, or `REQUEST_URI`, without
    the query and the SCRIPT_NAME prefix); the decoded PATH_INFO from a server that keeps neither."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return str(environ.get("PATH_INFO") or "/")
    if not raw.startswith("/"):  # the absolute form, `GET http://host/path HTTP/1.1`
        raw = urlsplit(raw).path
    path = str(raw).split("?", 1)[0]
    script = environ.get("SCRIPT_NAME") or ""
    return path[len(script):] if script and path.startswith(script) else path


def spelling(rule: Rule, url_map: Map) -> re.Pattern[str]:
    """What a path as sent must match to reach RULE: its fixed text literally, each variable part as its converter
    allows (within a segment, or across slashes for `path` and `id`)."""
    parts, end = [], 0
    for variable in _VARIABLE.finditer(rule.rule):
        converter = url_map.converters[variable["converter"] or "default"]
        parts += [re.escape(rule.rule[end:variable.start()]), "[^/]+" if converter.part_isolating else ".+"]
        end = variable.end()
    parts.append(re.escape(rule.rule[end:]))
    return re.compile("".join(parts))


def install(app: Flask) -> None:
    """Refuse, before every request of APP, a path not spelled as its route spells it (`refuse_inexact_path`)."""
    spellings: dict[str, re.Pattern[str]] = {}  # by rule text (the rules of one text in one map share converters)
    app.before_request(lambda: refuse_inexact_path(spellings))


def refuse_inexact_path(spellings: dict[str, re.Pattern[str]]) -> None:
    """NotFound when the path as sent is not its route's own spelling (`sent_path`, `spelling`, kept in SPELLINGS),
    counted as unmatched; also when the route takes another method (a 404, not a 405) or werkzeug would redirect to
    it with a slash added (`//ui` is a 404; `/ui` is still sent on to `/ui/`)."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]  # one look-up: each costs ~0.8 us
    req = ctx.request
    rule, suffix = req.url_rule, ""
    if rule is None:
        rule, suffix = _rule_reached(ctx.url_adapter, req)
        if rule is None:
            return  # a 404 already
    pattern = spellings.get(rule.rule)
    if pattern is None:
        pattern = spellings[rule.rule] = spelling(rule, rule.map)
    if pattern.fullmatch(sent_path(req.environ) + suffix) is None:
        req.url_rule = None
        raise NotFound()


def _rule_reached(adapter: MapAdapter | None, req: Request) -> tuple[Rule | None, str]:
    """The route a path reached though its view does not answer it: for another of its methods (405), or with a
    slash added (werkzeug's redirect); and that slash."""
    refused = req.routing_exception
    try:
        if isinstance(refused, MethodNotAllowed) and refused.valid_methods and adapter is not None:
            return adapter.match(method=refused.valid_methods[0], return_rule=True)[0], ""
        if isinstance(refused, RequestRedirect) and adapter is not None:
            return adapter.match(req.path + "/", method=req.method, return_rule=True)[0], "/"
    except (HTTPException, RoutingException):
        pass
    return None, ""
