"""Training/serving parity: at the same moment, the online vector equals the historical one, on sqlite and Redis."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.definitions import feature_names
from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.online import OnlineFeatures
from fraud_service.featurestore.source import ENTITY_KEYS, FeatureSource, entity_rows
from training.datasets.synthetic import WorldConfig, generate

pytestmark = pytest.mark.slow
REDIS_TEST_DB = 11  # bench/features_bench.py uses db 9


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("parity")
    generate(WorldConfig(customers=2500, days=200, seed=31), root / "world")
    return root


def _source(root, online_store: str) -> FeatureSource:
    settings = Settings.from_env({"FRAUD_HOME": str(root / f"home-{online_store}"), "FRAUD_ONLINE_STORE": online_store,
                                  "FRAUD_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"})
    ingest(root / "world", Warehouse(settings.warehouse_dir))
    source = FeatureSource(settings)
    source.build()
    return source


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    a_missing = a is None or (isinstance(a, float) and math.isnan(a)) or pd.isna(a)
    b_missing = b is None or (isinstance(b, float) and math.isnan(b)) or pd.isna(b)
    if a_missing or b_missing:
        return a_missing and b_missing
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def _check_parity(source: FeatureSource) -> None:
    snapshot = Warehouse(source.settings.warehouse_dir).current()
    returns = snapshot.read("returns")
    moment = returns["requested_at"].quantile(0.6).floor("s")
    source.materialize(moment.to_pydatetime(), full=True)
    sample = returns.sample(250, random_state=4)
    entities = entity_rows(sample, snapshot.read("orders"), snapshot.read("order_items"))
    entities["event_timestamp"] = moment
    entities["req_requested_epoch"] = (moment - pd.Timestamp(0, tz="UTC")).total_seconds()

    historical = source.historical(entities).set_index("return_id").loc[entities["return_id"]]
    online = source.online(entities)
    reader = OnlineFeatures(source.store())
    request_columns = [c for c in entities.columns if c.startswith("req_")]
    features = [c for c in online.columns if c not in ENTITY_KEYS and not c.startswith("req_")]
    assert sorted(features) == sorted(feature_names())
    mismatches = []
    nonzero = 0
    for i, (_, entity) in enumerate(entities.iterrows()):
        fast = reader.vector({k: entity[k] for k in ENTITY_KEYS}, {c: entity[c] for c in request_columns})
        for name in features:
            want = historical.iloc[i][name]
            for path, got in (("feast online", online.iloc[i][name]), ("fast reader", fast[name])):
                if not _same(want, got):
                    mismatches.append(f"{entity['return_id']} {name}: historical {want!r}, {path} {got!r}")
        nonzero += fast["cust_orders_90d"] > 0
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. " + "; ".join(mismatches[:8])
    assert nonzero > 50  # the vectors compared are not empty
    for join in ENTITY_KEYS:  # the hand-built key bytes are Feast's own
        for value in (str(entities.iloc[0][join]), "", "clé-ü-🙂", "x" * 300):
            assert reader.entity_key(join, value) == reader.key({join: value})


def test_online_equals_historical_on_sqlite(world):
    _check_parity(_source(world, "sqlite"))


@pytest.fixture(scope="module")
def redis_source(world) -> FeatureSource:
    import redis

    redis.Redis(db=REDIS_TEST_DB).flushdb()
    return _source(world, "redis")


@pytest.mark.redis
def test_online_equals_historical_on_redis(redis_source):
    _check_parity(redis_source)


@pytest.mark.redis
@pytest.mark.chaos
def test_a_hung_redis_is_unavailable_within_its_timeout(redis_source):
    """Redis behind a proxy that stops forwarding: the read fails with Unavailable (a 503, no decision) after the
    client's socket timeout, instead of holding the request's thread for as long as the hang lasts."""
    import time

    from fraud_service.errors import Unavailable
    from fraud_service.featurestore.online import REDIS_TIMEOUT_S
    from tests.proxy import FaultProxy

    proxy = FaultProxy(("127.0.0.1", 6379))
    try:
        settings = Settings.from_env({"FRAUD_HOME": str(redis_source.settings.home), "FRAUD_ONLINE_STORE": "redis",
                                      "FRAUD_REDIS_URL": f"redis://{proxy.address}/{REDIS_TEST_DB}"})
        reader = FeatureSource(settings).reader()
        keys = dict.fromkeys(ENTITY_KEYS, "someone")
        assert len(reader.stored(keys)) == len(reader.views)  # through the proxy, it answers
        proxy.hang()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="Redis") as raised:
            reader.stored(keys)
        assert time.monotonic() - started < REDIS_TIMEOUT_S + 0.5
        assert proxy.address.split(":")[-1] not in str(raised.value)  # its port: the answer names no address
    finally:
        proxy.close()


@pytest.mark.redis
def test_a_redis_that_lost_its_data_is_unavailable_not_empty_features(redis_source):
    """Redis restarted without its data (or flushed): every entity read as unknown, so every customer scored as a
    new one, with 201s and /readyz ready. The read says the store holds no features; loading it again ends that."""
    import redis

    from fraud_service.errors import Unavailable

    snapshot = Warehouse(redis_source.settings.warehouse_dir).current()
    moment = snapshot.read("returns")["requested_at"].max().ceil("s")
    redis_source.materialize(moment.to_pydatetime(), full=True)
    reader = redis_source.reader()
    keys = dict.fromkeys(ENTITY_KEYS, "someone")
    assert len(reader.stored(keys)) == len(reader.views)
    redis.Redis(db=REDIS_TEST_DB).flushdb()
    with pytest.raises(Unavailable, match="holds no features") as raised:
        reader.stored(keys)
    assert "features materialize --full" in str(raised.value)
    # doctor said the features were loaded, and the every-minute incremental materialize loaded nothing, reporting
    # success (a helper's operations probe): both see the empty store now
    from fraud_service.health import check_features

    check = check_features(redis_source.settings)
    assert not check.ok and "holds no features" in check.detail
    assert redis_source.materialize(moment.to_pydatetime()) is True  # not asked for --full: every entity all the same
    assert len(reader.stored(keys)) == len(reader.views)
    assert check_features(redis_source.settings).ok


@pytest.mark.redis
def test_a_redis_being_loaded_again_after_losing_everything_is_unavailable_until_it_is_whole(redis_source,
                                                                                             monkeypatch):
    """Once `materialize` had loaded the first keys into a Redis that restarted empty, requests were answered 201 on
    the half-loaded store (all 754 in a helper's probe with no payment or address features, 66 customers scored as
    new), and so after a reload that stopped part-way (Redis at its memory limit). Now they are 503 until the store is
    whole; a reload that stopped is finished by the next `materialize`, however it is asked."""
    import feast
    import redis

    from fraud_service.errors import FeatureStoreError, Unavailable
    from fraud_service.featurestore.online import reloading_key

    snapshot = Warehouse(redis_source.settings.warehouse_dir).current()
    moment = snapshot.read("returns")["requested_at"].max().ceil("s").to_pydatetime()
    redis_source.materialize(moment, full=True)
    client = redis.Redis(db=REDIS_TEST_DB)
    loaded = client.dbsize()
    reader = redis_source.reader()
    keys = dict.fromkeys(ENTITY_KEYS, "someone")
    client.flushdb()
    real = feast.FeatureStore.materialize
    seen: list[str] = []

    def part_way(store, *args, **kwargs):  # the first views load, then Redis refuses (out of memory, say)
        real(store, *args, **kwargs)
        with pytest.raises(Unavailable, match="being loaded again") as raised:
            reader.stored(keys)
        seen.append(str(raised.value))
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(feast.FeatureStore, "materialize", part_way)
    with pytest.raises(FeatureStoreError, match=r"Redis failed during `features materialize` \(OutOfMemoryError: "
                                                r"command not allowed.*run it again once Redis answers"):
        redis_source.materialize(moment)  # it "failed unexpectedly" on the command line
    monkeypatch.undo()
    assert seen and "features materialize --full" in seen[0]
    reloading = reloading_key(redis_source.store().config.project)
    assert client.exists(reloading) and client.dbsize() > 1  # loaded, but not known to be whole
    with pytest.raises(Unavailable, match="being loaded again"):
        reader.stored(keys)
    from fraud_service.health import check_features

    doctor = check_features(redis_source.settings)
    assert not doctor.ok and "did not finish: requests answer 503" in doctor.detail
    assert redis_source.materialize(moment) is True  # not asked for --full: the stopped reload is done again
    assert not client.exists(reloading) and client.dbsize() == loaded
    assert len(reader.stored(keys)) == len(reader.views)
    assert redis_source.materialize(moment) is False  # the scheduled run after it is incremental again


@pytest.mark.redis
def test_a_redis_that_lost_some_keys_is_reported_by_doctor_and_readyz(redis_source, monkeypatch):
    """A Redis evicting under memory pressure (90% of its keys gone, in a helper's operations probe) passed every
    check: the customers evicted scored as new ones. `materialize` counts the keys it leaves; fewer now is said."""
    import redis

    from fraud_service.health import check_features, probe_online_store

    snapshot = Warehouse(redis_source.settings.warehouse_dir).current()
    moment = snapshot.read("returns")["requested_at"].max().ceil("s")
    redis_source.materialize(moment.to_pydatetime(), full=True)
    client = redis.Redis(db=REDIS_TEST_DB)
    loaded = client.dbsize()
    assert redis_source.materialized()["keys"] == loaded > 100
    assert redis_source.online_loss() is None and check_features(redis_source.settings).ok
    client.delete(*list(client.scan_iter(count=1000))[:7])
    lost = redis_source.online_loss()
    assert lost is not None and f"{loaded - 7:,} keys, 7 fewer than the {loaded:,}" in lost
    check = check_features(redis_source.settings)
    assert not check.ok and check.detail == lost
    # /readyz's probe reads as a request does (the store still answers), and says what is missing, counting the keys
    # in that read's round trip: it opened a connection of its own (with 5 s timeouts) on every probe
    with monkeypatch.context() as patched:
        patched.setattr(FeatureSource, "online_keys", lambda self: pytest.fail("a connection of its own"))
        assert probe_online_store(redis_source.reader(), redis_source.settings) == lost
    # the scheduled incremental run loads every entity again (it would have loaded nothing, and counted the loss
    # as the new normal)
    assert redis_source.materialize(moment.to_pydatetime()) is True
    assert client.dbsize() == loaded
    assert redis_source.online_loss() is None and check_features(redis_source.settings).ok


@pytest.mark.redis
def test_a_redis_that_may_evict_keys_fails_its_check():
    """The online store's keys carry a time to live, so any maxmemory-policy but noeviction may drop them."""
    import redis

    from fraud_service.health import check_redis

    client = redis.Redis()
    before = client.config_get("maxmemory*")
    try:
        client.config_set("maxmemory", str(4 << 30))
        client.config_set("maxmemory-policy", "volatile-lru")
        check = check_redis(f"redis://127.0.0.1:6379/{REDIS_TEST_DB}")
        assert not check.ok and "maxmemory-policy volatile-lru" in check.detail and "noeviction" in check.detail
        client.config_set("maxmemory-policy", "noeviction")
        assert check_redis(f"redis://127.0.0.1:6379/{REDIS_TEST_DB}").ok
    finally:
        client.config_set("maxmemory", before["maxmemory"])
        client.config_set("maxmemory-policy", before["maxmemory-policy"])


@pytest.mark.redis
def test_materialize_after_switching_to_redis_loads_everything(world, tmp_path):
    """A home loaded into sqlite, then pointed at Redis: `features materialize` ran incrementally (Feast's views
    were loaded up to the last run) and put nothing into Redis, and every customer was scored as new. The marker
    names the store it loaded, so a switch reloads every entity."""
    import redis

    home = tmp_path / "home"
    local = FeatureSource(Settings.from_env({"FRAUD_HOME": str(home)}))
    ingest(world / "world", Warehouse(local.settings.warehouse_dir))
    local.build()
    moment = Warehouse(local.settings.warehouse_dir).current().read("returns")["requested_at"].max().ceil("s")
    local.materialize(moment.to_pydatetime())
    assert not local.online_behind(local.manifest())
    switched = FeatureSource(Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_ONLINE_STORE": "redis",
                                                "FRAUD_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"}))
    redis.Redis(db=REDIS_TEST_DB).flushdb()
    assert switched.online_behind(switched.manifest())  # doctor and /status say so before it is loaded

    assert switched.materialize(moment.to_pydatetime()) is True  # every entity, not the rows since the last run
    customer = Warehouse(local.settings.warehouse_dir).current().read("returns")["customer_id"].iloc[0]
    row = switched.reader().stored({**dict.fromkeys(ENTITY_KEYS, "nobody"), "customer_id": customer})[0]
    assert any(value is not None for value in row.values())
    assert not switched.online_behind(switched.manifest())


