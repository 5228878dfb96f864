"""Allow and block lists (customer, address, payment, device, refund destination), managed by admins."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.auth import current_principal, requires
from api.errors import ApiError
from fraud_service.scoring.request import Problem, RequestInvalid
from fraud_service.scoring.rules import LIST_ENTITIES, LISTS
from fraud_service.store import chain
from fraud_service.store.schema import ListEntry

bp = Blueprint("lists", __name__)


def _changed() -> None:
    """This worker's assessments see the change at once (other workers within a second)."""
    assessor = current_app.extensions["fraud"].assessor
    if assessor is not None:
        assessor.lists.invalidate()


def _entry(e: ListEntry) -> dict[str, object]:
    return {"entity": e.entity, "value": e.value, "list": e.list, "reason": e.reason, "added_by": e.added_by,
            "added_at": chain.utc_text(e.added_at)}


@bp.get("/v1/lists")
@requires("analyst")
def list_entries() -> ResponseReturnValue:
    """Every allow and block list entry."""
    with current_app.extensions["fraud"].sessions() as session:
        rows = session.execute(select(ListEntry).order_by(ListEntry.entity, ListEntry.value)).scalars()
        return jsonify(entries=[_entry(e) for e in rows])


@bp.post("/v1/lists")
@requires("admin")
def add_entry() -> ResponseReturnValue:
    """Put a token on the allow or block list (recorded as evidence)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    problems = []
    checks = {"entity": LIST_ENTITIES, "list": LISTS}
    for field, allowed in checks.items():
        if body.get(field) not in allowed:
            problems.append(Problem(field, f"got {body.get(field)!r}", "one of " + ", ".join(allowed)))
    for field in ("value", "reason"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            problems.append(Problem(field, f"got {value!r}", "a non-empty string of at most 200 characters"))
    if problems:
        raise RequestInvalid(problems)
    actor = current_principal().actor
    now = dt.datetime.now(dt.UTC)
    entry = ListEntry(entity=body["entity"], value=body["value"], list=body["list"], reason=body["reason"],
                      added_by=actor, added_at=now)
    try:
        with current_app.extensions["fraud"].sessions.begin() as session:
            session.add(entry)
            session.flush()
            chain.append(session, kind="list_added", subject=f"{entry.entity}:{entry.value}", actor=actor,
                         payload=_entry(entry), at=now)
    except IntegrityError:
        raise ApiError(409, "conflict", f"{body['entity']} {body['value']} is already on a list; "
                                        "delete it first to move it") from None
    _changed()
    return jsonify(_entry(entry)), 201


@bp.delete("/v1/lists/<entity>/<path:value>")
@requires("admin")
def delete_entry(entity: str, value: str) -> ResponseReturnValue:
    """Take a token off its list (recorded as evidence)."""
    actor = current_principal().actor
    with current_app.extensions["fraud"].sessions.begin() as session:
        entry = session.execute(select(ListEntry).where(ListEntry.entity == entity, ListEntry.value == value)
                                ).scalar_one_or_none()
        if entry is None:
            raise ApiError(404, "not_found", f"{entity} {value} is on no list")
        chain.append(session, kind="list_removed", subject=f"{entity}:{value}", actor=actor, payload=_entry(entry))
        session.delete(entry)
    _changed()
    return "", 204
