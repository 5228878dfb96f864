"""A return request as the scoring API receives it: contract field names, checked field by field.

The body carries the return (the contract's `returns` columns) and its order context (the
`orders` columns and the order's `items`, the `order_items` columns), so that returns on
orders the store has never seen can still be scored. Every problem is collected, not just
the first: the client learns all it must fix from one response.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from fraud_service.data.contract import (
    FIRST_YEAR,
    IDENTIFIER_TEXT,
    LAST_YEAR,
    MAX_AMOUNT,
    MAX_COUNT,
    ORDER_ITEMS,
    ORDERS,
    RETURNS,
    Column,
    Kind,
    fold,
    hidden_character,
    is_identifier,
    reordering_control,
    shows_nothing,
    utc_instant,
)
from fraud_service.errors import Problem, RequestInvalid, TimeOutOfRange

MAX_ITEMS = 500
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


# -- the body's schema: pydantic models built from the data contract's columns ------------------------------
# The same models validate requests and generate the OpenAPI document's schemas (api/openapi.py), so the two
# cannot drift; the contract's columns (names, kinds, enums, bounds, lengths) are their single source.


def _utc(raw: Any) -> dt.datetime:
    """An ISO 8601 text as an aware UTC time (naive means UTC)."""
    if not isinstance(raw, str):
        raise PydanticCustomError("timestamp", "got {got}", {"got": show(raw)})
    try:
        return utc_instant(raw)
    except TimeOutOfRange:
        raise PydanticCustomError("timestamp_range", "got {got}", {"got": show(raw)}) from None
    except ValueError:
        raise PydanticCustomError("timestamp", "got {got}", {"got": show(raw)}) from None


def _integral(raw: Any) -> Any:
    """2.0 is an integer in JSON (and in the JSON Schema the document states): taken as 2; 2.5 stays refused."""
    return int(raw) if isinstance(raw, float) and raw.is_integer() else raw


def _unsigned_zero(value: float) -> float:
    """-0.0 passes "at least 0"; it is stored, shown and summed as 0.0."""
    return value + 0.0  # -0.0 + 0.0 is 0.0; every other value is unchanged


Time = Annotated[dt.datetime, BeforeValidator(_utc), WithJsonSchema({"type": "string", "format": "date-time"})]

def _identifier(text: str) -> str:
    if (hidden := hidden_character(text)) is not None:
        raise PydanticCustomError("identifier_text", "holds {hidden}", {"hidden": hidden})
    return text


def visible_text(text: str) -> str:
    """TEXT, or a pydantic error when it shows nothing (a note of zero-width spaces passed `\\S`: nobody can read
    it); for the JSON API's free text."""
    if shows_nothing(text):
        raise PydanticCustomError("blank_text", "shows nothing")
    if (control := reordering_control(text)) is not None:  # shows in another order than it is written
        raise PydanticCustomError("reordered_text", "holds a character that reorders how it shows: {control}",
                                  {"control": control})
    return text


def _annotation(column: Column) -> Any:
    """The pydantic type of a contract column's value in a request."""
    kind = column.kind
    if kind is Kind.STR:
        text = Annotated[StrictStr, Field(min_length=1, max_length=column.max_length,
                                          pattern=rf"^(?:{column.pattern})$" if column.pattern else r"\S")]
        if column.fold:  # `gbp ` is GBP: only its form is checked, a client's casing is no reason to refuse
            return Annotated[text, BeforeValidator(functools.partial(fold, how=column.fold))]
        return Annotated[text, AfterValidator(_identifier)] if is_identifier(column.name) else text
    if kind is Kind.ENUM:
        return Literal.__getitem__(column.values)
    if kind is Kind.BOOL:
        return StrictBool
    if kind is Kind.TIMESTAMP:
        return Time
    bounds: dict[str, Any] = {"gt": 0} if column.strictly_positive else (
        {"ge": column.minimum} if column.minimum is not None else {})
    if kind is Kind.INT:
        return Annotated[int, Field(strict=True, le=MAX_COUNT, **bounds), BeforeValidator(_integral)]
    return Annotated[float, Field(strict=True, allow_inf_nan=False, le=MAX_AMOUNT, **bounds),
                     AfterValidator(_unsigned_zero)]


