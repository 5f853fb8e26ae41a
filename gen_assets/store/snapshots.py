"""Immutable Parquet snapshots, named by their content hash and written atomically.

A snapshot's version is a hash of its rows (not of the Parquet bytes, which depend on the writer), so
the same data collected twice gives the same version and the same file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Snapshot:
    """A landed snapshot: what downstream assets receive as input."""

    path: str
    version: str
    rows: int
    source: str


def table_version(table: pa.Table, columns: list[str]) -> str:
    """sha256 over the given columns of every row, in row order."""
    h = hashlib.sha256()
    h.update(",".join(columns).encode())
    for batch in table.select(columns).to_batches(max_chunksize=65536):
        for col in batch.columns:
            for value in col.to_pylist():
                b = value if isinstance(value, bytes) else ("\x00" if value is None else str(value)).encode()
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # several row groups, so DuckDB reads and checks a large snapshot on all its threads
        pq.write_table(table, tmp, compression="zstd", row_group_size=131_072)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_snapshot(table: pa.Table, directory: Path, *, hash_columns: list[str], source: str) -> Snapshot:
    """Land `table` as directory/<version>.parquet unless that exact snapshot already exists."""
    version = table_version(table, hash_columns)
    path = Path(directory) / f"{version[:16]}.parquet"
    if not path.exists():
        atomic_write_parquet(table, path)
    return Snapshot(path=str(path), version=version[:16], rows=table.num_rows, source=source)
