"""Cleaning in DuckDB: the SQL lives in gen_assets/sql, the runners in gen_assets/cleaning."""

import time

import dagster as dg
from pydantic import Field
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import CleanTable, lane, warehouse_table_metadata
from gen_assets.cleaning import images as image_cleaning
from gen_assets.cleaning import texts as text_cleaning
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


class CleanImagesConfig(dg.Config):
    image_size: int | None = Field(
        default=None, description="expected width and height; None: the most common size in the snapshot"
    )
    channels: int = Field(
        default=1, description="1: grayscale, 3: RGB; images are converted to this when loaded for training"
    )
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dg.asset(
    **lane("image", "cleaning"),
    kinds={"duckdb"},
    code_version="1",
)
def clean_images(
    context: dg.AssetExecutionContext, config: CleanImagesConfig, raw_images: Snapshot, warehouse: DuckDBResource
) -> dg.Output[CleanTable]:
    """Decodable, correctly sized, de-duplicated, labelled images with a deterministic split by hash.

    Refused rows land in `quarantine` with their reason, in the same transaction as the clean table.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        stats = image_cleaning.clean_images(
            con,
            raw_images.path,
            snapshot_version=raw_images.version,
            image_size=config.image_size,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
        )
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
    return clean_output("clean_images", stats, categories, raw_images, t0,
                        details={"image_size": [width, height], "channels": config.channels},
                        metadata={"image_size": f"{width}x{height}"}, warehouse=warehouse)


class CleanTextsConfig(dg.Config):
    min_chars: int = 20
    max_chars: int = 20000
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dg.asset(**lane("text", "cleaning"), kinds={"duckdb"}, code_version="1")
def clean_texts(
    context: dg.AssetExecutionContext, config: CleanTextsConfig, raw_texts: Snapshot, warehouse: DuckDBResource
) -> dg.Output[CleanTable]:
    """Normalized, markup-free, PII-masked, de-duplicated documents of bounded length, split by hash.

    Refused rows land in `quarantine` with their reason, in the same transaction as the clean table.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        stats = text_cleaning.clean_texts(
            con,
            raw_texts.path,
            snapshot_version=raw_texts.version,
            min_chars=config.min_chars,
            max_chars=config.max_chars,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
        )
        categories = text_cleaning.categories(con)
        chars = con.execute("SELECT coalesce(sum(n_chars), 0) FROM clean_texts").fetchone()[0]
    context.log.info(f"clean_texts: {stats.rows_clean} clean, {stats.rows_quarantined} quarantined of {stats.rows_in}")
    return clean_output("clean_texts", stats, categories, raw_texts, t0, details={"chars": int(chars)},
                        metadata={"chars": int(chars)}, warehouse=warehouse)
