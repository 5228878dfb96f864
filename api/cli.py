"""The `fraud-service` command line: a face over the core services and over `training`.

Heavy libraries are imported inside the commands, so `--help` answers at once.
Exit codes: 0 success, 1 the input was rejected (validation, missing data), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fraud_service.config import Settings
from fraud_service.errors import FraudServiceError, ValidationFailed
from fraud_service.progress import Progress
from models.registry import ModelRegistry, RegistryError

EXIT_REJECTED = 1
DEMO_TEST_DAYS = 45

EPILOG = """\
environment:
  FRAUD_HOME            data directory (default ./var)
  FRAUD_DATABASE_URL    evidence database (default sqlite:///$FRAUD_HOME/fraud.db)
  FRAUD_ONLINE_STORE    sqlite (default) or redis
  FRAUD_REDIS_URL       redis://127.0.0.1:6379/0 by default
  FRAUD_HOST, FRAUD_PORT  where `serve` listens (127.0.0.1:8000)
"""


def _progress(args: argparse.Namespace) -> Progress:
    return Progress(enabled=not args.quiet)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a dataset directory and merge it into the warehouse."""
    from fraud_service.data.ingest import ingest
    from fraud_service.data.warehouse import Warehouse

    try:
        result = ingest(Path(args.directory), Warehouse(settings.warehouse_dir), _progress(args))
    except ValidationFailed as exc:
        if args.report:
            Path(args.report).write_text(json.dumps(exc.report.to_dict(), indent=2))
            print(f"full report written to {args.report}", file=sys.stderr)
        raise
    print(f"{'table':<12} {'file':<22} {'rows':>10} {'added':>10} {'updated':>9} {'unchanged':>10} {'stored':>10}")
    for name, t in result.tables.items():
        print(f"{name:<12} {t.file:<22} {t.rows:>10,} {t.added:>10,} {t.updated:>9,} {t.unchanged:>10,} "
              f"{t.total_after:>10,}")
    if result.changed:
        print(f"warehouse snapshot {result.snapshot} is current (was {result.previous or 'empty'}) "
              f"under {settings.warehouse_dir}")
    else:
        print(f"nothing changed: snapshot {result.previous} stays current")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Show the current warehouse snapshot and its tables."""
    from fraud_service.data.warehouse import Warehouse

    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        print(f"warehouse {settings.warehouse_dir} is empty: run `fraud-service ingest DIR` first")
        return EXIT_REJECTED
    print(f"snapshot {snapshot.name} ({snapshot.manifest.get('created_at')}) from {snapshot.manifest.get('source')}")
    tables = snapshot.manifest.get("tables", {})
    assert isinstance(tables, dict)
    for name, info in tables.items():
        print(f"  {name:<12} {info['rows']:>12,} rows")
    print(f"  fingerprint {snapshot.manifest.get('fingerprint')}")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Check that the configured stores are reachable and data is ingested."""
    from fraud_service.health import run_checks

    checks = run_checks(settings)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<10} {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_REJECTED


def cmd_import_online_retail(args: argparse.Namespace, settings: Settings) -> int:
    """Convert the UCI Online Retail file into a contract dataset."""
    from training.datasets.online_retail import import_online_retail

    summary = import_online_retail(Path(args.file), Path(args.out), _progress(args))
    for key, value in summary.__dict__.items():
        print(f"{key:<24} {value:>10,}")
    print(f"contract dataset written to {args.out}; next: fraud-service ingest {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a synthetic returns world in the contract."""
    from training.datasets.synthetic import WorldConfig, generate

    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed, start=args.start,
                         orders_per_year=args.orders_per_year, return_rate=args.return_rate,
                         fraud_share=args.fraud_share)
    summary = generate(config, Path(args.out), _progress(args))
    for key, value in summary.items():
        print(f"{key:<24} {value:>12,}" if isinstance(value, int) else f"{key:<24} {value:>12}")
    print(f"contract dataset written to {args.out} (ground truth in {Path(args.out) / 'ground_truth.parquet'}, "
          "never ingested)")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print the behaviour statistics of a contract dataset (return rate, time to return, ...)."""
    from training.datasets.stats import dataset_stats, render_markdown

    stats = [dataset_stats(Path(d)) for d in args.directories]
    print(json.dumps(stats, indent=2) if args.json else render_markdown(stats))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a small demo world (unless already there) and ingest it: the data half of `make run`."""
    from fraud_service.data.ingest import ingest
    from fraud_service.data.warehouse import Warehouse
    from training.datasets.synthetic import WorldConfig, generate, is_generated

    progress = _progress(args)
    out = Path(args.out)
    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed)
    if is_generated(out, config):
        progress.info(f"demo dataset in {out} is already generated with these settings")
    else:
        generate(config, out, progress)
    result = ingest(out, Warehouse(settings.warehouse_dir), progress)
    current = Warehouse(settings.warehouse_dir).current()
    assert current is not None
    print(f"demo: {config.customers:,} customers over {config.days} days generated in {out}")
    print(f"demo: ingested into {settings.warehouse_dir} (snapshot {current.name}; "
          f"{'new' if result.changed else 'unchanged'}): "
          + ", ".join(f"{current.rows(t):,} {t}" for t in ("customers", "orders", "returns", "labels")))
    from fraud_service.featurestore.source import FeatureSource

    source = FeatureSource(settings)
    if source.built_from() == current.name:
        progress.info(f"features are already built from snapshot {current.name}")
    else:
        source.build(progress)
    with progress.step("materialising the online store"):
        source.materialize()
    print(f"demo: features built from snapshot {current.name} and materialised into the "
          f"{settings.online_store} online store")
    _demo_model(settings, current.name, out, progress)
    _demo_cases(settings, out, progress)
    _demo_users(settings)
    return 0


