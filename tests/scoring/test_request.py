"""Return requests are checked field by field, and every bad field is named at once."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from fraud_service.errors import RequestInvalid
from fraud_service.scoring.request import parse_request

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def body(**changes):
    base = {
        "return_id": "R1", "customer_id": "C1", "requested_at": "2025-06-01T10:00:00Z",
        "return_type": "return", "channel": "mail", "reason": "size", "items_count": 1,
        "refund_amount": 49.9, "refund_method": "original_payment", "has_receipt": True,
        "order": {
            "order_id": "O1", "placed_at": "2025-05-20T09:00:00+02:00", "delivered_at": "2025-05-23T15:00:00Z",
            "channel": "web", "order_total": 99.8, "currency": "EUR", "payment_token": "pay_1",
            "address_token": "addr_1", "device_token": None,
            "items": [{"line_no": 1, "sku": "S1", "category": "apparel", "unit_price": 49.9, "quantity": 2}],
        },
    }
    out = copy.deepcopy(base)
    for path, value in changes.items():
        target = out
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return out


def problems(b) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as caught:
        parse_request(b, NOW)
    return {p.field: f"{p.problem} / expected {p.expected}" for p in caught.value.problems}


def test_a_complete_request_parses_with_times_in_utc():
    r = parse_request(body(), NOW)
    assert r.return_id == "R1" and r.order.order_id == "O1"
    assert r.order.placed_at == dt.datetime(2025, 5, 20, 7, 0, tzinfo=dt.UTC)
    assert r.order.customer_id == "C1"  # the buyer defaults to the returner
    assert r.order.items[0].quantity == 2
    assert r.has_receipt is True and r.refund_token is None and r.order.device_token is None


def test_optional_fields_take_their_defaults():
    r = parse_request(body(requested_at=..., has_receipt=..., order__currency=...), NOW)
    assert r.requested_at == NOW
    assert r.has_receipt is True
    assert r.order.currency is None


@pytest.mark.parametrize(("change", "field", "text"), [
    ({"return_type": "stolen"}, "return_type", "got 'stolen' / expected one of return, item_not_received"),
    ({"refund_amount": "12"}, "refund_amount", "got '12' / expected a number"),
    ({"refund_amount": -1}, "refund_amount", "got -1 / expected a number of at least 0"),
    ({"items_count": 0}, "items_count", "got 0 / expected a number greater than 0"),
    ({"items_count": 1.5}, "items_count", "got 1.5 / expected an integer"),
    ({"has_receipt": "yes"}, "has_receipt", "got 'yes' / expected true or false"),
    ({"customer_id": ""}, "customer_id", "got '' / expected a non-empty string"),
    ({"return_id": ...}, "return_id", "is required"),
    ({"requested_at": "yesterday"}, "requested_at", "got 'yesterday' / expected an ISO 8601 timestamp"),
    ({"requested_at": "2025-06-02T00:00:00Z"}, "requested_at", "is in the future"),
    ({"requested_at": "2025-05-01T00:00:00Z"}, "requested_at", "is before the order was placed"),
    ({"order": ...}, "order", "is required"),
    ({"order__channel": "fax"}, "order.channel", "got 'fax' / expected one of web, app, store, marketplace"),
    ({"order__delivered_at": "2025-05-01T00:00:00Z"}, "order.delivered_at", "is before placed_at"),
    ({"order__delivered_at": "2025-06-02T00:00:00Z"}, "order.delivered_at", "is in the future"),
    ({"requested_at": ..., "order__placed_at": "2025-06-03T00:00:00Z"}, "order.placed_at",
     "is in the future (requested_at, left out, is now)"),
    ({"order__items": []}, "order.items", "got [] / expected a non-empty list"),
    ({"order__items__0__quantity": 0}, "order.items[0].quantity", "got 0 / expected a number greater than 0"),
    ({"order__items__0__category": None}, "order.items[0].category", "is required"),
    ({"refund_amount": float("nan")}, "refund_amount", "got nan / expected a finite number"),
    ({"reason": "x" * 300}, "reason", "is 300 characters long"),
    ({"return_id": "R\u202e1"}, "return_id", "holds U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ({"customer_id": "C\u200b1"}, "customer_id", "holds U+200B (ZERO WIDTH SPACE)"),
    ({"order__order_id": "O1\n"}, "order.order_id", "holds U+000A (a control character)"),
    ({"order__items__0__sku": "S\u2028"}, "order.items[0].sku", "holds U+2028 (LINE SEPARATOR)"),
    ({"order__payment_token": "p\tt"}, "order.payment_token", "holds U+0009"),
    # padded, a blocked card passed the block list, and a ring's device looked new
    ({"order__payment_token": "pay_1 "}, "order.payment_token", "holds U+0020 (SPACE) at its end"),
    ({"refund_token": "\u00a0rfd"}, "refund_token", "holds U+00A0 (NO-BREAK SPACE) at its start"),
    ({"order__currency": "\u20ac"}, "order.currency", "got '\u20ac' / expected an ISO 4217 currency code: three"),
    ({"order__currency": "Euro"}, "order.currency", "got 'Euro' / expected an ISO 4217 currency code"),
])
def test_each_bad_field_is_named_with_what_was_expected(change, field, text):
    found = problems(body(**change))
    assert field in found, found
    assert text in found[field]


def test_ids_may_hold_any_visible_text():
    r = parse_request(body(return_id="RMA/2026 №5 — ünïcödé", customer_id="顧客-7", reason="size\nand colour"), NOW)
    assert (r.return_id, r.customer_id, r.reason) == ("RMA/2026 №5 — ünïcödé", "顧客-7", "size\nand colour")


def test_negative_zero_amounts_are_taken_as_zero():
    r = parse_request(body(refund_amount=-0.0, order__items__0__unit_price=-0.0), NOW)
    assert str(r.refund_amount) == "0.0" and str(r.order.items[0].unit_price) == "0.0"


def test_every_problem_is_reported_not_just_the_first():
    found = problems(body(return_type="stolen", refund_amount="a lot", order__payment_token=...,
                          order__items__0__unit_price=-3))
    assert set(found) == {"return_type", "refund_amount", "order.payment_token", "order.items[0].unit_price"}


def test_duplicate_line_numbers_are_refused():
    b = body()
    b["order"]["items"].append(dict(b["order"]["items"][0]))
    assert "appears twice" in problems(b)["order.items[1].line_no"]


@pytest.mark.parametrize("raw", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_is_refused(raw):
    assert problems(raw) == {"$": f"got {type(raw).__name__} / expected a JSON object"}


def test_a_category_and_a_reason_are_taken_in_small_letters_as_the_features_match_them():
    """The features match the contract's example names (`apparel`, `size`, ...): `Apparel` or ` Size` left
    `rt_share_fashion` and `cust_size_cm_*` at zero for a returns system with its own casing. Ingest folds alike."""
    request = parse_request(body(reason=" Changed_Mind "), NOW)
    assert request.reason == "changed_mind"
    other = body()
    other["order"]["items"][0]["category"] = "APPAREL"
    assert parse_request(other, NOW).order.items[0].category == "apparel"
    assert "reason" in problems(body(reason="   "))


def test_the_share_features_count_the_names_other_hands_write_for_fashion_and_high_value_goods():
    """`Clothing`, `footwear` and the US `jewelry` are the contract's apparel, shoes and jewellery: other names left
    `rt_share_fashion` and `rt_share_high_value` at zero. The request's own mix and the warehouse's agree."""
    import pandas as pd

    from fraud_service.featurestore.source import category_mix, request_entity

    other = body()
    other["order"]["items"] = [
        {"line_no": 1, "sku": "S1", "category": "Clothing", "unit_price": 10.0, "quantity": 2},
        {"line_no": 2, "sku": "S2", "category": "footwear", "unit_price": 20.0, "quantity": 1},
        {"line_no": 3, "sku": "S3", "category": "JEWELRY", "unit_price": 50.0, "quantity": 1},
        {"line_no": 4, "sku": "S4", "category": "garden", "unit_price": 10.0, "quantity": 1}]
    fields = request_entity(parse_request(other, NOW))[1]
    assert (fields["req_share_fashion"], fields["req_share_high_value"]) == (0.4, 0.5)
    items = pd.DataFrame([{**i, "order_id": "O1", "category": i["category"].lower()} for i in other["order"]["items"]])
    mix = category_mix(items).loc["O1"]
    assert (mix["share_fashion"], mix["share_high_value"]) == (0.4, 0.5)


def test_a_currency_code_is_taken_whatever_its_casing_or_padding():
    """`gbp` is GBP: a returns system that sends lowercase codes (as some payment platforms do) was refused (422)
    over a field the score does not read."""
    assert parse_request(body(order__currency=" gbp"), NOW).order.currency == "GBP"
    assert parse_request(body(order__currency="Eur"), NOW).order.currency == "EUR"
