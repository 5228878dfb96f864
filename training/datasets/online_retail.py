"""Map the UCI Online Retail transactions (2010-2011) onto the data contract.

What the source has is kept; what it lacks is synthesised deterministically and documented
in docs/data.md: tokens (one payment instrument, address and device per customer and
country), delivery times, and the reason of a return. Invoices starting with `C` are
cancellations; each becomes one return, linked to the customer's most recent earlier order
that contains the same stock codes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_service.data.contract import MAX_AMOUNT, MAX_COUNT, TABLES
from fraud_service.errors import DatasetError
from fraud_service.progress import SILENT, Progress
from training.datasets.writing import write_tables

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                  "CustomerID", "Country")
SOURCE_TIMEZONE = "Europe/London"
CATEGORY_WORDS = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT")),
    ("jewellery", ("NECKLACE", "BRACELET", "EARRING", "RING ", "JEWEL")),
    ("bags", ("BAG", "PURSE", "TOTE")),
    ("kitchen", ("MUG", "CUP", "PLATE", "BOWL", "TEA", "CAKE", "LUNCH", "BAKING", "JAR", "TIN")),
    ("stationery", ("CARD", "PAPER", "NOTEBOOK", "PEN", "PENCIL", "WRAP", "STICKER")),
    ("toys", ("TOY", "GAME", "DOLL", "PLAYHOUSE", "SPACEBOY", "BALLOON")),
    ("lighting", ("LIGHT", "LANTERN", "CANDLE", "T-LIGHT", "HOLDER")),
)


@dataclass
class ImportSummary:
    """Counts of what the import kept and what it could not use."""

    source_rows: int
    rows_without_customer: int
    non_product_rows: int
    orders: int
    returns: int
    returns_without_order: int
    customers: int


def categorise(descriptions: pd.Series) -> pd.Series:
    """A coarse product category from the free-text description (first keyword match wins)."""
    text = descriptions.fillna("").str.upper()
    category = pd.Series("home", index=descriptions.index)
    assigned = pd.Series(False, index=descriptions.index)
    for name, words in CATEGORY_WORDS:
        hit = ~assigned & text.str.contains("|".join(words), regex=True)
        category[hit] = name
        assigned |= hit
    return category


def _token(prefix: str, values: pd.Series) -> pd.Series:
    return values.map(lambda v: f"{prefix}_{hashlib.sha256(f'{prefix}:{v}'.encode()).hexdigest()[:16]}")


def _unit_hash(values: pd.Series, salt: str) -> np.ndarray:
    """A deterministic number in [0, 1) per value, so synthesised fields do not depend on row order."""
    return np.array([int(hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:12], 16) / 16**12
                     for v in values])


def load_source(path: Path, day_first: bool = False) -> pd.DataFrame:
    """Read the Online Retail file (parquet, or CSV in UTF-8 or Latin-1 as the spreadsheet is saved) and check it has
    the source columns; `InvoiceDate` as text is ISO 8601 or the UCI CSV's month-first `12/1/2010 8:26` (day first
    with DAY_FIRST)."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory: name the Online Retail file (parquet or CSV)")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            try:
                frame = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str})
            except UnicodeDecodeError:  # the UCI spreadsheet saved as CSV is Latin-1 (`£`, accented names)
                frame = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str}, encoding="latin-1")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'CSV'} "
                           f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: not the Online Retail layout; missing column(s) {', '.join(missing)}")
    frame["InvoiceDate"] = _invoice_dates(path, frame["InvoiceDate"], day_first)
    for column in ("CustomerID", "Quantity", "UnitPrice"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna() & frame[column].astype(str).str.strip().ne("")
        if column in ("CustomerID", "Quantity"):  # whole numbers, as 12346 or 12346.0
            bad |= numbers.notna() & (numbers != numbers.round())
        bound = MAX_COUNT if column == "Quantity" else MAX_AMOUNT if column == "UnitPrice" else 10**12
        bad |= numbers.abs() > bound  # the contract's bounds (a 1e30 quantity became -2**63)
        if bad.any():
            first = int(bad.to_numpy().argmax())
            kind = "a whole number" if column in ("CustomerID", "Quantity") else "a number"
            raise DatasetError(f"{path}: {column} must be {kind} of at most {bound:,}; {int(bad.sum()):,} row(s) are "
                               f"not, the first row {first + 1:,} with {_shown(frame[column].iloc[first])}")
        frame[column] = numbers
    return frame


def _shown(value: object) -> str:
    """VALUE as a problem quotes it: text quoted, a number as written (not as numpy's repr)."""
    return repr(value) if isinstance(value, str) else str(value)


def _invoice_dates(path: Path, dates: pd.Series, day_first: bool) -> pd.Series:
    """InvoiceDate as naive local times: as stored, or parsed from text (ISO 8601, else D/M or M/D/YYYY H:MM)."""
    if pd.api.types.is_datetime64_any_dtype(dates.dtype):
        return dates
    text = dates.astype("string").str.strip()
    slashed = "%d/%m/%Y %H:%M" if day_first else "%m/%d/%Y %H:%M"
    for form in ("ISO8601", slashed):
        parsed = pd.to_datetime(text, format=form, errors="coerce")
        if parsed.notna().sum() == text.notna().sum():
            return parsed
    first = int((parsed.isna() & text.notna()).to_numpy().argmax())
    order = "day first (D/M/YYYY H:MM)" if day_first else "month first, as the UCI CSV (M/D/YYYY H:MM; --day-first " \
                                                          "for D/M/YYYY)"
    raise DatasetError(f"{path}: InvoiceDate {text.iloc[first]!r} (row {first + 1:,}) is neither ISO 8601 nor {order}")


def convert(source: pd.DataFrame, progress: Progress = SILENT) -> tuple[dict[str, pd.DataFrame], ImportSummary]:
    """Turn Online Retail rows into contract tables."""
    df = source.copy()
    n_source = len(df)
    df["InvoiceNo"] = df["InvoiceNo"].astype(str)
    df["StockCode"] = df["StockCode"].astype(str)
    no_customer = df["CustomerID"].isna()
    df = df[~no_customer].copy()
    df["customer_id"] = "OR" + df["CustomerID"].astype("int64").astype(str)
    product = df["StockCode"].str.match(r"^\d")
    n_non_product = int((~product).sum())
    df = df[product].copy()
    local = pd.to_datetime(df["InvoiceDate"])
    # the hour the clocks go back happens twice: read as the second (GMT), so no invoice of it is lost
    df["ts"] = local.dt.tz_localize(SOURCE_TIMEZONE, ambiguous=np.zeros(len(local), dtype=bool),
                                    nonexistent="shift_forward").dt.tz_convert("UTC")
    df = df[df["ts"].notna()]
    df["is_return"] = df["InvoiceNo"].str.startswith("C")

    sales = df[~df["is_return"] & (df["Quantity"] > 0)].copy()
    cancels = df[df["is_return"] & (df["Quantity"] < 0)].copy()

    with progress.step(f"building orders from {sales['InvoiceNo'].nunique():,} invoices"):
        orders = sales.groupby("InvoiceNo", sort=False).agg(
            customer_id=("customer_id", "first"), placed_at=("ts", "min"), country=("Country", "first"))
        sales["value"] = sales["Quantity"] * sales["UnitPrice"]
        orders["order_total"] = sales.groupby("InvoiceNo", sort=False)["value"].sum().round(2)
        orders = orders.reset_index().rename(columns={"InvoiceNo": "order_id"})
        domestic = orders["country"].eq("United Kingdom")
        u = _unit_hash(orders["order_id"], "delivery")
        days = np.where(domestic, 1 + 4 * u, 3 + 9 * u)
        orders["delivered_at"] = (orders["placed_at"] + pd.to_timedelta(days, unit="D")).dt.floor("min")
        orders["channel"] = "web"
        orders["payment_token"] = _token("pay", orders["customer_id"])
        orders["address_token"] = _token("addr", orders["customer_id"] + "|" + orders["country"])
        orders["device_token"] = _token("dev", orders["customer_id"])
        orders["currency"] = "GBP"

    items = sales[["InvoiceNo", "StockCode", "Description", "UnitPrice", "Quantity"]].rename(
        columns={"InvoiceNo": "order_id", "StockCode": "sku", "UnitPrice": "unit_price", "Quantity": "quantity"})
    items["line_no"] = items.groupby("order_id", sort=False).cumcount() + 1
    items["category"] = categorise(items["Description"])
    items["list_price"] = None
    items["quantity"] = items["quantity"].astype("int64")

    with progress.step(f"linking {cancels['InvoiceNo'].nunique():,} cancellations to their orders"):
        returns, unmatched = _link_returns(cancels, sales[["InvoiceNo", "customer_id", "StockCode", "ts"]],
                                           orders)

    customers = orders.groupby("customer_id").agg(first_order=("placed_at", "min")).reset_index()
    # the source has no sign-up date: an account exists from 30 days before its first order
    customers["created_at"] = customers["first_order"] - pd.Timedelta(days=30)
    customers["email_domain"] = None
    customers["loyalty_tier"] = None

    tables = {
        "customers": customers,
        "orders": orders,
        "order_items": items,
        "returns": returns,
    }
    tables = {name: frame[TABLES[name].column_names].reset_index(drop=True) for name, frame in tables.items()}
    summary = ImportSummary(
        source_rows=n_source,
        rows_without_customer=int(no_customer.sum()),
        non_product_rows=n_non_product,
        orders=len(orders),
        returns=len(returns),
        returns_without_order=unmatched,
        customers=len(customers),
    )
    return tables, summary


def _link_returns(cancels: pd.DataFrame, sales: pd.DataFrame, orders: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One return per cancellation invoice, on the latest earlier order of the customer with the same SKU."""
    lines = cancels[["InvoiceNo", "customer_id", "StockCode", "ts", "Quantity", "UnitPrice"]].copy()
    lines = lines.sort_values("ts")
    bought = sales.rename(columns={"InvoiceNo": "order_id", "ts": "placed_at"}).sort_values("placed_at")
    matched = pd.merge_asof(lines, bought, left_on="ts", right_on="placed_at",
                            by=["customer_id", "StockCode"], direction="backward", allow_exact_matches=False)
    # no order with the same SKU: fall back to the customer's latest earlier order of any kind
    latest = orders[["order_id", "customer_id", "placed_at"]].sort_values("placed_at").rename(
        columns={"order_id": "any_order", "placed_at": "any_placed"})
    matched = pd.merge_asof(matched.sort_values("ts"), latest, left_on="ts", right_on="any_placed",
                            by="customer_id", direction="backward", allow_exact_matches=False)
    matched["order_id"] = matched["order_id"].fillna(matched["any_order"])
    matched["refund"] = -matched["Quantity"] * matched["UnitPrice"]
    matched["units"] = -matched["Quantity"]
    per_invoice = matched.groupby("InvoiceNo", sort=False)
    returns = per_invoice.agg(
        customer_id=("customer_id", "first"),
        requested_at=("ts", "min"),
        items_count=("units", "sum"),
        refund_amount=("refund", "sum"),
    )
    # the order most of the invoice's lines came from
    returns["order_id"] = per_invoice["order_id"].agg(
        lambda s: s.mode().iloc[0] if s.notna().any() else None)
    returns = returns.reset_index().rename(columns={"InvoiceNo": "return_id"})
    unmatched = int(returns["order_id"].isna().sum())
    returns = returns[returns["order_id"].notna()].copy()
    returns["items_count"] = returns["items_count"].astype("int64")
    returns["refund_amount"] = returns["refund_amount"].round(2)
    returns["return_type"] = "return"
    returns["channel"] = "mail"
    returns["reason"] = "not_stated"
    returns["refund_method"] = "original_payment"
    returns["refund_token"] = None
    returns["has_receipt"] = True
    returns["store_id"] = None
    return returns, unmatched


def import_online_retail(source: Path, out: Path, progress: Progress = SILENT, day_first: bool = False
                         ) -> ImportSummary:
    """Read the Online Retail file and write the contract tables into `out` (a new or empty directory: a dataset
    already there would keep its other tables beside these)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"--out {out} is not a new or empty directory: the tables written there would mix with "
                           "what it holds; name another")
    with progress.step(f"reading {source}"):
        frame = load_source(source, day_first)
    tables, summary = convert(frame, progress)
    write_tables(tables, out, progress)
    return summary
