"""Search and entity pages for machines (`/v1/search`, `/v1/customers/{id}`, `/v1/tokens/{kind}/{value}`): what
the analyst UI's search box and customer and token pages show (`fraud_service.cases.entities`). Analyst keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import requires
from api.core import core
from fraud_service.cases import entities
from fraud_service.cases.investigation import one_at_a_time
from fraud_service.data.warehouse import Warehouse

if TYPE_CHECKING:
    from fraud_service.featurestore.online import OnlineFeatures

bp = Blueprint("entities", __name__)


def found(query: object) -> entities.SearchResult:
    """The search's answer to QUERY (the API's and the UI's)."""
    service = core()
    with one_at_a_time(service.settings.warehouse_dir):
        return entities.search(service.uow(), Warehouse(service.settings.warehouse_dir).current(), query)


def customer(customer_id: str) -> entities.EntityPage:
    service = core()
    with one_at_a_time(service.settings.warehouse_dir):
        return entities.customer_page(service.uow(), Warehouse(service.settings.warehouse_dir).current(),
                                      customer_id, now=service.clock(), reader=_reader(),
                                      hub_customers=service.settings.hub_customers)


def token(kind: str, value: str) -> entities.EntityPage:
    service = core()
    with one_at_a_time(service.settings.warehouse_dir):
        return entities.token_page(service.uow(), Warehouse(service.settings.warehouse_dir).current(), kind, value,
                                   now=service.clock(), reader=_reader(), hub_customers=service.settings.hub_customers)


def _reader() -> OnlineFeatures | None:
    """The online store's reader when this worker scores (else the page goes without feature values)."""
    assessor = core().assessor
    return assessor.reader if assessor is not None else None


@bp.get("/v1/search")
@requires("analyst")
def search() -> ResponseReturnValue:
    """Customers, returns, orders, tokens and cases whose id is `q` or starts with it."""
    return jsonify(found(request.args.get("q")).to_dict())


@bp.get("/v1/customers/<path:customer_id>")
@requires("analyst")
def get_customer(customer_id: str) -> ResponseReturnValue:
    """Everything known about a customer: profile, features now, timeline, cases, tokens shared, lists."""
    return jsonify(customer(customer_id).to_dict())


@bp.get("/v1/tokens/<kind>/<path:value>")
@requires("analyst")
def get_token(kind: str, value: str) -> ResponseReturnValue:
    """Everything known about a token (address, payment, device, refund): who used it, when, cases, lists."""
    return jsonify(token(kind, value).to_dict())
