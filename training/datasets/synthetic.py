"""A synthetic returns world in the data contract: honest customers, fraudsters and abusers.

Honest behaviour is vectorised (millions of rows in seconds) and calibrated on the UCI
Online Retail data (see docs/data.md): orders per customer per year are log-normal
(median 2, p90 9, p99 30), time from order to return is log-normal (median 8 days, p90
~45), about 18% of orders see a return, and the propensity to return is Beta-distributed
per customer, so a minority of honest customers return heavily. Fraud and abuse are a
few thousand actors at most, written as explicit episodes (see `fraud.py`), each typology
with its own mechanics and its own camouflage.

Everything is drawn from one numpy Generator seeded with `seed`: same config, same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_service.data.contract import TABLES
from fraud_service.errors import DatasetError
from fraud_service.progress import SILENT, Progress
from training.datasets.fraud import FraudWriter, add_fraud
from training.datasets.world import (
    CATEGORIES,
    CATEGORY_PRICE,
    CATEGORY_WEIGHTS,
    EMAIL_DOMAINS,
    HOUR_WEIGHTS,
    Frames,
    categorical,
    days,
    lognormal_days,
)
from training.datasets.writing import write_parquet, write_tables

META_FILE = "generator.json"
SKUS_PER_CATEGORY = 1500
STORES = 40


@dataclass(frozen=True)
class WorldConfig:
    """What to generate; None means the Online Retail calibrated default."""

    customers: int = 20000
    days: int = 365
    seed: int = 7
    start: str = "2025-01-01"
    orders_per_year: float | None = None
    return_rate: float | None = None
    fraud_share: float | None = None

    @property
    def opy(self) -> float:
        return 4.0 if self.orders_per_year is None else self.orders_per_year

    @property
    def rate(self) -> float:
        return 0.18 if self.return_rate is None else self.return_rate

    @property
    def fraud(self) -> float:
        return 0.03 if self.fraud_share is None else self.fraud_share

    def start_ts(self) -> pd.Timestamp:
        """The first moment, UTC: `start` is a date (midnight) or a time as YYYY-MM-DDTHH:MM:SS (naive = UTC)."""
        try:
            moment = dt.datetime.fromisoformat(self.start)  # a date alone is midnight
        except ValueError:
            raise ValueError(f"start={self.start!r}: expected a date as YYYY-MM-DD or a time as "
                             "YYYY-MM-DDTHH:MM:SS") from None
        stamp = pd.Timestamp(moment)
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

    def end_ts(self) -> pd.Timestamp:
        """The moment after the last event: `days` after the start."""
        return self.start_ts() + pd.Timedelta(days=self.days)

    @classmethod
    def ending(cls, end: dt.datetime, days: int, **options: Any) -> WorldConfig:
        """A world of DAYS days whose last moment is just before END (UTC, to the second)."""
        moment = pd.Timestamp(end).tz_convert("UTC").floor("s") - pd.Timedelta(days=days)
        return cls(days=days, start=moment.tz_localize(None).isoformat(timespec="seconds"), **options)


def generated_config(out: Path) -> WorldConfig | None:
    """The settings of the world generated in OUT, or None when OUT holds none (or its record is unreadable)."""
    try:
        stored = WorldConfig(**json.loads((out / META_FILE).read_text())["config"])
        stored.start_ts()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stored


def same_but_start(stored: WorldConfig, config: WorldConfig) -> bool:
    """True when STORED and CONFIG differ at most in when the world starts (and so ends)."""
    return asdict(replace(stored, start=config.start)) == asdict(config)


def recent_world(out: Path, config: WorldConfig, within: dt.timedelta) -> WorldConfig | None:
    """The settings of the world generated in OUT when they equal CONFIG's but for the start, and that world ended
    less than WITHIN before CONFIG's end (the demo keeps such a world rather than generating it again)."""
    stored = generated_config(out)
    if stored is None or not same_but_start(stored, config):
        return None
    return stored if config.end_ts() - within <= stored.end_ts() <= config.end_ts() else None


def is_generated(out: Path, config: WorldConfig) -> bool:
    """True when `out` already holds a complete dataset generated with exactly `config`."""
    meta = out / META_FILE
    if not meta.exists():
        return False
    try:
        return bool(json.loads(meta.read_text()).get("config") == asdict(config))
    except json.JSONDecodeError:
        return False