DEMO_ASSESSED = 300


def _demo_cases(settings: Settings, dataset: Path, progress: Progress) -> None:
    """Assess the world's latest returns through the scoring service, so the analysts' queue has cases to show.

    Skipped when the evidence database already holds assessments. The online store holds today's features,
    which already count these returns themselves, so they score higher than they did when they were new.
    """
    import datetime as dt

    from sqlalchemy import func, select

    from fraud_service.bootstrap import NotReady, assessor
    from fraud_service.scoring.request import parse_request
    from fraud_service.scoring.service import request_hash
    from fraud_service.store.migrate import upgrade
    from fraud_service.store.schema import Assessment, Case
    from training.datasets.replay import Replay

    with _evidence(settings, migrated=False) as (engine, sessions):
        upgrade(engine)
        with sessions() as session:
            if session.execute(select(func.count()).select_from(Assessment)).scalar_one():
                progress.info("the evidence database already holds assessments: no demo cases added")
                return
        try:
            scoring = assessor(settings, engine, sessions, freshness=False)
        except NotReady as exc:
            print(f"demo: no cases for the analysts' queue ({exc})")
            return
        replay = Replay(dataset)
        latest = list(replay.returns.sort_values("requested_at", kind="stable").index[-DEMO_ASSESSED:])
        now = dt.datetime.now(dt.UTC)
        try:
            with progress.step(f"assessing the latest {len(latest)} returns for the analysts' queue"):
                for body in replay.bodies(latest):
                    scoring.assess(parse_request(body, now), request_hash(body), "cli:demo")
        finally:
            scoring.writer.close()
        with sessions() as session:
            cases = session.execute(select(func.count()).select_from(Case)).scalar_one()
    print(f"demo: assessed the latest {len(latest)} returns; {cases} case(s) wait in the analysts' queue")


