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


@needs_source
@pytest.mark.parametrize(("form", "day_first", "encoding"), [
    ("%Y-%m-%d %H:%M:%S", False, "utf-8"),
    ("%m/%d/%Y %H:%M", False, "latin-1"),  # the UCI CSV, as the spreadsheet saves it
    ("%d/%m/%Y %H:%M", True, "utf-8"),
])
def test_a_csv_import_reads_its_dates_as_written(tmp_path, form, day_first, encoding):
    source = pd.read_parquet(SOURCE)
    source = source[source["InvoiceDate"] < "2010-12-13"].head(3000)  # days 1 to 12: either order would parse
    source["Description"] = source["Description"].fillna("") + " £"
    path = tmp_path / "retail.csv"
    source.assign(InvoiceDate=source["InvoiceDate"].dt.strftime(form)).to_csv(path, index=False, encoding=encoding)

    import_online_retail(path, tmp_path / "out", day_first=day_first)

    placed = pd.read_parquet(tmp_path / "out" / "orders.parquet")["placed_at"]
    assert (placed.min(), placed.max().date()) == (pd.Timestamp("2010-12-01 08:26", tz="UTC"),
                                                   source["InvoiceDate"].max().date())


@needs_source
def test_bad_sources_and_targets_are_named(tmp_path):
    source = pd.read_parquet(SOURCE).head(200)
    path = tmp_path / "retail.csv"
    source.assign(InvoiceDate=source["InvoiceDate"].dt.strftime("%d/%m/%Y %H:%M")
                  .where(source.index != 5, "13/12/2010 10:00")).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"InvoiceDate '13/12/2010 10:00' \(row 6\) is neither ISO 8601 nor "
                                           r"month first.*--day-first"):
        import_online_retail(path, tmp_path / "a")
    source.assign(CustomerID=source["CustomerID"].astype("Int64").astype(str).where(source.index != 3, "x12")
                  ).to_parquet(tmp_path / "junk.parquet")
    with pytest.raises(DatasetError, match=r"CustomerID must be a whole number of at most 1,000,000,000,000; 1 "
                                           r"row\(s\) are not, the first row 4 "
                                           "with 'x12'"):
        import_online_retail(tmp_path / "junk.parquet", tmp_path / "b")
    with pytest.raises(DatasetError, match="is a directory: name the Online Retail file"):
        import_online_retail(tmp_path, tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "labels.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match="not a new or empty directory"):
        import_online_retail(SOURCE, tmp_path / "d")


@needs_source
def test_a_fractional_or_huge_quantity_is_refused_and_the_doubled_autumn_hour_is_kept(tmp_path):
    source = pd.read_parquet(SOURCE).head(300)
    source.loc[7, "Quantity"] = 2.5  # a line of 2 whose order_total counted 2.5
    source.to_parquet(tmp_path / "frac.parquet")
    with pytest.raises(DatasetError, match=r"Quantity must be a whole number of at most 1,000,000; 1 row\(s\) are "
                                           r"not, the first row 8 with 2.5"):
        import_online_retail(tmp_path / "frac.parquet", tmp_path / "a")
    autumn = pd.read_parquet(SOURCE).head(50).assign(InvoiceDate=pd.Timestamp("2011-10-30 01:30"))
    tables, _ = convert(autumn)  # 01:30 happened twice in London that night: it was dropped, uncounted
    assert len(tables["order_items"]) == len(autumn[autumn["CustomerID"].notna() & ~autumn["InvoiceNo"].astype(str)
                                                    .str.startswith("C") & autumn["StockCode"].astype(str)
                                                    .str.match(r"^\d")])
    assert tables["orders"]["placed_at"].iloc[0] == pd.Timestamp("2011-10-30 01:30", tz="UTC")  # GMT, the second
