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
from fraud_service.cases import queues
from fraud_service.config import Settings
from fraud_service.data.contract import TABLES
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import ConfigError, NotReady, TrainingDataError
from fraud_service.featurestore.source import FeatureSource
from fraud_service.health import evidence_counts
from fraud_service.progress import SILENT, Progress
from fraud_service.scoring import promotion
from fraud_service.scoring.evidence import request_hash
from fraud_service.scoring.promotion import gate_refusal
from fraud_service.scoring.request import parse_request
from models.registry import ModelRegistry
from training.batch import decide_window
from training.datasets.replay import Replay
from training.datasets.synthetic import (
    WorldConfig,
    generate,
    generated_config,
    is_generated,
    recent_world,
    same_but_start,
)
from training.datasets.writing import write_tables
from training.trainset import Window
from training.workflow import train

TEST_DAYS = 30
KEEP_WORLD = dt.timedelta(days=1)
"""A demo world that ended less than this ago is kept: its history still reads as the present."""
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
    """Generate the world (unless there with these settings, or the same but for ending less than KEEP_WORLD
    before CONFIG's end) and ingest it; the current snapshot's name."""
    config = recent_world(out, config, KEEP_WORLD) or settled_world(settings, config, out, say) or config
    if is_generated(out, config):
        progress.info(f"demo dataset in {out} is already generated with these settings")
    else:
        generate(config, out, progress)
    result = ingest(history(out, ASSESSED, progress), Warehouse(settings.warehouse_dir), progress)
    current = Warehouse(settings.warehouse_dir).current()
    assert current is not None
    say(f"demo: {config.customers:,} customers over {config.days} days to {config.end_ts():%Y-%m-%d %H:%M} UTC "
        f"generated in {out}")
    say(f"demo: ingested into {settings.warehouse_dir} (snapshot {current.name}; "
        f"{'new' if result.changed else 'unchanged'}): "
        + ", ".join(f"{current.rows(t):,} {t}" for t in ("customers", "orders", "returns", "labels")))
    return current.name


def settled_world(settings: Settings, config: WorldConfig, out: Path, say: Say) -> WorldConfig | None:
    """When the home's warehouse already holds data: the world in OUT if it was generated with CONFIG's settings,
    however long ago it ended (a world generated again ends later, so every stored id would move in time under the
    labels, inspections and assessments already kept for it); a ConfigError when the home holds another world or a
    dataset that is not a demo's, which a new world would mix with. None when the warehouse is empty."""
    if Warehouse(settings.warehouse_dir).current() is None:
        return None
    stored = generated_config(out)
    if stored is not None and same_but_start(stored, config):
        say(f"demo: keeping the demo world in {out}, which ended {stored.end_ts():%Y-%m-%d %H:%M} UTC (its data is "
            f"already in {settings.home}; remove that directory for a world that ends now)")
        return stored
    held = (f"the demo world of {stored.customers:,} customers over {stored.days} days (seed {stored.seed})"
            if stored is not None else f"data that no demo world in {out} accounts for")
    raise ConfigError(f"{settings.home} already holds {held}; a world of {config.customers:,} customers over "
                      f"{config.days} days (seed {config.seed}) would be mixed into it. Remove {settings.home}, or "
                      "set FRAUD_HOME to another directory, for a new demo world")


