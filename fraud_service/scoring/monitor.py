"""How the live model is doing: decision mix, friction, review precision, label delay, money and drift.

Read from what the service already keeps: every assessment (its decision, score, refund and stored feature
vector), the labels that arrived since (analysts' and inspections' in the evidence database, and the ingested
ones in the warehouse: chargebacks, returns teams), and the training sample the registry keeps beside each
model (`sample.json`, see `drift.py`). Nothing is written.

Definitions (a return is *bad* when its latest label is fraud or abuse, *honest* when it is legit):

- decisions: per day (of the assessment), the count of each decision; rates over the window.
- friction: of the assessed returns later labelled legit, the share not approved at once.
- review precision: of the returns sent to review (or denied) whose case an analyst closed with a label,
  the share labelled bad.
- label delay: days from assessment to label; the share labelled so far. Recall (bad returns not approved at
  once, of all bad) counts only the bad labels known so far, and the known ones are biased to the returns that
  were stopped (analysts label them within days; a paid-out fraud shows up weeks later as a chargeback). The
  estimate weighs each bad return not stopped by 1 / F(age), F being the share of such labels that had
  arrived by that age in the past (the delays of labels on approved returns): the returns still to be
  labelled are counted in expectation.
- money: refunds approved at once, held (inspection, store credit, review) and denied; bad refunds stopped
  and paid out; the cost of friction on honest customers (store credit, inspection or review: the policy's
  credit friction; deny: its deny friction).
- drift: PSI of each stored feature, and of the score, against the serving model's training sample.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import select

from fraud_service.config import Settings
from fraud_service.data.labels import BAD
from fraud_service.errors import BadRequest, RegistryError
from fraud_service.scoring import drift
from fraud_service.scoring.policy import Decision
from fraud_service.store.schema import Assessment, EvidenceEvent, Label
from fraud_service.store.uow import UnitOfWork
from models.registry import ModelRegistry

STOPPED = tuple(d.value for d in Decision if d is not Decision.APPROVE)
MAX_VECTORS = 20_000
"""Drift reads at most this many stored feature vectors, the latest of the window."""
MIN_F = 0.05
"""The smallest label-arrival share an estimate divides by (a return younger than any past label counts x20)."""


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def latest_labels(labels: Iterable[tuple[str, str, dt.datetime]]) -> dict[str, tuple[str, dt.datetime]]:
    """The latest (label, labelled_at) per return of (return_id, label, labelled_at) rows."""
    out: dict[str, tuple[str, dt.datetime]] = {}
    for return_id, label, at in labels:
        at = _utc(at)
        if return_id not in out or at >= out[return_id][1]:
            out[return_id] = (label, at)
    return out


def _rows(uow: UnitOfWork, start: dt.datetime, end: dt.datetime) -> list[Any]:
    return list(uow.session.execute(
        select(Assessment.id, Assessment.return_id, Assessment.created_at, Assessment.score, Assessment.decision,
               Assessment.model_version, Assessment.refund_amount, Assessment.event_seq)
        .where(Assessment.created_at >= start, Assessment.created_at < end).order_by(Assessment.created_at)).all())


def evidence_labels(uow: UnitOfWork, return_ids: list[str]) -> tuple[list[tuple[str, str, dt.datetime]], set[str]]:
    """Labels of RETURN_IDS in the evidence database, and the returns an analyst labelled in a case."""
    found: list[tuple[str, str, dt.datetime]] = []
    analysed: set[str] = set()
    for i in range(0, len(return_ids), 500):
        chunk = return_ids[i:i + 500]
        for return_id, label, at, source, case_id in uow.session.execute(
                select(Label.return_id, Label.label, Label.labelled_at, Label.source, Label.case_id)
                .where(Label.return_id.in_(chunk))).all():
            found.append((return_id, label, at))
            if source == "analyst" and case_id is not None:
                analysed.add(return_id)
    return found, analysed


def _vectors(uow: UnitOfWork, seqs: list[int]) -> list[dict[str, Any]]:
    out = []
    for i in range(0, len(seqs), 500):
        for (payload,) in uow.session.execute(select(EvidenceEvent.payload)
                                              .where(EvidenceEvent.seq.in_(seqs[i:i + 500]))).all():
            out.append(json.loads(payload).get("features") or {})
    return out


def decision_mix(rows: list[Any]) -> dict[str, Any]:
    """Per day and over the window: how many returns each decision took, and the rates."""
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        per_day[_utc(r.created_at).date().isoformat()][r.decision] += 1
    total = Counter(r.decision for r in rows)
    n = max(len(rows), 1)
    rates = {d.value: total[d.value] / n for d in Decision}
    rates["not_approved_at_once"] = sum(total[d] for d in STOPPED) / n
    return {"returns": len(rows), "rates": rates,
            "per_day": [{"day": day, "returns": sum(c.values()), **{d.value: c[d.value] for d in Decision}}
                        for day, c in sorted(per_day.items())]}


def delay_curve(delays_days: list[float]) -> Any:
    """F(age): the share of past labels that had arrived within AGE days."""
    ordered = np.sort(np.asarray(delays_days, dtype=float))

    def share(age: float) -> float:
        if not len(ordered):
            return 1.0
        return float(np.searchsorted(ordered, age, side="right") / len(ordered))
    return share


def label_figures(rows: list[Any], labels: Mapping[str, tuple[str, dt.datetime]], now: dt.datetime) -> dict[str, Any]:
    """Label delay, and recall as known and as estimated for the labels still to come. A label that was known
    before its return was assessed (a backfilled return, labelled in the warehouse first) arrived with no delay."""
    delays = {r.return_id: max(0.0, (labels[r.return_id][1] - _utc(r.created_at)).total_seconds() / 86400)
              for r in rows if r.return_id in labels}
    approved_bad_delays = [delays[r.return_id] for r in rows
                           if r.return_id in labels and labels[r.return_id][0] in BAD and r.decision == "approve"]
    arrived = delay_curve(approved_bad_delays or list(delays.values()))
    caught = missed = caught_est = missed_est = 0.0
    for r in rows:
        if r.return_id not in labels or labels[r.return_id][0] not in BAD:
            continue
        if r.decision in STOPPED:
            caught += 1
            caught_est += 1
        else:
            missed += 1
            age = (now - _utc(r.created_at)).total_seconds() / 86400
            missed_est += 1 / max(arrived(age), MIN_F)
    values = np.asarray(list(delays.values()), dtype=float)
    return {
        "labelled": len(delays), "labelled_share": len(delays) / max(len(rows), 1),
        "median_days": float(np.median(values)) if len(values) else math.nan,
        "p90_days": float(np.quantile(values, 0.9)) if len(values) else math.nan,
        "bad_known": int(caught + missed),
        "recall_known": caught / (caught + missed) if caught + missed else math.nan,
        "recall_estimated": caught_est / (caught_est + missed_est) if caught_est + missed_est else math.nan,
    }


def money(rows: list[Any], labels: Mapping[str, tuple[str, dt.datetime]], costs: Mapping[str, Any]) -> dict[str, Any]:
    """What a returns manager reports: refunds paid, held and denied; bad refunds stopped and paid; friction."""
    out = {"refunds_approved_at_once": 0.0, "refunds_held": 0.0, "refunds_denied": 0.0,
           "fraud_loss_caught": 0.0, "fraud_loss_missed": 0.0, "friction_cost": 0.0}
    credit, deny = float(costs.get("credit_friction", 3.0)), float(costs.get("deny_friction", 60.0))
    for r in rows:
        amount = float(r.refund_amount)
        key = ("refunds_approved_at_once" if r.decision == "approve" else
               "refunds_denied" if r.decision == "deny" else "refunds_held")
        out[key] += amount
        label = labels.get(r.return_id, ("", None))[0]
        if label in BAD:
            out["fraud_loss_missed" if r.decision == "approve" else "fraud_loss_caught"] += amount
        elif label == "legit" and r.decision != "approve":
            out["friction_cost"] += deny if r.decision == "deny" else credit
    return {k: round(v, 2) for k, v in out.items()}


def _model_facts(registry: ModelRegistry, version: str | None) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """VERSION's training sample (None when it kept none or is gone) and its policy's costs."""
    if version is None:
        return None, {}
    try:
        record = registry.load(version)
        return registry.extra(version, "sample.json"), record.policy.get("basis", {}).get("costs", {})
    except RegistryError:
        return None, {}


def serving_version(rows: list[Any]) -> str | None:
    """The model that scored most of ROWS (scores of different models are not compared with one sample)."""
    counts = Counter(r.model_version for r in rows)
    return counts.most_common(1)[0][0] if counts else None


def drift_figures(uow: UnitOfWork, rows: list[Any], version: str | None, sample: Mapping[str, Any] | None,
                  threshold: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score and feature PSI of the latest MAX_VECTORS assessments VERSION scored against its training SAMPLE."""
    if sample is None or not rows:
        why = "no training sample kept for the model" if sample is None else "no assessments in the window"
        return {"psi": math.nan, "drifted": False, "rows": len(rows), "model_version": version, "note": why}, {}
    latest = [r for r in rows if r.model_version == version][-MAX_VECTORS:]
    score = drift.compare(sample["score"], [float(r.score) for r in latest], threshold) | {"model_version": version}
    vectors = _vectors(uow, [r.event_seq for r in latest])
    features = {}
    for name, spec in sample["features"].items():
        values = [v.get(name) for v in vectors]
        if spec["kind"] == "numeric":
            values = [math.nan if x is None or isinstance(x, str) else float(x) for x in values]
        features[name] = drift.compare(spec, values, threshold)
    return score, features


