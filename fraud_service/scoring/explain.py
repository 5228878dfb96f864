"""Reasons a person can read: the top SHAP contributions of a score, each as a sentence.

`4 item-not-received claims in the last 90 days; typical is 0`. Every feature of the feature
service has a description here (a test checks), built from the systematic feature names:
an entity prefix, a measure and an optional window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SUBJECTS = {
    "cust": "", "addr": " on this shipping address", "pay": " with this payment instrument",
    "dev": " from this device", "rfd": " refunded to this destination",
}
MEASURES = {
    "orders": ("orders", "count"), "returns": ("returns", "count"), "refund": ("refunds requested", "money"),
    "order_value": ("orders", "money"), "inr": ("item-not-received claims", "count"),
    "claims": ("damaged-on-arrival or wrong-item claims", "count"), "returnless": ("returnless refunds", "count"),
    "no_receipt": ("returns without a receipt", "count"), "size_cm": ("size or changed-mind returns", "count"),
    "bad_inspections": ("returns that failed inspection", "count"),
    "passed_inspections": ("returns that passed inspection", "count"),
    "refund_elsewhere": ("refunds to a gift card or another payment instrument", "count"),
    "fraud_labels": ("earlier returns confirmed as fraud", "count"),
    "abuse_labels": ("earlier returns confirmed as abuse", "count"),
    "legit_labels": ("earlier returns confirmed as legitimate", "count"),
    "bad_labels": ("returns confirmed as fraud or abuse", "count"),
    "customers": ("different customers", "count"),
    "median_days_to_return": ("median days from delivery to return", "days"),
}
SPECIAL = {
    "rt_refund_to_order": ("refund is {v} of the order's value", "share"),
    "rt_days_since_order": ("{v} days since the order was placed", "days"),
    "rt_days_since_delivery": ("{v} days since delivery", "days"),
    "rt_hour_of_day": ("requested at {v}:00 UTC", "int"),
    "rt_refund_amount": ("refund of {v}", "money"),
    "rt_items_count": ("{v} items claimed", "int"),
    "rt_share_fashion": ("{v} of the order's value is apparel or shoes", "share"),
    "rt_share_high_value": ("{v} of the order's value is electronics or jewellery", "share"),
    "rt_return_type": ("claim type: {v}", "text"),
    "rt_channel": ("return channel: {v}", "text"),
    "rt_refund_method": ("refund method: {v}", "text"),
    "rt_has_receipt": ("receipt: {v}", "bool"),
    "cust_account_age_days": ("account is {v} days old", "days"),
    "cust_return_rate_count_365d": ("{v} of the customer's orders in the last 365 days were returned", "share"),
    "cust_return_rate_value_365d": ("refunds are {v} of the customer's order value in the last 365 days", "share"),
    "cust_size_cm_share_365d": ("{v} of the customer's returns in the last 365 days were size or changed mind",
                                "share"),
    "cust_created_epoch": ("account created at {v}", "epoch"),
    "rt_refund_to_top_line": ("refund is {v} the value of the order's dearest line", "times"),
    "rt_order_lines": ("{v} lines in the order", "int"),
    "rt_order_vs_typical": ("order value is {v} the customer's average order of the last 365 days", "times"),
    "rt_refund_vs_typical": ("refund is {v} the customer's average refund of the last 365 days", "times"),
    "dev_orders_vs_customer": ("orders from this device are {v} the customer's own orders in the last 365 days",
                               "times"),
    "addr_orders_vs_customer": ("orders to this address are {v} the customer's own orders in the last 365 days",
                                "times"),
}
MISSING = {
    "rt_refund_to_order": "refund share of the order's value: unknown",
    "rt_days_since_order": "days since the order was placed: unknown",
    "rt_days_since_delivery": "not delivered yet (no delivery date)",
    "rt_hour_of_day": "time of the request: unknown",
    "rt_refund_amount": "refund amount: unknown",
    "rt_items_count": "number of items claimed: unknown",
    "rt_share_fashion": "share of apparel or shoes: unknown",
    "rt_share_high_value": "share of electronics or jewellery: unknown",
    "cust_account_age_days": "account age: unknown (no sign-up date)",
    "cust_return_rate_count_365d": "the customer's return rate: unknown (no orders in the last 365 days)",
    "cust_return_rate_value_365d": "the customer's refund share: unknown (no orders in the last 365 days)",
    "cust_size_cm_share_365d": "share of size or changed-mind returns: unknown (no returns in the last 365 days)",
    "cust_created_epoch": "account creation time: unknown",
    "rt_refund_to_top_line": "refund against the order's dearest line: unknown (no priced lines)",
    "rt_order_lines": "lines in the order: unknown",
    "rt_order_vs_typical": "order value against the customer's average: unknown (no orders in the last 365 days)",
    "rt_refund_vs_typical": "refund against the customer's average: unknown (no returns in the last 365 days)",
    "dev_orders_vs_customer": "this device's orders against the customer's: unknown (no device, or no orders)",
    "addr_orders_vs_customer": "this address's orders against the customer's: unknown (no address, or no orders)",
}
"""What a reason says when its feature has no value (never "Account is unknown days old")."""
SINGULAR = {
    "items claimed": "item claimed", "orders": "order", "returns": "return", "claims": "claim",
    "refunds": "refund", "customers": "customer",
}
"""A count of exactly 1 reads in the singular: "1 item claimed", "1 return that failed inspection"."""
_NAME = re.compile(r"^(cust|addr|pay|dev|rfd)_(.+?)(?:_(\d+)d)?$")


@dataclass(frozen=True)
class Reason:
    feature: str
    value: Any
    contribution: float
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        value = None if isinstance(self.value, float) and math.isnan(self.value) else self.value
        return {"feature": self.feature, "value": value, "contribution": round(self.contribution, 6),
                "sentence": self.sentence}


def _format(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if kind == "text":
        return str(value).replace("_", " ")
    if kind == "bool":
        return "yes" if value else "no"
    number = float(value)
    if kind == "share":
        return f"{number:.0%}"
    if kind == "money":
        return f"{number:,.2f}"
    if kind == "times":
        return f"{number:,.1f}x"
    if kind == "days":
        return f"{number:,.1f}" if abs(number) < 10 else f"{number:,.0f}"
    return f"{number:,.0f}"


def describe(feature: str) -> tuple[str, str]:
    """A sentence template with `{v}` and the value's kind, for any feature of the service."""
    if feature in SPECIAL:
        return SPECIAL[feature]
    match = _NAME.match(feature)
    if match is None or match.group(2) not in MEASURES:
        raise KeyError(f"no description for feature {feature!r}")
    prefix, measure, days = match.groups()
    noun, kind = MEASURES[measure]
    window = f" in the last {days} days" if days else ""
    if measure == "customers":
        return f"{{v}} {noun} seen{SUBJECTS[prefix]}", kind
    if kind == "money":  # a sum, not a count: "Refunds requested ... in the last 365 days total 1,622.49"
        subject = " to this destination" if prefix == "rfd" else SUBJECTS[prefix]  # not "refunds ... refunded to"
        return f"{noun}{subject}{window} total {{v}}", kind
    if kind == "days":
        return f"{noun}{window}: {{v}}", kind
    return f"{{v}} {noun}{SUBJECTS[prefix]}{window}", kind


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _singular(text: str) -> str:
    """TEXT's first counted noun in the singular (it starts with "1 ")."""
    head, _, rest = text.partition(" ")
    for plural, one in SINGULAR.items():
        if rest.startswith(plural):
            return f"{head} {one}{rest[len(plural):]}"
        words = rest.split(" ")
        for i, word in enumerate(words[:4]):  # "earlier returns confirmed...", "item-not-received claims ..."
            if word == plural:
                words[i] = one
                return f"{head} {' '.join(words)}"
    return text


