"""Raw collection: land an immutable Parquet snapshot of a configured source, streamed batch by batch."""

import time
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from gen_assets.defs.handles import arrow_columns, lane, table_metadata, uri_metadata
from gen_assets.defs.resources import ArtifactStore
from gen_assets.sources.common import DownloadLimits
from gen_assets.sources.images import IMAGE_SNAPSHOT_HASH_COLUMNS, iter_images
from gen_assets.sources.texts import TEXT_SCHEMA, TEXT_SNAPSHOT_HASH_COLUMNS, iter_texts
from gen_assets.store.snapshots import Snapshot, write_snapshot


class Tally:
    """Counts what passes through on its way to the snapshot file, so no batch is kept for the metadata."""

    def __init__(self, sum_column: str | None = None):
        self.unreadable = 0
        self.total = 0
        self.batches = 0
        self.sum_column = sum_column
        self.schema = pa.schema([])  # the first batch's, for the metadata's column schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if not self.batches:
                self.schema = batch.schema
            self.unreadable += batch.num_rows - batch.column("decode_error").null_count
            if self.sum_column:
                self.total += pc.sum(batch.column(self.sum_column)).as_py() or 0
            self.batches += 1
            yield batch


def land(context, batches, name: str, hash_columns: list[str], source: str, artifacts: ArtifactStore, t0: float,
         schema: pa.Schema | None, sum_column: str | None = None) -> dg.Output[Snapshot]:
    """Stream the collected batches into the asset's snapshot; its data version is the snapshot's content hash."""
    tally = Tally(sum_column)
    snapshot = write_snapshot(tally(batches), artifacts.paths.snapshots / name, hash_columns=hash_columns,
                              source=source, schema=schema)
    context.log.info(f"collected {snapshot.rows} rows from {source} in {tally.batches} batches -> {snapshot.path}")
    extra = {"chars": tally.total} if sum_column else {}
    return dg.Output(
        snapshot,
        data_version=dg.DataVersion(snapshot.version),
        metadata={
            "source": source,
            "rows": snapshot.rows,
            "unreadable": tally.unreadable,
            **extra,
            "path": dg.MetadataValue.path(snapshot.path),
            **uri_metadata(snapshot.path),
            **table_metadata(snapshot.rows, arrow_columns(schema or tally.schema)),
            "snapshot_version": snapshot.version,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


class DownloadConfig(dg.Config):
    """Bounds on a source at an http(s) URL (gen_assets.sources.common.DownloadLimits)."""

    download_deadline_s: float = Field(default=300.0, description="the whole download, first to last byte")
    download_max_bytes: int = Field(default=2 << 30, description="largest body accepted")

    def download_limits(self) -> DownloadLimits:
        return DownloadLimits(deadline_s=self.download_deadline_s, max_bytes=self.download_max_bytes)


class RawImagesConfig(DownloadConfig):
    source: str = Field(
        default="builtin:digits",
        description="builtin:digits, a folder with one sub-folder per label, an IDX images file "
        "(.gz or plain), or an http(s) URL to one",
    )
    labels: str | None = Field(
        default=None, description="IDX labels file or URL; inferred from the images file name when omitted"
    )
    idx_max_bytes: int = Field(default=1 << 30, description="largest pixel data an IDX header may declare")


@dg.asset(
    **lane("image", "collection"),
    kinds={"parquet"},
    code_version="1",
)
def raw_images(context: dg.AssetExecutionContext, config: RawImagesConfig, artifacts: ArtifactStore) -> dg.Output[Snapshot]:
    """Images from the configured source, landed as an immutable snapshot named by its content hash."""
    t0 = time.perf_counter()
    batches = iter_images(config.source, labels=config.labels, idx_max_bytes=config.idx_max_bytes,
                          download_limits=config.download_limits())
    return land(context, batches, "raw_images", IMAGE_SNAPSHOT_HASH_COLUMNS, config.source, artifacts, t0,
                schema=None)


class RawTextsConfig(DownloadConfig):
    source: str = Field(
        default="builtin:product_briefs",
        description="builtin:product_briefs (product briefs with reference ad copy), builtin:shakespeare, a "
        "folder of .txt/.md files (category = sub-folder), a CSV / JSONL / Parquet file, or an http(s) URL to a text file",
    )
    text_column: str = "text"
    category_column: str = "category"
    prompt_column: str = "prompt"


@dg.asset(**lane("text", "collection"), kinds={"parquet"}, code_version="1")
def raw_texts(context: dg.AssetExecutionContext, config: RawTextsConfig, artifacts: ArtifactStore) -> dg.Output[Snapshot]:
    """Text documents from the configured source, landed as an immutable snapshot named by its content hash."""
    t0 = time.perf_counter()
    batches = iter_texts(config.source, text_column=config.text_column, category_column=config.category_column,
                         prompt_column=config.prompt_column, download_limits=config.download_limits())
    return land(context, batches, "raw_texts", TEXT_SNAPSHOT_HASH_COLUMNS, config.source, artifacts, t0,
                schema=TEXT_SCHEMA, sum_column="raw_bytes")
