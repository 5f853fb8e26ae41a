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
from gen_assets.defs.assets.human_feedback import FeedbackRef
from gen_assets.defs.assets.trained import IMAGE_GENERATOR_CODE, TEXT_GENERATOR_CODE, load_image_split
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.rules.curation import NgramIndex, curate, image_confidence, text_flags
from gen_assets.feedback.ingest import ratings_for
from gen_assets.training.sampling import generate_per_class
from gen_assets.media.png import decode_image
from gen_assets.models.checkpoint import load_model, save_versioned_model
from gen_assets.training.image_data import images_to_tensor
from gen_assets.training.finetune import finetune_image_generator, finetune_text_generator, preference_weights
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.models.reward import fit_reward, image_features, text_features
from gen_assets.training.text_data import generate_texts
from gen_assets.models.tokenizers import tokenizer_from_dict
from gen_assets.defs.resources import ArtifactStore, TrainerResource
from gen_assets.store import registry
from gen_assets.store.samples import rated_samples


# The pure modules whose code defines each asset's result (see trained.py). A reward model is its fit
# and the features it reads: the evaluator's (and decoded pixels) for images, the GPT's hidden states for
# texts. A tuned generator is its base's code plus the fine-tuning, the candidates' sampling and
# curation, and the reward model that scores them.
IMAGE_REWARD_CODE = ("gen_assets.models.reward", "gen_assets.models.evaluator", "gen_assets.media.png",
                     "gen_assets.training.image_data", "gen_assets.models.checkpoint")
TEXT_REWARD_CODE = ("gen_assets.models.reward", "gen_assets.models.gpt", "gen_assets.models.tokenizers",
                    "gen_assets.models.checkpoint")
TUNED_IMAGE_GENERATOR_CODE = ("gen_assets.training.finetune", "gen_assets.training.sampling",
                              "gen_assets.rules.curation", *IMAGE_REWARD_CODE, *IMAGE_GENERATOR_CODE)
TUNED_TEXT_GENERATOR_CODE = ("gen_assets.training.finetune", "gen_assets.rules.curation", *TEXT_REWARD_CODE,
                             *TEXT_GENERATOR_CODE)


class RewardModelConfig(dg.Config):
    min_ratings: int = Field(default=20, description="fewer rated samples than this: no reward model yet")
    seed: int = 0


def no_reward_model(modality: str, reason: str) -> dg.Output[ModelRef]:
    ref = ModelRef(modality, "reward", "none", "", "", {"fitted": False, "reason": reason})
    return dg.Output(ref, data_version=dg.DataVersion("none"), metadata={"fitted": False, "reason": reason})


def save_reward(artifacts: ArtifactStore, modality: str, model, report, feature_model: str) -> dg.Output[ModelRef]:
    version, final, sha = save_versioned_model(artifacts.paths.models / modality, "reward", "reward", model,
                                               extra={"feature_model": feature_model, "report": report.to_dict()})
    ref = ModelRef(modality, "reward", version, str(final), sha, {"fitted": True, "feature_model": feature_model})
    return dg.Output(
        ref,
        data_version=dg.DataVersion(sha[:16]),
        metadata={"fitted": True, "model_version": version, "feature_model": feature_model,
                  "path": dg.MetadataValue.path(str(final)), **uri_metadata(final),
                  **numeric_metadata(report.to_dict())},
    )


