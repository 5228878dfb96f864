"""The scoring path's inputs: a request's entity keys and request fields equal what training computes from the
same return's table rows; and an assessed return moves its customer's counters for the next request."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.errors import CommitUnconfirmed
from fraud_service.featurestore.source import entity_rows, request_entity
from fraud_service.scoring.request import parse_request
from tests.api.conftest import Api, body_from_dataset, make_api, private_home
from tests.conftest import TrainedWorld

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_request_entity_equals_entity_rows(trained_world: TrainedWorld) -> None:
    dataset = trained_world.dataset
    returns = pd.read_parquet(dataset / "returns.parquet").sort_values("return_id")
    sample = pd.concat([returns.iloc[::25],  # every kind of return the generator makes, incl. missing tokens
                        returns[returns["refund_token"].isna()].head(5),
                        returns[returns["return_type"] == "item_not_received"].head(5)]).drop_duplicates("return_id")
    orders = pd.read_parquet(dataset / "orders.parquet")
    items = pd.read_parquet(dataset / "order_items.parquet")
    offline = entity_rows(sample, orders, items).set_index("return_id")
    now = dt.datetime.now(dt.UTC)
    checked = 0
    for return_id in sample["return_id"]:
        keys, fields = request_entity(parse_request(body_from_dataset(dataset, return_id), now))
        row = offline.loc[return_id]
        for name, value in {**keys, **fields}.items():
            expected = row[name]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(expected), (return_id, name)
            elif isinstance(value, float):
                assert value == pytest.approx(float(expected), rel=1e-12, abs=1e-9), (return_id, name)
            else:
                assert value == expected, (return_id, name)
        checked += 1
    assert checked == len(sample) > 100


def _new_customer(api: Any, world: TrainedWorld) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two item-not-received claims of a new customer on two new orders, ten and five minutes ago."""
    returns = pd.read_parquet(world.dataset / "returns.parquet")
    customer = f"fresh-{uuid.uuid4().hex[:8]}"
    first_at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=10)
    first = api.body(str(returns["return_id"].iloc[0]), return_id=f"{customer}-1", customer_id=customer,
                     requested_at=first_at.isoformat(), return_type="item_not_received")
    first["order"].update(order_id=f"{customer}-o1", customer_id=None,
                          placed_at=(first_at - pd.Timedelta(days=3)).isoformat(), delivered_at=None)
    second = {**first, "return_id": f"{customer}-2", "requested_at": (first_at + pd.Timedelta(minutes=5)).isoformat()}
    second["order"] = {**first["order"], "order_id": f"{customer}-o2"}
    return first, second


def _live_api(serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> Api:
    """The app on a private copy of the home and its own SQLite evidence, with live-fact writes on."""
    settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                  "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}"})
    return make_api(settings, trained_world.dataset, "sqlite", freshness=True)


def test_an_assessed_return_counts_for_the_next_request(serving_home: Path, trained_world: TrainedWorld,
                                                        tmp_path: Path) -> None:
    """Freshness through the API: five minutes later, a second return of a new customer sees the first."""
    api = _live_api(serving_home, trained_world, tmp_path)
    try:
        first, second = _new_customer(api, trained_world)
        before = api.client.get(api.assess(first).get_json()["evidence"], headers=api.headers()).get_json()
        api.service.assessor.freshness.drain()
        assert api.service.assessor.freshness.errors == 0
        after = api.client.get(api.assess(second).get_json()["evidence"], headers=api.headers()).get_json()
        f0, f1 = before["features"], after["features"]
        assert (f0["cust_returns_7d"], f1["cust_returns_7d"]) == (0, 1)
        assert (f0["cust_inr_90d"], f1["cust_inr_90d"]) == (0, 1)
        assert (f0["cust_orders_7d"], f1["cust_orders_7d"]) == (1, 2)  # each order new to the store, counted at once
        assert f1["cust_refund_30d"] == pytest.approx(first["refund_amount"])
    finally:
        api.service.close()


