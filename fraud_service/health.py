"""Checks of the service's stores: reachability (`fraud-service doctor`, the web app), the evidence chain's
integrity (`fraud-service evidence verify`) and what the evidence database holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud_service.config import Settings
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import (
    ConfigError,
    DatabaseDown,
    EvidenceFileGone,
    FeatureStoreError,
    RegistryError,
    Unavailable,
)
from fraud_service.featurestore.live_log import LIVE_LOG_MENDED
from fraud_service.featurestore.online import ONLINE_MENDED
from fraud_service.featurestore.source import ENTITY_KEYS
from fraud_service.scoring.lists import unlogged
from fraud_service.store import chain, checkpoint
from fraud_service.store.chain import Verification
from fraud_service.store.checkpoint import Checkpoint, CheckpointCheck
from fraud_service.store.deadline import SingleFlight
from fraud_service.store.schema import (
    ApiKey,
    Assessment,
    Case,
    CaseNote,
    EvidenceEvent,
    Inspection,
    Label,
    Outcome,
    RuleSetRow,
    User,
)
from fraud_service.store.uow import UnitOfWork

if TYPE_CHECKING:
    from fraud_service.bootstrap import Service
    from fraud_service.featurestore.online import OnlineFeatures
    from fraud_service.featurestore.source import FeatureSource
    from fraud_service.scoring.service import Assessor

CONNECT_TIMEOUT_S = 2


@dataclass(frozen=True)
class Check:
    """The outcome of one check, with a sentence saying what was seen."""

    name: str
    ok: bool
    detail: str


def check_database(url: str, schema: bool = False) -> Check:
    """Open a connection to the evidence database and run SELECT 1; with SCHEMA, also that its schema is current.
    A SQLite file that is not there is reported, not made (connecting would create an empty one)."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.exc import SQLAlchemyError

    from fraud_service.bootstrap import check_schema

    target = make_url(url)
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:") \
            and not Path(target.database).exists():
        return Check("database", False, f"{url}: no database there yet: run `fraud-service db upgrade` (`make run` "
                                        "does)")
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        shown = engine.url.render_as_string(hide_password=True)
        if schema and (stale := check_schema(engine)) is not None:
            return Check("database", False, f"{shown} answers, but {stale}")
        return Check("database", True, f"{shown} answers" + (", schema current" if schema else ""))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0]
        return Check("database", False, f"{engine.url.render_as_string(hide_password=True)}: {reason}")
    finally:
        engine.dispose()


def check_redis(url: str) -> Check:
    """PING the Redis server, and see that it does not evict keys under memory pressure (the online store's keys
    each carry a time to live, so every policy but noeviction may drop them; a user not allowed INFO skips that)."""
    import redis
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)  # redis://:secret@host: the password is not shown
    client = redis.Redis.from_url(url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
        try:
            memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        except redis.exceptions.NoPermissionError:
            memory = {}
        policy = memory.get("maxmemory_policy", "noeviction")
        if int(memory.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
            return Check("redis", False, f"{shown} evicts keys when its maxmemory is reached (maxmemory-policy "
                                         f"{policy}): evicted customers would score as new ones; set "
                                         "maxmemory-policy noeviction")
        return Check("redis", True, f"{shown} answers PING")
    except redis.RedisError as exc:
        return Check("redis", False, f"{shown}: {exc}")
    finally:
        client.close()


def _reloading(source: FeatureSource) -> bool:
    """`FeatureSource.reloading`, False when Redis does not answer (the Redis check says so)."""
    try:
        return source.reloading()
    except Exception:
        return False


def _sqlite_unread(source: FeatureSource) -> str | None:
    """Why a request could not read the SQLite online store or the live-fact log (a file deleted, truncated, not a
    database, or never loaded), or None (always for Redis, whose own check says whether it answers). Read-only:
    a diagnosis creates nothing (the reader would create both files, and a log made by `doctor` run as another
    user was then unwritable for the service)."""
    import sqlite3
    from urllib.parse import quote

    from features.pipeline import ENTITIES

    def read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True))

    if source.settings.online_store != "sqlite":
        return None
    store = source.store()
    online = Path(store.config.online_store.path)
    if not online.is_file():
        return f"the online store {online} does not exist: {ONLINE_MENDED}"
    try:
        with read_only(online) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return f"the online store {online} cannot be read ({exc}): {ONLINE_MENDED}"
    missing = sorted({f"{store.config.project}_{name}_features" for name in ENTITIES} - tables)
    if missing:
        return f"the online store {online} holds no table {missing[0]} (never loaded): {ONLINE_MENDED}"
    log_path = source.live_log
    if isinstance(log_path, Path) and log_path.is_file():  # a PostgreSQL log is read by the readiness probe
        try:
            with read_only(log_path) as db:
                db.execute("SELECT count(*) FROM live_facts").fetchone()
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError or "no such table" in str(exc):  # not a database, or damaged
                return f"the live-fact log {log_path} cannot be read ({exc}): {LIVE_LOG_MENDED}"
    return None


