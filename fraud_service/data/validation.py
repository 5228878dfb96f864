"""Row-level validation of contract tables: every problem names file, row, column, value and expectation.

Parsing turns raw frames (CSV text or typed parquet) into typed frames; checks that span
rows and tables (duplicates, references, time order) run on the typed frames. Problems are
grouped by (file, column, check) and each group keeps a few examples and an exact count,
so a million bad rows make a readable report rather than a million lines.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraud_service.data.contract import (
    FIRST_YEAR,
    FUTURE_SLACK,
    HIDDEN_RE2,
    IDENTIFIER_TEXT,
    LAST_YEAR,
    MAX_AMOUNT,
    MAX_COUNT,
    Column,
    Kind,
    Table,
    hidden_character,
    is_identifier,
)

ROW = "_row"
"""Name of the column that carries each row's 1-based position in its file (header not counted)."""

EXAMPLES_PER_GROUP = 20
OFFSET_SUFFIX = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
"""A time with a zone (Z or an offset) at the end of an ISO 8601 value, extended (14:59:13) or basic (145913)."""
MISSING_AS_TEXT = frozenset(("null", "none", "nan", "n/a", "undefined",  # SQL, Python, JSON exports
                             "na", "<na>", "#n/a", "#na", "#n/a n/a", "-nan", "nat",  # R, pandas, spreadsheets
                             "\\n", "nil", "(null)", "<null>"))  # MySQL, Hive and PostgreSQL text dumps (\N); Ruby, C
"""What exports write for a missing value, lower-cased: read as missing in a column that may be empty and is not free
text (`_spelled_missing`), kept as written in one that may not be empty ("None" could be an id there, and the API
takes it)."""
LONGEST_MISSING = max(map(len, MISSING_AS_TEXT))
TRUE_TEXT = {"true", "t", "yes", "y", "1"}
FALSE_TEXT = {"false", "f", "no", "n", "0"}


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is and what was expected instead."""

    file: str
    row: int | None
    column: str | None
    value: str | None
    expected: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column {self.column}"
        value = "" if self.value is None else f": got {self.value!r}"
        return f"{where}{value}; expected {self.expected}"


@dataclass
class ProblemGroup:
    """All problems of one check on one column of one file."""

    file: str
    column: str | None
    check: str
    count: int = 0
    examples: list[Problem] = field(default_factory=list)


class Report:
    """Collects problems; empty means the dataset may be written."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str | None, str], ProblemGroup] = {}
        self.notes: list[str] = []  # what was taken, but not quite as written (said, not refused)

    def __bool__(self) -> bool:
        return bool(self.groups)

    @property
    def count(self) -> int:
        """Total number of problems, all groups together."""
        return sum(g.count for g in self.groups.values())

    def add(self, file: str, column: str | None, check: str, expected: str,
            row: int | None = None, value: object = None) -> None:
        """Record one problem."""
        group = self._group(file, column, check)
        group.count += 1
        if len(group.examples) < EXAMPLES_PER_GROUP:
            group.examples.append(Problem(file, row, column, _text(value), expected))

    def add_rows(self, file: str, column: str | None, check: str, expected: str,
                 rows: Iterable[int], values: Iterable[object], count: int) -> None:
        """Record `count` problems at once, keeping the first examples."""
        if count == 0:
            return
        group = self._group(file, column, check)
        group.count += count
        room = EXAMPLES_PER_GROUP - len(group.examples)
        for row, value in list(zip(rows, values, strict=False))[:room]:
            group.examples.append(Problem(file, int(row), column, _text(value), expected))

    def _group(self, file: str, column: str | None, check: str) -> ProblemGroup:
        key = (file, column, check)
        if key not in self.groups:
            self.groups[key] = ProblemGroup(file, column, check)
        return self.groups[key]

    def checks(self) -> set[str]:
        """The names of the checks that failed."""
        return {g.check for g in self.groups.values()}

    def render(self) -> str:
        """A human-readable report: one block per group, examples first, then how many more."""
        lines = [f"{self.count} problem(s) in {len(self.groups)} group(s):"]
        for g in self.groups.values():
            col = f" column {g.column}" if g.column else ""
            whole = all(p.row is None for p in g.examples)  # the column or the file itself, not some of its rows
            extent = f"{g.count} row(s)" if not whole else "the whole column" if g.column else "the file"
            lines.append(f"- {g.file}{col}: {g.check} ({extent})")
            for p in g.examples:
                lines.append(f"    {p}")
            if g.count > len(g.examples):
                lines.append(f"    ... and {g.count - len(g.examples)} more like these")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """The same report as plain data (for --report FILE)."""
        return {
            "problems": self.count,
            "groups": [
                {
                    "file": g.file,
                    "column": g.column,
                    "check": g.check,
                    "count": g.count,
                    "examples": [p.__dict__ for p in g.examples],
                }
                for g in self.groups.values()
            ],
        }


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return str(value)


