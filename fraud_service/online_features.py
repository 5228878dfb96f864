"""The scoring hot path: one feature vector from the online store Feast maintains, in well under a millisecond.

Feast's `get_online_features` costs ~5 ms for this service's five views plus the on-demand
view (measured in bench/features_bench.py), most of it in request bookkeeping. The values
themselves sit in Feast's own online tables; this reader fetches all five entities' rows in
one round trip (one SQL statement for sqlite, one pipeline for Redis), decodes the value
protos, applies the same post-processing as every other path (`finish_row`) and runs the
same on-demand function Feast runs (`request_time_features`). Feast stays the only writer:
materialisation and `write_to_online_store` fill these tables. A parity test checks this
reader against `get_online_features` and against historical retrieval.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from typing import Any

from features.definitions import request_time_features
from features.pipeline import ENTITIES, NO_KEY

_VALUE_FIELDS = ("int64_val", "double_val", "string_val", "float_val", "int32_val", "bool_val")


def _decode(blob: bytes, value_cls: Any) -> Any:
    value = value_cls()
    value.ParseFromString(blob)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(value, kind)


class OnlineFeatures:
    """Reads full feature vectors (five entities + request-time features) for single requests."""

    def __init__(self, store: Any) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._serialize = serialize_entity_key
        self._entity_key = EntityKey
        self._value = Value
        self.config = store.config
        self.project = store.config.project
        self.version = store.config.entity_key_serialization_version
        self.kind = store.config.online_store.type
        self.views = {spec.key: (f"{name}_features", [m.name for m in spec.metrics])
                      for name, spec in ENTITIES.items()}
        self._counts = {m.name for spec in ENTITIES.values() for m in spec.metrics
                        if m.agg != "median" and m.column != "created_epoch"}
        self._lock = threading.Lock()
        if self.kind == "sqlite":
            path = store.config.online_store.path
            self._conn = sqlite3.connect(path, check_same_thread=False)
            self._sql = " UNION ALL ".join(
                f"SELECT {i}, feature_name, value FROM \"{self.project}_{view}\" WHERE entity_key = ?"
                for i, (view, _) in enumerate(self.views.values()))
        else:
            import redis
            from feast.infra.online_stores.helpers import _mmh3

            conn = store.config.online_store.connection_string
            host_port, *options = conn.split(",")
            host, port = host_port.split(":")
            kwargs = dict(option.split("=", 1) for option in options)
            self._redis = redis.Redis(host=host, port=int(port), db=int(kwargs.get("db", 0)),
                                      password=kwargs.get("password"))
            self._fields = {key: [_mmh3(f"{view}:{name}") for name in names]
                            for key, (view, names) in self.views.items()}

    def _key(self, join_key: str, value: str) -> bytes:
        entity_key = self._entity_key(join_keys=[join_key], entity_values=[self._value(string_val=value)])
        return self._serialize(entity_key, entity_key_serialization_version=self.version)

    def stored(self, keys: dict[str, str]) -> dict[str, Any]:
        """The stored features of the five entities (None where the entity has no row)."""
        out: dict[str, Any] = {}
        if self.kind == "sqlite":
            params = [self._key(key, keys[key]) for key in self.views]
            with self._lock:
                rows = self._conn.execute(self._sql, params).fetchall()
            for _, name, blob in rows:
                out[name] = _decode(blob, self._value)
        else:
            pipe = self._redis.pipeline(transaction=False)
            for key in self.views:
                pipe.hmget(self._key(key, keys[key]) + self.project.encode(), self._fields[key])
            for key, values in zip(self.views, pipe.execute(), strict=True):
                for name, blob in zip(self.views[key][1], values, strict=True):
                    out[name] = None if blob is None else _decode(blob, self._value)
        for _, names in self.views.values():
            for name in names:
                out.setdefault(name, None)
        return out

    def vector(self, keys: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        """The full feature vector for one request: stored features + request-time features."""
        row = self.stored(keys)
        finish_row(row, keys, self._counts)
        inputs = {name: [value] for name, value in request.items()}
        inputs.update({name: [row[name]] for name in ("cust_created_epoch", "cust_returns_365d", "cust_orders_365d",
                                                      "cust_refund_365d", "cust_order_value_365d",
                                                      "cust_size_cm_365d")})
        for name, values in request_time_features(inputs).items():
            row[name] = values[0]
        return row


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
