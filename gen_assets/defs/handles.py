"""Helpers the asset modules share: handles passed between assets, metadata, stable keys."""

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import torch

# Who answers for the assets: GEN_ASSETS_OWNERS, comma-separated e-mail addresses or team:<name>
# (Dagster refuses anything else when the definitions load); read once, when the asset modules load.
DEFAULT_OWNERS = "team:gen-assets"

# The group of each modality's assets: one lane per modality in the UI's asset graph; the shared
# feedback asset, which both lanes read, has its own.
LANES = {"image": "image", "text": "text", "shared": "feedback"}


def owners_from_env() -> list[str]:
    return [owner.strip() for owner in os.environ.get("GEN_ASSETS_OWNERS", DEFAULT_OWNERS).split(",") if owner.strip()]


def lane(modality: str, stage: str) -> dict[str, Any]:
    """The @dg.asset arguments that place an asset: its modality's lane as the group, the modality and the
    stage as tags (jobs select by the modality tag), and the owners."""
    return {"group_name": LANES[modality], "tags": {"modality": modality, "stage": stage}, "owners": owners_from_env()}


# The Dagster concurrency pool of the assets that train on the accelerator: limit it to one slot per GPU
# in dagster.yaml (docs/deploy/) so two trainings never share a GPU; unlimited by default.
TRAINING_POOL = "gpu"
# ... and under the Celery executor they go to the workers of the "gpu" queue (docs/deploy/celery/)
TRAINING_OP_TAGS = {"dagster-celery/queue": "gpu"}


@dataclass(frozen=True)
class CleanTable:
    """A cleaned DuckDB table, as passed to downstream assets (the data itself stays in DuckDB)."""

    table: str
    version: str
    rows: int
    categories: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef:
    """A trained model file: what training assets hand downstream."""

    modality: str
    arch: str
    version: str
    path: str
    sha256: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """One generation run's output (a Parquet file of samples registered in DuckDB)."""

    batch_id: str
    modality: str
    model_version: str
    path: str
    n_samples: int
    grid_path: str | None = None


def stable_key(*parts: Any, length: int = 12) -> str:
    """A short hash of JSON-able parts: same config and inputs -> same key."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def md_png(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI's metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def numeric_metadata(values: Mapping[str, float]) -> dict[str, dg.MetadataValue]:
    """Metrics as float metadata, so the Dagster UI plots them across materializations; rounded to 4
    significant digits for display (the exact values are in the warehouse's metrics_history)."""
    return {k: dg.MetadataValue.float(float(f"{float(v):.4g}")) for k, v in values.items()}


def uri_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Dagster's standard `dagster/uri` of a file output: its URL, or file:// for a local path."""
    text = str(path)
    return {"dagster/uri": text if "://" in text else Path(text).expanduser().resolve().as_uri()}


def table_metadata(rows: int, columns: Iterable[tuple[str, str]], table_name: str | None = None) -> dict[str, Any]:
    """Dagster's standard table metadata, shown in the UI's asset overview: `dagster/row_count`,
    `dagster/column_schema` from (name, type) pairs, and `dagster/table_name` for a warehouse table."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    meta: dict[str, Any] = {"dagster/row_count": dg.MetadataValue.int(int(rows)),
                            "dagster/column_schema": dg.MetadataValue.table_schema(schema)}
    if table_name:
        meta["dagster/table_name"] = table_name
    return meta


def arrow_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema]


def frame_metadata(frame) -> dict[str, Any]:
    """table_metadata of a pandas DataFrame (types as Arrow names them)."""
    return table_metadata(len(frame), arrow_columns(pa.Schema.from_pandas(frame, preserve_index=False)))


def warehouse_table_metadata(con, table: str) -> dict[str, Any]:
    """table_metadata of a DuckDB table or view as it is now: its columns with DuckDB's types, its row count."""
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position", [table]
    ).fetchall()
    if not columns:
        raise KeyError(f"no table {table!r} in the warehouse")
    rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return table_metadata(rows, columns, table_name=table)


def inference_device() -> str:
    """Generation and evaluation run on the GPU when there is one (training leaves it to Lightning).

    On the GPU, fp32 matmuls may use TF32 tensor cores: the models run in fp32 here, and a 10-bit
    mantissa in the matmul inputs changes samples and features far less than the seed does.
    """
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        return "cuda"
    return "cpu"