def _is_null(raw: pd.Series) -> pd.Series:
    """Missing, or text that is empty or only white space."""
    nulls = raw.isna()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        try:
            text = pa.array(raw, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: the slow, general path
            return nulls | raw.astype("string").str.strip().fillna("").eq("")
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), False)
        nulls |= pd.Series(blank.to_numpy(zero_copy_only=False), index=raw.index)
    return nulls


def parse_table(table: Table, raw: pd.DataFrame, file: str, report: Report) -> pd.DataFrame:
    """Type every contract column of `raw`; bad values become nulls and problems in `report`.

    Returns a frame with the contract columns (those present) plus ROW; extra columns are dropped.
    """
    missing = [c for c in table.column_names if c not in raw.columns]
    for name in missing:
        near = [str(c) for c in raw.columns if isinstance(c, str) and c.strip().lower() == name and c != name]
        found = f"; the file has {near[0]!r} (names are exact: case and spaces count)" if near else ""
        report.add(file, name, "missing required column",
                   f"a column named {name!r} ({table.column(name).kind.describe()}){found}")
    out = pd.DataFrame({ROW: raw[ROW].to_numpy()}) if ROW in raw.columns else pd.DataFrame(
        {ROW: np.arange(1, len(raw) + 1)})
    for column in table.columns:
        if column.name in missing:
            continue
        out[column.name] = _parse_column(column, raw[column.name].reset_index(drop=True),
                                         out[ROW], file, report)
    return out


def _spelled_missing(column: Column, raw: pd.Series, nulls: pd.Series, file: str, report: Report) -> pd.Series:
    """Which values of a nullable COLUMN are a word exports write for a missing value (`MISSING_AS_TEXT`: R's NA,
    SQL's NULL, MySQL's \\N, ...), noted in REPORT. In a timestamp, number or flag such a word can only mean missing,
    and in an id or token it would make every such row share one identifier (a helper's dataset with `NA` for a
    missing device put 5,518 orders on one device); they are read as missing, with a note. Free text (an email
    domain, a loyalty tier) keeps them as written: "None" may be a tier."""
    free_text = column.kind is Kind.STR and not is_identifier(column.name)
    textual = raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype)
    if not column.nullable or free_text or not textual:
        return pd.Series(False, index=raw.index)
    text = raw.where(~nulls).astype("string")
    short = text[text.str.len().le(LONGEST_MISSING + 2).fillna(False).astype(bool)]  # NFKC reads ＮＵＬＬ as NULL
    spelled = short.str.strip().str.normalize("NFKC").str.lower().isin(MISSING_AS_TEXT).astype(bool).reindex(
        raw.index, fill_value=False)
    if spelled.any():
        words = ", ".join(repr(w) for w in sorted(set(text[spelled].astype(str)))[:3])
        report.notes.append(f"{file} column {column.name}: {int(spelled.sum()):,} value(s) written as {words} read as "
                            "missing (the contract's empty cell)")
    return spelled


