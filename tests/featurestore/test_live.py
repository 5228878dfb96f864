"""A return assessed now moves its customer's and tokens' counters at once, and training later sees the same."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.live import AssessedReturn, LiveFacts
from fraud_service.featurestore.online import OnlineFeatures
from fraud_service.featurestore.source import ENTITY_KEYS, FeatureSource, entity_rows
from fraud_service.feedback.inspections import InspectedReturn
from tests.store.conftest import BOTH
from training.datasets.synthetic import WorldConfig, generate

pytestmark = pytest.mark.slow
LIVE_LOGS = BOTH  # every test on a live_world runs on a SQLite and a PostgreSQL log
MEDIAN = "cust_median_days_to_return_365d"  # not a sum: documented to ignore live facts until the next build
BAD_INSPECTIONS = ("cust_bad_inspections", "cust_bad_inspections_365d", "addr_bad_inspections",
                   "pay_bad_inspections", "dev_bad_inspections", "rfd_bad_inspections")


def _assessed(r: pd.Series, order: pd.Series, at: pd.Timestamp, return_id: str) -> AssessedReturn:
    return AssessedReturn(
        return_id=return_id, order_id=r["order_id"], customer_id=r["customer_id"], requested_at=at.to_pydatetime(),
        return_type="item_not_received", channel="returnless", reason="not_received", refund_amount=120.0,
        refund_method="gift_card", refund_token="rfd_brand_new_card", has_receipt=True,
        placed_at=order["placed_at"].to_pydatetime(), order_total=float(order["order_total"]),
        address_token=order["address_token"], payment_token=order["payment_token"],
        device_token=order["device_token"])


def _probe(snapshot, r: pd.Series, at: pd.Timestamp) -> pd.DataFrame:
    one = snapshot.read("returns").set_index("return_id").loc[[r["return_id"]]].reset_index()
    entities = entity_rows(one, snapshot.read("orders"), snapshot.read("order_items"))
    entities["event_timestamp"] = at
    entities["req_requested_epoch"] = (at - pd.Timestamp(0, tz="UTC")).total_seconds()
    return entities


def _vector(reader: OnlineFeatures, entities: pd.DataFrame) -> dict:
    e = entities.iloc[0]
    return reader.vector({k: e[k] for k in ENTITY_KEYS}, {c: e[c] for c in entities.columns if c.startswith("req_")})


def test_a_second_return_five_minutes_later_sees_the_first(live_world):
    w = live_world
    returns = w["snapshot"].read("returns")
    orders = w["snapshot"].read("orders").set_index("order_id")
    with_address = orders.loc[returns["order_id"], "address_token"].notna().to_numpy()
    r = returns[with_address].iloc[-1]
    first_at = w["opened"] + pd.Timedelta(minutes=1)
    probe = _probe(w["snapshot"], r, first_at + pd.Timedelta(minutes=5))
    before = _vector(w["reader"], probe)

    w["live"].record(_assessed(r, orders.loc[r["order_id"]], first_at, "R-LIVE-1"))
    after = _vector(w["reader"], probe)

    for window in ("7d", "30d", "90d", "365d"):
        assert after[f"cust_returns_{window}"] == before[f"cust_returns_{window}"] + 1
        assert after[f"cust_refund_{window}"] == pytest.approx(before[f"cust_refund_{window}"] + 120.0)
    assert after["cust_inr_30d"] == before["cust_inr_30d"] + 1
    assert after["cust_returnless_90d"] == before["cust_returnless_90d"] + 1
    assert after["rfd_customers"] == 1 and after["rfd_returns_90d"] == 1  # a brand-new gift card
    assert after["addr_returns_90d"] == before["addr_returns_90d"] + 1

    # the same return again changes nothing; a probe before it was assessed does not see it
    w["live"].record(_assessed(r, orders.loc[r["order_id"]], first_at, "R-LIVE-1"))
    assert _vector(w["reader"], probe)["cust_returns_7d"] == after["cust_returns_7d"]
    earlier = _probe(w["snapshot"], r, first_at - pd.Timedelta(seconds=1))
    assert _vector(w["reader"], earlier)["cust_returns_7d"] == before["cust_returns_7d"]
    # eight days later it has left the 7-day window but not the 30-day one
    later = _vector(w["reader"], _probe(w["snapshot"], r, first_at + pd.Timedelta(days=8)))
    assert later["cust_returns_30d"] == after["cust_returns_30d"]
    assert later["cust_returns_7d"] == after["cust_returns_7d"] - 1


@pytest.mark.live_logs("sqlite")  # PRAGMA max_page_count stands for the full disk
def test_a_full_disk_is_the_error_a_failed_record_reports(live_world):
    """SQLite ends the transaction itself when the disk is full; the ROLLBACK after it then raised "cannot rollback -
    no transaction is active", and the log named that instead of the full disk (a helper's probe)."""
    import sqlite3

    w = live_world
    returns = w["snapshot"].read("returns")
    orders = w["snapshot"].read("orders").set_index("order_id")
    db = w["live"].db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # as full as the disk under it
    try:
        many = [_assessed(r, orders.loc[r["order_id"]], w["opened"], f"R-FULL-{n}")
                for n, (_, r) in enumerate(returns.head(200).iterrows())]
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            w["live"].record_many(many)
    finally:
        db.execute("PRAGMA max_page_count = 1073741823")
    w["live"].record_many(many[:1])  # and the log takes facts again once there is room
    assert db.execute("SELECT count(DISTINCT return_id) FROM live_facts WHERE return_id LIKE 'R-FULL-%'").fetchone() \
        == (1,)


