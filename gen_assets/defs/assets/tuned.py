"""Learning from feedback: reward models fitted to people's ratings, and generators tuned towards them.

As in trained.py, each asset's code_version is the fingerprint of the pure modules that define its
result, and a tuning run's key includes it.
"""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd
import torch
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.defs.handles import (TRAINING_OP_TAGS, TRAINING_POOL, CleanTable, ModelRef, inference_device, lane,
                                     numeric_metadata, stable_key, uri_metadata)
from gen_assets.defs.assets.events import EventsRef
from gen_assets.defs.assets.human_feedback import FeedbackRef
from gen_assets.defs.assets.trained import IMAGE_GENERATOR_CODE, TEXT_GENERATOR_CODE, label_indices, load_image_split
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.rules.curation import NgramIndex, curate, image_confidence, text_flags
from gen_assets.feedback.events import click_labels, reward_rows
from gen_assets.feedback.ingest import ratings_for
from gen_assets.training.sampling import generate_per_class
from gen_assets.media.png import decode_image
from gen_assets.models.checkpoint import load_model, save_versioned_model
from gen_assets.training.image_data import images_to_tensor
from gen_assets.training.finetune import (finetune_image_generator, finetune_pretrained_text_generator,
                                         finetune_text_generator, preference_weights)
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.training.preference import METHODS as PREFERENCE_METHODS, finetune_text_preferences
from gen_assets.training.reward_tuning import reward_tune_image_generator
from gen_assets.models.reward import (fit_reward, image_feature_groups, image_features, text_feature_groups,
                                     writer_features)
from gen_assets.models.text_generators import load_writer, module_of
from gen_assets.defs.resources import ArtifactStore, TrainerResource
from gen_assets.store import registry
from gen_assets.store.samples import rated_samples


# The pure modules whose code defines each asset's result (see trained.py). A reward model is its fit
# and the features it reads: the evaluator's (and decoded pixels) for images, the text generator's hidden
# states for texts. A tuned generator is its base's code plus the fine-tuning, the candidates' sampling and
# curation, and the reward model that scores them.
IMAGE_REWARD_CODE = ("gen_assets.models.reward", "gen_assets.models.evaluator", "gen_assets.media.png",
                     "gen_assets.training.image_data", "gen_assets.models.checkpoint")
TEXT_REWARD_CODE = ("gen_assets.models.reward", "gen_assets.models.text_generators", "gen_assets.models.checkpoint")
TUNED_IMAGE_GENERATOR_CODE = ("gen_assets.training.finetune", "gen_assets.training.reward_tuning",
                              "gen_assets.training.sampling",
                              "gen_assets.rules.curation", *IMAGE_REWARD_CODE, *IMAGE_GENERATOR_CODE)
TUNED_TEXT_GENERATOR_CODE = ("gen_assets.training.finetune", "gen_assets.training.preference",
                             "gen_assets.rules.curation", *TEXT_REWARD_CODE,
                             *TEXT_GENERATOR_CODE)


class RewardModelConfig(dg.Config):
    min_ratings: int = Field(default=20, description="fewer rated samples than this: no reward model yet")
    min_rank_correlation: float = Field(
        default=0.1, description="the bar: the model is used only when the low end of the uncertainty band of its "
        "cross-validated rank correlation with people's ratings reaches this; below it the previous ranking stays")
    confidence: float = Field(default=0.9, description="the width of that band (a two-sided confidence level)")
    folds: int = Field(default=5, description="cross-validation folds")
    min_impressions: int = Field(
        default=20, description="clicks: a sample served fewer times than this gives no training row; served this "
        "many times with even serving probabilities, its row counts like one rating")
    seed: int = 0


def predicts(reward: ModelRef) -> bool:
    """Whether curation, tuning and the guard may use this reward model: fitted, and it predicts people's
    ratings (RewardReport.predicts). A model that does not is kept for inspection, never used."""
    return bool(reward.details.get("fitted") and reward.details.get("predicts"))


def no_reward_model(modality: str, reason: str) -> dg.Output[ModelRef]:
    ref = ModelRef(modality, "reward", "none", "", "", {"fitted": False, "predicts": False, "reason": reason})
    return dg.Output(ref, data_version=dg.DataVersion("none"),
                     metadata={"fitted": False, "predicts": False, "reason": reason})


