"""A return request as the scoring API receives it: contract field names, checked field by field.

The body carries the return (the contract's `returns` columns) and its order context (the
`orders` columns and the order's `items`, the `order_items` columns), so that returns on
orders the store has never seen can still be scored. Every problem is collected, not just
the first: the client learns all it must fix from one response.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraud_service.data.contract import MAX_TEXT, ORDER_ITEMS, ORDERS, RETURNS, Column, Kind
from fraud_service.errors import Problem, RequestInvalid

MAX_ITEMS = 500
MAX_COUNT = 1_000_000
"""The largest count (quantity, items, line number) a request may carry."""
MAX_AMOUNT = 1_000_000_000
"""The largest money amount (price, order total, refund) a request may carry."""
OPTIONAL_RETURN = {"requested_at", "refund_token", "store_id", "has_receipt"}
"""Fields a client may leave out: requested_at defaults to now, has_receipt to true."""
OPTIONAL_ORDER = {"customer_id", "delivered_at", "address_token", "device_token", "currency"}


@dataclass(frozen=True)
class OrderItem:
    line_no: int
    sku: str
    category: str
    unit_price: float
    quantity: int


@dataclass(frozen=True)
class OrderContext:
    order_id: str
    customer_id: str
    placed_at: dt.datetime
    delivered_at: dt.datetime | None
    channel: str
    order_total: float
    currency: str | None
    payment_token: str
    address_token: str | None
    device_token: str | None
    items: tuple[OrderItem, ...]


@dataclass(frozen=True)
class ReturnRequest:
    """A validated return request with its order context."""

    return_id: str
    customer_id: str
    requested_at: dt.datetime
    return_type: str
    channel: str
    reason: str
    items_count: int
    refund_amount: float
    refund_method: str
    refund_token: str | None
    has_receipt: bool
    store_id: str | None
    order: OrderContext


class _Reader:
    """Collects problems while converting fields."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: str, problem: str, expected: str) -> None:
        self.problems.append(Problem(path, problem, expected))

    def value(self, body: Mapping[str, Any], column: Column, path: str, optional: bool = False) -> Any:
        raw = body.get(column.name)
        if raw is None:
            if not (column.nullable or optional):
                self.bad(path, "is required", column.kind.describe())
            return None
        return self.convert(raw, column, path)

    def convert(self, raw: Any, column: Column, path: str) -> Any:
        kind = column.kind
        if kind in (Kind.STR, Kind.ENUM):
            if not isinstance(raw, str) or not raw.strip():
                self.bad(path, f"got {_show(raw)}", "a non-empty string" if kind is Kind.STR else _one_of(column))
                return None
            if len(raw) > MAX_TEXT:
                self.bad(path, f"is {len(raw)} characters long", f"at most {MAX_TEXT} characters")
                return None
            if kind is Kind.ENUM and raw not in column.values:
                self.bad(path, f"got {_show(raw)}", _one_of(column))
                return None
            return raw
        if kind is Kind.BOOL:
            if not isinstance(raw, bool):
                self.bad(path, f"got {_show(raw)}", "true or false")
                return None
            return raw
        if kind is Kind.TIMESTAMP:
            return self.timestamp(raw, path)
        return self.number(raw, column, path)

    def number(self, raw: Any, column: Column, path: str) -> float | int | None:
        integral = column.kind is Kind.INT
        if isinstance(raw, bool) or not isinstance(raw, int | float) or (integral and not isinstance(raw, int)):
            self.bad(path, f"got {_show(raw)}", "an integer" if integral else "a number")
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            self.bad(path, f"got {_show(raw)}", "a finite number")
            return None
        if column.strictly_positive and raw <= 0:
            self.bad(path, f"got {raw}", "a number greater than 0")
            return None
        if column.minimum is not None and raw < column.minimum:
            self.bad(path, f"got {raw}", f"a number of at least {column.minimum:g}")
            return None
        limit = MAX_COUNT if integral else MAX_AMOUNT
        if raw > limit:
            self.bad(path, f"got {_show(raw)}", f"a number of at most {limit:,}")
            return None
        return int(raw) if integral else float(raw)

    def timestamp(self, raw: Any, path: str) -> dt.datetime | None:
        if not isinstance(raw, str):
            self.bad(path, f"got {_show(raw)}", Kind.TIMESTAMP.describe())
            return None
        try:
            stamp = dt.datetime.fromisoformat(raw.strip().upper().replace("Z", "+00:00"))
            return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
        except ValueError:
            self.bad(path, f"got {_show(raw)}", Kind.TIMESTAMP.describe())
        except OverflowError:  # 0001-01-01T00:30+01:00 is before the first representable UTC time
            self.bad(path, f"got {_show(raw)}", "a time between the years 0001 and 9999 in UTC")
        return None


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_of(column: Column) -> str:
    return "one of " + ", ".join(column.values)