def _demo_users(settings: Settings) -> None:
    """An analyst and an admin for the demo UI, made once; their passwords are kept in $FRAUD_HOME/demo-users.txt."""
    import os

    from fraud_service.access.users import create_user, list_users

    path = settings.home / "demo-users.txt"
    with _evidence(settings) as (_, sessions):
        with sessions() as session:
            existing = list_users(session)
        if not existing:
            lines = []
            with sessions.begin() as session:
                for name, role in (("analyst", "analyst"), ("admin", "admin")):
                    lines.append(f"{name} {create_user(session, name, role, None, 'cli:demo')}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
    if path.exists():
        logins = ", ".join(" / ".join(line.split(" ", 1)) for line in path.read_text().splitlines() if line)
        print(f"demo: analyst UI sign-in (user / password): {logins} (kept in {path})")


def _demo_model(settings: Settings, snapshot: str, dataset: Path, progress: Progress) -> None:
    """Train the demo's first model on all but the last DEMO_TEST_DAYS (skipped when one exists for this data)."""
    import pandas as pd

    from training.trainset import TrainingDataError, current_snapshot, time_range
    from training.workflow import train

    registry = ModelRegistry(settings.models_dir)
    if "production" in registry.aliases():
        record = registry.load("production")
        if record.manifest.get("data", {}).get("snapshot") == snapshot:
            progress.info(f"model {record.version} is already trained on snapshot {snapshot}")
            print(f"demo: production model {record.version} (trained on this data)")
            return
    _, last = time_range(current_snapshot(settings.warehouse_dir))
    until = (last - pd.Timedelta(days=DEMO_TEST_DAYS)).normalize()
    truth = dataset / "ground_truth.parquet"
    try:
        result = train(settings, until, truth_path=truth if truth.exists() else None, progress=progress)
    except TrainingDataError as exc:
        print(f"demo: no model trained ({exc}); use a larger world (--customers, --days)")
        return
    assert result.record is not None
    metrics = result.test["candidates"]
    ratio = metrics["model"]["average_precision"] / max(metrics["rules"]["average_precision"], 1e-9)
    print(f"demo: model {result.record.version} trained on labels known at {until.date()}; out of time its average "
          f"precision is {metrics['model']['average_precision']:.3f} ({ratio:.1f}x the rules baseline); "
          f"report {result.report_dir / 'report.html'}")


def cmd_features_build(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute the feature rows from the warehouse and apply the Feast repository."""
    from fraud_service.featurestore.source import FeatureSource

    _sync_labels(args, settings, rebuild_features=False)
    manifest = FeatureSource(settings).build(_progress(args))
    rows = manifest["rows"]
    print(f"features built from snapshot {manifest['snapshot']}: "
          + ", ".join(f"{rows[name]:,} {name} rows" for name in rows))
    print(f"feature repository: {settings.home / 'feature_repo'}; next: fraud-service features materialize")
    return 0


def cmd_features_materialize(args: argparse.Namespace, settings: Settings) -> int:
    """Load the latest feature rows into the online store, incrementally."""
    import datetime as dt

    from fraud_service.featurestore.source import FeatureSource

    end = dt.datetime.fromisoformat(args.until) if args.until else dt.datetime.now(dt.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    progress = _progress(args)
    from fraud_service.featurestore.live import LiveFacts

    source = FeatureSource(settings)
    with progress.step(f"materialising into the {settings.online_store} online store up to {end.isoformat()}"):
        source.materialize(end, full=args.full)
    pruned = LiveFacts(source).prune_ingested(end)
    print(f"online store ({settings.online_store}) holds every entity's features as of {end.isoformat()}"
          + (f"; {pruned} live fact(s) now covered by the offline rows were dropped" if pruned else ""))
    return 0


def _timestamp(text: str) -> object:
    """argparse type: a date or ISO 8601 timestamp (naive = UTC)."""
    from training.trainset import timestamp

    try:
        return timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp") from None


def _costs(args: argparse.Namespace) -> object:
    from training.thresholds import Costs

    try:
        return Costs(reviews_per_day=args.reviews_per_day, loss_per_fraud=args.loss_per_fraud,
                     review_cost=args.review_cost, inspection_cost=args.inspection_cost,
                     credit_friction=args.credit_friction, deny_friction=args.deny_friction)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _print_candidates(candidates: dict[str, dict[str, object]]) -> None:
    print(f"{'candidate':<22} {'avg prec':>9} {'ROC AUC':>8} {'prec@2%':>8} {'rec@2%':>7} {'rec@5%':>7} "
          f"{'money@2%':>9} {'Brier':>7}")
    for name, m in candidates.items():
        at = m["at_rate"]
        assert isinstance(at, dict)
        print(f"{name:<22} {m['average_precision']:>9.4f} {m['roc_auc']:>8.4f} {at['2%']['precision']:>8.4f} "
              f"{at['2%']['recall']:>7.4f} {at['5%']['recall']:>7.4f} {at['2%']['money_recall']:>9.4f} "
              f"{m['brier']:>7.4f}")
    model = candidates.get("model", {})
    by_type = model.get("by_typology")
    if isinstance(by_type, dict):
        print("recall at a 2% review rate by true typology (model): "
              + ", ".join(f"{k} {v['recall']:.2f} (n={v['returns']})" for k, v in by_type.items()))


def _sync_labels(args: argparse.Namespace, settings: Settings, rebuild_features: bool) -> None:
    """Copy analysts' labels into the warehouse (unless --no-sync); with REBUILD_FEATURES, rebuild the features
    when they were built from an older snapshot (training reads features built from the current one)."""
    from fraud_service.bootstrap import check_schema
    from fraud_service.data.labels import sync
    from fraud_service.data.warehouse import Warehouse

    progress = _progress(args)
    if not getattr(args, "no_sync", False) and _evidence_exists(settings):
        with _evidence(settings, migrated=False) as (engine, sessions):
            if check_schema(engine) is not None:
                print("labels: the evidence database has no schema yet, so no analyst labels to copy")
            else:
                print(f"labels: {sync(Warehouse(settings.warehouse_dir), sessions, progress).describe()}")
    current = Warehouse(settings.warehouse_dir).current()
    if rebuild_features and current is not None:
        from fraud_service.featurestore.source import FeatureSource

        source = FeatureSource(settings)
        if source.built_from() not in (None, current.name):
            source.build(progress)
            print(f"features rebuilt from snapshot {current.name} (they count the labels known at each time)")


def _evidence_exists(settings: Settings) -> bool:
    """False only for a SQLite evidence file that was never created (nothing to read, nothing to create)."""
    from sqlalchemy import make_url

    url = make_url(settings.database_url)
    return url.get_backend_name() != "sqlite" or bool(url.database and Path(url.database).exists())


def cmd_labels_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Copy analysts' labels from the evidence database into the warehouse's labels table."""
    _sync_labels(args, settings, rebuild_features=False)
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train a model, evaluate it out of time beside the baselines, report, and register it."""
    from training.workflow import train

    _sync_labels(args, settings, rebuild_features=True)
    result = train(settings, args.train_until, train_from=args.train_from, test_from=args.test_from,
                   test_until=args.test_until, delay_days=args.label_delay, costs=_costs(args),  # type: ignore[arg-type]
                   truth_path=Path(args.ground_truth) if args.ground_truth else None, progress=_progress(args))
    rows = result.trained.rows
    positives = rows["train_positives"] + rows["validation_positives"]
    print(f"trained on {rows['train'] + rows['validation']:,} returns ({positives:,} fraud/abuse labels), "
          f"{result.trained.best_iteration} trees")
    if result.test["candidates"]:
        window = result.test["window"]
        print(f"out of time, returns requested {window[0][:10]} to {window[1][:10]}:")
        _print_candidates(result.test["candidates"])
    else:
        print("no returns after --train-until: no out-of-time evaluation (give --test-from/--test-until)")
    p = result.policy
    print(f"policy {p.version}: inspect from {p.inspect_from:.3f}, store credit from {p.credit_from:.3f}, "
          f"review from {p.review_from:.3f}, deny from {p.deny_from:.3f}")
    if result.record is not None:
        aliases = [a for a, v in ModelRegistry(settings.models_dir).aliases().items() if v == result.record.version]
        print(f"registered model {result.record.version} ({', '.join(aliases)}) in {settings.models_dir}")
    print(f"report: {result.report_dir / 'report.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Prequential evaluation: successive train/test windows beside the rules and the production model."""
    from training.workflow import prequential

    result, report = prequential(settings, folds=args.folds, test_days=args.test_days, until=args.until,
                                 delay_days=args.label_delay,
                                 truth_path=Path(args.ground_truth) if args.ground_truth else None,
                                 progress=_progress(args))
    print(f"{len(result['folds'])} folds of {args.test_days} days; mean ± std across folds:")
    for name, summary in result["summary"].items():
        print(f"  {name:<22} " + "  ".join(f"{path} {s['mean']:.4f}±{s['std']:.4f}"
                                           for path, s in summary.items() if path in
                                           ("average_precision", "roc_auc", "at_rate.2%.recall")))
    overlapping = [i + 1 for i, fold in enumerate(result["folds"]) if fold["production_trained_on_test_window"]]
    if overlapping:
        print(f"note: the production model was trained on returns of the test window of fold(s) "
              f"{', '.join(map(str, overlapping))}: its figures there are not out of time")
    print(f"report: {report / 'report.html'}")
    return 0


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the registered models with their aliases."""
    registry = ModelRegistry(settings.models_dir)
    versions = registry.versions()
    if not versions:
        print(f"no models in {settings.models_dir}: run `fraud-service train --train-until DATE`")
        return 0
    aliases = registry.aliases()
    print(f"{'version':<8} {'aliases':<22} {'trained until':<12} {'trees':>6} {'test AP':>8}  registered")
    for version in versions:
        record = registry.load(version)
        m = record.manifest
        test = (m.get("metrics") or {}).get("test") or {}
        ap = test.get("average_precision")
        tags = ",".join(a for a, v in aliases.items() if v == version)
        print(f"{version:<8} {tags:<22} {m['label_cutoff'][:10]:<12} {m['best_iteration']:>6} "
              f"{ap if ap is None else f'{ap:.4f}':>8}  {m['registered_at']}")
    return 0


def cmd_models_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print a model's manifest and decision policy as JSON."""
    record = ModelRegistry(settings.models_dir).load(args.version)
    print(json.dumps({"manifest": record.manifest, "policy": record.policy}, indent=2))
    return 0


def _record_model_change(settings: Settings, kind: str, previous: str | None, version: str, reason: str) -> None:
    """The alias change as an evidence event, when there is an evidence database to hold it."""
    import getpass

    from fraud_service.bootstrap import check_schema
    from fraud_service.store import chain

    if not _evidence_exists(settings):
        return
    with _evidence(settings, migrated=False) as (engine, sessions):
        if check_schema(engine) is None:
            with sessions.begin() as session:
                chain.append(session, kind=kind, subject=f"model:{version}", actor=f"cli:{getpass.getuser()}",
                             payload={"alias": "production", "from": previous, "to": version, "reason": reason})


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> int:
    """Make a version the production model."""
    registry = ModelRegistry(settings.models_dir)
    previous = registry.aliases().get("production")
    version = registry.promote(args.version)
    _record_model_change(settings, "model_promoted", previous, version, "promoted with the CLI")
    print(f"{version} is now production (running services switch to it within 5 seconds)")
    return 0


def cmd_models_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Put back the previous production model."""
    before, after = ModelRegistry(settings.models_dir).rollback()
    _record_model_change(settings, "model_rolled_back", before, after, "rolled back with the CLI")
    print(f"production rolled back from {before} to {after} (running services switch within 5 seconds)")
    return 0


def cmd_thresholds(args: argparse.Namespace, settings: Settings) -> int:
    """Propose new thresholds for a model from capacity and costs, and record them as its next policy."""
    from training.workflow import repolicy

    policy = repolicy(settings, args.version, _costs(args), days=args.days,  # type: ignore[arg-type]
                      progress=_progress(args))
    print(json.dumps(policy.to_dict(), indent=2))
    print(f"policy {policy.version} recorded; running services use it within 5 seconds when that model is "
          "production")
    return 0


def cmd_score_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Score the returns of a window with a registered model."""
    from training.batch import score_batch
    from training.trainset import Window

    result = score_batch(settings, Window(args.start, args.end), Path(args.out), args.model, _progress(args))
    print(f"scored {result.rows:,} returns with model {result.model_version} (policy {result.policy_version}): "
          + ", ".join(f"{v:,} {k}" for k, v in sorted(result.decisions.items())))
    print(f"written to {result.out}")
    return 0


@contextlib.contextmanager
def _evidence(settings: Settings, *, migrated: bool = True) -> Iterator[tuple[Any, Any]]:
    """The evidence database's engine and sessions, disposed afterwards; with MIGRATED, only at the current
    schema (else the error says to run `fraud-service db upgrade`)."""
    from fraud_service.bootstrap import check_schema, database

    engine, sessions = database(settings)
    try:
        problem = check_schema(engine) if migrated else None
        if problem:
            raise FraudServiceError(problem)
        yield engine, sessions
    finally:
        engine.dispose()


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Create or migrate the evidence database schema to the newest revision."""
    from fraud_service.store.migrate import current_revision, head_revision, upgrade

    with _evidence(settings, migrated=False) as (engine, _):
        before = current_revision(engine)
        upgrade(engine)
        head = head_revision()
    where = engine.url.render_as_string(hide_password=True)
    if before == head:
        print(f"evidence database {where} is already at schema {head}")
    else:
        print(f"evidence database {where} upgraded from {before or 'empty'} to schema {head}")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create an API key; the key is printed once and only its hash is kept."""
    import getpass

    from fraud_service.access.keys import create_key

    with _evidence(settings) as (_, sessions), sessions.begin() as session:
        key = create_key(session, args.role, args.name or f"{args.role} key", f"cli:{getpass.getuser()}")
    print(key)
    print(f"created a {args.role} key; it is shown only now: store it, send it as `Authorization: Bearer KEY`",
          file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List API keys (ids, roles, names; never the secrets)."""
    from fraud_service.access.keys import list_keys
    from fraud_service.store.chain import utc_text

    with _evidence(settings) as (_, sessions), sessions() as session:
        keys = list_keys(session)
    if not keys:
        print("no API keys: create one with `fraud-service keys create --role ROLE`")
        return 0
    print(f"{'id':<14} {'role':<8} {'created':<26} {'revoked':<26} name")
    for k in keys:
        revoked = utc_text(k.revoked_at)[:19] if k.revoked_at else "-"
        print(f"{k.id:<14} {k.role:<8} {utc_text(k.created_at)[:19]:<26} {revoked:<26} {k.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke an API key by its id (running workers stop accepting it within 30 s)."""
    import getpass

    from fraud_service.access.keys import revoke_key

    with _evidence(settings) as (_, sessions), sessions.begin() as session:
        revoke_key(session, args.key_id, f"cli:{getpass.getuser()}")
    print(f"key {args.key_id} revoked (running workers honour it within 30 seconds)")
    return 0


def cmd_evidence_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the whole evidence hash chain; exit 1 and name the first broken event if it is not intact."""
    from fraud_service.store.chain import verify

    if args.bundle:
        return _verify_bundle(Path(args.bundle))
    with _evidence(settings) as (_, sessions), sessions() as session:
        result = verify(session)
    if result.ok:
        print(f"evidence chain intact: {result.events:,} events, head {result.head_hash}")
        return 0
    print(f"evidence chain BROKEN at event {result.broken_at}: {result.problem} "
          f"({result.events:,} events verified before it)")
    return EXIT_REJECTED


def _verify_bundle(path: Path) -> int:
    """Check an exported evidence bundle offline (no database needed)."""
    from fraud_service.cases import bundle

    data, raw = bundle.read(path)
    check = bundle.verify(data)
    case_id = data.get("case", {}).get("case_id")
    if check.ok:
        print(f"bundle of case {case_id} verified: {check.events} evidence event(s) hash to their links, "
              f"{check.links} link(s) run unbroken to head event {check.head.get('seq')} "
              f"({check.head.get('hash')}); its content matches the events")
        print(f"bundle SHA-256 {bundle.digest(raw)} (the log's case_bundle_exported event names it)")
        return 0
    print(f"bundle of case {case_id} does NOT verify:")
    for problem in check.problems:
        print(f"  - {problem}")
    return EXIT_REJECTED


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a person's account for the analyst UI; the password is generated and printed unless given on stdin."""
    import getpass

    from fraud_service.access.users import create_user

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    with _evidence(settings) as (_, sessions), sessions.begin() as session:
        password = create_user(session, args.name, args.role, password, f"cli:{getpass.getuser()}")
    if not args.password_stdin:
        print(password)
        print(f"created {args.role} {args.name}; the password above is shown only now", file=sys.stderr)
    else:
        print(f"created {args.role} {args.name}", file=sys.stderr)
    return 0


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    """List UI users."""
    from fraud_service.access.users import list_users
    from fraud_service.store.chain import utc_text

    with _evidence(settings) as (_, sessions), sessions() as session:
        users = list_users(session)
    if not users:
        print("no users: create one with `fraud-service users create NAME --role analyst`")
        return 0
    print(f"{'name':<24} {'role':<8} {'created':<20} disabled")
    for u in users:
        print(f"{u.name:<24} {u.role:<8} {utc_text(u.created_at)[:19]:<20} "
              f"{utc_text(u.disabled_at)[:19] if u.disabled_at else '-'}")
    return 0


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    """Disable a user (signed-in sessions end at their next request)."""
    import getpass

    from fraud_service.access.users import disable_user

    with _evidence(settings) as (_, sessions), sessions.begin() as session:
        disable_user(session, args.name, f"cli:{getpass.getuser()}")
    print(f"user {args.name} disabled")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate the evidence database, then run the service under gunicorn on FRAUD_HOST:FRAUD_PORT."""
    import os
    import shutil

    from fraud_service.store.migrate import upgrade

    with _evidence(settings, migrated=False) as (engine, _):
        upgrade(engine)
    metrics_dir = settings.home / "metrics"  # api.metrics sums the workers' figures from here
    shutil.rmtree(metrics_dir, ignore_errors=True)  # figures of an earlier run's workers are not this run's
    metrics_dir.mkdir(parents=True)
    # prometheus_client reads PROMETHEUS_MULTIPROC_DIR; Feast, on import, makes its own directory unless
    # PROMETHEUS_MULTIPROCESS_DIR is set: both point at ours
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = str(metrics_dir)
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"serving on http://{host}:{port}/ (Ctrl-C stops); analyst UI: http://{host}:{port}/ui/ "
          "(users: fraud-service users create NAME); API keys: fraud-service keys create --role ROLE", flush=True)
    argv = ["gunicorn", "--workers", str(args.workers), "--threads", str(args.threads),
            "--worker-class", "api.gunicorn_worker.BalancedThreadWorker", "--bind", f"{host}:{port}",
            "--config", "python:api.gunicorn_conf",
            "api.app:create_app()"]
    gunicorn = Path(sys.executable).with_name("gunicorn")
    os.execv(str(gunicorn), argv)
    return 0  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fraud-service",
        description="Catch fraud and abuse in e-commerce returns: ingest data, generate worlds, serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace, Settings], int], help_text: str,
            description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("ingest", cmd_ingest, "validate a contract dataset and add it to the warehouse",
            "Read DIR (NAME.parquet or NAME.csv per contract table: customers, orders, order_items,\n"
            "returns, labels, inspections), check every row against the data contract, and merge it\n"
            "into the warehouse under $FRAUD_HOME/warehouse. With any problem nothing is written and\n"
            "the exit code is 1; the report names file, row, column, value and what was expected.\n"
            "Re-ingesting the same rows changes nothing; a later period adds its rows.")
    p.add_argument("directory", metavar="DIR", help="dataset directory")
    p.add_argument("--report", metavar="FILE", help="also write the problem report as JSON to FILE")

    add("status", cmd_status, "show the warehouse's current snapshot",
        "Print the current warehouse snapshot: its tables, row counts and data fingerprint.")

    add("doctor", cmd_doctor, "check the configuration and that every store answers",
        "Check the warehouse, the evidence database (FRAUD_DATABASE_URL) and, when\n"
        "FRAUD_ONLINE_STORE=redis, the Redis server. Exit code 1 when any check fails.")

    p = add("import-online-retail", cmd_import_online_retail,
            "convert the UCI Online Retail file into a contract dataset",
            "Map the UCI Online Retail transactions (invoices starting with C are returns) onto the\n"
            "contract. Tokens, delivery times and return reasons, which the source lacks, are\n"
            "synthesised deterministically (see docs/data.md). Rows without a customer are dropped.")
    p.add_argument("file", metavar="FILE", help="online_retail.parquet (or .csv)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the dataset to")

    p = add("generate", cmd_generate, "generate a synthetic returns world with fraud and abuse",
            "Write a realistic returns history in the contract: legitimate behaviour calibrated on\n"
            "the Online Retail data, plus fraud rings, empty-box and item-switch returns,\n"
            "wardrobing, fake item-not-received claims, refund diversion and account takeover,\n"
            "with late, partial and sometimes wrong labels. Deterministic for a seed. Also writes\n"
            "DIR/ground_truth.parquet (the true typology of every return), which ingest ignores.")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the dataset to")
    _world_options(p)
    p.add_argument("--orders-per-year", type=float, default=None,
                   help="mean orders per customer per year (default: Online Retail's 4.0)")
    p.add_argument("--return-rate", type=float, default=None,
                   help="mean share of orders with a return (default: Online Retail's 0.18)")
    p.add_argument("--fraud-share", type=float, default=None,
                   help="share of customers who are fraudsters or abusers (default 0.03)")

    p = add("stats", cmd_stats, "behaviour statistics of a contract dataset",
            "Return rate, time from order to return, basket sizes and returner concentration of\n"
            "each dataset DIR, side by side as a Markdown table (or JSON).")
    p.add_argument("directories", metavar="DIR", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")

    p = add("demo", cmd_demo, "generate a demo world, ingest it, build features, train (what `make run` does first)",
            "Generate a small synthetic world into --out (skipped when it is already there with the\n"
            "same settings), ingest it into the warehouse, build the feature store from it (skipped\n"
            "when already built from the same snapshot), materialise the online store, and train and\n"
            f"register a first model on all but the last {DEMO_TEST_DAYS} days (skipped when the production\n"
            "model was trained on the same data).")
    p.add_argument("--out", required=True, metavar="DIR")
    _world_options(p, customers=5000, days=270)

    features = sub.add_parser("features", help="build and materialise the feature store",
                              description="The Feast feature store of return histories.")
    fsub = features.add_subparsers(dest="features_command", metavar="STEP", required=True)
    p = fsub.add_parser("build", help="compute feature rows from the warehouse and apply the Feast repository",
                        description="Compute every entity's timestamped feature rows (customer, address, payment,\n"
                                    "device and refund-destination tokens) from the current warehouse snapshot with\n"
                                    "DuckDB, write them under $FRAUD_HOME/features, and register the Feast\n"
                                    "repository in $FRAUD_HOME/feature_repo. See docs/features.md.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-sync", action="store_true",
                   help="do not copy analysts' labels into the warehouse first (`labels sync`)")
    p.set_defaults(func=cmd_features_build)
    p = fsub.add_parser("materialize", help="load the latest rows into the online store (incremental)",
                        description="Copy each entity's latest feature row up to --until (default now) into the\n"
                                    "online store (sqlite, or Redis when FRAUD_ONLINE_STORE=redis). Only rows newer\n"
                                    "than the last materialisation are read.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--until", metavar="TIMESTAMP", help="ISO 8601 end (default: now)")
    p.add_argument("--full", action="store_true",
                   help="reload every entity, not only what changed (after switching the online store)")
    p.set_defaults(func=cmd_features_materialize)

    p = add("train", cmd_train, "train a model, evaluate it out of time, register it",
            "Build the training set through the feature store (each return's features as of its\n"
            "requested_at), label it with the labels known at --train-until (fraud or abuse = 1; legit\n"
            "or unlabelled = 0; returns of the last --label-delay days before the cutoff are left out\n"
            "because their labels have not arrived yet), train LightGBM with early stopping on the\n"
            "latest 20% of the training rows, calibrate, and evaluate on the returns requested from\n"
            "--test-from (default --train-until) to --test-until (default: the last request minus the\n"
            "label delay, so the test labels have had time to arrive) beside the rules baselines and\n"
            "the production model. Proposes decision thresholds from review capacity and\n"
            "costs, writes an HTML + JSON report under $FRAUD_HOME/reports and registers\n"
            "the model as candidate (and production when there is none). Analysts' labels from\n"
            "closed cases are copied into the warehouse first (`labels sync`; the features are rebuilt\n"
            "when that adds any). See docs/training.md.")
    p.add_argument("--no-sync", action="store_true",
                   help="do not copy analysts' labels into the warehouse first")
    p.add_argument("--train-until", required=True, type=_timestamp, metavar="DATE",
                   help="label cutoff: train on what was known at this time")
    p.add_argument("--train-from", type=_timestamp, metavar="DATE", help="first request time to train on")
    p.add_argument("--test-from", type=_timestamp, metavar="DATE", help="test window start (default --train-until)")
    p.add_argument("--test-until", type=_timestamp, metavar="DATE",
                   help="test window end (default: last request minus the label delay)")
    _training_options(p)
    _cost_options(p)

    p = add("evaluate", cmd_evaluate, "prequential evaluation beside the rules and the production model",
            "Train on everything before each of --folds successive test windows of --test-days days\n"
            "(ending at --until, default the last request minus the label delay) and test on the window;\n"
            "report every metric per fold and its mean and spread, for the model, the rules baseline and the\n"
            "production model, as HTML + JSON under $FRAUD_HOME/reports. Nothing is registered.")
    p.add_argument("--folds", type=_positive_int, default=3, help="number of test windows (default 3)")
    p.add_argument("--test-days", type=_positive_int, default=30, help="days per test window (default 30)")
    p.add_argument("--until", type=_timestamp, metavar="DATE", help="end of the last test window")
    _training_options(p)

    models = sub.add_parser("models", help="the model registry: list, show, promote, rollback",
                            description="Registered models (FRAUD_MODEL_DIR, default $FRAUD_HOME/models). V is a\n"
                                        "version (v0003 or 3), latest, production or candidate.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="versions with aliases and test metrics").set_defaults(func=cmd_models_list)
    for name, func, text in (("show", cmd_models_show, "print a model's manifest and policy"),
                             ("promote", cmd_models_promote, "make V the production model")):
        q = msub.add_parser(name, help=text)
        q.add_argument("version", metavar="V")
        q.set_defaults(func=func)
    msub.add_parser("rollback", help="put back the production model the current one replaced").set_defaults(
        func=cmd_models_rollback)

    p = add("thresholds", cmd_thresholds, "propose decision thresholds for a model from capacity and costs",
            "Score the returns of the last --days days with model V, choose the probability at which\n"
            "each decision (approve after inspection, store credit only, review, deny) becomes the\n"
            "cheapest given the costs, narrow the review band to the team's capacity, and record the\n"
            "result as the model's next policy version (V.pN).")
    p.add_argument("version", metavar="V", nargs="?", default="production", help="model (default production)")
    p.add_argument("--days", type=_positive_int, default=30, help="recent days to size the bands on (default 30)")
    _cost_options(p)

    p = add("score-batch", cmd_score_batch, "score every return of a window with a registered model",
            "Score each ingested return requested in [--from, --to) with the features it had at its own\n"
            "requested_at, and write return_id, score and decision to FILE (.csv or .parquet). Uses the\n"
            "production model unless --model names another: run it twice for a shadow comparison.")
    p.add_argument("--from", dest="start", required=True, type=_timestamp, metavar="DATE")
    p.add_argument("--to", dest="end", required=True, type=_timestamp, metavar="DATE")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, .csv or .parquet")
    p.add_argument("--model", default="production", metavar="V", help="model version or alias (default production)")

    p = add("serve", cmd_serve, "run the web service (gunicorn)",
            "Serve the HTTP API and pages under gunicorn on FRAUD_HOST:FRAUD_PORT.")
    p.add_argument("--host", default=None, help="interface (default FRAUD_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default FRAUD_PORT or 8000)")
    p.add_argument("--workers", type=_positive_int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=_positive_int, default=8,
                   help="threads per worker (default 8: a thread holds its connection while its evidence commits; "
                        "8 answered more requests than 4 at 16 connections in the load benchmark)")

    db = sub.add_parser("db", help="the evidence database schema",
                        description="The evidence database (FRAUD_DATABASE_URL, default SQLite in $FRAUD_HOME).")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dsub.add_parser("upgrade", help="create or migrate the schema to the newest revision (Alembic)").set_defaults(
        func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys with roles: create, list, revoke",
                          description="API keys for `Authorization: Bearer KEY`. Roles: scoring (the returns\n"
                                      "workflow: assess, read assessments), analyst (read assessments and lists,\n"
                                      "work cases), admin (everything, including allow/block lists).\n"
                                      "Only a hash of each key is stored: a key is shown once, when created.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser("create", help="create a key and print it (once)")
    q.add_argument("--role", required=True, choices=("scoring", "analyst", "admin"))
    q.add_argument("--name", help="who or what the key is for (shown in `keys list` and in evidence)")
    q.set_defaults(func=cmd_keys_create)
    ksub.add_parser("list", help="ids, roles, names, creation and revocation times").set_defaults(func=cmd_keys_list)
    q = ksub.add_parser("revoke", help="revoke a key by its id (the part after fsk_)")
    q.add_argument("key_id", metavar="ID")
    q.set_defaults(func=cmd_keys_revoke)

    evidence = sub.add_parser("evidence", help="check the evidence log",
                              description="The append-only evidence log, each event chained to the previous by hash.")
    esub = evidence.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    q = esub.add_parser("verify", help="re-hash the whole chain (or check a case's exported bundle offline); exit 1 "
                                       "naming the first edited, inserted or missing event")
    q.add_argument("--bundle", metavar="FILE", help="an evidence bundle (the .zip from the UI or "
                                                   "/v1/cases/ID/bundle, or its .json): checked without the database")
    q.set_defaults(func=cmd_evidence_verify)

    users = sub.add_parser("users", help="people who sign in to the analyst UI: create, list, disable",
                           description="Accounts for the analyst UI (/ui/). Roles: analyst (works cases), admin\n"
                                       "(also everything admin keys may do). Passwords are kept as scrypt hashes.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    q = usub.add_parser("create", help="create a user; prints a generated password once")
    q.add_argument("name", metavar="NAME", help="user name: a-z, 0-9, '.', '_', '-'")
    q.add_argument("--role", default="analyst", choices=("analyst", "admin"), help="default analyst")
    q.add_argument("--password-stdin", action="store_true",
                   help="read the password (at least 10 characters) from the first line of stdin")
    q.set_defaults(func=cmd_users_create)
    usub.add_parser("list", help="names, roles, creation and disabling times").set_defaults(func=cmd_users_list)
    q = usub.add_parser("disable", help="disable a user")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_users_disable)

    labels = sub.add_parser("labels", help="analysts' labels: copy them into the warehouse",
                            description="Closing a case labels its returns (fraud, abuse, legit) in the evidence\n"
                                        "database; `labels sync` appends them to the warehouse's labels table in a\n"
                                        "new snapshot. `train` and `features build` run it first.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = labels.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    lsub.add_parser("sync", help="copy labels not yet in the warehouse").set_defaults(func=cmd_labels_sync)
    return parser


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-delay", type=float, default=None, metavar="DAYS",
                   help="days before the cutoff whose returns are too fresh to train on (default: the 75th "
                        "percentile of how late fraud/abuse labels arrived, at most 30%% of the window)")
    p.add_argument("--ground-truth", metavar="FILE",
                   help="a generator's ground_truth.parquet: adds recall by true typology to the report")


def _cost_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reviews-per-day", type=float, default=50.0, metavar="N",
                   help="analyst reviews a day (default 50)")
    p.add_argument("--loss-per-fraud", type=float, default=None, metavar="N",
                   help="loss when a fraud is paid out (default: mean refund of labelled fraud/abuse)")
    p.add_argument("--review-cost", type=float, default=12.0, metavar="N", help="cost of one review (default 12)")
    p.add_argument("--inspection-cost", type=float, default=4.0, metavar="N", help="cost of one inspection (default 4)")
    p.add_argument("--credit-friction", type=float, default=3.0, metavar="N",
                   help="cost of forcing store credit on an honest customer (default 3)")
    p.add_argument("--deny-friction", type=float, default=60.0, metavar="N",
                   help="cost of denying an honest customer (default 60)")


def _world_options(p: argparse.ArgumentParser, customers: int = 20000, days: int = 365) -> None:
    p.add_argument("--customers", type=_positive_int, default=customers,
                   help=f"number of customers (default {customers})")
    p.add_argument("--days", type=_positive_int, default=days, help=f"days of history (default {days})")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--start", default="2025-01-01", help="first day, YYYY-MM-DD (default 2025-01-01)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fraud-service` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except (FraudServiceError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):  # the evidence database is down or misconfigured
            print(f"error: the evidence database ({settings.database_url.split('@')[-1]}) failed: "
                  f"{getattr(exc, 'orig', exc)}", file=sys.stderr)
            return EXIT_REJECTED
        raise
    except KeyboardInterrupt:
        print("interrupted; nothing half-written is left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