def training_rows(con, modality: str, config: RewardModelConfig) -> pd.DataFrame:
    """A reward model's training rows (samples of `generated`): people's ratings (weight 1) and the click labels
    of the samples served at least min_impressions times (gen_assets.feedback.events.click_labels)."""
    clicks = click_labels(con, modality, min_impressions=config.min_impressions)
    return rated_samples(con, reward_rows(ratings_for(con, modality), clicks))


def row_weights(rows: pd.DataFrame):
    """The rows' weights for fit_reward; None when every row is a rating (the fit exactly as without events)."""
    if "source" not in rows or (rows["source"] == "ratings").all():
        return None
    return rows["weight"].to_numpy(dtype=float)


def rows_by_source(rows: pd.DataFrame) -> dict[str, int]:
    sources = rows["source"] if "source" in rows else pd.Series(["ratings"] * len(rows))
    return {"rows_from_ratings": int((sources == "ratings").sum()),
            "rows_from_clicks": int((sources == "clicks").sum())}


def too_few_rows(modality: str, rows: pd.DataFrame, min_ratings: int) -> str:
    counts = rows_by_source(rows)
    what = "images" if modality == "image" else "texts"
    detail = f" ({counts['rows_from_ratings']} from ratings, {counts['rows_from_clicks']} from clicks)" \
        if counts["rows_from_clicks"] else ""
    return f"{len(rows)} rated {what}{detail}, fewer than min_ratings={min_ratings}"


def fit_and_save_reward(context, config: RewardModelConfig, artifacts: ArtifactStore, modality: str, features,
                        ratings, feature_model: str, groups: list[int], weights=None,
                        sources: dict[str, int] | None = None) -> dg.Output[ModelRef]:
    model, report = fit_reward(features, torch.tensor(ratings), seed=config.seed, folds=config.folds,
                               min_rank_correlation=config.min_rank_correlation, confidence=config.confidence,
                               groups=groups, weights=weights)
    sources = sources or {"rows_from_ratings": report.n, "rows_from_clicks": 0}
    context.log.info(f"{modality} reward model on {report.n} rows ({sources['rows_from_ratings']} from ratings, "
                     f"{sources['rows_from_clicks']} from clicks): {report.verdict}")
    version, final, sha = save_versioned_model(artifacts.paths.models / modality, "reward", "reward", model,
                                               extra={"feature_model": feature_model, "report": report.to_dict()})
    details = {"fitted": True, "predicts": report.predicts, "feature_model": feature_model, "verdict": report.verdict,
               "ratings": report.n, "ratings_needed": report.ratings_needed,
               "cv_spearman": report.cv_spearman, "cv_spearman_low": report.cv_spearman_low,
               "min_rank_correlation": report.min_rank_correlation}
    if not report.predicts:
        details["reason"] = f"the reward model {report.verdict}"
    ref = ModelRef(modality, "reward", version, str(final), sha, details)
    numbers = {k: v for k, v in report.to_dict().items() if k not in ("predicts", "verdict")}
    return dg.Output(
        ref,
        data_version=dg.DataVersion(sha[:16]),
        metadata={"fitted": True, "predicts": report.predicts, "verdict": report.verdict, "model_version": version,
                  "feature_model": feature_model, "path": dg.MetadataValue.path(str(final)), **uri_metadata(final),
                  **sources, **numeric_metadata(numbers)},
    )


