"""Image cleaning: run gen_assets/sql/clean_images.sql on a Parquet snapshot in one DuckDB transaction.

The SQL does the work (DuckDB reads the snapshot straight from Parquet); this module validates the
arguments, binds the variables, owns the transaction, and reads back the statistics. It also holds the
readers of the clean table (`load_images`, `categories`) and the small queries the asset checks use.

Quarantine rows are recorded under `asset = <table>` (by default "clean_images"), so a clean table with
another name (a test, the benchmark) never replaces the quarantine rows of the real one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import partial

import duckdb
import numpy as np

from gen_assets.media.png import RESIZE_POLICIES, decode_image, has_colour, resize_image
from gen_assets.cleaning.common import (  # noqa: F401 (split_fractions, quarantine_rate: re-exported for the checks; SplitTooSmall for callers)
    BUCKETS,
    SPLITS,
    SplitTooSmall,
    check_snapshot_columns,
    require_split_rows,
    run_cleaning,
    quarantine_rate,
    split_buckets,
    split_fractions,
    table_identifier,
)
from gen_assets.sql import load_sql
from gen_assets.store.files import duckdb_source, location
from gen_assets.store.warehouse import ensure_schema, now

REASON_KINDS = ("undecodable", "hash_mismatch", "missing_label", "wrong_size", "duplicate")
SNAPSHOT_COLUMNS = ("source", "row_id", "label", "image", "content_hash", "width", "height", "channels", "decode_error")
CLEAN_COLUMNS = ("row_id", "source", "label", "image", "content_hash", "width", "height", "channels", "split")
# The clean table's version: a hash of what is in it, blind to row ids and row order. Per (split, label):
# the row count and the exact sums of the two 64-bit halves of each content_hash's first 128 bits (sha256
# output, so uniform); then sha256 over those few lines. Hashing the rows in content_hash order instead
# costs a sort of every row, which took longer than the whole rest of the cleaning.
TABLE_VERSION_SQL = """
SELECT sha256(coalesce(string_agg(line, chr(10) ORDER BY line), '')) FROM (
    SELECT concat_ws(':', split, label, count(*),
                     sum(('0x' || substr(content_hash, 1, 16))::UBIGINT::HUGEINT),
                     sum(('0x' || substr(content_hash, 17, 16))::UBIGINT::HUGEINT)) AS line
    FROM {table}
    GROUP BY split, label
)
"""
_TEMP_TABLES = ("_clean_images_expected", "_clean_images_checked", "_clean_images_duplicates")
RESIZE_UDF = "gen_assets_resize_image"  # the name clean_images.sql calls resize_image by
_RESIZED = duckdb.struct_type({"image": "BLOB", "channels": "INTEGER"})


@dataclass(frozen=True)
class CleanStats:
    """What one cleaning run did; `version` is the content hash of the clean table."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    by_reason: dict[str, int] = field(default_factory=dict)  # every reason kind (REASON_KINDS) -> rows
    split_counts: dict[str, int] = field(default_factory=dict)  # train / val / test -> rows
    image_size: tuple[int, int] | None = None  # (width, height) every clean image has
    channels: int = 1  # 1 grey, 3 colour: the configured value, else inferred (see infer_channels)
    resized: int = 0  # clean rows whose image was resized to image_size
    version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageSet:
    """Clean images in row_id order: uint8 N x H x W x C, with their labels (categories) and row ids."""

    images: np.ndarray
    labels: list[str]
    row_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def clean_images(
    con: duckdb.DuckDBPyConnection,
    snapshot_path: str,
    *,
    snapshot_version: str,
    image_size: int | None = None,
    channels: int | None = None,
    resize: str = "crop",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_split_rows: int = 0,
    table: str = "clean_images",
) -> CleanStats:
    """Replace `table` with the clean rows of the snapshot and its quarantine rows, in one transaction.

    A row is quarantined when it does not decode, its content_hash is not the sha256 of its bytes, its
    label is missing or blank, or it repeats an earlier row's image (first by row_id stays). Labels are
    trimmed and lower-cased. Every clean image is `image_size` x `image_size`; image_size None infers
    it from the most common size: its shorter side, or with resize "none" that size itself. An image of
    another size is brought to it by `resize` (gen_assets.media.png.resize_image: "crop", the default,
    scales the shorter side and cuts the middle; "fit" stretches; "pad" adds black borders) or, with
    "none", quarantined as wrong_size. Images of the right size keep their bytes.
    `channels` None infers them: 3 when any clean image shows colour, else 1 (see infer_channels).
    Clean rows get a split from the first 8 hex digits of their raw content_hash:
    bucket = value % 10,000; bucket < test -> "test", then "val", then "train". With `min_split_rows` > 0,
    a category with fewer rows than that in train, val or test (a split whose fraction is 0 aside) raises
    SplitTooSmall, naming the categories and their counts.
    If anything fails, the previous clean table and quarantine rows are left exactly as they were.
    """
    ident = table_identifier(table)
    if table in _TEMP_TABLES:
        raise ValueError(f"table name {table!r} is reserved for the cleaning's own temporary tables")
    test_buckets, val_buckets = split_buckets(val_fraction, test_fraction)
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ValueError(f"image_size must be a positive int (pixels per side) or None, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (colour) or None (inferred), got {channels!r}")
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
    if not location(snapshot_path).is_file():
        raise FileNotFoundError(f"image snapshot {snapshot_path} does not exist")
    readable = duckdb_source(con, snapshot_path)  # a path, or a URL DuckDB reads (httpfs / fsspec)
    check_snapshot_columns(con, readable, SNAPSHOT_COLUMNS, "image")
    ensure_schema(con)

    variables = {
        "snapshot_path": readable,
        "snapshot_version": snapshot_version,
        "asset": table,
        "expected_width": image_size,
        "expected_height": image_size,
        "resize": resize,
        "test_buckets": test_buckets,
        "val_buckets": val_buckets,
        "quarantined_at": now(),
    }
    sql = load_sql("clean_images").replace("{table}", ident)
    con.create_function(RESIZE_UDF, _resize_udf, ["BLOB", "INTEGER", "VARCHAR"], _RESIZED)
    try:
        return run_cleaning(con, sql, variables=variables, ident=ident, temp_tables=_TEMP_TABLES,
                            snapshot_version=snapshot_version, read_stats=partial(_read_stats, channels=channels, min_split_rows=min_split_rows,
                                                      fractions={"val": val_fraction, "test": test_fraction}))
    finally:
        con.remove_function(RESIZE_UDF)