def _parse_column(column: Column, raw: pd.Series, rows: pd.Series, file: str,
                  report: Report) -> pd.Series:
    nulls = _is_null(raw)
    spelled = _spelled_missing(column, raw, nulls, file, report)
    if spelled.any():
        raw = raw.where(~spelled, None)
        nulls = nulls | spelled
    parsed = _PARSERS[column.kind](column, raw, nulls, rows, file, report)
    if not column.nullable:
        report.add_rows(file, column.name, "missing value", f"a value ({column.kind.describe()})",
                        rows[nulls], raw[nulls], int(nulls.sum()))
    if column.kind in (Kind.INT, Kind.DECIMAL):
        numbers = pd.to_numeric(parsed, errors="coerce")
        top = MAX_COUNT if column.kind is Kind.INT else MAX_AMOUNT
        low, least = (numbers.le(0), "greater than 0") if column.strictly_positive else (
            (numbers.lt(column.minimum), f">= {column.minimum:g}") if column.minimum is not None
            else (numbers.lt(-top), f">= {-top:,}"))
        bad = (low | numbers.gt(top)).fillna(False).astype(bool)
        report.add_rows(file, column.name, "out of range", f"a number {least} and at most {top:,}", rows[bad],
                        raw[bad], int(bad.sum()))
    return parsed


def _wrong_dtype(column: Column, raw: pd.Series, file: str, report: Report, hint: str = "") -> None:
    report.add(file, column.name, "wrong type",
               f"{column.kind.describe()}, but the column is stored as {raw.dtype}{hint}")


def _report_unparsed(column: Column, raw: pd.Series, nulls: pd.Series, parsed_null: pd.Series,
                     rows: pd.Series, file: str, report: Report, expected: str | None = None) -> None:
    bad = parsed_null & ~nulls
    report.add_rows(file, column.name, "wrong type" if column.kind != Kind.ENUM else "unknown value",
                    expected or column.kind.describe(), rows[bad], raw[bad], int(bad.sum()))