def _fields(columns: Iterable[Column], optional: set[str], descriptions: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for column in columns:
        annotation = _annotation(column)
        description = descriptions.get(column.name)
        if column.nullable or column.name in optional:
            fields[column.name] = (annotation | None, Field(default=None, description=description))
        else:
            fields[column.name] = (annotation, Field(description=description))
    return fields


_MODEL = ConfigDict(extra="ignore", hide_input_in_errors=True)
ITEM_FIELDS = ("line_no", "sku", "category", "unit_price", "quantity")
OrderItemBody = create_model(
    "OrderItem", __config__=_MODEL,
    **_fields([c for c in ORDER_ITEMS.columns if c.name in ITEM_FIELDS], set(), {}))
OrderBody = create_model(
    "Order", __config__=_MODEL,
    items=(Annotated[list[OrderItemBody], Field(min_length=1, max_length=MAX_ITEMS)],  # type: ignore[valid-type]
           Field(description="the order's lines")),
    **_fields(ORDERS.columns, OPTIONAL_ORDER, {"customer_id": "the buyer (default: the returner)"}))
ReturnRequestBody = create_model(
    "ReturnRequest", __config__=_MODEL,
    __doc__="One return request in the data contract's field names, with its order context. Checks beyond this "
            "schema (requested_at not in the future nor before the order, even when left out; delivered_at not "
            "before placed_at nor in the future; unique line numbers) also answer 422.",
    order=(OrderBody, Field(description="the order the return is for, with its lines")),
    **_fields([c for c in RETURNS.columns if c.name != "order_id"], OPTIONAL_RETURN,
              {"requested_at": "default: now", "has_receipt": "default: true"}))


def parse_request(body: Any, now: dt.datetime) -> ReturnRequest:
    """A ReturnRequest from a decoded JSON body, or RequestInvalid naming every bad field."""
    if not isinstance(body, Mapping):
        raise RequestInvalid([Problem("$", f"got {type(body).__name__}", "a JSON object")])
    try:
        parsed = ReturnRequestBody.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid([_problem(error, body) for error in exc.errors(include_url=False)]) from None
    order = parsed.order
    problems = []
    requested, placed, after_placed = parsed.requested_at or now, order.placed_at, "a time at or after order.placed_at"
    future, no_later = now + dt.timedelta(minutes=5), "a time no later than now"  # five minutes for clocks apart
    if parsed.requested_at is None and placed > requested:  # requested now, so the order is placed in the future
        problems.append(Problem("order.placed_at", f"{placed.isoformat()} is in the future (requested_at, left out, "
                                                   "is now)", "a time no later than requested_at"))
    elif requested < placed:
        problems.append(Problem("requested_at", f"{requested.isoformat()} is before the order was placed "
                                                f"({placed.isoformat()})", after_placed))
    if requested > future:
        problems.append(Problem("requested_at", f"{requested.isoformat()} is in the future", no_later))
    if order.delivered_at is not None and order.delivered_at < placed:
        problems.append(Problem("order.delivered_at", f"{order.delivered_at.isoformat()} is before placed_at "
                                                      f"{placed.isoformat()}", after_placed))
    elif order.delivered_at is not None and order.delivered_at > future:
        problems.append(Problem("order.delivered_at", f"{order.delivered_at.isoformat()} is in the future",
                                no_later))
    seen: set[int] = set()
    for i, line in enumerate(order.items):
        if line.line_no in seen:
            problems.append(Problem(f"order.items[{i}].line_no", f"{line.line_no} appears twice",
                                    "line numbers unique within the order"))
        seen.add(line.line_no)
    if problems:
        raise RequestInvalid(problems)
    return ReturnRequest(
        return_id=parsed.return_id, customer_id=parsed.customer_id, requested_at=requested,
        return_type=parsed.return_type, channel=parsed.channel, reason=parsed.reason,
        items_count=parsed.items_count, refund_amount=parsed.refund_amount, refund_method=parsed.refund_method,
        refund_token=parsed.refund_token, has_receipt=True if parsed.has_receipt is None else parsed.has_receipt,
        store_id=parsed.store_id,
        order=OrderContext(
            order_id=order.order_id, customer_id=order.customer_id or parsed.customer_id, placed_at=order.placed_at,
            delivered_at=order.delivered_at, channel=order.channel, order_total=order.order_total,
            currency=order.currency, payment_token=order.payment_token, address_token=order.address_token,
            device_token=order.device_token,
            items=tuple(OrderItem(i.line_no, i.sku, i.category, i.unit_price, i.quantity) for i in order.items)))


# -- pydantic's errors in the words of the contract -----------------------------------------------------------


_BOUNDS = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("of at least", "ge"),
           "less_than": ("below", "lt"), "less_than_equal": ("of at most", "le")}


