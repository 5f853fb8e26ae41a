"""Batches of generated samples: one Parquet file per batch, the same columns for every modality."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from gen_assets.store.files import Location, location
from gen_assets.store.snapshots import atomic_write_parquet
from gen_assets.store.warehouse import now


def batch_table(
    *,
    batch_id: str,
    model_version: str | Sequence[str],
    modality: str,
    categories: Sequence[str],
    contents: Sequence[bytes] | Sequence[str],
    seed: int,
    prompts: Sequence[str | None] | None = None,
    created_at: datetime | None = None,
) -> pa.Table:
    """Columns: sample_id, batch_id, model_version, modality, category, content, created_at, seed, prompt.

    `content` is PNG bytes for images and text for texts; `prompt` the brief a text was written for
    (NULL for images and for texts conditioned on the category alone); sample ids are `<batch_id>-<index>`.
    `model_version` is one version, or one per sample (a batch of a champion and its challenger).
    """
    n = len(contents)
    versions = [model_version] * n if isinstance(model_version, str) else list(model_version)
    if len(versions) != n:
        raise ValueError(f"{n} contents but {len(versions)} model versions")
    if len(categories) != n:
        raise ValueError(f"{n} contents but {len(categories)} categories")
    prompts = [None] * n if prompts is None else list(prompts)
    if len(prompts) != n:
        raise ValueError(f"{n} contents but {len(prompts)} prompts")
    ts = created_at or now()
    content_type = pa.binary() if modality == "image" else pa.string()
    return pa.table(
        {
            "sample_id": pa.array([f"{batch_id}-{i:05d}" for i in range(n)], pa.string()),
            "batch_id": pa.array([batch_id] * n, pa.string()),
            "model_version": pa.array(versions, pa.string()),
            "modality": pa.array([modality] * n, pa.string()),
            "category": pa.array(list(categories), pa.string()),
            "content": pa.array(list(contents), content_type),
            "created_at": pa.array([ts] * n, pa.timestamp("us")),
            "seed": pa.array([seed] * n, pa.int64()),
            "prompt": pa.array(prompts, pa.string()),
        }
    )


def write_batch(table: pa.Table, directory: Location | str, batch_id: str) -> Location:
    path = location(directory) / f"{batch_id}.parquet"
    atomic_write_parquet(table, path)
    return path