def _id_text(value: object) -> object:
    """VALUE as the text of an identifier when it is a whole number stored as a decimal (a NUMBER(38,0) export) or a
    UUID (duckdb's and Spark's UUID type): the text everyone writes for it. Anything else as it is."""
    if isinstance(value, Decimal) and value.is_finite() and int(value.as_tuple().exponent) >= 0:
        return str(int(value))  # 536365 or 5E+3; not 100.00 (a decimal(10,2) prints so, as a float id prints 12346.0)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _parse_str(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
               report: Report) -> pd.Series:
    if nulls.all():  # nothing to misread: an empty table pandas typed float64, a column of nulls
        return pd.Series([None] * len(raw), dtype=object)
    if pd.api.types.is_integer_dtype(raw.dtype):
        numbers = raw.astype("Int64").astype("string").astype(object).where(~nulls, None)
        if column.pattern is not None:  # 826, a numeric ISO 4217 code, is not one of the letters asked for
            _check_pattern(column, numbers.fillna("").astype(str), nulls, rows, file, report)
        return numbers
    if pd.api.types.is_float_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype) or (
        pd.api.types.is_datetime64_any_dtype(raw.dtype)
    ):
        _wrong_dtype(column, raw, file, report,
                     " (identifiers must be text: a float turns 12346 into '12346.0')")
        return pd.Series([None] * len(raw), dtype=object)
    values = raw.astype(object).where(~nulls, None)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = values.map(_id_text)
        if values.map(lambda v: isinstance(v, Decimal)).any():  # once for the column, as a float column is
            _wrong_dtype(column, raw, file, report,
                         " of decimals with a scale (identifiers must be text: a decimal(10,2) prints 12 as 12.00)")
            return pd.Series([None] * len(raw), dtype=object)
        # a list, a mapping or bytes (a parquet list, struct or binary column) is not text: refused, not printed
        not_text = values.map(lambda v: v is not None and not isinstance(v, str | int)).astype(bool)
        report.add_rows(file, column.name, "wrong type", "text (a string), not a list, mapping or bytes",
                        rows[not_text], values[not_text].map(lambda v: f"{type(v).__name__} {v!r}"[:80]),
                        int(not_text.sum()))
        values = values.where(~not_text, None).map(lambda v: v if v is None else str(v))
    text = values.fillna("").astype(str)
    if is_identifier(column.name):
        text, values = _unpadded(column, text, values, nulls, file, report)
    unstorable = text.str.contains("\x00", regex=False)
    report.add_rows(file, column.name, "NUL character", "text without NUL characters", rows[unstorable],
                    text[unstorable].str.replace("\x00", "\\0", regex=False), int(unstorable.sum()))
    long = text.str.len() > column.max_length
    report.add_rows(file, column.name, "too long", f"at most {column.max_length} characters", rows[long],
                    text[long].str.slice(0, 60) + "...", int(long.sum()))
    sent = text
    if column.fold:
        text = text.str.strip().str.upper() if column.fold == "upper" else text.str.strip().str.lower()
        values = text.astype(object).where(~nulls, None)
    if column.pattern is not None:
        _check_pattern(column, text.where(~long, ""), nulls | long, rows, file, report, sent)
    if is_identifier(column.name):  # the API refuses such ids, so a dataset may not bring them in either
        found = pc.match_substring_regex(pa.array(text, pa.string()), HIDDEN_RE2)  # RE2, vectorised: 0.2 s for 1M rows
        hidden = pd.Series(found.to_numpy(zero_copy_only=False), index=text.index, dtype=bool)
        report.add_rows(file, column.name, "hidden character", IDENTIFIER_TEXT, rows[hidden],
                        text[hidden].map(lambda v: f"{v!r} holds {hidden_character(v)}"), int(hidden.sum()))
    return values


def _unpadded(column: Column, text: pd.Series, values: pd.Series, nulls: pd.Series, file: str,
              report: Report) -> tuple[pd.Series, pd.Series]:
    """TEXT and VALUES of an identifier column without the spaces (U+0020) at either end of its values, which
    CHAR(n) columns of SQL exports pad ids with: the same id, taken as the API takes it (it refuses ids with spaces at
    either end), with a note. Refused, they failed a whole export. Other spaces and invisible characters at the ends
    are still refused (`hidden character`)."""
    trimmed = text.str.strip(" ")
    padded = (trimmed != text) & ~nulls
    if not padded.any():
        return text, values
    first = text[padded].iloc[0]
    report.notes.append(f"{file} column {column.name}: {int(padded.sum()):,} value(s) had spaces at either end, as "
                        "CHAR(n) columns of SQL exports pad ids; taken without them "
                        f"({first!r} as {first.strip(' ')!r})")
    return trimmed, values.where(~padded, trimmed)


def _check_pattern(column: Column, text: pd.Series, skipped: pd.Series, rows: pd.Series, file: str,
                   report: Report, sent: pd.Series | None = None) -> None:
    """Every value of TEXT but the SKIPPED ones matches COLUMN's pattern, or is a "wrong format" row (shown as
    SENT, before any folding)."""
    shaped = pc.match_substring_regex(pa.array(text, pa.string()), f"^(?:{column.pattern})$")
    unshaped = ~pd.Series(shaped.to_numpy(zero_copy_only=False), index=text.index, dtype=bool) & ~skipped
    shown = text if sent is None else sent
    report.add_rows(file, column.name, "wrong format", column.shape, rows[unshaped], shown[unshaped],
                    int(unshaped.sum()))


def _parse_enum(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
                report: Report) -> pd.Series:
    text = _parse_str(column, raw, nulls, rows, file, report)
    known = text.isin(column.values)
    _report_unparsed(column, raw, nulls, ~known, rows, file, report,
                     expected="one of " + ", ".join(column.values))
    return text.where(known, None)


