"""Helpers the asset modules share: handles passed between assets, metadata, stable keys."""

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import torch



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
    """Metrics as float metadata, so the Dagster UI plots them across materializations."""
    return {k: dg.MetadataValue.float(float(v)) for k, v in values.items()}


def inference_device() -> str:
    """Generation and evaluation run on the GPU when there is one (training leaves it to Lightning).

    On the GPU, fp32 matmuls may use TF32 tensor cores: the models run in fp32 here, and a 10-bit
    mantissa in the matmul inputs changes samples and features far less than the seed does.
    """
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        return "cuda"
    return "cpu"

