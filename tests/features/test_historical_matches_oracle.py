"""Historical retrieval through Feast equals a brute-force computation, row for row, and never leaks."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import FeatureSource, entity_rows
from tests.oracle import Oracle
from training.datasets.synthetic import WorldConfig, generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def small_join_buckets():
    """Retrieval in several key buckets, as on a long history (the default bucket is 4M feature rows)."""
    import features.asof_store

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features.asof_store, "BUCKET_ROWS", 50_000)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("features")
    generate(WorldConfig(customers=6000, days=365, seed=21), root / "world")
    settings = Settings.from_env({"FRAUD_HOME": str(root / "home")})
    ingest(root / "world", Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build(bucket_facts=20_000)  # several key buckets per entity, as on a large history
    snapshot = Warehouse(settings.warehouse_dir).current()
    tables = {name: snapshot.read(name) for name in ("customers", "orders", "order_items", "returns", "labels",
                                                       "inspections")}
    return {"settings": settings, "source": source, "tables": tables, "root": root}


def _compare(retrieved: pd.DataFrame, oracle: Oracle) -> list[str]:
    mismatches = []
    for _, row in retrieved.iterrows():
        expected = oracle.features(row)
        for name, want in expected.items():
            got = row[name]
            same = (math.isnan(want) and pd.isna(got)) if isinstance(want, float) and math.isnan(want) else (
                not pd.isna(got) and math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-6))
            if not same:
                mismatches.append(f"{row['return_id']} {name}: feast {got!r}, oracle {want!r}")
    return mismatches


def test_every_return_gets_the_brute_force_vector(built):
    tables = built["tables"]
    entities = entity_rows(tables["returns"], tables["orders"], tables["order_items"])
    retrieved = built["source"].historical(entities)

    assert len(retrieved) == len(entities) >= 3000
    assert set(retrieved["return_id"]) == set(entities["return_id"])
    mismatches = _compare(retrieved, Oracle(tables))
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. " + "; ".join(mismatches[:10])
    # the comparison covered the hard cases
    assert (retrieved["cust_orders_365d"] == 1).sum() > 100  # customers on their first order
    assert (retrieved["cust_account_age_days"] < 30).sum() > 20  # brand-new accounts
    assert (retrieved["addr_customers"] >= 2).sum() > 20  # shared addresses
    assert (retrieved["rfd_customers"] >= 2).sum() > 5  # shared refund destinations
    assert (retrieved["cust_fraud_labels"] > 0).sum() > 5
    for prefix in ("addr", "pay", "dev", "rfd"):  # tokens whose returns failed inspection before
        assert (retrieved[f"{prefix}_bad_inspections"] > 0).sum() > 5, prefix
    assert retrieved["cust_median_days_to_return_365d"].notna().sum() > 100
    assert (retrieved["address_token"] == "__none__").sum() > 10  # store orders have no address


def test_request_time_features_come_from_the_request(built):
    tables = built["tables"]
    sample = tables["returns"].head(200)
    entities = entity_rows(sample, tables["orders"], tables["order_items"])
    retrieved = built["source"].historical(entities).set_index("return_id")
    orders = tables["orders"].set_index("order_id")
    for _, r in sample.iterrows():
        got = retrieved.loc[r["return_id"]]
        order = orders.loc[r["order_id"]]
        assert got["rt_refund_to_order"] == pytest.approx(r["refund_amount"] / order["order_total"])
        days = (r["requested_at"] - order["placed_at"]).total_seconds() / 86400
        assert got["rt_days_since_order"] == pytest.approx(days)
        assert got["rt_hour_of_day"] == r["requested_at"].hour
        assert got["rt_return_type"] == r["return_type"]
        assert got["rt_channel"] == r["channel"]
        assert got["rt_has_receipt"] == int(r["has_receipt"])


def test_features_relative_to_the_customer_match_the_brute_force_history(built):
    """The request against the customer's own history, recomputed from the oracle's brute-force counts."""
    tables = built["tables"]
    sample = tables["returns"].sample(250, random_state=3)
    entities = entity_rows(sample, tables["orders"], tables["order_items"])
    retrieved = built["source"].historical(entities).set_index("return_id")
    oracle = Oracle(tables)
    orders = tables["orders"].set_index("order_id")
    checked = {"rt_order_vs_typical": 0, "rt_refund_vs_typical": 0, "dev_orders_vs_customer": 0,
               "addr_orders_vs_customer": 0, "rt_refund_to_top_line": 0}
    lines = tables["order_items"].groupby("order_id")

    def check(name: str, got: float, want: float) -> None:
        if math.isnan(want):
            assert pd.isna(got), (name, got)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name
            checked[name] += 1

    def ratio(top: float, bottom: float) -> float:
        return math.nan if math.isnan(top) or math.isnan(bottom) or bottom == 0 else top / bottom

    for _, r in sample.iterrows():
        got = retrieved.loc[r["return_id"]]
        order = orders.loc[r["order_id"]]
        t = r["requested_at"]
        cust = oracle.customer(r["customer_id"], t)
        check("rt_order_vs_typical", got["rt_order_vs_typical"],
              ratio(order["order_total"], ratio(cust["cust_order_value_365d"], cust["cust_orders_365d"])))
        check("rt_refund_vs_typical", got["rt_refund_vs_typical"],
              ratio(r["refund_amount"], ratio(cust["cust_refund_365d"], cust["cust_returns_365d"])))
        own = lines.get_group(r["order_id"])
        dearest = max(float(p) * float(q) for p, q in zip(own["unit_price"], own["quantity"], strict=True))
        check("rt_refund_to_top_line", got["rt_refund_to_top_line"], ratio(r["refund_amount"], dearest))
        assert got["rt_order_lines"] == len(own)
        for column, prefix in (("device_token", "dev"), ("address_token", "addr")):
            token = order[column]
            used = math.nan if pd.isna(token) else oracle.token(column, prefix, token, t)[f"{prefix}_orders_365d"]
            check(f"{prefix}_orders_vs_customer", got[f"{prefix}_orders_vs_customer"],
                  ratio(float(used), cust["cust_orders_365d"]))
    assert all(n >= 25 for n in checked.values()), checked  # every feature was compared on real values


def test_facts_after_a_return_do_not_change_its_features(built, tmp_path):
    tables = built["tables"]
    returns = tables["returns"].sort_values("requested_at")
    target = returns.iloc[len(returns) // 2]
    t = target["requested_at"]
    # add a later order, a later return, a later label and a later inspection for the same customer and tokens
    later = t + pd.Timedelta(minutes=1)
    order = tables["orders"].set_index("order_id").loc[target["order_id"]]
    changed = {k: v.copy() for k, v in tables.items()}
    extra_order = order.to_frame().T.reset_index(names="order_id").assign(
        order_id="O-LATER", placed_at=later, delivered_at=later + pd.Timedelta(days=2))
    changed["orders"] = pd.concat([changed["orders"], extra_order], ignore_index=True)
    extra_return = target.to_frame().T.assign(return_id="R-LATER", order_id="O-LATER", requested_at=later)
    changed["returns"] = pd.concat([changed["returns"], extra_return], ignore_index=True)
    changed["labels"] = pd.concat([changed["labels"], pd.DataFrame({
        "return_id": [target["return_id"]], "label": ["fraud"], "labelled_at": [later], "source": ["analyst"]})],
        ignore_index=True)
    changed["inspections"] = pd.concat([changed["inspections"], pd.DataFrame({
        "return_id": [target["return_id"]], "inspected_at": [later], "outcome": ["empty_box"]})], ignore_index=True)
    world = tmp_path / "changed"
    world.mkdir()
    for name, frame in changed.items():
        frame = frame.astype({c: "datetime64[us, UTC]" for c in frame.columns if "_at" in c})
        frame.to_parquet(world / f"{name}.parquet", index=False)
    settings = Settings.from_env({"FRAUD_HOME": str(tmp_path / "home")})
    ingest(world, Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build()

    one = tables["returns"][tables["returns"]["return_id"] == target["return_id"]]
    before = built["source"].historical(entity_rows(one, tables["orders"], tables["order_items"]))
    after = source.historical(entity_rows(one, changed["orders"], changed["order_items"]))

    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    # and the later facts are there for a moment after them
    probe = entity_rows(extra_return.assign(requested_at=later + pd.Timedelta(minutes=1)),
                        changed["orders"], changed["order_items"])
    seen = source.historical(probe).iloc[0]
    assert seen["cust_returns_7d"] == before.iloc[0]["cust_returns_7d"] + 2
    assert seen["cust_bad_inspections"] == before.iloc[0]["cust_bad_inspections"] + 1
    present = [p for p in ("addr", "pay", "dev", "rfd") if pd.notna(seen[f"{p}_bad_inspections"])]
    assert present  # an absent token reads NaN; the target's order has some token
    for prefix in present:
        assert seen[f"{prefix}_bad_inspections"] == before.iloc[0][f"{prefix}_bad_inspections"] + 1, prefix
