"""The investigations API: the case queue and every action the analyst UI offers, for machines (`/v1/cases`).

Analyst and admin keys only; a scoring key cannot read cases. The UI (api/ui.py) calls the same
`Cases` service, so what a person can do in the browser a program can do here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.errors import ApiError
from fraud_service.access.users import active
from fraud_service.cases import bundle as bundles
from fraud_service.cases import investigation
from fraud_service.cases.service import ACTIVE, Cases, QueueFilter
from fraud_service.data.warehouse import Warehouse
from fraud_service.scoring.request import Problem, RequestInvalid
from fraud_service.store import chain

bp = Blueprint("cases", __name__)


def service() -> Cases:
    """The app's case service (one per app)."""
    cases: Cases | None = current_app.extensions.get("cases")
    if cases is None:
        cases = current_app.extensions["cases"] = Cases(current_app.extensions["fraud"].sessions)
    return cases


def queue_filter(args: Any) -> QueueFilter:
    """A queue filter from query arguments (the API's and the UI's), every bad one listed."""
    problems = []

    def number(name: str, kind: type, default: Any) -> Any:
        text = args.get(name)
        if text in (None, ""):
            return default
        try:
            return kind(text)
        except ValueError:
            problems.append(Problem(name, f"got {text!r}", f"a{'n integer' if kind is int else ' number'}"))
            return default

    statuses = tuple(s for part in args.getlist("status") for s in part.split(",") if s) or ACTIVE
    if statuses == ("all",):
        statuses = (*ACTIVE, "closed")
    f = QueueFilter(statuses=statuses, assignee=args.get("assignee") or None, decision=args.get("decision") or None,
                    reason=args.get("reason") or None, min_amount=number("min_amount", float, None),
                    sort=args.get("sort") or "priority", limit=number("limit", int, 50),
                    offset=number("offset", int, 0))
    if problems:
        raise RequestInvalid(problems)
    return f


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object (Content-Type: application/json)")
    return body