def test_an_online_store_truncated_then_loaded_again_is_read_again(live_world):
    """A SQLite online store truncated while serving is a 503 (not a 500); once it is whole again (restored, or
    materialised) the same reader reads it: its connection had kept the empty file's schema, "no such table" for
    good, and one worker of a `make run` stayed not ready after `materialize --full` (found while probing)."""
    from pathlib import Path

    from fraud_service.errors import Unavailable

    w = live_world
    path = Path(w["source"].store().config.online_store.path)
    keys = dict.fromkeys(ENTITY_KEYS, "someone")
    whole = w["reader"].stored(keys)
    saved = path.read_bytes()
    path.write_bytes(b"")
    with pytest.raises(Unavailable, match="cannot be read"):
        w["reader"].stored(keys)
    path.write_bytes(saved)  # restored in place, as `cp` does
    assert w["reader"].stored(keys) == whole


def test_once_ingested_training_sees_what_serving_saw(live_world, tmp_path):
    w = live_world
    returns = w["snapshot"].read("returns")
    orders = w["snapshot"].read("orders").set_index("order_id")
    r = returns.iloc[-1]
    first_at = w["opened"] + pd.Timedelta(minutes=1)
    assessed = _assessed(r, orders.loc[r["order_id"]], first_at, "R-LIVE-2")
    w["live"].record(assessed)
    probe_at = first_at + pd.Timedelta(minutes=5)
    probe = _probe(w["snapshot"], r, probe_at)
    served = _vector(w["reader"], probe)

    # the retailer's next delivery contains the assessed return; ingest, rebuild, publish, prune
    later = tmp_path / "later"
    later.mkdir()
    row = returns.iloc[[-1]].assign(return_id="R-LIVE-2", requested_at=first_at, return_type="item_not_received",
                                    channel="returnless", reason="not_received", refund_amount=120.0,
                                    refund_method="gift_card", refund_token="rfd_brand_new_card", has_receipt=True)
    row.to_parquet(later / "returns.parquet", index=False)
    ingest(later, Warehouse(w["settings"].warehouse_dir))
    w["source"].build()
    w["source"].materialize(probe_at.to_pydatetime())
    present = [t for t in (assessed.address_token, assessed.payment_token, assessed.device_token) if t]
    pruned = w["live"].prune_ingested(probe_at.to_pydatetime())
    assert pruned == 1 + len(present) + 1  # customer, its tokens, the refund destination
    trained = w["source"].historical(probe).iloc[0]
    served_after_prune = _vector(w["source"].reader(), probe)

    for name, value in served.items():
        if name == MEDIAN or name in ENTITY_KEYS or name.startswith("req_"):
            continue
        for other in (trained[name], served_after_prune[name]):
            both_missing = (value is None or (isinstance(value, float) and math.isnan(value))) and pd.isna(other)
            assert both_missing or other == pytest.approx(value), name


def _fully_linked(snapshot) -> tuple[pd.Series, pd.Series]:
    """The latest return whose order has all three tokens and which has a refund token, and its order."""
    returns = snapshot.read("returns").sort_values("requested_at")
    orders = snapshot.read("orders").set_index("order_id")
    linked = orders.loc[returns["order_id"], ["address_token", "payment_token", "device_token"]].notna().all(axis=1)
    r = returns[linked.to_numpy() & returns["refund_token"].notna().to_numpy()].iloc[-1]
    return r, orders.loc[r["order_id"]]