def sentence(feature: str, value: Any, typical: Any = None) -> str:
    template, kind = describe(feature)
    if _missing(value) and kind not in ("text", "bool"):
        text = MISSING.get(feature) or template.replace("{v} ", "").replace(": {v}", "").replace(
            " total {v}", "") + ": unknown"
    else:
        text = template.format(v=_format(value, kind))
        if kind in ("count", "int") and not _missing(value) and float(value) == 1 and text.startswith("1 "):
            text = _singular(text)
    if typical is not None and kind != "text":
        text += f"; typical is {_format(typical, kind)}"
    return text[0].upper() + text[1:]


def reasons(features: Sequence[str], values: Mapping[str, Any], contributions: np.ndarray,
            typical: Mapping[str, Any], top: int = 5) -> list[Reason]:
    """The TOP features that pushed the score up most (positive contributions), as sentences."""
    order = np.argsort(-contributions[: len(features)], kind="stable")
    out = []
    for i in order[:top]:
        if contributions[i] <= 0:
            break
        name = features[i]
        out.append(Reason(name, values.get(name), float(contributions[i]),
                          sentence(name, values.get(name), typical.get(name))))
    return out


THEMES = ("blocklisted", "refund exceeds order", "repeated item not received", "return velocity",
          "shared refund destination", "item not received", "returnless refunds", "damaged or wrong item",
          "no receipt", "failed inspections", "known bad history", "linked accounts", "serial returning",
          "new account", "refund amount", "timing", "claim type", "basket")
