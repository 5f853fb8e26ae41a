"""Content curation: of a generated batch, keep the reward model's top k per category, drop what is broken.

The result is the DuckDB view `curated` (the columns of `generated` plus reward, rank and exploratory):
what the business application shows, and beside it, marked `exploratory`, a share of samples the reward
model is least sure about, for people to rate. A reward model ranks only when it predicts people's
ratings (tuned.predicts); until then the ranking before any rating stays. Refused samples go to
`quarantine` with their reason.
"""

import math
import time

import dagster as dg
import numpy as np
import pandas as pd
import torch
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.defs.handles import Batch, CleanTable, ModelRef, frame_metadata, inference_device, lane
from gen_assets.defs.assets.trained import label_indices
from gen_assets.defs.assets.tuned import predicts
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.rules.curation import Curation, NgramIndex, curate, image_confidence, prior_text_score, text_flags
from gen_assets.media.png import decode_image
from gen_assets.models.checkpoint import load_model
from gen_assets.training.image_data import images_to_tensor
from gen_assets.metrics.texts import length_bounds
from gen_assets.models.reward import image_features, writer_features
from gen_assets.models.text_generators import load_writer
from gen_assets.store import warehouse as wh
from gen_assets.store.files import read_table
from gen_assets.store.samples import replace_curated


EXPLORE_SHARE = Field(default=0.2, description="exploratory samples shown beside the curated ones, as a share of "
                      "k_per_category (rounded up; 0: none): those the reward model is least sure about (at random "
                      "before any reward model), marked 'exploring' on the review page, so ratings teach it the most")


def explore_count(share: float, k: int) -> int:
    if not 0.0 <= share <= 1.0:
        raise dg.Failure(f"explore_share must be in [0, 1], got {share}")
    return math.ceil(share * k - 1e-9)


def ranking(reward_model: ModelRef, prior: np.ndarray, prior_label: str, features) -> tuple[np.ndarray, str, dict]:
    """(reward per sample, what scored them, extra columns): the reward model's predictions when it predicts,
    else the prior ranking; a fitted model's uncertainty either way (exploration shows the least certain)."""
    if not reward_model.details.get("fitted"):
        return prior, prior_label, {}
    model = load_model(reward_model.path)
    feats = features()
    if feats.shape[1] != model.config.in_features:  # a model file of an earlier version of the features
        return prior, (f"{prior_label}: the reward model was fitted on {model.config.in_features} features, these "
                       f"are {feats.shape[1]}; the next retrain refits it"), {}
    extra = {"uncertainty": model.uncertainty(feats).numpy()}
    if predicts(reward_model):
        return model.predict(feats).numpy(), reward_model.version, extra
    return prior, f"{prior_label}: {reward_model.details.get('reason', 'the reward model does not predict')}", extra


class CuratedImagesConfig(dg.Config):
    k_per_category: int = 10
    min_confidence: float = Field(default=0.9, description="evaluator probability of the conditioned category")
    explore_share: float = EXPLORE_SHARE


class CuratedTextsConfig(dg.Config):
    k_per_category: int = 5
    explore_share: float = EXPLORE_SHARE
    blocklist: list[str] = Field(default=[], description="words (whole words, any case) a curated text must not contain")
    max_copy_share: float = Field(default=0.5, description="largest share of a text's 8-grams found in the training split")


IMAGE_ADVICE = ("the evaluator does not recognise the generated images as their categories: train the generator "
                "longer (gen-assets run --profile demo, or full) or add data; curated_images' min_confidence is the bound")
TEXT_ADVICE = {  # by the reason most samples were dropped for
    "copy": "the generator repeats its training texts (8-word sequences found there): add more varied texts, or "
            "raise curated_texts' max_copy_share if near-copies are acceptable",
    "blocklisted": "most samples contain a word of curated_texts' blocklist: review the blocklist",
    "": "train the generator longer (gen-assets run --profile demo, or full) or add data; curated_texts' "
        "blocklist and max_copy_share are the bounds",
}