def _inspection(r: pd.Series, order: pd.Series, at: pd.Timestamp, outcome: str = "worn") -> InspectedReturn:
    return InspectedReturn(
        return_id=r["return_id"], customer_id=r["customer_id"], inspected_at=at.to_pydatetime(), outcome=outcome,
        address_token=order["address_token"], payment_token=order["payment_token"],
        device_token=order["device_token"], refund_token=r["refund_token"])


def _same(a, b) -> bool:
    def missing(value) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    return (missing(a) and missing(b)) or a == b


def _deliver_and_build(w: dict, tmp_path: Path, r: pd.Series, inspected_at: pd.Timestamp) -> None:
    """The next delivery, holding R's inspection (worn) at INSPECTED_AT: ingested, and the features built."""
    later = tmp_path / "later"
    later.mkdir()
    pd.DataFrame({"return_id": [r["return_id"]], "inspected_at": [inspected_at], "outcome": ["worn"]}).astype(
        {"inspected_at": "datetime64[us, UTC]"}).to_parquet(later / "inspections.parquet", index=False)
    ingest(later, Warehouse(w["settings"].warehouse_dir))
    w["source"].build()


def _live_rows(live: LiveFacts) -> int:
    return live.db.execute("SELECT count(*) FROM live_facts").fetchone()[0]


def test_a_failed_inspection_counts_at_once_for_the_customer_and_the_returns_tokens(live_world):
    w = live_world
    r, order = _fully_linked(w["snapshot"])
    inspected_at = w["opened"].ceil("s") + pd.Timedelta(minutes=1)
    offsets = {"before": -pd.Timedelta(seconds=1), "at": pd.Timedelta(0), "after": pd.Timedelta(minutes=5),
               "a year on": pd.Timedelta(days=366)}
    probes = {name: _probe(w["snapshot"], r, inspected_at + offset) for name, offset in offsets.items()}
    before = {name: _vector(w["reader"], probe) for name, probe in probes.items()}

    w["live"].record_inspection(_inspection(r, order, inspected_at))
    after = {name: _vector(w["reader"], probe) for name, probe in probes.items()}

    assert _live_rows(w["live"]) == 5  # the customer and four tokens
    for name in BAD_INSPECTIONS:
        assert after["after"][name] == before["after"][name] + 1, name
        assert after["at"][name] == before["at"][name], name  # known one microsecond after it happened
        assert after["before"][name] == before["before"][name], name
    # a year on, it has left the 365-day window and stays in the all-time counts
    assert after["a year on"]["cust_bad_inspections_365d"] == before["a year on"]["cust_bad_inspections_365d"]
    for name in BAD_INSPECTIONS:
        if name != "cust_bad_inspections_365d":
            assert after["a year on"][name] == before["a year on"][name] + 1, name
    # and nothing else moved
    for name, value in after["after"].items():
        if name not in BAD_INSPECTIONS:
            assert _same(value, before["after"][name]), name


def _inspected_once(w: dict, outcome: str) -> tuple[dict, dict]:
    """The vector of a fully linked return's customer five minutes after one inspection with OUTCOME was
    recorded live, before and after the recording."""
    r, order = _fully_linked(w["snapshot"])
    inspected_at = w["opened"] + pd.Timedelta(minutes=1)
    probe = _probe(w["snapshot"], r, inspected_at + pd.Timedelta(minutes=5))
    before = _vector(w["reader"], probe)
    w["live"].record_inspection(_inspection(r, order, inspected_at, outcome))
    return before, _vector(w["reader"], probe)


def test_an_inspection_harmed_in_transit_changes_nothing(live_world):
    before, after = _inspected_once(live_world, "damaged")

    assert _live_rows(live_world["live"]) == 0
    for name, value in after.items():
        assert _same(value, before[name]), name


def test_a_passed_inspection_counts_at_once_for_the_customer_only(live_world):
    before, after = _inspected_once(live_world, "ok")

    assert _live_rows(live_world["live"]) == 1  # the customer; a passed inspection says nothing of the tokens
    passed = ("cust_passed_inspections", "cust_passed_inspections_365d")
    for name in passed:
        assert after[name] == before[name] + 1, name
    for name, value in after.items():
        if name not in passed:
            assert _same(value, before[name]), name