def _parse_timestamp(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
                     report: Report) -> pd.Series:
    year: pd.Series
    if isinstance(raw.dtype, pd.CategoricalDtype):  # dictionary-encoded text (a pandas category): its values
        raw = raw.astype(object)
    if nulls.all() and not pd.api.types.is_datetime64_any_dtype(raw.dtype):  # an empty table pandas typed float64
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = raw.dt.tz_localize("UTC") if getattr(raw.dt, "tz", None) is None else raw.dt.tz_convert("UTC")
        year = parsed.dt.year
    elif raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        text = raw.astype("string").str.strip().where(~nulls, None)
        # parse zoned and naive values apart: pandas applies a zoned value's offset to naive ones
        # parsed in the same call, whereas the contract says naive means UTC
        zoned = text.str.contains(OFFSET_SUFFIX, regex=True).fillna(False).astype(bool)
        parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
        for mask, utc in ((zoned, True), (~zoned & ~nulls, False)):
            if mask.any():
                parsed[mask] = _iso_times(text[mask], utc).astype("datetime64[us, UTC]")
        # the year in UTC, as a request's; a well-formed date pandas cannot hold (0001, 9999) is out of range by
        # the year it names, not "not ISO 8601"
        named = pd.to_numeric(text.str.extract(r"^(\d{4})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:[T ]|$)",
                                               expand=False), errors="coerce")
        year = parsed.dt.year.astype("float64").where(parsed.notna(), named)
    else:
        _wrong_dtype(column, raw, file, report)
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    far = (~nulls & ((year < FIRST_YEAR) | (year > LAST_YEAR))).fillna(False).astype(bool)
    report.add_rows(file, column.name, "out of range", f"a timestamp in the years {FIRST_YEAR} to {LAST_YEAR}",
                    rows[far], raw[far], int(far.sum()))
    horizon = pd.Timestamp.now(tz="UTC") + FUTURE_SLACK
    ahead = (~far & (pd.Series(parsed, index=raw.index) > horizon)).fillna(False).astype(bool)
    report.add_rows(file, column.name, "in the future", f"a time that has come (before {horizon:%Y-%m-%d %H:%M} "
                    "UTC, a day ahead of this machine's clock)", rows[ahead], raw[ahead], int(ahead.sum()))
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        _report_unparsed(column, raw, nulls, parsed.isna() & ~far, rows, file, report)
    return pd.Series(parsed, index=raw.index).astype("datetime64[us, UTC]").mask(far)


