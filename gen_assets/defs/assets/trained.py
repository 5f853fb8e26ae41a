"""Training: the image evaluator and generator, the text tokenizer and generator (Lightning, through training.fit).

Each asset's code_version is the fingerprint of the pure modules that define its result (see
training/fingerprint.py), and a training run's key includes it: new code is a new model.
"""

import dataclasses
import hashlib
import json
from typing import Any, Literal

import dagster as dg
from pydantic import Field
import numpy as np
import torch
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import (TRAINING_OP_TAGS, TRAINING_POOL, CleanTable, ModelRef, lane, md_png, numeric_metadata,
                                     stable_key, uri_metadata)
from gen_assets.cleaning import images as image_cleaning
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.models.checkpoint import file_sha256, load_model, model_class, save_versioned_model
from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.training.text_data import encode_documents, text_loaders
from gen_assets.models.tokenizers import load_tokenizer, train_tokenizer
from gen_assets.training.fit import FitResult, fit
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.media.plots import curves_png
from gen_assets.defs.resources import ArtifactStore, TrainerResource
from gen_assets.store import locations, registry
from gen_assets.store.files import atomic_write_bytes, location


# The pure modules whose code defines each asset's result; code_fingerprint adds what they import. The
# architectures are named because models.checkpoint imports them by name (model_class), which a static
# reading of the imports cannot see.
IMAGE_EVALUATOR_CODE = ("gen_assets.models.evaluator", "gen_assets.training.fit", "gen_assets.training.image_data",
                        "gen_assets.models.checkpoint")
IMAGE_GENERATOR_CODE = ("gen_assets.models.dcgan", "gen_assets.models.vae", *IMAGE_EVALUATOR_CODE)
TEXT_TOKENIZER_CODE = ("gen_assets.models.tokenizers",)
TEXT_GENERATOR_CODE = ("gen_assets.models.gpt", "gen_assets.training.fit", "gen_assets.training.text_data",
                       "gen_assets.models.tokenizers", "gen_assets.models.checkpoint")


