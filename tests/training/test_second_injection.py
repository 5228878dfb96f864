"""The second injector writes valid contract data whose kinds follow their stated mechanics, labelled late."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from training.datasets.second_injection import (
    ABUSE_KINDS,
    FRAUD_KINDS,
    LEGIT_KINDS,
    SecondInjectionConfig,
    inject_second,
)
from training.datasets.synthetic import WorldConfig, generate

pytestmark = pytest.mark.slow
CONFIG = SecondInjectionConfig(seed=5, takeovers=0.05, rings=4, wardrobers=0.03, diverters=12, empty_boxes=0.05,
                               item_switches=0.05, serial_returners=0.03, honest_inr=0.03)


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("second")
    generate(WorldConfig(customers=1500, days=365, seed=3, orders_per_year=8.0), root / "full")
    (root / "world").mkdir()
    for name in ("customers", "orders", "order_items", "returns"):  # shopping histories only, as Online Retail's
        (root / "world" / f"{name}.parquet").write_bytes((root / "full" / f"{name}.parquet").read_bytes())
    return root, inject_second(root / "world", root / "out", CONFIG)


def _read(root: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(root / "out" / f"{name}.parquet")


def test_the_second_injection_passes_every_contract_check_and_holds_every_kind(injected, tmp_path):
    root, summary = injected
    result = ingest(root / "out", Warehouse(tmp_path / "warehouse"))
    returns = _read(root, "returns")
    kinds = (*FRAUD_KINDS, *ABUSE_KINDS, *LEGIT_KINDS)
    assert result.tables["returns"].rows == len(returns) == sum(summary[k] for k in ("legit", *kinds))
    assert all(summary.get(k, 0) >= 5 for k in kinds), summary
    truth = _read(root, "ground_truth")
    assert set(truth.loc[truth["typology"].isin(FRAUD_KINDS), "truth"]) == {"fraud"}
    assert set(truth.loc[truth["typology"].isin(ABUSE_KINDS), "truth"]) == {"abuse"}
    assert set(truth.loc[truth["typology"].isin([*LEGIT_KINDS, "legit"]), "truth"]) == {"legit"}


def test_claims_follow_delivery_and_inspections_and_labels_follow_the_claim(injected):
    root, _ = injected
    returns, orders = _read(root, "returns"), _read(root, "orders")
    truth, labels, inspections = _read(root, "ground_truth"), _read(root, "labels"), _read(root, "inspections")
    added = returns.merge(truth, on=["return_id", "customer_id"]).query("typology != 'legit'")
    joined = added.merge(orders[["order_id", "delivered_at"]], on="order_id")
    assert (joined["requested_at"] > joined["delivered_at"]).all()
    for table, column in ((labels, "labelled_at"), (inspections, "inspected_at")):
        timed = table.merge(returns[["return_id", "requested_at"]], on="return_id")
        assert len(timed) == len(table) and (timed[column] > timed["requested_at"]).all()
    bad = added[added["truth"] != "legit"]
    share = bad["return_id"].isin(labels["return_id"]).mean()
    assert 0.3 < share < 0.9  # late and partial, never all


def test_each_kind_follows_its_mechanics(injected):
    root, _ = injected
    returns, orders = _read(root, "returns"), _read(root, "orders")
    truth, inspections = _read(root, "ground_truth"), _read(root, "inspections")
    kind = returns.merge(truth[["return_id", "typology"]], on="return_id").merge(
        orders[["order_id", "payment_token", "address_token", "device_token", "placed_at"]], on="order_id")
    source_orders = pd.read_parquet(root / "world" / "orders.parquet")
    ato = kind[kind["typology"] == "account_takeover"]
    customers = pd.read_parquet(root / "world" / "customers.parquet").set_index("customer_id")
    for _, claim in ato.iterrows():  # a device and address the owner never used, on the owner's stored card
        own = source_orders[source_orders["customer_id"] == claim["customer_id"]]
        assert claim["device_token"] not in set(own["device_token"])
        assert claim["address_token"] not in set(own["address_token"])
        assert claim["payment_token"] in set(own.loc[own["placed_at"] < claim["placed_at"], "payment_token"])
        assert claim["refund_method"] == "gift_card"
        assert claim["placed_at"] - customers.loc[claim["customer_id"], "created_at"] >= pd.Timedelta(days=180)
    worn = kind[kind["typology"] == "wardrobing"].merge(orders[["order_id", "delivered_at", "order_total"]],
                                                           on="order_id")
    days = (worn["requested_at"] - worn["delivered_at"]).dt.total_seconds() / 86400
    assert days.between(18, 29).all()  # nearly the whole order, late in the window
    assert (worn["refund_amount"] >= 0.85 * worn["order_total"] - 0.01).all()
    ring = kind[kind["typology"] == "ring"]
    assert ring.groupby("device_token")["customer_id"].nunique().max() >= 3  # accounts sharing a device
    assert set(inspections.loc[inspections["return_id"].isin(ring["return_id"]), "outcome"]) <= {
        "empty_box", "missing_parts"}
    diverted = kind[kind["typology"] == "refund_diversion"]
    assert set(diverted["refund_method"]) == {"other_payment"}
    assert diverted.groupby("refund_token")["customer_id"].nunique().max() >= 2  # destinations shared by accounts
    switched = inspections.merge(kind[["return_id", "typology"]], on="return_id")
    assert set(switched.loc[switched["typology"] == "item_switch", "outcome"]) == {"wrong_item"}
    assert set(switched.loc[switched["typology"] == "empty_box", "outcome"]) == {"empty_box"}
    assert set(switched.loc[switched["typology"] == "serial_returner", "outcome"]) == {"ok"}


def test_the_second_injection_is_deterministic_for_a_seed(injected):
    root, summary = injected
    assert inject_second(root / "world", root / "again", CONFIG) == summary
    for name in ("returns", "labels", "inspections"):
        pd.testing.assert_frame_equal(pd.read_parquet(root / "again" / f"{name}.parquet"), _read(root, name))


def test_a_generated_source_keeps_its_own_truth_labels_and_inspections(injected, tmp_path):
    root, _ = injected
    inject_second(root / "full", tmp_path / "out", CONFIG)
    source_truth = pd.read_parquet(root / "full" / "ground_truth.parquet")
    truth = pd.read_parquet(tmp_path / "out" / "ground_truth.parquet").merge(
        source_truth, on="return_id", suffixes=("", "_source"))
    assert len(truth) == len(source_truth)
    assert (truth["truth"] == truth["truth_source"]).all() and (truth["typology"] == truth["typology_source"]).all()
    for name in ("labels", "inspections"):
        source = pd.read_parquet(root / "full" / f"{name}.parquet")
        out = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        mine = out[out["return_id"].isin(source_truth["return_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, source[mine.columns].reset_index(drop=True), check_dtype=False)