def test_a_return_answered_503_counts_once_it_is_sent_again(serving_home: Path, trained_world: TrainedWorld,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence commit went through but was not confirmed in time: the client got the 503 that says the
    assessment may be stored, and no live fact was written. Sent again as told, the stored answer comes back, and
    from then on the return counts for its customer, once however often it is sent."""
    api = _live_api(serving_home, trained_world, tmp_path)
    try:
        first, second = _new_customer(api, trained_world)
        writer = api.service.assessor.writer
        store = writer.store

        def unconfirmed(*args: Any, **kwargs: Any) -> Any:  # committed, but the answer never came
            store(*args, **kwargs)
            raise CommitUnconfirmed("the evidence database did not confirm the commit within 1.5 s")

        monkeypatch.setattr(writer, "store", unconfirmed)
        lost = api.assess(first)
        assert lost.status_code == 503 and "may be stored" in lost.get_json()["message"]
        monkeypatch.setattr(writer, "store", store)
        freshness = api.service.assessor.freshness
        freshness.drain()
        unseen = api.client.get(api.assess(second).get_json()["evidence"], headers=api.headers()).get_json()
        assert unseen["features"]["cust_returns_7d"] == 0  # not counted yet: its facts were never written

        for _ in range(2):
            again = api.assess(first)
            assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        freshness.drain()
        assert freshness.errors == 0
        third = {**second, "return_id": f"{second['return_id']}-b",
                 "requested_at": (pd.Timestamp(second["requested_at"]) + pd.Timedelta(minutes=1)).isoformat()}
        seen = api.client.get(api.assess(third).get_json()["evidence"], headers=api.headers()).get_json()["features"]
        assert seen["cust_returns_7d"] == 2  # the first (recounted once, though sent twice) and the second
        assert seen["cust_refund_30d"] == pytest.approx(first["refund_amount"] + second["refund_amount"])
        assert seen["cust_orders_7d"] == 2  # both orders, each counted once
    finally:
        api.service.close()


def test_a_failed_inspection_counts_at_once_for_the_customer_and_the_tokens(serving_home: Path,
                                                                           trained_world: TrainedWorld,
                                                                           tmp_path: Path) -> None:
    """Issue 17: an inspection posted through the API is in the live features of the next request, for the customer
    and for the payment instrument and address the inspected return used (another customer on them sees it too).
    The request does not wait for the live-fact writer: it recorded the inspection on its own thread, behind the
    writer's lock, and with a PostgreSQL log that hung every thread of an instance waited there (a helper's probe)."""
    import threading

    api = _live_api(serving_home, trained_world, tmp_path)
    try:
        returns = pd.read_parquet(trained_world.dataset / "returns.parquet")
        tag = uuid.uuid4().hex[:8]
        at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=30)

        def body(n: int, customer: str, minutes: int) -> dict[str, Any]:
            b = api.body(str(returns["return_id"].iloc[0]), return_id=f"insp-{tag}-{n}", customer_id=customer,
                         requested_at=(at + pd.Timedelta(minutes=minutes)).isoformat())
            b["order"].update(order_id=f"insp-{tag}-o{n}", customer_id=None, payment_token=f"pay-{tag}",
                              address_token=f"adr-{tag}", placed_at=(at - pd.Timedelta(days=3)).isoformat(),
                              delivered_at=None)
            return b

        first = api.assess(body(1, f"c-{tag}", 0)).get_json()
        before = api.client.get(first["evidence"], headers=api.headers()).get_json()["features"]
        held, release, released = threading.Event(), threading.Event(), threading.Event()

        def writer_busy() -> None:  # the live-fact writer in a long transaction
            with api.service.assessor.freshness.live._lock:
                held.set()
                release.wait(timeout=20)
                released.set()

        busy = threading.Thread(target=writer_busy)
        busy.start()
        assert held.wait(timeout=20)
        inspected = api.client.post(f"/v1/returns/{first['return_id']}/inspection", headers=api.headers(), json={
            "inspected_at": (at + pd.Timedelta(minutes=1)).isoformat(), "outcome": "empty_box"})
        answered_while_busy = not released.is_set()
        release.set()
        busy.join(timeout=30)
        assert inspected.status_code == 201, inspected.get_json()
        assert answered_while_busy
        api.service.assessor.freshness.drain()
        same = api.assess(body(2, f"c-{tag}", 5)).get_json()
        other = api.assess(body(3, f"d-{tag}", 5)).get_json()
        seen = api.client.get(same["evidence"], headers=api.headers()).get_json()["features"]
        stranger = api.client.get(other["evidence"], headers=api.headers()).get_json()["features"]
        for name in ("cust_bad_inspections", "cust_bad_inspections_365d"):
            if name in before:  # the model's own features are what the evidence keeps
                assert seen[name] == before[name] + 1, name
                assert stranger[name] == 0, name
        token_features = [n for n in ("pay_bad_inspections", "addr_bad_inspections") if n in before]
        assert token_features, "the model uses no token inspection feature"
        for name in token_features:
            assert (before[name], seen[name], stranger[name]) == (0, 1, 1), name
    finally:
        api.service.close()


def test_readyz_says_so_while_the_live_fact_log_refuses_writes(serving_home: Path, trained_world: TrainedWorld,
                                                              tmp_path: Path) -> None:
    """A live-fact log that refuses writes (a full disk, `live.db` made read-only) left answers at 201 and `/readyz`
    silent while every assessed return's live facts were dropped: velocity features went stale with nothing but the
    log saying so. `/readyz` stays ready (the answers are right but for that) and names the problem until a write
    succeeds again."""
    api = _live_api(serving_home, trained_world, tmp_path)
    try:
        first, second = _new_customer(api, trained_world)
        freshness = api.service.assessor.freshness
        freshness.retries = (0.01,)
        freshness.live.db.execute("PRAGMA query_only = ON")  # SQLite refuses every write: "readonly database"
        assert api.assess(first).status_code == 201
        freshness.drain()
        assert freshness.errors == 1
        ready = api.client.get("/readyz")
        assert ready.status_code == 200
        problem = ready.get_json()["checks"]["feature_store"]["problem"]
        assert "live facts are not being recorded" in problem and "readonly database" in problem, problem
        assert "not even queued" not in problem, problem
        freshness.max_waiting = 0  # as if the queue were full: the next return's facts are dropped, and it says so
        assert api.assess(second).status_code == 201
        problem = api.client.get("/readyz").get_json()["checks"]["feature_store"]["problem"]
        assert "1 were not even queued (the writer held 0 waiting)" in problem, problem
        freshness.max_waiting = 1000
        freshness.live.db.execute("PRAGMA query_only = OFF")
        assert api.assess(second).status_code == 200  # the replay queues its facts again, and they are written
        freshness.drain()
        assert freshness.dropped == 0
        assert freshness.errors == 1
        assert "problem" not in api.client.get("/readyz").get_json()["checks"]["feature_store"]
    finally:
        api.service.close()


@pytest.mark.postgres
def test_a_live_fact_log_database_that_cannot_be_reached_is_a_503_naming_it_until_it_answers(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With FRAUD_LIVE_LOG (instances on several hosts), a request reads its live facts from PostgreSQL: while that
    database cannot be reached, an assessment is a 503 that names the log and decides nothing, `/readyz` says the
    same, and both recover once it answers, without a restart."""
    from fraud_service.featurestore import live_log
    from tests.store.conftest import POSTGRES, admin_sql, scratch_database

    monkeypatch.setattr(live_log, "RECONNECT_S", 0.0)  # the pause between two attempts: tests/featurestore
    with scratch_database() as name:
        pass  # dropped again: a database that does not exist yet
    settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                  "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}",
                                  "FRAUD_LIVE_LOG": f"{POSTGRES}/{name}"})
    api = make_api(settings, trained_world.dataset, "sqlite", freshness=True)  # a worker starts all the same
    try:
        first, second = _new_customer(api, trained_world)
        refused = api.assess(first)
        assert refused.status_code == 503, refused.get_json()
        assert "the live-fact log (PostgreSQL) cannot be reached; no decision was made" in \
            refused.get_json()["message"]
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        assert "live-fact log (PostgreSQL) cannot be reached" in ready.get_json()["checks"]["feature_store"]["detail"]
        admin_sql(f'CREATE DATABASE "{name}"')
        assert api.client.get("/readyz").status_code == 200
        assert api.assess(first).status_code == 201
        api.service.assessor.freshness.drain()
        seen = api.client.get(api.assess(second).get_json()["evidence"], headers=api.headers()).get_json()
        assert seen["features"]["cust_inr_30d"] == 1  # the first claim, read back from PostgreSQL
    finally:
        api.service.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
