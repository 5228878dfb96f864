"""A third, independent injector of returns fraud and abuse into a contract dataset.

Written on 2026-12-06 by an independent author who did not look at the service's model, its
features or the project's other injectors (nor their tests or docs): only the data contract
(`DATA_CONTRACT.md`) and the tables the Online Retail import produces were read. It is a
yardstick made by other hands, so that a model tuned against the house injectors can be checked
for whether it learnt fraud or learnt those injectors.

Everything injected is drawn from the source shop itself: baskets are copies of its real orders
(real SKUs, categories, prices and wholesale quantities), event times fall on the shop's own
trading days at its own trading hours (some kinds partly at night), episodes start at times
sampled from the shop's order activity (so the busy autumn gets more of everything), and new
accounts and tokens have the import's formats. Untouched source rows are kept as they are.
No kind is given a field of its own: reasons, channels, refund methods and inspection outcomes
overlap between the bad kinds and the honest-but-risky ones.

Kinds (`typology`, truth in brackets):

- `account_takeover` (fraud): an established account (3+ orders, 90+ days old) is taken over by
  a crew (a crew hits a few victims). About half the time the crew places 1-3 new, larger
  orders from its own device (mostly), often to its own address and half the time with a new
  card, then claims them as not received (some parcels even show no delivery scan), damaged or
  returned; otherwise it claims refunds on the victim's real orders of the last 75 days. Refunds
  go mostly to the crew's own gift card or payout account, sometimes to store credit or even
  the original payment. Claims come in a burst, a third at night.
- `ring` (fraud): 3-7 linked accounts: mostly new, some "sleepers" opened months earlier with a
  normal order or two, some recruited real customers with clean histories. Each ring shares a
  random subset of device, address, payment and refund destination (one or two variants of
  each), and each member uses the shared ones only most of the time. Members order over about
  five weeks, then claim not received, damaged or return (empty or junk); now and then one
  member claims on another member's order. Refunds mostly to the ring's shared token.
- `wardrobing` (abuse): ordinary customers (existing or new) buy display and seasonal goods
  (lighting, Christmas, home, bags, jewellery, toys), use them for an event and send nearly all
  of it (or the dearer half) back 6-28 days after delivery, 1-3 times months apart. Inspections,
  when made, find them worn about half the time.
- `refund_diversion` (fraud): a diverter steers refunds away from the payment that paid: either
  on victims' recent real orders (claimed by the victim's account, or by the diverter's own
  account, whose store credit may then take the refund) or by laundering new orders
  paid with fresh cards and refunded elsewhere. Destinations: payout accounts, gift cards,
  store credit; diverters reuse their tokens but a quarter of the time use a fresh one. The
  goods usually really come back.
- `empty_box` (fraud): an existing customer (60%; half the time one with no return history) or
  a new account returns an order of high value (new, or one of the last 45 days) by mail, empty or
  with junk; a quarter offend again months later. Inspections mostly find `empty_box`, some
  `missing_parts`, some miss it (`ok`).
- `item_switch` (fraud): cheaper or counterfeit goods come back for what was bought, on a new
  order or a real one of the last 60 days: either 1-3 units of the dear SKUs (top 7% of the
  shop's prices) or, 40% of the time, most of a wholesale lot of one of the order's biggest
  lines swapped for look-alikes; claimed defective or not as described. Inspections find
  `wrong_item`, `damaged` or miss it.
- `serial_returner` (legit): honest customers who return a lot within policy, mostly real
  customers with 8+ orders (their real orders are returned), some new accounts that then order
  regularly. Four personas: trimmers (send back part of wholesale quantities), quality
  complainers (damaged/defective, small ones refunded returnless), bracketers (whole lines back)
  and slow deciders (bigger returns late in the 30-day window, more store credit). 30-70% of
  their orders see a return, capped at 4-18 returns; a few honest missing-parcel claims too.
- `legit_inr` (legit): honest item-not-received claims on new orders of existing (mostly) or
  new customers; 45% of parcels never got a delivery scan, the rest were scanned but lost.
  Full or partial refunds, mostly to the original payment.

Inspections: only mail returns whose goods come back, about `inspection_rate` of them (more of
the high-value ones), 2-12 days after the request; the outcome follows the kind (honest returns
are mostly `ok`, but some are damaged, missing parts or worn).
Labels arrive late, incomplete and sometimes wrong: an inspection that finds an empty box or a
wrong item usually yields a `fraud` label within two days, a worn item sometimes `abuse`, an `ok`
sometimes `legit` (wrongly so for a missed fraud). Otherwise a bad return is labelled with a
kind-dependent share of `bad_label_rate` by analysts (days to weeks), customer service (days) or
chargebacks (30-90 days); honest returns get a `legit` label at `legit_label_rate` (risky honest
kinds more often). A `label_error_rate` share of the analysts' and customer service's labels is
wrong (fraud called abuse or legit, serial returners called abuse, honest missing parcels called
fraud; a chargeback always says fraud), and `label_revision_rate` of the wrong ones are
corrected later by an analyst (the latest label wins).

With the default amounts, on the Online Retail import, about 4-5.5% of the returns requested
from 2011-09-01 to the end of the data are bad (50-72 returns for seeds 1-3, mean 4.8%).
Returned counts are returns per typology (`legit` = untouched source returns) plus `labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "created_at", "email_domain", "loyalty_tier"),
    "orders": ("order_id", "customer_id", "placed_at", "delivered_at", "channel", "payment_token", "address_token",
               "device_token", "order_total", "currency"),
    "order_items": ("order_id", "line_no", "sku", "category", "unit_price", "list_price", "quantity"),
    "returns": ("return_id", "order_id", "customer_id", "requested_at", "return_type", "channel", "reason",
                "items_count", "refund_amount", "refund_method", "refund_token", "has_receipt", "store_id"),
    "labels": ("return_id", "label", "labelled_at", "source"),
    "inspections": ("return_id", "inspected_at", "outcome"),
}
TIMES = {"created_at", "placed_at", "delivered_at", "requested_at", "labelled_at", "inspected_at"}
INTS = {"line_no", "quantity", "items_count"}
FLOATS = {"order_total", "unit_price", "list_price", "refund_amount"}
BOOLS = {"has_receipt"}

BAD_KINDS = ("account_takeover", "ring", "wardrobing", "refund_diversion", "empty_box", "item_switch")
RISKY_LEGIT_KINDS = ("serial_returner", "legit_inr")
KINDS = BAD_KINDS + RISKY_LEGIT_KINDS
TRUTH = {"account_takeover": "fraud", "ring": "fraud", "wardrobing": "abuse", "refund_diversion": "fraud",
         "empty_box": "fraud", "item_switch": "fraud", "serial_returner": "legit", "legit_inr": "legit",
         "legit": "legit"}
DAY = pd.Timedelta(days=1)
GOODS_BACK = ("return", "wrong_item", "damaged_on_arrival")

K = TypeVar("K")
Portion = tuple[int, float]
Refund = tuple[str, str | None]

ORDER_CHANNELS = {"web": 0.9, "app": 0.08, "marketplace": 0.02}
REASONS: dict[str, dict[str, float]] = {
    "return": {"not_stated": 0.35, "changed_mind": 0.2, "ordered_by_mistake": 0.12, "excess_stock": 0.1,
               "defective": 0.1, "not_as_described": 0.08, "damaged": 0.05},
    "item_not_received": {"not_received": 0.7, "not_stated": 0.2, "late_delivery": 0.1},
    "damaged_on_arrival": {"damaged": 0.6, "defective": 0.25, "not_stated": 0.15},
    "wrong_item": {"wrong_item_sent": 0.75, "not_stated": 0.25},
}
WARDROBE_REASONS = {"changed_mind": 0.35, "not_stated": 0.3, "not_as_described": 0.15, "excess_stock": 0.1,
                    "damaged": 0.1}
SWITCH_REASONS = {"defective": 0.4, "not_as_described": 0.25, "not_stated": 0.2, "changed_mind": 0.15}
ATO_NEW_REFUND = {"other_payment": 0.35, "gift_card": 0.25, "store_credit": 0.15, "original_payment": 0.25}
ATO_OLD_REFUND = {"other_payment": 0.4, "gift_card": 0.3, "store_credit": 0.15, "original_payment": 0.15}
RING_REFUND = {"original_payment": 0.5, "store_credit": 0.2, "gift_card": 0.15, "other_payment": 0.15}
WARDROBE_REFUND = {"original_payment": 0.8, "store_credit": 0.15, "gift_card": 0.05}
BOX_REFUND = {"original_payment": 0.7, "store_credit": 0.15, "gift_card": 0.1, "other_payment": 0.05}
SWITCH_REFUND = {"original_payment": 0.75, "store_credit": 0.15, "gift_card": 0.1}
SERIAL_REFUND = {"original_payment": 0.75, "store_credit": 0.17, "gift_card": 0.06, "other_payment": 0.02}
SLOW_REFUND = {"original_payment": 0.55, "store_credit": 0.35, "gift_card": 0.1}
INR_REFUND = {"original_payment": 0.85, "store_credit": 0.1, "gift_card": 0.05}
WARDROBE_CATEGORIES = ("lighting", "christmas", "home", "bags", "jewellery", "toys")

# persona: (share of lines, share of units per line, days after delivery, reasons, refund methods, returnless if cheap)
PERSONAS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], dict[str, float],
                          dict[str, float], bool]] = {
    "trimmer": ((0.05, 0.3), (0.2, 0.5), (1, 14), {"excess_stock": 0.4, "ordered_by_mistake": 0.25, "not_stated": 0.35},
                SERIAL_REFUND, False),
    "quality": ((0.05, 0.2), (0.1, 0.4), (0.3, 7), {"damaged": 0.45, "defective": 0.4, "not_stated": 0.15},
                SERIAL_REFUND, True),
    "bracketer": ((0.1, 0.4), (1, 1), (2, 20), {"changed_mind": 0.35, "not_as_described": 0.2, "not_stated": 0.3,
                                                "ordered_by_mistake": 0.15}, SERIAL_REFUND, False),
    "slow": ((0.3, 0.8), (1, 1), (15, 29), {"changed_mind": 0.5, "not_stated": 0.35, "excess_stock": 0.15},
             SLOW_REFUND, False),
}
PERSONA_SHARES = {"trimmer": 0.3, "quality": 0.2, "bracketer": 0.3, "slow": 0.2}

OUTCOMES: dict[str, dict[str, float]] = {
    "legit": {"ok": 0.86, "damaged": 0.07, "missing_parts": 0.04, "worn": 0.03},
    "serial_returner": {"ok": 0.76, "damaged": 0.12, "missing_parts": 0.05, "worn": 0.07},
    "legit_inr": {"ok": 0.9, "damaged": 0.1},
    "wardrobing": {"worn": 0.5, "ok": 0.42, "damaged": 0.08},
    "empty_box": {"empty_box": 0.65, "missing_parts": 0.15, "ok": 0.2},
    "item_switch": {"wrong_item": 0.55, "damaged": 0.15, "ok": 0.3},
    "ring": {"empty_box": 0.3, "wrong_item": 0.2, "missing_parts": 0.15, "ok": 0.35},
    "account_takeover": {"ok": 0.6, "empty_box": 0.25, "missing_parts": 0.15},
    "refund_diversion": {"ok": 0.9, "damaged": 0.1},
}
# what an inspection outcome makes the warehouse report, and how often it reports at all
INSPECTION_LABEL = {"empty_box": ("fraud", 0.8), "wrong_item": ("fraud", 0.7), "worn": ("abuse", 0.5),
                    "missing_parts": ("fraud", 0.3), "ok": ("legit", 0.12), "damaged": ("legit", 0.05)}
# kind: (factor on the label rate, sources, factor on the error rate)
DESK_LABELS: dict[str, tuple[float, dict[str, float], float]] = {
    "account_takeover": (1.3, {"chargeback": 0.55, "analyst": 0.25, "customer_service": 0.2}, 1.0),
    "ring": (1.0, {"analyst": 0.7, "chargeback": 0.15, "customer_service": 0.15}, 1.0),
    "wardrobing": (0.6, {"analyst": 0.55, "customer_service": 0.45}, 2.0),
    "refund_diversion": (1.1, {"customer_service": 0.45, "chargeback": 0.25, "analyst": 0.3}, 1.0),
    "empty_box": (0.8, {"analyst": 0.6, "customer_service": 0.4}, 0.7),
    "item_switch": (0.8, {"analyst": 0.6, "customer_service": 0.4}, 1.0),
    "serial_returner": (2.5, {"customer_service": 0.6, "analyst": 0.4}, 1.5),
    "legit_inr": (5.0, {"customer_service": 0.8, "analyst": 0.2}, 1.0),
    "legit": (1.0, {"customer_service": 0.7, "analyst": 0.3}, 0.5),
}
WRONG_LABEL = {"fraud": {"abuse": 0.65, "legit": 0.35}, "abuse": {"fraud": 0.5, "legit": 0.5},
               "legit": {"abuse": 0.5, "fraud": 0.5}}
WRONG_BY_KIND = {"serial_returner": {"abuse": 0.85, "fraud": 0.15}, "legit_inr": {"fraud": 0.8, "abuse": 0.2}}


@dataclass(frozen=True)
class ThirdInjectionConfig:
    """How much of each kind to inject (episodes or actors, not returns) and how labels arrive."""

    seed: int = 1
    account_takeovers: int = 16  # taken-over accounts (1-3 claims each)
    rings: int = 5  # rings of 3-7 linked accounts
    wardrobers: int = 16  # customers wearing and returning, 1-3 episodes each
    refund_diversions: int = 22  # diverted refunds
    empty_box_offenders: int = 16  # offenders, a quarter of them repeat
    item_switchers: int = 18  # switched items
    serial_returners: int = 40  # honest customers who return a lot
    legit_inr_claims: int = 50  # honest item-not-received claims
    bad_label_rate: float = 0.25  # base share of bad returns labelled at the desk (scaled per kind)
    legit_label_rate: float = 0.04  # share of ordinary honest returns with a label
    label_error_rate: float = 0.1  # share of desk labels that are wrong
    label_revision_rate: float = 0.3  # share of wrong labels corrected later
    inspection_rate: float = 0.3  # share of goods-back mail returns inspected (more for high value)


@dataclass
class _Lines:
    sku: np.ndarray
    category: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    def __len__(self) -> int:
        return len(self.sku)

    def take(self, idx: np.ndarray) -> _Lines:
        return _Lines(self.sku[idx], self.category[idx], self.price[idx], self.qty[idx])

    def plus(self, other: _Lines) -> _Lines:
        return _Lines(*(np.concatenate([a, b]) for a, b in
                        ((self.sku, other.sku), (self.category, other.category), (self.price, other.price),
                         (self.qty, other.qty))))


@dataclass
class _Order:
    order_id: str
    customer_id: str
    placed_at: pd.Timestamp
    delivered_at: pd.Timestamp | None
    total: float


def _pick(rng: np.random.Generator, weights: Mapping[K, float]) -> K:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


class _Shop:
    """The source's facts the injector draws from: calendar, trading hours, baskets, histories."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        orders = tables["orders"].sort_values(["placed_at", "order_id"], kind="stable").reset_index(drop=True)
        stamps = pd.concat([orders["placed_at"], tables["returns"]["requested_at"]], ignore_index=True)
        self.orders = orders
        self.start: pd.Timestamp = orders["placed_at"].min()
        self.end: pd.Timestamp = stamps.max()
        self.days = pd.DatetimeIndex(stamps.dt.floor("D").unique()).sort_values()
        self.minutes = ((stamps - stamps.dt.floor("D")) // pd.Timedelta(minutes=1)).to_numpy(dtype=np.int64)
        self.rank = orders.groupby("customer_id").cumcount().to_numpy() + 1
        self.first = orders.groupby("customer_id")["placed_at"].transform("min")
        self.returned = set(tables["returns"]["customer_id"])
        positive = orders[orders["order_total"] > 0].sort_values(["order_total", "order_id"], kind="stable")
        self.by_total = positive["order_id"].to_numpy()
        self.median_total = float(positive["order_total"].median()) if len(positive) else 0.0
        items = tables["order_items"].sort_values(["order_id", "line_no"], kind="stable").reset_index(drop=True)
        self.items = _Lines(items["sku"].to_numpy(object), items["category"].to_numpy(object),
                            items["unit_price"].to_numpy(float), items["quantity"].to_numpy(np.int64))
        ids, starts = np.unique(items["order_id"].to_numpy(object), return_index=True)
        ends = np.append(starts[1:], len(items))
        self.spans = {str(i): (int(s), int(e)) for i, s, e in zip(ids, starts, ends, strict=True)}
        catalogue = items[items["unit_price"] > 0].groupby("sku").agg(
            category=("category", "first"), price=("unit_price", "median"), qty=("quantity", "median"),
            n=("quantity", "size"))
        self.catalogue = catalogue.sort_index()
        self.pricey_price = float(catalogue["price"].quantile(0.93)) if len(catalogue) else 0.0

    def when(self, rng: np.random.Generator, lower: pd.Timestamp, night: float = 0.0) -> pd.Timestamp | None:
        """The first moment after `lower` on a trading day at a trading hour (or at night); None past the end."""
        i = int(self.days.searchsorted(lower.floor("D")))
        tries = 0
        while i < len(self.days):
            if rng.random() < night:
                minute = (20 * 60 + int(rng.integers(0, 600))) % 1440
            else:
                minute = int(np.clip(self.minutes[int(rng.integers(len(self.minutes)))] + rng.integers(-15, 16),
                                     0, 1439))
            stamp = self.days[i] + pd.Timedelta(minutes=minute)
            if stamp > lower:
                return stamp if stamp <= self.end else None
            tries += 1
            if tries >= 3:
                i, tries = i + 1, 0
        return None

    def anchor(self, rng: np.random.Generator, lo_days: float, hi_days: float) -> pd.Timestamp | None:
        """An episode start, as busy as the shop's order activity between the bounds."""
        placed = self.orders["placed_at"]
        mask = ((placed >= self.start + lo_days * DAY) & (placed <= self.end - hi_days * DAY)).to_numpy()
        candidates = np.flatnonzero(mask)
        if not len(candidates):
            return None
        return pd.Timestamp(placed.iloc[int(candidates[int(rng.integers(len(candidates)))])])

    def customers_at(self, at: pd.Timestamp, min_orders: int, min_age_days: float) -> np.ndarray:
        """Customers with `min_orders` orders before `at` whose first order is `min_age_days` old."""
        placed = self.orders["placed_at"]
        mask = ((placed < at) & (self.first <= at - min_age_days * DAY)).to_numpy() & (self.rank == min_orders)
        return np.sort(self.orders["customer_id"].to_numpy(object)[mask])

    def lines(self, order_id: str) -> _Lines:
        s, e = self.spans.get(order_id, (0, 0))
        return self.items.take(np.arange(s, e))

    def template(self, rng: np.random.Generator, lo_q: float, hi_q: float, max_lines: int) -> _Lines:
        """A copy of a real order from a band of order values, thinned to `max_lines` lines."""
        n = len(self.by_total)
        lo = min(int(lo_q * n), n - 1)
        hi = max(min(int(hi_q * n), n), lo + 1)
        lines = self.lines(str(self.by_total[int(rng.integers(lo, hi))]))
        if len(lines) > max_lines:
            lines = lines.take(np.sort(rng.choice(len(lines), max_lines, replace=False)))
        jitter = rng.choice([0.5, 1.0, 1.0, 1.0, 1.0, 2.0], size=len(lines))
        qty = np.maximum(1, np.round(lines.qty * jitter)).astype(np.int64)
        return _Lines(lines.sku, lines.category, lines.price, qty)

    def basket(self, rng: np.random.Generator, n_lines: int, categories: tuple[str, ...] = (),
               min_price: float = 0.0) -> _Lines:
        """Popular SKUs of some categories (or all) at their usual price and wholesale quantity."""
        cat = self.catalogue
        chosen = cat[cat["category"].isin(categories)] if categories else cat
        chosen = chosen[chosen["price"] >= min_price]
        if not len(chosen):
            chosen = cat[cat["price"] >= min_price] if len(cat[cat["price"] >= min_price]) else cat
        weights = chosen["n"].to_numpy(float)
        idx = rng.choice(len(chosen), size=min(n_lines, len(chosen)), replace=False, p=weights / weights.sum())
        rows = chosen.iloc[np.sort(idx)]
        qty = np.maximum(1, np.round(rows["qty"].to_numpy(float) * rng.choice([0.5, 1.0, 1.0, 2.0], size=len(rows))))
        return _Lines(rows.index.to_numpy(object), rows["category"].to_numpy(object), rows["price"].to_numpy(float),
                      qty.astype(np.int64))


class _Injector:
    """Holds the shop, the new rows and the helpers every kind uses."""

    def __init__(self, tables: dict[str, pd.DataFrame], config: ThirdInjectionConfig) -> None:
        self.cfg = config
        self.shop = _Shop(tables)
        self.rng = np.random.default_rng(config.seed)
        orders = self.shop.orders
        self.orders: dict[str, _Order] = {
            str(o): _Order(str(o), str(c), p, None if pd.isna(d) else d, float(t)) for o, c, p, d, t in zip(
                orders["order_id"], orders["customer_id"], orders["placed_at"], orders["delivered_at"],
                orders["order_total"], strict=True)}
        self.cust_orders: dict[str, list[str]] = {
            str(c): [str(o) for o in ids] for c, ids in orders.groupby("customer_id")["order_id"]}
        last = orders.groupby("customer_id").last()
        self.profiles: dict[str, dict[str, str]] = {
            str(c): {"pay": str(p), "addr": str(a), "dev": str(d)} for c, p, a, d in zip(
                last.index, last["payment_token"], last["address_token"], last["device_token"], strict=True)}
        self.new_lines: dict[str, _Lines] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {"customers": [], "orders": [], "order_items": [], "returns": []}
        self.kind_of: dict[str, str] = {}
        self.used: set[str] = set()
        self.refund_tokens: dict[tuple[str, str], str] = {}
        self.taken: dict[str, set[str]] = {
            "customer": set(map(str, tables["customers"]["customer_id"])),
            "order": set(map(str, orders["order_id"])), "return": set(map(str, tables["returns"]["return_id"]))}

    # ---- randomness and ids
    def pick(self, weights: Mapping[K, float]) -> K:
        return _pick(self.rng, weights)

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def days(self, lo: float, hi: float) -> pd.Timedelta:
        return pd.Timedelta(days=float(self.rng.uniform(lo, hi))).floor("min")

    def token(self, prefix: str) -> str:
        return f"{prefix}_{int(self.rng.integers(0, 2**62)):016x}"

    def new_id(self, what: str) -> str:
        prefix, lo, hi = {"customer": ("OR", 20000, 100000), "order": ("", 600000, 1000000),
                          "return": ("C", 600000, 1000000)}[what]
        while True:
            candidate = f"{prefix}{int(self.rng.integers(lo, hi))}"
            if candidate not in self.taken[what]:
                self.taken[what].add(candidate)
                return candidate

    def anchor(self, lo_days: float, hi_days: float) -> pd.Timestamp | None:
        return self.shop.anchor(self.rng, lo_days, hi_days)

    # ---- customers and orders
    def existing_customer(self, at: pd.Timestamp, min_orders: int, min_age_days: float,
                          clean: bool = False) -> str | None:
        """An unused real customer established at `at` (half the time `clean`: no returns at all)."""
        found = [c for c in self.shop.customers_at(at, min_orders, min_age_days) if c not in self.used]
        if clean and self.chance(0.5):
            found = [c for c in found if c not in self.shop.returned] or found
        if not found:
            return None
        customer = str(found[int(self.rng.integers(len(found)))])
        self.used.add(customer)
        return customer

    def new_customer(self, first_activity: pd.Timestamp, fraud: bool) -> str:
        """A new account opened before `first_activity` (fraudsters' accounts are fresher, but not always)."""
        customer = self.new_id("customer")
        if self.chance(0.55):
            created = first_activity - 30 * DAY
        else:
            created = first_activity - pd.Timedelta(days=float(self.rng.exponential(5.0 if fraud else 40.0)) + 0.05)
        self.rows["customers"].append({"customer_id": customer, "created_at": created.floor("min"),
                                       "email_domain": None, "loyalty_tier": None})
        self.profiles[customer] = {"pay": self.token("pay"), "addr": self.token("addr"), "dev": self.token("dev")}
        self.cust_orders[customer] = []
        self.used.add(customer)
        return customer

    def add_order(self, customer: str, lower: pd.Timestamp, lines: _Lines, tokens: dict[str, str] | None = None,
                  lost: bool = False, domestic: float = 0.85, night: float = 0.0) -> _Order | None:
        placed = self.shop.when(self.rng, lower, night)
        if placed is None or not len(lines):
            return None
        tokens = tokens or self.profiles[customer]
        spread = self.days(1, 5) if self.chance(domestic) else self.days(3, 12)
        delivered = None if lost else placed + spread
        total = round(float((lines.price * lines.qty).sum()), 2)
        order = _Order(self.new_id("order"), customer, placed, delivered, total)
        self.rows["orders"].append({
            "order_id": order.order_id, "customer_id": customer, "placed_at": placed, "delivered_at": delivered,
            "channel": self.pick(ORDER_CHANNELS), "payment_token": tokens["pay"], "address_token": tokens["addr"],
            "device_token": tokens["dev"], "order_total": order.total, "currency": "GBP"})
        for n, (sku, category, price, qty) in enumerate(zip(lines.sku, lines.category, lines.price, lines.qty,
                                                            strict=True), start=1):
            self.rows["order_items"].append({"order_id": order.order_id, "line_no": n, "sku": sku,
                                             "category": category, "unit_price": float(price),
                                             "list_price": np.nan, "quantity": int(qty)})
        self.orders[order.order_id] = order
        self.new_lines[order.order_id] = lines
        self.cust_orders.setdefault(customer, []).append(order.order_id)
        return order

    def orders_of(self, customer: str | None, lo: pd.Timestamp, hi: pd.Timestamp) -> list[_Order]:
        """The customer's delivered orders placed in [lo, hi), oldest first."""
        found = [self.orders[o] for o in self.cust_orders.get(customer or "", [])]
        found = [o for o in found if lo <= o.placed_at < hi and o.delivered_at is not None]
        return sorted(found, key=lambda o: (o.placed_at, o.order_id))

    def lines(self, order_id: str) -> _Lines:
        return self.new_lines[order_id] if order_id in self.new_lines else self.shop.lines(order_id)

    # ---- returns
    def portion(self, order: _Order, line_share: tuple[float, float], unit_share: tuple[float, float],
                only: np.ndarray | None = None, max_units: int | None = None, dearest: bool = False) -> Portion:
        """Units and money of a share of the order's lines (all of `only` when given, or the dearest first)."""
        lines = self.lines(order.order_id)
        pool = np.arange(len(lines)) if only is None else only
        if not len(pool):
            return 0, 0.0
        n = int(np.clip(round(self.rng.uniform(*line_share) * len(pool)), 1, len(pool)))
        if dearest:
            chosen = pool[np.argsort(-lines.price[pool], kind="stable")[:n]]
        else:
            chosen = self.rng.choice(pool, size=n, replace=False)
        qty = lines.qty[chosen]
        units = np.clip(np.round(qty * self.rng.uniform(*unit_share, size=n)), 1, qty)
        if max_units is not None:
            units = np.minimum(units, self.rng.integers(1, max_units + 1, size=n))
        return int(units.sum()), round(float((units * lines.price[chosen]).sum()), 2)

    def refund(self, customer: str, weights: Mapping[str, float], shared: Mapping[str, str] | None = None) -> Refund:
        """A refund method and, for gift cards and other payments, a destination token."""
        method = self.pick(weights)
        if method not in ("gift_card", "other_payment"):
            return method, None
        if shared and method in shared:
            return method, shared[method]
        return method, self.refund_tokens.setdefault((customer, method), self.token("rfd"))

    def add_return(self, order: _Order, customer: str, lower: pd.Timestamp, kind: str, return_type: str,
                   channel: str, portion: Portion, refund: Refund, reasons: Mapping[str, float] | None = None,
                   night: float = 0.0) -> pd.Timestamp | None:
        """A return request after `lower` (and after the goods arrived, for goods); None past the end."""
        floor = order.delivered_at if return_type in GOODS_BACK and order.delivered_at is not None else order.placed_at
        requested = self.shop.when(self.rng, max(lower, floor), night)
        units, amount = portion
        if requested is None or units <= 0:
            return None
        return_id = self.new_id("return")
        self.rows["returns"].append({
            "return_id": return_id, "order_id": order.order_id, "customer_id": customer, "requested_at": requested,
            "return_type": return_type, "channel": channel,
            "reason": self.pick(reasons if reasons and return_type == "return" else REASONS[return_type]),
            "items_count": units, "refund_amount": amount, "refund_method": refund[0], "refund_token": refund[1],
            "has_receipt": True, "store_id": None})
        self.kind_of[return_id] = kind
        return requested


# ---------------------------------------------------------------- the kinds

def _account_takeover(inj: _Injector) -> None:
    crews: list[dict[str, str]] = []
    for _ in range(inj.cfg.account_takeovers):
        at = inj.anchor(120, 6)
        victim = inj.existing_customer(at, 3, 90) if at is not None else None
        if at is None or victim is None:
            continue
        if crews and inj.chance(0.3):
            crew = crews[int(inj.rng.integers(len(crews)))]
        else:
            crew = {"dev": inj.token("dev"), "addr": inj.token("addr"), "gift_card": inj.token("rfd"),
                    "other_payment": inj.token("rfd")}
            crews.append(crew)
        recent = inj.orders_of(victim, at - 75 * DAY, at)
        if recent and inj.chance(0.45):
            _ato_old_orders(inj, victim, at, crew, recent)
        else:
            _ato_new_orders(inj, victim, at, crew)


def _ato_new_orders(inj: _Injector, victim: str, at: pd.Timestamp, crew: dict[str, str]) -> None:
    own = inj.profiles[victim]
    tokens = {"dev": crew["dev"] if inj.chance(0.9) else own["dev"],
              "addr": crew["addr"] if inj.chance(0.65) else own["addr"],
              "pay": own["pay"] if inj.chance(0.55) else inj.token("pay")}
    lower = at
    for _ in range(inj.pick({1: 0.5, 2: 0.35, 3: 0.15})):
        return_type = inj.pick({"item_not_received": 0.45, "damaged_on_arrival": 0.2, "return": 0.35})
        lost = return_type == "item_not_received" and inj.chance(0.2)
        basket = inj.shop.template(inj.rng, 0.55, 0.97, int(inj.rng.integers(3, 16)))
        order = inj.add_order(victim, lower, basket, tokens, lost=lost, night=0.3)
        if order is None:
            return
        lower = order.placed_at + inj.days(0.05, 3)
        if not inj.chance(0.85):
            continue
        mail = return_type == "return" or (return_type == "damaged_on_arrival" and inj.chance(0.4))
        arrived = order.delivered_at if order.delivered_at is not None else order.placed_at + inj.days(4, 8)
        share = (1.0, 1.0) if return_type == "item_not_received" else (0.4, 1.0)
        inj.add_return(order, victim, arrived + inj.days(0.2, 5), "account_takeover", return_type,
                       "mail" if mail else "returnless", inj.portion(order, share, (0.7, 1.0)),
                       inj.refund(victim, ATO_NEW_REFUND, crew), night=0.3)


def _ato_old_orders(inj: _Injector, victim: str, at: pd.Timestamp, crew: dict[str, str],
                    recent: list[_Order]) -> None:
    chosen = np.sort(inj.rng.permutation(len(recent))[: inj.pick({1: 0.4, 2: 0.4, 3: 0.2})])
    lower = at
    for i in chosen:
        order = recent[int(i)]
        return_type = inj.pick({"return": 0.45, "wrong_item": 0.2, "damaged_on_arrival": 0.2,
                                "item_not_received": 0.15})
        returnless = return_type == "item_not_received" or inj.chance(0.6 if return_type == "damaged_on_arrival"
                                                                      else 0.2)
        requested = inj.add_return(order, victim, lower, "account_takeover", return_type,
                                   "returnless" if returnless else "mail", inj.portion(order, (0.3, 1.0), (0.5, 1.0)),
                                   inj.refund(victim, ATO_OLD_REFUND, crew), night=0.3)
        if requested is not None:
            lower = requested + inj.days(0.02, 2.5)


def _ring(inj: _Injector) -> None:
    for _ in range(inj.cfg.rings):
        start = inj.anchor(45, 50)
        if start is None:
            continue
        shared = [e for e in ("dev", "addr", "pay", "rfd") if inj.chance(0.5)]
        shared = shared or [inj.pick({"dev": 0.35, "addr": 0.3, "pay": 0.15, "rfd": 0.2})]
        hub = {e: [inj.token(e) for _ in range(inj.pick({1: 0.7, 2: 0.3}))] for e in shared}
        method = inj.pick({"gift_card": 0.55, "other_payment": 0.45})
        members = [_ring_member(inj, start) for _ in range(int(inj.rng.integers(3, 8)))]
        bought: list[_Order] = []
        for member in members:
            tokens = dict(inj.profiles[member])
            for element in shared:
                if element != "rfd" and inj.chance(0.75):
                    tokens[element] = hub[element][int(inj.rng.integers(len(hub[element])))]
            for _ in range(inj.pick({1: 0.45, 2: 0.4, 3: 0.15})):
                basket = inj.shop.template(inj.rng, 0.35, 0.95, int(inj.rng.integers(4, 21)))
                order = inj.add_order(member, start + inj.days(0, 35), basket, tokens, lost=inj.chance(0.08))
                if order is not None:
                    bought.append(order)
        _ring_claims(inj, members, bought, hub.get("rfd"), method)


def _ring_member(inj: _Injector, start: pd.Timestamp) -> str:
    if inj.chance(0.25):
        recruited = inj.existing_customer(start, 1, 30)
        if recruited is not None:
            return recruited
    if inj.chance(0.3):  # a sleeper: opened months before, with a normal order or two
        first = max(start - inj.days(60, 200), inj.shop.start)
        sleeper = inj.new_customer(first, fraud=True)
        for _ in range(inj.pick({1: 0.6, 2: 0.4})):
            inj.add_order(sleeper, first + inj.days(0, 40), inj.shop.template(inj.rng, 0.05, 0.6, 12))
        return sleeper
    return inj.new_customer(start, fraud=True)


def _ring_claims(inj: _Injector, members: list[str], bought: list[_Order], refund_tokens: list[str] | None,
                 method: str) -> None:
    for order in sorted(bought, key=lambda o: (o.placed_at, o.order_id)):
        if not inj.chance(0.8):
            continue
        if order.delivered_at is None:
            return_type = "item_not_received"
        else:
            return_type = inj.pick({"item_not_received": 0.3, "return": 0.5, "damaged_on_arrival": 0.2})
        mail = return_type == "return" or (return_type == "damaged_on_arrival" and inj.chance(0.25))
        claimant = order.customer_id if inj.chance(0.85) else members[int(inj.rng.integers(len(members)))]
        if refund_tokens and inj.chance(0.85):
            refund: Refund = (method, refund_tokens[int(inj.rng.integers(len(refund_tokens)))])
        else:
            refund = inj.refund(claimant, RING_REFUND)
        arrived = order.delivered_at if order.delivered_at is not None else order.placed_at + inj.days(5, 9)
        inj.add_return(order, claimant, arrived + inj.days(0.5, 12), "ring", return_type,
                       "mail" if mail else "returnless", inj.portion(order, (0.5, 1.0), (0.6, 1.0)), refund,
                       night=0.15)


def _wardrobing(inj: _Injector) -> None:
    for _ in range(inj.cfg.wardrobers):
        at = inj.anchor(30, 35)
        if at is None:
            continue
        customer = inj.existing_customer(at, 1, 20) if inj.chance(0.65) else None
        customer = customer or inj.new_customer(at, fraud=False)
        lower = at
        for _ in range(inj.pick({1: 0.5, 2: 0.3, 3: 0.2})):
            basket = inj.shop.basket(inj.rng, int(inj.rng.integers(2, 9)), WARDROBE_CATEGORIES)
            order = inj.add_order(customer, lower, basket)
            if order is None or order.delivered_at is None:
                break
            dearest_half = inj.chance(0.3)
            portion = inj.portion(order, (0.5, 0.5) if dearest_half else (0.8, 1.0), (0.9, 1.0), dearest=dearest_half)
            requested = inj.add_return(order, customer, order.delivered_at + inj.days(6, 28), "wardrobing", "return",
                                       "mail", portion, inj.refund(customer, WARDROBE_REFUND), WARDROBE_REASONS,
                                       night=0.05)
            if requested is None:
                break
            lower = requested + inj.days(20, 90)


def _refund_diversion(inj: _Injector) -> None:
    diverters: list[dict[str, str]] = []
    anchors = [inj.anchor(60, 5) for _ in range(inj.cfg.refund_diversions)]
    for at in sorted(a for a in anchors if a is not None):  # in time order: a diverter's account predates its use
        if not diverters or inj.chance(0.45):
            diverters.append({"own": "", "gift_card": inj.token("rfd"), "other_payment": inj.token("rfd"),
                              "mode": inj.pick({"victim": 0.55, "launder": 0.45})})
        diverter = diverters[int(inj.rng.integers(len(diverters)))]
        for _ in range(3):  # a victim without a recent delivered order: try another
            if _divert_once(inj, diverter, at):
                break


def _diverter_account(inj: _Injector, diverter: dict[str, str], at: pd.Timestamp) -> str:
    if not diverter["own"]:
        own = inj.existing_customer(at, 1, 30, clean=True) if inj.chance(0.5) else None
        diverter["own"] = own or inj.new_customer(at, fraud=True)
    return diverter["own"]


def _divert_once(inj: _Injector, diverter: dict[str, str], at: pd.Timestamp) -> int:
    if diverter["mode"] == "victim":
        victim = inj.existing_customer(at, 2, 60)
        recent = inj.orders_of(victim, at - 60 * DAY, at)
        if not recent:
            return 0
        order: _Order | None = recent[int(inj.rng.integers(len(recent)))]
        claimant = str(victim) if inj.chance(0.6) else _diverter_account(inj, diverter, at)
    else:
        claimant = _diverter_account(inj, diverter, at)
        tokens = dict(inj.profiles[claimant])
        if inj.chance(0.8):
            tokens["pay"] = inj.token("pay")
        order = inj.add_order(claimant, at, inj.shop.template(inj.rng, 0.3, 0.9, 12), tokens)
    if order is None or order.delivered_at is None:
        return 0
    third_party = claimant != order.customer_id
    weights = ({"store_credit": 0.35, "gift_card": 0.35, "other_payment": 0.3} if third_party
               else {"other_payment": 0.6, "gift_card": 0.4})
    method = inj.pick(weights)
    token = None if method == "store_credit" else (inj.token("rfd") if inj.chance(0.25) else diverter[method])
    return_type = inj.pick({"return": 0.75, "damaged_on_arrival": 0.15, "wrong_item": 0.1})
    mail = return_type != "damaged_on_arrival" or inj.chance(0.3)
    requested = inj.add_return(order, claimant, max(at, order.delivered_at) + inj.days(1, 20), "refund_diversion",
                               return_type, "mail" if mail else "returnless",
                               inj.portion(order, (0.4, 1.0), (0.5, 1.0)), (method, token), night=0.1)
    return int(requested is not None)


def _empty_box(inj: _Injector) -> None:
    for _ in range(inj.cfg.empty_box_offenders):
        at = inj.anchor(20, 12)
        if at is None:
            continue
        customer = inj.existing_customer(at, 1, 30, clean=True) if inj.chance(0.6) else None
        customer = customer or inj.new_customer(at, fraud=True)
        lower = at
        for _ in range(inj.pick({1: 0.75, 2: 0.2, 3: 0.05})):
            recent = [o for o in inj.orders_of(customer, lower - 45 * DAY, lower) if o.total >= inj.shop.median_total]
            if recent and inj.chance(0.5):
                order: _Order | None = recent[int(inj.rng.integers(len(recent)))]
            else:
                order = inj.add_order(customer, lower, inj.shop.template(inj.rng, 0.5, 0.97, 25))
            if order is None or order.delivered_at is None:
                break
            return_type = "return" if inj.chance(0.85) else "wrong_item"
            requested = inj.add_return(order, customer, max(lower, order.delivered_at) + inj.days(1, 18), "empty_box",
                                       return_type, "mail", inj.portion(order, (0.7, 1.0), (0.8, 1.0)),
                                       inj.refund(customer, BOX_REFUND), night=0.1)
            if requested is None:
                break
            lower = requested + inj.days(40, 150)


def _item_switch(inj: _Injector) -> None:
    dear = inj.shop.pricey_price
    for _ in range(inj.cfg.item_switchers):
        at = inj.anchor(20, 12)
        if at is None:
            continue
        customer = inj.existing_customer(at, 1, 30) if inj.chance(0.65) else None
        customer = customer or inj.new_customer(at, fraud=True)
        recent = [o for o in inj.orders_of(customer, at - 60 * DAY, at)
                  if (inj.lines(o.order_id).price >= dear).any()]
        if recent and inj.chance(0.5):
            order: _Order | None = recent[int(inj.rng.integers(len(recent)))]
        else:
            basket = inj.shop.template(inj.rng, 0.3, 0.85, 15).plus(
                inj.shop.basket(inj.rng, int(inj.rng.integers(1, 3)), min_price=dear))
            order = inj.add_order(customer, at, basket)
        if order is None or order.delivered_at is None:
            continue
        lines = inj.lines(order.order_id)
        if inj.chance(0.6):  # a few dear pieces swapped for cheap or counterfeit ones
            portion = inj.portion(order, (0.01, 0.6), (0.0, 0.3), only=np.flatnonzero(lines.price >= dear),
                                  max_units=3)
        else:  # a wholesale lot of one or two lines swapped for look-alikes
            value = lines.price * lines.qty
            portion = inj.portion(order, (0.01, 0.3), (0.5, 1.0), only=np.argsort(-value, kind="stable")[:3])
        return_type = "return" if inj.chance(0.8) else "damaged_on_arrival"
        inj.add_return(order, customer, max(at, order.delivered_at) + inj.days(3, 25), "item_switch", return_type,
                       "mail", portion, inj.refund(customer, SWITCH_REFUND), SWITCH_REASONS, night=0.1)


def _serial_returner(inj: _Injector) -> None:
    for _ in range(inj.cfg.serial_returners):
        persona = inj.pick(PERSONA_SHARES)
        customer = inj.existing_customer(inj.shop.end + DAY, 8, 0) if inj.chance(0.7) else None
        if customer is not None:
            orders = inj.orders_of(customer, inj.shop.start, inj.shop.end + DAY)
        else:
            customer, orders = _serial_new_account(inj)
        if not orders:
            continue
        rate = inj.rng.uniform(0.3, 0.7)
        n = min(int(inj.rng.binomial(len(orders), rate)), int(inj.rng.integers(4, 19)))
        for i in np.sort(inj.rng.choice(len(orders), size=max(n, 1), replace=False)):
            _serial_return(inj, customer, orders[int(i)], persona)


def _serial_new_account(inj: _Injector) -> tuple[str, list[_Order]]:
    start = inj.anchor(10, 60) or inj.shop.start
    customer = inj.new_customer(start, fraud=False)
    lower = start
    for _ in range(int(inj.rng.integers(4, 11))):
        order = inj.add_order(customer, lower, inj.shop.template(inj.rng, 0.05, 0.8, 25))
        if order is None:
            break
        lower = order.placed_at + inj.days(5, 40)
    return customer, inj.orders_of(customer, inj.shop.start, inj.shop.end + DAY)


def _serial_return(inj: _Injector, customer: str, order: _Order, persona: str) -> None:
    assert order.delivered_at is not None
    line_share, unit_share, delay, reasons, refund, cheap_returnless = PERSONAS[persona]
    if inj.chance(0.05):  # a parcel that really went missing
        inj.add_return(order, customer, order.delivered_at + inj.days(0.5, 6), "serial_returner",
                       "item_not_received", "returnless", inj.portion(order, (0.1, 0.5), (1.0, 1.0)),
                       inj.refund(customer, INR_REFUND), night=0.08)
        return
    return_type = "return"
    if persona == "quality" and inj.chance(0.6):
        return_type = "damaged_on_arrival"
    portion = inj.portion(order, line_share, unit_share)
    returnless = cheap_returnless and portion[1] < 20
    inj.add_return(order, customer, order.delivered_at + inj.days(*delay), "serial_returner", return_type,
                   "returnless" if returnless else "mail", portion, inj.refund(customer, refund), reasons, night=0.08)


def _legit_inr(inj: _Injector) -> None:
    for _ in range(inj.cfg.legit_inr_claims):
        at = inj.anchor(5, 10)
        if at is None:
            continue
        customer = inj.existing_customer(at, 1, 0) if inj.chance(0.8) else None
        customer = customer or inj.new_customer(at, fraud=False)
        lost = inj.chance(0.45)
        order = inj.add_order(customer, at, inj.shop.template(inj.rng, 0.05, 0.85, 20), lost=lost, domestic=0.75)
        if order is None:
            continue
        if order.delivered_at is None:
            lower = order.placed_at + inj.days(6, 21)
        else:
            lower = order.delivered_at + inj.days(0.5, 8)
        share = (1.0, 1.0) if inj.chance(0.7) else (0.1, 0.5)
        inj.add_return(order, customer, lower, "legit_inr", "item_not_received", "returnless",
                       inj.portion(order, share, (1.0, 1.0)), inj.refund(customer, INR_REFUND), night=0.05)


KIND_STEPS: tuple[tuple[str, Callable[[_Injector], None]], ...] = (
    ("account_takeover", _account_takeover), ("ring", _ring), ("wardrobing", _wardrobing),
    ("refund_diversion", _refund_diversion), ("empty_box", _empty_box), ("item_switch", _item_switch),
    ("serial_returner", _serial_returner), ("legit_inr", _legit_inr))


# ---------------------------------------------------------------- inspections and labels

def _inspections(config: ThirdInjectionConfig, returns: pd.DataFrame, kinds: pd.Series,
                 skip: set[str]) -> pd.DataFrame:
    """Warehouse checks of some goods-back mail returns (more of the dear ones); the outcome follows the kind."""
    rng = np.random.default_rng([config.seed, 101])
    goods = (returns["channel"].eq("mail") & returns["return_type"].isin(GOODS_BACK)).to_numpy()
    rows = []
    for return_id, requested, amount, kind, back in zip(returns["return_id"], returns["requested_at"],
                                                        returns["refund_amount"], kinds, goods, strict=True):
        draw = rng.random()
        if not back or return_id in skip or kind not in OUTCOMES:
            continue
        if draw >= min(config.inspection_rate * (1.6 if amount >= 100 else 1.0), 0.95):
            continue
        transit = pd.Timedelta(days=float(rng.uniform(2, 8) + rng.uniform(0.05, 4))).floor("min")
        rows.append({"return_id": return_id, "inspected_at": requested + transit,
                     "outcome": _pick(rng, OUTCOMES[kind])})
    return pd.DataFrame(rows, columns=list(COLUMNS["inspections"]))


def _label_delay(rng: np.random.Generator, source: str) -> pd.Timedelta:
    if source == "chargeback":
        days = rng.uniform(30, 90)
    elif source == "customer_service":
        days = 1 + np.exp(rng.normal(1.8, 0.7))
    else:
        days = 4 + np.exp(rng.normal(2.5, 0.6))
    return pd.Timedelta(days=float(days)).floor("min")


def _labels(config: ThirdInjectionConfig, returns: pd.DataFrame, kinds: pd.Series,
            inspections: pd.DataFrame) -> pd.DataFrame:
    """Late, incomplete and sometimes wrong labels, some corrected later."""
    rng = np.random.default_rng([config.seed, 202])
    seen = dict(zip(inspections["return_id"], zip(inspections["inspected_at"], inspections["outcome"], strict=True),
                    strict=True))
    rows: list[dict[str, Any]] = []
    for return_id, requested, kind in zip(returns["return_id"], returns["requested_at"], kinds, strict=True):
        if kind not in DESK_LABELS:
            continue
        truth = TRUTH[kind]
        label = _inspection_label(rng, seen.get(return_id)) or _desk_label(rng, config, kind, truth, requested)
        if label is None:
            continue
        rows.append({"return_id": return_id, "label": label[0], "labelled_at": label[1], "source": label[2]})
        if label[0] != truth and rng.random() < config.label_revision_rate:
            rows.append({"return_id": return_id, "label": truth, "source": "analyst",
                         "labelled_at": label[1] + pd.Timedelta(days=float(rng.uniform(7, 60))).floor("min")})
    return pd.DataFrame(rows, columns=list(COLUMNS["labels"]))


def _inspection_label(rng: np.random.Generator,
                      inspection: tuple[pd.Timestamp, str] | None) -> tuple[str, pd.Timestamp, str] | None:
    if inspection is None:
        return None
    label, p = INSPECTION_LABEL[inspection[1]]
    if rng.random() >= p:
        return None
    return label, inspection[0] + pd.Timedelta(hours=float(rng.uniform(1, 48))).floor("min"), "inspection"


def _desk_label(rng: np.random.Generator, config: ThirdInjectionConfig, kind: str, truth: str,
                requested: pd.Timestamp) -> tuple[str, pd.Timestamp, str] | None:
    factor, sources, error_factor = DESK_LABELS[kind]
    rate = (config.legit_label_rate if truth == "legit" else config.bad_label_rate) * factor
    if rng.random() >= min(rate, 0.95):
        return None
    source = _pick(rng, sources)
    label = truth
    if source != "chargeback" and rng.random() < config.label_error_rate * error_factor:  # a chargeback says fraud
        label = _pick(rng, WRONG_BY_KIND.get(kind, WRONG_LABEL[truth]))
    return label, requested + _label_delay(rng, source), source


# ---------------------------------------------------------------- reading, assembling, writing

def _conform(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The contract's columns in order, with one dtype per column (timestamps as microseconds in UTC)."""
    out = pd.DataFrame(index=frame.index)
    for column in COLUMNS[name]:
        values = frame[column] if column in frame.columns else pd.Series(None, index=frame.index, dtype=object)
        if column in TIMES:
            out[column] = pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
        elif column in INTS:
            out[column] = values.astype("int64")
        elif column in FLOATS:
            out[column] = pd.to_numeric(values).astype("float64")
        elif column in BOOLS:
            out[column] = values.astype(bool)
        else:
            out[column] = values.astype(object).where(values.notna(), None)
    return out.reset_index(drop=True)


def _read(source: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in COLUMNS:
        parquet, csv = source / f"{name}.parquet", source / f"{name}.csv"
        if parquet.exists():
            frame = pd.read_parquet(parquet)
        elif csv.exists():
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
            for column in FLOATS | INTS:
                if column in frame.columns:
                    frame[column] = pd.to_numeric(frame[column])
            if "has_receipt" in frame.columns:
                frame["has_receipt"] = frame["has_receipt"].str.lower().isin(["true", "1"])
        elif name in ("labels", "inspections"):
            frame = pd.DataFrame(columns=list(COLUMNS[name]))
        else:
            raise FileNotFoundError(f"{source}: no {name}.parquet or {name}.csv")
        tables[name] = _conform(frame, name)
    return tables


def _merge(base: pd.DataFrame, rows: list[dict[str, Any]], name: str) -> pd.DataFrame:
    if not rows:
        return base
    return pd.concat([base, _conform(pd.DataFrame(rows), name)], ignore_index=True)


def _ground_truth(source: Path, returns: pd.DataFrame, kinds: pd.Series) -> pd.DataFrame:
    truth = pd.DataFrame({"return_id": returns["return_id"], "customer_id": returns["customer_id"],
                          "truth": kinds.map(TRUTH), "typology": kinds})
    carried = source / "ground_truth.parquet"
    if carried.exists():  # a source that was itself injected keeps its own truth for its returns
        old = pd.read_parquet(carried).set_index("return_id")
        mine = truth["typology"].eq("legit") & truth["return_id"].isin(old.index)
        ids = truth.loc[mine, "return_id"]
        truth.loc[mine, "truth"] = ids.map(old["truth"]).to_numpy()
        truth.loc[mine, "typology"] = ids.map(old["typology"]).to_numpy()
    return truth.astype(object)


def inject_third(source: Path, out: Path, config: ThirdInjectionConfig = ThirdInjectionConfig()) -> dict[str, int]:
    """Inject the eight kinds into the contract dataset in `source`; write it, with ground truth, to `out`."""
    tables = _read(Path(source))
    injector = _Injector(tables, config)
    for index, (_, step) in enumerate(KIND_STEPS):
        injector.rng = np.random.default_rng([config.seed, index])
        step(injector)
    merged = {name: _merge(tables[name], injector.rows.get(name, []), name) for name in COLUMNS}
    returns = merged["returns"]
    kinds = returns["return_id"].map(injector.kind_of).fillna("legit")
    truth = _ground_truth(Path(source), returns, kinds)
    # returns whose truth came from an earlier injection get no new inspections or labels from this one
    profile = kinds.where(truth["truth"].eq("legit") | kinds.ne("legit"), "carried")
    inspections = _inspections(config, returns, profile, set(tables["inspections"]["return_id"]))
    merged["inspections"] = pd.concat([tables["inspections"], _conform(inspections, "inspections")],
                                      ignore_index=True)
    labels = _labels(config, returns, profile, merged["inspections"].iloc[len(tables["inspections"]):])
    merged["labels"] = pd.concat([tables["labels"], _conform(labels, "labels")], ignore_index=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in merged.items():
        _conform(frame, name).to_parquet(out / f"{name}.parquet", index=False)
    truth.to_parquet(out / "ground_truth.parquet", index=False)
    counts = {kind: int(kinds.eq(kind).sum()) for kind in (*KINDS, "legit")}
    counts["labels"] = len(labels)
    return counts
