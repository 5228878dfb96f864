"""Write contract tables as parquet files, each atomically, with the contract's exact types."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_service.data.contract import TABLES
from fraud_service.data.ingest import arrow_schema
from fraud_service.errors import DatasetError
from fraud_service.progress import SILENT, Progress


def write_tables(tables: dict[str, pd.DataFrame], out: Path, progress: Progress = SILENT) -> None:
    """Write each frame as OUT/NAME.parquet; refuses to leave a NAME.csv beside it."""
    out.mkdir(parents=True, exist_ok=True)
    for name in tables:
        if (out / f"{name}.csv").exists():
            raise DatasetError(f"{out / (name + '.csv')} exists; writing {name}.parquet beside it would "
                               "make the dataset ambiguous. Choose an empty --out directory.")
    for name, frame in tables.items():
        with progress.step(f"writing {name}.parquet ({len(frame):,} rows)"):
            write_parquet(frame, out / f"{name}.parquet", arrow_schema(TABLES[name]))


def write_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write a frame to `path` through a temporary file, so a crash never leaves half a file."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
