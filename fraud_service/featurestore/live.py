"""Freshness: a return assessed now counts at once for its customer and linked tokens, online.

When a return is assessed, its facts (the return; its order too, when the order is new to
the store) are appended to a small log, $FRAUD_HOME/features/live.db (SQLite, WAL; or
PostgreSQL where instances run on several hosts: `featurestore.live_log`), one row per fact
and entity. The online reader (`OnlineFeatures.live`) reads the request's entities' facts
from that log with one indexed query and adds their contributions, windowed at the request's
own time, to the materialised rows. Writing a fact is one insert: nothing is rewritten,
however many facts an entity already has.

The rule that keeps training equal to serving: a live fact has exactly the timestamp and the
contribution the same return gets in the offline rows once it is ingested (requested_at +
1 microsecond, the same columns). After a build has taken a return in and materialisation
has published it, `prune` drops its live facts, so it is never counted twice.

Inspections: when the warehouse reports that a returned item failed inspection, `record_inspection`
counts it at once for the return's customer and its tokens (`*_bad_inspections`), and a passed one
for the customer (`cust_passed_inspections*`), with the timestamp the offline rows give it
(inspected_at + 1 microsecond). A return often reaches the
warehouse before its inspection does, so an inspection's facts are pruned only once the built
snapshot holds that inspection itself, not merely its return.

Known gap: `cust_median_days_to_return_365d` is not a sum and ignores live facts until the
next build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.pipeline import BAD_OUTCOMES, ENTITIES
from fraud_service.featurestore.live_log import WRITE_WAIT_S, open_live_log
from fraud_service.featurestore.online import OnlineFeatures, Pending
from fraud_service.featurestore.source import FeatureSource

if TYPE_CHECKING:
    from fraud_service.feedback.inspections import InspectedReturn


@dataclass(frozen=True)
class AssessedReturn:
    """What an assessment knows of a return and its order (contract field names)."""

    return_id: str
    order_id: str
    customer_id: str
    requested_at: dt.datetime
    return_type: str
    channel: str
    reason: str
    refund_amount: float
    refund_method: str
    refund_token: str | None
    has_receipt: bool
    placed_at: dt.datetime
    order_total: float
    address_token: str | None
    payment_token: str | None
    device_token: str | None
    order_is_new: bool = False


def _us(moment: dt.datetime) -> int:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000) + 1  # known one microsecond after it happened


class LiveFacts:
    """The log of assessed-but-not-yet-ingested facts, which the online reader reads directly."""

    def __init__(self, source: FeatureSource, reader: OnlineFeatures | None = None) -> None:
        self.source = source
        self.reader = reader or source.reader()
        self.db = open_live_log(source.live_log, WRITE_WAIT_S)
        # the connection is shared by the threads that record (the freshness writer, request threads reporting an
        # inspection, a prune): a transaction is the connection's, so one thread's BEGIN inside another's failed
        # ("cannot start a transaction within a transaction") and its facts were lost
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time (this object's lock, then the log's write transaction), all or nothing."""
        with self._lock, self.db.writing():
            yield

    def close(self) -> None:
        """Close the log's connection (a PostgreSQL log opens it again if used after)."""
        with self._lock:
            self.db.close()

    def record(self, r: AssessedReturn) -> None:
        """Count `r` (and its order when new) for its customer and tokens, online, now. Idempotent per return."""
        self.record_many([r])

    def record_many(self, returns: Iterable[AssessedReturn]) -> None:
        """`record` for several returns in one transaction (on PostgreSQL, one per `PostgresLog.batch` returns).

        A new order is counted once whichever return (in whichever process) records it first: `live_orders`
        holds the orders the log counts, claimed in the same transaction as their facts. What the batch needs to know
        of the log (which of its new orders are counted already; who counts as new on its tokens) is read with a
        statement or two for the whole batch, and its rows written with one statement per table: a few round trips
        per batch to a PostgreSQL log, not a few per return. The batch's returns are taken in order, each seeing the
        ones before it, as if recorded one by one.
        """
        returns = list(returns)
        step = self.db.batch or max(len(returns), 1)
        for start in range(0, len(returns), step):  # one transaction per part when the log bounds them
            self._record_part(returns[start:start + step])

    def _record_part(self, returns: list[AssessedReturn]) -> None:
        new_orders = sorted({r.order_id for r in returns if r.order_is_new})
        with self._writing():
            # what is read here is then written: writers on other hosts wait for the same tokens and orders
            self.db.hold([(name, token) for r in returns for name, token in _tokens(r).items() if token]
                         + [("order", order) for order in new_orders])
            claimed = self._logged_orders(new_orders)
            counted = self._counted_new([(name, token, r.customer_id) for r in returns
                                         for name, token in _tokens(r).items() if token])
            claims: list[tuple[str, str]] = []
            rows: list[tuple[Any, ...]] = []
            for r in returns:
                is_new = partial(_is_new, self.reader, counted, r)
                rows += self._return_facts(r, is_new)
                if r.order_is_new and r.order_id not in claimed:
                    claimed.add(r.order_id)
                    claims.append((r.order_id, r.return_id))
                    rows += order_facts(r, is_new)
            self.db.executemany("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", claims)
            self.db.executemany("INSERT OR IGNORE INTO live_facts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _logged_orders(self, orders: list[str]) -> set[str]:
        """Which of ORDERS the log counts already."""
        found: set[str] = set()
        for part in _chunks(orders, 500):
            marks = ", ".join("?" * len(part))
            found.update(row[0] for row in self.db.execute(
                f"SELECT order_id FROM live_orders WHERE order_id IN ({marks})", part))
        return found

    def _counted_new(self, triples: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], set[str]]:
        """Per (entity, token, customer) of TRIPLES, the returns whose facts in the log count the customer as new on
        the token (`online.SEEN_LIVE`, for many at once)."""
        counted: dict[tuple[str, str, str], set[str]] = {}
        for part in _chunks(sorted(set(triples)), 250):
            values = ", ".join(["(?, ?, ?)"] * len(part))
            for entity, key, customer, return_id in self.db.execute(
                    f"SELECT entity, key, customer_id, return_id FROM live_facts WHERE (entity, key, customer_id) IN "
                    f"(VALUES {values}) AND json_extract(contributions, '$.n_new_customer') = 1",
                    [v for triple in part for v in triple]):
                counted.setdefault((entity, key, customer), set()).add(return_id)
        return counted

    def record_inspection(self, fact: InspectedReturn) -> None:
        """Count an inspection online, now: a failed one for the return's customer and its tokens
        (`*_bad_inspections`), a passed one (`ok`) for the customer (`cust_passed_inspections*`); any other
        outcome (`damaged`: harmed in transit) counts nowhere.

        Idempotent per inspection (return and inspected_at): the warehouse may report one twice, while a
        return inspected again later counts again, as it does offline.
        """
        failed, passed = fact.outcome in BAD_OUTCOMES, fact.outcome == "ok"
        if not failed and not passed:
            return
        at = _us(fact.inspected_at)
        kind = f"inspection:{at - 1}"
        contributions = json.dumps({"n_bad_inspection": int(failed), "n_ok_inspection": int(passed)})
        keys = {"customer": fact.customer_id, "address": fact.address_token, "payment": fact.payment_token,
                "device": fact.device_token, "refund": fact.refund_token}
        rows = [(fact.return_id, kind, entity, key, fact.customer_id, at, contributions)
                for entity, key in keys.items() if key and (failed or entity == "customer")]
        with self._writing():
            self.db.executemany("INSERT OR IGNORE INTO live_facts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def prune(self, covered: Iterable[str]) -> int:
        """Forget every live fact (return, order and inspections) of these returns."""
        return self._delete(covered, (), every_fact=True)

    def prune_ingested(self, until: dt.datetime) -> int:
        """Prune the live facts the built snapshot holds, up to `until`.

        A return's (and its order's) facts go once the snapshot holds the return, requested by `until`; an
        inspection's facts go only once it holds that very inspection, inspected by `until`: a return can reach
        the warehouse before its inspection, and the return alone brings no inspection into the offline rows.
        """
        from fraud_service.data.warehouse import Warehouse

        with self._lock:  # not inside another thread's transaction
            returned = {row[0] for row in self.db.execute(
                "SELECT DISTINCT return_id FROM live_facts WHERE fact IN ('return', 'order')")}
            inspected = {row[0] for row in self.db.execute(
                "SELECT DISTINCT return_id FROM live_facts WHERE fact LIKE 'inspection:%'")}
        if not returned and not inspected:
            return 0
        manifest = self.source.manifest() or {}
        snapshot = Warehouse(self.source.settings.warehouse_dir).current()
        if snapshot is None or snapshot.name != manifest.get("snapshot"):
            return 0  # features are not built from the current snapshot yet: keep counting live
        cutoff = pd.Timestamp(until)
        returns = snapshot.read("returns", ["return_id", "requested_at"])
        assert returns is not None
        covered = returns[returns["return_id"].isin(returned) & (returns["requested_at"] <= cutoff)]
        held: list[tuple[str, str]] = []
        inspections = snapshot.read("inspections", ["return_id", "inspected_at"])  # optional in the contract
        if inspections is not None:
            rows = inspections[inspections["return_id"].isin(inspected) & (inspections["inspected_at"] <= cutoff)]
            held = [(rid, f"inspection:{_us(at) - 1}")
                    for rid, at in zip(rows["return_id"], rows["inspected_at"], strict=True)]
        return self._delete(covered["return_id"], held, every_fact=False)

    def _delete(self, returns: Iterable[str], inspections: Iterable[tuple[str, str]], every_fact: bool) -> int:
        """In one transaction, delete the return and order facts of RETURNS (with EVERY_FACT, all their facts)
        and the facts of INSPECTIONS, each a (return_id, `inspection:<microseconds>`) pair."""
        only = "" if every_fact else " AND fact IN ('return', 'order')"
        with self._writing():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS covered (return_id TEXT PRIMARY KEY)")
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS covered_facts (return_id TEXT, fact TEXT, "
                            "PRIMARY KEY (return_id, fact))")
            self.db.execute("DELETE FROM covered")
            self.db.execute("DELETE FROM covered_facts")
            self.db.executemany("INSERT OR IGNORE INTO covered VALUES (?)", [(c,) for c in returns])
            self.db.executemany("INSERT OR IGNORE INTO covered_facts VALUES (?, ?)", list(inspections))
            removed = self.db.execute(
                f"DELETE FROM live_facts WHERE return_id IN (SELECT return_id FROM covered){only}").rowcount
            self.db.execute("DELETE FROM live_orders WHERE return_id IN (SELECT return_id FROM covered)")
            removed += self.db.execute(
                "DELETE FROM live_facts WHERE (return_id, fact) IN (SELECT return_id, fact FROM covered_facts)"
            ).rowcount
        return int(removed)

    def _return_facts(self, r: AssessedReturn, is_new: Callable[[str, str], int]) -> Iterable[tuple[Any, ...]]:
        returned = {
            "n_return": 1, "refund": float(r.refund_amount), "n_inr": int(r.return_type == "item_not_received"),
            "n_claim": int(r.return_type in ("damaged_on_arrival", "wrong_item")),
            "n_returnless": int(r.channel == "returnless"), "n_no_receipt": int(not r.has_receipt),
            "n_size_cm": int(r.reason in ("size", "changed_mind")),
            "n_refund_elsewhere": int(r.refund_method in ("gift_card", "other_payment")),
        }
        at = _us(r.requested_at)
        yield (r.return_id, "return", "customer", r.customer_id, r.customer_id, at, json.dumps(returned))
        for name, token in _order_tokens(r).items():
            if token:
                yield (r.return_id, "return", name, token, r.customer_id, at, json.dumps(returned))
        if r.refund_token:
            new = is_new("refund", r.refund_token)
            yield (r.return_id, "return", "refund", r.refund_token, r.customer_id, at,
                   json.dumps({**returned, "n_new_customer": new}))



def _is_new(reader: OnlineFeatures, counted: dict[tuple[str, str, str], set[str]], r: AssessedReturn, entity: str,
            token: str) -> int:
    """1 if R's customer was never seen on TOKEN: not in the stored rows, nor by the live facts of another return
    (COUNTED, from the log and the batch so far, which this answer joins)."""
    triple = (entity, token, r.customer_id)
    new = new_on(reader, entity, token, r.customer_id, lambda: bool(counted.get(triple, set()) - {r.return_id}))
    if new:
        counted.setdefault(triple, set()).add(r.return_id)
    return new


def _tokens(r: AssessedReturn) -> dict[str, str | None]:
    """R's tokens by entity: its order's and its refund destination."""
    return {**_order_tokens(r), "refund": r.refund_token}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def new_on(reader: OnlineFeatures, entity: str, token: str, customer: str, live_seen: Callable[[], bool]) -> int:
    """1 if CUSTOMER was never seen on TOKEN: not in the stored rows (`*_seen` views), nor by LIVE_SEEN (the log)."""
    spec = ENTITIES[entity]
    if reader.seen(f"{entity}_seen", {spec.key: token, "customer_id": customer}, "first_seen_epoch"):
        return 0
    return 0 if live_seen() else 1


def _order_tokens(r: AssessedReturn) -> dict[str, str | None]:
    return {"address": r.address_token, "payment": r.payment_token, "device": r.device_token}


def order_facts(r: AssessedReturn, is_new: Callable[[str, str], int]) -> list[tuple[Any, ...]]:
    """The live facts of R's order (new to the warehouse): one order placed, for the customer and each token,
    known from `placed_at` + 1 µs as offline; IS_NEW(entity, token) says whether the customer is new on it."""
    placed = _us(r.placed_at)
    ordered = {"n_order": 1, "order_value": float(r.order_total)}
    rows: list[tuple[Any, ...]] = [
        (r.return_id, "order", "customer", r.customer_id, r.customer_id, placed, json.dumps(ordered))]
    for name, token in _order_tokens(r).items():
        if token:
            rows.append((r.return_id, "order", name, token, r.customer_id, placed,
                         json.dumps({**ordered, "n_new_customer": is_new(name, token)})))
    return rows


RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds `FreshnessWriter` waits before trying a failed batch again (15.5 s in all)."""
MAX_WAITING = 50_000
"""How many returns (and inspections) `FreshnessWriter` holds waiting for the log, give or take the request threads
that check the count at the same moment: about 100 s of a busy worker's traffic and some tens of MB. While the log
refuses writes the writer gives up a batch of at most `batch` every 15 s and more arrive each second, so without a
bound a long outage grows the worker's memory until it is killed."""


@dataclass(frozen=True)
class _Recount:
    """A return found stored by a request sent again (`FreshnessWriter.recount`): recorded unless the warehouse holds
    it."""

    r: AssessedReturn


@dataclass(frozen=True)
class _Inspected:
    """An inspection reported through the API (`FreshnessWriter.inspected`)."""

    fact: InspectedReturn


_FLUSH = object()
"""Queued by `FreshnessWriter.drain`: the writer stops gathering and writes what it holds."""


class FreshnessWriter:
    """Records assessed returns' live facts off the request path: one thread, batches of what is waiting.

    The assessment's evidence is committed before its response; the live facts follow within
    `gather` seconds (0.2 by default): the thread collects what arrives in that time and writes it
    as one batch. Writing them inline would put a second durable commit on every response and make the
    request threads queue for the log's lock; batched, a burst costs one transaction. An order is counted
    when the warehouse does not hold it, once (`LiveFacts.record_many`).
    """

    def __init__(self, live: LiveFacts, known_orders: Callable[[list[str]], set[str]], batch: int = 1000,
                 gather: float = 0.2, retries: tuple[float, ...] = RETRIES, max_waiting: int = MAX_WAITING) -> None:
        self.live = live
        self.known_orders = known_orders
        self.batch = batch
        self.gather = gather
        self.retries = retries
        self.max_waiting = max_waiting
        self.errors = 0  # batches given up on
        self.failing: tuple[float, str] | None = None  # since when (monotonic) writes fail, and the last error
        self.dropped = 0  # facts not queued because `max_waiting` were waiting, since the last write that succeeded
        self._dropping = threading.Lock()
        self._stopping = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()  # returns, _FLUSH, or None to stop
        self._thread = threading.Thread(target=self._run, name="freshness-writer", daemon=True)
        self._thread.start()

    def submit(self, r: AssessedReturn) -> None:
        self._offer(r)

    def _offer(self, item: Any) -> bool:
        """Queue ITEM unless `max_waiting` items wait already (the log has not taken a batch for a while); whether it
        was queued. One not queued counts from the next `features build`, like a batch given up (the evidence holds
        its return), and is counted in `dropped` for `/readyz`."""
        if self._queue.qsize() < self.max_waiting:
            self._queue.put(item)
            return True
        with self._dropping:
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 10_000 == 0:
            logging.getLogger(__name__).error(
                "the live-fact log has not taken a batch for a while and %d facts wait: %d not queued so far; they "
                "count from the next features build", self.max_waiting, dropped)
        return False

    def inspected(self, fact: InspectedReturn) -> None:
        """Count an inspection in the live features with the next batch (within `gather` seconds), off the request's
        thread: recorded inline, it waited behind this writer's transaction, and with a PostgreSQL log that hung,
        eight inspections at once held every thread of an instance for 10 s and their facts were lost (a helper's
        probe). Here it is tried again as the batch is."""
        self._offer(_Inspected(fact))

    def recount(self, r: AssessedReturn, assessed_at: dt.datetime) -> bool:
        """Submit R, a return found already assessed (at ASSESSED_AT) by a request sent again, unless features
        were built since then; whether it was submitted.

        The request that stored it may have been answered 503 (the commit was not confirmed in time) before its
        live facts were written, and the client sends it again as told. Recording is idempotent per return, so a
        return whose facts the log holds counts once all the same. A build published after the assessment may
        hold the return, and its facts would count it twice: such a return is left to the builds (it counts
        once the warehouse holds it; docs/security.md), and so is one the warehouse holds already (checked when the
        batch is written, off the request's thread: a return ingested before it was assessed)."""
        try:
            built = (self.live.source.manifest() or {}).get("built_at")
            if built is not None and dt.datetime.fromisoformat(str(built)) >= assessed_at:
                return False
        except (OSError, ValueError) as exc:  # a replay is answered all the same
            logging.getLogger(__name__).warning("cannot read when features were built (%s): %s is not recounted",
                                                exc, r.return_id)
            return False
        return self._offer(_Recount(r))

    def pending(self, r: AssessedReturn) -> Pending | None:
        """When the features' warehouse does not hold R's order: its facts (in `OnlineFeatures.live` form), which
        count unless the log holds the order already. Training counts every order placed before the request, so R's
        own vector counts it now, as the log will once R is recorded. What they depend on in the log is read in the
        same statement as the request's other live facts (`Pending`)."""
        if self.known_orders([r.order_id]):
            return None
        reader = self.live.reader

        def facts(seen: dict[str, bool]) -> list[tuple[str, int, str]]:
            rows = order_facts(r, lambda entity, token: new_on(reader, entity, token, r.customer_id,
                                                               lambda: seen[entity]))
            return [(entity, us, contributions) for _, _, entity, _, _, us, contributions in rows]

        return Pending(r.order_id, r.customer_id, {k: v for k, v in _order_tokens(r).items() if v}, facts)

    def drain(self) -> None:
        """Block until everything submitted so far is recorded (tests, shutdown, the demo): the batch being
        gathered is written at once, without waiting out `gather`."""
        if self._thread.is_alive():  # after `close` nothing takes the marker off the queue
            self._queue.put(_FLUSH)
        self._queue.join()

    def close(self) -> None:
        self._stopping.set()  # a batch waiting to be tried again is tried once more, now
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            if first is _FLUSH:
                self._queue.task_done()
                continue
            items = [first]
            deadline = time.monotonic() + self.gather
            while len(items) < self.batch:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    self._queue.task_done()
                    break
                if item is _FLUSH:  # someone waits for what is gathered: write it now
                    self._queue.task_done()
                    break
                items.append(item)
            try:
                self._record(items)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _record(self, items: list[AssessedReturn]) -> None:
        """Write ITEMS, trying again after each of `retries` seconds when the write fails (the online store or the
        warehouse's order index out for a moment: a write is all or nothing and idempotent, so trying again
        counts nothing twice). Returns arriving meanwhile wait in the queue. After the last try the batch is given
        up, but for what `_isolate` saves of it: the evidence holds those returns, and they count online from the
        next `features build`."""
        for wait in (*self.retries, None):
            try:
                self._write(items)
                return
            except Exception as exc:  # the evidence is committed already: keep serving
                # /readyz says it to anyone: a PostgreSQL log's error names its host, role and database (logged)
                said = type(exc).__name__ if type(exc).__module__.startswith("psycopg") else \
                    f"{type(exc).__name__}: {exc}"
                self.failing = ((self.failing or (time.monotonic(), ""))[0], said)
                if wait is None or self._stopping.is_set():
                    self._isolate(items, exc)
                    return
                logging.getLogger(__name__).warning("recording %d live facts failed (%s); trying again in %g s",
                                                    len(items), exc, wait)
                self._stopping.wait(wait)

    def _isolate(self, items: list[AssessedReturn], failure: Exception) -> None:
        """The last try of ITEMS failed with FAILURE. When one record is what the write refuses (a value it cannot
        hold), the others are not lost with it: the halves are written apart, and while one succeeds the other is
        split again. When both halves fail (the store is out, or more than one record is refused) they are given
        up together, after two more tries, not one per record."""
        if len(items) > 1:
            half = len(items) // 2
            failed = []
            for part in (items[:half], items[half:]):
                try:
                    self._write(part)
                except Exception as exc:
                    failed.append((part, exc))
            if not failed:
                return
            if len(failed) == 1:
                self._isolate(*failed[0])
                return
        self.errors += 1
        logging.getLogger(__name__).error("recording %d live facts failed; they count from the next features build",
                                          len(items), exc_info=failure)

    def _write(self, items: list[Any]) -> None:
        returns = [item for item in items if not isinstance(item, _Recount | _Inspected)]
        again = [item.r for item in items if isinstance(item, _Recount)]
        if again:
            held = self._held([r.return_id for r in again])
            returns += [r for r in again if r.return_id not in held]
        known = self.known_orders(sorted({r.order_id for r in returns}))
        self.live.record_many([dataclasses.replace(r, order_is_new=r.order_id not in known) for r in returns])
        for item in items:  # idempotent per inspection: a batch tried again counts each once
            if isinstance(item, _Inspected):
                self.live.record_inspection(item.fact)
        self.failing = None
        with self._dropping:
            self.dropped = 0

    def _held(self, return_ids: list[str]) -> set[str]:
        """Which of RETURN_IDS the current warehouse snapshot holds (every one when it cannot be read: a recount
        left out only waits for the next build)."""
        from fraud_service.data.warehouse import Warehouse

        try:
            snapshot = Warehouse(self.live.source.settings.warehouse_dir).current()
            return set() if snapshot is None else snapshot.holding("returns", "return_id", return_ids)
        except Exception:  # the evidence is committed; the count waits for the next build
            logging.getLogger(__name__).warning("cannot read the warehouse's returns: %d replayed return(s) are not "
                                                "recounted", len(return_ids), exc_info=True)
            return set(return_ids)
