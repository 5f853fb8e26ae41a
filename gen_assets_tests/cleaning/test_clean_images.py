"""clean_images: every bad row ends in quarantine with its reason, good rows survive, the split is
deterministic, and a failure half-way leaves the previous clean table and quarantine rows intact."""

from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import gen_assets.cleaning.images as cleaning
from gen_assets.cleaning.images import (
    categories,
    clean_images,
    duplicate_count,
    load_images,
    null_count,
    quarantine_rate,
    split_fractions,
)
from gen_assets.media.png import encode_png
from gen_assets.sources.images import (
    IMAGE_SCHEMA,
    IMAGE_SNAPSHOT_HASH_COLUMNS,
    collect_images,
    image_table,
    inspect_image,
)
from gen_assets.store.snapshots import write_snapshot


def make_rows(specs: list[tuple[str, str | None, bytes]]) -> dict[str, list]:
    """(row_id, label, image bytes) -> snapshot columns, sizes and decode errors found as the collector does."""
    rows: dict[str, list] = {name: [] for name in IMAGE_SCHEMA.names}
    for row_id, label, data in specs:
        width, height, channels, error = inspect_image(data)
        rows["source"].append("test")
        rows["row_id"].append(row_id)
        rows["label"].append(label)
        rows["image"].append(data)
        rows["content_hash"].append(hashlib.sha256(data).hexdigest())
        rows["width"].append(width)
        rows["height"].append(height)
        rows["channels"].append(channels)
        rows["decode_error"].append(error)
    return rows


def png(seed: int, shape=(8, 8)) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8))


def snapshot(tmp_path, rows: dict[str, list]):
    table = image_table(rows)
    return write_snapshot(table, tmp_path / "snapshots", hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source="test")