@pytest.mark.redis
def test_a_redis_user_that_may_not_run_dbsize_still_reads_features(redis_source):
    """An ACL that allows reads but not DBSIZE (the emptiness check's command) made every read a 503: the check is
    left out for such a user, the features are read."""
    import uuid

    import redis

    snapshot = Warehouse(redis_source.settings.warehouse_dir).current()
    moment = snapshot.read("returns")["requested_at"].max().ceil("s")
    redis_source.materialize(moment.to_pydatetime(), full=True)
    keys = dict.fromkeys(ENTITY_KEYS, "someone")
    expected = redis_source.reader().stored(keys)
    admin, user = redis.Redis(), f"reader_{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+a password"], keys=["*"],
                      commands=["+@read", "+@connection", "+select", "-dbsize"])
    try:
        url = f"redis://{user}:a%20password@127.0.0.1:6379/{REDIS_TEST_DB}"
        restricted = FeatureSource(Settings.from_env({"FRAUD_HOME": str(redis_source.settings.home),
                                                      "FRAUD_ONLINE_STORE": "redis", "FRAUD_REDIS_URL": url}))
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(url).dbsize()
        assert restricted.reader().stored(keys) == expected
    finally:
        admin.acl_deluser(user)


def test_a_redis_url_becomes_feasts_connection_string_with_its_user_and_tls():
    """The user of a redis:// URL was dropped (an ACL user could not sign in) and its password passed as written,
    percent-escapes and all."""
    from fraud_service.errors import ConfigError
    from fraud_service.featurestore.source import redis_connection_string

    assert redis_connection_string("redis://127.0.0.1:6379/3") == "127.0.0.1:6379,db=3"
    assert redis_connection_string("redis://reader:s%40cret%20x@cache.internal:6380/2") == \
        "cache.internal:6380,db=2,username=reader,password=s@cret x"
    assert redis_connection_string("rediss://:pw@cache.internal/0") == "cache.internal:6379,db=0,password=pw,ssl=true"
    with pytest.raises(ConfigError, match="the Redis password holds a comma"):
        redis_connection_string("redis://:a%2Cb@127.0.0.1:6379/0")
