"""Shared pieces of the synthetic world: catalogue constants, random helpers, and the table assembler.

Rows are built with integer handles (customer, order and return positions, token keys)
and turned into contract identifiers only once, in `Frames.assemble`. Identifiers are
assigned in time order (orders, returns) or at random (customers, tokens), so nothing in an
id tells an honest row from a fraudulent one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

CATEGORIES = ("apparel", "shoes", "electronics", "beauty", "home", "jewellery", "toys")
CATEGORY_WEIGHTS = np.array([0.32, 0.14, 0.10, 0.12, 0.20, 0.05, 0.07])
CATEGORY_PRICE = {  # median unit price and log-normal sigma
    "apparel": (32.0, 0.6),
    "shoes": (65.0, 0.5),
    "electronics": (120.0, 0.9),
    "beauty": (18.0, 0.6),
    "home": (28.0, 0.8),
    "jewellery": (70.0, 1.0),
    "toys": (22.0, 0.6),
}
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "hotmail.com", "gmx.net",
                 "proton.me", "btinternet.com", "acme-corp.com", "example.org")
# share of orders by hour of day (UTC), shaped like Online Retail's daytime trade plus evening app use
_HOURS = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 1.5, 3.0, 4.5, 6.0, 6.5, 7.0, 7.0, 6.5, 6.0,
                   5.5, 5.5, 6.0, 6.5, 6.5, 5.5, 3.5, 1.5])
HOUR_WEIGHTS = _HOURS / _HOURS.sum()

NO_TOKEN = -1
US_PER_DAY = 86400e6


def categorical(rng: np.random.Generator, values: tuple[str, ...], n: int,
                p: tuple[float, ...] | None = None) -> np.ndarray:
    """n draws from `values` (object array), with probabilities p (uniform when None)."""
    weights = None if p is None else np.asarray(p, dtype=float) / np.sum(p)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=weights)]


def lognormal_days(rng: np.random.Generator, n: int, median: float, sigma: float,
                   low: float = 0.02, high: float = 365.0) -> np.ndarray:
    """Log-normal durations in days with the given median, clipped to [low, high]."""
    return np.clip(rng.lognormal(np.log(median), sigma, n), low, high)


def days(values: np.ndarray | float) -> np.ndarray:
    """Durations in days as numpy microsecond timedeltas."""
    return (np.asarray(values, dtype=float) * US_PER_DAY).astype("timedelta64[us]")


def format_ids(prefix: str, n: int, width: int = 9) -> np.ndarray:
    """n identifiers PREFIX000000001..., as an object array."""
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def token_strings(prefix: str, keys: np.ndarray, salt: str) -> np.ndarray:
    """Opaque, deterministic token strings for integer keys (NO_TOKEN becomes None)."""
    unique, inverse = np.unique(keys, return_inverse=True)
    names = np.array([None if k == NO_TOKEN else
                      f"{prefix}_{hashlib.blake2b(f'{salt}:{prefix}:{k}'.encode(), digest_size=8).hexdigest()}"
                      for k in unique.tolist()], dtype=object)
    return names[inverse]


class Frames:
    """Accumulates world rows with integer handles, then assembles contract tables."""

    def __init__(self) -> None:
        self.customers: list[pd.DataFrame] = []
        self.orders: list[pd.DataFrame] = []
        self.items: list[pd.DataFrame] = []
        self.returns: list[pd.DataFrame] = []
        self.inspections: list[pd.DataFrame] = []
        self.labels: list[pd.DataFrame] = []
        self.n_customers = 0
        self.n_orders = 0
        self.n_returns = 0
        self._household = np.empty(0, dtype=np.int64)
        self._stores = np.empty(0, dtype=np.int64)

    def add_customers(self, frame: pd.DataFrame) -> None:
        """Honest customers: columns idx, created_at, email_domain, loyalty_tier, household, home_store."""
        self.customers.append(frame[["idx", "created_at", "email_domain", "loyalty_tier"]])
        self._household = np.concatenate([self._household, frame["household"].to_numpy()])
        self._stores = np.concatenate([self._stores, frame["home_store"].to_numpy()])
        self.n_customers += len(frame)

    def add_customer_rows(self, frame: pd.DataFrame) -> None:
        """Customers made by the fraud writer (own household, a random home store)."""
        self.customers.append(frame[["idx", "created_at", "email_domain", "loyalty_tier"]])
        self._household = np.concatenate([self._household, frame["idx"].to_numpy()])
        self._stores = np.concatenate([self._stores, frame["home_store"].to_numpy()])
        self.n_customers += len(frame)

    def home_address(self, cust: np.ndarray) -> np.ndarray:
        """The address key of each customer's household."""
        return self._household[cust]

    def home_store(self, cust: np.ndarray) -> np.ndarray:
        return self._stores[cust]

    def add_orders(self, orders: pd.DataFrame, items: pd.DataFrame) -> int:
        """Add orders (cust, placed_at, delivered_at, lost, channel, token keys or slots, order_total) and
        their items (with local order positions); returns the position of the first added order."""
        orders = orders.copy()
        if "payment_key" not in orders.columns:
            cust = orders["cust"].to_numpy()
            store = orders["channel"].to_numpy() == "store"
            orders["payment_key"] = cust * 2 + orders["payment_slot"].to_numpy()
            home = self.home_address(cust)
            second = 10**9 + cust
            orders["address_key"] = np.where(store, NO_TOKEN,
                                             np.where(orders["second_address"].to_numpy(), second, home))
            orders["device_key"] = np.where(store, NO_TOKEN, cust * 2 + orders["device_slot"].to_numpy())
        orders["delivered_at"] = orders["delivered_at"].where(~orders["lost"].to_numpy(), pd.NaT)
        items = items.copy()
        items["order"] = items["order"].to_numpy() + self.n_orders
        self.orders.append(orders[["cust", "placed_at", "delivered_at", "channel", "payment_key",
                                   "address_key", "device_key", "order_total"]])
        self.items.append(items[["order", "line_no", "cat", "sku_no", "unit_price", "list_price", "quantity"]])
        first = self.n_orders
        self.n_orders += len(orders)
        return first

    def add_returns(self, returns: pd.DataFrame, inspections: pd.DataFrame, labels: pd.DataFrame,
                    order_offset: int) -> None:
        """Returns (order positions local to `order_offset`), their inspections and labels (local return
        positions)."""
        returns = returns.copy()
        returns["order"] = returns["order"].to_numpy() + order_offset
        if "refund_key" not in returns.columns:
            returns["refund_key"] = NO_TOKEN
        if "actor" not in returns.columns:
            returns["actor"] = None
        self.returns.append(returns[["order", "cust", "requested_at", "return_type", "channel", "reason",
                                     "items_count", "refund_amount", "refund_method", "refund_key",
                                     "has_receipt", "truth", "typology", "actor"]])
        for frame, target in ((inspections, self.inspections), (labels, self.labels)):
            frame = frame.copy()
            frame["ret"] = frame["ret"].to_numpy() + self.n_returns
            target.append(frame)
        self.n_returns += len(returns)

    def assemble(self, end: pd.Timestamp) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """Contract tables and the ground truth, with identifiers assigned."""
        customers = pd.concat(self.customers, ignore_index=True).sort_values("idx")
        orders = pd.concat(self.orders, ignore_index=True)
        items = pd.concat(self.items, ignore_index=True)
        returns = pd.concat(self.returns, ignore_index=True)
        inspections = pd.concat(self.inspections, ignore_index=True)
        labels = pd.concat(self.labels, ignore_index=True)
        end64 = end.to_datetime64()

        # customer ids in random order, so a fraud actor's id looks like anyone's
        perm = np.random.default_rng(len(customers)).permutation(len(customers))
        cust_ids = format_ids("C", len(customers), 7)[perm]
        # order and return ids in time order
        order_rank = np.empty(len(orders), dtype=np.int64)
        order_rank[np.argsort(orders["placed_at"].to_numpy(), kind="stable")] = np.arange(len(orders))
        order_ids = format_ids("O", len(orders))[order_rank]
        ret_rank = np.empty(len(returns), dtype=np.int64)
        ret_rank[np.argsort(returns["requested_at"].to_numpy(), kind="stable")] = np.arange(len(returns))
        return_ids = format_ids("R", len(returns))[ret_rank]

        customers_out = pd.DataFrame({
            "customer_id": cust_ids[customers["idx"].to_numpy()],
            "created_at": customers["created_at"].to_numpy(),
            "email_domain": customers["email_domain"].to_numpy(),
            "loyalty_tier": customers["loyalty_tier"].to_numpy(),
        })
        cust = orders["cust"].to_numpy()
        orders_out = pd.DataFrame({
            "order_id": order_ids,
            "customer_id": cust_ids[cust],
            "placed_at": orders["placed_at"].to_numpy(),
            "delivered_at": orders["delivered_at"].to_numpy(),
            "channel": orders["channel"].to_numpy(),
            "payment_token": token_strings("pay", orders["payment_key"].to_numpy(), "payment"),
            "address_token": token_strings("addr", orders["address_key"].to_numpy(), "address"),
            "device_token": token_strings("dev", orders["device_key"].to_numpy(), "device"),
            "order_total": orders["order_total"].to_numpy(),
            "currency": "EUR",
        })
        # a delivery after the end of history has not happened yet
        orders_out.loc[orders_out["delivered_at"] >= end64, "delivered_at"] = pd.NaT
        items_out = _items_table(items, order_ids)
        rcust = returns["cust"].to_numpy()
        returns_out = self._returns_table(returns, order_ids, cust_ids, return_ids)
        inspections_out = pd.DataFrame({
            "return_id": return_ids[inspections["ret"].to_numpy(dtype=np.int64)],
            "inspected_at": inspections["inspected_at"].to_numpy(),
            "outcome": inspections["outcome"].to_numpy(),
        })
        labels_out = pd.DataFrame({
            "return_id": return_ids[labels["ret"].to_numpy(dtype=np.int64)],
            "label": labels["label"].to_numpy(),
            "labelled_at": labels["labelled_at"].to_numpy(),
            "source": labels["source"].to_numpy(),
        })
        inspections_out = inspections_out[inspections_out["inspected_at"] < end64]
        labels_out = labels_out[labels_out["labelled_at"] < end64].drop_duplicates(
            ["return_id", "labelled_at", "source"])
        truth = pd.DataFrame({
            "return_id": return_ids,
            "customer_id": cust_ids[rcust],
            "truth": returns["truth"].to_numpy(),
            "typology": returns["typology"].to_numpy(),
            "actor": returns["actor"].to_numpy(),
        })
        tables = {
            "customers": customers_out,
            "orders": orders_out.sort_values("placed_at", kind="stable"),
            "order_items": items_out,
            "returns": returns_out.sort_values("requested_at", kind="stable"),
            "labels": labels_out.sort_values("labelled_at", kind="stable"),
            "inspections": inspections_out.sort_values("inspected_at", kind="stable"),
        }
        _contract_times(tables)
        truth = truth.sort_values("return_id").reset_index(drop=True)
        return {k: v.reset_index(drop=True) for k, v in tables.items()}, truth

    def _returns_table(self, returns: pd.DataFrame, order_ids: np.ndarray, cust_ids: np.ndarray,
                       return_ids: np.ndarray) -> pd.DataFrame:
        """The contract's returns table, with refund tokens where the refund goes elsewhere."""
        rcust = returns["cust"].to_numpy()
        needs_token = returns["refund_method"].isin(["gift_card", "other_payment"]).to_numpy()
        refund_key = np.where(returns["refund_key"].to_numpy() == NO_TOKEN, rcust, returns["refund_key"].to_numpy())
        refund_key = np.where(needs_token, refund_key, NO_TOKEN)
        store_ids = np.array([f"S{i:03d}" for i in range(100)], dtype=object)
        return pd.DataFrame({
            "return_id": return_ids,
            "order_id": order_ids[returns["order"].to_numpy()],
            "customer_id": cust_ids[rcust],
            "requested_at": returns["requested_at"].to_numpy(),
            "return_type": returns["return_type"].to_numpy(),
            "channel": returns["channel"].to_numpy(),
            "reason": returns["reason"].to_numpy(),
            "items_count": returns["items_count"].to_numpy().astype(np.int64),
            "refund_amount": returns["refund_amount"].to_numpy(),
            "refund_method": returns["refund_method"].to_numpy(),
            "refund_token": token_strings("rfd", refund_key, "refund"),
            "has_receipt": returns["has_receipt"].to_numpy().astype(bool),
            "store_id": np.where(returns["channel"].to_numpy() == "store",
                                 store_ids[self.home_store(rcust) % 100], None),
        })


def _items_table(items: pd.DataFrame, order_ids: np.ndarray) -> pd.DataFrame:
    """The contract's order_items table, with SKU names per category."""
    sku_names = np.array([[f"{c[:3].upper()}-{i:05d}" for i in range(items["sku_no"].max() + 1)]
                          for c in CATEGORIES], dtype=object)
    return pd.DataFrame({
        "order_id": order_ids[items["order"].to_numpy()],
        "line_no": items["line_no"].to_numpy(),
        "sku": sku_names[items["cat"].to_numpy(), items["sku_no"].to_numpy()],
        "category": np.asarray(CATEGORIES, dtype=object)[items["cat"].to_numpy()],
        "unit_price": items["unit_price"].to_numpy(),
        "list_price": items["list_price"].to_numpy(),
        "quantity": items["quantity"].to_numpy(),
    })


def _contract_times(tables: dict[str, pd.DataFrame]) -> None:
    """Every timestamp column as the contract stores it: UTC, whole seconds, microsecond unit (in place)."""
    for frame in tables.values():
        for col in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                frame[col] = frame[col].astype("datetime64[us]").dt.floor("s").dt.tz_localize("UTC")
