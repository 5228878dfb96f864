"""The scoring hot path: one feature vector from the online store Feast maintains, in well under a millisecond.

Feast's `get_online_features` costs ~5 ms for this service's five views plus the on-demand
view (measured in bench/features_bench.py), most of it in request bookkeeping. The values
themselves sit in Feast's own online tables; this reader fetches all five entities' rows in
one round trip (one SQL statement for sqlite, one pipeline for Redis), decodes the value
protos, applies the same post-processing as every other path (`finish_row`) and runs the
same on-demand function Feast runs (`request_time_features`). Feast stays the only writer of
those tables (materialisation fills them). A parity test checks this reader against
`get_online_features` and against historical retrieval.

Returns assessed since the last build (live facts, see `fraud_service.featurestore.live`) are read from
their log (`features/live.db`, or PostgreSQL: `featurestore.live_log`) in the same call: one indexed query for the
five entities.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.definitions import VIEW_INPUTS, request_time_features
from features.pipeline import ENTITIES, NO_KEY, US_PER_DAY
from fraud_service.errors import Unavailable
from fraud_service.featurestore.live_log import READ_WAIT_S, LiveLog, open_live_log


def reloading_key(project: str) -> bytes:
    """The Redis key `features materialize` holds while it loads PROJECT's store after it lost everything: requests
    answer 503 until it is gone (a half-loaded store answered 201 with most entities unseen: a helper's probe)."""
    return f"fraud-service:reloading:{project}".encode()


REDIS_TIMEOUT_S = 1.0
"""How long a Redis read or connect may take (a feature read takes well under a millisecond)."""

ONLINE_MENDED = "run `fraud-service features materialize --full`"
"""What reloads an online store that lost, or never held, its entities."""


@contextlib.contextmanager
def unreadable(store: str, mend: str) -> Iterator[None]:
    """SQLite failing to read STORE as Unavailable: a missing or damaged file (never materialised, truncated, not a
    database) answered 500, and at a worker's start killed the whole service; now a 503 saying what to do (MEND).
    A busy file is a 503 to retry; a programming error (bindings, constraints) stays a logged 500. SQLite's own text
    goes to the log with the cause, not into the answer."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise Unavailable(f"{store} is busy; no decision was made: retry") from exc
        if type(exc) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
            raise
        raise Unavailable(f"{store} cannot be read (its file is missing, damaged or was never loaded); no decision "
                          f"was made: {mend}") from exc


IDLE_LOGS = 8
"""The most idle connections a reader keeps to a PostgreSQL live-fact log (a worker's request threads, by default)."""


@dataclass(frozen=True)
class Pending:
    """Facts a request knows that the live log may not hold yet: its own order's, when the warehouse does not hold the
    order (`FreshnessWriter.pending`). What they depend on in the log (whether it counts the order already, and per
    token whether it counts the customer as new on it) is read in the same statement as the request's other live
    facts (`OnlineFeatures.live`): a writer committing the same order between two reads would have it counted twice."""

    order_id: str
    customer_id: str
    tokens: dict[str, str]
    """entity -> the order's token for it (present ones only)."""
    facts: Callable[[dict[str, bool]], list[tuple[str, int, str]]]
    """The order's facts (entity, microseconds, contributions), given per entity of `tokens` whether the log already
    counts the customer as new on that token."""


SEEN_LIVE = ("SELECT 1 FROM live_facts WHERE entity = ? AND key = ? AND customer_id = ? "
             "AND json_extract(contributions, '$.n_new_customer') = 1")
"""Whether the log counts a customer as new on a token already (a request's new order: `live`; the writer asks it of
many tokens at once, `LiveFacts._counted_new`)."""
_FLAG = "SELECT ?, 0, CASE WHEN EXISTS ({}) THEN '1' ELSE '0' END"
"""One yes/no answer, as a row of the live-fact query's shape (its first column names the question)."""

_DOUBLE = struct.Struct("<d")
_UINT = struct.Struct("<I")
_STRING = 2  # Feast's ValueType.STRING


def _decode(blob: bytes, value_cls: Any) -> Any:
    """A feature value from Feast's serialised Value proto. The two kinds this store holds are read directly
    (a double: tag 0x29 + 8 bytes; a small non-negative int64: tag 0x20 + one varint byte); others via protobuf."""
    if len(blob) == 9 and blob[0] == 0x29:
        return _DOUBLE.unpack_from(blob, 1)[0]
    if len(blob) == 2 and blob[0] == 0x20 and blob[1] < 0x80:
        return blob[1]
    value = value_cls()
    value.ParseFromString(blob)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(value, kind)


def _timestamp(blob: bytes | None) -> str | None:
    if not blob:
        return None
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(blob)
    return stamp.ToDatetime(tzinfo=dt.UTC).isoformat()


def _sqlite_time(value: Any) -> str | None:
    """Feast's sqlite store keeps event_ts as epoch seconds (older versions: naive UTC text)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
    return dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC).isoformat()


class OnlineFeatures:
    """Reads full feature vectors (five entities + request-time features) for single requests."""

    def __init__(self, store: Any, live_log: Path | str | None = None) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._serialize = serialize_entity_key
        self._entity_key = EntityKey
        self._value = Value
        self.project = store.config.project
        self.version = store.config.entity_key_serialization_version
        self.kind = store.config.online_store.type
        # (view, join key, feature names): the stored features of each entity
        self.views = [(f"{name}_features", spec.key, [m.name for m in spec.metrics]) for name, spec in ENTITIES.items()]
        self._prefixes: dict[str, bytes] = {}
        self._counts = {m.name for spec in ENTITIES.values() for m in spec.metrics if m.zero_when_unseen}
        self._lock = threading.Lock()
        self._live = open_live_log(live_log) if live_log is not None else None
        self._live_lock = threading.Lock()
        # a PostgreSQL log is read over connections of a small pool: one shared connection made a worker's
        # requests take turns across the network (`_reading_live`)
        self._live_target = live_log
        self._idle_logs: list[LiveLog] = []
        self._live_sql = " UNION ALL ".join(
            ["SELECT entity, us, contributions FROM live_facts WHERE entity = ? AND key = ?"] * len(ENTITIES))
        if self.kind == "sqlite":
            if any("," in name for _, _, names in self.views for name in names):
                raise ValueError("a feature name holds a comma: the SQLite online read joins names with commas")
            self._online_path = store.config.online_store.path
            self._conn = sqlite3.connect(self._online_path, check_same_thread=False)
            # one row per view (its values hex-joined inside SQLite): each row fetched hands the interpreter lock
            # to another thread and back, and the views hold about 80 values for one request
            self._sql = " UNION ALL ".join(
                f"SELECT {i}, group_concat(feature_name, ','), group_concat(hex(value), ','), max(event_ts) "
                f"FROM \"{self.project}_{view}\" WHERE entity_key = ?"
                for i, (view, _, _) in enumerate(self.views))
        else:
            import redis
            from feast.infra.online_stores.helpers import _mmh3
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            host_port, *options = store.config.online_store.connection_string.split(",")
            host, port = host_port.split(":")
            kwargs = dict(option.split("=", 1) for option in options)
            # a Redis that hangs costs a request a 503 within REDIS_TIMEOUT_S, not its thread: a timeout is not
            # retried (the default retries three times with back-off), a dropped connection is, once, at once
            self._redis = redis.Redis(host=host, port=int(port), db=int(kwargs.get("db", 0)),
                                      username=kwargs.get("username"), password=kwargs.get("password"),
                                      ssl=kwargs.get("ssl") == "true", socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S,
                                      retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
            self._redis_error = redis.RedisError
            self.keys_seen: int | None = None  # the key count of the last read (DBSIZE, in the same round trip)
            self._fields = [[_mmh3(f"{view}:{name}") for name in names] + [f"_ts:{view}".encode()]
                            for view, _, names in self.views]
            self._mmh3 = _mmh3

    def close(self) -> None:
        """Close the live-fact log's connections (a PostgreSQL log opens them again if read after)."""
        if self._live is not None:
            with self._live_lock:
                for log in [self._live, *self._idle_logs]:
                    log.close()

    @contextlib.contextmanager
    def _reading_live(self) -> Iterator[LiveLog]:
        """The live-fact log for one read, its failures `unreadable`. A SQLite file is read over one connection, which
        the worker's request threads take in turn (a read takes microseconds). A PostgreSQL log is read over a
        connection no other read is using (an idle one, or a new one; at most `IDLE_LOGS` are kept), so a read waits
        for the network, not for other requests' reads."""
        assert self._live is not None
        if self._live.pooled:
            with self._live_lock:
                log = self._idle_logs.pop() if self._idle_logs else None
            if log is None:
                assert self._live_target is not None
                log = open_live_log(self._live_target)
            try:
                with log.unreadable():
                    yield log
            finally:
                with self._live_lock:
                    kept = len(self._idle_logs) < IDLE_LOGS
                    if kept:
                        self._idle_logs.append(log)
                if not kept:
                    log.close()
            return
        if not self._live_lock.acquire(timeout=READ_WAIT_S):  # a slow disk holds one thread, not all of them
            raise Unavailable(f"{self._live.name} is slow to answer (this worker's other requests are waiting on "
                              "it); no decision was made: retry")
        try:
            with self._live.unreadable():
                yield self._live
        finally:
            self._live_lock.release()

    @contextlib.contextmanager
    def _sqlite_read(self) -> Iterator[None]:
        """`unreadable` for the SQLite online store (under `_lock`), with its connection opened again after a failed
        read: a connection that once found the file empty (truncated, then loaded again) kept answering "no such
        table" for good, since SQLite reads a schema again only inside a transaction, and a statement that does not
        compile starts none."""
        try:
            with unreadable("the online feature store (sqlite)", ONLINE_MENDED):
                yield
        except Unavailable:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = sqlite3.connect(self._online_path, check_same_thread=False)
            raise

    def entity_key(self, join: str, value: str) -> bytes:
        """`key({join: value})`, built directly: Feast's version-3 layout for one string key is a fixed prefix
        per join key, then the value's length and UTF-8 bytes."""
        prefix = self._prefixes.get(join)
        if prefix is None:
            if self.version != 3:
                return self.key({join: value})
            name = join.encode()
            prefix = self._prefixes[join] = _UINT.pack(1) + _UINT.pack(_STRING) + _UINT.pack(len(name)) + name
        encoded = value.encode()
        return prefix + _UINT.pack(_STRING) + _UINT.pack(len(encoded)) + encoded

    def key(self, join_keys: dict[str, str]) -> bytes:
        """Feast's serialised entity key for one or more string join keys."""
        names = sorted(join_keys)
        entity_key = self._entity_key(join_keys=names,
                                      entity_values=[self._value(string_val=join_keys[n]) for n in names])
        return self._serialize(entity_key, entity_key_serialization_version=self.version)

    def stored(self, keys: dict[str, str], times: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
        """Per view (in `self.views` order), its stored values for the request's keys (None where absent).

        With TIMES, also fills in each view's event time (when its row's values became true), or None.
        """
        out: list[dict[str, Any]] = [dict.fromkeys(names) for _, _, names in self.views]
        stamps: list[str | None] = [None] * len(self.views)
        if self.kind == "sqlite":
            params = [self.entity_key(join, keys[join]) for _, join, _ in self.views]
            with self._lock, self._sqlite_read():
                rows = self._conn.execute(self._sql, params).fetchall()
            for i, names, blobs, event_ts in rows:
                if names is None:  # no row for this key
                    continue
                for name, blob in zip(names.split(","), blobs.split(","), strict=True):
                    out[i][name] = _decode(bytes.fromhex(blob), self._value)
                stamps[i] = _sqlite_time(event_ts)
        else:
            pipe = self._redis.pipeline(transaction=False)
            for (_, join, _), fields in zip(self.views, self._fields, strict=True):
                pipe.hmget(self.entity_key(join, keys[join]) + self.project.encode(), fields)
            pipe.dbsize()  # in the same round trip: a Redis that lost its data answers every key as unknown
            pipe.exists(reloading_key(self.project))
            try:
                *answers, size, reloading = pipe.execute(raise_on_error=False)  # a refused command is answered
                refused = next((a for a in answers if isinstance(a, Exception)), None)
                if refused is not None:
                    raise refused
            except self._redis_error as exc:
                raise Unavailable("the online feature store (Redis) cannot be read; no decision was made, "
                                  "retry") from exc  # the driver's text (host, port) is logged, not answered
            # an ACL that refuses DBSIZE (NOPERM) leaves the emptiness check out rather than every read
            self.keys_seen = None if isinstance(size, Exception) else int(size)
            if reloading is True or reloading == 1:
                raise Unavailable("the online feature store (Redis) is being loaded again after it lost its data (or "
                                  "a reload stopped part-way); no decision was made: wait for `fraud-service features "
                                  "materialize` to finish, or run `fraud-service features materialize --full`")
            if not isinstance(size, Exception) and not size:
                raise Unavailable("the online feature store (Redis) holds no features (its data was lost, or never "
                                  "loaded): every customer would look new; no decision was made. Load it with "
                                  "`fraud-service features materialize --full`")
            for i, (values, (_, _, names), target) in enumerate(zip(answers, self.views, out, strict=True)):
                for name, blob in zip(names, values[:-1], strict=True):
                    target[name] = None if blob is None else _decode(blob, self._value)
                stamps[i] = _timestamp(values[-1])
        if times is not None:
            times.update({view: stamp for (view, _, _), stamp in zip(self.views, stamps, strict=True)})
        return out

    def entity_values(self, entity: str, value: str, now: dt.datetime) -> tuple[dict[str, Any], str | None, str | None]:
        """One entity's features as of NOW (an analyst's page, not the hot path): its stored values with the live
        facts known by NOW added, when the stored values became true, and the latest live fact counted."""
        spec = ENTITIES[entity]
        keys = {s.key: (value if name == entity else NO_KEY) for name, s in ENTITIES.items()}
        times: dict[str, str | None] = {}
        row = self.stored(keys, times)[[view for view, _, _ in self.views].index(f"{entity}_features")]
        for metric in spec.metrics:
            if row.get(metric.name) is None and metric.name in self._counts:
                row[metric.name] = 0
        facts = []
        if self._live is not None:
            with self._reading_live() as log:
                facts = log.execute("SELECT entity, us, contributions FROM live_facts WHERE entity = ? AND key = ?",
                                    (entity, value)).fetchall()
        latest = add_live_facts(row, facts, int(now.timestamp() * 1e6))
        return row, times.get(f"{entity}_features"), _us_time(latest[entity]) if entity in latest else None

    def seen(self, view: str, join_keys: dict[str, str], feature: str) -> Any:
        """One stored value of a (possibly compound-key) view, or None."""
        entity_key = self.key(join_keys)
        if self.kind == "sqlite":
            with self._lock, self._sqlite_read():
                rows = self._conn.execute(
                    f"SELECT value FROM \"{self.project}_{view}\" WHERE entity_key = ? AND feature_name = ?",
                    (entity_key, feature)).fetchall()
            return _decode(rows[0][0], self._value) if rows else None
        blob: Any = self._redis.hget(entity_key + self.project.encode(), self._mmh3(f"{view}:{feature}"))
        return None if blob is None else _decode(blob, self._value)

    def vector(self, keys: dict[str, str], request: dict[str, Any], times: dict[str, str | None] | None = None,
               pending: Pending | None = None) -> dict[str, Any]:
        """The full feature vector for one request: stored features + live facts + request-time features.

        With TIMES, also records when each view's stored values were computed (see `stored`). PENDING gives the
        facts the live log does not hold yet but the request's moment knows (its own order when new: see
        `FreshnessWriter.pending`), read in the same statement as its facts (see `live`).
        """
        views = self.stored(keys, times)
        row: dict[str, Any] = {}
        for values in views:
            row.update(values)
        finish_row(row, keys, self._counts)
        at_us = int(round(float(request["req_requested_epoch"]) * 1e6))
        latest = add_live_facts(row, self.live(keys, pending), at_us)
        if times is not None:
            times.update({f"{entity}_live": _us_time(us) for entity, us in latest.items()})
        inputs = {name: [value] for name, value in request.items()}
        inputs.update({name: [row[name]] for name in VIEW_INPUTS})
        for name, derived in request_time_features(inputs).items():
            row[name] = derived[0]
        return row


    def live(self, keys: dict[str, str], pending: Pending | None = None) -> list[tuple[str, int, str]]:
        """The live facts (entity, microseconds, contributions as JSON) of the request's five entities, and those
        PENDING adds, read with one statement: one snapshot of the log, and one round trip to it when it is
        PostgreSQL. PENDING's questions come back as extra rows whose first column starts with `?`."""
        if self._live is None:
            return []
        params: list[Any] = [v for name, spec in ENTITIES.items() for v in (name, keys[spec.key])]
        sql = self._live_sql
        if pending is not None:
            sql += " UNION ALL " + _FLAG.format("SELECT 1 FROM live_orders WHERE order_id = ?")
            params += ["?order", pending.order_id]
            for entity, token in pending.tokens.items():
                sql += " UNION ALL " + _FLAG.format(SEEN_LIVE)
                params += [f"?{entity}", entity, token, pending.customer_id]
        with self._reading_live() as log:
            rows = log.execute(sql, params).fetchall()
        if pending is None:
            return rows
        answers = {entity[1:]: contributions == "1" for entity, _, contributions in rows if entity.startswith("?")}
        facts = [row for row in rows if not row[0].startswith("?")]
        return facts if answers.pop("order") else [*facts, *pending.facts(answers)]


def _us_time(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


# per entity: (feature, contribution column, window in microseconds or None, is a count) of its sums
_SUMS = {name: [(m.name, m.column, None if m.days is None else m.days * US_PER_DAY, m.is_count)
                for m in spec.metrics if m.agg == "sum"] for name, spec in ENTITIES.items()}


def add_live_facts(row: dict[str, Any], facts: Iterable[tuple[str, int, str]], at_us: int) -> dict[str, int]:
    """Add the contributions of live facts known at `at_us` (each within each sum's window) to ROW.

    Returns, per entity with facts counted, the time of its latest counted fact (microseconds).
    """
    latest: dict[str, int] = {}
    for entity, us, contributions in facts:
        if us > at_us or entity not in _SUMS:
            continue
        latest[entity] = max(us, latest.get(entity, us))
        values = json.loads(contributions)
        for name, column, window, is_count in _SUMS[entity]:
            extra = values.get(column)
            if not extra or (window is not None and us <= at_us - window):
                continue
            current = row.get(name)
            base = 0 if current is None or (isinstance(current, float) and math.isnan(current)) else current
            row[name] = int(base + extra) if is_count else float(base + extra)
    return latest


def finish_row(row: dict[str, Any], keys: dict[str, str], counts: set[str]) -> None:
    """A present token with no stored row has zero counts; medians and NaN stay missing."""
    for spec in ENTITIES.values():
        present = keys[spec.key] != NO_KEY
        for metric in spec.metrics:
            value = row.get(metric.name)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            if metric.name in counts and present and missing:
                row[metric.name] = 0
            elif value is None:
                row[metric.name] = math.nan
