"""A return on an order the warehouse does not hold yet is scored with that order counted, as training will count it.

Training counts every order placed before a return's request; serving used to count a return's own order only
after the assessment (the live log records it then), so the first return on a new order, on a new device, read
`dev_orders_vs_customer` 0 live against 1/n offline and a first order's `rt_order_vs_typical` missing against 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd
import pytest

from fraud_service.bootstrap import known_orders
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.live import FreshnessWriter
from fraud_service.featurestore.source import ENTITY_KEYS, entity_rows, request_entity
from fraud_service.scoring.request import parse_request
from fraud_service.scoring.service import assessed_return
from tests.store.conftest import BOTH

pytestmark = pytest.mark.slow
LIVE_LOGS = BOTH  # every test on a live_world runs on a SQLite and a PostgreSQL log
MEDIAN = "cust_median_days_to_return_365d"  # not a sum: documented to ignore live facts until the next build
TOKENS = {"address_token": "adr-brand-new", "device_token": "dev-brand-new"}


def _body(customer: str, payment: str, placed: pd.Timestamp, at: pd.Timestamp, n: int) -> dict[str, Any]:
    return {
        "return_id": f"R-NEW-{n}", "customer_id": customer, "requested_at": at.isoformat(),
        "return_type": "item_not_received", "channel": "returnless", "reason": "not_received", "items_count": 1,
        "refund_amount": 180.0, "refund_method": "original_payment", "has_receipt": True,
        "order": {"order_id": "O-NEW", "customer_id": customer, "placed_at": placed.isoformat(),
                  "channel": "web", "order_total": 250.0, "currency": "GBP", "payment_token": payment, **TOKENS,
                  "items": [{"line_no": 1, "sku": "SKU-A", "category": "electronics", "unit_price": 180.0,
                             "quantity": 1},
                            {"line_no": 2, "sku": "SKU-B", "category": "home", "unit_price": 35.0, "quantity": 2}]},
    }


def _delivery(snapshot, bodies: list[dict[str, Any]], directory) -> None:
    """The retailer's next delivery: the new order, its lines and the returns on it, in the contract's format."""
    directory.mkdir()
    order = bodies[0]["order"]
    orders = snapshot.read("orders").iloc[[0]].assign(
        order_id=order["order_id"], customer_id=order["customer_id"], placed_at=pd.Timestamp(order["placed_at"]),
        delivered_at=pd.NaT, channel="web", payment_token=order["payment_token"], order_total=order["order_total"],
        currency=order["currency"], **TOKENS)
    orders.to_parquet(directory / "orders.parquet", index=False)
    template = snapshot.read("order_items").iloc[[0]]
    items = pd.concat([template.assign(order_id=order["order_id"], list_price=None, **item) for item in order["items"]])
    items.to_parquet(directory / "order_items.parquet", index=False)
    template = snapshot.read("returns").iloc[[0]]
    returns = pd.concat([template.assign(
        return_id=b["return_id"], order_id=order["order_id"], customer_id=b["customer_id"],
        requested_at=pd.Timestamp(b["requested_at"]), return_type=b["return_type"], channel=b["channel"],
        reason=b["reason"], items_count=b["items_count"], refund_amount=b["refund_amount"],
        refund_method=b["refund_method"], refund_token=None, has_receipt=True, store_id=None) for b in bodies])
    returns.to_parquet(directory / "returns.parquet", index=False)


def _same(a: Any, b: Any) -> bool:
    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    return (missing(a) and missing(b)) or (not missing(a) and not missing(b) and a == pytest.approx(b))


def test_a_new_orders_returns_are_served_as_training_sees_them_and_the_order_counts_once(live_world, tmp_path):
    w = live_world
    snapshot = w["snapshot"]
    returns = snapshot.read("returns")
    orders = snapshot.read("orders").set_index("order_id")
    old = returns.iloc[-1]  # a customer with history, now ordering on a new device and address
    customer, payment = old["customer_id"], orders.loc[old["order_id"], "payment_token"]
    first_at = w["opened"] + pd.Timedelta(minutes=1)
    placed = first_at - pd.Timedelta(days=2)
    bodies = [_body(customer, payment, placed, first_at + pd.Timedelta(minutes=5 * n), n + 1) for n in range(2)]
    writer = FreshnessWriter(w["live"], known_orders(w["source"]), gather=0.0)
    served = []
    try:
        for n, body in enumerate(bodies):
            request = parse_request(body, first_at.to_pydatetime())
            keys, fields = request_entity(request)
            assessed = assessed_return(request)
            pending = writer.pending(assessed)
            assert pending is not None  # the warehouse does not hold the order
            # the first return brings the order (customer + payment + address + device); the second finds it logged
            added = len(w["reader"].live(keys, pending)) - len(w["reader"].live(keys))
            assert added == (4 if n == 0 else 0)
            served.append(w["reader"].vector(keys, fields, pending=pending))
            writer.submit(assessed)
            writer.drain()
        assert writer.errors == 0
    finally:
        writer.close()
    orders_logged = w["live"].db.execute("SELECT count(*) FROM live_facts WHERE fact = 'order'").fetchone()[0]
    assert orders_logged == 4  # once, though two returns were recorded on it
    first, second = served
    assert first["dev_orders_vs_customer"] > 0  # the new device placed this very order
    assert (first["dev_customers"], first["addr_customers"]) == (1, 1)
    assert second["cust_orders_7d"] == first["cust_orders_7d"]
    assert second["cust_returns_7d"] == first["cust_returns_7d"] + 1

    # the delivery holding the order and both returns arrives; training sees what serving saw
    _delivery(snapshot, bodies, tmp_path / "later")
    ingest(tmp_path / "later", Warehouse(w["settings"].warehouse_dir))
    built_orders = writer.known_orders
    assert built_orders(["O-NEW"]) == set()  # ingested but not built: the online rows do not count it yet
    w["source"].build()
    built_orders(["O-NEW"])  # a new build: its orders are indexed on a thread, the old index answers meanwhile
    deadline = time.monotonic() + 60
    while built_orders.building and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)  # waiting for the index, not timing anything
    assert built_orders(["O-NEW"]) == {"O-NEW"}
    latest = Warehouse(w["settings"].warehouse_dir).current()
    held = latest.read("returns").set_index("return_id").loc[["R-NEW-1", "R-NEW-2"]].reset_index()
    probe = entity_rows(held, latest.read("orders"), latest.read("order_items"))
    probe["event_timestamp"] = held["requested_at"].to_numpy()
    probe["req_requested_epoch"] = (held["requested_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    trained = w["source"].historical(probe).set_index("return_id").loc[["R-NEW-1", "R-NEW-2"]]
    for vector, (_, row) in zip(served, trained.iterrows(), strict=True):
        for name, value in vector.items():
            if name == MEDIAN or name in ENTITY_KEYS or name.startswith("req_"):
                continue
            assert _same(value, row[name]), (row.name, name, value, row[name])


def test_drain_writes_what_is_gathered_at_once_and_returns_after_close(live_world):
    """A writer that would gather for an hour still records at once when someone drains it (the demo drains after
    every return); draining a closed writer returns."""
    import threading

    w = live_world
    snapshot = w["snapshot"]
    returns = snapshot.read("returns")
    orders = snapshot.read("orders").set_index("order_id")
    old = returns.iloc[-2]
    at = w["opened"] + pd.Timedelta(minutes=1)
    body = _body(old["customer_id"], orders.loc[old["order_id"], "payment_token"], at - pd.Timedelta(days=1), at, 7)
    writer = FreshnessWriter(w["live"], known_orders(w["source"]), gather=3600.0)
    before = w["live"].db.execute("SELECT count(*) FROM live_facts").fetchone()[0]
    writer.submit(assessed_return(parse_request(body, at.to_pydatetime())))
    drained = threading.Thread(target=writer.drain, daemon=True)
    drained.start()
    drained.join(timeout=120)
    assert not drained.is_alive()
    assert w["live"].db.execute("SELECT count(*) FROM live_facts").fetchone()[0] > before
    writer.close()
    writer.drain()


def _assessed(w: dict[str, Any], prefix: str) -> Callable[[int, Any], Any]:
    """What assessing the return ROW as PREFIX-N a minute after the live log opened hands the live-fact writer."""
    orders = w["snapshot"].read("orders").set_index("order_id")
    at = w["opened"] + pd.Timedelta(minutes=1)

    def assessed(n: int, row: Any) -> Any:
        body = _body(row["customer_id"], orders.loc[row["order_id"], "payment_token"], at - pd.Timedelta(days=1),
                     at, n)
        return assessed_return(parse_request({**body, "return_id": f"{prefix}-{n}"}, at.to_pydatetime()))

    return assessed


def _logged(w: dict[str, Any], return_id: str) -> int:
    """How many live facts the live log holds for RETURN_ID."""
    return int(w["live"].db.execute("SELECT count(*) FROM live_facts WHERE return_id = ?", (return_id,)).fetchone()[0])


def test_a_batch_that_fails_for_a_moment_is_tried_again_and_one_that_keeps_failing_is_given_up(live_world):
    """The live facts of assessed returns outlive a blip of what their write reads (here the warehouse's order index,
    as the online store in a Redis blip): the batch is tried again and recorded once. A write that keeps failing
    is given up after the last try, counted and logged, and the writer goes on with the next returns."""
    w = live_world
    returns = w["snapshot"].read("returns")
    index = known_orders(w["source"])
    failures = {"left": 2}

    def flaky(order_ids: list[str]) -> set[str]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("the order index is out for a moment")
        return index(order_ids)

    assessed, logged = _assessed(w, "R-BLIP"), partial(_logged, w)

    writer = FreshnessWriter(w["live"], flaky, gather=0.0, retries=(0.01, 0.01, 0.01))
    try:
        writer.submit(assessed(21, returns.iloc[-3]))
        writer.drain()
        assert failures["left"] == 0 and writer.errors == 0
        assert logged("R-BLIP-21") > 0
        failures["left"] = 4  # more failures than tries: given up
        writer.submit(assessed(22, returns.iloc[-4]))
        writer.drain()
        assert writer.errors == 1 and logged("R-BLIP-22") == 0
        writer.submit(assessed(23, returns.iloc[-5]))  # the next batch is written
        writer.drain()
        assert writer.errors == 1 and logged("R-BLIP-23") > 0
    finally:
        writer.close()


def test_while_the_log_takes_nothing_the_writer_holds_a_bounded_number_of_returns_and_counts_those_it_drops(
        live_world):
    """A log that hangs (or refuses every write) takes no batch for as long as it lasts while returns keep arriving:
    the writer holds at most `max_waiting` of them, counts the others as dropped (`/readyz` names the number) and
    says so in the log, instead of growing the worker's memory for the whole outage. Once the log answers, what was
    held is recorded and the count starts again."""
    import threading

    w = live_world
    returns = w["snapshot"].read("returns")
    index = known_orders(w["source"])
    entered, release = threading.Event(), threading.Event()

    def hung(order_ids: list[str]) -> set[str]:
        entered.set()
        assert release.wait(30), "the test never released the log"
        return index(order_ids)

    assessed, logged = _assessed(w, "R-HUNG"), partial(_logged, w)
    writer = FreshnessWriter(w["live"], hung, gather=0.0, retries=(), max_waiting=3)
    try:
        writer.submit(assessed(0, returns.iloc[-2]))  # taken by the writer, which hangs on it
        assert entered.wait(10)
        for n in range(1, 6):  # three wait, two are dropped
            writer.submit(assessed(n, returns.iloc[-2 - n]))
        assert writer.dropped == 2
        later = pd.Timestamp.now(tz="UTC").to_pydatetime()  # assessed after the build: recounted
        assert writer.recount(assessed(6, returns.iloc[-8]), later) is False
        assert writer.dropped == 3
        release.set()
        writer.drain()
        assert [logged(f"R-HUNG-{n}") > 0 for n in range(7)] == [True] * 4 + [False] * 3
        assert writer.dropped == 0 and writer.errors == 0  # a write went through: the count starts again
    finally:
        release.set()
        writer.close()


def test_one_return_the_live_log_cannot_hold_is_given_up_alone_not_with_its_batch(live_world):
    """A record the write refuses (here a request time before what nanosecond timestamps hold, which the API now
    refuses but a caller of the writer might still pass) fails every try of its batch; the other returns of the
    batch are still recorded, and only the refused one is given up."""
    import dataclasses
    import datetime as dt

    w = live_world
    returns = w["snapshot"].read("returns")
    assessed, logged = _assessed(w, "R-POISON"), partial(_logged, w)

    batch = [assessed(31 + i, returns.iloc[-6 - i]) for i in range(5)]
    batch[3] = dataclasses.replace(batch[3], requested_at=dt.datetime(1600, 1, 1, tzinfo=dt.UTC))
    writer = FreshnessWriter(w["live"], known_orders(w["source"]), gather=3600.0, retries=(0.01,))
    try:
        for item in batch:  # gathered into one batch until drain flushes it
            writer.submit(item)
        writer.drain()
        assert writer.errors == 1
        assert [logged(r.return_id) > 0 for r in batch] == [True, True, True, False, True]
    finally:
        writer.close()
