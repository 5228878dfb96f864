"""The investigations API: the case queue and every action the analyst UI offers, for machines (`/v1/cases`).

Analyst and admin keys only; a scoring key cannot read cases. The UI (api/ui.py) calls the same
case service (`fraud_service.cases.service`), so what a person can do in the browser a program can do here.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, requires
from api.core import core, who
from api.schemas import AssignBody, BulkCloseBody, CloseBody, NoteBody, ReopenBody, StatusBody, parse
from fraud_service.cases import bundle as bundles
from fraud_service.cases import service as cases
from fraud_service.cases.investigation import CaseContext, case_context
from fraud_service.cases.records import ACTIVE, QueueFilter
from fraud_service.errors import Problem, RequestInvalid

bp = Blueprint("cases", __name__)


def queue_filter(args: Any) -> QueueFilter:
    """A queue filter from query arguments (the API's and the UI's), every bad one listed."""
    problems = []

    def number(name: str, kind: type, default: Any) -> Any:
        text = args.get(name)
        if text in (None, ""):
            return default
        try:
            if not text.isascii() or "_" in text or text != text.strip():  # Python reads `５`, `1_0`, ` 5`
                raise ValueError(text)
            value = kind(text)
            if isinstance(value, float) and not math.isfinite(value):  # inf, 1e999 and nan filter nothing
                raise ValueError(text)
            return value
        except ValueError:
            problems.append(Problem(name, f"got {text!r}", f"a{'n integer' if kind is int else ' finite number'}"))
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


def context(case_id: str) -> CaseContext:
    """The case with each of its customers' histories and the accounts linked to it, and the page of its
    assessments the query asks for (`assessments_offset`, 100 at a time)."""
    text = request.args.get("assessments_offset") or "0"
    if not (text.isascii() and text.isdigit()) or len(text) > 20:  # past every offset; int() refuses 4,300 digits
        raise RequestInvalid([Problem("assessments_offset", f"got {text[:20]!r}", "an integer >= 0 (at most 2**62)")])
    service = core()
    return case_context(service.uow(), case_id=case_id, warehouse_dir=service.settings.warehouse_dir,
                        now=service.clock(), offset=int(text))


def export(case_id: str, actor: str) -> Response:
    """The case's bundle as a zip download (JSON and printable HTML); the export is recorded as an evidence event
    naming the bundle's SHA-256 (also sent as X-Bundle-SHA256)."""
    service = core()
    done = bundles.export(service.uow(), case_id=case_id, actor=actor, warehouse_dir=service.settings.warehouse_dir,
                          now=service.clock())
    return Response(done.archive, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{case_id}-bundle.zip"', "X-Bundle-SHA256": done.digest})


def _actor() -> dict[str, Any]:
    return who(current_principal().actor)


@bp.get("/v1/cases")
@requires("analyst")
def list_cases() -> ResponseReturnValue:
    """The queue: riskiest (score x money at stake) first, filtered by the query."""
    page = cases.queue(core().uow(), f=queue_filter(request.args), now=core().clock())
    return jsonify(cases=[c.to_dict() for c in page.cases], total=page.total, limit=page.filter.limit,
                   offset=page.filter.offset)


@bp.post("/v1/cases/next")
@requires("analyst")
def next_case() -> ResponseReturnValue:
    """Claim the highest-priority unassigned open case (204 when there is none)."""
    found = cases.next_case(core().uow(), **_actor())
    if found is None:
        return "", 204
    return jsonify(found.to_dict())


@bp.post("/v1/cases/close")
@requires("analyst")
def bulk_close() -> ResponseReturnValue:
    """Close several cases with one label for all their returns (a ring), all or none."""
    body = parse(BulkCloseBody)
    closed = cases.bulk_close(core().uow(), case_ids=body.case_ids, label=body.label, reason=body.reason,
                              feedback=core().feedback, unchanged_since=body.unchanged_since,
                              unchanged=body.unchanged, **_actor())
    return jsonify(cases=[c.to_dict() for c in closed])


@bp.get("/v1/cases/<case_id>")
@requires("analyst")
def get_case(case_id: str) -> ResponseReturnValue:
    """The case with its assessments' evidence, notes, labels, events, histories and linked accounts."""
    return jsonify(context(case_id).to_dict())


@bp.post("/v1/cases/<case_id>/claim")
@requires("analyst")
def claim(case_id: str) -> ResponseReturnValue:
    """Take the case (it moves to in_review when open)."""
    return jsonify(cases.claim(core().uow(), case_id=case_id, **_actor()).to_dict())


@bp.post("/v1/cases/<case_id>/assign")
@requires("analyst")
def assign(case_id: str) -> ResponseReturnValue:
    """Give the case to a user (`assignee`: a name, or null for nobody)."""
    body = parse(AssignBody)
    return jsonify(cases.assign(core().uow(), case_id=case_id, assignee=body.assignee, **_actor()).to_dict())


@bp.post("/v1/cases/<case_id>/status")
@requires("analyst")
def set_status(case_id: str) -> ResponseReturnValue:
    """Move the case to another status (open, in_review, escalated)."""
    body = parse(StatusBody)
    return jsonify(cases.set_status(core().uow(), case_id=case_id, status=body.status, comment=body.comment or "",
                                    **_actor()).to_dict())


@bp.post("/v1/cases/<case_id>/notes")
@requires("analyst")
def add_note(case_id: str) -> ResponseReturnValue:
    """Add a note to the case."""
    note = cases.add_note(core().uow(), case_id=case_id, body=parse(NoteBody).body, **_actor())
    return jsonify(note.to_dict()), 201


@bp.post("/v1/cases/<case_id>/close")
@requires("analyst")
def close(case_id: str) -> ResponseReturnValue:
    """Close with a label per return (`dispositions`), or one `label` for all of them."""
    body = parse(CloseBody)
    one_for_all = body.dispositions is None and body.label is not None
    if not one_for_all and body.dispositions is None:
        raise RequestInvalid([Problem("dispositions", "is required (or a `label`)",
                                      "{return_id: fraud|abuse|legit} or a `label` for every return")])
    if body.dispositions is not None and body.label is not None:
        raise RequestInvalid([Problem("label", "was sent with `dispositions`",
                                      "either a label per return (`dispositions`) or one `label` for all, not both")])
    return jsonify(cases.close(core().uow(), case_id=case_id, dispositions=body.dispositions, reason=body.reason,
                               label=body.label if one_for_all else None, feedback=core().feedback,
                               unchanged_since=body.unchanged_since, **_actor()).to_dict())


@bp.post("/v1/cases/<case_id>/reopen")
@requires("analyst")
def reopen(case_id: str) -> ResponseReturnValue:
    """Open a closed case again."""
    return jsonify(cases.reopen(core().uow(), case_id=case_id, reason=parse(ReopenBody).reason, **_actor()).to_dict())


@bp.post("/v1/cases/<case_id>/bundle")
@requires("analyst")
def bundle(case_id: str) -> ResponseReturnValue:
    """Export the evidence bundle (zip of JSON + printable HTML), recorded as an evidence event: a POST, since it
    changes the log; check it with `fraud-service evidence verify --bundle`."""
    return export(case_id, current_principal().actor)