def test_an_inspection_counts_once_and_a_second_inspection_counts_again(live_world):
    w = live_world
    r, order = _fully_linked(w["snapshot"])
    first = w["opened"] + pd.Timedelta(minutes=1)
    second = first + pd.Timedelta(hours=2)
    probe = _probe(w["snapshot"], r, second + pd.Timedelta(minutes=5))
    before = _vector(w["reader"], probe)

    w["live"].record_inspection(_inspection(r, order, first))
    w["live"].record_inspection(_inspection(r, order, first, "empty_box"))  # the same inspection, reported again
    once = _vector(w["reader"], probe)
    w["live"].record_inspection(_inspection(r, order, second))
    twice = _vector(w["reader"], probe)

    assert _live_rows(w["live"]) == 10
    for name in BAD_INSPECTIONS:
        assert once[name] == before[name] + 1, name
        assert twice[name] == before[name] + 2, name


def test_an_inspection_is_pruned_only_once_the_snapshot_holds_that_inspection(live_world, tmp_path):
    w = live_world
    r, order = _fully_linked(w["snapshot"])
    first = w["opened"].ceil("s") + pd.Timedelta(minutes=1)
    second = first + pd.Timedelta(minutes=1)
    probe_at = second + pd.Timedelta(minutes=5)
    probe = _probe(w["snapshot"], r, probe_at)
    before = _vector(w["reader"], probe)
    w["live"].record_inspection(_inspection(r, order, first))
    w["live"].record_inspection(_inspection(r, order, second))
    served = _vector(w["reader"], probe)

    # the built snapshot holds the return but neither inspection: both keep counting live
    assert w["live"].prune_ingested(probe_at.to_pydatetime()) == 0
    assert _live_rows(w["live"]) == 10

    # the next delivery holds the first inspection only; ingest, rebuild, publish, prune
    _deliver_and_build(w, tmp_path, r, first)
    w["source"].materialize(probe_at.to_pydatetime())
    assert w["live"].prune_ingested((first - pd.Timedelta(seconds=1)).to_pydatetime()) == 0  # not yet published
    assert w["live"].prune_ingested(probe_at.to_pydatetime()) == 5
    kept = {row[0] for row in w["live"].db.execute("SELECT DISTINCT fact FROM live_facts")}
    assert kept == {f"inspection:{(second - pd.Timestamp(0, tz='UTC')) // pd.Timedelta(microseconds=1)}"}

    served_after_prune = _vector(w["source"].reader(), probe)
    trained = w["source"].historical(probe).iloc[0]
    for name in BAD_INSPECTIONS:
        assert served[name] == before[name] + 2, name
        assert served_after_prune[name] == served[name], name  # counted once: offline now, not live too
        assert trained[name] == served[name] - 1, name  # the second inspection is not in the warehouse yet


