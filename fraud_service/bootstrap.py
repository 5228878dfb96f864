"""The composition root: builds the stores, the model and the services once per process.

Nothing else in the core opens engines or loads models; the web app and the CLI call `build`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.access.keys import Principal, authenticate
from fraud_service.config import Settings
from fraud_service.errors import FraudServiceError, NotReady, RegistryError, Unavailable
from fraud_service.store.deadline import SingleFlight
from fraud_service.store.uow import UnitOfWork

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the scoring stack loads LightGBM and Feast: imported when built, not when this module is
    from fraud_service.cases.assigner import Sweeper
    from fraud_service.featurestore.source import FeatureSource
    from fraud_service.feedback.dispatch import Dispatcher
    from fraud_service.feedback.inspections import InspectedReturn
    from fraud_service.feedback.outcomes import Feedback
    from fraud_service.scoring.model import Scorer
    from fraud_service.scoring.model_watch import ProductionWatch
    from fraud_service.scoring.service import Assessor
    from models.registry import ModelRegistry


@dataclass
class Service:
    """Everything a worker needs, built once. `assessor` is None (and `problems` says why) when it cannot score."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    assessor: Assessor | None = None
    watch: ProductionWatch | None = None  # follows the registry's production alias
    problems: list[str] = field(default_factory=list)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    dispatcher: Dispatcher | None = None  # sends webhook deliveries (FRAUD_WEBHOOK_DISPATCH)
    assigner: Sweeper | None = None  # hands named queues' cases out (FRAUD_ASSIGN_SWEEP)
    waiting: ScoringWait | None = None  # tries to start scoring when the start could not (no model yet)
    on_schema_current: Callable[[], None] | None = None  # what waits for a database that was down at the start

    def __post_init__(self) -> None:
        self._reads = SingleFlight(self.settings.db_wait_ms / 1000)
        self._problems_lock = threading.Lock()
        self.feedback = feedback(self.settings)

    def inspected(self, inspected: InspectedReturn) -> None:
        """Count an inspection in the live features with the writer's next batch (`FreshnessWriter.inspected`)."""
        if self.assessor is not None and self.assessor.freshness is not None:
            self.assessor.freshness.inspected(inspected)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of an API key (`access.keys.authenticate`), read within the request wait (else
        DatabaseDown): an unanswering database costs a request its 503, not its thread."""
        return self._reads.call(("key", presented), lambda: authenticate(self.uow(), presented))

    def recheck(self) -> None:
        """Once the evidence database answers, what the start could not check of it: its schema; and, once it is this
        code's, what waited for that (`on_schema_current`: the webhook sender and the queues' assigner). A worker
        that started while the database was down noted so and was never ready again, though the database came
        back."""
        if not any(p.startswith(UNREACHABLE_AT_START) for p in self.problems):
            return
        schema = check_schema(self.engine)  # raises while it is still down: the problem stays
        with self._problems_lock:
            unreached = [p for p in self.problems if p.startswith(UNREACHABLE_AT_START)]
            self.problems = [p for p in self.problems if p not in unreached] + ([schema] if schema else [])
            start, self.on_schema_current = (self.on_schema_current, None) if schema is None else (None, None)
        log.info("the evidence database answers now; %s", schema or "its schema is current")
        if start is not None:
            start()
        elif schema is not None:
            log.error("this worker sends no webhooks and hands out no cases: %s", schema)

    def note_problem(self, old: str | None, new: str | None) -> None:
        """Replace the problem OLD (None: none) with NEW (None: none), under the lock other threads change them by."""
        with self._problems_lock:
            self.problems = [p for p in self.problems if p != old] + ([new] if new else [])

    def uow(self) -> UnitOfWork:
        """A new unit of work on the evidence database (each core service call takes one)."""
        return UnitOfWork(self.sessions)

    def require_assessor(self) -> Assessor:
        """The assessor, or NotReady saying why the service cannot score."""
        if self.assessor is None:
            raise NotReady("the service cannot score: " + "; ".join(self.problems))
        return self.assessor

    def lists_changed(self) -> None:
        """This worker's assessments see a list or rule change at once (other workers within a second)."""
        if self.assessor is not None:
            self.assessor.lists.invalidate()
            self.assessor.rules.invalidate()

    def close(self) -> None:
        if self.waiting is not None:
            self.waiting.close()
        if self.assigner is not None:
            self.assigner.close()
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.close_scoring()
        self.engine.dispose()

    def close_scoring(self) -> None:
        """Stop the model's watch and the assessor's threads (shadow scorer, evidence and live-fact writers)."""
        if self.watch is not None:
            self.watch.close()
        if self.assessor is not None:
            if self.assessor.shadow is not None:
                self.assessor.shadow.close()
            self.assessor.writer.close()
            if self.assessor.freshness is not None:
                self.assessor.freshness.close()


