"""The offline store of ingested contract tables: immutable parquet snapshots behind one pointer.

Layout under FRAUD_HOME/warehouse:
    snapshots/000001/{customers,orders,...}.parquet + manifest.json
    CURRENT          the name of the snapshot readers see
    .lock            held by the one writer

A new snapshot is written beside the old ones and becomes visible by atomically replacing
CURRENT, so a failed or interrupted ingest leaves the previous data exactly as it was, and
readers (DuckDB, Feast, pandas) never need a lock. Unchanged tables are hard-linked. An ingest
removes all but the last few snapshots, except those a long job has pinned (`Snapshot.pin`: a
training run reading one while ingests go on); those go at a later ingest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fraud_service.data.contract import TABLES
from fraud_service.errors import WarehouseError

KEEP_SNAPSHOTS = 3
READERS = ".readers"
"""A snapshot's lock file: shared by the jobs that pinned it, taken whole by the ingest that removes it."""


@dataclass(frozen=True)
class Snapshot:
    """One immutable version of all ingested tables."""

    path: Path
    manifest: dict[str, object]
    _pinned: list[IO[Any]] = field(default_factory=list, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The snapshot's sequence name, e.g. 000003."""
        return self.path.name

    @property
    def identity(self) -> str:
        """What tells this snapshot from every other, for caches: its directory and its content's fingerprint (a
        warehouse wiped and ingested again reuses the name 000001, never the fingerprint of other content)."""
        return f"{self.path}@{self.manifest.get('fingerprint') or self.manifest.get('created_at')}"

    def pin(self) -> Snapshot:
        """Keep this snapshot from being removed by later ingests for as long as this object lives (a shared lock
        on its READERS file, released when the object goes); this snapshot."""
        if not self._pinned:
            try:
                readers = open(self.path / READERS, "a+")  # noqa: SIM115 (held as long as the snapshot object)
            except OSError as exc:
                raise WarehouseError(f"snapshot {self.name} cannot be read ({exc.strerror}: {self.path})") from None
            fcntl.flock(readers, fcntl.LOCK_SH)
            self._pinned.append(readers)
            weakref.finalize(self, readers.close)  # closing the file releases the lock
        return self

    def table_path(self, table: str) -> Path | None:
        """The parquet file of `table`, or None when it was never ingested."""
        path = self.path / f"{table}.parquet"
        return path if path.exists() else None

    def read(self, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        """Read one table (optionally some columns) as pandas; None when absent."""
        path = self.table_path(table)
        if path is None:
            return None
        return pq.read_table(path, columns=list(columns) if columns else None).to_pandas()

    def holding(self, table: str, column: str, values: Sequence[str]) -> set[str]:
        """Which of VALUES appear in TABLE's COLUMN (none when the table is absent)."""
        path = self.table_path(table)
        if path is None or not values:
            return set()
        import duckdb

        con = duckdb.connect()
        try:
            rows = con.execute(f"SELECT DISTINCT {column} FROM read_parquet('{path}') "
                               f"WHERE {column} IN (SELECT unnest(?))", [list(values)]).fetchall()
        finally:
            con.close()
        return {r[0] for r in rows}

    def key_index(self, table: str, column: str) -> KeyIndex:
        """An in-memory index of TABLE's COLUMN for many quick `holding` checks (8 bytes per row)."""
        path = self.table_path(table)
        if path is None:
            return KeyIndex(np.empty(0, dtype=np.uint64))
        values = pq.read_table(path, columns=[column]).column(column).to_numpy(zero_copy_only=False)
        return KeyIndex(np.unique(_hashes(values)))

    def rows(self, table: str) -> int:
        """Row count of a table (0 when absent), from the parquet footer."""
        path = self.table_path(table)
        return 0 if path is None else pq.ParquetFile(path).metadata.num_rows


def _hashes(values: np.ndarray) -> np.ndarray:
    """64-bit SipHash of each string (pandas' own hashing of object arrays, the step `pd.util.hash_array` starts
    with): about 1 us for the one order id a request asks about, where `hash_array`'s dispatch costs ~70 us."""
    from pandas._libs.hashing import hash_object_array

    return np.asarray(hash_object_array(np.asarray(values, dtype=object), _HASH_KEY, "utf8"), dtype=np.uint64)


_HASH_KEY = "0123456789123456"  # pandas' default key: any fixed 16 characters


@dataclass(frozen=True)
class KeyIndex:
    """The sorted 64-bit hashes of a column's values: `holding` answers from memory, without reading the table.

    A value absent from the column is reported held only if its hash collides with one of the n
    stored ones: with 3 million rows, a chance of about 2e-13 per lookup.
    """

    hashes: np.ndarray

    def holding(self, values: Sequence[str]) -> set[str]:
        """Which of VALUES are in the column."""
        if not len(values) or not len(self.hashes):
            return set()
        probe = _hashes(np.asarray(values, dtype=object))
        at = np.minimum(np.searchsorted(self.hashes, probe), len(self.hashes) - 1)
        return {v for v, hit in zip(values, self.hashes[at] == probe, strict=True) if hit}


class Warehouse:
    """Reads the current snapshot and commits new ones atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def current(self) -> Snapshot | None:
        """The snapshot readers see now, or None before the first ingest."""
        pointer = self.root / "CURRENT"
        if not pointer.exists():
            return None
        return self.snapshot(pointer.read_text().strip(), str(pointer))

    def snapshot(self, name: str, named_by: str = "the feature manifest") -> Snapshot:
        """The snapshot called NAME (WarehouseError when it is gone: only the last few are kept)."""
        path = self.snapshots_dir / name
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise WarehouseError(f"{named_by} names snapshot {name!r}, but {manifest_path} is missing")
        return Snapshot(path, json.loads(manifest_path.read_text()))

    @contextlib.contextmanager
    def writer(self) -> Iterator[SnapshotWriter]:
        """Hold the write lock and stage a new snapshot; it becomes current only on `commit()`."""
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / ".lock"
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WarehouseError(
                    f"another process is writing the warehouse (lock {lock_path} is held); "
                    "wait for it to finish"
                ) from None
            for left in self.snapshots_dir.glob(".staging-*"):  # a writer killed before it could clean up
                shutil.rmtree(left, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.snapshots_dir))
            writer = SnapshotWriter(self, staging, self.current())
            try:
                yield writer
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def _next_name(self) -> str:
        numbers = [int(p.name) for p in self.snapshots_dir.iterdir() if p.name.isascii() and p.name.isdigit()]
        return f"{max(numbers, default=0) + 1:06d}"

    def _prune(self, keep: str) -> None:
        """Remove all but the last KEEP_SNAPSHOTS snapshots (and KEEP), except those a job has pinned."""
        names = sorted(p.name for p in self.snapshots_dir.iterdir() if p.name.isascii() and p.name.isdigit())
        for name in names[:-KEEP_SNAPSHOTS]:
            if name == keep:
                continue
            path = self.snapshots_dir / name
            try:
                readers = open(path / READERS, "a+")  # noqa: SIM115
            except OSError:  # half removed before: what is left goes
                shutil.rmtree(path, ignore_errors=True)
                continue
            with readers:
                try:
                    fcntl.flock(readers, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a job is reading it: a later ingest removes it
                    continue
                shutil.rmtree(path, ignore_errors=True)


class SnapshotWriter:
    """Stages table files for a new snapshot; `commit` publishes them all at once."""

    def __init__(self, warehouse: Warehouse, staging: Path, base: Snapshot | None) -> None:
        self.warehouse = warehouse
        self.staging = staging
        self.base = base

    def path_for(self, table: str) -> Path:
        """Where to write the new version of `table`."""
        return self.staging / f"{table}.parquet"

    def commit(self, manifest: dict[str, object]) -> Snapshot:
        """Carry over untouched tables, write the manifest, and switch CURRENT to the new snapshot."""
        if self.base is not None:
            for table in TABLES:
                old = self.base.table_path(table)
                new = self.path_for(table)
                if old is not None and not new.exists():
                    try:
                        os.link(old, new)
                    except OSError:
                        shutil.copy2(old, new)
        tables = {}
        for table in TABLES:
            path = self.path_for(table)
            if path.exists():
                tables[table] = {
                    "rows": pq.ParquetFile(path).metadata.num_rows,
                    "sha256": _sha256(path),
                }
        full = {
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "previous": self.base.name if self.base else None,
            "tables": tables,
            "fingerprint": hashlib.sha256(
                json.dumps({t: v["sha256"] for t, v in tables.items()}, sort_keys=True).encode()
            ).hexdigest(),
            **manifest,
        }
        (self.staging / "manifest.json").write_text(json.dumps(full, indent=2, default=str))
        _fsync_dir_files(self.staging)
        name = self.warehouse._next_name()
        final = self.warehouse.snapshots_dir / name
        os.rename(self.staging, final)
        pointer_tmp = self.warehouse.root / "CURRENT.tmp"
        with open(pointer_tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer_tmp, self.warehouse.root / "CURRENT")
        self.warehouse._prune(keep=name)
        return Snapshot(final, full)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir_files(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
