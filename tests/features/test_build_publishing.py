"""A feature build that fails part-way leaves the previous build's files as they were: outputs are renamed onto
their final names only once every one of them is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.pipeline import build
from fraud_service.data.ingest import ingest
from fraud_service.featurestore.source import FeatureSource


def test_a_build_failing_part_way_leaves_the_previous_files(settings, warehouse, small_world_dir: Path) -> None:
    ingest(small_world_dir, warehouse)
    source = FeatureSource(settings)
    source.build()
    before = {p.name: p.read_bytes() for p in source.data_dir.glob("*.parquet")}
    tables = {name: warehouse.current().table_path(name) for name in ("customers", "orders", "returns", "labels",
                                                                     "inspections")}
    written: list[str] = []

    def fail_after_two(line: str) -> None:
        written.append(line)
        if len(written) == 2:  # the customer and address outputs are finished: fail before the rest
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError, match="went away"):
        build({k: v for k, v in tables.items() if v is not None}, source.data_dir, report=fail_after_two)

    assert {p.name: p.read_bytes() for p in source.data_dir.glob("*.parquet")} == before
    assert len(before) >= 9
    assert not list(source.data_dir.glob(".*.tmp"))  # nothing half-built left behind