def database(settings: Settings, *, serving: bool = False, read_only: bool = False
             ) -> tuple[Engine, sessionmaker[Session]]:
    """The evidence database's engine and sessions; SERVING (the web service's) bounds every statement's time
    (`store.db.SERVICE_TIMEOUT_MS`), the CLI's long jobs are not bounded. READ_ONLY: see `store.db.make_engine`."""
    from fraud_service.store.db import SERVICE_TIMEOUT_MS, make_engine, session_factory

    engine = make_engine(settings.database_url, timeout_ms=SERVICE_TIMEOUT_MS if serving else None,
                         read_only=read_only)
    return engine, session_factory(engine)


UNREACHABLE_AT_START = "the evidence database cannot be reached"
"""The start of the problem a worker notes when the database did not answer as it started (`Service.recheck`)."""


def check_schema(engine: Engine) -> str | None:
    """None when the database schema is current, else what to do."""
    from fraud_service.store.migrate import current_revision, head_revision

    current, head = current_revision(engine), head_revision()
    if current != head:
        return (f"the evidence database is at schema {current or 'none'}, not {head}: "
                "run `fraud-service db upgrade`")
    return None


def feedback(settings: Settings) -> Feedback:
    """What the feedback services decide with, from SETTINGS (ConfigError when the shopper messages file is bad)."""
    from fraud_service.feedback.messages import load
    from fraud_service.feedback.outcomes import Feedback

    return Feedback(load(settings.customer_messages), settings.confirmed_bad_decision, settings.webhook_retry_hours,
                    settings.hub_customers)


def live_inspections(settings: Settings) -> Callable[[InspectedReturn], None] | None:
    """What counts a reported inspection in the live features of this host's workers (their shared log), or None
    when the feature store is not built (the next build counts it)."""
    from fraud_service.featurestore.live import LiveFacts
    from fraud_service.featurestore.source import FeatureSource

    source = FeatureSource(settings)
    if source.built_from() is None:
        return None
    return LiveFacts(source).record_inspection


def dispatcher(settings: Settings, uow: Callable[[], UnitOfWork]) -> Dispatcher:
    """The webhook dispatcher SETTINGS describe (not started). On SQLite it keeps its delivery states through an
    engine of its own that commits without waiting for the disk: a state lost to a power cut only means a
    delivery is sent again (at least once), and each fsync it skips is one the evidence writer's lock would wait
    for. The outbox itself is written, durably, in the transaction of each change."""
    from fraud_service.feedback.dispatch import Dispatcher
    from fraud_service.store.db import SERVICE_TIMEOUT_MS, make_engine, session_factory

    engine = None
    if settings.database_url.startswith("sqlite"):
        engine = make_engine(settings.database_url, timeout_ms=SERVICE_TIMEOUT_MS, durable=False)
        sessions = session_factory(engine)
        uow = lambda: UnitOfWork(sessions)  # noqa: E731
    return Dispatcher(uow, allow_private=settings.webhook_allow_private, timeout_s=settings.webhook_timeout_s,
                      backoff_s=settings.webhook_backoff_s, engine=engine)


def assigner(settings: Settings, uow: Callable[[], UnitOfWork]) -> Sweeper:
    """The queues' assigner SETTINGS describe (not started)."""
    from fraud_service.cases.assigner import Sweeper

    return Sweeper(uow, interval_s=settings.assign_interval_s,
                   active_within=dt.timedelta(minutes=settings.assign_active_minutes),
                   inactive_after=dt.timedelta(minutes=settings.assign_inactive_minutes))