@dg.asset(**lane("image", "feedback"), kinds={"pytorch"}, code_version=code_fingerprint(*IMAGE_REWARD_CODE))
def image_reward_model(
    context: dg.AssetExecutionContext, config: RewardModelConfig, feedback: FeedbackRef, events: EventsRef,
    image_evaluator: ModelRef, clean_images: CleanTable, warehouse: DuckDBResource, artifacts: ArtifactStore,
) -> dg.Output[ModelRef]:
    """Predicts a rating from the evaluator's features and pixel statistics (overall and per category); used only when it predicts
    (cross-validated rank correlation with people's ratings, with its uncertainty band, at the bar). Trained on
    people's ratings and, weighted, on the click labels of images served often enough."""
    with warehouse.get_connection() as con:
        rated = training_rows(con, "image", config)
    if len(rated) < config.min_ratings:
        return no_reward_model("image", too_few_rows("image", rated, config.min_ratings))
    evaluator = load_model(image_evaluator.path, inference_device())
    images = images_to_tensor(np.stack([decode_image(b, evaluator.config.channels) for b in rated["content"]]))
    labels = torch.from_numpy(label_indices(list(rated["category"]), clean_images.categories))
    return fit_and_save_reward(context, config, artifacts, "image", image_features(evaluator, images, labels),
                               rated["rating"].to_numpy(), image_evaluator.version,
                               groups=image_feature_groups(evaluator), weights=row_weights(rated),
                               sources=rows_by_source(rated))


@dg.asset(**lane("text", "feedback"), kinds={"pytorch"}, code_version=code_fingerprint(*TEXT_REWARD_CODE))
def text_reward_model(
    context: dg.AssetExecutionContext, config: RewardModelConfig, feedback: FeedbackRef, events: EventsRef,
    text_generator: ModelRef, warehouse: DuckDBResource, artifacts: ArtifactStore,
) -> dg.Output[ModelRef]:
    """Predicts a rating from the text generator's hidden states (each text read after its brief) and simple
    text features; used only when it predicts (as image_reward_model). Trained on people's ratings and,
    weighted, on the click labels of texts served often enough."""
    with warehouse.get_connection() as con:
        rated = training_rows(con, "text", config)
    if len(rated) < config.min_ratings:
        return no_reward_model("text", too_few_rows("text", rated, config.min_ratings))
    writer = load_writer(text_generator.path, inference_device())
    feats = writer_features(writer, briefs_of(rated), list(rated["text"]))
    return fit_and_save_reward(context, config, artifacts, "text", feats, rated["rating"].to_numpy(),
                               text_generator.version,
                               groups=text_feature_groups(feats.shape[1]),
                               weights=row_weights(rated), sources=rows_by_source(rated))


