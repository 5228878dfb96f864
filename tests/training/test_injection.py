"""Fraud injected into the Online Retail import is valid contract data, deterministic, and labelled late."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from tests.training.test_online_retail import SOURCE, needs_source
from training.datasets.injection import TYPOLOGIES, inject
from training.datasets.online_retail import import_online_retail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("injected")
    import_online_retail(SOURCE, root / "uci")
    return root, inject(root / "uci", root / "out")


@needs_source
def test_the_injected_dataset_passes_every_contract_check(injected, tmp_path):
    root, summary = injected
    result = ingest(root / "out", Warehouse(tmp_path / "warehouse"))
    returns = pd.read_parquet(root / "out" / "returns.parquet")
    assert result.tables["returns"].rows == len(returns) == sum(summary[k] for k in ("legit", *TYPOLOGIES))
    assert all(summary[k] >= 20 for k in TYPOLOGIES)


@needs_source
def test_injected_claims_come_after_delivery_and_labels_after_the_claim(injected):
    root, _ = injected
    returns = pd.read_parquet(root / "out" / "returns.parquet")
    orders = pd.read_parquet(root / "out" / "orders.parquet")
    truth = pd.read_parquet(root / "out" / "ground_truth.parquet")
    labels = pd.read_parquet(root / "out" / "labels.parquet")
    fraud = returns.merge(truth, on=["return_id", "customer_id"]).query("typology != 'legit'")
    joined = fraud.merge(orders[["order_id", "delivered_at"]], on="order_id")
    assert (joined["requested_at"] > joined["delivered_at"]).all()
    timed = labels.merge(returns[["return_id", "requested_at"]], on="return_id")
    assert (timed["labelled_at"] >= timed["requested_at"]).all()
    labelled_fraud = labels[labels["return_id"].isin(fraud["return_id"])]
    assert 0.3 < len(labelled_fraud) / len(fraud) < 0.8  # about half, never all
    assert set(returns.loc[returns["refund_method"] == "gift_card", "refund_token"].dropna()).issubset(
        {f"gc_mule_{i:03d}" for i in range(8)})


@needs_source
def test_injection_is_deterministic_for_a_seed(injected):
    root, summary = injected
    again = inject(root / "uci", root / "again")
    assert again == summary
    pd.testing.assert_frame_equal(pd.read_parquet(root / "again" / "labels.parquet"),
                                  pd.read_parquet(root / "out" / "labels.parquet"))