def report(uow: UnitOfWork, *, start: dt.datetime, end: dt.datetime, registry: ModelRegistry,
           warehouse_labels: Any = None, threshold: float = drift.DRIFTED, now: dt.datetime | None = None
           ) -> dict[str, Any]:
    """Every figure of the module's docstring for the assessments made in [START, END).

    WAREHOUSE_LABELS: a callable from return ids to (return_id, label, labelled_at) rows of ingested labels.
    The training sample and the policy's costs are those of the model that scored most of the window.
    """
    if not threshold > 0:
        raise BadRequest(f"the drift threshold must be a PSI above 0, got {threshold}")
    if end <= start:
        raise BadRequest(f"the window must end after it starts: {start.isoformat()} to {end.isoformat()}")
    now = now or dt.datetime.now(dt.UTC)
    with uow.read():
        rows = _rows(uow, start, end)
        ids = [r.return_id for r in rows]
        found, analysed = evidence_labels(uow, ids)
        if warehouse_labels is not None:
            found += list(warehouse_labels(ids))
        labels = latest_labels(found)
        version = serving_version(rows)
        sample, costs = _model_facts(registry, version)
        score, features = drift_figures(uow, rows, version, sample, threshold)
    legit = [r for r in rows if labels.get(r.return_id, ("",))[0] == "legit"]
    reviewed = [r for r in rows if r.decision in ("review", "deny") and r.return_id in analysed]
    bad_reviewed = sum(labels[r.return_id][0] in BAD for r in reviewed)
    return {
        "window": {"from": start.isoformat(), "to": end.isoformat()},
        "decisions": decision_mix(rows),
        "friction": {"labelled_legit": len(legit), "not_approved_at_once": sum(r.decision != "approve" for r in legit),
                     "share": (sum(r.decision != "approve" for r in legit) / len(legit)) if legit else math.nan},
        "review_precision": {"labelled": len(reviewed), "bad": bad_reviewed,
                             "precision": bad_reviewed / len(reviewed) if reviewed else math.nan},
        "label_delay": label_figures(rows, labels, now),
        "money": money(rows, labels, costs),
        "drift_threshold": threshold,
        "score": score,
        "features": features,
    }


def live(uow: UnitOfWork, settings: Settings, *, start: dt.datetime, end: dt.datetime,
         threshold: float | None = None) -> dict[str, Any]:
    """The report for the service SETTINGS describe: its registry, and the labels of its warehouse as well."""
    from fraud_service.data.labels import ingested
    from fraud_service.data.warehouse import Warehouse

    return report(uow, start=start, end=end, registry=ModelRegistry(settings.models_dir),
                  warehouse_labels=ingested(Warehouse(settings.warehouse_dir)),
                  threshold=settings.drift_psi if threshold is None else threshold)