def generate(config: WorldConfig, out: Path, progress: Progress = SILENT) -> dict[str, object]:
    """Generate the world and write it (contract tables + ground_truth.parquet) into `out`."""
    check(config)
    rng = np.random.default_rng(config.seed)
    # the world is built in naive UTC; assemble() stamps the zone on the way out
    start = config.start_ts().tz_localize(None)
    end = config.end_ts().tz_localize(None)
    frames = Frames()
    n_fraud = int(round(config.customers * config.fraud))
    n_honest = config.customers - n_fraud
    with progress.step(f"honest customers: {n_honest:,}"):
        customers = _honest_customers(rng, n_honest, config, start, end)
        frames.add_customers(customers)
    with progress.step("honest orders and items"):
        orders, items = _honest_orders(rng, customers, config, start, end)
    if orders.empty:  # a world of a day or two: nothing to return, and the tables' SKU names had no range
        raise DatasetError(f"{config.customers:,} customers over {config.days} day(s) placed no order: give the "
                           "world more --customers, --days or --orders-per-year")
    with progress.step(f"honest returns ({len(orders):,} orders)"):
        returns, inspections, labels = _honest_returns(rng, customers, orders, items, config, end)
    first_order = frames.add_orders(orders, items)
    frames.add_returns(returns, inspections, labels, order_offset=first_order)
    with progress.step(f"fraud and abuse: {n_fraud:,} actors plus account takeovers"):
        writer = FraudWriter(rng, frames, start, end)
        add_fraud(writer, customers, orders, n_fraud)
    with progress.step("assembling tables"):
        tables, truth = frames.assemble(end)
    summary: dict[str, object] = {name: len(frame) for name, frame in tables.items()}
    counts = truth["typology"].value_counts()
    for typology, count in counts.items():
        summary[f"returns:{typology}"] = int(count)
    _publish(out, tables, truth, {"config": asdict(config), "summary": summary}, progress)
    return summary