@dg.asset(**lane("image", "feedback"), kinds={"pytorch"}, code_version=code_fingerprint(*IMAGE_REWARD_CODE))
def image_reward_model(
    context: dg.AssetExecutionContext, config: RewardModelConfig, feedback: FeedbackRef, image_evaluator: ModelRef,
    warehouse: DuckDBResource, artifacts: ArtifactStore,
) -> dg.Output[ModelRef]:
    """Predicts a rating from the evaluator's features and pixel statistics; held-out correlation reported."""
    with warehouse.get_connection() as con:
        rated = rated_samples(con, ratings_for(con, "image"))
    if len(rated) < config.min_ratings:
        return no_reward_model("image", f"{len(rated)} rated images, fewer than min_ratings={config.min_ratings}")
    evaluator = load_model(image_evaluator.path, inference_device())
    images = images_to_tensor(np.stack([decode_image(b, evaluator.config.channels) for b in rated["content"]]))
    model, report = fit_reward(image_features(evaluator, images), torch.tensor(rated["rating"].to_numpy()), seed=config.seed)
    context.log.info(f"image reward model on {len(rated)} rated images: held-out pearson {report.val_pearson:.3f}")
    return save_reward(artifacts, "image", model, report, image_evaluator.version)


@dg.asset(**lane("text", "feedback"), kinds={"pytorch"}, code_version=code_fingerprint(*TEXT_REWARD_CODE))
def text_reward_model(
    context: dg.AssetExecutionContext, config: RewardModelConfig, feedback: FeedbackRef, text_generator: ModelRef,
    warehouse: DuckDBResource, artifacts: ArtifactStore,
) -> dg.Output[ModelRef]:
    """Predicts a rating from the text model's hidden states and simple text features."""
    with warehouse.get_connection() as con:
        rated = rated_samples(con, ratings_for(con, "text"))
    if len(rated) < config.min_ratings:
        return no_reward_model("text", f"{len(rated)} rated texts, fewer than min_ratings={config.min_ratings}")
    gpt = load_model(text_generator.path, inference_device())
    tokenizer = tokenizer_from_dict(gpt.extra["tokenizer"])
    feats = text_features(list(rated["text"]), gpt, tokenizer, categories=list(rated["category"]))
    model, report = fit_reward(feats, torch.tensor(rated["rating"].to_numpy()), seed=config.seed)
    context.log.info(f"text reward model on {len(rated)} rated texts: held-out pearson {report.val_pearson:.3f}")
    return save_reward(artifacts, "text", model, report, text_generator.version)


class TunedGeneratorConfig(dg.Config):
    candidates_per_category: int = Field(default=200, description="samples generated and scored per category")
    top_fraction: float = Field(default=0.1, description="share of the best-scored candidates that are targets")
    steps: int = Field(default=300, description="fine-tuning batches")
    mix: float = Field(default=0.5, description="share of real training data in every batch")
    min_confidence: float = Field(default=0.9, description="images: evaluator confidence a target needs")
    blocklist: list[str] = Field(default=[], description="texts: words a target must not contain")
    real_passages: int = Field(default=1500, description="texts: real passages scored to weight the real data")
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