def config_for(arch: str, base: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The model's dataclass config from data-derived fields plus the asset config's non-None overrides."""
    cls = model_class(arch).config_class
    names = {f.name for f in dataclasses.fields(cls)}
    values = {**base, **{k: v for k, v in overrides.items() if v is not None and k in names}}
    return cls(**{k: v for k, v in values.items() if k in names})


def train_and_save(
    context: dg.AssetExecutionContext,
    *,
    name: str,
    modality: str,
    arch: str,
    module: torch.nn.Module,
    loaders: tuple[Any, Any],
    fit_args: dict[str, Any],
    key_parts: dict[str, Any],
    code_version: str,
    artifacts: ArtifactStore,
    retrain: bool,
    extra: dict[str, Any] | None = None,
) -> tuple[ModelRef, list[dict[str, float]], dict[str, Any]]:
    """Fit (resuming a killed run), keep the best weights, save state_dict + config as the model file.

    The training run lives in artifacts/training/<name>/<key>, key = hash of config, input versions and
    code_version (the asset's code fingerprint): the same inputs, config and code resume the same run,
    and a finished run is reused instead of retrained. Changed code is a new run.
    """
    paths = artifacts.paths
    key = stable_key(arch, {**key_parts, "code": code_version})
    run_dir = paths.training / name / key
    done = run_dir / "done.json"
    if done.exists() and not retrain:
        info = json.loads(done.read_text())
        model_path = locations.resolve(info["path"], paths.artifacts)  # stored relative to the artifacts
        if location(model_path).exists() and file_sha256(model_path) == info["sha256"]:
            context.log.info(f"{name}: inputs and config unchanged since {info['version']}; reusing it")
            ref = ModelRef(modality, arch, info["version"], model_path, info["sha256"], info.get("details", {}))
            return ref, info.get("history", []), {"reused": True, **info.get("fit", {})}
    if retrain and run_dir.exists():
        for ckpt in run_dir.glob("*.ckpt"):
            ckpt.unlink()
    result: FitResult = fit(module, loaders[0], loaders[1], run_dir=run_dir, log=context.log.info, **fit_args)
    if result.best_path:
        state = torch.load(result.best_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    module = module.cpu().eval()
    version, final, sha = save_versioned_model(paths.models / modality, arch, arch, module, extra=extra)
    fit_info = {
        "epochs": result.epochs,
        "train_seconds": round(result.seconds, 2),
        "best_score": result.best_score,
        "resumed_from": result.resumed_from,
    }
    done.write_text(
        json.dumps(
            {"version": version, "path": locations.to_stored(final, paths.artifacts), "sha256": sha, "history": result.history, "fit": fit_info},
            default=str,
        )
    )
    return ModelRef(modality, arch, version, str(final), sha), result.history, {"reused": False, **fit_info}


def label_indices(labels: list[str], categories: tuple[str, ...]) -> np.ndarray:
    index = {c: i for i, c in enumerate(categories)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def load_image_split(con, clean: CleanTable, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = image_cleaning.load_images(con, split=split, channels=int(clean.details["channels"]), table=clean.table)
    return data.images, label_indices(data.labels, clean.categories)


def image_training_inputs(warehouse: DuckDBResource, clean: CleanTable, arch: str, overrides: dict[str, Any],
                          *, batch_size: int, seed: int) -> tuple[Any, tuple[Any, Any]]:
    """The model config (sized by the clean table) and the train/val loaders of an image model.

    Seeds torch too: the initial weights, built next, are part of "same inputs, config and seed".
    """
    with warehouse.get_connection() as con:
        train_x, train_y = load_image_split(con, clean, "train")
        val_x, val_y = load_image_split(con, clean, "val")
    base = {"image_size": int(clean.details["image_size"][0]), "channels": int(clean.details["channels"]),
            "num_classes": len(clean.categories)}
    torch.manual_seed(seed)
    return config_for(arch, base, overrides), image_loaders(train_x, train_y, val_x, val_y, batch_size=batch_size, seed=seed)


def training_metadata(history: list[dict[str, float]], fit_info: dict[str, Any], ref: ModelRef, keys: list[str]) -> dict:
    meta: dict[str, Any] = {
        "model_version": ref.version,
        "arch": ref.arch,
        "path": dg.MetadataValue.path(ref.path),
        **uri_metadata(ref.path),
        "sha256": ref.sha256,
        "reused": fit_info["reused"],
        "epochs": fit_info.get("epochs", 0),
        "train_seconds": fit_info.get("train_seconds", 0.0),
    }
    if history:
        last = history[-1]
        meta.update(numeric_metadata({k: v for k, v in last.items() if k != "epoch"}))
        meta["loss_curve"] = md_png(curves_png(history, keys, f"{ref.arch} training"), "loss curve")
    return meta


class ImageEvaluatorConfig(dg.Config):
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 128
    lr: float | None = None
    num_features: int | None = None
    seed: int = 0
    retrain: bool = False
    min_accuracy_vs_chance: float = Field(
        default=1.5, description="the quality bar: the evaluator fails (and nothing after it runs) unless its "
        "accuracy on the val split reaches this multiple of chance (1 / categories), the bar capped at 90%; "
        "0: no bar. Its features define FID and it ranks curation: near chance, neither means anything",
    )


def evaluator_bar(config: ImageEvaluatorConfig, num_classes: int) -> float:
    """The val accuracy the evaluator must reach: a multiple of chance, at most 0.9."""
    return min(config.min_accuracy_vs_chance / max(num_classes, 1), 0.9)


def check_evaluator_accuracy(accuracy: float, bar: float, clean: CleanTable, val_rows: int) -> None:
    """dg.Failure, saying what to do, when the evaluator's val accuracy is below the bar."""
    if accuracy >= bar:
        return
    k = len(clean.categories)
    raise dg.Failure(
        f"image_evaluator: accuracy {accuracy:.0%} on the val split ({val_rows} images) of {k} categories is "
        f"near chance ({1 / k:.0%}; the bar is {bar:.0%}): its features define FID and rank curation, so nothing "
        f"downstream would mean anything and no model is promoted. Add data (about {clean.rows // max(k, 1)} "
        "images per category now) or use a longer profile (gen-assets run --profile demo, or full); "
        "image_evaluator's min_accuracy_vs_chance sets the bar",
        metadata={"val_accuracy": round(accuracy, 4), "bar": round(bar, 4), "categories": k, "val_rows": val_rows},
    )


@dg.asset(**lane("image", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*IMAGE_EVALUATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def image_evaluator(
    context: dg.AssetExecutionContext,
    config: ImageEvaluatorConfig,
    clean_images: CleanTable,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
    trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """A small classifier of the clean images: its features define FID/KID, its logits IS and accuracy."""
    cfg, loaders = image_training_inputs(warehouse, clean_images, "evaluator",
                                         {"lr": config.lr, "num_features": config.num_features},
                                         batch_size=config.batch_size, seed=config.seed)
    module = model_class("evaluator")(cfg)
    ref, history, fit_info = train_and_save(
        context,
        name="image_evaluator",
        modality="image",
        arch="evaluator",
        module=module,
        loaders=loaders,
        fit_args={
            "max_epochs": config.max_epochs,
            "monitor": "val_loss",
            "patience": config.patience,
            "seed": config.seed,
            **trainer.fit_kwargs(),
        },
        key_parts={"config": dataclasses.asdict(cfg), "asset_config": config.model_dump(exclude={"retrain"}),
                   "clean_images": clean_images.version},
        code_version=code_fingerprint(*IMAGE_EVALUATOR_CODE),
        artifacts=artifacts,
        retrain=config.retrain,
    )
    with warehouse.get_connection() as con:
        val_x, val_y = load_image_split(con, clean_images, "val")
    predicted = load_model(ref.path).predict(images_to_tensor(val_x)).numpy()
    accuracy = float((predicted == val_y).mean()) if len(val_y) else 0.0
    bar = evaluator_bar(config, len(clean_images.categories))
    context.log.info(f"image_evaluator: accuracy {accuracy:.1%} on the val split ({len(val_y)} images), bar {bar:.1%}")
    check_evaluator_accuracy(accuracy, bar, clean_images, len(val_y))
    meta = training_metadata(history, fit_info, ref, ["train_loss", "val_loss", "val_acc"])
    meta.update({"val_accuracy": dg.MetadataValue.float(round(accuracy, 4)),
                 "accuracy_bar": dg.MetadataValue.float(round(bar, 4))})
    return dg.Output(ref, data_version=dg.DataVersion(ref.sha256[:16]), metadata=meta)


class ImageGeneratorConfig(dg.Config):
    arch: Literal["dcgan", "vae"] = "dcgan"
    max_epochs: int = 90
    patience: int = 30
    batch_size: int = 64
    lr: float | None = Field(default=None, description="None: the architecture's default")
    latent_dim: int | None = None
    width: int | None = Field(default=None, description="generator channels at full resolution")
    d_width: int | None = Field(default=None, description="discriminator channels (dcgan)")
    compile: bool = Field(default=False, description="torch.compile the DCGAN's generator and discriminator "
                          "for training (worth it on a GPU)")
    seed: int = 0
    retrain: bool = False


@dg.asset(**lane("image", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*IMAGE_GENERATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def image_generator(
    context: dg.AssetExecutionContext,
    config: ImageGeneratorConfig,
    clean_images: CleanTable,
    image_evaluator: ModelRef,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
    trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """A class-conditional generator (DCGAN or VAE), early-stopped on FID of its samples on the val split."""
    evaluator = load_model(image_evaluator.path)
    cfg, loaders = image_training_inputs(
        warehouse, clean_images, config.arch,
        {"lr": config.lr, "latent_dim": config.latent_dim, "width": config.width, "d_width": config.d_width,
         "compile": config.compile},
        batch_size=config.batch_size, seed=config.seed,
    )
    module = model_class(config.arch)(cfg, evaluator=evaluator)
    ref, history, fit_info = train_and_save(
        context,
        name="image_generator",
        modality="image",
        arch=config.arch,
        module=module,
        loaders=loaders,
        fit_args={
            "max_epochs": config.max_epochs,
            "monitor": "val_fid",
            "patience": config.patience,
            "seed": config.seed,
            "log_every_epochs": max(1, config.max_epochs // 20),
            **trainer.fit_kwargs(),
        },
        key_parts={"config": dataclasses.asdict(cfg), "asset_config": config.model_dump(exclude={"retrain"}),
                   "clean_images": clean_images.version, "image_evaluator": image_evaluator.version},
        code_version=code_fingerprint(*IMAGE_GENERATOR_CODE),
        artifacts=artifacts,
        retrain=config.retrain,
    )
    ref = dataclasses.replace(ref, details={"categories": list(clean_images.categories)})
    with warehouse.get_connection() as con:
        registry.register_model(
            con,
            model_version=ref.version,
            modality="image",
            arch=ref.arch,
            config=dataclasses.asdict(cfg),
            input_versions={"clean_images": clean_images.version, "image_evaluator": image_evaluator.version,
                            "raw_images": clean_images.details["snapshot_version"],
                            "raw_source": clean_images.details.get("source", ""),
                            "code": code_fingerprint(*IMAGE_GENERATOR_CODE)},
            checkpoint_path=ref.path,
            checkpoint_sha=ref.sha256,
            details=ref.details,
        )
    loss_keys = ["g_loss", "d_loss"] if config.arch == "dcgan" else ["train_loss", "val_loss"]
    meta = training_metadata(history, fit_info, ref, loss_keys)
    if history and any("val_fid" in row for row in history):
        meta["val_fid_curve"] = md_png(curves_png(history, ["val_fid"], "FID on the val split"), "val FID")
    return dg.Output(ref, data_version=dg.DataVersion(ref.sha256[:16]), metadata=meta)


class TextTokenizerConfig(dg.Config):
    kind: Literal["char", "bpe"] = Field(
        default="char", description="char: one token per character; bpe: byte-level BPE trained on the corpus"
    )
    vocab_size: int | None = Field(default=None, description="BPE vocabulary size (ignored for char)")


@dg.asset(**lane("text", "training"), kinds={"json"}, code_version=code_fingerprint(*TEXT_TOKENIZER_CODE))
def text_tokenizer(
    context: dg.AssetExecutionContext, config: TextTokenizerConfig, clean_texts: CleanTable, warehouse: DuckDBResource,
    artifacts: ArtifactStore,
) -> dg.Output[ModelRef]:
    """The tokenizer, trained on the train split, with one control token per category."""
    with warehouse.get_connection() as con:
        docs = text_cleaning.load_texts(con, split="train", table=clean_texts.table)
    tokenizer = train_tokenizer(config.kind, [t for _, t in docs], list(clean_texts.categories), config.vocab_size)
    blob = json.dumps(tokenizer.to_dict(), sort_keys=True).encode()
    sha = hashlib.sha256(blob).hexdigest()
    version = f"{config.kind}-{sha[:12]}"
    path = artifacts.paths.models / "text" / f"tokenizer-{version}.json"
    atomic_write_bytes(path, blob)
    context.log.info(f"tokenizer {version}: vocabulary of {tokenizer.vocab_size}")
    return dg.Output(
        ModelRef("text", config.kind, version, str(path), sha),
        data_version=dg.DataVersion(sha[:16]),
        metadata={"version": version, "vocab_size": tokenizer.vocab_size, "categories": len(clean_texts.categories),
                  "path": dg.MetadataValue.path(str(path)), **uri_metadata(path)},
    )


class TextGeneratorConfig(dg.Config):
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    batch_size: int = 12
    max_iters: int = 2000
    iters_per_epoch: int = Field(default=250, description="iterations between validations (one Lightning epoch)")
    val_batches: int = 20
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    patience: int = 3
    compile: bool = Field(default=False, description="torch.compile the training forward (worth it on a GPU)")
    seed: int = 0
    retrain: bool = False


@dg.asset(**lane("text", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*TEXT_GENERATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def text_generator(
    context: dg.AssetExecutionContext,
    config: TextGeneratorConfig,
    clean_texts: CleanTable,
    text_tokenizer: ModelRef,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
    trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """A GPT (nanoGPT's design) conditioned on the category by a control token, early-stopped on val_loss."""
    tokenizer = load_tokenizer(text_tokenizer.path)
    with warehouse.get_connection() as con:
        train_docs = text_cleaning.load_texts(con, split="train", table=clean_texts.table)
        val_docs = text_cleaning.load_texts(con, split="val", table=clean_texts.table)
    train_ids = encode_documents(tokenizer, [t for _, t in train_docs], [c for c, _ in train_docs])
    val_ids = encode_documents(tokenizer, [t for _, t in val_docs], [c for c, _ in val_docs])
    cfg = config_for(
        "gpt",
        {"vocab_size": tokenizer.vocab_size, "lr_decay_iters": config.max_iters},
        {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "learning_rate",
                                          "min_lr", "warmup_iters", "compile")},
    )
    torch.manual_seed(config.seed)
    module = model_class("gpt")(cfg)
    loaders = text_loaders(train_ids, val_ids, block_size=cfg.block_size, batch_size=config.batch_size, seed=config.seed,
                           iters_per_epoch=config.iters_per_epoch, val_batches=config.val_batches)
    context.log.info(f"training on {len(train_ids):,} tokens, validating on {len(val_ids):,}")
    ref, history, fit_info = train_and_save(
        context,
        name="text_generator",
        modality="text",
        arch="gpt",
        module=module,
        loaders=loaders,
        fit_args={
            "max_epochs": max(1, -(-config.max_iters // config.iters_per_epoch)),
            "max_steps": config.max_iters,
            "monitor": "val_loss",
            "patience": config.patience,
            "seed": config.seed,
            **trainer.fit_kwargs(),
        },
        key_parts={"config": dataclasses.asdict(cfg), "asset_config": config.model_dump(exclude={"retrain"}),
                   "clean_texts": clean_texts.version, "text_tokenizer": text_tokenizer.version},
        code_version=code_fingerprint(*TEXT_GENERATOR_CODE),
        artifacts=artifacts,
        retrain=config.retrain,
        extra={"tokenizer": tokenizer.to_dict()},
    )
    ref = dataclasses.replace(ref, details={"categories": list(clean_texts.categories)})
    with warehouse.get_connection() as con:
        registry.register_model(
            con,
            model_version=ref.version,
            modality="text",
            arch=ref.arch,
            config=dataclasses.asdict(cfg),
            input_versions={"clean_texts": clean_texts.version, "text_tokenizer": text_tokenizer.version,
                            "raw_texts": clean_texts.details["snapshot_version"],
                            "raw_source": clean_texts.details.get("source", ""),
                            "code": code_fingerprint(*TEXT_GENERATOR_CODE)},
            checkpoint_path=ref.path,
            checkpoint_sha=ref.sha256,
            details=ref.details,
        )
    meta = training_metadata(history, fit_info, ref, ["train_loss", "val_loss"])
    meta["parameters"] = sum(p.numel() for p in module.parameters())
    meta["train_tokens"] = len(train_ids)
    return dg.Output(ref, data_version=dg.DataVersion(ref.sha256[:16]), metadata=meta)