"""The reasons a case is filed under in the analysts' queue (its filter), from its riskiest assessment."""


def theme(feature: str | None, rules: Sequence[str] = ()) -> str:
    """The queue's reason for an assessment: a fired blocklist or hard rule first, else its top feature's theme."""
    if any(r.startswith("blocklist_") for r in rules):
        return "blocklisted"
    hard = [r for r in rules if not r.startswith("allowlist_")]
    if hard:
        return hard[0].replace("_", " ")
    if not feature:
        return "claim type"
    for part, name in (("inr", "item not received"), ("returnless", "returnless refunds"),
                       ("claims", "damaged or wrong item"), ("no_receipt", "no receipt"),
                       ("bad_inspections", "failed inspections"), ("_labels", "known bad history")):
        if part in feature:
            return name
    if feature.startswith(("addr_", "pay_", "dev_", "rfd_")):
        return "linked accounts"
    if feature.startswith("cust_account_age") or feature == "cust_created_epoch":
        return "new account"
    if feature.startswith("cust_"):
        return "serial returning"
    if feature in ("rt_refund_to_order", "rt_refund_amount"):
        return "refund amount"
    if feature in ("rt_days_since_order", "rt_days_since_delivery", "rt_hour_of_day"):
        return "timing"
    if feature in ("rt_items_count", "rt_share_fashion", "rt_share_high_value"):
        return "basket"
    return "claim type"


def chart(features: Sequence[str], values: Mapping[str, Any], contributions: Sequence[float],
          typical: Mapping[str, Any], top: int = 10) -> list[dict[str, Any]]:
    """The TOP contributions by size, either sign, with sentences: what the case page draws as its SHAP chart.

    CONTRIBUTIONS are in FEATURES' order (as stored with the assessment; a trailing bias term is ignored).
    """
    pairs = [(name, float(c)) for name, c in zip(features, contributions, strict=False)]
    pairs.sort(key=lambda p: -abs(p[1]))
    out = []
    for name, c in pairs[:top]:
        if c == 0:
            break
        try:
            text = sentence(name, values.get(name), typical.get(name))
        except KeyError:
            text = name
        out.append({"feature": name, "value": values.get(name), "contribution": c, "sentence": text})
    return out