def untuned(base: ModelRef, reward: ModelRef) -> dg.Output[ModelRef]:
    reason = reward.details.get("reason", "no reward model")
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
    """The image generator fine-tuned towards what people rate highly, mixed with real data.

    Targets: fresh candidates the reward model scores best (and the evaluator recognises), plus the
    real training images weighted by the same reward model. Without a reward model: the base model.
    """
    if not image_reward_model.details.get("fitted"):
        return untuned(image_generator, image_reward_model)
    device = inference_device()
    base, reward = load_model(image_generator.path, device), load_model(image_reward_model.path)
    evaluator = load_model(image_evaluator.path, device)
    with warehouse.get_connection() as con:
        train_x, train_y = load_image_split(con, clean_images, "train")
    real_x = images_to_tensor(train_x)
    cand_x, cand_y = generate_per_class(base, num_classes=len(clean_images.categories),
                                        per_class=config.candidates_per_category, seed=config.seed)
    frame = pd.DataFrame({"sample_id": np.arange(len(cand_x)), "category": cand_y.numpy(),
                          "reward": reward.predict(image_features(evaluator, cand_x)).numpy(),
                          "confidence": image_confidence(evaluator, cand_x, cand_y).numpy()})
    keep = ~frame["sample_id"].isin(curate(frame, k_per_category=1, min_confidence=config.min_confidence).dropped["sample_id"])
    keep_t = torch.from_numpy(keep.to_numpy().copy())
    no_targets(keep.to_numpy(), frame, "image", f"the evaluator is at least {config.min_confidence:.0%} sure of",
               "lower min_confidence in the tuned_image_generator config, or train the evaluator longer")
    weights = preference_weights(frame["reward"].to_numpy()[keep.to_numpy()], top_fraction=config.top_fraction)
    real_w = preference_weights(reward.predict(image_features(evaluator, real_x)))
    key = stable_key(image_generator.version, image_reward_model.version, config.model_dump(),
                     code_fingerprint(*TUNED_IMAGE_GENERATOR_CODE))
    tuned = finetune_image_generator(
        base.cpu(), real_x, torch.from_numpy(train_y), cand_x[keep_t], cand_y[keep_t], weights, steps=config.steps,
        mix=config.mix, real_weights=real_w, seed=config.seed, run_dir=artifacts.paths.training / "tuned_image_generator" / key,
        log=context.log.info, **trainer.fit_kwargs(),
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
    """The text generator fine-tuned towards what people rate highly, mixed with real text.

    Targets: fresh candidates the reward model scores best (no blocklisted words, no copies of the
    training split), plus real passages weighted by the same reward model. Without a reward model: the
    base model.
    """
    if not text_reward_model.details.get("fitted"):
        return untuned(text_generator, text_reward_model)
    base = load_model(text_generator.path, inference_device())
    tokenizer = tokenizer_from_dict(base.extra["tokenizer"])
    reward = load_model(text_reward_model.path)
    with warehouse.get_connection() as con:
        train_docs = text_cleaning.load_texts(con, split="train", table=clean_texts.table)
    cats = [c for c in clean_texts.categories for _ in range(config.candidates_per_category)]
    texts = generate_texts(base, tokenizer, cats, max_new_tokens=300, temperature=0.8, top_k=50, top_p=0.95, seed=config.seed)
    index = NgramIndex([t for _, t in train_docs])
    frame = pd.DataFrame({"sample_id": np.arange(len(texts)), "category": cats,
                          "reward": reward.predict(text_features(texts, base, tokenizer, categories=cats)).numpy(),
                          "reason": text_flags(texts, blocklist=config.blocklist, train_ngrams=index)})
    keep = ~frame["sample_id"].isin(curate(frame, k_per_category=1).dropped["sample_id"]).to_numpy()
    no_targets(keep, frame, "text", "pass the blocklist and copy checks on",
               "check the blocklist, or generate more candidates_per_category")
    weights = preference_weights(frame["reward"].to_numpy()[keep], top_fraction=config.top_fraction)
    rng = np.random.default_rng(config.seed)
    real_docs = []
    for i in rng.choice(len(train_docs), size=min(config.real_passages, len(train_docs) * 4)):
        cat, text = train_docs[i]
        start = int(rng.integers(0, max(1, len(text) - 600)))
        real_docs.append((cat, text[start : start + 600]))
    real_w = preference_weights(reward.predict(text_features([t for _, t in real_docs], base, tokenizer,
                                                             categories=[c for c, _ in real_docs])))
    key = stable_key(text_generator.version, text_reward_model.version, config.model_dump(),
                     code_fingerprint(*TUNED_TEXT_GENERATOR_CODE))
    rated_docs = [(c, t) for c, t, k in zip(cats, texts, keep) if k]
    tuned = finetune_text_generator(
        base.cpu(), tokenizer, real_docs, rated_docs, weights, steps=config.steps, mix=config.mix, real_weights=real_w,
        seed=config.seed, run_dir=artifacts.paths.training / "tuned_text_generator" / key, log=context.log.info,
        **trainer.fit_kwargs(),
    )
    tuned.extra = base.extra
    return register_tuned(context, warehouse, artifacts, modality="text", base=text_generator,
                          reward=text_reward_model, feedback=feedback, model=tuned, key=key,
                          code=code_fingerprint(*TUNED_TEXT_GENERATOR_CODE))