def build(settings: Settings, *, freshness: bool = True, warm_up: bool = True, watch: bool = True,
          dispatch: bool | None = None, assign: bool | None = None) -> Service:
    """The service for SETTINGS; what cannot be loaded is listed in `problems`, not raised. With WATCH, a
    background thread swaps in a newly promoted production model (checked every 5 seconds); with DISPATCH
    (default: FRAUD_WEBHOOK_DISPATCH), another sends webhook deliveries, and with ASSIGN (default:
    FRAUD_ASSIGN_SWEEP) another hands named queues' cases out: both once the rest is built, on a schema checked to be
    this code's (`start_background`; on a database down at the start, once it answers)."""
    engine, sessions = database(settings, serving=True)
    service = Service(settings, engine, sessions)
    schema_ok = unreached = False
    try:
        problem = check_schema(engine)
        schema_ok = problem is None
    except Exception as exc:  # the database is down: the app still starts and /readyz says why
        log.error("the evidence database cannot be reached: %s", exc)  # host, port and name: not for /readyz
        problem, unreached = f"{UNREACHABLE_AT_START} ({type(exc).__name__})", True
    if problem:
        service.problems.append(problem)
    try:
        start_scoring(service, freshness=freshness, warm_up=warm_up, watch=watch)
    except FraudServiceError as exc:
        service.problems.append(str(exc))
        if watch:  # no model yet (serve before train), or features not built: it can score once they are
            service.waiting = ScoringWait(service, str(exc), lambda: start_scoring(
                service, freshness=freshness, warm_up=warm_up, watch=watch))
            service.waiting.start()
    sends = settings.webhook_dispatch if dispatch is None else dispatch
    assigns = settings.assign_sweep if assign is None else assign
    background = functools.partial(start_background, service, dispatch=sends, assign=assigns)
    if schema_ok:
        background()
    elif unreached:  # started once the database answers with this code's schema (`Service.recheck`)
        service.on_schema_current = background
    elif sends or assigns:
        log.error("this worker sends no webhooks and hands out no cases: %s", "; ".join(service.problems))
    return service


def start_scoring(service: Service, *, freshness: bool, warm_up: bool, watch: bool) -> None:
    """Give SERVICE its assessor, warmed, with its shadow scorer and (WATCH) the production model's watch started;
    FraudServiceError when it cannot score (no production model, no features built)."""
    from fraud_service.scoring.model_watch import ProductionWatch
    from fraud_service.scoring.shadow import ShadowScorer
    from models.registry import ModelRegistry

    settings, engine = service.settings, service.engine
    built = assessor(settings, engine, service.sessions, freshness=freshness)
    try:
        if warm_up:
            warm(built)
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        lock = f"{path}.writer-lock" if path and path != ":memory:" else None
        built.shadow = ShadowScorer(ModelRegistry(settings.models_dir), service.sessions, lock_path=lock)
    except BaseException:  # its writers' threads are not left running (ScoringWait tries again)
        built.writer.close()
        if built.freshness is not None:
            built.freshness.close()
        raise
    built.shadow.start()
    service.watch = ProductionWatch(built, ModelRegistry(settings.models_dir))
    if watch:
        service.watch.start()
    service.assessor = built  # last: a request sees a warmed assessor or none


class ScoringWait:
    """Tries, every INTERVAL seconds on a thread, to give a service that started unable to score its assessor
    (`start_scoring`): a worker started before the first `train` (or `features build`) said so on /readyz for the
    rest of its life, and needed a restart to score. The service's problem follows the latest reason."""

    def __init__(self, service: Service, problem: str, attempt: Callable[[], None], interval: float = 5.0) -> None:
        self.service, self.problem, self.attempt, self.interval = service, problem, attempt, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scoring-wait", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.attempt()
            except FraudServiceError as exc:
                self._note(str(exc))
                continue
            except Exception:  # noqa: BLE001 - a thread that dies would never try again
                log.exception("could not start scoring; trying again in %g s", self.interval)
                continue
            if self._stop.is_set():  # the service closed while this attempt ran: its threads go too
                self.service.close_scoring()
                return
            self._note(None)
            log.info("scoring with model %s", self.service.assessor.scorer.version if self.service.assessor else "?")
            return

    def _note(self, problem: str | None) -> None:
        self.service.note_problem(self.problem, problem)
        self.problem = problem or ""


def start_background(service: Service, *, dispatch: bool, assign: bool) -> None:
    """Start SERVICE's webhook sender (DISPATCH) and the queues' assigner (ASSIGN), last, on a schema checked to be
    this code's: a `serve` worker builds its service before it takes any request, and loading and warming the model
    there takes seconds, in which its sender already claimed and sent deliveries (from a worker that might never come
    up) and its assigner swept, on a database whose schema was not yet checked. A worker without a model still
    sends once built: case closes, inspections and appeals need none."""
    if dispatch:
        service.dispatcher = dispatcher(service.settings, service.uow)
        service.dispatcher.start()
    if assign:
        service.assigner = assigner(service.settings, service.uow)
        service.assigner.start()


