"""Shadow scoring: a candidate model scores every live request beside production, and never changes an answer.

`fraud-service models shadow V` points the registry's `shadow` alias at V (`promotion.shadow`, an evidence
event). Each worker's `ShadowScorer` follows that alias (checked every few seconds, like the production
watch). After an assessment is committed and answered, the assessor hands the shadow the feature vector it
scored, the return's subject and its list matches (a queue put: nothing more on the request's path). A thread
of its own scores the vector with the shadow model, decides it as production would have with the shadow's
policy (the same lists and hard rules, `rules.decide`), and writes the score and decision to `shadow_scores`
beside the assessment, in batches. When the queue is full (the shadow cannot keep up), requests are not
held: the shadow skips them and counts them (`dropped`).

`compare` reads them back for `fraud-service models compare`: agreement, the decision changes, average
precision and realised cost of both on the labels that have arrived, and the money the change would move.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from fraud_service.data.labels import BAD
from fraud_service.scoring.lists import ListMatch
from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Policy, cost_of
from fraud_service.scoring.rules import DEFAULT_RULES, RuleSet, Subject, decide
from fraud_service.store.schema import Assessment, ShadowScore
from fraud_service.store.uow import UnitOfWork
from models.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One answered assessment for the shadow to score."""

    assessment_id: str
    vector: Mapping[str, Any]
    subject: Subject
    matches: tuple[ListMatch, ...]
    rules: RuleSet = DEFAULT_RULES  # the hard rules production decided with


class ShadowScorer:
    """Follows the `shadow` alias and scores what the assessor hands it, on a thread of its own."""

    def __init__(self, registry: ModelRegistry, sessions: sessionmaker[Session], *, interval: float = 5.0,
                 batch: int = 200, flush_s: float = 0.25, capacity: int = 10_000, lock_path: str | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        """LOCK_PATH: on SQLite, the evidence writer's lock file; the shadow queues on it (with a file of its own)
        like any writer, so its batches never send an assessment's commit into SQLite's sleeping busy handler."""
        self.registry = registry
        self.sessions = sessions
        self.interval, self.batch, self.flush_s, self.clock = interval, batch, flush_s, clock
        self.loaded: tuple[Scorer, Policy] | None = None
        self.version: str | None = None  # the alias as last read (None: no shadow)
        self._key: tuple[str, str] | None = None  # (version, latest policy file) loaded
        self._lock_file = open(lock_path, "a") if lock_path else None  # noqa: SIM115
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Scored | None] = queue.Queue(maxsize=capacity)
        self._checked = -math.inf
        self._failed_stamp: Any = None  # the shadow's files' stamp when it last failed to load
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.loaded is not None

    def check(self) -> None:
        """Load the model the `shadow` alias names (or drop it when the alias is gone)."""
        self._checked = time.monotonic()
        try:
            version = self.registry.aliases().get("shadow")
        except Exception as exc:  # a damaged alias file: keep what is loaded
            log.error("cannot read the shadow alias: %s", exc)
            return
        policies = sorted((self.registry.root / "versions" / version).glob("policy-*.json")) if version else []
        key = (version, policies[-1].name if policies else "") if version else None
        if key == self._key and (self.loaded is not None or key is None):
            return
        stamp = self.registry.stamp(version) if version else None
        if key == self._key and stamp == self._failed_stamp:
            return  # a shadow that failed to load is tried again once its files or the aliases change
        self.version, self._key, self._failed_stamp = version, key, None
        if version is None:
            self.loaded = None
            log.info("shadow scoring is off")
            return
        try:
            scorer = Scorer.from_registry(self.registry, version)
            self.loaded = (scorer, Policy.from_dict(scorer.policy))
            log.info("shadow scoring with model %s", version)
        except Exception as exc:  # a shadow that cannot load is logged; answers never depend on it
            self.loaded, self._failed_stamp = None, stamp
            log.error("the shadow model %s cannot be loaded: %s", version, exc)

    def submit(self, item: Scored) -> None:
        """Hand over one answered assessment; never blocks (a full queue drops it)."""
        if self.loaded is None:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def score(self, item: Scored) -> dict[str, Any] | None:
        """The shadow's score and decision for ITEM (None without a shadow)."""
        loaded = self.loaded
        if loaded is None:
            return None
        scorer, policy = loaded
        value = float(scorer.probability(scorer.row(item.vector))[0])
        verdict = decide(policy, value, item.subject, item.vector, item.matches, item.rules)
        return {"assessment_id": item.assessment_id, "model_version": scorer.version,
                "policy_version": policy.version, "score": value, "decision": verdict.decision.value,
                "created_at": self.clock()}

    def drain(self) -> None:
        """Block until everything submitted so far is written (tests, shutdown)."""
        self._queue.join()

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
        if self._lock_file is not None:
            self._lock_file.close()

    def _run(self) -> None:
        while True:
            if time.monotonic() - self._checked >= self.interval:
                self.check()
            try:
                first = self._queue.get(timeout=min(self.interval, 1.0))
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.flush_s
            while first is not None and len(items) < self.batch and time.monotonic() < deadline:
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
                if items[-1] is None:
                    break
            self._write([i for i in items if i is not None])
            for _ in items:
                self._queue.task_done()
            if items[-1] is None:
                return

    def _write(self, items: list[Scored]) -> None:
        try:
            rows = [r for r in (self.score(i) for i in items) if r is not None]
            if rows:
                if self._lock_file is not None:
                    fcntl.flock(self._lock_file, fcntl.LOCK_EX)
                try:
                    with self.sessions() as session, session.begin():
                        session.execute(insert(ShadowScore), rows)
                finally:
                    if self._lock_file is not None:
                        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self.written += len(rows)
        except Exception:  # the shadow never takes anything down with it
            log.exception("shadow scoring of %d assessments failed; they are skipped", len(items))