def test_without_an_inspections_table_inspection_facts_are_kept(tmp_path):
    generate(WorldConfig(customers=200, days=60, seed=43), tmp_path / "world")
    (tmp_path / "world" / "inspections.parquet").unlink()
    settings = Settings.from_env({"FRAUD_HOME": str(tmp_path / "home")})
    ingest(tmp_path / "world", Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build()
    snapshot = Warehouse(settings.warehouse_dir).current()
    assert snapshot.read("inspections") is None
    live = LiveFacts(source)
    r, order = _fully_linked(snapshot)
    at = snapshot.read("returns")["requested_at"].max() + pd.Timedelta(hours=1)

    live.record_inspection(_inspection(r, order, at))

    assert live.prune_ingested((at + pd.Timedelta(days=1)).to_pydatetime()) == 0
    assert _live_rows(live) == 5


def test_rows_ingested_after_a_later_refresh_reach_the_online_store_before_their_live_facts_go(live_world, tmp_path):
    """An inspection counted live, the online store refreshed a day later, then the delivery holding it ingested
    and built: its offline row is dated before that refresh, so an incremental load never read it, while its live
    facts were dropped as covered, and the service forgot it. The refresh after a build reloads every entity."""
    w = live_world
    r, order = _fully_linked(w["snapshot"])
    inspected_at = w["opened"].ceil("s") + pd.Timedelta(minutes=1)
    probe_at = inspected_at + pd.Timedelta(days=2)
    probe = _probe(w["snapshot"], r, probe_at)
    before = _vector(w["reader"], probe)
    w["live"].record_inspection(_inspection(r, order, inspected_at))
    served = _vector(w["reader"], probe)
    assert w["source"].materialize((inspected_at + pd.Timedelta(days=1)).to_pydatetime()) is False  # incremental

    _deliver_and_build(w, tmp_path, r, inspected_at)
    assert w["source"].materialize(probe_at.to_pydatetime()) is True  # built since: every entity reloaded
    assert w["live"].prune_ingested(probe_at.to_pydatetime()) == 5
    after = _vector(w["source"].reader(), probe)
    for name in BAD_INSPECTIONS:
        assert served[name] == before[name] + 1, name
        assert after[name] == served[name], name  # offline now, and in the online store


def test_an_inspection_reported_while_the_freshness_writer_records_is_kept(live_world):
    """Both record through one sqlite connection: an inspection whose transaction began inside the writer's failed
    ("cannot start a transaction within a transaction") and its facts were lost."""
    import threading

    w = live_world
    live: LiveFacts = w["live"]
    r, order = _fully_linked(w["snapshot"])
    inspected_at = w["opened"] + pd.Timedelta(minutes=1)
    reporter_moved = threading.Event()  # the reporter waits for the writer's transaction, or has finished
    failures: list[BaseException] = []

    def report() -> None:
        try:
            live.record_inspection(_inspection(r, order, inspected_at))
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            failures.append(exc)
        reporter_moved.set()

    reporter = threading.Thread(target=report)

    class Watched:  # the live log's lock, telling when the reporter starts to wait for it
        def __init__(self, inner) -> None:
            self.inner = inner

        def __enter__(self):
            if threading.current_thread() is reporter:
                reporter_moved.set()
            return self.inner.__enter__()

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    live._lock = Watched(live._lock)
    looked_up = live.reader.seen

    def seen(*args, **kwargs):  # the writer asks the stored rows while its transaction is open
        if not reporter.is_alive() and not reporter_moved.is_set():
            reporter.start()
            assert reporter_moved.wait(timeout=60)
        return looked_up(*args, **kwargs)

    live.reader.seen = seen
    live.record_many([_assessed(r, order, w["opened"] + pd.Timedelta(seconds=30), "LIVE-RACE-1"),
                      _assessed(r, order, w["opened"] + pd.Timedelta(seconds=40), "LIVE-RACE-2")])
    reporter.join(timeout=60)
    assert reporter.ident is not None  # it was started inside the writer's transaction

    assert failures == []
    facts = dict(live.db.execute("SELECT fact LIKE 'inspection:%', count(*) FROM live_facts GROUP BY 1").fetchall())
    assert facts[1] == 5  # the inspection: its customer and four tokens
    assert live.db.execute("SELECT count(DISTINCT return_id) FROM live_facts WHERE fact = 'return'").fetchone()[0] == 2


def test_a_replayed_return_is_recounted_only_when_no_build_came_after_it(live_world):
    """A request sent again after a 503 (its commit unconfirmed, its live facts never written) recounts the stored
    return; one assessed before the features were last built is left to the builds (the build may hold it, and its
    facts would count it twice)."""
    from fraud_service.bootstrap import known_orders
    from fraud_service.featurestore.live import FreshnessWriter

    w = live_world
    live: LiveFacts = w["live"]
    r, order = _fully_linked(w["snapshot"])
    built_at = pd.Timestamp(w["source"].manifest()["built_at"]).to_pydatetime()
    writer = FreshnessWriter(live, known_orders(w["source"]), gather=0.0)
    try:
        before_build = _assessed(r, order, w["opened"] + pd.Timedelta(minutes=1), "RECOUNT-OLD")
        after_build = _assessed(r, order, w["opened"] + pd.Timedelta(minutes=2), "RECOUNT-NEW")
        # a return the warehouse held before it was assessed (a backlog sent late): the build counts it already
        ingested = _assessed(r, order, w["opened"] + pd.Timedelta(minutes=3), str(r["return_id"]))
        assert not writer.recount(before_build, built_at - pd.Timedelta(seconds=1))
        assert writer.recount(after_build, built_at + pd.Timedelta(seconds=1))
        assert writer.recount(after_build, built_at + pd.Timedelta(seconds=1))  # sent a third time: counted once
        assert writer.recount(ingested, built_at + pd.Timedelta(seconds=1))  # submitted, then found held
        writer.drain()
        assert writer.errors == 0
    finally:
        writer.close()
    counted = dict(live.db.execute(
        "SELECT return_id, count(*) FROM live_facts WHERE fact = 'return' GROUP BY return_id").fetchall())
    assert counted == {"RECOUNT-NEW": 5}  # its customer, three order tokens, the refund destination


@pytest.mark.live_logs("postgres")
def test_two_hosts_recording_one_customer_new_on_one_token_at_once_count_it_new_once(live_world):
    """Whether a customer is new on a token is read from the log, then written to it. SQLite has one write lock;
    PostgreSQL writers (other hosts) lock the tokens they read first (`PostgresLog.hold`): the second waits for the
    first to commit, then finds its fact, and the customer counts once on the new refund destination."""
    import json
    import threading
    import time

    import psycopg

    w = live_world
    r, order = _fully_linked(w["snapshot"])
    host_a, host_b = w["live"], LiveFacts(w["source"], w["source"].reader())  # each with connections of its own
    inside, proceed, failures = threading.Event(), threading.Event(), []
    looked_up = host_a.reader.seen

    def seen(*args, **kwargs):  # host A, its transaction open, between reading the log and writing it
        inside.set()
        assert proceed.wait(timeout=60)
        return looked_up(*args, **kwargs)

    host_a.reader.seen = seen

    def record(host: LiveFacts, return_id: str) -> None:
        try:
            host.record(_assessed(r, order, w["opened"] + pd.Timedelta(seconds=30), return_id))
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            failures.append(exc)

    first = threading.Thread(target=record, args=(host_a, "LIVE-HOST-A"))
    first.start()
    assert inside.wait(timeout=60)
    second = threading.Thread(target=record, args=(host_b, "LIVE-HOST-B"))
    second.start()
    try:
        with psycopg.connect(live_log_url(w), autocommit=True) as watcher:
            deadline, waiting = time.monotonic() + 30, 0
            while not waiting and time.monotonic() < deadline:
                waiting = watcher.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT "
                                          "granted").fetchone()[0]
                time.sleep(0.01)  # waiting for host B to reach the lock, not timing anything
        assert waiting == 1, "host B did not wait for host A's token"
    finally:
        proceed.set()
        first.join(timeout=60)
        second.join(timeout=60)
        host_b.close()
        host_b.reader.close()
    assert failures == []
    rows = host_a.db.execute("SELECT return_id, contributions FROM live_facts WHERE entity = 'refund' AND key = ?",
                             ("rfd_brand_new_card",)).fetchall()
    counted = {return_id: json.loads(contributions)["n_new_customer"] for return_id, contributions in rows}
    assert counted == {"LIVE-HOST-A": 1, "LIVE-HOST-B": 0}