def infer_channels(con: duckdb.DuckDBPyConnection, table: str = "clean_images") -> int:
    """3 when any image of the clean table shows colour (gen_assets.media.png.has_colour), else 1.

    Rows with three or more bands are looked at first, and the search stops at the first colour image:
    colour data costs one decode; grey data one header read per row (palette images are decoded).
    """
    return _infer_channels(con, table_identifier(table))


def _infer_channels(con: duckdb.DuckDBPyConnection, ident: str) -> int:
    cursor = con.execute(f"SELECT image FROM {ident} ORDER BY channels DESC")
    while batch := cursor.fetchmany(1024):
        if any(has_colour(image) for (image,) in batch):
            return 3
    return 1


def load_images(
    con: duckdb.DuckDBPyConnection, *, split: str | None = None, channels: int = 1, table: str = "clean_images"
) -> ImageSet:
    """Decode the clean images (all, or one split) in row_id order into uint8 N x H x W x `channels`."""
    ident = table_identifier(table)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    where = "WHERE split = ?" if split is not None else ""
    rows = con.execute(
        f"SELECT row_id, label, image FROM {ident} {where} ORDER BY row_id", [split] if split else []
    ).fetchall()
    if not rows:
        return ImageSet(np.zeros((0, 0, 0, channels), dtype=np.uint8), [], [])
    arrays = [decode_image(image, channels) for _, _, image in rows]
    shape = arrays[0].shape
    for (row_id, _, _), arr in zip(rows, arrays, strict=True):
        if arr.shape != shape:
            raise ValueError(f"{table}: row {row_id} has shape {arr.shape}, row {rows[0][0]} has {shape}")
    return ImageSet(np.stack(arrays), [r[1] for r in rows], [r[0] for r in rows])


