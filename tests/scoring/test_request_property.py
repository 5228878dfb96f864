"""Any JSON at all, as the scoring API could receive it: the request is either parsed or refused with every bad
field named, never an exception (hypothesis drives arbitrary and almost-valid bodies)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_service.data.contract import value_problems
from fraud_service.errors import RequestInvalid
from fraud_service.scoring.request import ReturnRequest, parse_request

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
VALID: dict[str, Any] = {
    "return_id": "r-1", "customer_id": "c-1", "return_type": "return", "channel": "mail", "reason": "size",
    "items_count": 1, "refund_amount": 20.0, "refund_method": "original_payment", "requested_at": "2026-05-30T10:00Z",
    "order": {"order_id": "o-1", "placed_at": "2026-05-20T10:00:00+00:00", "channel": "web", "order_total": 20.0,
              "payment_token": "p-1", "items": [{"line_no": 1, "sku": "s", "category": "home", "unit_price": 20.0,
                                                 "quantity": 1}]},
}
PATHS = [("return_id",), ("customer_id",), ("return_type",), ("items_count",), ("refund_amount",),
         ("requested_at",), ("order",), ("order", "placed_at"), ("order", "order_total"), ("order", "items"),
         ("order", "items", 0), ("order", "items", 0, "quantity"), ("order", "items", 0, "unit_price")]


def parsed_or_named(body: Any) -> None:
    problems = value_problems(body)  # what the API's JSON reader refuses first, by path
    assert all(isinstance(p[0], str) and p[0] for p in problems)
    if problems:
        return
    try:
        request = parse_request(body, NOW)
    except RequestInvalid as exc:
        assert exc.problems and all(p.field and p.problem and p.expected for p in exc.problems)
    else:
        assert isinstance(request, ReturnRequest)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(json_values)
def test_any_json_is_parsed_or_refused_naming_fields(body: Any) -> None:
    parsed_or_named(body)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_a_valid_request_with_any_one_value_replaced_is_parsed_or_refused_naming_it(path: tuple[Any, ...],
                                                                                     value: Any) -> None:
    import copy

    body = copy.deepcopy(VALID)
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    parsed_or_named(body)


def test_the_valid_request_the_mutations_start_from_is_valid() -> None:
    assert parse_request(VALID, NOW).order.items[0].quantity == 1
