"""Training: the image evaluator and generator, the text tokenizer and generator (Lightning, through training.fit).

Each asset's code_version is the fingerprint of the pure modules that define its result (see
training/fingerprint.py), and a training run's key includes it: new code is a new model.
"""

import dataclasses
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
from gen_assets.models.tokenizers import train_tokenizer
from gen_assets.models.hf import HFCausalLM, HFConfig
from gen_assets.models.pretrained import DEFAULT_BASE_MODEL, BaseModelError, resolve_base
from gen_assets.training.sft import sft_loaders
from gen_assets.training.fit import FitResult, fit
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.media.plots import curves_png
from gen_assets.defs.resources import ArtifactStore, TrainerResource
from gen_assets.store import locations, registry
from gen_assets.store.files import location


# The pure modules whose code defines each asset's result; code_fingerprint adds what they import. The
# architectures are named because models.checkpoint imports them by name (model_class), which a static
# reading of the imports cannot see.
IMAGE_EVALUATOR_CODE = ("gen_assets.models.evaluator", "gen_assets.training.fit", "gen_assets.training.image_data",
                        "gen_assets.models.checkpoint")
IMAGE_GENERATOR_CODE = ("gen_assets.models.dcgan", "gen_assets.models.vae", *IMAGE_EVALUATOR_CODE)
TEXT_GENERATOR_CODE = ("gen_assets.models.gpt", "gen_assets.models.hf", "gen_assets.models.pretrained",
                       "gen_assets.training.fit", "gen_assets.training.text_data", "gen_assets.training.sft",
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


# Training settings whose best value depends on the architecture: None in TextGeneratorConfig means this.
TEXT_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    # LoRA on a pretrained model: a few dozen steps on the company's copy (a step is ~3-4 s on 2 CPU cores)
    "hf": {"batch_size": 8, "max_iters": 16, "iters_per_epoch": 8, "learning_rate": 5e-4, "min_lr": 5e-5,
           "warmup_iters": 3, "patience": 2},
    # nanoGPT's shakespeare_char, scaled to a CPU
    "gpt": {"batch_size": 12, "max_iters": 2000, "iters_per_epoch": 250, "learning_rate": 1e-3, "min_lr": 1e-4,
            "warmup_iters": 100, "patience": 3},
}


class TextGeneratorConfig(dg.Config):
    arch: Literal["hf", "gpt"] = Field(
        default="hf", description="hf: a pretrained causal language model (base_model) adapted to the corpus; "
        "gpt: a GPT trained from scratch on the corpus (nanoGPT's design)")
    base_model: str = Field(default=DEFAULT_BASE_MODEL, description="hf: a Hugging Face hub id, a local folder "
                            "(save_pretrained layout) or a .gguf file")
    lora: bool = Field(default=True, description="hf: LoRA adapters on the frozen base (false: full fine-tuning)")
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = Field(default="all-linear", description="hf: the layers LoRA adapts (peft's "
                                "'all-linear', or names such as 'q_proj,v_proj')")
    system_prompt: str | None = Field(default=None, description="hf: the system turn of the chat template "
                                      "(None: the template's own)")
    max_length: int = Field(default=256, description="hf: longest training example in tokens (brief + text)")
    batch_size: int | None = Field(default=None, description="None: the architecture's default")
    accumulate_grad_batches: int = Field(default=1, description="batches per optimizer step (gradient "
                                         "accumulation: a larger effective batch in the same memory)")
    max_iters: int | None = Field(default=None, description="training steps (None: the architecture's default)")
    iters_per_epoch: int | None = Field(default=None, description="steps between validations (one Lightning epoch)")
    learning_rate: float | None = None
    min_lr: float | None = None
    warmup_iters: int | None = None
    patience: int | None = Field(default=None, description="validations without improvement before stopping")
    # the from-scratch GPT (arch gpt): its tokenizer and size
    tokenizer: Literal["char", "bpe"] = Field(
        default="char", description="gpt: char (one token per character) or bpe (byte-level BPE trained on the corpus)")
    vocab_size: int | None = Field(default=None, description="gpt: BPE vocabulary size (ignored for char)")
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    val_batches: int = Field(default=20, description="gpt: random val windows per validation")
    compile: bool = Field(default=False, description="gpt: torch.compile the training forward (worth it on a GPU)")
    seed: int = 0
    retrain: bool = False

    def training(self, name: str) -> Any:
        """A training setting: the configured value, else the architecture's default."""
        value = getattr(self, name)
        return TEXT_ARCH_DEFAULTS[self.arch][name] if value is None else value


def hf_config(config: TextGeneratorConfig) -> HFConfig:
    return HFConfig(base_model=config.base_model, lora=config.lora, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout, target_modules=config.target_modules,
                    learning_rate=config.training("learning_rate"), min_lr=config.training("min_lr"),
                    warmup_iters=config.training("warmup_iters"), lr_decay_iters=config.training("max_iters"),
                    max_length=config.max_length, system_prompt=config.system_prompt)


def examples_of(briefs) -> list[tuple[str, str | None, str]]:
    """(category, prompt, text) of the rows that have a text: what supervised fine-tuning learns from."""
    return [(b.category, b.prompt, b.text) for b in briefs if b.text]