def categories(con: duckdb.DuckDBPyConnection, table: str = "clean_images") -> list[str]:
    """The distinct labels of the clean table, naturally sorted ("2" before "10", "a2" before "a10")."""
    ident = table_identifier(table)
    labels = [r[0] for r in con.execute(f"SELECT DISTINCT label FROM {ident}").fetchall()]
    return sorted(labels, key=natural_key)


def natural_key(text: str) -> tuple:
    # Digit runs compare as numbers, the rest as text; the (kind, ...) pairs keep int and str apart.
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.findall(r"\d+|\D+", text))


# ---- queries for the asset checks ----------------------------------------------------------------------


def duplicate_count(con: duckdb.DuckDBPyConnection, table: str = "clean_images") -> int:
    """Rows whose content_hash already appears on another row of the clean table (0 after cleaning)."""
    ident = table_identifier(table)
    return int(con.execute(f"SELECT count(*) - count(DISTINCT content_hash) FROM {ident}").fetchone()[0])


def null_count(con: duckdb.DuckDBPyConnection, table: str = "clean_images") -> int:
    """Rows with a NULL in any column of the clean table, or a blank label (0 after cleaning)."""
    ident = table_identifier(table)
    any_null = " OR ".join(f"{c} IS NULL" for c in CLEAN_COLUMNS)
    return int(con.execute(f"SELECT count(*) FROM {ident} WHERE {any_null} OR trim(label) = ''").fetchone()[0])


# ---- helpers ---------------------------------------------------------------------------------------------


def _resize_udf(image: bytes, size: int, policy: str) -> dict:
    data, channels = resize_image(image, size, policy)
    return {"image": data, "channels": channels}


def _read_stats(con: duckdb.DuckDBPyConnection, ident: str, *, channels: int | None, min_split_rows: int,
                fractions: dict[str, float]) -> CleanStats:
    require_split_rows(con, ident, by="label", min_rows=min_split_rows, fractions=fractions, kind="image")
    # _clean_images_checked holds every input row with its own verdict; the duplicates are the rows of
    # _clean_images_duplicates (clean on their own, so not counted twice); the clean table is the rest.
    by_reason = dict(
        con.execute(
            "SELECT reason_kind, count(*) FROM _clean_images_checked WHERE reason_kind IS NOT NULL "
            "GROUP BY reason_kind"
        ).fetchall()
    )
    (by_reason["duplicate"],) = con.execute("SELECT count(*) FROM _clean_images_duplicates").fetchone()
    (rows_in,) = con.execute("SELECT count(*) FROM _clean_images_checked").fetchone()
    splits = dict(con.execute(f"SELECT split, count(*) FROM {ident} GROUP BY split").fetchall())
    rows_clean = sum(splits.values())
    width, height = con.execute("SELECT width, height FROM _clean_images_expected").fetchone()
    (resized,) = con.execute(
        "SELECT count(*) FROM _clean_images_checked WHERE resized AND reason_kind IS NULL "
        "AND file_row_number NOT IN (SELECT file_row_number FROM _clean_images_duplicates)"
    ).fetchone()
    (version,) = con.execute(TABLE_VERSION_SQL.format(table=ident)).fetchone()
    return CleanStats(
        rows_in=int(rows_in),
        rows_clean=int(rows_clean),
        rows_quarantined=int(rows_in - rows_clean),
        by_reason={k: int(by_reason.get(k, 0)) for k in REASON_KINDS},
        split_counts={s: int(splits.get(s, 0)) for s in SPLITS},
        image_size=None if width is None else (int(width), int(height)),
        channels=channels if channels is not None else _infer_channels(con, ident),
        resized=int(resized),
        version=version,
    )