def curate_each_model(frame: pd.DataFrame, **kwargs) -> Curation:
    """`curate` separately for each model_version of the batch: while an experiment runs, the champion's and
    the challenger's samples each get their own top k per category (each arm of /api/content serves its own)."""
    versions = list(dict.fromkeys(frame["model_version"]))
    if len(versions) <= 1:
        return curate(frame, **kwargs)
    parts = [curate(frame[frame["model_version"] == v].reset_index(drop=True), **kwargs) for v in versions]
    return Curation(pd.concat([p.curated for p in parts], ignore_index=True),
                    pd.concat([p.dropped for p in parts], ignore_index=True))


def main_reason(dropped: pd.DataFrame) -> str:
    """The kind of reason most dropped samples share ("copy", "blocklisted", ...), "" when none were dropped."""
    if dropped.empty:
        return ""
    return str(dropped["reason"].astype(str).str.split(":").str[0].value_counts().index[0])


def record(context, warehouse: DuckDBResource, *, asset: str, modality: str, batch: Batch, curated: pd.DataFrame,
           dropped: pd.DataFrame, scored_by: str, advice: str) -> dg.Output[pd.DataFrame]:
    """Replace the batch's curated rows and quarantine rows; fail (after recording why) when none was kept."""
    with warehouse.get_connection() as con:
        replace_curated(con, modality, batch.batch_id, curated)
        con.execute("DELETE FROM quarantine WHERE asset = ? AND snapshot_version = ?", [asset, batch.batch_id])
        wh.insert_quarantine(con, [
            {"asset": asset, "snapshot_version": batch.batch_id, "source": batch.path, "row_id": r.sample_id,
             "reason": r.reason} for r in dropped.itertuples()
        ])
    explore = curated["exploratory"].to_numpy(bool) if "exploratory" in curated else np.zeros(len(curated), bool)
    context.log.info(f"{asset}: kept {int((~explore).sum())} of {batch.n_samples} (and {int(explore.sum())} "
                     f"exploratory), dropped {len(dropped)} (scored by {scored_by})")
    # counted by kind: "evaluator confidence 0.279 < 0.9" and "... 0.281 < 0.9" are one kind
    reasons = {}
    if len(dropped):
        kinds = dropped["reason"].astype(str).str.split(":").str[0].str.replace(r" [-+0-9.e]+ <", " <", regex=True)
        reasons = kinds.value_counts().to_dict()
    if curated.empty:
        counts = ", ".join(f"{int(v)} {k}" for k, v in reasons.items()) or "none dropped"
        raise dg.Failure(
            f"{asset}: nothing curated: kept 0 of {batch.n_samples} samples of batch {batch.batch_id} "
            f"(dropped: {counts}; each sample's reason is in the quarantine table). The review page has "
            f"nothing to show for {modality}: {advice}",
            metadata={"candidates": batch.n_samples, "dropped": len(dropped),
                      "dropped_by_reason": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()})},
        )
    return dg.Output(
        curated,
        data_version=dg.DataVersion(f"{batch.batch_id}-{len(curated)}"),
        metadata={"curated": int((~explore).sum()), "exploratory": int(explore.sum()),
                  "candidates": batch.n_samples, "dropped": len(dropped),
                  "dropped_by_reason": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
                  "scored_by": scored_by, "batch_id": batch.batch_id,
                  "mean_reward": float(curated["reward"][~explore].mean()) if (~explore).any() else float("nan"),
                  **frame_metadata(curated)},
    )


@dg.asset(**lane("image", "curation"), kinds={"duckdb"}, code_version="2",
          automation_condition=dg.AutomationCondition.eager())
