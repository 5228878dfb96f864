"""Allow and block lists (customer, address, payment, device, refund destination): analysts read, admins change."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core, who
from api.rule_schemas import ListEntryIn
from api.schemas import parse
from fraud_service.scoring import lists

bp = Blueprint("lists", __name__)


@bp.get("/v1/lists")
@requires("analyst")
def list_entries() -> ResponseReturnValue:
    """Every allow and block list entry (expired ones too: they match nothing)."""
    return jsonify(entries=[e.to_dict() for e in lists.entries(core().uow())])


@bp.post("/v1/lists")
@requires("admin")
def add_entry() -> ResponseReturnValue:
    """Put a token on the allow or block list (recorded as evidence)."""
    body = parse(ListEntryIn)
    entry = lists.add(core().uow(), entity=body.entity, value=body.value, list_name=body.list, reason=body.reason,
                      expires_at=body.expires_at, **who(current_principal().actor))
    core().lists_changed()
    return jsonify(entry.to_dict()), 201


@bp.delete("/v1/lists/<entity>/<id:value>", merge_slashes=False)  # a token may start with a slash
@requires("admin")
def delete_entry(entity: str, value: str) -> ResponseReturnValue:
    """Take a token off its list (recorded as evidence, with the `reason` query argument when given)."""
    lists.remove(core().uow(), entity=entity, value=value, reason=request.args.get("reason"),
                 **who(current_principal().actor))
    core().lists_changed()
    return "", 204