def parse_request(body: Any, now: dt.datetime) -> ReturnRequest:
    """A ReturnRequest from a decoded JSON body, or RequestInvalid naming every bad field."""
    if not isinstance(body, Mapping):
        raise RequestInvalid([Problem("$", f"got {type(body).__name__}", "a JSON object")])
    r = _Reader()
    fields: dict[str, Any] = {}
    for column in RETURNS.columns:
        if column.name in ("order_id",):
            continue
        fields[column.name] = r.value(body, column, column.name, optional=column.name in OPTIONAL_RETURN)
    order_body = body.get("order")
    order = None
    if not isinstance(order_body, Mapping):
        r.bad("order", "is required" if order_body is None else f"got {_show(order_body)}",
              "an object with the order's contract fields and its items")
    else:
        order = _order(r, order_body, fields.get("customer_id"))
    requested = fields["requested_at"] or now
    if order is not None and fields["requested_at"] is not None and requested < order.placed_at:
        r.bad("requested_at", f"{requested.isoformat()} is before the order was placed ({order.placed_at.isoformat()})",
              "a time at or after order.placed_at")
    if fields["requested_at"] is not None and requested > now + dt.timedelta(minutes=5):
        r.bad("requested_at", f"{requested.isoformat()} is in the future", "a time no later than now")
    if r.problems:
        raise RequestInvalid(r.problems)
    assert order is not None
    return ReturnRequest(
        return_id=fields["return_id"], customer_id=fields["customer_id"], requested_at=requested,
        return_type=fields["return_type"], channel=fields["channel"], reason=fields["reason"],
        items_count=fields["items_count"], refund_amount=fields["refund_amount"],
        refund_method=fields["refund_method"], refund_token=fields["refund_token"],
        has_receipt=True if fields["has_receipt"] is None else fields["has_receipt"], store_id=fields["store_id"],
        order=order)


def _order(r: _Reader, body: Mapping[str, Any], returner: str | None) -> OrderContext | None:
    values: dict[str, Any] = {}
    for column in ORDERS.columns:
        values[column.name] = r.value(body, column, f"order.{column.name}", optional=column.name in OPTIONAL_ORDER)
    placed, delivered = values["placed_at"], values["delivered_at"]
    if placed is not None and delivered is not None and delivered < placed:
        r.bad("order.delivered_at", f"{delivered.isoformat()} is before placed_at {placed.isoformat()}",
              "a time at or after order.placed_at")
    items = _items(r, body.get("items"))
    if r.problems or items is None:
        return None
    return OrderContext(
        order_id=values["order_id"], customer_id=values["customer_id"] or returner or "", placed_at=placed,
        delivered_at=delivered, channel=values["channel"], order_total=values["order_total"],
        currency=values["currency"], payment_token=values["payment_token"], address_token=values["address_token"],
        device_token=values["device_token"], items=items)


def _items(r: _Reader, raw: Any) -> tuple[OrderItem, ...] | None:
    if not isinstance(raw, list) or not raw:
        r.bad("order.items", "is required" if raw is None else f"got {_show(raw)}",
              "a non-empty list of the order's lines (line_no, sku, category, unit_price, quantity)")
        return None
    if len(raw) > MAX_ITEMS:
        r.bad("order.items", f"has {len(raw)} lines", f"at most {MAX_ITEMS} lines")
        return None
    items, seen = [], set()
    wanted = [c for c in ORDER_ITEMS.columns if c.name in ("line_no", "sku", "category", "unit_price", "quantity")]
    for i, line in enumerate(raw):
        path = f"order.items[{i}]"
        if not isinstance(line, Mapping):
            r.bad(path, f"got {_show(line)}", "an object")
            continue
        v = {c.name: r.value(line, c, f"{path}.{c.name}") for c in wanted}
        if v["line_no"] is not None and v["line_no"] in seen:
            r.bad(f"{path}.line_no", f"{v['line_no']} appears twice", "line numbers unique within the order")
        seen.add(v["line_no"])
        if all(value is not None for value in v.values()):
            items.append(OrderItem(**v))
    return tuple(items) if len(items) == len(raw) else None
