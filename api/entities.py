"""Search and entity pages for machines (`/v1/search`, `/v1/customers/{id}`, `/v1/tokens/{kind}/{value}`): what
the analyst UI's search box and customer and token pages show (`fraud_service.cases.entities`). Analyst keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.routing import PathConverter

from api.auth import requires
from api.core import core
from fraud_service.cases import entities, graph
from fraud_service.cases.investigation import one_at_a_time
from fraud_service.data.warehouse import Snapshot, Warehouse

if TYPE_CHECKING:
    from fraud_service.featurestore.online import OnlineFeatures

bp = Blueprint("entities", __name__)


class IdConverter(PathConverter):
    """Any customer id or token, slashes and dots included (`<id:...>` in a route). Links write it fully
    percent-encoded, `/` as %2F and `.` as %2E, so a browser neither merges the slashes of a token starting with
    `/` nor resolves an id such as `../rules`; routes taking it do not merge slashes either."""

    regex = ".+?"  # a path converter's, except that the id may start with a slash
    part_isolating = False  # (werkzeug would infer True from a regex without a slash)

    def to_url(self, value: object) -> str:
        return quote(str(value), safe="").replace(".", "%2E")


@contextlib.contextmanager
def _snapshot() -> Iterator[Snapshot | None]:
    """The warehouse's current snapshot, while this host builds no other page (`investigation.one_at_a_time`)."""
    warehouse_dir = core().settings.warehouse_dir
    with one_at_a_time(warehouse_dir):
        yield Warehouse(warehouse_dir).current()


def found(query: object) -> entities.SearchResult:
    """The search's answer to QUERY (the API's and the UI's)."""
    with _snapshot() as snapshot:
        return entities.search(core().uow(), snapshot, query)


def customer(customer_id: str) -> entities.EntityPage:
    service = core()
    with _snapshot() as snapshot:
        return entities.customer_page(service.uow(), snapshot, customer_id, now=service.clock(), reader=_reader(),
                                      hub_customers=service.settings.hub_customers)


def token(kind: str, value: str) -> entities.EntityPage:
    service = core()
    with _snapshot() as snapshot:
        return entities.token_page(service.uow(), snapshot, kind, value, now=service.clock(), reader=_reader(),
                                   hub_customers=service.settings.hub_customers)


def entity_graph(kind: str, value: str) -> graph.Graph:
    """The link graph around a customer or token, `hops` out (default 2)."""
    service = core()
    hops = graph.check_seed(kind, value, request.args.get("hops", "2"))
    with _snapshot() as snapshot:
        return graph.entity_graph(service.uow(), snapshot, kind, value, hops=hops,
                                  hub_customers=service.settings.hub_customers)


def case_graph(case_id: str) -> graph.Graph:
    """The link graph around a case's customers and tokens, `hops` out (default 2)."""
    service = core()
    hops = graph.check_hops(request.args.get("hops", "2"))
    with _snapshot() as snapshot:
        return graph.case_graph(service.uow(), snapshot, case_id, now=service.clock(), hops=hops,
                                hub_customers=service.settings.hub_customers)


def _reader() -> OnlineFeatures | None:
    """The online store's reader when this worker scores (else the page goes without feature values)."""
    assessor = core().assessor
    return assessor.reader if assessor is not None else None


@bp.get("/v1/search")
@requires("analyst")
def search() -> ResponseReturnValue:
    """Customers, returns, orders, tokens and cases whose id is `q` or starts with it."""
    return jsonify(found(request.args.get("q")).to_dict())


@bp.get("/v1/customers/<id:customer_id>", merge_slashes=False)
@requires("analyst")
def get_customer(customer_id: str) -> ResponseReturnValue:
    """Everything known about a customer: profile, features now, timeline, cases, tokens shared, lists."""
    return jsonify(customer(customer_id).to_dict())


@bp.get("/v1/tokens/<kind>/<id:value>", merge_slashes=False)
@requires("analyst")
def get_token(kind: str, value: str) -> ResponseReturnValue:
    """Everything known about a token (address, payment, device, refund): who used it, when, cases, lists."""
    return jsonify(token(kind, value).to_dict())


@bp.get("/v1/graph/<kind>/<id:value>", merge_slashes=False)
@requires("analyst")
def get_graph(kind: str, value: str) -> ResponseReturnValue:
    """The link graph around a customer or a token: customers and the tokens they used, `hops` (1-3) out."""
    return jsonify(entity_graph(kind, value).to_dict())


@bp.get("/v1/cases/<case_id>/graph")
@requires("analyst")
def get_case_graph(case_id: str) -> ResponseReturnValue:
    """The link graph around a case's customers and the tokens tying it, `hops` (1-3) out."""
    return jsonify(case_graph(case_id).to_dict())