def assessor(settings: Settings, engine: Engine, sessions: sessionmaker[Session], *,
             freshness: bool = True) -> Assessor:
    """The Assessor with the feature store, the production model and its policy, and the evidence writer."""
    from fraud_service.featurestore.live import FreshnessWriter, LiveFacts
    from fraud_service.featurestore.live_log import LIVE_LOG_MENDED
    from fraud_service.featurestore.source import FeatureSource
    from fraud_service.scoring.evidence import evidence_writer
    from fraud_service.scoring.lists import ListCache
    from fraud_service.scoring.policy import Policy
    from fraud_service.scoring.rulebook import RuleCache
    from fraud_service.scoring.service import Assessor
    from models.registry import ModelRegistry

    source = FeatureSource(settings)
    if source.built_from() is None:
        raise NotReady("the feature store is not built: run `fraud-service features build` and "
                       "`fraud-service features materialize`")
    scorer = last_good_scorer(ModelRegistry(settings.models_dir))
    try:
        reader = source.reader()
        writer = FreshnessWriter(LiveFacts(source, reader), known_orders(source)) if freshness else None
    except (sqlite3.DatabaseError, OSError) as exc:  # a damaged or unwritable live-fact log: not ready, not a worker
        # that dies (a log left by `doctor` run as another user raised PermissionError)
        raise NotReady(f"the feature store's files cannot be opened ({exc}): {LIVE_LOG_MENDED}") from exc
    wait_s = settings.db_wait_ms / 1000
    return Assessor(reader=reader, scorer=scorer, policy=Policy.from_dict(scorer.policy), sessions=sessions,
                    writer=evidence_writer(engine, wait_s, settings.writer_lanes),
                    lists=ListCache(sessions, wait_s=wait_s), rules=RuleCache(sessions, wait_s=wait_s),
                    freshness=writer, hub_customers=settings.hub_customers)


def last_good_scorer(registry: ModelRegistry) -> Scorer:
    """The production model, or when it cannot load and score, the newest model production named before it that
    can (the watcher then reports the gap and keeps trying the alias); NotReady when none can."""
    from fraud_service.scoring.model import Scorer
    from fraud_service.scoring.policy import Policy

    try:
        candidates = registry.production_history()
    except RegistryError as exc:
        raise NotReady(f"no model to score with: {exc}") from exc
    failures = []
    for version in candidates:
        try:
            scorer = Scorer.from_registry(registry, version)
            Policy.from_dict(scorer.policy)
            scorer.probability(scorer.row({}))
        except Exception as exc:  # whatever a damaged model raises: try the one before
            failures.append(f"{version}: {exc}")
            continue
        if failures:
            log.error("production model cannot be served (%s); serving %s instead", "; ".join(failures), version)
        return scorer
    detail = "; ".join(failures) or f"the model registry {registry.root} has no production model: train one"
    raise NotReady(f"no model to score with: {detail}")


def known_orders(source: FeatureSource) -> Callable[[list[str]], set[str]]:
    """A function telling which of some order ids the features were built with (a request's own order, and its
    live facts'): see `BuiltOrders`."""
    return BuiltOrders(source)


class BuiltOrders:
    """Which order ids the features were built with: the orders of the snapshot named in the features' manifest,
    which the online rows count. An order ingested since is not counted there yet, so the live facts count it.

    The snapshot's order ids are indexed in memory (8 bytes each). When a new build is published, the new index is
    made on a thread while requests keep asking the old one: reading a few million ids takes seconds, and every
    request would otherwise wait for it. Only the very first index (at start, by `warm`) is made by the caller.
    """

    def __init__(self, source: FeatureSource) -> None:
        from fraud_service.data.warehouse import KeyIndex, Warehouse

        self.source = source
        self.warehouse = Warehouse(source.settings.warehouse_dir)
        self.index: KeyIndex | None = None
        self.stamp: tuple[int, int, int] | None = None  # the manifest's (inode, mtime, size) the index is of
        self.building = False
        self._lock = threading.Lock()

    def __call__(self, order_ids: list[str]) -> set[str]:
        try:
            stat = self.source.manifest_path.stat()
        except FileNotFoundError:
            return set()
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self.stamp:
            with self._lock:
                start = not self.building and seen != self.stamp
                self.building = self.building or start
            if start and self.index is None:
                self._build(seen)
            elif start:
                threading.Thread(target=self._build, args=(seen,), name="order-index", daemon=True).start()
        index = self.index
        return set() if index is None else index.holding(order_ids)

    def _build(self, seen: tuple[int, int, int]) -> None:
        from fraud_service.errors import WarehouseError

        index = self.index
        try:
            name = str((self.source.manifest() or {})["snapshot"])
            index = self.warehouse.snapshot(name).key_index("orders", "order_id")
        except (OSError, ValueError, KeyError, WarehouseError):
            log.exception("cannot index the orders of the features' snapshot; still using the previous index")
        with self._lock:
            self.index, self.stamp, self.building = index, seen, False