def text_fit_args(config: TextGeneratorConfig, monitor: str | None) -> dict[str, Any]:
    steps, per_epoch = config.training("max_iters"), config.training("iters_per_epoch")
    # an epoch is per_epoch optimizer steps, each of accumulate_grad_batches batches (the loaders' unit)
    return {"max_epochs": max(1, -(-steps // per_epoch)), "max_steps": steps, "monitor": monitor,
            "patience": config.training("patience") if monitor else None, "seed": config.seed,
            "accumulate_grad_batches": config.accumulate_grad_batches}


@dg.asset(**lane("text", "training"), kinds={"pytorch"},
          code_version=code_fingerprint(*TEXT_GENERATOR_CODE), pool=TRAINING_POOL,
          op_tags=TRAINING_OP_TAGS)
def text_generator(
    context: dg.AssetExecutionContext,
    config: TextGeneratorConfig,
    clean_texts: CleanTable,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
    trainer: TrainerResource,
) -> dg.Output[ModelRef]:
    """The text generator: a pretrained language model adapted to the corpus (LoRA by default), or a GPT
    trained from scratch; early-stopped on the val split's loss."""
    with warehouse.get_connection() as con:
        train = examples_of(text_cleaning.load_briefs(con, split="train", table=clean_texts.table))
        val = examples_of(text_cleaning.load_briefs(con, split="val", table=clean_texts.table))
    if not train:
        raise dg.Failure(f"text_generator: the train split of {clean_texts.table} holds no text to learn from "
                         "(only briefs without reference copy): add reference texts to some briefs")
    key_parts = {"asset_config": config.model_dump(exclude={"retrain"}), "clean_texts": clean_texts.version}
    inputs = {"clean_texts": clean_texts.version, "raw_texts": clean_texts.details["snapshot_version"],
              "raw_source": clean_texts.details.get("source", ""), "code": code_fingerprint(*TEXT_GENERATOR_CODE)}
    extra = None
    if config.arch == "hf":
        torch.manual_seed(config.seed)
        try:
            base = resolve_base(config.base_model, log=context.log.info)
            module = HFCausalLM(hf_config(config), base=base)
        except BaseModelError as e:
            raise dg.Failure(f"text_generator: {e}") from None
        context.log.info(f"base model {base.name} ({base.source}), weights {base.sha256[:12]}; "
                         f"{module.trainable_parameters:,} trainable parameters")
        cfg = module.config
        loaders = sft_loaders(module, train, val, batch_size=config.training("batch_size"),
                              batches_per_epoch=config.training("iters_per_epoch") * config.accumulate_grad_batches,
                              seed=config.seed)
        inputs.update(pretrained_base=base.name, pretrained_sha256=base.sha256, pretrained_source=base.source)
        key_parts["base_sha256"] = base.sha256
        size = {"parameters": sum(p.numel() for p in module.parameters()), "trainable_parameters": module.trainable_parameters}
        context.log.info(f"fine-tuning on {len(train)} texts, validating on {len(val)}")
    else:
        tokenizer = train_tokenizer(config.tokenizer, [t for _, _, t in train], list(clean_texts.categories),
                                    config.vocab_size)
        train_ids = encode_documents(tokenizer, [t for _, _, t in train], [c for c, _, _ in train])
        val_ids = encode_documents(tokenizer, [t for _, _, t in val], [c for c, _, _ in val]) if val else None
        cfg = config_for(
            "gpt",
            {"vocab_size": tokenizer.vocab_size, "lr_decay_iters": config.training("max_iters")},
            {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "compile")}
            | {k: config.training(k) for k in ("learning_rate", "min_lr", "warmup_iters")},
        )
        torch.manual_seed(config.seed)
        module = model_class("gpt")(cfg)
        loaders = text_loaders(train_ids, val_ids, block_size=cfg.block_size, batch_size=config.training("batch_size"),
                               seed=config.seed,
                               iters_per_epoch=config.training("iters_per_epoch") * config.accumulate_grad_batches,
                               val_batches=config.val_batches)
        extra = {"tokenizer": tokenizer.to_dict()}
        size = {"parameters": sum(p.numel() for p in module.parameters()), "vocab_size": tokenizer.vocab_size,
                "train_tokens": len(train_ids)}
        context.log.info(f"training on {len(train_ids):,} tokens, validating on {0 if val_ids is None else len(val_ids):,}")
    key_parts["config"] = dataclasses.asdict(cfg)
    ref, history, fit_info = train_and_save(
        context,
        name="text_generator",
        modality="text",
        arch=config.arch,
        module=module,
        loaders=loaders,
        fit_args={**text_fit_args(config, "val_loss" if loaders[1] is not None else None), **trainer.fit_kwargs()},
        key_parts=key_parts,
        code_version=code_fingerprint(*TEXT_GENERATOR_CODE),
        artifacts=artifacts,
        retrain=config.retrain,
        extra=extra,
    )
    details = {"categories": list(clean_texts.categories)}
    if config.arch == "hf":
        details.update(pretrained_base=base.name, pretrained_sha256=base.sha256, pretrained_source=base.source)
    ref = dataclasses.replace(ref, details=details)
    with warehouse.get_connection() as con:
        registry.register_model(con, model_version=ref.version, modality="text", arch=ref.arch,
                                config=dataclasses.asdict(cfg), input_versions=inputs, checkpoint_path=ref.path,
                                checkpoint_sha=ref.sha256, details=ref.details)
    meta = training_metadata(history, fit_info, ref, ["train_loss", "val_loss"])
    meta.update(size)
    if config.arch == "hf":
        meta.update(pretrained_base=base.name, pretrained_source=base.source,
                    pretrained_sha256=base.sha256[:16])
    return dg.Output(ref, data_version=dg.DataVersion(ref.sha256[:16]), metadata=meta)