def _publish(out: Path, tables: dict[str, pd.DataFrame], truth: pd.DataFrame, meta: dict[str, object],
             progress: Progress) -> None:
    """Write the world beside OUT, then move its files in, the meta file last: an interrupted run leaves OUT as it
    was (another world's tables were left half replaced, and ingest took the mix)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in tables:
        if (out / f"{name}.csv").exists():
            raise DatasetError(f"{out / (name + '.csv')} exists; writing {name}.parquet beside it would make the "
                               "dataset ambiguous. Choose an empty --out directory.")
    for left in out.parent.glob(f".{out.name}.partial-*"):  # a run killed before it could clean up
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_tables(tables, staging, progress)
        write_parquet(truth, staging / "ground_truth.parquet")
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        (out / META_FILE).unlink(missing_ok=True)  # from here to the last move, OUT is no finished world
        for name in [*tables, "ground_truth"]:
            os.replace(staging / f"{name}.parquet", out / f"{name}.parquet")
        for name in set(TABLES) - set(tables):  # a table this world has none of: not an older world's
            (out / f"{name}.parquet").unlink(missing_ok=True)
        os.replace(staging / META_FILE, out / META_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check(config: WorldConfig) -> None:
    """ValueError naming the first setting of CONFIG a world cannot be made with."""
    try:
        first = dt.datetime.fromisoformat(config.start)
    except ValueError:
        raise ValueError(f"start={config.start!r}: expected a date as YYYY-MM-DD or a time as "
                         "YYYY-MM-DDTHH:MM:SS") from None
    if first.year < 1678 or first.year + config.days / 365.25 > 2261:  # what the features' timestamps hold
        raise ValueError(f"start={config.start!r} and days={config.days}: a world runs within the years 1678 to "
                         "2261")
    if config.customers < 50:
        raise ValueError("customers must be at least 50 (room for every fraud typology)")
    if not 0 < config.rate < 1:
        raise ValueError(f"return_rate={config.rate}: expected a share between 0 and 1")
    if not 0 <= config.fraud < 0.5:
        raise ValueError(f"fraud_share={config.fraud}: expected a share in [0, 0.5)")
    if config.opy <= 0:
        raise ValueError(f"orders_per_year={config.opy}: expected a positive number")


def _honest_customers(rng: np.random.Generator, n: int, config: WorldConfig, start: pd.Timestamp,
                      end: pd.Timestamp) -> pd.DataFrame:
    existing = rng.random(n) < 0.55
    offset_days = np.where(existing, -rng.uniform(1, 3 * 365, n), rng.uniform(0, config.days - 1, n))
    created = start.to_datetime64().astype("datetime64[us]") + days(np.round(offset_days * 86400) / 86400)
    # orders per year: log-normal, median 2 and p90 9 on Online Retail, scaled to the configured mean
    median = 2.0 * config.opy / 4.0
    rate = np.minimum(rng.lognormal(np.log(median), 1.17, n), 200.0)
    # propensity to return an order: Beta with a heavy right tail (honest serial returners)
    # the fashion uplift, lost parcels and fraud add returns on top: aim the base below the target
    mean = config.rate * 0.8
    a = 0.5
    b = a * (1 - mean) / mean
    propensity = np.minimum(rng.beta(a, b, n), 0.95)
    tier = np.where(rate > 12, "gold", np.where(rate > 6, "silver", np.where(rate > 2.5, "bronze", None)))
    tier = np.where(rng.random(n) < 0.3, None, tier)
    customers = pd.DataFrame({
        "idx": np.arange(n),
        "created_at": created,
        "email_domain": categorical(rng, EMAIL_DOMAINS, n),
        "loyalty_tier": tier,
        "rate": rate,
        "propensity": propensity,
        "n_payments": 1 + (rng.random(n) < 0.3),
        "n_devices": 1 + (rng.random(n) < 0.4),
        "has_second_address": rng.random(n) < 0.2,
        "home_store": rng.integers(0, STORES, n),
    })
    # about 6% of customers share a household address with one other customer
    household = np.arange(n)
    pairs = rng.choice(n, size=(int(n * 0.03), 2), replace=False) if n >= 4 else np.empty((0, 2), int)
    household[pairs[:, 1]] = pairs[:, 0]
    customers["household"] = household
    return customers


def _honest_orders(rng: np.random.Generator, customers: pd.DataFrame, config: WorldConfig,
                   start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    created = customers["created_at"].to_numpy()
    active_from = np.maximum(created, start.to_datetime64().astype("datetime64[us]"))
    active_days = (end.to_datetime64().astype("datetime64[us]") - active_from) / np.timedelta64(1, "D")
    counts = rng.poisson(customers["rate"].to_numpy() * np.maximum(active_days, 0) / 365.0)
    cust = np.repeat(customers["idx"].to_numpy(), counts)
    n = len(cust)
    day = rng.random(n) * np.repeat(np.maximum(active_days, 0), counts)
    day = np.floor(day)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS)
    seconds = day * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    placed = np.repeat(active_from, counts) + days(seconds / 86400)
    channel = categorical(rng, ("web", "app", "store", "marketplace"), n, (0.55, 0.30, 0.10, 0.05))
    store = channel == "store"
    transit = lognormal_days(rng, n, median=3.0, sigma=0.4)
    delivered = placed + days(np.where(store, rng.uniform(0.02, 0.1, n), transit))
    lost = (~store) & (rng.random(n) < 0.012)
    orders = pd.DataFrame({
        "cust": cust,
        "placed_at": placed,
        "delivered_at": delivered,
        "lost": lost,
        "channel": channel,
        "payment_slot": rng.integers(0, 2, n) % np.repeat(customers["n_payments"].to_numpy(), counts),
        "device_slot": rng.integers(0, 2, n) % np.repeat(customers["n_devices"].to_numpy(), counts),
        "second_address": np.repeat(customers["has_second_address"].to_numpy(), counts) & (rng.random(n) < 0.15),
    })
    # lines per order: log-normal like Online Retail's baskets, scaled to consumer size (median 1-2)
    lines = np.minimum(np.ceil(rng.lognormal(np.log(1.4), 0.75, n)), 30).astype(int)
    items = _items(rng, np.repeat(np.arange(n), lines), lines)
    totals = np.bincount(items["order"], weights=items["unit_price"] * items["quantity"], minlength=n)
    shipping = np.where((totals < 50) & ~store, 4.95, 0.0)
    orders["order_total"] = np.round(totals + shipping, 2)
    return orders, items


def _items(rng: np.random.Generator, order: np.ndarray, lines: np.ndarray,
           categories: tuple[str, ...] | None = None) -> pd.DataFrame:
    n = len(order)
    line_no = np.arange(n) - np.repeat(np.cumsum(lines) - lines, lines) + 1
    if categories is None:
        cat = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_WEIGHTS)
    else:
        cat = rng.choice([CATEGORIES.index(c) for c in categories], size=n)
    median = np.array([CATEGORY_PRICE[c][0] for c in CATEGORIES])[cat]
    sigma = np.array([CATEGORY_PRICE[c][1] for c in CATEGORIES])[cat]
    list_price = np.round(rng.lognormal(np.log(median), sigma), 2) + 0.99
    discount = np.where(rng.random(n) < 0.3, rng.uniform(0.1, 0.5, n), 0.0)
    unit = np.round(list_price * (1 - discount), 2)
    quantity = np.where(rng.random(n) < 0.85, 1, rng.integers(2, 4, n))
    return pd.DataFrame({
        "order": order,
        "line_no": line_no,
        "cat": cat,
        "sku_no": rng.integers(0, SKUS_PER_CATEGORY, n),
        "unit_price": unit,
        "list_price": np.where(discount > 0, list_price, np.nan),
        "quantity": quantity,
    })


def _honest_returns(rng: np.random.Generator, customers: pd.DataFrame, orders: pd.DataFrame,
                    items: pd.DataFrame, config: WorldConfig,
                    end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(orders)
    propensity = customers["propensity"].to_numpy()[orders["cust"].to_numpy()]
    fashion = np.bincount(items["order"], weights=np.isin(items["cat"], [0, 1]).astype(float), minlength=n) > 0
    chance = np.minimum(propensity * np.where(fashion, 1.25, 0.8), 0.95)
    lost = orders["lost"].to_numpy()
    returned = (rng.random(n) < chance) | (lost & (rng.random(n) < 0.85))
    idx = np.flatnonzero(returned)
    m = len(idx)
    placed = orders["placed_at"].to_numpy()[idx]
    delivered = orders["delivered_at"].to_numpy()[idx]
    is_lost = lost[idx]
    store_order = orders["channel"].to_numpy()[idx] == "store"

    kind = categorical(rng, ("return", "damaged_on_arrival", "wrong_item", "item_not_received"), m,
                       (0.93, 0.04, 0.025, 0.005))
    kind = np.where(is_lost, "item_not_received", kind)
    # time from order to request: log-normal fitted on Online Retail (median 8 days, p90 ~50)
    after_order = lognormal_days(rng, m, median=7.0, sigma=1.7)
    requested = placed + days(after_order)
    not_before = delivered + days(rng.uniform(0.1, 2.0, m))
    requested = np.maximum(requested, not_before)
    inr_wait = placed + days(rng.uniform(7, 25, m))
    requested = np.where(kind == "item_not_received", np.where(is_lost, inr_wait, not_before), requested)

    channel = np.where(store_order, categorical(rng, ("store", "mail"), m, (0.8, 0.2)),
                       categorical(rng, ("mail", "store", "returnless"), m, (0.77, 0.18, 0.05)))
    channel = np.where(np.isin(kind, ["damaged_on_arrival", "wrong_item"]),
                       categorical(rng, ("mail", "returnless"), m, (0.7, 0.3)), channel)
    channel = np.where(kind == "item_not_received", "returnless", channel)
    ret = pd.DataFrame({
        "order": idx,
        "cust": orders["cust"].to_numpy()[idx],
        "requested_at": requested,
        "return_type": kind,
        "channel": channel,
        "fashion": fashion[idx],
    })
    ret = ret[ret["requested_at"] < end.to_datetime64()].reset_index(drop=True)
    ret = _claimed_lines(rng, ret, items)
    m = len(ret)
    ret["reason"] = _reasons(rng, ret)
    ret["refund_method"] = categorical(rng, ("original_payment", "store_credit", "gift_card", "other_payment"), m,
                                       (0.84, 0.10, 0.05, 0.01))
    ret["own_refund_token"] = True
    ret["has_receipt"] = np.where(ret["channel"] == "store",
                                  np.where(store_order_of(ret, orders), rng.random(m) < 0.92, True), True)
    ret["truth"] = "legit"
    ret["typology"] = np.where(ret["return_type"] == "item_not_received", "honest_inr", "legit")
    inspections = _honest_inspections(rng, ret, end)
    labels = _honest_labels(rng, ret, inspections, customers, end)
    return ret, inspections, labels


def store_order_of(ret: pd.DataFrame, orders: pd.DataFrame) -> np.ndarray:
    """Whether each return's order was bought in a store."""
    return np.asarray(orders["channel"].to_numpy()[ret["order"].to_numpy()] == "store")


