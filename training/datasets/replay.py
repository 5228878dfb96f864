"""Assess request bodies from a contract dataset: each return with its order context, as the API takes them.

Used to replay a dataset against the scoring API (load benchmark, API tests, shadow runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd


def _when(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).isoformat()


def _text(value: Any) -> str | None:
    return None if pd.isna(value) else str(value)


class Replay:
    """The dataset's returns, orders and order lines, indexed for building request bodies."""

    def __init__(self, dataset: Path) -> None:
        self.returns = pd.read_parquet(dataset / "returns.parquet").set_index("return_id", drop=False)
        self.orders = pd.read_parquet(dataset / "orders.parquet").set_index("order_id", drop=False)
        items = pd.read_parquet(dataset / "order_items.parquet")
        self.items = {order_id: group for order_id, group in items.groupby("order_id", sort=False)}

    def body(self, return_id: str) -> dict[str, Any]:
        """The request body of one return, in the contract's field names."""
        r = self.returns.loc[return_id]
        order = self.orders.loc[r["order_id"]]
        lines = self.items[r["order_id"]]
        return {
            "return_id": return_id, "customer_id": r["customer_id"], "requested_at": _when(r["requested_at"]),
            "return_type": r["return_type"], "channel": r["channel"], "reason": r["reason"],
            "items_count": int(r["items_count"]), "refund_amount": float(r["refund_amount"]),
            "refund_method": r["refund_method"], "refund_token": _text(r["refund_token"]),
            "has_receipt": bool(r["has_receipt"]), "store_id": _text(r["store_id"]),
            "order": {
                "order_id": r["order_id"], "customer_id": order["customer_id"], "placed_at": _when(order["placed_at"]),
                "delivered_at": _when(order["delivered_at"]), "channel": order["channel"],
                "order_total": float(order["order_total"]), "currency": _text(order["currency"]),
                "payment_token": order["payment_token"], "address_token": _text(order["address_token"]),
                "device_token": _text(order["device_token"]),
                "items": [{"line_no": int(i.line_no), "sku": i.sku, "category": i.category,
                           "unit_price": float(i.unit_price), "quantity": int(i.quantity)}
                          for i in lines.itertuples()],
            },
        }

    def bodies(self, return_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
        for return_id in return_ids:
            yield self.body(return_id)
