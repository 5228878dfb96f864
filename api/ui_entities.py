"""The analyst UI's search and entity pages: the search box on every page (`/` focuses it), the results, and a page
per customer and per token with everything known about it (`api.entities`, `fraud_service.cases.entities`). Part
of the `ui` blueprint."""

from __future__ import annotations

from flask import abort, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from api import entities
from api.core import core
from api.ui import _problems, bp, signed_in
from fraud_service.cases.entities import SearchHit
from fraud_service.errors import AssessmentNotFound, CaseNotFound, EntityNotFound, RequestInvalid
from fraud_service.feedback import outcomes


@bp.get("/search")
@signed_in
def search_page() -> ResponseReturnValue:
    query = request.args.get("q", "")
    if not query.strip():
        return render_template("ui/search.html", result=None, query="")
    try:
        result = entities.found(query)
    except RequestInvalid as exc:
        abort(400, _problems(exc))
    exact = [h for h in result.hits if h.id == result.query]
    if len(exact) == 1 and request.args.get("go") == "1":  # the box's Enter on an exact id opens its page at once
        return redirect(hit_url(exact[0]))
    return render_template("ui/search.html", result=result, query=result.query, hit_url=hit_url)


def hit_url(hit: SearchHit) -> str:
    """Where a search hit leads: its own page, or the page that holds it (an order's or a return's customer, or a
    flagged return's case)."""
    if hit.kind == "case":
        return url_for("ui.case", case_id=hit.id)
    if hit.kind == "customer":
        return url_for("ui.customer_page", customer_id=hit.id)
    if hit.kind == "token":
        return url_for("ui.token_page", kind=hit.token_kind, value=hit.id)
    if hit.kind == "return" and hit.case_id:
        return url_for("ui.case", case_id=hit.case_id) + f"#return-{hit.id}"
    return url_for("ui.customer_page", customer_id=hit.customer_id or "") + f"#{hit.kind}-{hit.id}"


@bp.get("/customers/<id:customer_id>", merge_slashes=False)
@signed_in
def customer_page(customer_id: str) -> ResponseReturnValue:
    try:
        page = entities.customer(customer_id)
    except EntityNotFound:
        abort(404, f"There is no customer {customer_id} in the warehouse or the evidence log.")
    return render_template("ui/entity.html", page=page.to_dict())


@bp.get("/tokens/<kind>/<id:value>", merge_slashes=False)
@signed_in
def token_page(kind: str, value: str) -> ResponseReturnValue:
    try:
        page = entities.token(kind, value)
    except EntityNotFound as exc:
        abort(404, str(exc))
    return render_template("ui/entity.html", page=page.to_dict())


@bp.get("/graph/<kind>/<id:value>", merge_slashes=False)
@signed_in
def graph_data(kind: str, value: str) -> ResponseReturnValue:
    """The link graph's JSON for the page's script (graph.js): around a customer or token."""
    try:
        return jsonify(entities.entity_graph(kind, value).to_dict())
    except RequestInvalid as exc:
        abort(400, _problems(exc))


@bp.get("/cases/<case_id>/graph")
@signed_in
def case_graph_data(case_id: str) -> ResponseReturnValue:
    """The link graph's JSON around a case."""
    try:
        return jsonify(entities.case_graph(case_id).to_dict())
    except CaseNotFound:
        abort(404, f"There is no case {case_id}.")
    except RequestInvalid as exc:
        abort(400, _problems(exc))


@bp.get("/assessments/<assessment_id>")
@signed_in
def assessment_data(assessment_id: str) -> ResponseReturnValue:
    """An assessment's stored evidence and outcome in force, as JSON (the case page's link; `GET
    /v1/assessments/ID` takes a key, not the analyst's session)."""
    service = core()
    try:
        return jsonify(outcomes.read(service.uow(), assessment_id=assessment_id, messages=service.feedback.messages))
    except AssessmentNotFound:
        abort(404, f"There is no assessment {assessment_id}.")
