"""Cleaning in DuckDB: the SQL lives in gen_assets/sql, the runners in gen_assets/cleaning."""

import time
from typing import Literal

import dagster as dg
from pydantic import Field
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import CleanTable, lane, warehouse_table_metadata
from gen_assets.cleaning import images as image_cleaning
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.cleaning.common import SplitTooSmall
from gen_assets.store.snapshots import Snapshot


def clean_output(name: str, stats, categories: list[str], raw: Snapshot, t0: float, *, details: dict,
                 metadata: dict, warehouse: DuckDBResource) -> dg.Output[CleanTable]:
    """The clean table handed downstream, versioned by its content hash, with the cleaning's counts and
    the table's columns."""
    with warehouse.get_connection() as con:
        table = warehouse_table_metadata(con, name)
    return dg.Output(
        CleanTable(table=name, version=stats.version, rows=stats.rows_clean, categories=tuple(categories),
                   details={"snapshot_version": raw.version, "source": raw.source, **details}),
        data_version=dg.DataVersion(stats.version),
        metadata={
            "rows_in": stats.rows_in,
            "rows_clean": stats.rows_clean,
            "rows_quarantined": stats.rows_quarantined,
            "quarantine_by_reason": dg.MetadataValue.json(dict(stats.by_reason)),
            "split_counts": dg.MetadataValue.json(dict(stats.split_counts)),
            **metadata,
            "categories": ", ".join(categories),
            "table_version": stats.version,
            **table,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


MIN_SPLIT_ROWS = Field(default=1, description="the fewest rows each category (images) or the data (texts) "
                       "must have in train, val and test; fewer fails the cleaning (0: no check)")


def split_failure(asset: str, error: SplitTooSmall) -> dg.Failure:
    return dg.Failure(f"{asset}: {error} (the previous clean table is kept)")


class CleanImagesConfig(dg.Config):
    image_size: int | None = Field(
        default=None, description="width and height of every clean image; None: inferred, the shorter side of "
        "the most common size in the snapshot (with resize 'none': that size itself)"
    )
    channels: int | None = Field(
        default=None, description="1: grey, 3: colour (RGB); None: inferred, 3 when any image shows colour. Images "
        "are converted to this when loaded for training"
    )
    resize: Literal["crop", "fit", "pad", "none"] = Field(
        default="crop", description="an image of another size: 'crop' scales its shorter side to image_size and "
        "keeps the middle; 'fit' scales both sides (the aspect ratio changes); 'pad' scales its longer side and "
        "adds black borders; 'none' quarantines it (wrong_size)"
    )
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_split_rows: int = MIN_SPLIT_ROWS


@dg.asset(
    **lane("image", "cleaning"),
    kinds={"duckdb"},
    code_version="2",  # 2: sizes and channels inferred, other sizes resized by a policy, short splits fail
)
def clean_images(
    context: dg.AssetExecutionContext, config: CleanImagesConfig, raw_images: Snapshot, warehouse: DuckDBResource
) -> dg.Output[CleanTable]:
    """Decodable, correctly sized, de-duplicated, labelled images with a deterministic split by hash.

    Refused rows land in `quarantine` with their reason, in the same transaction as the clean table.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        try:
            stats = image_cleaning.clean_images(
                con,
                raw_images.path,
                snapshot_version=raw_images.version,
                image_size=config.image_size,
                channels=config.channels,
                resize=config.resize,
                val_fraction=config.val_fraction,
                test_fraction=config.test_fraction,
                min_split_rows=config.min_split_rows,
            )
        except SplitTooSmall as e:
            raise split_failure("clean_images", e) from None
        categories = image_cleaning.categories(con)
    context.log.info(
        f"clean_images: {stats.rows_clean} clean, {stats.rows_quarantined} quarantined of {stats.rows_in}"
    )
    if not stats.rows_clean or stats.image_size is None:
        raise ValueError(
            f"clean_images: no usable image in snapshot {raw_images.version} from {raw_images.source} "
            f"({stats.rows_quarantined} of {stats.rows_in} rows quarantined: {dict(stats.by_reason)}); "
            "see the quarantine table for each row's reason"
        )
    width, height = stats.image_size
    if width != height:
        raise dg.Failure(f"clean_images: the images are {width}x{height} and the models need square ones: set "
                         "clean_images' resize to 'crop', 'fit' or 'pad' (or image_size)")
    how = "configured" if config.channels is not None else "inferred from the data"
    context.log.info(f"clean_images: {width}x{height}, {stats.channels} channel(s) ({how}); {stats.resized} "
                     f"image(s) resized by policy {config.resize!r}")
    return clean_output("clean_images", stats, categories, raw_images, t0,
                        details={"image_size": [width, height], "channels": stats.channels},
                        metadata={"image_size": f"{width}x{height}", "channels": stats.channels,
                                  "resized": stats.resized, "resize": config.resize}, warehouse=warehouse)


class CleanTextsConfig(dg.Config):
    min_chars: int = 20
    max_chars: int = 20000
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_split_rows: int = MIN_SPLIT_ROWS


@dg.asset(**lane("text", "cleaning"), kinds={"duckdb"}, code_version="1")
def clean_texts(
    context: dg.AssetExecutionContext, config: CleanTextsConfig, raw_texts: Snapshot, warehouse: DuckDBResource
) -> dg.Output[CleanTable]:
    """Normalized, markup-free, PII-masked, de-duplicated documents of bounded length, split by hash.

    Refused rows land in `quarantine` with their reason, in the same transaction as the clean table.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        try:
            stats = text_cleaning.clean_texts(
                con,
                raw_texts.path,
                snapshot_version=raw_texts.version,
                min_chars=config.min_chars,
                max_chars=config.max_chars,
                val_fraction=config.val_fraction,
                test_fraction=config.test_fraction,
                min_split_rows=config.min_split_rows,
            )
        except SplitTooSmall as e:
            raise split_failure("clean_texts", e) from None
        categories = text_cleaning.categories(con)
        chars = con.execute("SELECT coalesce(sum(n_chars), 0) FROM clean_texts").fetchone()[0]
    context.log.info(f"clean_texts: {stats.rows_clean} clean, {stats.rows_quarantined} quarantined of {stats.rows_in}")
    return clean_output("clean_texts", stats, categories, raw_texts, t0, details={"chars": int(chars)},
                        metadata={"chars": int(chars)}, warehouse=warehouse)