def _text(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RequestInvalid([Problem(name, f"got {type(value).__name__}", "a string")])
    return value


def assignee_actor(name: str | None) -> str | None:
    """The actor string of a user named NAME (an active user), or None to unassign."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise RequestInvalid([Problem("assignee", f"got {type(name).__name__}", "a user name or null")])
    with current_app.extensions["fraud"].sessions() as session:
        person = active(session, name.removeprefix("user:"))
    if person is None:
        raise RequestInvalid([Problem("assignee", f"no active user {name!r}",
                                      "the name of a user (fraud-service users create NAME)")])
    return person.actor


def context(case: dict[str, Any]) -> dict[str, Any]:
    """The case with each of its customers' histories and the accounts linked to it."""
    settings = current_app.config["SETTINGS"]
    snapshot = Warehouse(settings.warehouse_dir).current()
    customers = sorted({a["customer_id"] for a in case["assessment_list"]} | {case["customer_id"]})
    links = [(link["entity"], link["value"]) for link in case["links"]]
    with current_app.extensions["fraud"].sessions() as session:
        histories = [investigation.history(snapshot, session, c) for c in customers]
    linked = investigation.linked_accounts(snapshot, links)
    return {**case, "histories": histories, "linked_accounts": linked}


def export(case_id: str, actor: str) -> Response:
    """The case's bundle as a zip download (JSON and printable HTML); the export is recorded as an evidence event
    naming the bundle's SHA-256 (also sent as X-Bundle-SHA256)."""
    case = context(service().get(case_id))
    now = dt.datetime.now(dt.UTC)
    sessions = current_app.extensions["fraud"].sessions
    with sessions() as session:
        bundle = bundles.build(case, session, actor, chain.utc_text(now))
    data = bundles.to_json(bundle)
    digest = bundles.digest(data)
    html = render_template("bundle.html", bundle=bundle, case=case, digest=digest)
    with sessions.begin() as session:
        chain.append(session, kind="case_bundle_exported", subject=case_id, actor=actor, at=now,
                     payload={"case_id": case_id, "sha256": digest, "head_seq": bundle["proof"]["head"]["seq"]})
    return Response(bundles.archive(data, html, case_id), mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{case_id}-bundle.zip"', "X-Bundle-SHA256": digest})


@bp.get("/v1/cases")
@requires("analyst")
def list_cases() -> ResponseReturnValue:
    """The queue: riskiest (score x money at stake) first, filtered by the query."""
    page = service().queue(queue_filter(request.args))
    return jsonify(cases=page.cases, total=page.total, limit=page.filter.limit, offset=page.filter.offset)


@bp.post("/v1/cases/next")
@requires("analyst")
def next_case() -> ResponseReturnValue:
    """Claim the highest-priority unassigned open case (204 when there is none)."""
    found = service().next_case(current_principal().actor)
    if found is None:
        return "", 204
    return jsonify(found)


@bp.post("/v1/cases/close")
@requires("analyst")
def bulk_close() -> ResponseReturnValue:
    """Close several cases with one label for all their returns (a ring), all or none."""
    body = _body()
    ids = body.get("case_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RequestInvalid([Problem("case_ids", f"got {type(ids).__name__}", "a list of case ids")])
    closed = service().bulk_close(ids, _text(body, "label"), _text(body, "reason"), current_principal().actor)
    return jsonify(cases=closed)


@bp.get("/v1/cases/<case_id>")
@requires("analyst")
def get_case(case_id: str) -> ResponseReturnValue:
    """The case with its assessments' evidence, notes, labels, events, histories and linked accounts."""
    return jsonify(context(service().get(case_id)))


@bp.post("/v1/cases/<case_id>/claim")
@requires("analyst")
def claim(case_id: str) -> ResponseReturnValue:
    return jsonify(service().claim(case_id, current_principal().actor))


@bp.post("/v1/cases/<case_id>/assign")
@requires("analyst")
def assign(case_id: str) -> ResponseReturnValue:
    body = _body()
    if "assignee" not in body:
        raise RequestInvalid([Problem("assignee", "missing", "a user name or null")])
    return jsonify(service().assign(case_id, assignee_actor(body["assignee"]), current_principal().actor))


@bp.post("/v1/cases/<case_id>/status")
@requires("analyst")
def set_status(case_id: str) -> ResponseReturnValue:
    body = _body()
    return jsonify(service().set_status(case_id, _text(body, "status"), current_principal().actor,
                                        _text(body, "comment", required=False)))


@bp.post("/v1/cases/<case_id>/notes")
@requires("analyst")
def add_note(case_id: str) -> ResponseReturnValue:
    return jsonify(service().add_note(case_id, _text(_body(), "body"), current_principal().actor)), 201


@bp.post("/v1/cases/<case_id>/close")
@requires("analyst")
def close(case_id: str) -> ResponseReturnValue:
    """Close with a label per return (`dispositions`), or one `label` for all of them."""
    body = _body()
    dispositions, label = body.get("dispositions"), body.get("label")
    one_for_all = dispositions is None and isinstance(label, str)
    if not one_for_all and (not isinstance(dispositions, dict)
                            or not all(isinstance(v, str) for v in dispositions.values())):
        raise RequestInvalid([Problem("dispositions", "missing or not an object of return_id to label",
                                      "{return_id: fraud|abuse|legit} or a `label` for every return")])
    return jsonify(service().close(case_id, dispositions, _text(body, "reason"), current_principal().actor,
                                   label if one_for_all else None))


@bp.post("/v1/cases/<case_id>/reopen")
@requires("analyst")
def reopen(case_id: str) -> ResponseReturnValue:
    return jsonify(service().reopen(case_id, _text(_body(), "reason"), current_principal().actor))


@bp.get("/v1/cases/<case_id>/bundle")
@requires("analyst")
def bundle(case_id: str) -> ResponseReturnValue:
    """The evidence bundle (zip of JSON + printable HTML); check it with `fraud-service evidence verify --bundle`."""
    return export(case_id, current_principal().actor)
