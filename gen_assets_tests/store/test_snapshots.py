"""store.snapshots: the streamed version hash and write_snapshot from batches, at a path and at URLs."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gen_assets.store.files import duckdb_source, location, read_table
from gen_assets.store.snapshots import ROW_GROUP_ROWS, RowHasher, table_version, write_snapshot

N_ROWS = 140_000
HASH = ["id", "name", "blob"]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """~140k rows (more than one 131,072-row group, two 65,536-row hash chunks and a rest) with ints,
    strings, bytes and nulls, built column-wise so it takes a fraction of a second."""
    index = np.arange(N_ROWS)
    ids = pa.array(index)
    words = pc.binary_join_element_wise(pa.scalar("row-"), ids.cast(pa.string()), "")
    name = pc.if_else(pa.array(index % 11 == 0), pa.scalar(None, pa.string()), words)
    blob = pc.if_else(pa.array(index % 13 == 0), pa.scalar(None, pa.binary()),
                      pc.binary_join_element_wise(pa.scalar(b"\x00\xff"), ids.cast(pa.string()).cast(pa.binary()),
                                                  b""))
    extra = pa.array(index * 0.5)  # not hashed
    t = pa.table({"id": ids, "name": name, "blob": blob, "extra": extra})
    assert t["name"].null_count > 0 and t["blob"].null_count > 0
    return t


def batches_of(t: pa.Table, sizes: list[int] | int) -> Iterator[pa.RecordBatch]:
    """The rows of `t` as record batches of the given size(s), cycling through a list."""
    sizes = [sizes] if isinstance(sizes, int) else sizes
    start, i = 0, 0
    while start < t.num_rows:
        n = sizes[i % len(sizes)]
        for batch in t.slice(start, n).to_batches():
            yield batch
        start, i = start + n, i + 1


def files_below(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- RowHasher ---------------------------------------------------------------------------------------------


def _random_mix() -> list[int]:
    rng = random.Random(7)
    return [rng.choice([1, 2, 3, 100, 4095, 65_535, 65_536, 65_537, 70_000]) for _ in range(40)]


@pytest.mark.parametrize("sizes", [1, 7, 65_535, 65_536, 65_537, "mix"])
def test_row_hasher_equals_table_version_whatever_the_batch_sizes(table, sizes):
    sizes = _random_mix() if sizes == "mix" else sizes
    expected = table_version(table, HASH)
    hasher = RowHasher(HASH)
    for batch in batches_of(table, sizes):
        hasher.update(batch)
    assert hasher.rows == N_ROWS
    assert hasher.hexdigest() == expected


def test_row_hasher_accepts_tables_and_sees_every_change(table):
    expected = table_version(table, HASH)
    hasher = RowHasher(HASH)
    hasher.update(table.slice(0, 100_000))  # tables, not only record batches
    hasher.update(table.slice(100_000))
    assert hasher.hexdigest() == expected
    # the version depends on the hashed columns only, in row order
    assert table_version(table.drop_columns(["extra"]), HASH) == expected
    assert table_version(table, ["id", "name"]) != expected
    last = table.num_rows - 1
    changed = table.set_column(1, "name", pc.if_else(pa.array(np.arange(table.num_rows) == last),
                                                     pa.scalar("other", pa.string()), table["name"]))
    assert table_version(changed, HASH) != expected
    assert table_version(table.slice(0, last), HASH) != expected
    assert table_version(pa.concat_tables([table.slice(1), table.slice(0, 1)]), HASH) != expected


# ---- write_snapshot ----------------------------------------------------------------------------------------


def test_write_snapshot_from_batches_equals_from_the_whole_table(table, tmp_path):
    whole = write_snapshot(table, tmp_path / "whole", hash_columns=HASH, source="test")
    streamed = write_snapshot(batches_of(table, 7_777), tmp_path / "streamed", hash_columns=HASH, source="test")
    assert whole.version == streamed.version == table_version(table, HASH)[:16]
    assert whole.rows == streamed.rows == N_ROWS
    assert Path(whole.path).name == Path(streamed.path).name == f"{whole.version}.parquet"
    assert Path(streamed.path).parent == tmp_path / "streamed"
    for snap in (whole, streamed):
        meta = pq.ParquetFile(snap.path).metadata
        assert meta.num_rows == N_ROWS
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert groups == [ROW_GROUP_ROWS, N_ROWS - ROW_GROUP_ROWS]
        assert pq.read_table(snap.path).equals(table)
    assert files_below(tmp_path / "streamed") == [f"{streamed.version}.parquet"]


def test_write_snapshot_row_groups_from_uneven_batches(table, tmp_path):
    rows = pa.concat_tables([table, table])  # 280k rows: two full row groups and a rest
    snap = write_snapshot(batches_of(rows, [1000, 65_537, 3]), tmp_path, hash_columns=HASH, source="test")
    assert snap.rows == rows.num_rows and snap.version == table_version(rows, HASH)[:16]
    meta = pq.ParquetFile(snap.path).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, rows.num_rows - 2 * ROW_GROUP_ROWS]
    assert pq.read_table(snap.path).equals(rows)


class Boom(RuntimeError):
    pass


def failing_after_two(t: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from t.slice(0, 1000).to_batches()
    yield from t.slice(1000, 1000).to_batches()
    raise Boom("the source failed half-way")


def test_a_failing_iterator_leaves_no_file_at_a_path(table, tmp_path, scratch):
    folder = tmp_path / "snapshots"
    with pytest.raises(Boom, match="half-way"):
        write_snapshot(failing_after_two(table), folder, hash_columns=HASH, source="test")
    assert files_below(tmp_path) == []  # no snapshot, no temporary file, here or in the system tmp
    # a large first batch (a row group flushed before the failure) leaves nothing either
    def fails_late():
        yield from table.to_batches(max_chunksize=ROW_GROUP_ROWS + 5)
        raise Boom("after a full row group")

    with pytest.raises(Boom):
        write_snapshot(fails_late(), folder, hash_columns=HASH, source="test")
    assert files_below(tmp_path) == []


def test_a_failing_iterator_leaves_no_file_at_a_memory_url(table, memory_fs, scratch):
    with pytest.raises(Boom, match="half-way"):
        write_snapshot(failing_after_two(table), "memory://bucket/art/snapshots", hash_columns=HASH, source="test")
    assert sorted(memory_fs.store) == []
    assert files_below(scratch) == []


def test_a_batch_that_does_not_fit_the_schema_lands_nothing(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])

    def rows():
        yield pa.record_batch({"id": [1, 2], "name": ["a", "b"]}, schema=schema)
        yield pa.record_batch({"id": [3], "name": ["c"], "extra": [1.0]})  # a column too many

    with pytest.raises((pa.ArrowInvalid, ValueError, KeyError)):
        write_snapshot(rows(), tmp_path, hash_columns=["id", "name"], source="test")
    assert files_below(tmp_path) == []


def test_writing_the_same_rows_twice_keeps_one_file_untouched(table, tmp_path):
    rows = table.slice(0, 5000)
    first = write_snapshot(rows, tmp_path, hash_columns=HASH, source="test")
    old = 1_000_000_000
    os.utime(first.path, (old, old))
    inode = os.stat(first.path).st_ino
    second = write_snapshot(batches_of(rows, 999), tmp_path, hash_columns=HASH, source="test")
    assert second == first
    assert files_below(tmp_path) == [Path(first.path).name]
    assert os.stat(first.path).st_mtime == old and os.stat(first.path).st_ino == inode  # not rewritten


def test_write_snapshot_at_a_memory_url(table, memory_fs, scratch):
    rows = table.slice(0, 3000)
    snap = write_snapshot(batches_of(rows, 1000), location("memory://bucket/art/snapshots"), hash_columns=HASH,
                          source="test")
    assert snap.path == f"memory://bucket/art/snapshots/{snap.version}.parquet"
    assert sorted(memory_fs.store) == [f"/bucket/art/snapshots/{snap.version}.parquet"]
    assert read_table(snap.path).equals(rows)
    assert files_below(scratch) == []


def test_write_snapshot_at_a_file_url_is_read_by_duckdb(table, tmp_path):
    rows = table.slice(0, 2500)
    snap = write_snapshot(batches_of(rows, 1000), f"file://{tmp_path}/snaps", hash_columns=HASH, source="test")
    assert snap.path.startswith("file://") and snap.path.endswith(f"/snaps/{snap.version}.parquet")
    assert files_below(tmp_path / "snaps") == [f"{snap.version}.parquet"]
    con = duckdb.connect()
    try:
        src = duckdb_source(con, snap.path)
        got = con.sql(f"SELECT count(*), count(name), sum(id) FROM read_parquet('{src}')").fetchall()
    finally:
        con.close()
    assert got == [(2500, rows["name"].length() - rows["name"].null_count, sum(range(2500)))]
    assert read_table(snap.path).equals(rows)


def test_zero_batches(tmp_path):
    schema = pa.schema([("row_id", pa.string()), ("content_hash", pa.string())])
    snap = write_snapshot(iter([]), tmp_path / "a", hash_columns=["row_id", "content_hash"], source="empty",
                          schema=schema)
    assert snap.rows == 0
    assert snap.version == table_version(schema.empty_table(), ["row_id", "content_hash"])[:16]
    landed = pq.read_table(snap.path)
    assert landed.num_rows == 0 and landed.schema.equals(schema)
    with pytest.raises(ValueError, match="empty-source: no rows and no schema"):
        write_snapshot(iter([]), tmp_path / "b", hash_columns=["row_id"], source="empty-source")
    assert files_below(tmp_path / "b") == []
