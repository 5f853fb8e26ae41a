"""Batch generation: N samples per category from the trained generator, as a registered Parquet batch."""

import time

import dagster as dg
from pydantic import Field
import numpy as np
from dagster_duckdb import DuckDBResource

from gen_assets.cleaning import texts as text_cleaning
from gen_assets.defs.handles import (Batch, CleanTable, ModelRef, arrow_columns, inference_device, lane, md_png, stable_key,
                                     table_metadata, uri_metadata)
from gen_assets.training.sampling import generate_per_class
from gen_assets.media.png import encode_png, make_grid, to_uint8
from gen_assets.models.checkpoint import load_model
from gen_assets.models.text_generators import load_writer
from gen_assets.defs.resources import ArtifactStore
from gen_assets.store import registry
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.store.files import atomic_write_bytes


def serving_models(champion: ModelRef) -> list[tuple[str, str]]:
    """(version, checkpoint path) of the models whose content is served: the champion, and the challenger of
    a running experiment (the champion asset puts it in the champion's details)."""
    challenger = champion.details.get("challenger")
    return [(champion.version, champion.path)] + ([(challenger["version"], challenger["path"])] if challenger else [])


class GeneratedImagesConfig(dg.Config):
    samples_per_class: int = Field(default=300, description="images per category; curation keeps the best "
                                   "k_per_category of them, so more give it more to choose from")
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
    """A batch of the champion's samples per category (and of the challenger's, while an experiment runs),
    listed in the DuckDB view `generated`, with a PNG grid of the champion's."""
    champion = image_champion
    t0 = time.perf_counter()
    categories = list(champion.details["categories"])
    models = serving_models(champion)
    batch_id = "image-" + stable_key(*(v for v, _ in models), config.samples_per_class, config.seed)

    def progress(done: int, total: int) -> None:
        context.log.info(f"generated {done}/{total} samples")

    pixels, contents, labels, versions = None, [], [], []
    for version, path in models:
        images, classes = generate_per_class(load_model(path, inference_device()), num_classes=len(categories),
                                             per_class=config.samples_per_class, seed=config.seed, progress=progress)
        made = to_uint8(images.numpy())
        pixels = made if pixels is None else pixels  # the grid shows the champion's
        contents += [encode_png(p) for p in made]
        labels += classes.tolist()
        versions += [version] * len(made)
    table = batch_table(
        batch_id=batch_id,
        model_version=versions,
        modality="image",
        categories=[categories[i] for i in labels],
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
            **({"challenger": models[1][0]} if len(models) > 1 else {}),
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
    samples_per_brief: int = Field(default=8, description="samples per brief (per category for a corpus "
                                   "without prompts): curation picks the best k per category of them, so more "
                                   "samples give it more to choose from")
    max_new_tokens: int = Field(default=48, description="longest sample, in tokens (characters for the char GPT)")
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = 0.95
    stop: list[str] = Field(default=[], description="stop strings: a sample is cut at the first one (dropped)")
    batch_size: int = Field(default=32, description="briefs generated together (one KV cache per batch)")
    seed: int = 0


def generation_briefs(clean_texts: CleanTable, warehouse: DuckDBResource) -> list[tuple[str, str | None]]:
    """The distinct (category, prompt) briefs of the clean table; a corpus without prompts: its categories."""
    with warehouse.get_connection() as con:
        briefs = text_cleaning.distinct_briefs(text_cleaning.load_briefs(con, table=clean_texts.table))
    if all(prompt is None for _, prompt in briefs):
        return [(c, None) for c in clean_texts.categories]
    return briefs


@dg.asset(**lane("text", "generation"), kinds={"parquet"}, code_version="2",
          automation_condition=dg.AutomationCondition.eager())
def generated_texts(
    context: dg.AssetExecutionContext,
    config: GeneratedTextsConfig,
    text_champion: ModelRef,
    clean_texts: CleanTable,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
) -> dg.Output[Batch]:
    """A batch of the champion's texts for every brief of the clean table (every category when the corpus
    has no prompts), each sample recorded with its brief, listed in the DuckDB view `generated`."""
    champion = text_champion
    t0 = time.perf_counter()
    models = serving_models(champion)
    briefs = generation_briefs(clean_texts, warehouse)
    wanted = [b for b in briefs for _ in range(config.samples_per_brief)]
    batch_id = "text-" + stable_key(*(v for v, _ in models), clean_texts.version, config.model_dump())
    texts: list[str] = []
    versions: list[str] = []
    for version, path in models:
        writer = load_writer(path, inference_device())
        for start in range(0, len(wanted), config.batch_size):
            chunk = wanted[start : start + config.batch_size]
            texts += writer.write(chunk, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  top_k=config.top_k, top_p=config.top_p, stop=config.stop,
                                  seed=config.seed + start, batch_size=config.batch_size)
            versions += [version] * len(chunk)
            context.log.info(f"{version}: generated {len(texts)}/{len(wanted) * len(models)} samples")
    table = batch_table(
        batch_id=batch_id,
        model_version=versions,
        modality="text",
        categories=[c for c, _ in wanted] * len(models),
        contents=texts,
        prompts=[p for _, p in wanted] * len(models),
        seed=config.seed,
    )
    path = write_batch(table, artifacts.paths.batches / "text", batch_id)
    with warehouse.get_connection() as con:
        registry.register_batch(con, batch_id=batch_id, modality="text", model_version=champion.version,
                                path=str(path), grid_path=None, n_samples=len(texts))
    seconds = time.perf_counter() - t0
    shown = [(c, p, t) for (c, p), t in zip(wanted, texts)][:: max(1, config.samples_per_brief)][:8]
    preview = "\n\n".join(f"**{c}**" + (f" — {p[:160]}" if p else "") + "\n\n> " + t[:300].replace("\n", "\n> ")
                           for c, p, t in shown)
    return dg.Output(
        Batch(batch_id, "text", champion.version, str(path), len(texts)),
        data_version=dg.DataVersion(batch_id),
        metadata={
            "batch_id": batch_id,
            "model_version": champion.version,
            **({"challenger": models[1][0]} if len(models) > 1 else {}),
            "samples": len(texts),
            "briefs": len(briefs),
            "path": dg.MetadataValue.path(str(path)),
            **uri_metadata(path),
            **table_metadata(table.num_rows, arrow_columns(table.schema)),
            "preview": dg.MetadataValue.md(preview),
            "seconds": round(seconds, 3),
            "samples_per_second": round(len(texts) / max(seconds, 1e-9), 2),
        },
    )
