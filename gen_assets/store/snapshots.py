"""Immutable Parquet snapshots, named by their content hash and written atomically, in a stream.

A snapshot's version is a hash of its rows (not of the Parquet bytes, which depend on the writer), so
the same data collected twice gives the same version and the same file.

`write_snapshot` takes a whole table or an iterator of record batches. Batches are written to the
Parquet file and hashed as they arrive, so collecting a corpus larger than memory holds one row group
(131,072 rows) at a time; the file gets its name, the version, only at the end, in one rename (or one
upload when the artifacts live at a URL: see gen_assets.store.files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from gen_assets.store.files import Location, atomic_output, location, publish, staging_file

__all__ = ["ROW_GROUP_ROWS", "Snapshot", "RowHasher", "table_version", "atomic_write_parquet", "write_snapshot"]

ROW_GROUP_ROWS = 131_072  # several row groups, so DuckDB reads and checks a large snapshot on all its threads
_HASH_CHUNK_ROWS = 65_536  # the version hashes column by column within chunks of this many rows


@dataclass(frozen=True)
class Snapshot:
    """A landed snapshot: what downstream assets receive as input."""

    path: str
    version: str
    rows: int
    source: str


class RowHasher:
    """sha256 over the given columns of every row, fed batch by batch.

    The rows are hashed in chunks of 65,536, column by column within a chunk, whatever the sizes of the
    batches fed in, so the result depends on the rows alone: streaming a table in batches of any size
    gives the version `table_version` gives for the whole table.
    """

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        self._hash = hashlib.sha256(",".join(self.columns).encode())
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def update(self, rows: pa.Table | pa.RecordBatch) -> None:
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        self._pending.append(rows.select(self.columns))
        self._pending_rows += rows.num_rows
        self.rows += rows.num_rows
        if self._pending_rows >= _HASH_CHUNK_ROWS:
            pending = pa.concat_tables(self._pending)
            whole = (pending.num_rows // _HASH_CHUNK_ROWS) * _HASH_CHUNK_ROWS
            for start in range(0, whole, _HASH_CHUNK_ROWS):
                self._hash_chunk(pending.slice(start, _HASH_CHUNK_ROWS))
            rest = pending.slice(whole)
            self._pending, self._pending_rows = [rest], rest.num_rows

    def _hash_chunk(self, chunk: pa.Table) -> None:
        h = self._hash
        for col in chunk.columns:
            for value in col.to_pylist():
                b = value if isinstance(value, bytes) else ("\x00" if value is None else str(value)).encode()
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)

    def hexdigest(self) -> str:
        if self._pending_rows:
            self._hash_chunk(pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0
        return self._hash.hexdigest()


def table_version(table: pa.Table, columns: list[str]) -> str:
    """sha256 over the given columns of every row, in row order."""
    hasher = RowHasher(columns)
    hasher.update(table)
    return hasher.hexdigest()


def atomic_write_parquet(table: pa.Table, path: Location | str) -> None:
    """Write to a temporary name, then rename (or upload) as a whole: readers never see a partial file."""
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def write_snapshot(
    rows: pa.Table | Iterable[pa.RecordBatch | pa.Table],
    directory: Location | str,
    *,
    hash_columns: list[str],
    source: str,
    schema: pa.Schema | None = None,
) -> Snapshot:
    """Land `rows` as directory/<version>.parquet unless that exact snapshot already exists.

    `rows` is a table or an iterator of batches (all with one schema: `schema`, or the first batch's).
    If the iterator raises, the exception propagates and nothing is left behind.
    """
    directory = location(directory)
    batches = [rows] if isinstance(rows, pa.Table) else rows
    hasher = RowHasher(hash_columns)
    staged = directory / ".incoming.parquet"  # only names the staging area; the file is a temporary one
    with staging_file(staged) as tmp:
        writer: pq.ParquetWriter | None = None
        buffer: list[pa.Table] = []
        buffered = 0

        def flush(final: bool) -> None:
            nonlocal buffer, buffered
            if not buffer:
                return
            table = pa.concat_tables(buffer)
            whole = table.num_rows if final else (table.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
            if whole:
                writer.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
            rest = table.slice(whole)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows

        try:
            for batch in batches:
                table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                if writer is None:
                    schema = schema or table.schema
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                if not table.schema.equals(schema):
                    table = table.cast(schema)  # a clear ArrowInvalid if a reader's batch does not fit
                hasher.update(table)
                buffer.append(table)
                buffered += table.num_rows
                if buffered >= ROW_GROUP_ROWS:
                    flush(final=False)
            if writer is None:
                if schema is None:
                    raise ValueError(f"{source}: no rows and no schema, nothing to land")
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            flush(final=True)
        finally:
            if writer is not None:
                writer.close()
            close = getattr(batches, "close", None)
            if close is not None:  # a generator stopped early (an error here) closes its source file now
                close()
        version = hasher.hexdigest()[:16]
        path = directory / f"{version}.parquet"
        if not path.exists():
            publish(tmp, path)
    return Snapshot(path=str(path), version=version, rows=hasher.rows, source=source)