def curated_images(
    context: dg.AssetExecutionContext, config: CuratedImagesConfig, generated_images: Batch,
    image_reward_model: ModelRef, image_evaluator: ModelRef, clean_images: CleanTable, warehouse: DuckDBResource,
) -> dg.Output[pd.DataFrame]:
    """The top k images per category by predicted rating (by evaluator confidence before any rating exists)."""
    t0 = time.perf_counter()
    table = read_table(generated_images.path, columns=["sample_id", "model_version", "category", "content"])
    evaluator = load_model(image_evaluator.path, inference_device())
    channels = int(clean_images.details["channels"])
    images = images_to_tensor(np.stack([decode_image(b, channels) for b in table.column("content").to_pylist()]))
    categories = table.column("category").to_pylist()
    labels = torch.from_numpy(label_indices(categories, clean_images.categories))
    confidence = image_confidence(evaluator, images, labels).numpy()
    reward, scored_by, extra = ranking(image_reward_model, confidence, "evaluator confidence (no usable reward model)",
                                      lambda: image_features(evaluator, images, labels))
    frame = pd.DataFrame({"sample_id": table.column("sample_id").to_pylist(), "category": categories,
                          "model_version": table.column("model_version").to_pylist(),
                          "reward": reward, "confidence": confidence, **extra})
    result = curate_each_model(frame, k_per_category=config.k_per_category, min_confidence=config.min_confidence,
                    explore_per_category=explore_count(config.explore_share, config.k_per_category))
    out = record(context, warehouse, asset="curated_images", modality="image", batch=generated_images,
                 curated=result.curated, dropped=result.dropped, scored_by=scored_by, advice=IMAGE_ADVICE)
    out.metadata["seconds"] = dg.MetadataValue.float(round(time.perf_counter() - t0, 3))
    return out


@dg.asset(**lane("text", "curation"), kinds={"duckdb"}, code_version="2",
          automation_condition=dg.AutomationCondition.eager())
def curated_texts(
    context: dg.AssetExecutionContext, config: CuratedTextsConfig, generated_texts: Batch,
    text_reward_model: ModelRef, text_generator: ModelRef, clean_texts: CleanTable, warehouse: DuckDBResource,
) -> dg.Output[pd.DataFrame]:
    """The top k texts per category by predicted rating; blocklisted, broken and copied texts dropped."""
    t0 = time.perf_counter()
    table = read_table(generated_texts.path)
    texts, categories = table.column("content").to_pylist(), table.column("category").to_pylist()
    prompts = table.column("prompt").to_pylist() if "prompt" in table.schema.names else [None] * len(texts)
    with warehouse.get_connection() as con:
        train = [b.text for b in text_cleaning.load_briefs(con, split="train", table=clean_texts.table) if b.text]
    flags = text_flags(texts, blocklist=config.blocklist, train_ngrams=NgramIndex(train), max_copy_share=config.max_copy_share)
    # before any usable rating: well-formed samples first (finished, of the company's length, not repetitive)
    reward, scored_by, extra = ranking(
        text_reward_model, prior_text_score(texts, length_bounds(train)),
        "form: finished, in length, not repetitive (no usable reward model)",
        lambda: writer_features(load_writer(text_generator.path, inference_device()), list(zip(categories, prompts)),
                                texts))
    frame = pd.DataFrame({"sample_id": table.column("sample_id").to_pylist(), "category": categories,
                          "model_version": table.column("model_version").to_pylist(),
                          "reward": reward, "reason": flags, **extra})
    result = curate_each_model(frame, k_per_category=config.k_per_category,
                    explore_per_category=explore_count(config.explore_share, config.k_per_category))
    out = record(context, warehouse, asset="curated_texts", modality="text", batch=generated_texts,
                 curated=result.curated, dropped=result.dropped, scored_by=scored_by,
                 advice=TEXT_ADVICE.get(main_reason(result.dropped), TEXT_ADVICE[""]))
    out.metadata["seconds"] = dg.MetadataValue.float(round(time.perf_counter() - t0, 3))
    return out