def briefs_of(frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(category, prompt) of each row of a frame of samples (a missing prompt: None)."""
    prompts = frame["prompt"] if "prompt" in frame else [None] * len(frame)
    return [(str(c), p if isinstance(p, str) else None) for c, p in zip(frame["category"], prompts)]


class TunedGeneratorConfig(dg.Config):
    candidates_per_category: int = Field(default=200, description="images and the from-scratch GPT: samples "
                                         "generated and scored per category")
    candidates_per_brief: int = Field(default=4, description="pretrained text generators: samples written and "
                                      "scored per brief of the train split")
    top_fraction: float = Field(default=0.1, description="share of the best-scored candidates that are targets")
    steps: int | None = Field(default=None, description="fine-tuning batches (None: at most 100 anchored image steps, 300 "
                              "weighted image or GPT steps; 24 for a pretrained text generator, whose LoRA steps are "
                              "slower and need fewer)")
    batch_size: int | None = Field(default=None, description="None: 64 images, 12 GPT windows, 8 pretrained-text "
                                   "examples (4 DPO pairs)")
    mix: float = Field(default=0.5, description="share of real training data in every batch")
    min_confidence: float = Field(default=0.9, description="images: evaluator confidence a target needs")
    blocklist: list[str] = Field(default=[], description="texts: words a target must not contain")
    real_passages: int = Field(default=1500, description="texts: real passages scored to weight the real data")
    image_method: str = Field(default="anchored", description="images: 'anchored' (up the reward model's gradient, "
                              "each sample anchored to the champion's for the same noise, the step count chosen so "
                              "FID on the val split stays within max_fid_increase) or 'weighted' (the training data "
                              "resampled towards the best-scored candidates)")
    max_fid_increase: float = Field(default=0.25, description="images, anchored: the most FID may rise over the "
                                    "starting model's while tuning (keep it below image_champion's tolerance)")
    anchor: float = Field(default=1.0, description="images, anchored: the weight of the distance to the champion's "
                          "samples (higher: closer to the champion, less reward)")
    eval_every: int = Field(default=2, description="images, anchored: steps between two FID measurements; the last "
                            "measured step within max_fid_increase is kept")
    method: str = Field(default="weighted", description="texts: 'weighted' (supervised fine-tuning on the best-scored "
                        "candidates, drawn by reward, mixed with real copy), 'dpo' (pairs of candidates for one brief, "
                        "the better-scored one preferred) or 'kto' (candidates liked or disliked on their own)")
    beta: float = Field(default=0.1, description="dpo / kto: the pull towards the starting model (higher: closer)")
    seed: int = 0


def no_targets(keep, frame, modality: str, what: str, advice: str) -> None:
    """Fail with the reason when no fresh candidate can be a fine-tuning target."""
    if not keep.any():
        raise dg.Failure(f"tuned_{modality}_generator: none of the {len(frame)} fresh candidates is one {what}, "
                         f"so there is nothing to tune towards: {advice}")


def register_tuned(context, warehouse, artifacts, *, modality, base: ModelRef, reward: ModelRef, feedback: FeedbackRef,
                   model, key: str, code: str) -> dg.Output[ModelRef]:
    version, final, sha = save_versioned_model(artifacts.paths.models / modality, base.arch, base.arch, model.cpu(),
                                               extra=getattr(model, "extra", None))
    # the registry row names the code too: lineage then tells which code a model came from
    inputs = {"base_model": base.version, "reward_model": reward.version, "feedback": feedback.version, "code": code}
    details = {**base.details, "tuned_from": base.version}
    with warehouse.get_connection() as con:
        registry.register_model(con, model_version=version, modality=modality, arch=base.arch,
                                config=dataclasses.asdict(model.config), input_versions=inputs,
                                checkpoint_path=str(final), checkpoint_sha=sha, details=details)
    context.log.info(f"tuned {base.version} on feedback {feedback.version}: {version} (a candidate until promoted)")
    ref = ModelRef(modality, base.arch, version, str(final), sha, details)
    return dg.Output(ref, data_version=dg.DataVersion(sha[:16]),
                     metadata={"model_version": version, "tuned": True, **inputs, "path": dg.MetadataValue.path(str(final)),
                               **uri_metadata(final)})


def untuned(base: ModelRef, reward: ModelRef, reason: str | None = None) -> dg.Output[ModelRef]:
    reason = reason or reward.details.get("reason", "no reward model")
    return dg.Output(base, data_version=dg.DataVersion(base.sha256[:16]),
                     metadata={"model_version": base.version, "tuned": False, "reason": f"the base model is used: {reason}",
                               **uri_metadata(base.path)})


@dg.asset(**lane("image", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*TUNED_IMAGE_GENERATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def tuned_image_generator(
    context: dg.AssetExecutionContext, config: TunedGeneratorConfig, image_generator: ModelRef,
    image_reward_model: ModelRef, image_evaluator: ModelRef, feedback: FeedbackRef, clean_images: CleanTable,
    warehouse: DuckDBResource, artifacts: ArtifactStore, trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """The image generator tuned towards what people rate highly, its quality kept.

    anchored (the default): up the reward model's gradient, each sample held near the champion's for the
    same noise and category, for as many steps as keep FID on the val split within max_fid_increase
    (training/reward_tuning.py). weighted: trained further on fresh candidates the reward model scores best
    (and the evaluator recognises) mixed with the real training images weighted by the same reward model.
    Without a reward model that predicts: the base model.
    """
    if not predicts(image_reward_model):
        return untuned(image_generator, image_reward_model)
    device = inference_device()
    base, reward = load_model(image_generator.path, device), load_model(image_reward_model.path)
    evaluator = load_model(image_evaluator.path, device)
    key = stable_key(image_generator.version, image_reward_model.version, config.model_dump(),
                     code_fingerprint(*TUNED_IMAGE_GENERATOR_CODE))
    run_dir = artifacts.paths.training / "tuned_image_generator" / key
    if config.image_method not in ("anchored", "weighted"):
        raise dg.Failure(f"tuned_image_generator: image_method {config.image_method!r} is not one of anchored, weighted")
    if config.image_method == "anchored":
        with warehouse.get_connection() as con:
            val_x, _ = load_image_split(con, clean_images, "val")
        tuned, report = reward_tune_image_generator(
            base.cpu(), reward, evaluator.cpu(), reference_x=images_to_tensor(val_x), steps=config.steps or 100,
            eval_every=config.eval_every,
            batch_size=config.batch_size or 64, anchor=config.anchor, max_fid_increase=config.max_fid_increase,
            seed=config.seed, run_dir=run_dir, log=context.log.info, **trainer.fit_kwargs())
        context.log.info(f"anchored reward tuning: {report['reason']}")
        if report["steps_kept"] == 0:
            return untuned(image_generator, image_reward_model,
                           f"no tuning step kept FID within +{config.max_fid_increase:.0%}: {report['reason']}")
        return register_tuned(context, warehouse, artifacts, modality="image", base=image_generator,
                              reward=image_reward_model, feedback=feedback, model=tuned, key=key,
                              code=code_fingerprint(*TUNED_IMAGE_GENERATOR_CODE))
    with warehouse.get_connection() as con:
        train_x, train_y = load_image_split(con, clean_images, "train")
    real_x = images_to_tensor(train_x)
    cand_x, cand_y = generate_per_class(base, num_classes=len(clean_images.categories),
                                        per_class=config.candidates_per_category, seed=config.seed)
    frame = pd.DataFrame({"sample_id": np.arange(len(cand_x)), "category": cand_y.numpy(),
                          "reward": reward.predict(image_features(evaluator, cand_x, cand_y)).numpy(),
                          "confidence": image_confidence(evaluator, cand_x, cand_y).numpy()})
    keep = ~frame["sample_id"].isin(curate(frame, k_per_category=1, min_confidence=config.min_confidence).dropped["sample_id"])
    keep_t = torch.from_numpy(keep.to_numpy().copy())
    no_targets(keep.to_numpy(), frame, "image", f"the evaluator is at least {config.min_confidence:.0%} sure of",
               "lower min_confidence in the tuned_image_generator config, or train the evaluator longer")
    weights = preference_weights(frame["reward"].to_numpy()[keep.to_numpy()], top_fraction=config.top_fraction)
    real_w = preference_weights(reward.predict(image_features(evaluator, real_x, torch.from_numpy(train_y))))
    tuned = finetune_image_generator(
        base.cpu(), real_x, torch.from_numpy(train_y), cand_x[keep_t], cand_y[keep_t], weights,
        steps=config.steps or 300, batch_size=config.batch_size or 64, mix=config.mix, real_weights=real_w,
        seed=config.seed, run_dir=run_dir, log=context.log.info, **trainer.fit_kwargs(),
    )
    return register_tuned(context, warehouse, artifacts, modality="image", base=image_generator,
                          reward=image_reward_model, feedback=feedback, model=tuned, key=key,
                          code=code_fingerprint(*TUNED_IMAGE_GENERATOR_CODE))


@dg.asset(**lane("text", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*TUNED_TEXT_GENERATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def tuned_text_generator(
    context: dg.AssetExecutionContext, config: TunedGeneratorConfig, text_generator: ModelRef,
    text_reward_model: ModelRef, feedback: FeedbackRef, clean_texts: CleanTable,
    warehouse: DuckDBResource, artifacts: ArtifactStore, trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """The text generator fine-tuned towards what people rate highly, mixed with the company's own texts.

    Targets: fresh candidates the reward model scores best (no blocklisted words, no copies of the
    training split), plus the real texts weighted by the same reward model. A pretrained generator trains
    its LoRA adapters further on (brief -> text) examples; the from-scratch GPT its weights on
    category-conditioned documents. Without a reward model: the base model.
    """
    if not predicts(text_reward_model):
        return untuned(text_generator, text_reward_model)
    writer = load_writer(text_generator.path, inference_device())
    reward = load_model(text_reward_model.path)
    with warehouse.get_connection() as con:
        train = text_cleaning.load_briefs(con, split="train", table=clean_texts.table)
    real = [(b.category, b.prompt, b.text) for b in train if b.text]
    index = NgramIndex([t for _, _, t in real])
    if text_generator.arch == "hf":
        briefs = text_cleaning.distinct_briefs(train) or [(c, None) for c in clean_texts.categories]
        wanted = [b for b in briefs for _ in range(config.candidates_per_brief)]
        max_new = 48
    else:
        wanted = [(c, None) for c in clean_texts.categories for _ in range(config.candidates_per_category)]
        max_new = 300
    texts = writer.write(wanted, max_new_tokens=max_new, temperature=0.8, top_p=0.95, seed=config.seed)
    context.log.info(f"wrote {len(texts)} candidates for {len(set(wanted))} briefs")
    frame = pd.DataFrame({"sample_id": np.arange(len(texts)), "category": [c for c, _ in wanted],
                          "reward": reward.predict(writer_features(writer, wanted, texts)).numpy(),
                          "reason": text_flags(texts, blocklist=config.blocklist, train_ngrams=index)})
    keep = ~frame["sample_id"].isin(curate(frame, k_per_category=1).dropped["sample_id"]).to_numpy()
    no_targets(keep, frame, "text", "pass the blocklist and copy checks on",
               "check the blocklist, or generate more candidates")
    weights = preference_weights(frame["reward"].to_numpy()[keep], top_fraction=config.top_fraction)
    rated = [(c, p, t) for (c, p), t, k in zip(wanted, texts, keep) if k]
    key = stable_key(text_generator.version, text_reward_model.version, config.model_dump(),
                     code_fingerprint(*TUNED_TEXT_GENERATOR_CODE))
    run_dir = artifacts.paths.training / "tuned_text_generator" / key
    module = module_of(writer).cpu()
    if config.method not in ("weighted", *PREFERENCE_METHODS):
        raise dg.Failure(f"tuned_text_generator: method {config.method!r} is not one of weighted, dpo, kto")
    if config.method in PREFERENCE_METHODS:
        # the reward model's scores of the fresh candidates, in units of their spread: DPO prefers the better of
        # two candidates for one brief when they differ by at least one spread; KTO likes the top quarter and
        # dislikes the bottom quarter
        score = frame["reward"].to_numpy()[keep]
        z = (score - score.mean()) / max(float(score.std()), 1e-8)
        tuned = finetune_text_preferences(
            module, rated, z, method=config.method, beta=config.beta, min_gap=1.0, liked=0.674, disliked=-0.674,
            # a DPO pair is two texts: 4 pairs cost what 8 examples do
            steps=config.steps or 24, batch_size=config.batch_size or (4 if config.method == "dpo" else 8),
            tokenizer=None if text_generator.arch == "hf" else writer.tokenizer, seed=config.seed, run_dir=run_dir,
            log=context.log.info, **trainer.fit_kwargs())
        if text_generator.arch != "hf":
            tuned.extra = module.extra
    elif text_generator.arch == "hf":
        real_w = preference_weights(reward.predict(writer_features(writer, [(c, p) for c, p, _ in real],
                                                                   [t for _, _, t in real])))
        tuned = finetune_pretrained_text_generator(
            module, real, rated, weights, steps=config.steps or 24, batch_size=config.batch_size or 8, mix=config.mix,
            real_weights=real_w, seed=config.seed, run_dir=run_dir, log=context.log.info, **trainer.fit_kwargs())
    else:
        # real passages: windows of the training documents, as long as a generated sample
        rng = np.random.default_rng(config.seed)
        real_docs = []
        for i in rng.choice(len(real), size=min(config.real_passages, len(real) * 4)):
            category, _, text = real[i]
            start = int(rng.integers(0, max(1, len(text) - 600)))
            real_docs.append((category, text[start : start + 600]))
        real_w = preference_weights(reward.predict(writer_features(writer, [(c, None) for c, _ in real_docs],
                                                                   [t for _, t in real_docs])))
        tuned = finetune_text_generator(
            module, writer.tokenizer, real_docs, [(c, t) for c, _, t in rated], weights, steps=config.steps or 300,
            batch_size=config.batch_size or 12, mix=config.mix, real_weights=real_w, seed=config.seed,
            run_dir=run_dir, log=context.log.info, **trainer.fit_kwargs())
        tuned.extra = module.extra
    return register_tuned(context, warehouse, artifacts, modality="text", base=text_generator,
                          reward=text_reward_model, feedback=feedback, model=tuned, key=key,
                          code=code_fingerprint(*TUNED_TEXT_GENERATOR_CODE))