def history(out: Path, held: int, progress: Progress = SILENT) -> Path:
    """The world in OUT without its latest HELD returns (nor their labels and inspections), written beside it as
    OUT-history for ingest: those returns come in later through the scoring service, as live traffic, and are
    scored on the features they had when they arrived rather than on a history that already counts them."""
    target = out.with_name(out.name + "-history")
    tables = {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES if (out / f"{name}.parquet").exists()}
    held_ids = set(latest_returns(out, held))
    if len(held_ids) * 5 > len(tables["returns"]):  # a tiny world keeps most of its history
        held_ids = set(latest_returns(out, len(tables["returns"]) // 5))
    for name in ("returns", "labels", "inspections"):
        if name in tables:
            tables[name] = tables[name][~tables[name]["return_id"].isin(held_ids)].reset_index(drop=True)
    with progress.step(f"holding out the latest {len(held_ids)} returns into {target}"):
        write_tables(tables, target)
    return target


def held_out(out: Path) -> list[str]:
    """The returns of the world in OUT that its history (OUT-history) leaves out, oldest first."""
    kept = set(pd.read_parquet(out.with_name(out.name + "-history") / "returns.parquet", columns=["return_id"])
               ["return_id"])
    returns = pd.read_parquet(out / "returns.parquet", columns=["return_id", "requested_at"])
    returns = returns[~returns["return_id"].isin(kept)]
    return list(returns.sort_values(["requested_at", "return_id"], kind="stable")["return_id"])


def latest_returns(out: Path, n: int) -> list[str]:
    """The ids of the world's latest N returns, oldest first."""
    if n <= 0:
        return []
    returns = pd.read_parquet(out / "returns.parquet", columns=["return_id", "requested_at"])
    return list(returns.sort_values(["requested_at", "return_id"], kind="stable")["return_id"].iloc[-n:])


def features(settings: Settings, snapshot: str, progress: Progress, say: Say) -> None:
    """Build the features from SNAPSHOT (unless built from it) and materialise the online store."""
    source = FeatureSource(settings)
    if source.built_from() == snapshot:
        progress.info(f"features are already built from snapshot {snapshot}")
    else:
        source.build(progress)
    with progress.step("materialising the online store"):
        source.materialize(progress=progress)
    say(f"demo: features built from snapshot {snapshot} and materialised into the {settings.online_store} "
        "online store")


def model(settings: Settings, snapshot: str, dataset: Path, progress: Progress, say: Say) -> None:
    """Train the demo's model on what was known before the last TEST_DAYS days with mature labels, testing on those
    (skipped when the production model was trained on this snapshot; a retrain that comes out byte-identical to a
    registered model reuses it)."""
    registry = ModelRegistry(settings.models_dir)
    if "production" in registry.aliases():
        record = registry.load("production")
        if record.manifest.get("data", {}).get("snapshot") == snapshot:
            progress.info(f"model {record.version} is already trained on snapshot {snapshot}")
            say(f"demo: production model {record.version} (trained on this data)")
            return
    truth = dataset / "ground_truth.parquet"
    try:
        result = train(settings, None, test_days=TEST_DAYS, truth_path=truth if truth.exists() else None,
                       reuse_identical=True, progress=progress)
    except TrainingDataError as exc:
        say(f"demo: no model trained ({exc}); use a larger world (--customers, --days)")
        return
    assert result.record is not None
    version = result.record.version
    if result.reused:
        say(f"demo: the model trained again is identical to {version}; it is reused, not registered twice")
    elif result.test["candidates"]:
        metrics = result.test["candidates"]
        ratio = metrics["model"]["average_precision"] / max(metrics["rules"]["average_precision"], 1e-9)
        say(f"demo: model {version} trained on labels known at {result.record.manifest['label_cutoff'][:10]}; out "
            f"of time its average precision is {metrics['model']['average_precision']:.3f} ({ratio:.1f}x the rules "
            f"baseline); report {result.report_dir / 'report.html'}")
    with evidence(settings, migrated=False) as db:  # its first production move is in the log like any other
        db.upgrade()
        promotion.record_first_production(registry, db.uow(), version=version, actor="cli:demo")
    refusal = gate_refusal(registry, version)
    if registry.aliases().get("production") == version or refusal is None:
        return
    if "production" in registry.aliases():
        say(f"demo: {version} is not production: {refusal}")
        return
    # a demo must serve: its first model goes live past a refusing gate, and the evidence says so
    with evidence(settings, migrated=False) as db:
        db.upgrade()
        promotion.promote(registry, db.uow(), ref=version, force=True, actor="cli:demo",
                          reason="the demo needs a model to serve; its world is too small for the gate to tell")
    say(f"demo: warning: {version} did not pass its gate ({refusal}); it is production anyway so the demo can "
        "serve, and the evidence log records the override")


def cases(settings: Settings, dataset: Path, progress: Progress, say: Say) -> None:
    """Assess the world's latest returns (held out of the ingested history) through the scoring service, in the
    order they were requested, so the analysts' queue has cases to show. Each one counts at once in the live
    features of the next, as in production. Skipped when the evidence database already holds assessments."""
    with evidence(settings, migrated=False) as db:
        db.upgrade()
        if evidence_counts(db.uow()).assessments:
            progress.info("the evidence database already holds assessments: no demo cases added")
            return
        since_cutoff(settings, dataset, progress, say)
        try:
            scoring = assessor(settings, db.engine, db.sessions)
        except NotReady as exc:
            say(f"demo: no cases for the analysts' queue ({exc})")
            return
        replay = Replay(dataset)
        latest = held_out(dataset)
        now = dt.datetime.now(dt.UTC)
        decisions: dict[str, str] = {}
        try:
            with progress.step(f"assessing the latest {len(latest)} returns for the analysts' queue"):
                for body in replay.bodies(latest):
                    outcome = scoring.assess(parse_request(body, now), request_hash(body), "cli:demo")
                    decisions[str(body["return_id"])] = str(outcome.response["decision"])
                    if scoring.freshness is not None:
                        scoring.freshness.drain()  # the next return sees this one, as a live service's would
        finally:
            scoring.writer.close()
            if scoring.freshness is not None:
                scoring.freshness.close()
        opened = evidence_counts(db.uow()).cases
    say(f"demo: assessed the latest {len(latest)} returns; {opened} case(s) wait in the analysts' queue")
    if decisions:
        say(f"demo: of the {len(decisions)} returns posted live, " + decision_figures(dataset, decisions))


def since_cutoff(settings: Settings, dataset: Path, progress: Progress, say: Say) -> None:
    """How the production model's policy decides the ingested returns requested since its label cutoff (lists and
    hard rules included, as `score-batch` does): weeks of traffic, where the live tail is a few days of it."""
    registry = ModelRegistry(settings.models_dir)
    if "production" not in registry.aliases():
        return
    cutoff = pd.Timestamp(registry.manifest(registry.resolve("production"))["label_cutoff"])
    decided, _, _, _ = decide_window(settings, Window(cutoff, pd.Timestamp.now(tz="UTC")), "production", progress)
    if len(decided):
        say(f"demo: of the {len(decided):,} returns since the model's label cutoff ({cutoff:%Y-%m-%d}), decided as "
            "the API would have (score-batch), " + decision_figures(
                dataset, dict(zip(decided["return_id"], decided["decision"], strict=True))))


def decision_figures(dataset: Path, decisions: dict[str, str]) -> str:
    """What DECISIONS (return id -> decision) of returns of the world in DATASET did: the shares sent to review
    and not approved at once, and, when the world's ground truth is there, the share of the truly fraudulent and
    abusive returns' refund value they stopped."""
    n = len(decisions)
    review = sum(d == "review" for d in decisions.values())
    stopped = {r for r, d in decisions.items() if d != "approve"}
    text = f"{review / n:.1%} went to review and {len(stopped) / n:.1%} were not approved at once"
    truth_path = dataset / "ground_truth.parquet"
    if not truth_path.exists():
        return text
    truth = pd.read_parquet(truth_path, columns=["return_id", "truth"])
    amounts = pd.read_parquet(dataset / "returns.parquet", columns=["return_id", "refund_amount"])
    live = amounts[amounts["return_id"].isin(decisions)].merge(truth, on="return_id")
    parts = []
    for kind, word in (("fraud", "fraudulent"), ("abuse", "abusive")):
        bad = live[live["truth"] == kind]
        if len(bad):
            caught = bad.loc[bad["return_id"].isin(stopped), "refund_amount"].sum() / bad["refund_amount"].sum()
            parts.append(f"{caught:.0%} of the refund value of the {len(bad)} truly {word} ones")
    return text + ("; that stopped " + " and ".join(parts) + " (ground truth)" if parts
                   else "; none of them is truly fraudulent or abusive (ground truth)")


def users(settings: Settings, say: Say) -> None:
    """An analyst and an admin for the demo UI, made once; their passwords are kept in $FRAUD_HOME/demo-users.txt."""
    path = settings.home / "demo-users.txt"
    with evidence(settings) as db:
        if not list_users(db.uow()):
            _create_users(db, path)
        made = queues.ensure_defaults(db.uow, members=["analyst"], actor="cli:demo")
    if made:
        say(f"demo: {made} named queues ({', '.join(q[0] for q in queues.DEFAULTS)}) with the analyst as member")
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
