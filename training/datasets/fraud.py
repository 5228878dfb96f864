"""Fraud and abuse typologies of the synthetic world, each with its own mechanics and camouflage.

Typologies (ground-truth name, truth):
- `ring` (fraud): bursts of new accounts that share some, not all, addresses, payment
  instruments, devices and refund destinations; high-value orders, then item-not-received
  claims or empty-box returns refunded to the ring's gift cards / other payment tokens.
- `empty_box`, `item_switch` (fraud): a mail return of an expensive item; the box comes
  back empty or with a cheaper item, which only the inspection days later shows.
- `wardrobing` (abuse): apparel, shoes and jewellery bought and returned late in the
  window, again and again; inspections sometimes find them worn.
- `fake_inr` (fraud): delivered orders claimed as not received within days, returnless;
  some of these actors share drop addresses.
- `refund_diversion` (fraud): ordinary-looking returns whose refund goes to gift cards or
  other payment tokens that many unrelated accounts use.
- `account_takeover` (fraud): an established honest account suddenly ordering on a new
  device to a new address, then claiming a large returnless refund to a new destination.
Each actor also behaves normally some of the time (camouflage orders, ordinary returns),
labels come late or never, and a share of labels is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from training.datasets.world import (
    CATEGORIES,
    CATEGORY_PRICE,
    EMAIL_DOMAINS,
    HOUR_WEIGHTS,
    NO_TOKEN,
    Frames,
)

TYPOLOGY_SHARES = {
    "ring": 0.30,
    "empty_box": 0.15,
    "wardrobing": 0.20,
    "fake_inr": 0.15,
    "refund_diversion": 0.20,
}
MISLABEL_RATE = 0.05


@dataclass
class _Tokens:
    payment: int
    address: int
    device: int
    refund: int = NO_TOKEN


@dataclass
class FraudWriter:
    """Writes fraud episodes as explicit rows, then hands them to Frames in one go."""

    rng: np.random.Generator
    frames: Frames
    start: pd.Timestamp
    end: pd.Timestamp
    customers: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    returns: list[dict] = field(default_factory=list)
    inspections: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    tokens: dict[int, _Tokens] = field(default_factory=dict)
    _next_token: int = 2 * 10**9

    # --- building blocks -------------------------------------------------------------------
    def new_token(self) -> int:
        """A fresh token key, never used by an honest customer."""
        self._next_token += 1
        return self._next_token

    def new_customer(self, created_at: pd.Timestamp, free_mail: bool = True) -> int:
        """A new account; returns its customer handle."""
        idx = self.frames.n_customers + len(self.customers)
        domains = EMAIL_DOMAINS[:7] if free_mail else EMAIL_DOMAINS
        self.customers.append({
            "idx": idx,
            "created_at": created_at,
            "email_domain": self.rng.choice(domains),
            "loyalty_tier": None if self.rng.random() < 0.8 else "bronze",
            "home_store": int(self.rng.integers(0, 40)),
        })
        self.tokens[idx] = _Tokens(self.new_token(), self.new_token(), self.new_token())
        return idx

    def time(self, low: pd.Timestamp, high: pd.Timestamp, night: bool = False) -> pd.Timestamp:
        """A moment between low and high, at a plausible (or, with night, a late) hour."""
        span = max((high - low).total_seconds(), 3600.0)
        day = pd.Timestamp(low + pd.Timedelta(seconds=float(self.rng.uniform(0, span)))).floor("D")
        hour = int(self.rng.integers(0, 5)) if night else int(self.rng.choice(24, p=HOUR_WEIGHTS))
        t = day + pd.Timedelta(hours=hour, seconds=int(self.rng.integers(0, 3600)))
        return max(t, low)

    def order(self, cust: int, at: pd.Timestamp, categories: tuple[str, ...], lines: int = 1,
              price_scale: float = 1.0, channel: str = "web", payment: int | None = None,
              address: int | None = None, device: int | None = None, lost: bool = False) -> int:
        """One order with `lines` items from `categories`; returns its local handle."""
        own = self.tokens.get(cust) or self._honest_tokens(cust)
        handle = len(self.orders)
        total = 0.0
        for line in range(1, lines + 1):
            cat = str(self.rng.choice(categories))
            median, sigma = CATEGORY_PRICE[cat]
            price = round(float(self.rng.lognormal(np.log(median * price_scale), sigma * 0.6)) + 0.99, 2)
            self.items.append({"order": handle, "line_no": line, "cat": CATEGORIES.index(cat),
                               "sku_no": int(self.rng.integers(0, 1500)), "unit_price": price,
                               "list_price": np.nan, "quantity": 1})
            total += price
        transit = float(np.clip(self.rng.lognormal(np.log(3.0), 0.4), 0.5, 20))
        self.orders.append({
            "cust": cust,
            "placed_at": at,
            "delivered_at": at + pd.Timedelta(days=transit),
            "lost": lost,
            "channel": channel,
            "payment_key": own.payment if payment is None else payment,
            "address_key": own.address if address is None else address,
            "device_key": own.device if device is None else device,
            "order_total": round(total + (4.95 if total < 50 else 0.0), 2),
        })
        return handle

    def _honest_tokens(self, cust: int) -> _Tokens:
        home = int(self.frames.home_address(np.array([cust]))[0])
        return _Tokens(cust * 2, home, cust * 2)

    def delivered(self, order: int) -> pd.Timestamp:
        return pd.Timestamp(self.orders[order]["delivered_at"])

    def claim(self, order: int, at: pd.Timestamp, return_type: str, channel: str, reason: str,
              truth: str, typology: str, actor: str, refund_method: str = "original_payment",
              refund_key: int = NO_TOKEN, share: float = 1.0) -> int | None:
        """A return request on the whole order (or the first `share` of its value); None if after the end."""
        if at >= self.end:
            return None
        lines = self._order_items(order)
        amount = round(sum(i["unit_price"] * i["quantity"] for i in lines) * share, 2)
        handle = len(self.returns)
        self.returns.append({
            "order": order,
            "cust": self.orders[order]["cust"],
            "requested_at": at,
            "return_type": return_type,
            "channel": channel,
            "reason": reason,
            "items_count": sum(i["quantity"] for i in lines),
            "refund_amount": amount,
            "refund_method": refund_method,
            "refund_key": refund_key,
            "has_receipt": True,
            "truth": truth,
            "typology": typology,
            "actor": actor,
        })
        return handle

    def _order_items(self, order: int) -> list[dict]:
        # items are appended order by order, so the lines of an order are contiguous at the end
        out = []
        for item in reversed(self.items):
            if item["order"] == order:
                out.append(item)
            elif out:
                break
        return out

    def inspect(self, ret: int, after_days: tuple[float, float], outcome: str) -> pd.Timestamp:
        """Record the warehouse inspection of a return; returns its time."""
        at = self.returns[ret]["requested_at"] + pd.Timedelta(days=float(self.rng.uniform(*after_days)))
        self.inspections.append({"ret": ret, "inspected_at": at, "outcome": outcome})
        return at

    def label(self, ret: int, truth: str, chance: float, after: pd.Timestamp,
              delay_days: tuple[float, float], sources: tuple[str, ...]) -> None:
        """With probability `chance`, a (late, occasionally wrong) label."""
        if self.rng.random() >= chance:
            return
        label = "legit" if self.rng.random() < MISLABEL_RATE else truth
        at = after + pd.Timedelta(days=float(self.rng.uniform(*delay_days)))
        self.labels.append({"ret": ret, "label": label, "labelled_at": at,
                            "source": str(self.rng.choice(sources))})

    def camouflage(self, cust: int, low: pd.Timestamp, high: pd.Timestamp, n: int, actor: str) -> None:
        """Ordinary orders, some returned in an ordinary way."""
        for _ in range(n):
            at = self.time(low, high)
            if at >= self.end:
                continue
            order = self.order(cust, at, ("apparel", "home", "beauty", "toys"),
                               lines=int(self.rng.integers(1, 3)))
            if self.rng.random() < 0.25:
                when = self.delivered(order) + pd.Timedelta(days=float(self.rng.lognormal(np.log(6), 0.8)))
                ret = self.claim(order, when, "return", "mail", str(self.rng.choice(["size", "changed_mind"])),
                                 "legit", "legit", actor, share=0.5)
                if ret is not None and self.rng.random() < 0.7:
                    self.inspect(ret, (3, 9), "ok")

    # --- hand over ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Add everything written so far to the frames."""
        if self.customers:
            customers = pd.DataFrame(self.customers)
            customers["created_at"] = _naive(customers["created_at"])
            self.frames.add_customer_rows(customers)
        if not self.orders:
            return
        orders = pd.DataFrame(self.orders)
        for col in ("placed_at", "delivered_at"):
            orders[col] = _naive(orders[col])
        first = self.frames.add_orders(orders, pd.DataFrame(self.items))
        if not self.returns:  # a tiny world whose fraudsters' orders all come after its end: nothing claimed
            return
        returns = pd.DataFrame(self.returns)
        returns["requested_at"] = _naive(returns["requested_at"])
        inspections = pd.DataFrame(self.inspections, columns=["ret", "inspected_at", "outcome"])
        inspections["inspected_at"] = _naive(inspections["inspected_at"])
        labels = pd.DataFrame(self.labels, columns=["ret", "label", "labelled_at", "source"])
        labels["labelled_at"] = _naive(labels["labelled_at"])
        self.frames.add_returns(returns, inspections, labels, order_offset=first)