def python_table_version(rows: list[tuple[str, str, str]]) -> str:
    """The documented version rule, computed without SQL: per (split, label), the row count and the sums of
    the two 64-bit halves of each hash's first 128 bits; sha256 over the sorted lines."""
    groups: dict[tuple[str, str], list[int]] = {}
    for content_hash, split, label in rows:
        g = groups.setdefault((split, label), [0, 0, 0])
        g[0] += 1
        g[1] += int(content_hash[:16], 16)
        g[2] += int(content_hash[16:32], 16)
    lines = sorted(f"{split}:{label}:{n}:{hi}:{lo}" for (split, label), (n, hi, lo) in groups.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture
def crafted(tmp_path):
    """Four good rows and one of each kind of bad row."""
    rows = make_rows(
        [
            ("r01", " Cat ", png(1)),
            ("r02", "dog", png(2)),
            ("r03", "DOG", png(3)),
            ("r04", "   ", png(4)),  # blank label, and an earlier copy of r09's image
            ("r05", "cat", b"definitely not a PNG"),
            ("r06", "cat", png(6, (9, 8))),  # 9 rows x 8 cols: height 9
            ("r07", "dog", png(2)),  # duplicate of r02
            ("r08", None, png(8)),
            ("r09", "bird", png(4)),  # same image as r04, whose label is blank: r09 is kept
            ("r10", "cat", png(10)),
        ]
    )
    rows["content_hash"][9] = "0" * 64  # r10: hash that is not the sha256 of its bytes
    return snapshot(tmp_path, rows)


def quarantine_rows(con, asset="clean_images"):
    query = "SELECT row_id, reason FROM quarantine WHERE asset = ? ORDER BY row_id"
    return dict(con.execute(query, [asset]).fetchall())


def test_bad_rows_are_quarantined_with_their_reason(con, crafted):
    stats = clean_images(con, crafted.path, snapshot_version=crafted.version)

    clean = dict(con.execute("SELECT row_id, label FROM clean_images ORDER BY row_id").fetchall())
    assert clean == {"r01": "cat", "r02": "dog", "r03": "dog", "r09": "bird"}
    reasons = quarantine_rows(con)
    assert sorted(reasons) == ["r04", "r05", "r06", "r07", "r08", "r10"]
    assert reasons["r04"] == "missing label" and reasons["r08"] == "missing label"
    assert reasons["r05"].startswith("undecodable: UnidentifiedImageError")
    assert reasons["r06"] == "wrong size: 8x9, expected 8x8"
    assert reasons["r07"] == "duplicate of row r02"
    assert reasons["r10"] == "content_hash does not match the image bytes"
    snap_version, source = con.execute("SELECT DISTINCT snapshot_version, source FROM quarantine").fetchone()
    assert (snap_version, source) == (crafted.version, "test")

    assert (stats.rows_in, stats.rows_clean, stats.rows_quarantined) == (10, 4, 6)
    assert stats.by_reason == {
        "undecodable": 1,
        "hash_mismatch": 1,
        "missing_label": 2,
        "wrong_size": 1,
        "duplicate": 1,
    }
    assert stats.image_size == (8, 8)
    assert sum(stats.split_counts.values()) == 4 and set(stats.split_counts) == {"train", "val", "test"}
    types = con.execute("SELECT typeof(image), typeof(width) FROM clean_images LIMIT 1").fetchone()
    assert types == ("BLOB", "INTEGER")
    assert duplicate_count(con, "clean_images") == 0 and null_count(con, "clean_images") == 0
    assert quarantine_rate(con, "clean_images", crafted.version) == pytest.approx(0.6)
    assert categories(con) == ["bird", "cat", "dog"]


def test_configured_image_size(con, tmp_path):
    snap = snapshot(tmp_path, make_rows([("a", "x", png(1)), ("b", "x", png(2)), ("c", "x", png(3, (9, 9)))]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version, image_size=9)
    assert stats.image_size == (9, 9) and stats.rows_clean == 1
    assert quarantine_rows(con) == {"a": "wrong size: 8x8, expected 9x9", "b": "wrong size: 8x8, expected 9x9"}
    # Without it, the most common size wins.
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert stats.image_size == (8, 8) and quarantine_rows(con) == {"c": "wrong size: 9x9, expected 8x8"}


def test_rerun_replaces_this_snapshots_quarantine_and_keeps_other_snapshots(con, tmp_path, crafted):
    clean_images(con, crafted.path, snapshot_version=crafted.version)
    clean_images(con, crafted.path, snapshot_version=crafted.version)
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 6  # not 12
    other = snapshot(tmp_path, make_rows([("z1", "", png(50)), ("z2", "a", png(51))]))
    clean_images(con, other.path, snapshot_version=other.version)
    counts = dict(con.execute("SELECT snapshot_version, count(*) FROM quarantine GROUP BY ALL").fetchall())
    assert counts == {crafted.version: 6, other.version: 1}
    assert quarantine_rate(con, "clean_images", other.version) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="built from snapshot"):
        quarantine_rate(con, "clean_images", crafted.version)


def test_digits_split_is_deterministic_and_within_tolerance(con, tmp_path):
    snap = write_snapshot(collect_images(), tmp_path, hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source="builtin:digits")
    first = clean_images(con, snap.path, snapshot_version=snap.version, val_fraction=0.15, test_fraction=0.1)
    splits = dict(con.execute("SELECT row_id, split FROM clean_images").fetchall())
    hashes = dict(con.execute("SELECT row_id, content_hash FROM clean_images").fetchall())
    # Independent of the SQL: the documented rule, computed in Python.
    for row_id, h in hashes.items():
        bucket = int(h[:8], 16) % 10000
        assert splits[row_id] == ("test" if bucket < 1000 else "val" if bucket < 2500 else "train")
    fractions = split_fractions(con, "clean_images")
    assert fractions["train"] == pytest.approx(0.75, abs=0.03)
    assert fractions["val"] == pytest.approx(0.15, abs=0.03)
    assert fractions["test"] == pytest.approx(0.10, abs=0.03)

    second = clean_images(
        duckdb.connect(), snap.path, snapshot_version=snap.version, val_fraction=0.15, test_fraction=0.1
    )
    assert second == first
    assert first.rows_clean == first.rows_in - first.by_reason["duplicate"]
    rows = con.execute("SELECT content_hash, split, label FROM clean_images").fetchall()
    assert first.version == python_table_version(rows)
    other = clean_images(duckdb.connect(), snap.path, snapshot_version=snap.version, val_fraction=0.1)
    assert other.version != first.version  # moving rows between splits changes the version
    assert first.image_size == (8, 8)

    val = load_images(con, split="val")
    assert val.images.shape == (first.split_counts["val"], 8, 8, 1) and val.images.dtype == np.uint8
    assert val.row_ids == sorted(val.row_ids)
    assert load_images(con, split="test", channels=3).images.shape[1:] == (8, 8, 3)
    everything = load_images(con)
    assert len(everything) == first.rows_clean and everything.images.max() == 255
    assert categories(con) == [str(d) for d in range(10)]


def test_failure_midway_leaves_previous_state_intact(con, tmp_path, crafted, monkeypatch):
    clean_images(con, crafted.path, snapshot_version=crafted.version)
    before_clean = con.execute("SELECT * FROM clean_images ORDER BY row_id").fetchall()
    before_quarantine = con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall()
    comment_query = "SELECT comment FROM duckdb_tables() WHERE table_name = 'clean_images'"
    before_comment = con.execute(comment_query).fetchone()

    # Fail after the clean table was replaced and the quarantine rows deleted and re-inserted.
    real_sql = cleaning.load_sql("clean_images")
    monkeypatch.setattr(cleaning, "load_sql", lambda name: real_sql + "\nSELECT error('simulated failure');\n")
    other = snapshot(tmp_path, make_rows([("n1", "new", png(99))]))
    for version in (crafted.version, other.version):
        with pytest.raises(duckdb.Error, match="simulated failure"):
            clean_images(con, other.path, snapshot_version=version)

    assert con.execute("SELECT * FROM clean_images ORDER BY row_id").fetchall() == before_clean
    assert con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall() == before_quarantine
    assert con.execute(comment_query).fetchone() == before_comment
    leftovers = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert leftovers == []
    assert con.execute("SELECT getvariable('snapshot_path')").fetchone() == (None,)
    # The connection is usable afterwards: no transaction left open.
    monkeypatch.setattr(cleaning, "load_sql", lambda name: real_sql)
    assert clean_images(con, other.path, snapshot_version=other.version).rows_clean == 1


def test_other_table_name_keeps_its_own_quarantine(con, crafted):
    clean_images(con, crafted.path, snapshot_version=crafted.version)
    clean_images(con, crafted.path, snapshot_version=crafted.version, table="clean_images_b")
    assert con.execute("SELECT asset, count(*) FROM quarantine GROUP BY ALL ORDER BY 1").fetchall() == [
        ("clean_images", 6),
        ("clean_images_b", 6),
    ]
    comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'clean_images_b'").fetchone()[0]
    assert json.loads(comment) == {"snapshot_version": crafted.version, "rows_in": 10}


def test_all_rows_bad_gives_an_empty_clean_table(con, tmp_path):
    snap = snapshot(tmp_path, make_rows([("a", "x", b"junk"), ("b", "y", b"")]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert (stats.rows_clean, stats.rows_quarantined, stats.by_reason["undecodable"]) == (0, 2, 2)
    assert stats.image_size is None
    assert stats.version == hashlib.sha256(b"").hexdigest()
    assert load_images(con).images.shape == (0, 0, 0, 1)
    assert split_fractions(con, "clean_images") == {"train": 0.0, "val": 0.0, "test": 0.0}


def test_bad_arguments(con, tmp_path, crafted):
    with pytest.raises(ValueError, match="invalid table name"):
        clean_images(con, crafted.path, snapshot_version="v", table="x; DROP TABLE quarantine")
    with pytest.raises(ValueError, match="val_fraction"):
        clean_images(con, crafted.path, snapshot_version="v", val_fraction=1.2)
    with pytest.raises(ValueError, match="leave rows for train"):
        clean_images(con, crafted.path, snapshot_version="v", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="image_size"):
        clean_images(con, crafted.path, snapshot_version="v", image_size=0)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        clean_images(con, str(tmp_path / "nope.parquet"), snapshot_version="v")
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(ValueError, match="text.parquet cannot be read as Parquet"):
        clean_images(con, str(not_parquet), snapshot_version="v")
    partial = image_table(make_rows([("a", "x", png(1))])).drop_columns(["decode_error", "width"])
    pq.write_table(partial, tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match="lacks column\\(s\\) width, decode_error"):
        clean_images(con, str(tmp_path / "cols.parquet"), snapshot_version="v")
    with pytest.raises(ValueError, match="split must be"):
        load_images(con, split="holdout")


def test_check_helpers_see_bad_tables(con):
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES "
        "('1', 's', '10', 'x'::BLOB, 'h1', 8, 8, 1, 'train'), "
        "('2', 's', '2', 'x'::BLOB, 'h1', 8, 8, 1, 'train'), "
        "('3', 's', ' ', 'y'::BLOB, 'h2', 8, 8, 1, 'val'), "
        "('4', 's', 'a10', 'z'::BLOB, 'h3', NULL, 8, 1, 'test'), "
        "('5', 's', 'a2', 'w'::BLOB, 'h4', 8, 8, 1, 'train')"
        ") AS v(row_id, source, label, image, content_hash, width, height, channels, split)"
    )
    assert duplicate_count(con, "t") == 1
    assert null_count(con, "t") == 2
    assert split_fractions(con, "t") == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert categories(con, "t") == ["2", "10", " ", "a2", "a10"]  # numbers first, then text
    with pytest.raises(ValueError, match="no table"):
        quarantine_rate(con, "missing_table", "v")
