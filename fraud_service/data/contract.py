"""The data contract (shared/DATA_CONTRACT.md) as data: tables, columns, types, keys and references.

Everything that reads or writes contract tables (ingest, the generator, the importer,
the feature pipeline) takes its column lists from here, so there is one definition.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from fraud_service.errors import TimeOutOfRange

MAX_TEXT = 200
"""The longest text a contract string (or a request's, or a list entry's) may be."""
MAX_COUNT = 1_000_000
"""The largest count (quantity, items, line number) a dataset row or a request may carry."""
MAX_AMOUNT = 1_000_000_000
"""The largest money amount (price, order total, refund) a dataset row or a request may carry: far above any
real one, and far below what the features' sums in millionths of a unit (64-bit integers) hold."""
FUTURE_SLACK = dt.timedelta(days=1)
"""How far ahead of the ingesting machine's clock a dataset's time may be (clocks and exports that write local time
as UTC); a later time is a fact that has not happened."""
FIRST_YEAR, LAST_YEAR = 1678, 2261
"""The whole years (in UTC) a timestamp may fall in, in a dataset and in a request: the features are computed on
pandas' nanosecond timestamps, which span 1677-09-21 to 2262-04-11."""


def utc_instant(text: str) -> dt.datetime:
    """TEXT, an ISO 8601 time (naive means UTC; `Z` taken), as an aware UTC time. ValueError when it is not one,
    TimeOutOfRange when it falls outside the years FIRST_YEAR to LAST_YEAR (or outside the times Python can hold in
    UTC, as 0001-01-01T00:30+01:00)."""
    stamp = dt.datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    try:
        stamp = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:30+01:00 is before year 1 in UTC, 9999-12-31T23:59-01:00 after 9999
        edge = "before the first" if stamp.year == 1 else "after the last"
        raise TimeOutOfRange(f"{text.strip()[:80]!r} is {edge} time in UTC") from None
    if not FIRST_YEAR <= stamp.year <= LAST_YEAR:  # what the features' nanosecond timestamps hold, as in a dataset
        raise TimeOutOfRange(f"{text.strip()[:80]!r} is outside the years {FIRST_YEAR} to {LAST_YEAR} (UTC)")
    return stamp


class Kind(StrEnum):
    """The logical type of a contract column."""

    STR = "str"
    TIMESTAMP = "timestamp"
    DECIMAL = "decimal"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"

    def describe(self) -> str:
        """What a value of this kind must look like, for error messages."""
        return {
            Kind.STR: "a string",
            Kind.TIMESTAMP: "an ISO 8601 timestamp (with an offset, or naive meaning UTC)",
            Kind.DECIMAL: "a decimal number",
            Kind.INT: "an integer",
            Kind.BOOL: "a boolean (true/false, 1/0, yes/no)",
            Kind.ENUM: "one of the allowed values",
        }[self]


@dataclass(frozen=True)
class Column:
    """One column: its kind, whether it may be empty, and its allowed values for enums."""

    name: str
    kind: Kind
    nullable: bool = False
    values: tuple[str, ...] = ()
    minimum: float | None = None
    strictly_positive: bool = False
    max_length: int = MAX_TEXT
    """The longest text a string column holds (identifiers, tokens, reasons), in characters."""
    pattern: str | None = None
    """A regular expression (RE2 and Rust's regex alike) a string column's whole value matches."""
    shape: str = ""
    """What PATTERN asks for, in words, for error messages."""
    fold: str = ""
    """`upper`: values are taken without surrounding spaces and in capitals before PATTERN (`gbp` is GBP); `lower`:
    without surrounding spaces and in small letters (`Apparel ` is apparel: the category and reason names features
    match are the contract's examples, and a retailer's casing would leave them at zero)."""


@dataclass(frozen=True)
class Reference:
    """A foreign key: `column` of this table must exist as `target_column` of `target`."""

    column: str
    target: str
    target_column: str


