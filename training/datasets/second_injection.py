"""A second, independent injector: the kinds a returns team meets, by mechanics nobody tuned a model on.

Written on 2026-12-03 before any model, feature or setting was measured on its output (issue 18):
its results are a proxy for data the project never sees only as long as no choice is tuned to it.
It shares nothing with the generator (`fraud.py`) or the first injector (`injection.py`) but the
contract. It takes a contract dataset of real shopping histories (the Online Retail import) and adds:

- `account_takeover`: an old account (at least 5 orders, 180 days) is taken over. Within a day a new
  device and a new address place one to three orders on the stored card, each two to five times the
  owner's typical order; most are claimed not received or damaged days after delivery, refunded to a
  gift card the owner never used.
- `ring`: four to seven accounts opened within three weeks share two addresses and a device; each
  buys one to three orders of the shop's dearer goods and sends them back "defective", and the
  warehouse finds the boxes empty or parts missing.
- `wardrobing` (abuse): customers who start buying and sending back nearly the whole order 18 to 29
  days after delivery ("changed_mind" or "not_as_described"); the warehouse finds a third worn.
- `refund_diversion`: ordinary-looking partial returns refunded to `other_payment` tokens that did not
  pay for the order, each token shared by the two to four accounts of a group.
- `empty_box`: one-off, on an account with a quiet history: an order well above the customer's usual,
  sent back whole by mail ("defective" or "not_as_described"); the box arrives empty.
- `item_switch`: the dearest line (price times quantity) of a multi-line order is sent back
  ("defective"); a cheaper or different item arrives (`wrong_item`).

and two kinds of honest returns that look risky:

- `serial_returner`: bracket buyers who send back a third to two thirds of most orders within two
  weeks ("size"); inspections pass, and customer service labels some legit.
- `honest_inr`: real parcels lost in the post, claimed once, refunded to the card.

Labels arrive late (a lognormal around 25 days, clipped to one to 120 days; 70% of failed inspections
also label their return two hours after the inspection), for about half the bad returns, and are
sometimes wrong: a few bad ones end up `legit`, a few honest ones `abuse`. The true
kind of every return is in `ground_truth.parquet` (`truth`: fraud, abuse or legit; `typology`: the
kind, `legit` for untouched returns), which ingest ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FRAUD_KINDS = ("account_takeover", "ring", "refund_diversion", "empty_box", "item_switch")
ABUSE_KINDS = ("wardrobing",)
LEGIT_KINDS = ("serial_returner", "honest_inr")
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class SecondInjectionConfig:
    seed: int = 7
    takeovers: float = 0.03  # share of eligible old accounts taken over
    rings: int = 6
    wardrobers: float = 0.015
    diverters: int = 24
    empty_boxes: float = 0.03
    item_switches: float = 0.03
    serial_returners: float = 0.03
    honest_inr: float = 0.02
    label_share: float = 0.5


class _World:
    """The tables being added to, with fresh ids."""

    def __init__(self, tables: dict[str, pd.DataFrame], rng: np.random.Generator) -> None:
        self.rng = rng
        self.customers = tables["customers"]
        self.orders = tables["orders"].copy()
        for column in ("placed_at", "delivered_at"):
            self.orders[column] = pd.to_datetime(self.orders[column], utc=True)
        self.items = tables["order_items"]
        self.returns = tables["returns"].copy()
        self.returns["requested_at"] = pd.to_datetime(self.returns["requested_at"], utc=True)
        self.end = max(self.orders["placed_at"].max(), self.returns["requested_at"].max())
        self.start = self.orders["placed_at"].min()
        self.returned = set(self.returns["order_id"])
        self.new_customers: list[dict[str, Any]] = []
        self.new_orders: list[dict[str, Any]] = []
        self.new_items: list[dict[str, Any]] = []
        self.new_returns: list[dict[str, Any]] = []
        self.inspections: list[dict[str, Any]] = []
        self.kind: dict[str, str] = {}
        self.counter = 0
        self.by_customer = {c: g.sort_values("placed_at") for c, g in
                            self.orders[self.orders["delivered_at"].notna()].groupby("customer_id")}
        lines = self.items.sort_values("unit_price")
        self.dear = lines[lines["unit_price"] >= lines["unit_price"].quantile(0.9)]
        self.lines_of = dict(tuple(self.items.groupby("order_id")))
        units = self.items.groupby("order_id")["quantity"].sum()
        self.units: dict[str, int] = {str(k): int(v) for k, v in units.items()}

    def uid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:07d}"

    def token(self, kind: str) -> str:
        return f"{kind}_{self.uid('i2')}"

    def order(self, customer: str, placed: pd.Timestamp, lines: pd.DataFrame, *, payment: str, address: str | None,
              device: str | None, scale: float = 1.0) -> dict[str, Any] | None:
        """A new delivered order of LINES (prices times SCALE), or None when it would be delivered after the end."""
        delivered = placed + DAY * float(self.rng.uniform(1.5, 5))
        if delivered >= self.end:
            return None
        order_id = self.uid("O2")
        total = 0.0
        for line_no, (_, line) in enumerate(lines.iterrows(), start=1):
            price = round(float(line["unit_price"]) * scale, 2)
            quantity = int(line["quantity"])
            total += price * quantity
            self.new_items.append({"order_id": order_id, "line_no": line_no, "sku": line["sku"],
                                   "category": line["category"], "unit_price": price,
                                   "list_price": price, "quantity": quantity})
        self.units[order_id] = int(lines["quantity"].sum())
        row = {"order_id": order_id, "customer_id": customer, "placed_at": placed, "delivered_at": delivered,
               "channel": "web", "payment_token": payment, "address_token": address, "device_token": device,
               "order_total": round(total, 2), "currency": "GBP"}
        self.new_orders.append(row)
        return row

    def claim(self, order: dict[str, Any] | pd.Series, customer: str, after_days: float, kind: str, *,
              return_type: str = "return", channel: str = "mail", reason: str = "defective",
              share: float = 1.0, items: int | None = None, method: str = "original_payment",
              token: str | None = None, outcome: str | None = None) -> str | None:
        """A return of ORDER AFTER_DAYS after delivery, of SHARE of its value, with an inspection OUTCOME."""
        requested = pd.Timestamp(order["delivered_at"]) + DAY * float(after_days)
        if requested >= self.end or order["order_id"] in self.returned:
            return None
        return_id = self.uid("R2")
        units = items if items is not None else self.units.get(str(order["order_id"]), 1)
        self.new_returns.append({
            "return_id": return_id, "order_id": order["order_id"], "customer_id": customer,
            "requested_at": requested, "return_type": return_type, "channel": channel, "reason": reason,
            "items_count": max(1, int(units)),
            "refund_amount": max(0.01, round(float(order["order_total"]) * share, 2)),
            "refund_method": method, "refund_token": token, "has_receipt": True, "store_id": None})
        self.returned.add(order["order_id"])
        self.kind[return_id] = kind
        if outcome is not None and channel == "mail":
            inspected = requested + DAY * float(self.rng.uniform(4, 12))
            if inspected < self.end:
                self.inspections.append({"return_id": return_id, "inspected_at": inspected, "outcome": outcome})
        return return_id

    def moment(self, earliest: pd.Timestamp, latest: pd.Timestamp | None = None) -> pd.Timestamp:
        latest = self.end - 10 * DAY if latest is None else latest
        span = max((latest - earliest).total_seconds(), 3600.0)
        return earliest + pd.Timedelta(seconds=float(self.rng.uniform(0, span)))


def inject_second(source: Path, out: Path, config: SecondInjectionConfig = SecondInjectionConfig()) -> dict[str, int]:
    """Read the contract dataset in SOURCE, add the kinds above with labels and inspections, write it to OUT;
    returns the count of returns by kind (and of labels). A source's own labels, inspections and ground truth
    (a generated world's) are kept, and only the injected returns get new labels."""
    rng = np.random.default_rng(config.seed)
    tables = {name: pd.read_parquet(source / f"{name}.parquet")
              for name in ("customers", "orders", "order_items", "returns", "labels", "inspections", "ground_truth")
              if (source / f"{name}.parquet").exists()}
    w = _World(tables, rng)
    counts = w.orders.groupby("customer_id").size()
    used = set()  # a customer plays one part at most

    def pick(pool: np.ndarray, share: float | int) -> list[str]:
        pool = np.array([c for c in pool if c not in used])
        n = min(len(pool), int(share if isinstance(share, int) else round(len(pool) * share)))
        chosen = [str(c) for c in rng.choice(pool, n, replace=False)] if n else []
        used.update(chosen)
        return chosen

    created = pd.to_datetime(w.customers.set_index("customer_id")["created_at"], utc=True)
    old = counts[counts >= 5].index
    old = np.array([c for c in old if c in w.by_customer and created.get(c, w.end) < w.end - 240 * DAY])
    for customer in pick(old, config.takeovers):
        _takeover(w, customer, created[customer])
    for _ in range(config.rings):
        _ring(w)
    active = counts[counts >= 4].index.to_numpy()
    active = np.array([c for c in active if c in w.by_customer])
    for customer in pick(active, config.wardrobers):
        _wardrobe(w, customer)
    diverters = pick(active, config.diverters)
    for group in np.array_split(np.array(diverters), max(1, len(diverters) // 3)):
        _divert(w, [str(c) for c in group])
    quiet = np.array([c for c in counts[counts >= 3].index if c in w.by_customer])
    for customer in pick(quiet, config.empty_boxes):
        _empty_box(w, customer)
    for customer in pick(quiet, config.item_switches):
        _item_switch(w, customer)
    for customer in pick(active, config.serial_returners):
        _serial(w, customer)
    for customer in pick(np.array([c for c in counts.index if c in w.by_customer]), config.honest_inr):
        _honest_inr(w, customer)
    return _write(w, tables, out, config)


def _takeover(w: _World, customer: str, created: pd.Timestamp) -> None:
    own = w.by_customer[customer]
    start = max(own["placed_at"].iloc[min(4, len(own) - 1)], created + 180 * DAY, w.start + 150 * DAY)
    when = w.moment(start)
    before = own[own["placed_at"] < when]
    if before.empty:
        return
    stored = str(before["payment_token"].iloc[-1])  # the card the owner last paid with before the takeover
    device, address, card = w.token("dev"), w.token("addr"), w.token("gc")
    typical = float(own["order_total"].median())
    for _ in range(int(w.rng.integers(1, 4))):
        lines = w.lines_of.get(str(own.sample(1, random_state=int(w.rng.integers(1 << 30)))["order_id"].iloc[0]))
        if lines is None:
            continue
        scale = float(w.rng.uniform(2, 5)) * typical / max(float((lines["unit_price"] * lines["quantity"]).sum()), 1.0)
        order = w.order(customer, when + DAY * float(w.rng.uniform(0.02, 1.0)), lines,
                        payment=stored, address=address, device=device,
                        scale=max(scale, 1.0))
        if order is None:
            continue
        if w.rng.random() < 0.8:
            inr = w.rng.random() < 0.6
            w.claim(order, customer, float(w.rng.uniform(1, 6)), "account_takeover",
                    return_type="item_not_received" if inr else "damaged_on_arrival",
                    channel="returnless", reason="not_received" if inr else "damaged", method="gift_card",
                    token=card)
        when = when + DAY * float(w.rng.uniform(0.5, 4))


def _ring(w: _World) -> None:
    opened = w.moment(w.start + 60 * DAY, w.end - 60 * DAY)
    addresses = [w.token("addr") for _ in range(2)]
    device = w.token("dev")
    for _ in range(int(w.rng.integers(4, 8))):
        customer = w.uid("CR")
        since = opened + DAY * float(w.rng.uniform(0, 21))
        w.new_customers.append({"customer_id": customer, "created_at": since, "email_domain": "free-mail",
                                "loyalty_tier": None})
        card = w.token("pay")
        when = since + DAY * float(w.rng.uniform(0.1, 5))
        for _ in range(int(w.rng.integers(1, 4))):
            lines = w.dear.sample(int(w.rng.integers(1, 3)), random_state=int(w.rng.integers(1 << 30)))
            order = w.order(customer, when, lines, payment=card, address=str(w.rng.choice(addresses)), device=device)
            if order is None:
                break
            w.claim(order, customer, float(w.rng.uniform(2, 12)), "ring", reason="defective",
                    outcome="empty_box" if w.rng.random() < 0.6 else "missing_parts")
            when = when + DAY * float(w.rng.uniform(3, 20))


def _wardrobe(w: _World, customer: str) -> None:
    own = w.by_customer[customer]
    turn = int(w.rng.integers(len(own) // 3, len(own)))
    for _, order in own.iloc[turn:].iterrows():
        if w.rng.random() < 0.75:
            w.claim(order, customer, float(w.rng.uniform(18, 29)), "wardrobing",
                    reason=str(w.rng.choice(["changed_mind", "not_as_described"])),
                    share=float(w.rng.uniform(0.85, 1.0)), outcome="worn" if w.rng.random() < 0.33 else "ok")


def _divert(w: _World, group: list[str]) -> None:
    token = w.token("op")
    for customer in group:
        own = w.by_customer[customer]
        later = own[own["placed_at"] > w.start + 60 * DAY]
        if later.empty:
            continue
        for _, order in later.sample(min(len(later), int(w.rng.integers(1, 4))),
                                     random_state=int(w.rng.integers(1 << 30))).iterrows():
            w.claim(order, customer, float(w.rng.uniform(3, 15)), "refund_diversion",
                    reason=str(w.rng.choice(["size", "changed_mind", "defective"])),
                    share=float(w.rng.uniform(0.3, 0.7)), method="other_payment", token=token, outcome="ok")


def _empty_box(w: _World, customer: str) -> None:
    own = w.by_customer[customer]
    lines = w.dear.sample(int(w.rng.integers(1, 4)), random_state=int(w.rng.integers(1 << 30)))
    last = own.iloc[-1]
    order = w.order(customer, w.moment(max(last["placed_at"], w.start + 90 * DAY)), lines,
                    payment=str(last["payment_token"]), address=last["address_token"], device=last["device_token"],
                    scale=float(w.rng.uniform(1.5, 3)))
    if order is not None:
        w.claim(order, customer, float(w.rng.uniform(2, 14)), "empty_box",
                reason=str(w.rng.choice(["defective", "not_as_described"])), outcome="empty_box")


def _item_switch(w: _World, customer: str) -> None:
    own = w.by_customer[customer]
    multi = [o for o in own["order_id"] if o in w.lines_of and len(w.lines_of[o]) >= 2]
    if not multi:
        return
    order = own[own["order_id"] == str(w.rng.choice(multi))].iloc[0]
    lines = w.lines_of[order["order_id"]]
    dearest = lines.loc[(lines["unit_price"] * lines["quantity"]).idxmax()]
    share = min(1.0, float(dearest["unit_price"] * dearest["quantity"]) / max(float(order["order_total"]), 0.01))
    w.claim(order, customer, float(w.rng.uniform(3, 20)), "item_switch", reason="defective", share=share,
            items=int(dearest["quantity"]), outcome="wrong_item")


def _serial(w: _World, customer: str) -> None:
    own = w.by_customer[customer]
    for _, order in own.iloc[len(own) // 4:].iterrows():
        if w.rng.random() < 0.7:
            w.claim(order, customer, float(w.rng.uniform(1, 14)), "serial_returner", reason="size",
                    share=float(w.rng.uniform(0.33, 0.67)), outcome="ok")


def _honest_inr(w: _World, customer: str) -> None:
    own = w.by_customer[customer]
    order = own.iloc[int(w.rng.integers(len(own)))]
    w.claim(order, customer, float(w.rng.uniform(3, 12)), "honest_inr", return_type="item_not_received",
            channel="returnless", reason="not_received")


def _write(w: _World, tables: dict[str, pd.DataFrame], out: Path, config: SecondInjectionConfig) -> dict[str, int]:
    customers = pd.concat([tables["customers"], pd.DataFrame(w.new_customers)], ignore_index=True)
    customers["created_at"] = pd.to_datetime(customers["created_at"], utc=True).astype("datetime64[us, UTC]")
    orders = pd.concat([w.orders, pd.DataFrame(w.new_orders)], ignore_index=True)
    for column in ("placed_at", "delivered_at"):
        orders[column] = pd.to_datetime(orders[column], utc=True).astype("datetime64[us, UTC]")
    items = pd.concat([tables["order_items"], pd.DataFrame(w.new_items)], ignore_index=True)
    returns = pd.concat([w.returns, pd.DataFrame(w.new_returns)], ignore_index=True)
    returns["requested_at"] = pd.to_datetime(returns["requested_at"], utc=True).astype("datetime64[us, UTC]")
    injected = returns["return_id"].isin(w.kind).to_numpy()
    kind = returns["return_id"].map(w.kind)
    truth = pd.Series(np.where(kind.isin(FRAUD_KINDS), "fraud", np.where(kind.isin(ABUSE_KINDS), "abuse", "legit")))
    if "ground_truth" in tables:  # a generated source: its own returns keep their kind and truth
        known = tables["ground_truth"].set_index("return_id")
        kind = kind.fillna(returns["return_id"].map(known["typology"]))
        truth = truth.where(injected, returns["return_id"].map(known["truth"]).fillna("legit").to_numpy())
    kind = kind.fillna("legit")
    added = pd.DataFrame(w.inspections, columns=["return_id", "inspected_at", "outcome"])
    added["inspected_at"] = pd.to_datetime(added["inspected_at"], utc=True).astype("datetime64[us, UTC]")
    # a source with labels of its own keeps them, and only the injected returns get new ones
    labels = _labels(w.rng, returns, truth, kind, added, w.end, config,
                     injected | ("labels" not in tables))
    inspections = added
    if "inspections" in tables:
        inspections = pd.concat([tables["inspections"][["return_id", "inspected_at", "outcome"]], added],
                                ignore_index=True)
    if "labels" in tables:
        labels = pd.concat([tables["labels"][["return_id", "label", "labelled_at", "source"]], labels],
                           ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    customers.to_parquet(out / "customers.parquet", index=False)
    orders.to_parquet(out / "orders.parquet", index=False)
    items.to_parquet(out / "order_items.parquet", index=False)
    returns.to_parquet(out / "returns.parquet", index=False)
    labels.to_parquet(out / "labels.parquet", index=False)
    inspections.to_parquet(out / "inspections.parquet", index=False)
    pd.DataFrame({"return_id": returns["return_id"], "customer_id": returns["customer_id"], "truth": truth,
                  "typology": kind}).to_parquet(out / "ground_truth.parquet", index=False)
    summary = {str(k): int(v) for k, v in kind.value_counts().items()}
    summary["labels"] = len(labels)
    return summary


def _labels(rng: np.random.Generator, returns: pd.DataFrame, truth: pd.Series, kind: pd.Series,
            inspections: pd.DataFrame, end: pd.Timestamp, config: SecondInjectionConfig,
            eligible: np.ndarray) -> pd.DataFrame:
    """Late, partial and sometimes wrong labels for the ELIGIBLE returns; a failed inspection labels its return soon
    after."""
    n = len(returns)
    bad = (truth != "legit").to_numpy() & eligible
    requested = returns["requested_at"].reset_index(drop=True)
    label = pd.Series(truth.to_numpy(), dtype=object).copy()  # wrong labels must not rewrite the truth
    known = bad & (rng.random(n) < config.label_share)
    flipped = known & (rng.random(n) < 0.05)  # investigated and wrongly cleared
    label[flipped] = "legit"
    serial = (kind == "serial_returner").to_numpy()
    chance = np.where(serial, 0.25, np.where((kind == "honest_inr").to_numpy(), 0.3, 0.04))
    honest = eligible & ~bad & (rng.random(n) < chance)
    wrong = honest & (rng.random(n) < 0.05)  # an honest return called abuse
    label[wrong] = "abuse"
    delay = np.where(known, np.exp(rng.normal(np.log(25), 0.7, n)), rng.uniform(2, 30, n))
    labelled_at = requested + pd.to_timedelta(np.clip(delay, 1, 120), unit="D")
    source = np.where(known, rng.choice(["chargeback", "analyst", "customer_service"], n, p=[0.4, 0.4, 0.2]),
                      "customer_service")
    frame = pd.DataFrame({"return_id": returns["return_id"].to_numpy(), "label": label.to_numpy(),
                          "labelled_at": labelled_at, "source": source})[known | honest]
    failed = inspections[inspections["outcome"] != "ok"].merge(
        pd.DataFrame({"return_id": returns["return_id"], "truth": truth.to_numpy()}), on="return_id")
    failed = failed[rng.random(len(failed)) < 0.7]
    found = pd.DataFrame({"return_id": failed["return_id"], "label": failed["truth"],
                          "labelled_at": failed["inspected_at"] + pd.Timedelta(hours=2), "source": "inspection"})
    frame = pd.concat([frame, found], ignore_index=True)
    frame["labelled_at"] = pd.to_datetime(frame["labelled_at"], utc=True).astype("datetime64[us, UTC]")
    return frame[frame["labelled_at"] <= end].reset_index(drop=True)