def _number(value: Any) -> str:
    return f"{int(value) if float(value).is_integer() else value:,}"


def bound_expected(kind: str, ctx: Mapping[str, Any]) -> str | None:
    """What a value that broke a bound or range of pydantic's error KIND (with its CTX) should have been, in the
    contract's words; None for kinds that are not one (the request body and the API's other bodies share it)."""
    if kind == "finite_number":
        return "a finite number"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"a number {words} {_number(ctx[key])}"
    if kind == "timestamp_range":
        return f"a time in the years {FIRST_YEAR} to {LAST_YEAR} (UTC)"
    return None


def _problem(error: Any, body: Mapping[str, Any]) -> Problem:
    loc = error["loc"]
    path, raw = error_path(loc), value_at(body, loc)
    column = _column(loc)
    kind, ctx = error["type"], error.get("ctx") or {}
    got = f"got {show(raw)}"
    if path == "order":
        return Problem(path, "is required" if raw is None else got,
                       "an object with the order's contract fields and its items")
    if path == "order.items":
        if kind == "too_long":
            return Problem(path, f"has {len(raw)} lines", f"at most {MAX_ITEMS} lines")
        return Problem(path, "is required" if raw is None else got,
                       "a non-empty list of the order's lines (" + ", ".join(ITEM_FIELDS) + ")")
    if column is None:  # an order line that is not an object
        return Problem(path, got, "an object")
    if kind == "missing" or raw is None:
        return Problem(path, "is required", _expected(column))
    if kind == "string_too_long":
        return Problem(path, f"is {len(raw)} characters long", f"at most {ctx['max_length']} characters")
    if (expected := bound_expected(kind, ctx)) is not None:
        return Problem(path, got, expected)
    if kind == "identifier_text":
        return Problem(path, f"holds {ctx['hidden']}", IDENTIFIER_TEXT)
    return Problem(path, got, _expected(column))


def _expected(column: Column) -> str:
    if column.shape:
        return column.shape
    return {Kind.STR: "a non-empty string", Kind.ENUM: "one of " + ", ".join(column.values),
            Kind.BOOL: "true or false", Kind.INT: "an integer", Kind.DECIMAL: "a number"}.get(
        column.kind, column.kind.describe())


def _column(loc: tuple[Any, ...]) -> Column | None:
    """The contract column a pydantic error location names (None for a line that is not an object)."""
    name = loc[-1]
    if not isinstance(name, str):
        return None
    table = RETURNS if len(loc) == 1 else ORDERS if len(loc) == 2 else ORDER_ITEMS
    return next((c for c in table.columns if c.name == name), None)


def error_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the field path problems name: `order.items[0].sku` (`$` for the body)."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "$"


def value_at(body: Any, loc: tuple[Any, ...]) -> Any:
    """The value at LOC in the raw body (None when absent)."""
    for part in loc:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def show(raw: Any) -> str:
    """A sent value as a problem quotes it: its repr, cut to 60 characters."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
