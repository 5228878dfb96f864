"""The real Online Retail data maps onto the contract and ingests cleanly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import DatasetError
from training.datasets.online_retail import categorise, convert, import_online_retail, load_source

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "online_retail.parquet"
needs_source = pytest.mark.skipif(not SOURCE.exists(), reason=f"{SOURCE} is not on this machine")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("online_retail") / "dataset"
    summary = import_online_retail(SOURCE, out)
    return out, summary


@needs_source
def test_every_cancellation_invoice_becomes_a_return_or_is_counted_as_unlinked(imported):
    out, summary = imported
    source = pd.read_parquet(SOURCE)
    with_customer = source[source["CustomerID"].notna()]
    product = with_customer["StockCode"].astype(str).str.match(r"^\d")
    cancels = with_customer[product & with_customer["InvoiceNo"].astype(str).str.startswith("C")]
    returns = pd.read_parquet(out / "returns.parquet")
    assert summary.returns + summary.returns_without_order == cancels["InvoiceNo"].nunique()
    assert summary.returns == len(returns) == 3197
    assert summary.rows_without_customer == 135080


@needs_source
def test_returns_sit_on_an_earlier_order_of_the_same_customer_with_the_refunded_value(imported):
    out, _ = imported
    returns = pd.read_parquet(out / "returns.parquet")
    orders = pd.read_parquet(out / "orders.parquet").set_index("order_id")
    linked = orders.loc[returns["order_id"]]
    assert (linked["customer_id"].to_numpy() == returns["customer_id"].to_numpy()).all()
    assert (linked["placed_at"].to_numpy() < returns["requested_at"].to_numpy()).all()
    source = pd.read_parquet(SOURCE)
    first = returns.iloc[0]
    lines = source[source["InvoiceNo"] == first["return_id"]]
    lines = lines[lines["StockCode"].astype(str).str.match(r"^\d")]
    assert first["refund_amount"] == pytest.approx(float((-lines["Quantity"] * lines["UnitPrice"]).sum()), abs=0.01)
    assert first["items_count"] == int(-lines["Quantity"].sum())


@needs_source
def test_the_import_ingests_cleanly(imported, tmp_path):
    out, summary = imported
    result = ingest(out, Warehouse(tmp_path / "wh"))
    assert result.tables["orders"].added == summary.orders
    assert result.tables["returns"].added == summary.returns


@needs_source
def test_invoice_times_are_read_as_london_time():
    source = pd.read_parquet(SOURCE).head(50)
    tables, _ = convert(source)
    first = tables["orders"].iloc[0]
    # 2010-12-01 08:26 in London (GMT in winter) is 08:26 UTC
    assert first["placed_at"] == pd.Timestamp("2010-12-01 08:26", tz="UTC")


def test_categories_come_from_description_keywords():
    got = categorise(pd.Series(["RED CHRISTMAS BAUBLE", "JUMBO BAG RED", "WHITE METAL LANTERN", None]))
    assert got.tolist() == ["christmas", "bags", "lighting", "home"]


def test_a_file_without_the_source_columns_is_refused(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(DatasetError, match="missing column\\(s\\) InvoiceNo"):
        load_source(path)
