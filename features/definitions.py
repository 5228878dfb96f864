"""Feast objects of the returns-fraud feature repository, built by a function (nothing at import time).

Five entities with one feature view each (rows from features.pipeline), one request source
with what the return request itself says, one python-mode on-demand view that derives the
request-time features and the ratios, and the versioned FeatureService the model is trained
against. Feature views have no TTL: every row is a change point, and the pipeline writes the
rows at which windowed values fall back, so the latest row is always the exact value.
"""

from __future__ import annotations

import types
from datetime import timedelta
from pathlib import Path
from typing import Any

from features.pipeline import ENTITIES, MEMBERSHIP_SQL

FEATURE_SERVICE = "return_fraud_v1"
PROJECT = "returns_fraud"

REQUEST_FIELDS = {
    # name: feast type name
    "req_requested_epoch": "Float64",
    "req_placed_epoch": "Float64",
    "req_delivered_epoch": "Float64",  # NaN when not delivered
    "req_refund_amount": "Float64",
    "req_order_total": "Float64",
    "req_items_count": "Int64",
    "req_share_fashion": "Float64",
    "req_share_high_value": "Float64",
    "req_top_line_value": "Float64",  # the dearest line of the order (unit price times quantity)
    "req_lines": "Int64",
    "req_return_type": "String",
    "req_channel": "String",
    "req_refund_method": "String",
    "req_has_receipt": "Int64",
    "req_has_device": "Int64",  # the order names a device (a token never seen before has zero counts, not none)
    "req_has_address": "Int64",
}

DERIVED_FIELDS = {
    "rt_refund_to_order": "Float64",
    "rt_days_since_order": "Float64",
    "rt_days_since_delivery": "Float64",
    "rt_hour_of_day": "Int64",
    "rt_refund_amount": "Float64",
    "rt_items_count": "Int64",
    "rt_share_fashion": "Float64",
    "rt_share_high_value": "Float64",
    "rt_return_type": "String",
    "rt_channel": "String",
    "rt_refund_method": "String",
    "rt_has_receipt": "Int64",
    "cust_account_age_days": "Float64",
    "cust_return_rate_count_365d": "Float64",
    "cust_return_rate_value_365d": "Float64",
    "cust_size_cm_share_365d": "Float64",
    # this request against the customer's own history, and the order's tokens against the customer's use of them
    "rt_refund_to_top_line": "Float64",
    "rt_order_lines": "Int64",
    "rt_order_vs_typical": "Float64",
    "rt_refund_vs_typical": "Float64",
    "dev_orders_vs_customer": "Float64",
    "addr_orders_vs_customer": "Float64",
}


VIEW_INPUTS = ("cust_created_epoch", "cust_returns_365d", "cust_orders_365d", "cust_refund_365d",
               "cust_order_value_365d", "cust_size_cm_365d",
               "dev_orders_365d", "addr_orders_365d")
"""The stored features `request_time_features` reads (its body cannot refer to this module's globals)."""