def _claimed_lines(rng: np.random.Generator, ret: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Pick which lines of each returned order are claimed; sets items_count and refund_amount."""
    starts = np.searchsorted(items["order"].to_numpy(), ret["order"].to_numpy(), side="left")
    ends = np.searchsorted(items["order"].to_numpy(), ret["order"].to_numpy(), side="right")
    lines = ends - starts
    row = np.repeat(np.arange(len(ret)), lines)
    pos = np.arange(lines.sum()) - np.repeat(np.cumsum(lines) - lines, lines) + np.repeat(starts, lines)
    whole = np.repeat(ret["return_type"].isin(["item_not_received"]).to_numpy(), lines)
    take = whole | (rng.random(len(pos)) < 0.6)
    first = np.zeros(len(pos), bool)
    first[np.cumsum(lines) - lines] = True
    take |= first & ~np.repeat(np.bincount(row, weights=take, minlength=len(ret)) > 0, lines)
    quantity = items["quantity"].to_numpy()[pos] * take
    value = items["unit_price"].to_numpy()[pos] * quantity
    ret["items_count"] = np.bincount(row, weights=quantity, minlength=len(ret)).astype(int)
    ret["refund_amount"] = np.round(np.bincount(row, weights=value, minlength=len(ret)), 2)
    ret["top_category"] = items["cat"].to_numpy()[starts]
    return ret


def _reasons(rng: np.random.Generator, ret: pd.DataFrame) -> np.ndarray:
    m = len(ret)
    fashion = categorical(rng, ("size", "changed_mind", "not_as_described", "defective", "late_delivery"), m,
                          (0.45, 0.25, 0.15, 0.10, 0.05))
    other = categorical(rng, ("changed_mind", "defective", "not_as_described", "size", "late_delivery"), m,
                        (0.40, 0.25, 0.25, 0.05, 0.05))
    reason = np.where(ret["fashion"].to_numpy(), fashion, other)
    kind = ret["return_type"].to_numpy()
    reason = np.where(kind == "damaged_on_arrival", "damaged", reason)
    reason = np.where(kind == "wrong_item", "wrong_item_sent", reason)
    return np.where(kind == "item_not_received", "not_received", reason)


def _honest_inspections(rng: np.random.Generator, ret: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    goods_back = (ret["channel"] != "returnless") & (ret["return_type"] != "item_not_received")
    inspected = goods_back & (rng.random(len(ret)) < 0.8)
    sub = ret[inspected]
    k = len(sub)
    delay = np.where(sub["channel"] == "store", rng.uniform(0.01, 1, k), rng.uniform(3, 10, k))
    outcome = categorical(rng, ("ok", "damaged", "worn", "missing_parts", "wrong_item", "empty_box"), k,
                          (0.848, 0.06, 0.04, 0.03, 0.02, 0.002))
    outcome = np.where((sub["return_type"] == "damaged_on_arrival") & (rng.random(k) < 0.7), "damaged", outcome)
    frame = pd.DataFrame({
        "ret": sub.index.to_numpy(),
        "inspected_at": sub["requested_at"].to_numpy() + days(delay),
        "outcome": outcome,
    })
    return frame[frame["inspected_at"] < end.to_datetime64()].reset_index(drop=True)


def _honest_labels(rng: np.random.Generator, ret: pd.DataFrame, inspections: pd.DataFrame,
                   customers: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    m = len(ret)
    labelled = rng.random(m) < 0.08
    heavy = customers["propensity"].to_numpy()[ret["cust"].to_numpy()] > 0.5
    # honest heavy returners are sometimes wrongly called abusers; a few honest returns, fraud
    wrong = np.where(heavy, rng.random(m) < 0.06, rng.random(m) < 0.004)
    label = np.where(wrong, np.where(rng.random(m) < 0.8, "abuse", "fraud"), "legit")
    labelled |= wrong & (rng.random(m) < 0.9)
    delay = rng.uniform(2, 21, m)
    frame = pd.DataFrame({
        "ret": np.arange(m),
        "label": label,
        "labelled_at": ret["requested_at"].to_numpy() + days(delay),
        "source": categorical(rng, ("customer_service", "analyst", "inspection"), m, (0.5, 0.3, 0.2)),
    })[labelled]
    return frame[frame["labelled_at"] < end.to_datetime64()].reset_index(drop=True)

