"""What an analyst needs beside the case: each customer's return history and the accounts linked to the case.

Read from the warehouse's current snapshot (DuckDB over its parquet files) and from the evidence
database's analysts' labels, so a label given a minute ago shows before the next `labels sync`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy.orm import Session

from fraud_service.cases import service as cases
from fraud_service.cases.records import CaseDetail
from fraud_service.data.labels import latest_logged
from fraud_service.data.warehouse import Snapshot, Warehouse
from fraud_service.store.chain import utc_text
from fraud_service.store.uow import UnitOfWork


@dataclass(frozen=True)
class PastReturn:
    """One of a customer's returns, with its latest label (the warehouse's or an analyst's) and inspection."""

    return_id: str
    requested_at: str
    return_type: str
    channel: str
    reason: str
    refund_amount: float
    refund_method: str
    label: dict[str, str] | None
    inspection: str | None


@dataclass(frozen=True)
class CustomerHistory:
    """A customer's account, order count and returns, newest first (at most HISTORY_LIMIT of them)."""

    customer_id: str
    created_at: str | None = None
    orders: int = 0
    returns: list[PastReturn] = field(default_factory=list)
    returns_total: int = 0
    refund_total: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "created_at": self.created_at, "orders": self.orders,
                "returns": [asdict(r) for r in self.returns], "returns_total": self.returns_total,
                "refund_total": self.refund_total}


@dataclass(frozen=True)
class LinkedAccount:
    """A customer sharing one of a case's tokens: which, and their own returns, refunds and bad labels."""

    customer_id: str
    shared: list[str]
    returns: int = 0
    refund_total: float = 0.0
    inr_claims: int = 0
    bad_labels: int = 0


TOKEN_COLUMNS = {"address": ("orders", "address_token"), "payment": ("orders", "payment_token"),
                 "device": ("orders", "device_token"), "refund": ("returns", "refund_token")}
HISTORY_LIMIT = 200


def history(snapshot: Snapshot | None, session: Session, customer_id: str,
            limit: int = HISTORY_LIMIT) -> CustomerHistory:
    """The customer's account, order count and returns (newest first) with their latest label and inspection."""
    out: dict[str, Any] = {"customer_id": customer_id, "created_at": None, "orders": 0, "returns": [],
                           "returns_total": 0, "refund_total": 0.0}
    if snapshot is None or snapshot.table_path("returns") is None:
        return CustomerHistory(customer_id)
    out["created_at"], out["orders"], rows = _cached(("history", snapshot.identity, customer_id, limit),
                                                     lambda: _stored_history(snapshot, customer_id, limit))
    analysts = latest_logged(session, [r[0] for r in rows])
    for r in rows:
        label = {"label": r[7], "labelled_at": utc_text(r[8]), "source": "warehouse"} if r[7] else None
        if r[0] in analysts and (label is None or analysts[r[0]]["labelled_at"] >= label["labelled_at"]):
            label = analysts[r[0]]
        out["returns"].append(PastReturn(r[0], utc_text(r[1]), r[2], r[3], r[4], float(r[5]), r[6], label, r[9]))
        out["returns_total"], out["refund_total"] = int(r[10]), float(r[11])
    return CustomerHistory(**out)


def _stored_history(snapshot: Snapshot, customer_id: str, limit: int) -> tuple[str | None, int, list[Any]]:
    """What the warehouse snapshot says of a customer: account creation, order count, newest returns."""
    created, orders_count = None, 0
    con = duckdb.connect(config={"threads": 1})  # a page's query should not take both cores from scoring
    try:
        customers = snapshot.table_path("customers")
        if customers is not None:
            row = con.execute(f"SELECT created_at FROM read_parquet('{customers}') WHERE customer_id = ?",
                              [customer_id]).fetchone()
            created = utc_text(row[0]) if row and row[0] is not None else None
        orders = snapshot.table_path("orders")
        if orders is not None:
            orders_count = con.execute(f"SELECT count(*) FROM read_parquet('{orders}') WHERE customer_id = ?",
                                        [customer_id]).fetchone()[0]  # type: ignore[index]
        labels, inspections = snapshot.table_path("labels"), snapshot.table_path("inspections")
        label_join = (f"LEFT JOIN (SELECT return_id, arg_max(label, labelled_at) AS label, max(labelled_at) AS "
                      f"labelled_at FROM read_parquet('{labels}') GROUP BY return_id) l USING (return_id)"
                      if labels else "")
        inspection_join = (f"LEFT JOIN (SELECT return_id, arg_max(outcome, inspected_at) AS outcome "
                           f"FROM read_parquet('{inspections}') GROUP BY return_id) i USING (return_id)"
                           if inspections else "")
        label_cols = "l.label, l.labelled_at" if labels else "NULL, NULL"
        inspection_col = "i.outcome" if inspections else "NULL"
        rows = con.execute(
            f"SELECT r.return_id, r.requested_at, r.return_type, r.channel, r.reason, r.refund_amount, "
            f"r.refund_method, {label_cols}, {inspection_col}, count(*) OVER (), sum(r.refund_amount) OVER () "
            f"FROM read_parquet('{snapshot.table_path('returns')}') r {label_join} {inspection_join} "
            f"WHERE r.customer_id = ? ORDER BY r.requested_at DESC, r.return_id LIMIT {int(limit)}",
            [customer_id]).fetchall()
    finally:
        con.close()
    return created, int(orders_count), rows