def warm(assessor: Assessor) -> None:
    """One feature read, one prediction and one explanation, so the first real request is not the slow one."""
    from fraud_service.featurestore.source import request_entity
    from fraud_service.scoring.request import parse_request

    now = dt.datetime.now(dt.UTC)
    body = {"return_id": "warm-up", "customer_id": "warm-up", "requested_at": now.isoformat(),
            "return_type": "return", "channel": "mail", "reason": "size", "items_count": 1, "refund_amount": 1.0,
            "refund_method": "original_payment", "has_receipt": True,
            "order": {"order_id": "warm-up", "placed_at": (now - dt.timedelta(days=3)).isoformat(), "channel": "web",
                      "order_total": 1.0, "payment_token": "warm-up",
                      "items": [{"line_no": 1, "sku": "x", "category": "home", "unit_price": 1.0, "quantity": 1}]}}
    keys, fields = request_entity(parse_request(body, now))
    try:
        vector = assessor.reader.vector(keys, fields)
    except Unavailable as exc:  # Redis down at start: serve anyway, not ready (/readyz says why) until it answers
        log.warning("warm-up without features: %s", exc)
        vector = {}
    x = assessor.scorer.row(vector)
    if assessor.freshness is not None:
        assessor.freshness.known_orders(["warm-up"])  # index the snapshot's orders before a request needs them
    assessor.scorer.probability(x)
    assessor.scorer.contributions(x)


@dataclass
class Database:
    """The evidence database for a command line: units of work and schema upkeep, the engine kept inside."""

    engine: Engine
    sessions: sessionmaker[Session]

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions)

    @property
    def where(self) -> str:
        """The database's URL without its password."""
        return self.engine.url.render_as_string(hide_password=True)

    def schema_problem(self) -> str | None:
        """None when the schema is current, else what to do."""
        return check_schema(self.engine)

    def upgrade(self, others_ok: bool = False) -> tuple[str | None, str]:
        """Create or migrate the schema to the newest revision (on PostgreSQL, refused while other sessions use
        it, unless OTHERS_OK: `migrate.upgrade`); (the revision before, the newest)."""
        from fraud_service.store.migrate import head_revision, upgrade

        before = upgrade(self.engine, others_ok=others_ok)
        return before, head_revision()


@contextlib.contextmanager
def evidence(settings: Settings, *, migrated: bool = True, read_only: bool = False) -> Iterator[Database]:
    """The evidence database, disposed afterwards; with MIGRATED, only at the current schema (else the error
    says to run `fraud-service db upgrade`). READ_ONLY, for a command that only reads: a SQLite copy in a folder
    that cannot be written is read where it is (`store.db.read_only_copy`)."""
    engine, sessions = database(settings, read_only=read_only)
    try:
        problem = check_schema(engine) if migrated else None
        if problem:
            raise FraudServiceError(problem)
        yield Database(engine, sessions)
    finally:
        engine.dispose()


def evidence_exists(settings: Settings) -> bool:
    """False only for a SQLite evidence file that was never created (nothing to read, nothing to create)."""
    from sqlalchemy import make_url

    url = make_url(settings.database_url)
    return url.get_backend_name() != "sqlite" or bool(url.database and Path(url.database).exists())


@contextlib.contextmanager
def optional_evidence(settings: Settings) -> Iterator[UnitOfWork | None]:
    """A unit of work on the evidence database when there is one at the current schema, else None (a machine
    that only trains records no events)."""
    if not evidence_exists(settings):
        yield None
        return
    with evidence(settings, migrated=False) as db:
        yield db.uow() if db.schema_problem() is None else None
