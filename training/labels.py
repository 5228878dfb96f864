"""Analysts' labels into training: copy them from the evidence database into the warehouse, and rebuild the
features when that made a new snapshot (`train`, `features build` and `labels sync` run this first)."""

from __future__ import annotations

from fraud_service.bootstrap import evidence, evidence_exists
from fraud_service.config import Settings
from fraud_service.data.labels import sync
from fraud_service.data.warehouse import Warehouse
from fraud_service.featurestore.source import FeatureSource
from fraud_service.progress import SILENT, Progress


def sync_labels(settings: Settings, *, rebuild_features: bool, copy: bool = True,
                progress: Progress = SILENT) -> list[str]:
    """Copy analysts' labels into the warehouse (unless not COPY); with REBUILD_FEATURES, rebuild the features when
    they were built from an older snapshot (training reads features built from the current one). What happened, as
    sentences."""
    said = []
    if copy and evidence_exists(settings):
        with evidence(settings, migrated=False) as db:
            if db.schema_problem() is not None:
                said.append("labels: the evidence database has no schema yet, so no analyst labels to copy")
            else:
                said.append(f"labels: {sync(Warehouse(settings.warehouse_dir), db.uow, progress).describe()}")
    current = Warehouse(settings.warehouse_dir).current()
    if rebuild_features and current is not None:
        source = FeatureSource(settings)
        if source.built_from() not in (None, current.name):
            source.build(progress)
            said.append(f"features rebuilt from snapshot {current.name} (they count the labels known at each time)")
    return said
