"""The third (independent) injector on a small synthetic shop built here, checked against the data contract."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.datasets.third_injection import BAD_KINDS, KINDS, TRUTH, ThirdInjectionConfig, inject_third

TABLES = ("customers", "orders", "order_items", "returns", "labels", "inspections")
COLUMNS = {
    "customers": ["customer_id", "created_at", "email_domain", "loyalty_tier"],
    "orders": ["order_id", "customer_id", "placed_at", "delivered_at", "channel", "payment_token", "address_token",
               "device_token", "order_total", "currency"],
    "order_items": ["order_id", "line_no", "sku", "category", "unit_price", "list_price", "quantity"],
    "returns": ["return_id", "order_id", "customer_id", "requested_at", "return_type", "channel", "reason",
                "items_count", "refund_amount", "refund_method", "refund_token", "has_receipt", "store_id"],
    "labels": ["return_id", "label", "labelled_at", "source"],
    "inspections": ["return_id", "inspected_at", "outcome"],
}
TIMES = {"customers": ["created_at"], "orders": ["placed_at", "delivered_at"], "returns": ["requested_at"],
         "labels": ["labelled_at"], "inspections": ["inspected_at"]}
ENUMS = {
    ("orders", "channel"): {"web", "app", "store", "marketplace"},
    ("returns", "return_type"): {"return", "item_not_received", "damaged_on_arrival", "wrong_item"},
    ("returns", "channel"): {"mail", "store", "returnless"},
    ("returns", "refund_method"): {"original_payment", "store_credit", "gift_card", "other_payment"},
    ("labels", "label"): {"fraud", "abuse", "legit"},
    ("labels", "source"): {"analyst", "inspection", "chargeback", "customer_service"},
    ("inspections", "outcome"): {"ok", "worn", "damaged", "wrong_item", "empty_box", "missing_parts"},
}
CONFIG = ThirdInjectionConfig(seed=7, account_takeovers=8, rings=3, wardrobers=8, refund_diversions=10,
                              empty_box_offenders=8, item_switchers=8, serial_returners=12, legit_inr_claims=15)
CATEGORIES = ("home", "kitchen", "lighting", "christmas", "bags", "toys", "jewellery", "stationery")


def _toy_shop(directory: Path, seed: int = 0) -> Path:
    """A year of a small wholesale shop in the contract's format: 400 customers, their orders and some returns."""
    rng = np.random.default_rng(seed)
    skus = [f"SKU{n:03d}" for n in range(80)]
    prices = np.round(np.exp(rng.normal(0.8, 0.8, size=len(skus))), 2) + 0.1
    days = pd.date_range("2011-01-03", "2011-12-20", freq="D", tz="UTC")
    days = days[days.dayofweek != 5]  # like the real shop: no Saturdays
    customers, orders, items, returns = [], [], [], []
    for c in range(400):
        customer = f"T{c:04d}"
        n_orders = int(rng.poisson(5)) + 1
        stamps = sorted(days[rng.integers(0, len(days), n_orders)] + pd.to_timedelta(rng.integers(480, 1080, n_orders),
                                                                                     unit="min"))
        customers.append({"customer_id": customer, "created_at": stamps[0] - pd.Timedelta(days=30),
                          "email_domain": None, "loyalty_tier": None})
        for k, placed in enumerate(stamps):
            order = f"{customer}-{k}"
            picks = rng.choice(len(skus), size=int(rng.integers(1, 11)), replace=False)
            qty = rng.choice([1, 2, 6, 12, 24], size=len(picks))
            for line, (i, q) in enumerate(zip(picks, qty, strict=True), start=1):
                items.append({"order_id": order, "line_no": line, "sku": skus[i], "category": CATEGORIES[i % 8],
                              "unit_price": float(prices[i]), "list_price": None, "quantity": int(q)})
            orders.append({"order_id": order, "customer_id": customer, "placed_at": placed,
                           "delivered_at": placed + pd.Timedelta(minutes=int(rng.integers(1440, 7200))),
                           "channel": "web", "payment_token": f"pay_{c}", "address_token": f"addr_{c}",
                           "device_token": f"dev_{c}", "order_total": round(float((prices[picks] * qty).sum()), 2),
                           "currency": "GBP"})
            if rng.random() < 0.06:
                returns.append({"return_id": f"R{order}", "order_id": order, "customer_id": customer,
                                "requested_at": placed + pd.Timedelta(minutes=int(rng.integers(1440, 28800))),
                                "return_type": "return", "channel": "mail", "reason": "not_stated",
                                "items_count": int(qty[0]), "refund_amount": round(float(prices[picks[0]] * qty[0]), 2),
                                "refund_method": "original_payment", "refund_token": None, "has_receipt": True,
                                "store_id": None})
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("customers", customers), ("orders", orders), ("order_items", items), ("returns", returns)):
        pd.DataFrame(rows).to_parquet(directory / f"{name}.parquet", index=False)
    return directory


