"""The feature store adapter: builds the Feast repository from the warehouse, reads it offline and online.

Training and scoring both go through here, so both see the same definitions and the same
post-processing (`finish`): absent tokens read as the NO_KEY entity, and a present token with
no rows yet (a brand-new address) reads as zero counts, not as missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
import string
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from features import definitions
from features.pipeline import BUCKET_FACTS, ENTITIES, NO_KEY, build
from fraud_service.config import Settings
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import ConfigError, FeatureStoreError
from fraud_service.featurestore.online import reloading_key
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring.request import ReturnRequest

ENTITY_KEYS = [spec.key for spec in ENTITIES.values()]
ENGINES = ("duckdb", "spark")
MATERIALIZED = "materialized.json"
"""Beside the built features: the build the online store was last loaded from, and up to when."""
"""What `features build` runs the pipeline on: DuckDB on this machine, or Apache Spark (FRAUD_SPARK_MASTER)."""
FASHION = ("apparel", "shoes", "clothing", "footwear", "fashion")
HIGH_VALUE = ("electronics", "jewellery", "jewelry")
"""The categories `rt_share_fashion` and `rt_share_high_value` count: the contract's examples and the names other
hands write for them (the US spelling, clothing for apparel), in the small letters ingest and the API take."""


def redis_connection_string(url: str) -> str:
    """Feast's `host:port,db=N[,username=...][,password=...][,ssl=true]` from a redis:// (or rediss://, TLS) URL,
    its user and password percent-decoded (an ACL user, `redis://reader:s%40cret@host:6379/0`)."""
    parsed = urlparse(url)
    db = (parsed.path or "/0").lstrip("/") or "0"
    text = f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379},db={db}"
    for name, given in (("username", parsed.username), ("password", parsed.password)):
        if given:
            value = unquote(given)
            if "," in value:
                raise ConfigError(f"FRAUD_REDIS_URL: the Redis {name} holds a comma, which Feast's connection "
                                  "string cannot carry; choose one without")
            text += f",{name}={value}"
    if parsed.scheme == "rediss":
        text += ",ssl=true"
    return text


@dataclass
class FeatureSource:
    """One Feast feature store under FRAUD_HOME, created lazily (importing feast takes seconds)."""

    settings: Settings

    def __post_init__(self) -> None:
        self._store: Any = None

    @property
    def repo_dir(self) -> Path:
        return self.settings.home / "feature_repo"

    @property
    def data_dir(self) -> Path:
        return self.settings.home / "features"

    @property
    def live_log(self) -> Path | str:
        """The log of live facts (returns assessed since the last build), read by the online reader: a SQLite file
        in the home, or FRAUD_LIVE_LOG's PostgreSQL database."""
        return self.settings.live_log_url or self.data_dir / "live.db"

    def reader(self) -> Any:
        """The online reader (`OnlineFeatures`) of this store's materialised rows and live facts."""
        from fraud_service.featurestore.online import OnlineFeatures

        return OnlineFeatures(self.store(), live_log=self.live_log)

    def build(self, progress: Progress = SILENT, bucket_facts: int | None = None,
              engine: str = "duckdb") -> dict[str, Any]:
        """Recompute every entity's rows from the current snapshot and (re)apply the repository.

        ENGINE: `duckdb` (this machine, `features.pipeline`) or `spark` (`features.spark_pipeline`, on
        `FRAUD_SPARK_MASTER`); both write the same rows. `bucket_facts` overrides how many facts one pass of the
        DuckDB pipeline handles (tests use it to exercise the bucketed path on small data).
        """
        if engine not in ENGINES:
            raise FeatureStoreError(f"unknown feature engine {engine!r}: expected one of {', '.join(ENGINES)}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _held(self.data_dir / ".build-lock") as mine:
            if not mine:
                raise FeatureStoreError(f"another `features build` is running on {self.data_dir} (its lock is "
                                        "held); wait for it to finish")
            return self._build(progress, bucket_facts, engine)

    def _build(self, progress: Progress, bucket_facts: int | None, engine: str) -> dict[str, Any]:
        snapshot = Warehouse(self.settings.warehouse_dir).current()
        if snapshot is None:
            raise FeatureStoreError("the warehouse is empty: run `fraud-service ingest DIR` first")
        snapshot.pin()  # an ingest meanwhile leaves it in place until the build is done
        tables = {name: snapshot.table_path(name) for name in ("customers", "orders", "returns", "labels",
                                                               "inspections")}
        missing = [name for name, path in tables.items() if path is None and name in ("customers", "orders",
                                                                                        "returns")]
        if missing:
            raise FeatureStoreError(f"snapshot {snapshot.name} has no {', '.join(missing)} table")
        for name in ("labels", "inspections"):
            if tables[name] is None:
                tables[name] = self._empty_table(name)
        present = {k: v for k, v in tables.items() if v is not None}
        # the files are replaced one by one: until the new manifest is written they are no build that materialize or
        # train may read (an interrupted build leaves the marker, and they refuse; doctor says so). Serving reads the
        # online store, which the build does not touch, so workers still start on the last manifest meanwhile.
        self.unfinished_path.write_text(f"{os.getpid()} {dt.datetime.now(dt.UTC).isoformat()}\n")
        if engine == "spark":
            from features.spark_pipeline import build as spark_build

            with progress.step(f"building the features on Spark ({self.settings.spark_master})"):
                try:
                    counts = spark_build(present, self.data_dir, master=self.settings.spark_master,
                                         report=progress.info)
                except Exception as exc:  # py4j and pyspark errors, or Java that will not start
                    if not type(exc).__module__.startswith(("pyspark", "py4j")):
                        raise
                    raise FeatureStoreError(f"Spark failed on FRAUD_SPARK_MASTER={self.settings.spark_master} "
                                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''});"
                                            " the features were not rebuilt (the manifest still names the last "
                                            "build); Spark needs Java 17 or later on PATH") from exc
        else:
            counts = build(present, self.data_dir, report=progress.info, bucket_facts=bucket_facts or BUCKET_FACTS)
        with progress.step("applying the Feast repository"):
            self.apply()
        manifest = {"snapshot": snapshot.name, "fingerprint": snapshot.manifest.get("fingerprint"),
                    "built_at": dt.datetime.now(dt.UTC).isoformat(), "engine": engine, "rows": counts}
        partial = self.manifest_path.with_name(self.manifest_path.name + ".partial")
        partial.write_text(json.dumps(manifest, indent=2))
        os.replace(partial, self.manifest_path)
        self.unfinished_path.unlink()
        return manifest

    def _historical_on_spark(self, store: Any, service: Any, entities: pd.DataFrame) -> pd.DataFrame:
        from features.spark_pipeline import historical

        views = {name: (spec.key, self.data_dir / f"{name}.parquet", [m.name for m in spec.metrics])
                 for name, spec in ENTITIES.items()}
        table = historical(entities, views, master=self.settings.spark_master)
        for projection in service.feature_view_projections:
            odfv = next((v for v in store.list_on_demand_feature_views() if v.name == projection.name), None)
            if odfv is None:
                continue
            derived = odfv.transform_arrow(table, False)
            wanted = {field.name for field in odfv.features}
            for name in derived.column_names:  # in the function's order, as Feast's retrieval job appends them
                if name in wanted and name not in table.column_names:
                    table = table.append_column(name, derived[name])
        frame = table.to_pandas().reset_index(drop=True)
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")  # as Feast's job gives it
        return frame

    @property
    def manifest_path(self) -> Path:
        """What the last build wrote: its snapshot, engine, time and row counts (JSON)."""
        return self.data_dir / "manifest.json"

    @property
    def unfinished_path(self) -> Path:
        """Written when a build starts replacing the feature files, removed once its manifest is written."""
        return self.data_dir / "BUILD-UNFINISHED"

    def unfinished(self) -> str | None:
        """Why the feature files are no whole build now (a build under way, or one interrupted), or None."""
        if not self.unfinished_path.exists():
            return None
        with _held(self.data_dir / ".build-lock") as free:
            if not free:
                return "a `features build` is under way: wait for it to finish"
        return "the last `features build` was interrupted: run it again"

    def manifest(self) -> dict[str, Any] | None:
        """The last build's manifest, or None before the first build."""
        path = self.manifest_path
        if not path.exists():
            return None
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise FeatureStoreError(f"{path} cannot be read ({exc}): run `fraud-service features build` again") from exc

    def built_engine(self) -> str:
        """The engine the current features were built with (`duckdb` for builds before engines were recorded)."""
        return str((self.manifest() or {}).get("engine", "duckdb"))

    def built_from(self) -> str | None:
        """The warehouse snapshot the features were last built from (None if never built)."""
        manifest = self.manifest()
        if manifest is None or not (self.repo_dir / "registry.db").exists():
            return None
        return str(manifest.get("snapshot"))

    def first_row_time(self) -> dt.datetime | None:
        """The earliest event time of any built feature row, read from the files' statistics (None before a build,
        or when no file says)."""
        import pyarrow.parquet as pq

        if self.manifest() is None:
            return None
        first: dt.datetime | None = None
        for path in self.data_dir.glob("*.parquet"):
            meta = pq.ParquetFile(path).metadata
            names = meta.schema.names
            if "event_timestamp" not in names:
                continue
            column = names.index("event_timestamp")
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(column).statistics
                if stats is not None and stats.has_min_max and isinstance(stats.min, dt.datetime):
                    first = stats.min if first is None else min(first, stats.min)
        return first

    def _empty_table(self, name: str) -> Path:
        import pyarrow.parquet as pq

        from fraud_service.data.contract import TABLES
        from fraud_service.data.ingest import arrow_schema

        path = self.data_dir / f"empty_{name}.parquet"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow_schema(TABLES[name]).empty_table(), path)
        return path

    def write_config(self) -> Path:
        """Render feature_store.yaml for the configured online store."""
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        name = "feature_store.redis.yaml" if self.settings.online_store == "redis" else "feature_store.yaml"
        template = string.Template((Path(definitions.__file__).parent / name).read_text())
        text = template.substitute(FRAUD_FEATURE_REPO=str(self.repo_dir),
                                   FRAUD_REDIS_CONNECTION=redis_connection_string(self.settings.redis_url))
        path = self.repo_dir / "feature_store.yaml"
        if not path.exists() or path.read_text() != text:
            # several worker processes start at once and read this file: replace it whole, never half-written
            partial = path.with_name(f".feature_store.yaml.{os.getpid()}")
            partial.write_text(text)
            os.replace(partial, path)
        return path

    def apply(self) -> None:
        """Register the definitions in the Feast registry (the store is reopened afterwards, with a fresh cache)."""
        self._store = None
        self.store().apply(definitions.build_objects(self.data_dir))
        self._store = None

    def store(self) -> Any:
        """The Feast FeatureStore (built once per FeatureSource)."""
        if self._store is None:
            os.environ.setdefault("FEAST_USAGE", "False")
            from feast import FeatureStore

            # Feast says this on every retrieval (the on-demand view here is one function of request fields:
            # docs/features.md); said here, after Feast's modules put their own filters in front on import
            warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature",
                                    category=RuntimeWarning)
            self.write_config()
            self._store = FeatureStore(repo_path=str(self.repo_dir))
        return self._store

    def materialize(self, end: dt.datetime | None = None, full: bool = False, progress: Progress = SILENT) -> bool:
        """`_load`, with a Redis that fails on the way (stopped, hung, out of memory) a FeatureStoreError saying so
        and what to do, not an unexpected failure."""
        if self.settings.online_store != "redis":
            return self._load(end, full, progress)
        import redis

        try:
            return self._load(end, full, progress)
        except redis.exceptions.RedisError as exc:
            raise FeatureStoreError(
                f"the online store's Redis failed during `features materialize` ({type(exc).__name__}: {exc}); what "
                "it loaded may be incomplete (requests answer 503 while a store that had lost its data is not whole "
                "again): run it again once Redis answers, lets this user write, and has the memory for every "
                "entity") from exc

    def _load(self, end: dt.datetime | None = None, full: bool = False, progress: Progress = SILENT) -> bool:
        """Copy the latest row of every entity up to END (default now) into the online store; True when every
        entity was reloaded.

        Incremental by default (only rows newer than the last run are read); `full` reloads everything, e.g.
        after switching the online store. A build since the last run reloads everything too: a new ingest's rows
        may be dated before the last run (returns assessed live, then ingested), and an incremental run would
        never read them, while their live facts are dropped as covered. Feast's own lines (a view's name, then
        its bar) go where PROGRESS prints, not to stdout, where a command's results go.
        """
        end = end or dt.datetime.now(dt.UTC)
        manifest, unfinished = self.manifest(), self.unfinished()
        if manifest is None or unfinished:
            why = unfinished or "none yet: run `fraud-service features build`"
            raise FeatureStoreError(f"no whole feature build to load: {why}")
        store = self.store()
        build = manifest.get("built_at")
        rebuilt = self.online_behind(manifest)
        # Feast starts a view's first incremental run one year before now when it has no TTL, which
        # would leave out any older history: the first run of every view reads from the beginning.
        keys = self.online_keys()
        empty = keys == 0  # a Redis that restarted without its data (or was flushed)
        stopped = self.reloading()  # such a reload that stopped part-way
        every = full or rebuilt or any(not view.materialization_intervals for view in store.list_feature_views()) \
            or stopped or self.online_loss(lambda: keys) is not None  # Redis lost keys (or all of them): reload all
        with _held(self.data_dir / ".materialize-lock") as mine, open(os.devnull, "w") as sink, \
                contextlib.redirect_stdout(progress.stream if progress.enabled else sink), \
                contextlib.redirect_stderr(progress.stream if progress.enabled else sink):  # its bars write there
            if not mine:
                raise FeatureStoreError("another `features materialize` is running; wait for it to finish")
            if empty:  # requests answer 503 until every entity is back, not 201 on a half-loaded store
                self._mark_reloading(store.config.project)
            try:
                if every:
                    store.materialize(start_date=dt.datetime(1970, 1, 2, tzinfo=dt.UTC), end_date=end)
                else:
                    store.materialize_incremental(end_date=end)
            except BaseException:  # Feast puts a view back only on an Exception, not on an interrupt
                self._settle_views(store, held=True)
                raise  # a reload that stopped part-way leaves its reloading key: the store is not whole
            if empty or stopped:
                with self._redis() as client:
                    client.delete(reloading_key(store.config.project))  # whole again
        marker = self.data_dir / MATERIALIZED
        partial = marker.with_name(marker.name + ".partial")
        keys = self.online_keys()  # what it left, which a later check counts against: only materialize writes there
        partial.write_text(json.dumps({"build": build, "until": end.isoformat(), "store": self.online_identity(),
                                       **({"keys": keys} if keys is not None else {})}))
        os.replace(partial, marker)
        return every

    def _settle_views(self, store: Any, held: bool = False) -> None:
        """Views a materialize left MATERIALIZING (interrupted, or killed) are marked loaded as far as they were
        (AVAILABLE_ONLINE when an earlier run loaded them, else unspecified): Feast refuses historical retrieval
        from a view in any other state, so training stopped until a materialize ran through. Only while no
        materialize runs (its lock is free, or HELD by the caller, the materialize that failed)."""
        from feast.feature_view import FeatureViewState

        with contextlib.nullcontext(True) if held else _held(self.data_dir / ".materialize-lock") as free:
            if not free:
                return  # a materialize is running in another process: its views are its own
            for view in store.list_feature_views(allow_cache=False):
                if getattr(view, "state", None) in (FeatureViewState.MATERIALIZING, FeatureViewState.GENERATED):
                    view.state = FeatureViewState.AVAILABLE_ONLINE if view.materialization_intervals \
                        else FeatureViewState.STATE_UNSPECIFIED
                    store.registry.apply_feature_view(view, store.project, commit=True)

    def online_behind(self, manifest: dict[str, Any] | None) -> bool:
        """Whether the online store holds anything but the build of MANIFEST (this build's `manifest()`): nothing
        loaded yet, an older build, no build at all, or another online store (the settings were switched since,
        from sqlite to Redis say: an incremental run would load nothing into the new one)."""
        build, store = (manifest or {}).get("built_at"), self.online_identity()
        loaded = self.materialized() or {}
        # a marker written before stores were recorded is taken for the store named now
        return build is None or loaded.get("build") != build or loaded.get("store", store) != store

    def online_keys(self) -> int | None:
        """How many keys the online store's Redis database holds (one per entity loaded), or None for sqlite and for
        a Redis user not allowed DBSIZE."""
        if self.settings.online_store != "redis":
            return None
        import redis

        client = self._redis()
        try:
            return int(client.dbsize())
        except redis.exceptions.NoPermissionError:
            return None
        finally:
            client.close()

    def reloading(self) -> bool:
        """Whether a reload of a Redis that had lost everything started and did not finish (its key is there)."""
        if self.settings.online_store != "redis":
            return False
        import redis

        with self._redis() as client:
            try:
                return bool(client.exists(reloading_key(self.store().config.project)))
            except redis.exceptions.NoPermissionError:
                return False

    def _mark_reloading(self, project: str) -> None:
        """Hold PROJECT's reloading key (requests answer 503 until the load is whole); a user not allowed to write it
        loads all the same, with a warning (its requests are answered meanwhile, from a store still filling)."""
        import redis

        with self._redis() as client:
            try:
                client.set(reloading_key(project), dt.datetime.now(dt.UTC).isoformat())
            except redis.exceptions.NoPermissionError as exc:
                logging.getLogger(__name__).warning(
                    "cannot hold the key %s while Redis is reloaded (%s): requests are answered from a store still "
                    "filling; allow this user SET and DEL on it", reloading_key(project).decode(), exc)

    def _redis(self) -> Any:
        """A client of the online store's Redis, for the service's own bookkeeping there (Feast writes the rest)."""
        import redis

        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def online_loss(self, keys: Callable[[], int | None] | None = None) -> str | None:
        """What the online store's Redis lost, said for an operator, or None (always for sqlite, and for a Redis user
        not allowed DBSIZE): everything (restarted without its data, or flushed), whatever the last `materialize`
        loaded; or keys since the last `materialize` counted them. Only `materialize` writes there, so fewer keys
        than it left means entities evicted (a `maxmemory-policy` other than noeviction), expired (each key lives
        `key_ttl_seconds` from its last load) or deleted: those customers, tokens and orders would score as new.
        KEYS: how the key count is had (default: `online_keys`, on a connection of its own)."""
        now = (keys or self.online_keys)()
        if now == 0:
            return ("the online store (Redis) holds no features (restarted without its data, or flushed): every "
                    "customer would look new; run `fraud-service features materialize --full`")
        marker = self.materialized() or {}
        loaded = marker.get("keys")
        if now is None or not isinstance(loaded, int) or marker.get("store") != self.online_identity() \
                or now >= loaded:
            return None
        return (f"the online store (Redis) holds {now:,} keys, {loaded - now:,} fewer than the {loaded:,} the last "
                "`features materialize` left (evicted under memory pressure, expired, or deleted): those entities "
                "would score as new; run `fraud-service features materialize --full`, and give Redis the memory "
                "for every entity, with `maxmemory-policy noeviction`")

    def online_identity(self) -> str:
        """The online store the settings name: `sqlite`, or Redis's address and database (no password)."""
        if self.settings.online_store != "redis":
            return str(self.settings.online_store)
        url = urlparse(self.settings.redis_url)
        return f"redis://{url.hostname}:{url.port or 6379}/{(url.path or '/0').strip('/') or '0'}"

    def materialized(self) -> dict[str, Any] | None:
        """What the last `materialize` loaded: the build (its manifest's `built_at`) and the time it ran up to."""
        try:
            return dict(json.loads((self.data_dir / MATERIALIZED).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def historical(self, entities: pd.DataFrame) -> pd.DataFrame:
        """Point-in-time feature vectors for entity rows (keys, event_timestamp, req_* fields), one row each.

        On the engine the features were built with: Feast's retrieval through the ASOF DuckDB offline store, or,
        for features built on Spark, the same join on Spark (`features.spark_pipeline.historical`) with Feast's
        own on-demand view applied to its result, as Feast's retrieval job applies it."""
        store = self.store()
        self._settle_views(store)
        service = store.get_feature_service(definitions.FEATURE_SERVICE)
        if self.built_engine() == "spark":
            frame = self._historical_on_spark(store, service, entities)
        else:
            job = store.get_historical_features(entity_df=entities, features=service, full_feature_names=False,
                                                filter_by_created_timestamp=True)
            frame = job.to_df()
        if len(frame) != len(entities):
            raise FeatureStoreError(f"historical retrieval returned {len(frame)} rows for {len(entities)} entity rows")
        return finish(frame)

    def online(self, entities: pd.DataFrame) -> pd.DataFrame:
        """Online feature vectors for entity rows (same columns as `historical`)."""
        store = self.store()
        rows = entities.drop(columns=["event_timestamp", "return_id"], errors="ignore")
        response = store.get_online_features(
            features=store.get_feature_service(definitions.FEATURE_SERVICE),
            entity_rows=rows.to_dict(orient="records"),
            full_feature_names=False,
        )
        return finish(response.to_df())


@contextlib.contextmanager
def _held(path: Path) -> Iterator[bool]:
    """PATH's lock, taken whole without waiting: True while this holds it, False when another process does."""
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Same post-processing offline and online: a present token with no rows yet has zero counts."""
    out = frame.copy()
    for spec in ENTITIES.values():
        present = out[spec.key].to_numpy() != NO_KEY
        for metric in spec.metrics:
            if not metric.zero_when_unseen:
                continue
            column = out[metric.name].astype("float64")
            out[metric.name] = np.where(present & column.isna().to_numpy(), 0.0, column)
    return out


def entity_rows(returns: pd.DataFrame, orders: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for returns: the five keys, event_timestamp = requested_at, and the request fields.

    `returns` in contract columns; `orders` and `items` must hold every referenced order.
    """
    joined = returns.merge(orders[["order_id", "placed_at", "delivered_at", "order_total", "address_token",
                                   "payment_token", "device_token"]], on="order_id", how="left", validate="m:1")
    mix = category_mix(items)
    joined = joined.merge(mix, left_on="order_id", right_index=True, how="left")
    out = pd.DataFrame({
        "return_id": joined["return_id"].to_numpy(),
        "customer_id": joined["customer_id"].to_numpy(),
        "address_token": joined["address_token"].fillna(NO_KEY).to_numpy(),
        "payment_token": joined["payment_token"].fillna(NO_KEY).to_numpy(),
        "device_token": joined["device_token"].fillna(NO_KEY).to_numpy(),
        "refund_token": joined["refund_token"].fillna(NO_KEY).to_numpy(),
        "event_timestamp": joined["requested_at"].to_numpy(),
        "req_requested_epoch": _epoch(joined["requested_at"]),
        "req_placed_epoch": _epoch(joined["placed_at"]),
        "req_delivered_epoch": _epoch(joined["delivered_at"]),
        "req_refund_amount": joined["refund_amount"].astype(float).to_numpy(),
        "req_order_total": joined["order_total"].astype(float).to_numpy(),
        "req_items_count": joined["items_count"].astype("int64").to_numpy(),
        "req_share_fashion": joined["share_fashion"].fillna(0.0).to_numpy(),
        "req_share_high_value": joined["share_high_value"].fillna(0.0).to_numpy(),
        "req_top_line_value": joined["top_line_value"].fillna(0.0).to_numpy(),
        "req_lines": joined["lines"].fillna(0).astype("int64").to_numpy(),
        "req_return_type": joined["return_type"].to_numpy(),
        "req_channel": joined["channel"].to_numpy(),
        "req_refund_method": joined["refund_method"].to_numpy(),
        "req_has_receipt": joined["has_receipt"].astype("int64").to_numpy(),
        "req_has_device": joined["device_token"].notna().astype("int64").to_numpy(),
        "req_has_address": joined["address_token"].notna().astype("int64").to_numpy(),
    })
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out


def _epoch(values: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(values, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=float)


def category_mix(items: pd.DataFrame) -> pd.DataFrame:
    """Per order: share of the order's value in fashion and in high-value categories, the value of its dearest
    line (unit price times quantity) and its number of lines."""
    value = items["unit_price"].astype(float) * items["quantity"].astype(float)
    frame = pd.DataFrame({
        "order_id": items["order_id"].to_numpy(),
        "value": value.to_numpy(),
        "fashion": (value * items["category"].isin(FASHION)).to_numpy(),
        "high": (value * items["category"].isin(HIGH_VALUE)).to_numpy(),
    }).groupby("order_id").agg(value=("value", "sum"), fashion=("fashion", "sum"), high=("high", "sum"),
                                top=("value", "max"), lines=("value", "size"))
    total = frame["value"].replace(0.0, np.nan)
    return pd.DataFrame({"share_fashion": (frame["fashion"] / total).fillna(0.0),
                         "share_high_value": (frame["high"] / total).fillna(0.0),
                         "top_line_value": frame["top"], "lines": frame["lines"]})


def request_entity(request: ReturnRequest) -> tuple[dict[str, str], dict[str, Any]]:
    """The five entity keys and the req_* fields of one return request (what `entity_rows` makes of a table row).

    The scoring path's twin of `entity_rows`, without pandas; a test checks both agree.
    """
    order = request.order
    keys = {"customer_id": request.customer_id, "address_token": order.address_token or NO_KEY,
            "payment_token": order.payment_token or NO_KEY, "device_token": order.device_token or NO_KEY,
            "refund_token": request.refund_token or NO_KEY}
    total = fashion = high = top = 0.0
    for item in order.items:
        value = float(item.unit_price) * float(item.quantity)
        top = max(top, value)
        total += value
        fashion += value if item.category in FASHION else 0.0
        high += value if item.category in HIGH_VALUE else 0.0
    fields = {
        "req_requested_epoch": request.requested_at.timestamp(),
        "req_placed_epoch": order.placed_at.timestamp(),
        "req_delivered_epoch": order.delivered_at.timestamp() if order.delivered_at is not None else math.nan,
        "req_refund_amount": float(request.refund_amount),
        "req_order_total": float(order.order_total),
        "req_items_count": int(request.items_count),
        "req_share_fashion": fashion / total if total else 0.0,
        "req_share_high_value": high / total if total else 0.0,
        "req_top_line_value": top,
        "req_lines": len(order.items),
        "req_return_type": request.return_type,
        "req_channel": request.channel,
        "req_refund_method": request.refund_method,
        "req_has_receipt": int(request.has_receipt),
        "req_has_device": int(bool(order.device_token)),
        "req_has_address": int(bool(order.address_token)),
    }
    return keys, fields
