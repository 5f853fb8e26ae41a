"""Metric evaluation of a generated batch; every measurement is appended to `metrics_history`."""

import time

import dagster as dg
from pydantic import Field
import numpy as np
import torch
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import Batch, CleanTable, ModelRef, inference_device, lane, numeric_metadata
from gen_assets.defs.assets.trained import label_indices, load_image_split
from gen_assets.media.png import decode_image
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.metrics.images import image_metrics as compute_image_metrics
from gen_assets.metrics.texts import guard_stats, length_bounds
from gen_assets.metrics.texts import text_metrics as compute_text_metrics
from gen_assets.models.text_generators import load_writer, writer_bits_per_byte
from gen_assets.models.checkpoint import load_model
from gen_assets.training.image_data import images_to_tensor
from gen_assets.store import registry
from gen_assets.store.files import read_table


def same_model(batch: Batch, champion: ModelRef) -> None:
    """The metrics describe the champion through its batch: both must be of the same model."""
    if batch.model_version != champion.version:
        raise dg.Failure(f"batch {batch.batch_id} is of {batch.model_version}, but the {champion.modality} champion is "
                         f"{champion.version}: materialize generated_{champion.modality}s first")


class ImageMetricsConfig(dg.Config):
    kid_subset_size: int | None = Field(
        default=None, description="KID subset size; None: as large as the sample count allows"
    )
    inception_weights: str | None = Field(
        default=None,
        description="path to torchmetrics' Inception weights; None: our evaluator's features (the default, "
        "since Inception weights cannot be downloaded everywhere)",
    )
    seed: int = 0


@dg.asset(**lane("image", "evaluation"), kinds={"duckdb"}, code_version="1",
          automation_condition=dg.AutomationCondition.eager())
def image_metrics(
    context: dg.AssetExecutionContext,
    config: ImageMetricsConfig,
    generated_images: Batch,
    image_champion: ModelRef,
    image_evaluator: ModelRef,
    clean_images: CleanTable,
    warehouse: DuckDBResource,
) -> dg.Output[dict]:
    """FID / KID / IS in the evaluator's feature space, class accuracy and diversity of a batch.

    Every FID is measured against the test split: `fid_real_floor` (real train images) and `fid_noise`
    (uniform noise) bound `fid` from below and above; all three use the same sample count.
    """
    t0 = time.perf_counter()
    same_model(generated_images, image_champion)
    table = read_table(generated_images.path, columns=["category", "content"])
    channels = int(clean_images.details["channels"])
    pixels = np.stack([decode_image(b, channels) for b in table.column("content").to_pylist()])
    labels = label_indices(table.column("category").to_pylist(), clean_images.categories)
    with warehouse.get_connection() as con:
        train_x, train_y = load_image_split(con, clean_images, "train")
        test_x, _ = load_image_split(con, clean_images, "test")
    evaluator = load_model(image_evaluator.path, inference_device())
    metrics = compute_image_metrics(
        evaluator,
        generated=images_to_tensor(pixels),
        generated_labels=torch.from_numpy(labels),
        # measured against the test split, which neither the generator nor the evaluator saw; the
        # floor is the train split measured the same way (so memorizing the train set earns no bonus)
        reference=images_to_tensor(test_x),
        real=images_to_tensor(train_x),
        real_labels=torch.from_numpy(train_y),
        kid_subset_size=config.kid_subset_size,
        seed=config.seed,
        inception_weights=config.inception_weights,
    )
    metrics["fid_ratio_to_floor"] = metrics["fid"] / max(metrics["fid_real_floor"], 1e-9)
    with warehouse.get_connection() as con:
        registry.record_metrics(
            con,
            model_version=generated_images.model_version,
            modality="image",
            metrics=metrics,
            batch_id=generated_images.batch_id,
        )
    context.log.info(", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return dg.Output(
        metrics,
        metadata={
            **numeric_metadata(metrics),
            "model_version": generated_images.model_version,
            "batch_id": generated_images.batch_id,
            "feature_space": "inception" if config.inception_weights else f"image_evaluator {image_evaluator.version}",
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


class TextMetricsConfig(dg.Config):
    seed: int = 0


@dg.asset(**lane("text", "evaluation"), kinds={"duckdb"}, code_version="2",
          automation_condition=dg.AutomationCondition.eager())
def text_metrics(
    context: dg.AssetExecutionContext,
    config: TextMetricsConfig,
    generated_texts: Batch,
    text_champion: ModelRef,
    clean_texts: CleanTable,
    warehouse: DuckDBResource,
) -> dg.Output[dict]:
    """Bits per byte of the test split's texts under the champion that wrote the batch (tokenizer-independent);
    the batch's degeneration guard (empty, repetitive, unfinished, length), ROUGE, diversity and novelty."""
    t0 = time.perf_counter()
    same_model(generated_texts, text_champion)
    writer = load_writer(text_champion.path, inference_device())
    with warehouse.get_connection() as con:
        train = text_cleaning.load_briefs(con, split="train", table=clean_texts.table)
        test = text_cleaning.load_briefs(con, split="test", table=clean_texts.table)
    test_examples = [(b.category, b.prompt, b.text) for b in test if b.text]
    metrics: dict[str, float] = {}
    if test_examples:
        metrics["bits_per_byte"] = writer_bits_per_byte(writer, [(c, p) for c, p, _ in test_examples],
                                                        [t for _, _, t in test_examples])
    else:
        context.log.warning(f"the test split of {clean_texts.table} holds no texts: bits_per_byte not measured")
    table = read_table(generated_texts.path, columns=["category", "content"])
    generated = list(zip(table.column("category").to_pylist(), table.column("content").to_pylist()))
    train_texts = [b.text for b in train if b.text]
    metrics.update(guard_stats([t for _, t in generated], length_bounds(train_texts)))
    # ROUGE against the held-out copy of each category (val and test); a category with none held out is
    # compared with its training copy (a small catalog may hold out a category entirely)
    with warehouse.get_connection() as con:
        val = text_cleaning.load_briefs(con, split="val", table=clean_texts.table)
    references = [(b.category, b.text) for b in (*val, *test) if b.text]
    held_out = {c for c, _ in references}
    references += [(b.category, b.text) for b in train if b.text and b.category not in held_out]
    metrics.update(compute_text_metrics(generated, references, train_texts))
    with warehouse.get_connection() as con:
        registry.record_metrics(con, model_version=generated_texts.model_version, modality="text", metrics=metrics,
                                batch_id=generated_texts.batch_id)
    context.log.info(", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return dg.Output(
        metrics,
        metadata={
            **numeric_metadata(metrics),
            "model_version": generated_texts.model_version,
            "batch_id": generated_texts.batch_id,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
