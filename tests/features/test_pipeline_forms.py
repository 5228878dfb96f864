"""The feature pipeline's running totals equal the straightforward RANGE-frame form, row for row, on every entity."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from features import pipeline


@pytest.mark.parametrize("name", list(pipeline.ENTITIES))
def test_running_totals_equal_one_range_frame_per_window(small_world_dir: Path, name: str) -> None:
    tables = {t: small_world_dir / f"{t}.parquet" for t in ("customers", "orders", "returns", "labels",
                                                            "inspections")}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    pipeline._register_tables(con, tables)
    spec = pipeline.ENTITIES[name]
    order = [spec.key, "event_timestamp"]
    fast = con.execute(pipeline.entity_sql(spec)).df().sort_values(order).reset_index(drop=True)
    reference = con.execute(pipeline.entity_sql_reference(spec)).df().sort_values(order).reset_index(drop=True)
    two = con.execute(" UNION ALL ".join(f"({pipeline.entity_sql(spec, b, 2)})" for b in range(2))).df()
    con.close()
    assert len(fast) == len(reference) > 100
    assert list(fast.columns) == list(reference.columns)
    assert (fast[order] == reference[order]).all().all()
    for column in spec.feature_names:
        a, b = fast[column].to_numpy(dtype=float), reference[column].to_numpy(dtype=float)
        assert (np.isnan(a) == np.isnan(b)).all(), column
        assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12, atol=1e-9), column
        assert fast[column].dtype == reference[column].dtype, column
    assert len(two) == len(fast)  # key buckets partition the rows