def _load(directory: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(directory / f"{name}.parquet") for name in (*TABLES, "ground_truth")}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _toy_shop(tmp_path_factory.mktemp("toy") / "source")


@pytest.fixture(scope="module")
def injected(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("third") / "out"
    counts = inject_third(shop, out, CONFIG)
    return counts, _load(out)


def test_every_table_has_the_contract_columns_types_and_enums(injected):
    _, t = injected
    for name in TABLES:
        assert list(t[name].columns) == COLUMNS[name], name
        for column in TIMES.get(name, []):
            assert str(t[name][column].dtype) == "datetime64[us, UTC]", (name, column)
    for (name, column), allowed in ENUMS.items():
        assert set(t[name][column]) <= allowed, (name, column)
    assert t["order_items"]["line_no"].dtype == "int64" and t["order_items"]["quantity"].dtype == "int64"
    assert (t["order_items"]["quantity"] > 0).all() and (t["order_items"]["unit_price"] >= 0).all()
    assert t["returns"]["items_count"].dtype == "int64" and (t["returns"]["items_count"] > 0).all()
    assert (t["returns"]["refund_amount"] > 0).all() and t["returns"]["has_receipt"].dtype == bool
    assert t["orders"]["currency"].str.fullmatch(r"[A-Z]{3}").all()
    for name, column in (("customers", "customer_id"), ("orders", "order_id"), ("returns", "return_id"),
                         ("orders", "payment_token")):
        assert t[name][column].notna().all(), (name, column)
    needs_token = t["returns"]["refund_method"].isin(["gift_card", "other_payment"])
    assert t["returns"].loc[needs_token, "refund_token"].notna().all()


def test_ids_are_unique_and_references_resolve(injected):
    _, t = injected
    assert t["customers"]["customer_id"].is_unique
    assert t["orders"]["order_id"].is_unique
    assert t["returns"]["return_id"].is_unique
    assert not t["order_items"].duplicated(["order_id", "line_no"]).any()
    customers, orders, returns = (set(t["customers"]["customer_id"]), set(t["orders"]["order_id"]),
                                  set(t["returns"]["return_id"]))
    assert set(t["orders"]["customer_id"]) <= customers
    assert set(t["order_items"]["order_id"]) <= orders and orders <= set(t["order_items"]["order_id"])
    assert set(t["returns"]["order_id"]) <= orders and set(t["returns"]["customer_id"]) <= customers
    assert set(t["labels"]["return_id"]) <= returns and set(t["inspections"]["return_id"]) <= returns
    assert t["inspections"]["return_id"].is_unique


def test_time_rules_hold(injected):
    _, t = injected
    orders = t["orders"].set_index("order_id")
    assert (orders["delivered_at"].isna() | (orders["delivered_at"] > orders["placed_at"])).all()
    r = t["returns"].join(orders[["placed_at", "delivered_at"]], on="order_id")
    assert (r["requested_at"] > r["placed_at"]).all()
    injected_rows = r[r["return_id"].isin(_injected_ids(t))]
    goods = injected_rows[injected_rows["return_type"] != "item_not_received"]  # goods are claimed once they came
    assert (goods["requested_at"] > goods["delivered_at"]).all()
    requested = t["returns"].set_index("return_id")["requested_at"]
    labels = t["labels"]
    assert (labels["labelled_at"] >= labels["return_id"].map(requested)).all()
    inspections = t["inspections"]
    assert (inspections["inspected_at"] > inspections["return_id"].map(requested)).all()
    first = t["orders"].groupby("customer_id")["placed_at"].min()
    created = t["customers"].set_index("customer_id")["created_at"]
    assert (created.reindex(first.index) < first).all()
    assert requested.max() <= max(r.loc[~r["return_id"].isin(_injected_ids(t)), "requested_at"].max(),
                                  t["orders"]["placed_at"].max())  # nothing requested after the data ends


def _injected_ids(t: dict[str, pd.DataFrame]) -> set[str]:
    truth = t["ground_truth"]
    return set(truth.loc[truth["typology"] != "legit", "return_id"])


def test_inspections_only_for_mail_returns_whose_goods_come_back(injected):
    _, t = injected
    r = t["returns"].set_index("return_id")
    inspected = r.loc[t["inspections"]["return_id"]]
    assert (inspected["channel"] == "mail").all()
    assert inspected["return_type"].isin(["return", "wrong_item", "damaged_on_arrival"]).all()
    assert 0 < len(t["inspections"]) < (r["channel"] == "mail").sum()


def test_source_rows_are_kept_unchanged(shop, injected):
    _, t = injected
    for name in ("customers", "orders", "order_items", "returns"):
        before = pd.read_parquet(shop / f"{name}.parquet")
        after = t[name].iloc[: len(before)].reset_index(drop=True)
        key = COLUMNS[name][0]
        assert list(after[key]) == list(before[key]), name
    before = pd.read_parquet(shop / "returns.parquet")
    after = t["returns"].iloc[: len(before)]
    assert np.allclose(after["refund_amount"], before["refund_amount"])
    assert (after["requested_at"].to_numpy() == pd.to_datetime(before["requested_at"], utc=True).to_numpy()).all()


def test_ground_truth_covers_every_return_with_its_kind(shop, injected):
    counts, t = injected
    truth = t["ground_truth"]
    assert list(truth.columns) == ["return_id", "customer_id", "truth", "typology"]
    assert truth["return_id"].is_unique
    assert set(truth["return_id"]) == set(t["returns"]["return_id"])
    assert (truth["truth"] == truth["typology"].map(TRUTH)).all()
    assert set(truth["truth"]) <= {"fraud", "abuse", "legit"}
    merged = truth.merge(t["returns"][["return_id", "customer_id"]], on="return_id", suffixes=("", "_r"))
    assert (merged["customer_id"] == merged["customer_id_r"]).all()
    source_ids = set(pd.read_parquet(shop / "returns.parquet")["return_id"])
    assert (truth.loc[truth["return_id"].isin(source_ids), "typology"] == "legit").all()
    assert counts["legit"] == len(source_ids)
    for kind in KINDS:
        assert counts[kind] == int((truth["typology"] == kind).sum()) > 0, kind
    assert counts["labels"] == len(t["labels"])


def test_kinds_are_varied_not_one_field_apart(injected):
    _, t = injected
    r = t["returns"].merge(t["ground_truth"][["return_id", "typology"]], on="return_id")
    bad = r[r["typology"].isin(BAD_KINDS)]
    honest = r[r["typology"].isin(["serial_returner", "legit_inr"])]
    # bad returns use several refund methods, honest risky ones are not all original payment either
    assert bad["refund_method"].nunique() >= 3
    assert (honest["refund_method"] != "original_payment").any()
    assert (bad["refund_method"] == "original_payment").any()
    diversions = r[r["typology"] == "refund_diversion"]
    assert diversions["refund_method"].nunique() >= 2
    assert bad["return_type"].nunique() >= 3 and bad["reason"].nunique() >= 4
    # some bad returns come from real, established customers of the source
    source_customers = set(t["customers"]["customer_id"].iloc[:400])
    assert bad["customer_id"].isin(source_customers).any() and (~bad["customer_id"].isin(source_customers)).any()
    # a ring shares something between accounts
    ring_orders = t["orders"][t["orders"]["order_id"].isin(r.loc[r["typology"] == "ring", "order_id"])]
    shared = [ring_orders.groupby(col)["customer_id"].nunique().max() for col in
              ("device_token", "address_token", "payment_token")]
    ring_refunds = r.loc[r["typology"] == "ring"].dropna(subset=["refund_token"])
    shared.append(ring_refunds.groupby("refund_token")["customer_id"].nunique().max() if len(ring_refunds) else 0)
    assert max(shared) >= 2


def test_labels_are_late_incomplete_and_a_minority_of_bad_returns(injected):
    _, t = injected
    truth = t["ground_truth"]
    labels = t["labels"].merge(truth, on="return_id")
    bad = truth[truth["truth"] != "legit"]
    labelled_bad = bad["return_id"].isin(labels["return_id"]).mean()
    assert 0 < labelled_bad < 0.5
    honest = truth[truth["truth"] == "legit"]
    assert 0 < honest["return_id"].isin(labels["return_id"]).mean() < 0.5
    assert set(labels["source"]) >= {"analyst", "customer_service", "inspection"}
    requested = t["returns"].set_index("return_id")["requested_at"]
    delay = (labels["labelled_at"] - labels["return_id"].map(requested)).dt.total_seconds() / 86400
    assert delay.median() > 1
    assert (delay[labels["source"] == "chargeback"] >= 30).all()
    assert (labels["label"] != labels["truth"]).any()  # sometimes wrong
    assert (labels.loc[labels["truth"] == "legit", "label"] == "legit").mean() > 0.5  # but mostly right


def test_same_seed_same_output_other_seed_other_output(shop, tmp_path):
    small = replace(CONFIG, serial_returners=4, legit_inr_claims=5)
    inject_third(shop, tmp_path / "a", small)
    inject_third(shop, tmp_path / "b", small)
    inject_third(shop, tmp_path / "c", replace(small, seed=8))
    a, b, c = _load(tmp_path / "a"), _load(tmp_path / "b"), _load(tmp_path / "c")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not a["returns"].equals(c["returns"])


def test_the_service_ingests_the_output(injected, tmp_path, shop):
    """The service's own contract check accepts what the injector writes (run as a black box)."""
    cli = Path(sys.executable).parent / "fraud-service"
    if not cli.exists():
        pytest.skip("fraud-service command not installed next to this Python")
    out = tmp_path / "out"
    inject_third(shop, out, replace(CONFIG, serial_returners=4, legit_inr_claims=5))
    env = {**os.environ, "FRAUD_HOME": str(tmp_path / "home")}
    done = subprocess.run([str(cli), "-q", "ingest", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
