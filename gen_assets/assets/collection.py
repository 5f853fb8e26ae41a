"""Raw collection: land an immutable Parquet snapshot of a configured source."""

import time

import dagster as dg
from pydantic import Field

from gen_assets.resources import ArtifactStore
from gen_assets.sources.images import IMAGE_SNAPSHOT_HASH_COLUMNS, collect_images
from gen_assets.sources.texts import TEXT_SNAPSHOT_HASH_COLUMNS, collect_texts
from gen_assets.store.snapshots import Snapshot, write_snapshot


def land(context, table, name: str, hash_columns: list[str], source: str, artifacts: ArtifactStore, t0: float,
         **extra) -> dg.Output[Snapshot]:
    """Write the collected rows as the asset's snapshot; its data version is the snapshot's content hash."""
    snapshot = write_snapshot(table, artifacts.paths.snapshots / name, hash_columns=hash_columns, source=source)
    unreadable = sum(e is not None for e in table.column("decode_error").to_pylist())
    context.log.info(f"collected {snapshot.rows} rows from {source} -> {snapshot.path}")
    return dg.Output(
        snapshot,
        data_version=dg.DataVersion(snapshot.version),
        metadata={
            "source": source,
            "rows": snapshot.rows,
            "unreadable": unreadable,
            **extra,
            "path": dg.MetadataValue.path(snapshot.path),
            "snapshot_version": snapshot.version,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


class RawImagesConfig(dg.Config):
    source: str = Field(
        default="builtin:digits",
        description="builtin:digits, a folder with one sub-folder per label, an IDX images file "
        "(.gz or plain), or an http(s) URL to one",
    )
    labels: str | None = Field(
        default=None, description="IDX labels file or URL; inferred from the images file name when omitted"
    )


@dg.asset(
    group_name="collection",
    tags={"modality": "image"},
    kinds={"parquet"},
    code_version="1",
)
def raw_images(context: dg.AssetExecutionContext, config: RawImagesConfig, artifacts: ArtifactStore) -> dg.Output[Snapshot]:
    """Images from the configured source, landed as an immutable snapshot named by its content hash."""
    t0 = time.perf_counter()
    table = collect_images(config.source, labels=config.labels)
    return land(context, table, "raw_images", IMAGE_SNAPSHOT_HASH_COLUMNS, config.source, artifacts, t0)


class RawTextsConfig(dg.Config):
    source: str = Field(
        default="builtin:shakespeare",
        description="builtin:shakespeare, a folder of .txt/.md files (category = sub-folder), a CSV / JSONL / "
        "Parquet file, or an http(s) URL to a text file",
    )
    text_column: str = "text"
    category_column: str = "category"


@dg.asset(group_name="collection", tags={"modality": "text"}, kinds={"parquet"}, code_version="1")
def raw_texts(context: dg.AssetExecutionContext, config: RawTextsConfig, artifacts: ArtifactStore) -> dg.Output[Snapshot]:
    """Text documents from the configured source, landed as an immutable snapshot named by its content hash."""
    t0 = time.perf_counter()
    table = collect_texts(config.source, text_column=config.text_column, category_column=config.category_column)
    return land(context, table, "raw_texts", TEXT_SNAPSHOT_HASH_COLUMNS, config.source, artifacts, t0,
                chars=int(sum(table.column("raw_bytes").to_pylist())))