@dataclass(frozen=True)
class TimeOrder:
    """`column` of this table must not be earlier than `target_time` of the row it references."""

    column: str
    via: str
    target: str
    target_key: str
    target_time: str


@dataclass(frozen=True)
class Table:
    """A contract table with its natural key and the column that orders it in time."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None
    references: tuple[Reference, ...] = ()
    time_orders: tuple[TimeOrder, ...] = ()
    optional: bool = False
    row_checks: tuple[tuple[str, str, str], ...] = field(default=())
    whole_by: str | None = None
    """The key of a parent table whose rows come whole with this table's: a dataset bringing a parent row and rows of
    this table for it replaces every stored row of it (an order sent again with its lines, one line fewer, has one
    line fewer); rows for a parent the dataset does not bring are added or updated by their own key (a line added
    to an order)."""

    @property
    def column_names(self) -> list[str]:
        """Column names in contract order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """The column called `name`."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


ORDER_CHANNELS = ("web", "app", "store", "marketplace")
RETURN_TYPES = ("return", "item_not_received", "damaged_on_arrival", "wrong_item")
RETURN_CHANNELS = ("mail", "store", "returnless")
REFUND_METHODS = ("original_payment", "store_credit", "gift_card", "other_payment")
LABELS = ("fraud", "abuse", "legit")
LABEL_SOURCES = ("analyst", "inspection", "chargeback", "customer_service")
INSPECTION_OUTCOMES = ("ok", "worn", "damaged", "wrong_item", "empty_box", "missing_parts")

S, T, D, N, B, E = Kind.STR, Kind.TIMESTAMP, Kind.DECIMAL, Kind.INT, Kind.BOOL, Kind.ENUM

CUSTOMERS = Table(
    name="customers",
    columns=(
        Column("customer_id", S),
        Column("created_at", T),
        Column("email_domain", S, nullable=True),
        Column("loyalty_tier", S, nullable=True),
    ),
    key=("customer_id",),
    time_column="created_at",
)

ORDERS = Table(
    name="orders",
    columns=(
        Column("order_id", S),
        Column("customer_id", S),
        Column("placed_at", T),
        Column("delivered_at", T, nullable=True),
        Column("channel", E, values=ORDER_CHANNELS),
        Column("payment_token", S),
        Column("address_token", S, nullable=True),
        Column("device_token", S, nullable=True),
        Column("order_total", D, minimum=0),
        Column("currency", S, pattern="[A-Z]{3}", fold="upper",
               shape="an ISO 4217 currency code: three letters, e.g. GBP"),
    ),
    key=("order_id",),
    time_column="placed_at",
    references=(Reference("customer_id", "customers", "customer_id"),),
    row_checks=(("delivered_at", "placed_at", "delivered_at must not be before placed_at"),),
)

ORDER_ITEMS = Table(
    name="order_items",
    columns=(
        Column("order_id", S),
        Column("line_no", N, minimum=0),
        Column("sku", S),
        Column("category", S, fold="lower"),
        Column("unit_price", D, minimum=0),
        Column("list_price", D, nullable=True, minimum=0),
        Column("quantity", N, strictly_positive=True),
    ),
    key=("order_id", "line_no"),
    time_column=None,
    references=(Reference("order_id", "orders", "order_id"),),
    whole_by="order_id",
)

RETURNS = Table(
    name="returns",
    columns=(
        Column("return_id", S),
        Column("order_id", S),
        Column("customer_id", S),
        Column("requested_at", T),
        Column("return_type", E, values=RETURN_TYPES),
        Column("channel", E, values=RETURN_CHANNELS),
        Column("reason", S, fold="lower"),
        Column("items_count", N, strictly_positive=True),
        Column("refund_amount", D, minimum=0),
        Column("refund_method", E, values=REFUND_METHODS),
        Column("refund_token", S, nullable=True),
        Column("has_receipt", B),
        Column("store_id", S, nullable=True),
    ),
    key=("return_id",),
    time_column="requested_at",
    references=(
        Reference("order_id", "orders", "order_id"),
        Reference("customer_id", "customers", "customer_id"),
    ),
    time_orders=(TimeOrder("requested_at", "order_id", "orders", "order_id", "placed_at"),),
)

LABELS_TABLE = Table(
    name="labels",
    columns=(
        Column("return_id", S),
        Column("label", E, values=LABELS),
        Column("labelled_at", T),
        Column("source", E, values=LABEL_SOURCES),
    ),
    key=("return_id", "labelled_at", "source"),
    time_column="labelled_at",
    references=(Reference("return_id", "returns", "return_id"),),
    time_orders=(TimeOrder("labelled_at", "return_id", "returns", "return_id", "requested_at"),),
    optional=True,
)

INSPECTIONS = Table(
    name="inspections",
    columns=(
        Column("return_id", S),
        Column("inspected_at", T),
        Column("outcome", E, values=INSPECTION_OUTCOMES),
    ),
    key=("return_id", "inspected_at"),
    time_column="inspected_at",
    references=(Reference("return_id", "returns", "return_id"),),
    time_orders=(TimeOrder("inspected_at", "return_id", "returns", "return_id", "requested_at"),),
    optional=True,
)

TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, ORDERS, ORDER_ITEMS, RETURNS, LABELS_TABLE, INSPECTIONS)
}
"""All contract tables, in dependency order (a table only references tables before it)."""


PLAIN_TEXT = "text without NUL characters or lone surrogates"
"""What a text that `text_problem` refuses was expected to be."""
MAX_DEPTH = 32
"""How deeply a request body may nest arrays and objects (a return request needs 3 levels)."""


IDENTIFIER_TEXT = ("an identifier without control, invisible formatting or line separator characters, and without "
                   "spaces at either end")
_HIDDEN = frozenset(("Cc", "Cf", "Zl", "Zp"))
"""Unicode categories an identifier may not hold: control characters (newlines, tabs), invisible formatting
(zero-width spaces and joiners, right-to-left overrides) and line or paragraph separators. An analyst reads ids on
case pages: such characters make one id look like another, or like none."""
_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
              (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
              (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
"""Unicode's Default_Ignorable_Code_Point ranges: shown as nothing, whatever their category. Beside `_HIDDEN` they
add a combining grapheme joiner (U+034F), variation selectors (U+FE0F, U+E0100) and the Hangul fillers (U+3164,
U+115F, U+FFA0): `C-BL7` followed by one of them looked like a blocked customer and passed the block list. With
them the braille blank (U+2800), which is no control but shows as nothing all the same."""
_IGNORABLE_CHARS = frozenset(chr(code) for lo, hi in _IGNORABLE for code in range(lo, hi + 1))
_ASCII_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")


def invisible(c: str) -> bool:
    """Whether the character C shows as nothing: `_HIDDEN`'s categories or `_IGNORABLE`'s code points."""
    return c in _IGNORABLE_CHARS or unicodedata.category(c) in _HIDDEN


def shows_nothing(text: str) -> bool:
    """Whether TEXT shows no character: only white space and invisible ones (a note of zero-width spaces)."""
    return all(c.isspace() or unicodedata.category(c) == "Zs" or invisible(c) for c in text)


_REORDERING = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
UNREORDERED = "text without bidirectional controls (U+202A-U+202E, U+2066-U+2069), which reorder how it shows"
"""Unicode's explicit bidirectional embeddings, overrides and isolates (and their ends): they make text show in
another order than it is written (`Refund ‮lanigiro` shows as `Refund original`). Right-to-left writing needs
none of them: its letters carry their direction."""


def reordering_control(text: str) -> str | None:
    """The first character of TEXT that reorders how the rest shows, as 'U+202E (RIGHT-TO-LEFT OVERRIDE) at 7'
    (its position from 1), or None."""
    if text.isascii():
        return None
    at = next((i for i, c in enumerate(text) if c in _REORDERING), None)
    return None if at is None else f"U+{ord(text[at]):04X} ({unicodedata.name(text[at])}) at {at + 1}"


def shown_text_problem(text: str) -> tuple[str, str] | None:
    """What makes TEXT, free text a person will read (a note, a reason, an appeal, a message), unfit: what no store
    holds (`text_problem`) or a character that reorders how it shows; as (problem, what was expected), or None."""
    if (problem := text_problem(text)) is not None:
        return problem, PLAIN_TEXT
    if (control := reordering_control(text)) is not None:
        return f"holds a character that reorders how it shows: {control}", UNREORDERED
    return None


def fold(value: object, how: str = "upper") -> object:
    """VALUE without surrounding spaces, in capitals (HOW `upper`) or small letters (`lower`), when it is text (a
    `Column.fold` column's value)."""
    if not isinstance(value, str):
        return value
    return value.strip().upper() if how == "upper" else value.strip().lower()


def is_identifier(column: str) -> bool:
    """True for the columns that hold ids and tokens, which may not hold invisible characters (`invisible`)."""
    return column.endswith(("_id", "_token")) or column == "sku"


HIDDEN_RE2 = ("[" + "".join(f"\\p{{{category}}}" for category in sorted(_HIDDEN))
              + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in _IGNORABLE) + "]|^\\p{Zs}|\\p{Zs}$")