def _iso_times(text: pd.Series, zoned: bool) -> pd.Series:
    """TEXT as ISO 8601 times in UTC (NaT where not one): ZONED values converted, naive ones taken as UTC. A zoned
    value the offset pattern did not see among naive ones (pandas would apply its offset to them all, or refuse the
    mix) sends the lot through one at a time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas on mixed zones: handled below
        try:
            part = pd.to_datetime(text.astype(object), format="ISO8601", utc=zoned, errors="coerce")
        except (TypeError, ValueError):
            part = None
    if part is not None and (zoned or (isinstance(part.dtype, np.dtype) and part.dtype.kind == "M")):
        return part if zoned else part.dt.tz_localize("UTC")
    one = [pd.to_datetime(v, format="ISO8601", utc=True, errors="coerce") for v in text.astype(object)]
    return pd.Series(pd.DatetimeIndex(one, tz="UTC"), index=text.index)


def _parse_decimal(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
                   report: Report) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw.dtype) or pd.api.types.is_datetime64_any_dtype(raw.dtype):
        _wrong_dtype(column, raw, file, report)
        return pd.Series(np.nan, index=raw.index, dtype="float64")
    if raw.dtype == np.float32:  # a float32 holds 22.06 as 22.059999465942383: the decimal it was written as
        raw = pd.Series([float(str(v)) for v in raw.to_numpy()], index=raw.index, dtype="float64")
    values = raw.astype(object).where(~nulls, None)
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    parsed = parsed.where(np.isfinite(parsed))
    _report_unparsed(column, raw, nulls, parsed.isna(), rows, file, report)
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        # pandas' text reader is not exact (it reads 25.389999999999997 as 25.39): the values it took are read again
        # the way Python reads them, so a CSV and a parquet file of the same data hold the same numbers
        taken = parsed.notna()
        parsed[taken] = np.array([_exact(v, p) for v, p in zip(values[taken], parsed[taken], strict=True)],
                                 dtype="float64")
    return parsed


def _exact(value: object, parsed: float) -> float:
    """VALUE (text pandas read as PARSED) as Python reads it; PARSED when Python reads no number there (a mixed
    column's True, which pandas takes for 1)."""
    try:
        return float(str(value).strip())
    except ValueError:
        return parsed


INTEGER_TEXT = r"\s*[+-]?[0-9]+(?:\.0*)?\s*"
"""An integer in a CSV cell: ASCII digits, an optional sign and an optional point followed by zeros only."""


def _parse_int(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
               report: Report) -> pd.Series:
    if pd.api.types.is_unsigned_integer_dtype(raw.dtype):  # uint64 may hold what a 64-bit signed integer cannot
        huge = (raw.fillna(0).astype("uint64") > np.iinfo(np.int64).max).to_numpy()
        report.add_rows(file, column.name, "out of range", f"an integer of at most {np.iinfo(np.int64).max:,}",
                        rows[huge], raw[huge], int(huge.sum()))
        values = np.where(huge, 0, raw.fillna(0).astype("uint64").to_numpy()).astype("int64")  # exact below 2**63
        return pd.Series(pd.arrays.IntegerArray(values, huge | nulls.to_numpy()), index=raw.index)
    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.astype("Int64")
    if pd.api.types.is_bool_dtype(raw.dtype) or pd.api.types.is_datetime64_any_dtype(raw.dtype):
        _wrong_dtype(column, raw, file, report)
        return pd.Series(pd.NA, index=raw.index, dtype="Int64")
    cells = raw.astype(object).where(~nulls, None)
    numbers = pd.to_numeric(cells, errors="coerce").astype("float64")
    integral = numbers.notna() & np.isfinite(numbers) & (numbers == np.round(numbers))
    # text is an integer as written (`12`, `+12`, `12.0`), not any number pandas reads: `1e3`, `1_000`, `0x10`
    text = cells.notna() if pd.api.types.infer_dtype(cells, skipna=True) == "string" else \
        cells.map(lambda v: isinstance(v, str)).astype(bool)
    if text.any():  # RE2, vectorised, as for hidden characters
        found = pc.match_substring_regex(pa.array(cells[text], pa.string()), f"^{INTEGER_TEXT}$")
        written = pd.Series(found.to_numpy(zero_copy_only=False), index=cells.index[text.to_numpy()])
        integral &= ~text | written.reindex(cells.index, fill_value=True)
    _report_unparsed(column, raw, nulls, ~integral, rows, file, report, expected="an integer")
    # beyond MAX_COUNT is out of range (`_parse_column` says so); cut here, as a float64 may not hold it exactly and
    # an Int64 may not hold it at all
    return numbers.where(integral).clip(-(MAX_COUNT + 1), MAX_COUNT + 1).astype("Int64")


def _parse_bool(column: Column, raw: pd.Series, nulls: pd.Series, rows: pd.Series, file: str,
                report: Report) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype("boolean")
    if pd.api.types.is_integer_dtype(raw.dtype):
        text = raw.astype("Int64").astype("string").str.lower()
    else:
        text = raw.astype("string").str.strip().str.lower()
    parsed = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    parsed[text.isin(TRUE_TEXT).fillna(False)] = True
    parsed[text.isin(FALSE_TEXT).fillna(False)] = False
    _report_unparsed(column, raw, nulls, parsed.isna(), rows, file, report)
    return parsed


_PARSERS = {
    Kind.STR: _parse_str,
    Kind.ENUM: _parse_enum,
    Kind.TIMESTAMP: _parse_timestamp,
    Kind.DECIMAL: _parse_decimal,
    Kind.INT: _parse_int,
    Kind.BOOL: _parse_bool,
}


def without_repeats(table: Table, frame: pd.DataFrame, file: str, report: Report) -> pd.DataFrame:
    """FRAME with each row that repeats an earlier one in every contract column left out, and a note saying how
    many: an export that writes a row twice (a join that fans out, a label sent by two systems) means it once. Two
    rows with one key and different values are still refused (`check_duplicates`)."""
    columns = [c for c in table.column_names if c in frame.columns]
    if not columns or len(frame) < 2:
        return frame
    repeated = frame.duplicated(columns, keep="first")
    if not repeated.any():
        return frame
    first = int(frame.loc[repeated, ROW].iloc[0])
    report.notes.append(f"{file}: {int(repeated.sum()):,} row(s) repeat an earlier row in every column (the first at "
                        f"row {first}); each is taken once")
    return frame.loc[~repeated].reset_index(drop=True)


def check_duplicates(table: Table, frame: pd.DataFrame, file: str, report: Report) -> None:
    """Every natural key appears once in the file."""
    if not all(k in frame.columns for k in table.key):
        return
    dup = frame.duplicated(list(table.key), keep="first") & frame[list(table.key)].notna().all(axis=1)
    if not dup.any():
        return
    column = ",".join(table.key)
    first = frame.groupby(list(table.key), dropna=True, sort=False)[ROW].transform("first")  # the row it repeats
    values = frame.loc[dup, list(table.key)].astype(str).agg("/".join, axis=1) + \
        " (first at row " + first[dup].astype("int64").astype(str) + ")"
    report.add_rows(file, column, "duplicate id", f"a unique {' + '.join(table.key)}",
                    frame.loc[dup, ROW], values, int(dup.sum()))


def check_row_order(table: Table, frame: pd.DataFrame, file: str, report: Report) -> None:
    """Within-row time rules such as delivered_at >= placed_at."""
    for later, earlier, message in table.row_checks:
        if later not in frame.columns or earlier not in frame.columns:
            continue
        bad = (frame[later] < frame[earlier]).fillna(False)
        report.add_rows(file, later, "time order", f"{message} ({earlier} of the same row)",
                        frame.loc[bad, ROW], frame.loc[bad, later], int(bad.sum()))


def check_reference(file: str, frame: pd.DataFrame, column: str, known: pd.Index, target: str,
                    report: Report) -> None:
    """Each non-null value of `column` is a key of `target` (new or already ingested)."""
    if column not in frame.columns:
        return
    values = frame[column]
    bad = values.notna() & ~values.isin(known)
    report.add_rows(file, column, "dangling reference",
                    f"an id present in {target} (this dataset or already ingested)",
                    frame.loc[bad, ROW], values[bad], int(bad.sum()))


def check_not_before(file: str, frame: pd.DataFrame, column: str, via: str, times: pd.Series,
                     target: str, target_time: str, report: Report) -> None:
    """`column` is not earlier than the referenced row's `target_time` (`times` indexed by key)."""
    if column not in frame.columns or via not in frame.columns:
        return
    reference_time = frame[via].map(times)
    bad = (frame[column] < reference_time).fillna(False)
    shown = [f"{value.isoformat()} (but {target} {ref} has {target_time} {bound.isoformat()})"
             for value, ref, bound in zip(frame.loc[bad, column].head(EXAMPLES_PER_GROUP),
                                          frame.loc[bad, via], reference_time[bad], strict=False)]
    report.add_rows(file, column, "time order",
                    f"{column} >= {target_time} of the referenced {target} row",
                    frame.loc[bad, ROW], shown, int(bad.sum()))