def _online_loss(source: FeatureSource, keys: Callable[[], int | None] | None = None) -> str | None:
    """`FeatureSource.online_loss`, or None when Redis does not answer (the Redis check says so: this one stays about
    the features)."""
    try:
        return source.online_loss(keys)
    except Exception:
        return None


def check_warehouse(settings: Settings) -> Check:
    """Is there ingested data, and which snapshot is current?"""
    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        return Check("warehouse", False, f"{settings.warehouse_dir} is empty: run `fraud-service ingest DIR`")
    return Check("warehouse", True, f"snapshot {snapshot.name}, {snapshot.rows('returns'):,} returns")


def check_messages(settings: Settings) -> Check:
    """Do the shopper messages load (the defaults, or FRAUD_CUSTOMER_MESSAGES's)?"""
    from fraud_service.feedback.messages import load

    try:
        load(settings.customer_messages)
    except ConfigError as exc:
        return Check("customer messages", False, str(exc))
    return Check("customer messages", True, str(settings.customer_messages or "the defaults"))


def check_features(settings: Settings) -> Check:
    """Are features built, and loaded into the online store (what `serve` scores with)?"""
    from fraud_service.featurestore.source import FeatureSource

    source = FeatureSource(settings)
    try:
        manifest = source.manifest()
    except FeatureStoreError as exc:
        return Check("features", False, str(exc))
    if manifest is None:
        return Check("features", False, "none built: run `fraud-service features build`")
    unfinished = source.unfinished()
    if unfinished:
        return Check("features", False, f"the feature files are no whole build: {unfinished}")
    current = Warehouse(settings.warehouse_dir).current()
    if current is not None and (manifest.get("snapshot"), manifest.get("fingerprint")) != (
            current.name, current.manifest.get("fingerprint")):
        return Check("features", False, f"built from snapshot {manifest.get('snapshot')}, but the warehouse is at "
                                        f"{current.name} since: run `fraud-service features build`, then "
                                        "`features materialize`")
    if source.online_behind(manifest):
        return Check("features", False, f"built {manifest.get('built_at')} from snapshot {manifest.get('snapshot')}, "
                                        "not loaded into the online store since: run `fraud-service features "
                                        "materialize`")
    if _reloading(source):
        return Check("features", False, "a reload of the online store's Redis after it lost its data did not finish: "
                                        "requests answer 503 until `fraud-service features materialize` loads every "
                                        "entity")
    lost = _online_loss(source)
    if lost is not None:
        return Check("features", False, lost)
    unread = _sqlite_unread(source)
    if unread is not None:
        return Check("features", False, unread)
    return Check("features", True, f"built {manifest.get('built_at')} from snapshot {manifest.get('snapshot')}, "
                                   f"online up to {(source.materialized() or {}).get('until')}")


def check_model(settings: Settings) -> Check:
    """Does the production model load (its files whole, as sealed)?"""
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings.models_dir)
    try:
        record = registry.load("production")
    except RegistryError as exc:
        return Check("model", False, f"{exc}")
    return Check("model", True, f"production is {record.version}")