"""A regular expression (RE2's syntax, as pyarrow's compute functions take) matching any character an identifier
may not hold, or a space at either end (`tok ` would be another token than `tok`: a blocked card, padded, would
pass the block list, and a ring's device would look new)."""


def hidden_character(value: str) -> str | None:
    """The first character of VALUE an identifier may not hold, as 'U+200B (ZERO WIDTH SPACE)', or a space at either
    end, as 'U+0020 (SPACE) at its end'; None if none."""
    if value.isascii():  # most ids: only control characters can hide there, and spaces at the ends
        found = _ASCII_CONTROL_RE.search(value)
        hidden = found.group() if found is not None else None
    else:
        hidden = next((c for c in value if invisible(c)), None)
    if hidden is not None:
        return f"U+{ord(hidden):04X} ({unicodedata.name(hidden, 'a control character')})"
    for end, at in ((value[:1], "start"), (value[-1:], "end")):
        if end and unicodedata.category(end) == "Zs":
            return f"U+{ord(end):04X} ({unicodedata.name(end, 'a space')}) at its {at}"
    return None


def text_problem(value: str) -> str | None:
    """What makes VALUE unfit to store as text (a NUL character, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def repeated_key(pairs: list[tuple[str, object]]) -> str | None:
    """The first key one JSON object's PAIRS (as `json.loads` hands them to `object_pairs_hook`) write twice, or None:
    a JSON reader keeps one value or the other."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def value_problems(value: object, path: str = "", limit: int = 20) -> list[tuple[str, str, str]]:
    """(path, problem, expected) for every part of a decoded JSON value that no field may hold: nesting deeper
    than MAX_DEPTH, numbers that are not finite, text with NUL characters or lone surrogates (keys included).
    At most LIMIT of them. Walked without recursion, so no depth can exhaust the stack."""
    found: list[tuple[str, str, str]] = []
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack and len(found) < limit:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                found.append((where or "$", f"nests deeper than {MAX_DEPTH} levels", f"at most {MAX_DEPTH} levels"))
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    found.append((where or "$", f"a key {problem}", "keys of plain text"))
                    continue
                inner = (f"{where}.{key}" if where else str(key)) if isinstance(item, dict) else f"{where}[{key}]"
                stack.append((child, inner, depth + 1))
        elif isinstance(item, float) and not math.isfinite(item):
            found.append((where or "$", f"got {item}", "a finite number"))
        elif isinstance(item, str) and (problem := text_problem(item)) is not None:
            found.append((where or "$", problem, PLAIN_TEXT))
    return sorted(found)