def _ap(y: list[int], scores: list[float]) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores)) if 0 < sum(y) < len(y) else math.nan


def compare(uow: UnitOfWork, *, start: dt.datetime, end: dt.datetime, labels: Callable[[list[str]], Mapping[
        str, str]], costs: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
    """Production against the shadow model on the assessments of [START, END) that the shadow scored.

    LABELS: return ids -> the latest label of each that has one. Returns with no label count as legit in
    average precision and cost (the labels that have arrived so far; say so when reading them)."""
    with uow.read():
        query = (select(Assessment.return_id, Assessment.decision, Assessment.score, Assessment.refund_amount,
                        Assessment.model_version, ShadowScore.model_version.label("shadow_version"),
                        ShadowScore.score.label("shadow_score"), ShadowScore.decision.label("shadow_decision"))
                 .join(ShadowScore, ShadowScore.assessment_id == Assessment.id)
                 .where(Assessment.created_at >= start, Assessment.created_at < end))
        if version is not None:
            query = query.where(ShadowScore.model_version == version)
        rows = list(uow.session.execute(query.order_by(Assessment.created_at)).all())
    known = labels([r.return_id for r in rows])
    y = [1 if known.get(r.return_id) in BAD else 0 for r in rows]
    changes = Counter((r.decision, r.shadow_decision) for r in rows if r.decision != r.shadow_decision)
    moved = {"newly_held": 0.0, "newly_paid": 0.0}
    for r in rows:
        if r.decision == "approve" and r.shadow_decision != "approve":
            moved["newly_held"] += float(r.refund_amount)
        elif r.decision != "approve" and r.shadow_decision == "approve":
            moved["newly_paid"] += float(r.refund_amount)
    n = len(rows)
    cost = {side: sum(cost_of(getattr(r, attr), bool(b), float(r.refund_amount), costs) for r, b in zip(
        rows, y, strict=True)) / n if n else math.nan for side, attr in (("production", "decision"),
                                                                        ("shadow", "shadow_decision"))}
    return {
        "window": {"from": start.isoformat(), "to": end.isoformat()},
        "assessments": n,
        "models": {"production": sorted({r.model_version for r in rows}),
                   "shadow": sorted({r.shadow_version for r in rows})},
        "agreement": (n - sum(changes.values())) / n if n else math.nan,
        "changes": [{"from": a, "to": b, "returns": c} for (a, b), c in changes.most_common()],
        "labelled": sum(1 for r in rows if r.return_id in known), "bad_labels": sum(y),
        "average_precision": {"production": _ap(y, [r.score for r in rows]),
                              "shadow": _ap(y, [r.shadow_score for r in rows])},
        "cost_per_return": cost,
        "money_moved": {k: round(v, 2) for k, v in moved.items()},
    }


def labels_reader(uow: Callable[[], UnitOfWork], warehouse_labels: Callable[[list[str]], Iterable[Any]] | None
                  ) -> Callable[[list[str]], dict[str, str]]:
    """The latest label per return from the evidence database and the warehouse."""
    from fraud_service.scoring.monitor import evidence_labels, latest_labels

    def read(return_ids: list[str]) -> dict[str, str]:
        unit = uow()
        with unit.read():
            found, _ = evidence_labels(unit, return_ids)
        if warehouse_labels is not None:
            found += list(warehouse_labels(return_ids))
        return {k: v[0] for k, v in latest_labels(found).items()}
    return read