def request_time_features(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The on-demand transformation (python mode, column lists in and out).

    Feast ships this function by its source and runs it without this module's globals, so it
    must be self-contained: its helpers and imports live inside it.
    """
    import math

    def number(value: Any) -> float:
        return math.nan if value is None else float(value)

    def ratio(numerator: Any, denominator: Any) -> float:
        top, bottom = number(numerator), number(denominator)
        return math.nan if math.isnan(top) or math.isnan(bottom) or bottom == 0 else top / bottom

    out: dict[str, list[Any]] = {
        "rt_refund_to_order": [], "rt_days_since_order": [], "rt_days_since_delivery": [], "rt_hour_of_day": [],
        "rt_refund_amount": [], "rt_items_count": [], "rt_share_fashion": [], "rt_share_high_value": [],
        "rt_return_type": [], "rt_channel": [], "rt_refund_method": [], "rt_has_receipt": [],
        "cust_account_age_days": [], "cust_return_rate_count_365d": [], "cust_return_rate_value_365d": [],
        "cust_size_cm_share_365d": [], "rt_order_vs_typical": [], "rt_refund_vs_typical": [],
        "rt_refund_to_top_line": [], "rt_order_lines": [],
        "dev_orders_vs_customer": [], "addr_orders_vs_customer": [],
    }
    for i in range(len(inputs["req_requested_epoch"])):
        requested = float(inputs["req_requested_epoch"][i])
        created = number(inputs["cust_created_epoch"][i])
        out["rt_refund_to_order"].append(ratio(inputs["req_refund_amount"][i], inputs["req_order_total"][i]))
        out["rt_days_since_order"].append((requested - number(inputs["req_placed_epoch"][i])) / 86400.0)
        out["rt_days_since_delivery"].append((requested - number(inputs["req_delivered_epoch"][i])) / 86400.0)
        out["rt_hour_of_day"].append(int(requested // 3600) % 24)
        out["rt_refund_amount"].append(number(inputs["req_refund_amount"][i]))
        out["rt_items_count"].append(int(inputs["req_items_count"][i]))
        out["rt_share_fashion"].append(number(inputs["req_share_fashion"][i]))
        out["rt_share_high_value"].append(number(inputs["req_share_high_value"][i]))
        out["rt_return_type"].append(str(inputs["req_return_type"][i]))
        out["rt_channel"].append(str(inputs["req_channel"][i]))
        out["rt_refund_method"].append(str(inputs["req_refund_method"][i]))
        out["rt_has_receipt"].append(int(inputs["req_has_receipt"][i]))
        out["cust_account_age_days"].append((requested - created) / 86400.0 if created > 0 else math.nan)
        out["cust_return_rate_count_365d"].append(ratio(inputs["cust_returns_365d"][i], inputs["cust_orders_365d"][i]))
        out["cust_return_rate_value_365d"].append(
            ratio(inputs["cust_refund_365d"][i], inputs["cust_order_value_365d"][i]))
        out["cust_size_cm_share_365d"].append(ratio(inputs["cust_size_cm_365d"][i], inputs["cust_returns_365d"][i]))
        out["rt_refund_to_top_line"].append(ratio(inputs["req_refund_amount"][i], inputs["req_top_line_value"][i]))
        out["rt_order_lines"].append(int(inputs["req_lines"][i]))
        typical_order = ratio(inputs["cust_order_value_365d"][i], inputs["cust_orders_365d"][i])
        out["rt_order_vs_typical"].append(ratio(inputs["req_order_total"][i], typical_order))
        typical_refund = ratio(inputs["cust_refund_365d"][i], inputs["cust_returns_365d"][i])
        out["rt_refund_vs_typical"].append(ratio(inputs["req_refund_amount"][i], typical_refund))
        for prefix, given in (("dev", "req_has_device"), ("addr", "req_has_address")):
            used = number(inputs[f"{prefix}_orders_365d"][i])
            if math.isnan(used) and int(inputs[given][i]):
                used = 0.0  # a token with no rows yet (as `finish` and the online reader count it)
            out[f"{prefix}_orders_vs_customer"].append(ratio(used, inputs["cust_orders_365d"][i]))
    return out


def build_objects(feature_dir: Path) -> list[Any]:
    """Entities, sources, views and the feature service, with sources under FEATURE_DIR."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64, String

    feast_types = {"Float64": Float64, "Int64": Int64, "String": String}
    objects: list[Any] = []
    views = {}
    for name, spec in ENTITIES.items():
        entity = Entity(name=name, join_keys=[spec.key], value_type=ValueType.STRING)
        source = FileSource(
            name=f"{name}_rows",
            path=str(feature_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        schema = [Field(name=m.name, dtype=Int64 if m.is_count else Float64) for m in spec.metrics]
        view = FeatureView(name=f"{name}_features", entities=[entity], schema=schema, source=source,
                           ttl=timedelta(0), online=True)
        views[name] = view
        objects += [entity, source, view]

    entities = {obj.name: obj for obj in objects if isinstance(obj, Entity)}
    for name in MEMBERSHIP_SQL:
        # who has been seen on each token, so a just-assessed return counts a new customer exactly once
        source = FileSource(name=f"{name}_seen_rows", path=str(feature_dir / f"{name}_seen.parquet"),
                            timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
        objects += [source, FeatureView(
            name=f"{name}_seen", entities=[entities[name], entities["customer"]],
            schema=[Field(name="first_seen_epoch", dtype=Float64)], source=source, ttl=timedelta(0), online=True)]
    request = RequestSource(name="return_request",
                            schema=[Field(name=k, dtype=feast_types[v]) for k, v in REQUEST_FIELDS.items()])
    # Feast's decorator re-labels the function's module as __main__ (so dill ships it by value);
    # hand it a fresh copy each time, or the next build cannot find the source any more
    udf = types.FunctionType(request_time_features.__code__, request_time_features.__globals__,
                             "request_time_features")
    udf.__module__ = __name__
    odfv = on_demand_feature_view(
        sources=[views["customer"], views["device"], views["address"], request],
        schema=[Field(name=k, dtype=feast_types[v]) for k, v in DERIVED_FIELDS.items()],
        mode="python",
        name="request_time_features",
    )(udf)
    service = FeatureService(name=FEATURE_SERVICE, features=[*views.values(), odfv])
    return [*objects, request, odfv, service]


def feature_names() -> list[str]:
    """Every feature of the service, in a fixed order (views, then on-demand)."""
    names = [m.name for spec in ENTITIES.values() for m in spec.metrics]
    return names + list(DERIVED_FIELDS)