def _naive(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).astype("datetime64[us]")


# --- typologies ------------------------------------------------------------------------------

def add_fraud(w: FraudWriter, honest: pd.DataFrame, honest_orders: pd.DataFrame, n_actors: int) -> None:
    """Write `n_actors` fraudsters and abusers, plus account takeovers of established honest customers."""
    counts = {name: int(n_actors * share) for name, share in TYPOLOGY_SHARES.items()}
    counts["ring"] += n_actors - sum(counts.values())
    _rings(w, counts["ring"])
    for i in range(counts["empty_box"]):
        _empty_box(w, f"empty_box-{i}")
    for i in range(counts["wardrobing"]):
        _wardrobing(w, f"wardrobing-{i}")
    drops = [w.new_token() for _ in range(max(2, counts["fake_inr"] // 6))]
    for i in range(counts["fake_inr"]):
        _fake_inr(w, f"fake_inr-{i}", drops)
    _refund_diversion(w, counts["refund_diversion"])
    _account_takeovers(w, honest, honest_orders, max(3, int(round(n_actors * 0.15))))
    w.flush()


def _window(w: FraudWriter, min_days: float = 30) -> tuple[pd.Timestamp, pd.Timestamp]:
    span = max((w.end - w.start).days - min_days, 1)
    t0 = w.start + pd.Timedelta(days=float(w.rng.uniform(0, span)))
    return t0, min(t0 + pd.Timedelta(days=float(w.rng.uniform(30, 120))), w.end)


def _rings(w: FraudWriter, members_total: int) -> None:
    ring_no = 0
    left = members_total
    while left > 0:
        size = int(min(left, w.rng.integers(3, 13)))
        left -= size
        ring_no += 1
        actor = f"ring-{ring_no}"
        t0, t1 = _window(w, 45)
        pool = {k: [w.new_token() for _ in range(2)] for k in ("address", "payment", "device")}
        refunds = [w.new_token() for _ in range(int(w.rng.integers(1, 3)))]
        for _ in range(size):
            cust = w.new_customer(t0 + pd.Timedelta(days=float(w.rng.uniform(0, 10))))
            created = pd.Timestamp(w.customers[-1]["created_at"])
            shared = {k: w.rng.random() < p for k, p in (("address", 0.6), ("payment", 0.5), ("device", 0.6))}
            if not any(shared.values()):
                shared[str(w.rng.choice(list(shared)))] = True
            tok = {k: (int(w.rng.choice(pool[k])) if shared[k] else None) for k in pool}
            if w.rng.random() < 0.4:
                w.camouflage(cust, created, created + pd.Timedelta(days=10), 1, actor)
            for _ in range(int(w.rng.integers(1, 4))):
                at = w.time(created + pd.Timedelta(days=1), t1, night=w.rng.random() < 0.3)
                if at >= w.end:
                    continue
                order = w.order(cust, at, ("electronics", "jewellery", "shoes"), lines=int(w.rng.integers(1, 3)),
                                price_scale=1.6, channel=str(w.rng.choice(["web", "app"])),
                                payment=tok["payment"], address=tok["address"], device=tok["device"])
                divert = w.rng.random() < 0.6
                method = str(w.rng.choice(["gift_card", "other_payment"])) if divert else "original_payment"
                refund = int(w.rng.choice(refunds)) if divert else NO_TOKEN
                if w.rng.random() < 0.5:
                    when = w.delivered(order) + pd.Timedelta(days=float(w.rng.uniform(0.5, 4)))
                    ret = w.claim(order, when, "item_not_received", "returnless", "not_received", "fraud", "ring",
                                  actor, method, refund)
                    if ret is not None:
                        w.label(ret, "fraud", 0.6, when, (20, 60), ("chargeback", "analyst"))
                else:
                    when = w.delivered(order) + pd.Timedelta(days=float(w.rng.uniform(1, 12)))
                    ret = w.claim(order, when, "return", "mail", str(w.rng.choice(["defective", "changed_mind"])),
                                  "fraud", "ring", actor, method, refund)
                    if ret is not None:
                        seen = w.inspect(ret, (3, 10), str(w.rng.choice(["empty_box", "wrong_item"])))
                        w.label(ret, "fraud", 0.75, seen, (0, 3), ("inspection", "analyst"))


def _new_actor(w: FraudWriter, actor: str, camouflage: tuple[int, int]) -> tuple[int, pd.Timestamp]:
    """An account, old or new, with some ordinary activity; returns it and when it can start."""
    if w.rng.random() < 0.5:
        created = w.start - pd.Timedelta(days=float(w.rng.uniform(30, 700)))
    else:
        created = w.start + pd.Timedelta(days=float(w.rng.uniform(0, max((w.end - w.start).days - 40, 1))))
    cust = w.new_customer(created, free_mail=w.rng.random() < 0.9)
    low = max(created, w.start)
    w.camouflage(cust, low, w.end, int(w.rng.integers(*camouflage)), actor)
    return cust, low


def _episodes(w: FraudWriter, low: pd.Timestamp, count: tuple[int, int]) -> Iterator[pd.Timestamp]:
    """Between count[0] and count[1]-1 moments from `low` on, skipping those past the end."""
    for _ in range(int(w.rng.integers(*count))):
        at = w.time(low, w.end)
        if at < w.end:
            yield at


def _empty_box(w: FraudWriter, actor: str) -> None:
    cust, low = _new_actor(w, actor, (1, 6))
    for at in _episodes(w, low, (1, 5)):
        order = w.order(cust, at, ("electronics", "jewellery", "shoes", "apparel"), price_scale=2.0)
        when = w.delivered(order) + pd.Timedelta(days=float(w.rng.lognormal(np.log(6), 0.6)))
        switch = w.rng.random() < 0.45
        typology = "item_switch" if switch else "empty_box"
        reason = str(w.rng.choice(["defective", "changed_mind", "not_as_described"]))
        ret = w.claim(order, when, "return", "mail", reason, "fraud", typology, actor)
        if ret is None:
            continue
        outcome = "wrong_item" if switch else ("empty_box" if w.rng.random() < 0.85 else "missing_parts")
        if w.rng.random() < 0.9:
            seen = w.inspect(ret, (3, 10), outcome)
            w.label(ret, "fraud", 0.85, seen, (0, 3), ("inspection",))
        else:
            w.label(ret, "fraud", 0.3, when, (20, 50), ("analyst",))


def _wardrobing(w: FraudWriter, actor: str) -> None:
    cust, low = _new_actor(w, actor, (0, 3))
    for at in _episodes(w, low, (4, 14)):
        order = w.order(cust, at, ("apparel", "shoes", "jewellery"), lines=int(w.rng.integers(1, 4)),
                        price_scale=1.8)
        if w.rng.random() > 0.8:
            continue
        # worn for an occasion, then sent back near the end of a 30-day window
        when = w.delivered(order) + pd.Timedelta(days=float(w.rng.uniform(10, 29)))
        ret = w.claim(order, when, "return", str(w.rng.choice(["mail", "store"], p=[0.8, 0.2])),
                      str(w.rng.choice(["size", "changed_mind", "not_as_described"])), "abuse", "wardrobing", actor)
        if ret is None:
            continue
        if w.rng.random() < 0.8:
            seen = w.inspect(ret, (1, 8), "worn" if w.rng.random() < 0.4 else "ok")
            w.label(ret, "abuse", 0.5, seen, (2, 30), ("analyst", "customer_service"))


def _fake_inr(w: FraudWriter, actor: str, drops: list[int]) -> None:
    cust, low = _new_actor(w, actor, (1, 4))
    address = int(w.rng.choice(drops)) if w.rng.random() < 0.3 else None
    for at in _episodes(w, low, (2, 7)):
        order = w.order(cust, at, ("electronics", "beauty", "shoes", "apparel"), lines=int(w.rng.integers(1, 3)),
                        price_scale=1.4, address=address)
        when = w.delivered(order) + pd.Timedelta(days=float(w.rng.uniform(0.2, 3)))
        ret = w.claim(order, when, "item_not_received", "returnless", "not_received", "fraud", "fake_inr", actor,
                      str(w.rng.choice(["original_payment", "store_credit"], p=[0.8, 0.2])))
        if ret is not None:
            w.label(ret, "fraud", 0.6, when, (20, 60), ("chargeback", "analyst", "customer_service"))


def _refund_diversion(w: FraudWriter, n: int) -> None:
    # a few destinations, each collecting refunds of several unrelated accounts
    destinations = [w.new_token() for _ in range(max(1, n // 5))]
    for i in range(n):
        actor = f"refund_diversion-{i}"
        cust, low = _new_actor(w, actor, (1, 4))
        for at in _episodes(w, low, (2, 6)):
            order = w.order(cust, at, ("electronics", "home", "apparel", "jewellery"), lines=int(w.rng.integers(1, 3)),
                            price_scale=1.5)
            when = w.delivered(order) + pd.Timedelta(days=float(w.rng.lognormal(np.log(7), 0.6)))
            ret = w.claim(order, when, str(w.rng.choice(["return", "damaged_on_arrival"], p=[0.7, 0.3])),
                          str(w.rng.choice(["mail", "returnless"], p=[0.7, 0.3])),
                          str(w.rng.choice(["defective", "changed_mind", "damaged"])), "fraud", "refund_diversion",
                          actor, str(w.rng.choice(["gift_card", "other_payment"])), int(w.rng.choice(destinations)))
            if ret is None:
                continue
            if w.returns[ret]["channel"] == "mail" and w.rng.random() < 0.7:
                w.inspect(ret, (3, 10), "ok" if w.rng.random() < 0.7 else "missing_parts")
            w.label(ret, "fraud", 0.5, when, (10, 45), ("analyst",))


def _account_takeovers(w: FraudWriter, honest: pd.DataFrame, honest_orders: pd.DataFrame, n: int) -> None:
    # a victim is an established account: created before the history starts, with two orders
    # already placed when the attacker takes it over
    placed = honest_orders[["cust", "placed_at"]].sort_values("placed_at")
    second = placed.groupby("cust")["placed_at"].nth(1)
    second = pd.Series(second.to_numpy(), index=placed.loc[second.index, "cust"].to_numpy())
    old = honest.loc[honest["created_at"] < w.start, "idx"].to_numpy()
    latest = w.end - pd.Timedelta(days=20)
    second = second[second.index.isin(old) & (second < latest)]
    if second.empty:
        return
    victims = w.rng.choice(second.index.to_numpy(), size=min(n, len(second)), replace=False)
    attacker_addresses = [w.new_token() for _ in range(max(2, n // 4))]
    attacker_refunds = [w.new_token() for _ in range(max(2, n // 4))]
    for i, victim in enumerate(victims):
        actor = f"account_takeover-{i}"
        t0 = w.time(pd.Timestamp(second[victim]) + pd.Timedelta(days=1), latest)
        t1 = min(t0 + pd.Timedelta(days=30), w.end)
        device = w.new_token()
        address = int(w.rng.choice(attacker_addresses))
        for _ in range(int(w.rng.integers(1, 3))):
            at = w.time(t0, min(t0 + pd.Timedelta(days=5), t1), night=w.rng.random() < 0.5)
            if at >= w.end:
                continue
            order = w.order(int(victim), at, ("electronics", "jewellery"), lines=int(w.rng.integers(1, 3)),
                            price_scale=2.5, channel="web", address=address, device=device)
            when = w.delivered(order) + pd.Timedelta(days=float(w.rng.uniform(0.5, 5)))
            ret = w.claim(order, when, str(w.rng.choice(["item_not_received", "damaged_on_arrival"], p=[0.7, 0.3])),
                          "returnless", str(w.rng.choice(["not_received", "damaged"])), "fraud", "account_takeover",
                          actor, str(w.rng.choice(["other_payment", "gift_card"])), int(w.rng.choice(attacker_refunds)))
            if ret is not None:
                w.label(ret, "fraud", 0.7, when, (15, 60), ("chargeback",))