def check_live_log(url: str) -> Check:
    """Reach FRAUD_LIVE_LOG's PostgreSQL database and count the live facts it holds; a diagnosis makes no table (the
    first `serve` worker does)."""
    import psycopg
    from sqlalchemy import make_url

    from fraud_service.featurestore.live_log import psycopg_url

    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with psycopg.connect(psycopg_url(url),
                             connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('live_facts')").fetchone() == (None,):
                return Check("live log", True, f"{shown} answers; no live fact yet (the first `serve` makes its "
                                               "tables)")
            row = conn.execute("SELECT count(*), count(DISTINCT return_id) FROM live_facts").fetchone()
    except (psycopg.Error, UnicodeError, ValueError) as exc:  # a host name that cannot be looked up raises the others
        return Check("live log", False, f"{shown}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    assert row is not None
    return Check("live log", True, f"{shown} answers; {row[0]:,} live facts of {row[1]:,} returns assessed since "
                                   "the last build")


def run_checks(settings: Settings) -> list[Check]:
    """Every check that applies to these settings."""
    checks = [check_warehouse(settings), check_database(settings.database_url, schema=True), check_features(settings),
              check_model(settings), check_messages(settings)]
    if settings.online_store == "redis":
        checks.append(check_redis(settings.redis_url))
    if settings.live_log_url is not None:
        live = check_live_log(settings.live_log_url)
        if live.ok and settings.online_store == "sqlite":  # fine on one host, wrong on several
            live = Check(live.name, True, f"{live.detail}; note: with FRAUD_ONLINE_STORE=sqlite each host keeps its "
                                          "own online store, so only instances on this host may share this log "
                                          "(docs/deployment.md)")
        checks.append(live)
    return checks


def write_checkpoint(uow: UnitOfWork, key_path: Path, target: Path, now: dt.datetime) -> tuple[Path, Checkpoint, bool]:
    """Sign the chain head with the key at KEY_PATH (made when missing) and write it to TARGET (a file, or a
    directory to add one to): the file written, the checkpoint, and whether the key was made now."""
    key, made = checkpoint.load_or_create_key(key_path)
    with uow.read(snapshot=True):
        taken = checkpoint.take(uow.session, key, now)
    return checkpoint.write(taken, target), taken, made


def verify_checkpoints(uow: UnitOfWork, source: Path, public_key: Path) -> CheckpointCheck:
    """Check the checkpoints in SOURCE (a file or a directory of them) against the stored chain."""
    paths = sorted(source.glob("*.json")) if source.is_dir() else [source]
    if not paths:
        raise ConfigError(f"{source} holds no checkpoint files (*.json)")
    key = checkpoint.load_public_key(public_key)
    with uow.read(snapshot=True):
        return checkpoint.verify(uow.session, paths, key)


@dataclass(frozen=True)
class EvidenceCounts:
    assessments: int
    cases: int


def evidence_counts(uow: UnitOfWork) -> EvidenceCounts:
    """How many assessments and cases the evidence database holds."""
    from sqlalchemy import func, select

    with uow.read():
        assessments = uow.session.execute(select(func.count()).select_from(Assessment)).scalar_one()
        cases = uow.session.execute(select(func.count()).select_from(Case)).scalar_one()
    return EvidenceCounts(int(assessments), int(cases))


def readiness(service: Service) -> dict[str, dict[str, Any]]:
    """What `/readyz` reports: the model loaded, the evidence database and the online store reachable; each check
    with `ok` and, when not, a `detail`. It answers within READY_WAIT_S: a store that hangs is reported as not
    answering (the probe goes on on its own thread, one per store at a time, until its timeout ends it)."""
    checks: dict[str, dict[str, Any]] = {}
    assessor = service.assessor
    checks["model"] = ({"ok": True, "version": assessor.scorer.version, "policy": assessor.policy.version}
                       if assessor is not None else {"ok": False, "detail": "; ".join(service.problems)})
    if service.watch is not None and service.watch.problem:  # still serving, but not what the alias names
        checks["model"]["problem"] = service.watch.problem
    started = time.monotonic()
    database = _PROBES.start(("database", id(service)), lambda: _select_one(service))
    store = (_PROBES.start(("feature_store", id(service)),
                           lambda: probe_online_store(assessor.reader, service.settings))
             if assessor is not None else None)
    try:
        SingleFlight.result(database, READY_WAIT_S - (time.monotonic() - started))
        problem = next((p for p in service.problems if "evidence database" in p), None)
        failed = assessor.writer.failed if assessor is not None else None
        if problem is None and failed is not None and (age := time.monotonic() - failed[0]) < WRITE_FAILURE_S:
            # it answers, but refuses the writes (a full disk, a read-only replica): no assessment can be stored
            problem = (f"the evidence database answers but refused the last write {age:.0f} s ago ({failed[1]}); "
                       f"ready again once a write succeeds, or {WRITE_FAILURE_S:g} s after it")
        checks["database"] = {"ok": problem is None, **({"detail": problem} if problem else {})}
    except EvidenceFileGone as exc:
        checks["database"] = {"ok": False, "detail": str(exc)}
    except DatabaseDown:
        checks["database"] = {"ok": False, "detail": f"the evidence database did not answer within {READY_WAIT_S} s"}
    except Exception as exc:  # any driver error means not ready
        checks["database"] = {"ok": False, "detail": f"cannot reach the evidence database: {type(exc).__name__}"}
    if store is None:
        checks["feature_store"] = {"ok": False, "detail": "not loaded"}
        return checks
    try:
        lost = SingleFlight.result(store, READY_WAIT_S - (time.monotonic() - started))
        problems = [p for p in (lost, _live_facts_failing(assessor)) if p]
        checks["feature_store"] = {"ok": True, "online_store": assessor.reader.kind,  # type: ignore[union-attr]
                                   **({"problem": "; ".join(problems)} if problems else {})}  # still serving
    except DatabaseDown:
        checks["feature_store"] = {"ok": False, "detail": "the online store or the live-fact log did not answer "
                                                          f"within {READY_WAIT_S} s"}
    except Unavailable as exc:  # its own words, which name no host (an empty store says so)
        checks["feature_store"] = {"ok": False, "detail": str(exc)}
    except Exception as exc:  # sqlite or redis errors alike
        checks["feature_store"] = {"ok": False, "detail": f"cannot read the online store: {type(exc).__name__}"}
    return checks


def _live_facts_failing(assessor: Assessor | None) -> str | None:
    """What `/readyz` says while the live-fact log refuses writes (a full disk, `live.db` made read-only or
    damaged): answers are still right but for the velocity of the returns assessed since, which count only from the
    next `features build`."""
    writer = assessor.freshness if assessor is not None else None
    failing = writer.failing if writer is not None else None
    if writer is None or failing is None:
        return None
    dropped = (f"; {writer.dropped:,} were not even queued (the writer held {writer.max_waiting:,} waiting) and count "
               "only from the next `fraud-service features build`") if writer.dropped else ""
    return (f"live facts are not being recorded: writes to the live-fact log fail since "
            f"{time.monotonic() - failing[0]:.0f} s ago ({failing[1]}); the returns assessed since count in velocity "
            "features once a write succeeds (each batch is tried for about 15 s), or else from the next "
            f"`fraud-service features build`{dropped}")


def probe_online_store(reader: OnlineFeatures, settings: Settings) -> str | None:
    """Read the online store and the live-fact log as a request does (raising as it would), then say what its Redis
    lost since the last `materialize`, if anything."""
    from fraud_service.featurestore.source import FeatureSource

    probe = dict.fromkeys(ENTITY_KEYS, "readyz-probe")
    reader.stored(probe)  # counts Redis's keys in the same round trip
    reader.live(probe)  # the live-fact log, which a request reads next (on PostgreSQL, across the network)
    if reader.kind != "redis":
        return None
    return _online_loss(FeatureSource(settings), lambda: reader.keys_seen)  # its errors: no loss said


READY_WAIT_S = 0.8
WRITE_FAILURE_S = 30.0
"""How long an evidence write the database refused (a full disk, a read-only database) keeps `/readyz` at 503 when
nothing has been stored since (a database that cannot be reached shows in the `SELECT 1` probe instead): long enough
for a load balancer to send the shoppers elsewhere, short enough that an instance it stopped sending to is tried
again."""
_PROBES = SingleFlight(READY_WAIT_S)


def _select_one(service: Service) -> None:
    with service.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    service.recheck()


@dataclass(frozen=True)
class DerivedCheck:
    """Rows of the tables derived from the evidence (assessments, case notes, labels) checked against their
    events, and the first that differs (None when all agree)."""

    rows: dict[str, int]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_derived(uow: UnitOfWork) -> DerivedCheck:
    """Check every assessment, case note, label, inspection and outcome row against the evidence event it names: an
    edited row (a score, a decision, a label that feeds the next training run, what the returns system is told)
    is named, by table and key; so is a row deleted, or a copy of one added. The lists, rule sets, keys and users
    must be what their events leave. All in one snapshot: a commit made meanwhile is not half seen."""
    with uow.read(snapshot=True):
        return _derived(uow)


def verify_log(uow: UnitOfWork) -> tuple[Verification, DerivedCheck | None]:
    """The chains, then (when they hold) the derived tables, in one snapshot: under load both count the same log."""
    with uow.read(snapshot=True):
        result = chain.verify(uow.session)
        return result, (_derived(uow) if result.ok else None)


def _derived(uow: UnitOfWork) -> DerivedCheck:
    rows = {"assessments": 0, "case_notes": 0, "labels": 0, "inspections": 0, "outcomes": 0}
    for model, table, problem_of in ((Assessment, "assessments", _assessment_problem),
                                     (CaseNote, "case_notes", _note_problem), (Label, "labels", _label_problem),
                                     (Inspection, "inspections", _inspection_problem),
                                     (Outcome, "outcomes", _outcome_problem)):
        problem = _check_table(uow, model, table, problem_of, rows)
        if problem is not None:
            return DerivedCheck(rows, problem)
    problem = _complete(uow)
    rows["list_entries"], listed = unlogged(uow.session)
    rows["rule_sets"], ruled = _rule_sets(uow)
    principals = [_principals(uow, *shape) for shape in _PRINCIPALS]
    for (table, *_), (count, _) in zip(_PRINCIPALS, principals, strict=True):
        rows[table] = count
    return DerivedCheck(rows, problem or listed or ruled or next((p for _, p in principals if p), None))


def _rule_sets(uow: UnitOfWork) -> tuple[int, str | None]:
    """The saved rule sets, and the first that its rules_changed event does not bear out, or that one made is gone."""
    from sqlalchemy import func, select

    made = uow.session.execute(select(func.count()).where(EvidenceEvent.kind == "rules_changed")).scalar_one()
    count = 0
    for row, event in uow.session.execute(select(RuleSetRow, EvidenceEvent).outerjoin(
            EvidenceEvent, EvidenceEvent.seq == RuleSetRow.event_seq).order_by(RuleSetRow.version)):
        count += 1
        if event is None or event.kind != "rules_changed":
            return count, f"rule_sets v{row.version}: its event {row.event_seq} is not a rules_changed event"
        payload = json.loads(event.payload)
        wrong = _differs({"version": (row.version, payload.get("version")),
                          "rules": (json.loads(row.body), payload.get("rules")),
                          "created_by": (row.created_by, event.actor), "reason": (row.reason, payload.get("reason"))})
        if wrong:
            return count, f"rule_sets v{row.version} (event {event.seq}): {wrong}"
    if count != made:
        return count, f"rule_sets: the log saved {made} rule set(s), the table holds {count} (deleted)"
    return count, None


_PRINCIPALS = (("api_keys", ApiKey, "id", "api_key_created", "api_key_revoked", None, "key_id", "revoked_at", "key"),
               ("users", User, "name", "user_created", "user_disabled", "user_enabled", "name", "disabled_at", "user"))
"""Who may act, as (table, model, its key column, the created, ended and (for users) enabled-again event kinds, the
payload's key field, the ended column, a word for one)."""


def _principals(uow: UnitOfWork, table: str, model: Any, column: str, created: str, ended: str, again: str | None,
                field: str, ended_at: str, word: str) -> tuple[int, str | None]:
    """TABLE's rows, and the first its created, ended and enabled-again events do not leave as it is: one no event
    created (a key or a user added with SQL), a role (or a key's name) other than it was created with, one ended by
    the log but active in the table (a revoked key brought back), or one created and gone."""
    from sqlalchemy import select

    made: dict[str, dict[str, Any]] = {}
    gone: set[str] = set()
    kinds = (created, ended) if again is None else (created, ended, again)
    for kind, payload in uow.session.execute(select(EvidenceEvent.kind, EvidenceEvent.payload).where(
            EvidenceEvent.kind.in_(kinds)).order_by(EvidenceEvent.seq)):
        record = json.loads(payload)
        if kind == created:
            made[str(record.get(field))] = record
        elif kind == ended:
            gone.add(str(record.get(field)))
        else:
            gone.discard(str(record.get(field)))
    held = {getattr(row, column): row for row in uow.session.scalars(select(model))}
    for key in sorted(set(made) | set(held)):
        if key not in held:
            return len(held), f"{table}: {word} {key} was created by the log, but is not in the table (deleted)"
        row = held[key]
        if key not in made:
            return len(held), f"{table}: {word} {key} (role {row.role}) is in the table, but no event created it"
        facts = {"role": (row.role, made[key].get("role"))}
        if "name" in made[key]:
            facts["name"] = (row.name, made[key].get("name"))
        if wrong := _differs(facts):
            return len(held), f"{table}: {word} {key}: {wrong}"
        if (getattr(row, ended_at) is None) == (key in gone):
            state = "active in the table, but ended by the log" if key in gone else "ended in the table, not by the log"
            return len(held), f"{table}: {word} {key} is {state}"
    return len(held), None


def _complete(uow: UnitOfWork) -> str | None:
    """Every row the log's events made is still there, once: each row was checked against the event it names, so
    what is left to find is a row deleted, or a copy of one added (naming the same event). The first such, or None.
    Outcomes are one row per assessment, naming the last event that changed it. The database does the counting;
    only the events that make labels are read, and in order, beside their rows' counts."""
    from sqlalchemy import and_, func, select

    for table, model, kinds in (("assessments", Assessment, ("assessment",)),
                                ("case_notes", CaseNote, ("case_note", "case_appealed")),
                                ("inspections", Inspection, ("inspection",))):
        gone = uow.session.execute(select(EvidenceEvent.seq).outerjoin(model, model.event_seq == EvidenceEvent.seq)
                                   .where(EvidenceEvent.kind.in_(kinds), model.event_seq.is_(None))
                                   .order_by(EvidenceEvent.seq).limit(1)).scalar()
        if gone is not None:
            return f"{table}: event {gone} made a row, the table holds none (deleted)"
        copied = uow.session.execute(select(model.event_seq, func.count()).group_by(model.event_seq)
                                     .having(func.count() > 1).order_by(model.event_seq).limit(1)).first()
        if copied is not None:
            return f"{table}: {copied[1]} rows name event {copied[0]}, which made 1 (a copy was added)"
    problem = _labels_complete(uow)
    if problem is not None:
        return problem
    last = (select(EvidenceEvent.subject.label("assessment_id"), func.max(EvidenceEvent.seq).label("seq"))
            .where(EvidenceEvent.kind == "outcome_changed").group_by(EvidenceEvent.subject).subquery())
    stale = uow.session.execute(select(last.c.assessment_id, last.c.seq, Outcome.event_seq)
                                .outerjoin(Outcome, Outcome.assessment_id == last.c.assessment_id)
                                .where(~and_(Outcome.event_seq.is_not(None), Outcome.event_seq == last.c.seq))
                                .order_by(last.c.assessment_id).limit(1)).first()
    if stale is None:
        return None
    assessment_id, seq, named = stale
    if named is None:
        return f"outcomes: the outcome of {assessment_id} (event {seq}) is not there (deleted)"
    return f"outcomes row {assessment_id} names event {named}, but event {seq} changed it since"


def _labels_complete(uow: UnitOfWork) -> str | None:
    """The labels each case_closed or inspection event made (read in order, one at a time) against the count of
    label rows naming it (read in the same order)."""
    from sqlalchemy import func, select

    events = uow.session.execute(select(EvidenceEvent.seq, EvidenceEvent.kind, EvidenceEvent.payload)
                                 .where(EvidenceEvent.kind.in_(("case_closed", "inspection")))
                                 .order_by(EvidenceEvent.seq).execution_options(yield_per=2000))
    rows = uow.session.execute(select(Label.event_seq, func.count()).group_by(Label.event_seq)
                               .order_by(Label.event_seq).execution_options(yield_per=2000))
    try:
        held = next(rows, None)
        for seq, kind, payload in events:
            record = json.loads(payload)
            made = (sum(1 for x in record.get("labels", []) if x.get("label")) if kind == "case_closed"
                    else int(bool(record.get("label"))))
            if held is not None and held[0] < seq:  # rows naming an event that makes no labels
                return f"labels: {held[1]} row(s) name event {held[0]}, which made none (added)"
            found = held[1] if held is not None and held[0] == seq else 0
            if found != made:
                return f"labels: event {seq} made {made} row(s), the table holds {found} " + \
                       ("(deleted)" if found < made else "(a copy was added)")
            if found:
                held = next(rows, None)
        if held is not None:
            return f"labels: {held[1]} row(s) name event {held[0]}, which made none (added)"
    finally:
        events.close()
        rows.close()
    return None


def _check_table(uow: UnitOfWork, model: Any, table: str, problem_of: Any, rows: dict[str, int]) -> str | None:
    """The first row of TABLE (MODEL) its event does not bear out, or that names an event the log lacks."""
    from sqlalchemy import select

    query = (select(model, EvidenceEvent).join(EvidenceEvent, EvidenceEvent.seq == model.event_seq)
             .order_by(model.event_seq).execution_options(yield_per=2000))
    result = uow.session.execute(query)
    try:  # a server-side cursor on PostgreSQL: closed however the loop ends
        for row, event in result:
            rows[table] += 1
            problem = problem_of(row, event, json.loads(event.payload))
            if problem is not None and table == "assessments" and problem.startswith("case_id") and ";" not in problem:
                problem = _later_case(uow, row)  # a case an inspection or an appeal put it in after its answer
            if problem is not None:
                key = getattr(row, "id", None) or getattr(row, "assessment_id", None)
                return f"{table} row {key} (event {event.seq}): {problem}"
    finally:
        result.close()
    orphan = uow.session.execute(select(model).outerjoin(EvidenceEvent, EvidenceEvent.seq == model.event_seq)
                                 .where(EvidenceEvent.seq.is_(None)).limit(1)).scalar_one_or_none()
    if orphan is not None:
        key = getattr(orphan, "id", None) or getattr(orphan, "assessment_id", None)
        return f"{table} row {key} names event {orphan.event_seq}, which the log does not hold"
    return None


def _differs(pairs: dict[str, tuple[Any, Any]]) -> str | None:
    wrong = [f"{name} {shown!r} (the event says {recorded!r})" for name, (shown, recorded) in pairs.items()
             if shown != recorded]
    return "; ".join(wrong) or None


def _assessment_problem(row: Assessment, event: EvidenceEvent, payload: dict[str, Any]) -> str | None:
    if event.kind != "assessment" or event.subject != row.id:
        return f"its event is a {event.kind} of {event.subject}, not this assessment"
    response, request = payload.get("response", {}), payload.get("request", {})
    return _differs({
        "return_id": (row.return_id, response.get("return_id")), "customer_id": (row.customer_id,
                                                                                 request.get("customer_id")),
        "request_hash": (row.request_hash, payload.get("request_hash")),
        "score": (round(row.score, 6), response.get("score")), "decision": (row.decision, response.get("decision")),
        "risk_level": (row.risk_level, response.get("risk_level")),
        "model_version": (row.model_version, response.get("model_version")),
        "policy_version": (row.policy_version, response.get("policy_version")),
        "refund_amount": (row.refund_amount, request.get("refund_amount")),
        "case_id": (row.case_id, response.get("case_id"))})


def _later_case(uow: UnitOfWork, row: Assessment) -> str | None:
    """None when ROW's case_id, absent from its answer, was given by a later case event naming it (`cases.attach`)."""
    from sqlalchemy import select

    events = uow.session.execute(select(EvidenceEvent.payload).where(
        EvidenceEvent.subject == row.case_id, EvidenceEvent.kind.in_(("case_opened", "case_joined")),
        EvidenceEvent.seq > row.event_seq)).scalars()
    if any(json.loads(p).get("assessment_id") == row.id for p in events):
        return None
    return f"case_id {row.case_id!r}: neither its answer nor a later case event puts it there"


def _note_problem(row: CaseNote, event: EvidenceEvent, payload: dict[str, Any]) -> str | None:
    if event.kind not in ("case_note", "case_appealed"):
        return f"its event is a {event.kind}, not a case_note or case_appealed"
    return _differs({"body": (row.body, payload.get("note")), "author": (row.author, event.actor),
                     "case_id": (row.case_id, payload.get("case_id"))})


def _label_problem(row: Label, event: EvidenceEvent, payload: dict[str, Any]) -> str | None:
    if event.kind == "inspection":
        return _differs({"return_id": (row.return_id, payload.get("return_id")),
                         "label": (row.label, payload.get("label")), "source": (row.source, "inspection"),
                         "labelled_at": (chain.utc_text(row.labelled_at),
                                         payload.get("labelled_at", payload.get("inspected_at"))),
                         "actor": (row.actor, event.actor), "case_id": (row.case_id, payload.get("case_id")),
                         "reason": (row.reason, payload.get("reason"))})
    if event.kind != "case_closed":
        return f"its event is a {event.kind}, not a case_closed or an inspection"
    recorded = {(x.get("return_id"), x.get("label"), x.get("labelled_at")) for x in payload.get("labels", [])}
    if (row.return_id, row.label, chain.utc_text(row.labelled_at)) not in recorded:
        return f"label {row.label!r} of return {row.return_id} at {chain.utc_text(row.labelled_at)} is not one " \
               "its closing event records"
    return _differs({"actor": (row.actor, event.actor), "case_id": (row.case_id, payload.get("case_id")),
                     "reason": (row.reason, payload.get("reason"))})


def _inspection_problem(row: Inspection, event: EvidenceEvent, payload: dict[str, Any]) -> str | None:
    if event.kind != "inspection":
        return f"its event is a {event.kind}, not an inspection"
    return _differs({"return_id": (row.return_id, payload.get("return_id")),
                     "inspected_at": (chain.utc_text(row.inspected_at), payload.get("inspected_at")),
                     "outcome": (row.outcome, payload.get("outcome")), "notes": (row.notes, payload.get("notes")),
                     "actor": (row.actor, event.actor)})


def _outcome_problem(row: Outcome, event: EvidenceEvent, payload: dict[str, Any]) -> str | None:
    if event.kind != "outcome_changed" or event.subject != row.assessment_id:
        return f"its event is a {event.kind} of {event.subject}, not this assessment's outcome change"
    after = payload.get("after", {})
    return _differs({"status": (row.status, after.get("status")), "decision": (row.decision, after.get("decision")),
                     "decided_by": (row.decided_by, after.get("decided_by")), "label": (row.label, after.get("label")),
                     "appealed": (row.appealed, after.get("appealed"))})