_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_ENTRIES = 2048
"""Warehouse answers kept per worker. A snapshot never changes, so what it says of a customer or a token is kept
(keyed by the snapshot's identity: its path and fingerprint) and case pages do not scan the warehouse on every
load; labels analysts give since come from the evidence database on every load."""


def _cached(key: tuple[Any, ...], compute: Any) -> Any:
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = compute()
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return value


def linked_accounts(snapshot: Snapshot | None, links: Sequence[tuple[str, str]],
                    limit_per_token: int = 50) -> list[LinkedAccount]:
    """Customers who share one of the case's tokens (address, payment, device, refund destination), with the
    tokens they share and their own return counts, refunds and fraud/abuse labels."""
    if snapshot is None or snapshot.table_path("returns") is None or snapshot.table_path("orders") is None:
        return []
    key = ("linked", snapshot.identity, tuple(links), limit_per_token)
    return list(_cached(key, lambda: _stored_links(snapshot, links, limit_per_token)))


def _stored_links(snapshot: Snapshot, links: Sequence[tuple[str, str]], limit_per_token: int) -> list[LinkedAccount]:
    returns, orders, labels = (snapshot.table_path(t) for t in ("returns", "orders", "labels"))
    found: dict[str, dict[str, Any]] = {}
    con = duckdb.connect(config={"threads": 1})  # a page's query should not take both cores from scoring
    try:
        for entity, value in links:
            if entity not in TOKEN_COLUMNS:
                continue
            table, column = TOKEN_COLUMNS[entity]
            path = orders if table == "orders" else returns
            rows = con.execute(f"SELECT DISTINCT customer_id FROM read_parquet('{path}') WHERE {column} = ? "
                               f"ORDER BY customer_id LIMIT {int(limit_per_token)}", [value]).fetchall()
            for (customer,) in rows:
                found.setdefault(customer, {"customer_id": customer, "shared": []})["shared"].append(
                    f"{entity}:{value}")
        if not found:
            return []
        ids = sorted(found)
        bad = ("count(*) FILTER (WHERE l.label IN ('fraud', 'abuse'))" if labels else "0")
        label_join = (f"LEFT JOIN (SELECT return_id, arg_max(label, labelled_at) AS label "
                      f"FROM read_parquet('{labels}') GROUP BY return_id) l USING (return_id)" if labels else "")
        stats = con.execute(
            f"SELECT r.customer_id, count(*), sum(r.refund_amount), "
            f"count(*) FILTER (WHERE r.return_type = 'item_not_received'), {bad} "
            f"FROM read_parquet('{returns}') r {label_join} WHERE r.customer_id IN (SELECT unnest(?)) "
            f"GROUP BY r.customer_id", [ids]).fetchall()
    finally:
        con.close()
    for customer, n, refunds, inr, bad_labels in stats:
        found[customer].update(returns=int(n), refund_total=float(refunds or 0), inr_claims=int(inr),
                               bad_labels=int(bad_labels))
    out = [LinkedAccount(**v) for v in found.values()]
    return sorted(out, key=lambda v: (-len(v.shared), -v.bad_labels, v.customer_id))


@dataclass(frozen=True)
class CaseContext:
    """A case with each of its customers' histories and the accounts linked to it: the case page and bundle."""

    detail: CaseDetail
    histories: list[CustomerHistory]
    linked_accounts: list[LinkedAccount]

    def to_dict(self) -> dict[str, Any]:
        return {**self.detail.to_dict(), "histories": [h.to_dict() for h in self.histories],
                "linked_accounts": [asdict(a) for a in self.linked_accounts]}


def context(session: Session, snapshot: Snapshot | None, detail: CaseDetail) -> CaseContext:
    """DETAIL with its customers' histories and linked accounts, in a transaction the caller holds."""
    histories = [history(snapshot, session, c) for c in detail.customers()]
    return CaseContext(detail, histories, linked_accounts(snapshot, detail.links))


def case_context(uow: UnitOfWork, *, case_id: str, warehouse_dir: Path, now: dt.datetime | None = None,
                 offset: int = 0) -> CaseContext:
    """Everything the case page shows about CASE_ID, with a page of its assessments (cases.PAGE from OFFSET)."""
    snapshot = Warehouse(warehouse_dir).current()
    with one_at_a_time(warehouse_dir), uow.read():
        detail = cases.detail(uow.session, case_id, now or dt.datetime.now(dt.UTC), offset=offset, limit=cases.PAGE)
        return context(uow.session, snapshot, detail)


@contextlib.contextmanager
def one_at_a_time(warehouse_dir: Path) -> Iterator[None]:
    """Case pages (and bundles) are built one at a time on this host, whichever worker serves them: analysts
    opening the largest cases over and over take at most one core, and wait their turn instead. (A lock file
    beside the warehouse; its holder's work is bounded by the service's statement timeouts. `serve` also gives
    analysts a worker of their own at a lower CPU priority: api/gunicorn_worker.py.)"""
    warehouse_dir.parent.mkdir(parents=True, exist_ok=True)  # the home; a page view never makes a warehouse
    with open(warehouse_dir.parent / "case-pages.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
