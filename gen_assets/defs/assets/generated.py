"""Batch generation: N samples per category from the trained generator, as a registered Parquet batch."""

import time

import dagster as dg
from pydantic import Field
import numpy as np
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import (Batch, ModelRef, arrow_columns, inference_device, lane, md_png, stable_key,
                                     table_metadata, uri_metadata)
from gen_assets.training.sampling import generate_per_class
from gen_assets.media.png import encode_png, make_grid, to_uint8
from gen_assets.models.checkpoint import load_model
from gen_assets.training.text_data import generate_texts
from gen_assets.models.tokenizers import tokenizer_from_dict
from gen_assets.defs.resources import ArtifactStore
from gen_assets.store import registry
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.store.files import atomic_write_bytes


class GeneratedImagesConfig(dg.Config):
    samples_per_class: int = 100
    seed: int = 0
    grid_per_class: int = Field(default=10, description="samples per category shown in the grid")


@dg.asset(**lane("image", "generation"), kinds={"parquet"}, code_version="1",
          automation_condition=dg.AutomationCondition.eager())
def generated_images(
    context: dg.AssetExecutionContext,
    config: GeneratedImagesConfig,
    image_champion: ModelRef,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
) -> dg.Output[Batch]:
    """A batch of the champion's samples per category, listed in the DuckDB view `generated`, with a PNG grid."""
    champion = image_champion
    t0 = time.perf_counter()
    categories = list(champion.details["categories"])
    model = load_model(champion.path, inference_device())
    batch_id = "image-" + stable_key(champion.version, config.samples_per_class, config.seed)

    def progress(done: int, total: int) -> None:
        context.log.info(f"generated {done}/{total} samples")

    images, labels = generate_per_class(
        model, num_classes=len(categories), per_class=config.samples_per_class, seed=config.seed, progress=progress
    )
    pixels = to_uint8(images.numpy())
    contents = [encode_png(p) for p in pixels]
    table = batch_table(
        batch_id=batch_id,
        model_version=champion.version,
        modality="image",
        categories=[categories[i] for i in labels.tolist()],
        contents=contents,
        seed=config.seed,
    )
    directory = artifacts.paths.batches / "image"
    path = write_batch(table, directory, batch_id)
    shown = min(config.grid_per_class, config.samples_per_class)
    rows = np.concatenate([pixels[c * config.samples_per_class : c * config.samples_per_class + shown] for c in range(len(categories))])
    grid_png = encode_png(make_grid(rows, rows=len(categories), scale=max(1, 32 // pixels.shape[1])))
    grid_path = directory / f"{batch_id}.png"
    atomic_write_bytes(grid_path, grid_png)
    with warehouse.get_connection() as con:
        registry.register_batch(
            con,
            batch_id=batch_id,
            modality="image",
            model_version=champion.version,
            path=str(path),
            grid_path=str(grid_path),
            n_samples=len(contents),
        )
    seconds = time.perf_counter() - t0
    return dg.Output(
        Batch(batch_id, "image", champion.version, str(path), len(contents), str(grid_path)),
        data_version=dg.DataVersion(batch_id),
        metadata={
            "batch_id": batch_id,
            "model_version": champion.version,
            "samples": len(contents),
            "path": dg.MetadataValue.path(str(path)),
            **uri_metadata(path),
            **table_metadata(table.num_rows, arrow_columns(table.schema)),
            "grid_path": dg.MetadataValue.path(str(grid_path)),
            "grid": md_png(grid_png, "samples, one row per category"),
            "seconds": round(seconds, 3),
            "samples_per_second": round(len(contents) / max(seconds, 1e-9), 1),
        },
    )


class GeneratedTextsConfig(dg.Config):
    samples_per_category: int = 20
    max_new_tokens: int = 300
    prompts: list[str] = Field(
        default=[], description="prompt strings; each category gets samples_per_category samples per prompt"
    )
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = 0.95
    stop: str | None = Field(
        default=None, description="a stop sequence: each sample is cut at its first occurrence (kept)"
    )
    seed: int = 0


@dg.asset(**lane("text", "generation"), kinds={"parquet"}, code_version="1",
          automation_condition=dg.AutomationCondition.eager())
def generated_texts(
    context: dg.AssetExecutionContext,
    config: GeneratedTextsConfig,
    text_champion: ModelRef,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
) -> dg.Output[Batch]:
    """A batch of the champion's texts per category (each prompted by its control token), listed in the view
    `generated`."""
    champion = text_champion
    t0 = time.perf_counter()
    categories = list(champion.details["categories"])
    model = load_model(champion.path, inference_device())
    tokenizer = tokenizer_from_dict(model.extra["tokenizer"])
    batch_id = "text-" + stable_key(champion.version, config.model_dump())
    rows: list[tuple[str, str]] = []
    for prompt in config.prompts or [""]:
        for i, category in enumerate(categories):
            texts = generate_texts(
                model,
                tokenizer,
                [category] * config.samples_per_category,
                max_new_tokens=config.max_new_tokens,
                prompt=prompt,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                seed=config.seed + 1000 * i,
            )
            if config.stop:
                texts = [t[: t.index(config.stop) + len(config.stop)] if config.stop in t else t for t in texts]
            rows += [(category, t) for t in texts]
            context.log.info(f"generated {len(rows)} samples ({category!r}, prompt {prompt!r})")
    table = batch_table(
        batch_id=batch_id,
        model_version=champion.version,
        modality="text",
        categories=[c for c, _ in rows],
        contents=[t for _, t in rows],
        seed=config.seed,
    )
    path = write_batch(table, artifacts.paths.batches / "text", batch_id)
    with warehouse.get_connection() as con:
        registry.register_batch(con, batch_id=batch_id, modality="text", model_version=champion.version,
                                path=str(path), grid_path=None, n_samples=len(rows))
    seconds = time.perf_counter() - t0
    preview = "\n\n".join(f"**{c}**\n\n> " + t[:300].replace("\n", "\n> ") for c, t in rows[:: max(1, config.samples_per_category)][:6])
    return dg.Output(
        Batch(batch_id, "text", champion.version, str(path), len(rows)),
        data_version=dg.DataVersion(batch_id),
        metadata={
            "batch_id": batch_id,
            "model_version": champion.version,
            "samples": len(rows),
            "path": dg.MetadataValue.path(str(path)),
            **uri_metadata(path),
            **table_metadata(table.num_rows, arrow_columns(table.schema)),
            "preview": dg.MetadataValue.md(preview),
            "seconds": round(seconds, 3),
            "tokens_per_second": round(sum(len(tokenizer.encode(t)) for _, t in rows) / max(seconds, 1e-9), 1),
        },
    )