def live_log_url(w: dict) -> str:
    from fraud_service.featurestore.live_log import psycopg_url

    return psycopg_url(w["settings"].live_log_url)


@pytest.mark.live_logs("postgres")
def test_reads_of_a_postgresql_log_go_over_connections_of_their_own_and_idle_ones_are_kept(live_world):
    """One connection shared by a worker's request threads made its reads take turns across the network; a read now
    takes an idle connection of the reader's pool or opens one, and gives it back (at most IDLE_LOGS kept)."""
    from fraud_service.featurestore.online import IDLE_LOGS

    reader: OnlineFeatures = live_world["reader"]
    with reader._reading_live() as first, reader._reading_live() as second:  # two requests reading at once
        assert first is not second
        pids = {log.execute("SELECT pg_backend_pid()").fetchone()[0] for log in (first, second)}
        assert len(pids) == 2
    with reader._reading_live() as again:  # a later read reuses one of them: no new connection
        assert again in (first, second)
        assert again.execute("SELECT pg_backend_pid()").fetchone()[0] in pids
    held = [reader._reading_live() for _ in range(IDLE_LOGS + 2)]
    logs = [context.__enter__() for context in held]
    assert len({id(log) for log in logs}) == IDLE_LOGS + 2
    assert len({log.execute("SELECT pg_backend_pid()").fetchone()[0] for log in logs}) == IDLE_LOGS + 2
    for context in held:
        context.__exit__(None, None, None)
    assert len(reader._idle_logs) == IDLE_LOGS  # the rest were closed
    assert sum(log._conn is not None and log._conn.closed for log in logs) == 2
