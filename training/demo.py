"""The demo world behind `make run`: generate, ingest, build features, train, fill the analysts' queue, make users.

Every step is skipped when its result is already there (the same world, the same snapshot, a model
trained on it, assessments in the evidence database, users), so running it again is cheap and
changes nothing. What happened is said through SAY, one sentence a step.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fraud_service.access.users import create_users, list_users
from fraud_service.bootstrap import Database, assessor, evidence
from fraud_service.config import Settings
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import NotReady, TrainingDataError
from fraud_service.featurestore.source import FeatureSource
from fraud_service.health import evidence_counts
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring.evidence import request_hash
from fraud_service.scoring.request import parse_request
from models.registry import ModelRegistry
from training.datasets.replay import Replay
from training.datasets.synthetic import WorldConfig, generate, is_generated
from training.trainset import current_snapshot, time_range
from training.workflow import train

TEST_DAYS = 45
ASSESSED = 300
Say = Callable[[str], None]


def run(settings: Settings, config: WorldConfig, out: Path, progress: Progress = SILENT, say: Say = print) -> None:
    """The whole demo: data, features, model, cases, users."""
    snapshot = world(settings, config, out, progress, say)
    features(settings, snapshot, progress, say)
    model(settings, snapshot, out, progress, say)
    cases(settings, out, progress, say)
    users(settings, say)


def world(settings: Settings, config: WorldConfig, out: Path, progress: Progress, say: Say) -> str:
    """Generate the world (unless there with these settings) and ingest it; the current snapshot's name."""
    if is_generated(out, config):
        progress.info(f"demo dataset in {out} is already generated with these settings")
    else:
        generate(config, out, progress)
    result = ingest(out, Warehouse(settings.warehouse_dir), progress)
    current = Warehouse(settings.warehouse_dir).current()
    assert current is not None
    say(f"demo: {config.customers:,} customers over {config.days} days generated in {out}")
    say(f"demo: ingested into {settings.warehouse_dir} (snapshot {current.name}; "
        f"{'new' if result.changed else 'unchanged'}): "
        + ", ".join(f"{current.rows(t):,} {t}" for t in ("customers", "orders", "returns", "labels")))
    return current.name


def features(settings: Settings, snapshot: str, progress: Progress, say: Say) -> None:
    """Build the features from SNAPSHOT (unless built from it) and materialise the online store."""
    source = FeatureSource(settings)
    if source.built_from() == snapshot:
        progress.info(f"features are already built from snapshot {snapshot}")
    else:
        source.build(progress)
    with progress.step("materialising the online store"):
        source.materialize()
    say(f"demo: features built from snapshot {snapshot} and materialised into the {settings.online_store} "
        "online store")


def model(settings: Settings, snapshot: str, dataset: Path, progress: Progress, say: Say) -> None:
    """Train the demo's first model on all but the last TEST_DAYS (skipped when one exists for this data)."""
    registry = ModelRegistry(settings.models_dir)
    if "production" in registry.aliases():
        record = registry.load("production")
        if record.manifest.get("data", {}).get("snapshot") == snapshot:
            progress.info(f"model {record.version} is already trained on snapshot {snapshot}")
            say(f"demo: production model {record.version} (trained on this data)")
            return
    _, last = time_range(current_snapshot(settings.warehouse_dir))
    until = (last - pd.Timedelta(days=TEST_DAYS)).normalize()
    truth = dataset / "ground_truth.parquet"
    try:
        result = train(settings, until, truth_path=truth if truth.exists() else None, progress=progress)
    except TrainingDataError as exc:
        say(f"demo: no model trained ({exc}); use a larger world (--customers, --days)")
        return
    assert result.record is not None
    metrics = result.test["candidates"]
    ratio = metrics["model"]["average_precision"] / max(metrics["rules"]["average_precision"], 1e-9)
    say(f"demo: model {result.record.version} trained on labels known at {until.date()}; out of time its average "
        f"precision is {metrics['model']['average_precision']:.3f} ({ratio:.1f}x the rules baseline); "
        f"report {result.report_dir / 'report.html'}")


def cases(settings: Settings, dataset: Path, progress: Progress, say: Say) -> None:
    """Assess the world's latest returns through the scoring service, so the analysts' queue has cases to show.

    Skipped when the evidence database already holds assessments. The online store holds today's features,
    which already count these returns themselves, so they score higher than they did when they were new.
    """
    with evidence(settings, migrated=False) as db:
        db.upgrade()
        if evidence_counts(db.uow()).assessments:
            progress.info("the evidence database already holds assessments: no demo cases added")
            return
        try:
            scoring = assessor(settings, db.engine, db.sessions, freshness=False)
        except NotReady as exc:
            say(f"demo: no cases for the analysts' queue ({exc})")
            return
        replay = Replay(dataset)
        latest = list(replay.returns.sort_values("requested_at", kind="stable").index[-ASSESSED:])
        now = dt.datetime.now(dt.UTC)
        try:
            with progress.step(f"assessing the latest {len(latest)} returns for the analysts' queue"):
                for body in replay.bodies(latest):
                    scoring.assess(parse_request(body, now), request_hash(body), "cli:demo")
        finally:
            scoring.writer.close()
        opened = evidence_counts(db.uow()).cases
    say(f"demo: assessed the latest {len(latest)} returns; {opened} case(s) wait in the analysts' queue")


def users(settings: Settings, say: Say) -> None:
    """An analyst and an admin for the demo UI, made once; their passwords are kept in $FRAUD_HOME/demo-users.txt."""
    path = settings.home / "demo-users.txt"
    with evidence(settings) as db:
        if not list_users(db.uow()):
            _create_users(db, path)
    if path.exists():
        logins = ", ".join(" / ".join(line.split(" ", 1)) for line in path.read_text().splitlines() if line)
        say(f"demo: analyst UI sign-in (user / password): {logins} (kept in {path})")


def _create_users(db: Database, path: Path) -> None:
    people: list[tuple[str, str, str | None]] = [("analyst", "analyst", None), ("admin", "admin", None)]
    passwords = create_users(db.uow(), people, "cli:demo")
    lines = [f"{name} {password}" for (name, _, _), password in zip(people, passwords, strict=True)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
