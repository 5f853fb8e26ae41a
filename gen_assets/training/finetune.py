"""Fine-tuning a generator on feedback: move what it generates towards what people rate highly.

Curation alone can only pick from what the generator already makes; to move the distribution itself,
the generator is trained a little further on a reweighted data set:
- the rated (or reward-model scored) samples, drawn in proportion to their weight
  (`preference_weights` turns ratings or rewards into weights), and
- the original training data, a `mix` share of every batch, so the model keeps what it learned and its
  quality does not collapse onto a handful of favourites. The real data may be reweighted too
  (`real_weights`, e.g. reward-model scores of the real samples): that moves the model towards the
  taste with nothing but real data, which is the surest way to stay valid.

Reward weighting is done by sampling, not by weighting the loss: each model keeps its own training
step (the DCGAN's hinge losses, mode seeking and weight average; the VAE's ELBO; the GPT's LM loss
with its schedule and clipping), and sampling in proportion to w gives the same expected gradient as
a loss weighted by w. For the DCGAN this means the discriminator's "real" set is the reweighted mix,
and the generator learns to match it: the adversarial game itself carries the preference. For the VAE
it is a weighted ELBO, for the GPT a weighted LM loss on rated texts plus real text.

Every function starts from a copy of the given model (the original is left untouched) and trains it
through gen_assets.training.fit.fit, the one way this project trains a LightningModule, for one
"epoch" of `steps` batches drawn from a seeded weighted sampler. The training knobs (learning rate,
schedule) are set for the fine-tuning run and the copy gets the original config back afterwards.

Pure torch + Lightning: no dagster import.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from gen_assets.training.image_data import images_to_tensor, seeded_generator
from gen_assets.training.text_data import RandomStarts, TokenWindows, encode_documents
from gen_assets.training.fit import fit


def preference_weights(
    scores: Any, *, temperature: float = 1.0, top_fraction: float | None = None
) -> torch.Tensor:
    """Sampling weights (summing to 1) from ratings or rewards: higher score, more weight.

    w ∝ exp(z / temperature), z the normal score of the sample's rank (the value a standard normal
    sample of that rank would have; equal scores share their average rank). Only the order of the
    scores counts, so one wild reward-model prediction cannot take all the weight, and the weights mean
    the same whatever the rating scale. Temperature 1: a sample one standard deviation up the ranking
    gets e≈2.7 times the weight of the median one, the best of a thousand about 20 times; lower is
    greedier. With `top_fraction`, only the best that share of the samples (at least one) get any weight.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if len(s) == 0:
        raise ValueError("no scores to weight")
    if not torch.isfinite(s).all():
        bad = (~torch.isfinite(s)).nonzero().flatten().tolist()
        raise ValueError(f"scores hold NaN or inf at {bad[:10]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    values, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
    rank = (first + (counts - 1) / 2.0)[inverse]  # average rank for ties
    z = torch.special.ndtri((rank + 0.5) / len(s))
    logits = z / temperature
    if top_fraction is not None:
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        k = max(1, int(round(top_fraction * len(s))))
        cutoff = torch.topk(s, k).values.min()
        logits = torch.where(s >= cutoff, logits, torch.full_like(logits, -torch.inf))
    return torch.softmax(logits, dim=0).float()


def _weights(name: str, weights: Any, n: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if len(w) != n:
        raise ValueError(f"{name}: {len(w)} weights for {n} samples")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    if n and float(w.sum()) <= 0:
        raise ValueError(f"{name} sum to 0: nothing to sample")
    return w


def _mixed(weights: Any, n_rated: int, real_weights: Any, n_real: int, mix: float) -> torch.Tensor:
    """Per-item probabilities over the real items then the rated ones, from the caller's weights (checked;
    real_weights None: uniform): `mix` of the mass on the real items."""
    rated_w = _weights("weights", weights, n_rated)
    real_w = _weights("real_weights", torch.ones(n_real) if real_weights is None else real_weights, n_real)
    return _mixture(real_w, rated_w, mix)


def _mixture(real_w: torch.Tensor, rated_w: torch.Tensor, mix: float) -> torch.Tensor:
    """Per-item probabilities: `mix` of the mass on the real items, the rest on the rated ones."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    if len(real_w) == 0 and mix > 0:
        raise ValueError(f"mix={mix} asks for real data but none was given")
    if len(rated_w) == 0 and mix < 1:
        raise ValueError(f"mix={mix} asks for rated data but none was given")
    parts = []
    if len(real_w):
        parts.append(mix * real_w / real_w.sum())
    if len(rated_w):
        parts.append((1.0 - mix) * rated_w / rated_w.sum())
    return torch.cat(parts)


def _clone(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh instance with the same config and weights (no evaluator, no optimizer state)."""
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    if hasattr(model, "extra"):
        clone.extra = dict(model.extra)
    return clone


@contextmanager
def _run_dir(run_dir: str | Path | None) -> Iterator[Path]:
    if run_dir is not None:
        yield Path(run_dir)
        return
    with tempfile.TemporaryDirectory(prefix="finetune-") as d:
        yield Path(d)


def _fit_copy(
    model: torch.nn.Module,
    loader: DataLoader,
    overrides: dict[str, Any],
    *,
    seed: int,
    run_dir: str | Path | None,
    log: Callable[[str], None] | None,
    fit_kwargs: dict[str, Any],
) -> torch.nn.Module:
    clone = _clone(model)
    fit_retargeted(clone, clone, loader, overrides, seed=seed, run_dir=run_dir, log=log, fit_kwargs=fit_kwargs)
    return clone.cpu().eval()


def fit_retargeted(module: torch.nn.Module, model: torch.nn.Module, loader: DataLoader, overrides: dict[str, Any], *,
                   seed: int, run_dir: str | Path | None, log: Callable[[str], None] | None,
                   fit_kwargs: dict[str, Any]) -> None:
    """One epoch of `loader` through fit() for `module` (the model itself, or a LightningModule around it),
    with `model`'s config overridden for the run (learning rate, schedule) and given back afterwards: the
    model file describes the model, not the fine-tuning run."""
    original = model.config
    model.config = dataclasses.replace(original, **overrides)
    try:
        with _run_dir(run_dir) as directory:
            fit(module, loader, None, run_dir=directory, max_epochs=1, seed=seed, log=log, **fit_kwargs)
    finally:
        model.config = original


def schedule_overrides(config: Any, lr: float | None, steps: int) -> dict[str, Any]:
    """A warmup + cosine schedule (models.gpt.warmup_cosine_lr's fields) re-targeted to a fine-tuning run of
    `steps` batches from `lr` (None: half the model's learning rate) down to lr / 10."""
    lr = config.learning_rate / 2 if lr is None else lr
    return {"learning_rate": lr, "min_lr": lr / 10, "warmup_iters": min(config.warmup_iters, max(1, steps // 10)),
            "lr_decay_iters": steps}


def _image_tensor(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return images_to_tensor(x)  # the warehouse's uint8 N x H x W x C
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = getattr(x, "shape", type(x))
        raise ValueError(f"{name}: expected float images N x C x H x W in [0, 1] (or uint8 N x H x W x C), got {got}")
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x.detach().float().cpu()


def _labels(name: str, y: Any, n: int, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().cpu()
    if y.shape != (n,):
        raise ValueError(f"{name}: expected {n} category indices, got shape {tuple(y.shape)}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        got = f"[{int(y.min())}, {int(y.max())}]"
        raise ValueError(f"{name}: category indices must lie in [0, {num_classes}), got {got}")
    return y


def finetune_image_generator(
    model: torch.nn.Module,
    real_x: Any,
    real_y: Any,
    rated_x: Any,
    rated_y: Any,
    weights: Any,
    *,
    steps: int = 300,
    mix: float = 0.5,
    batch_size: int = 64,
    lr: float | None = None,
    real_weights: Any = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> torch.nn.Module:
    """A fine-tuned copy of an image generator (DCGAN or VAE) that leans towards the weighted samples.

    real_x / real_y: the training images (float N x C x H x W in [0, 1], or the warehouse's uint8
    N x H x W x C) and their category indices; rated_x / rated_y: the rated or reward-scored samples and
    the categories they were generated for; weights: one per rated sample (e.g. `preference_weights`).
    Each batch draws `mix` of its images from the real set (uniformly, or by `real_weights`) and the
    rest from the rated set by weight. `steps` batches; `lr` defaults to half the model's own (a
    fine-tuning step should not undo the base training). `run_dir` keeps the Lightning checkpoint
    (None: a temporary directory); as with every fit here, a run_dir that already holds a finished
    run's last.ckpt gives that run back instead of training again, so key it by the inputs.
    `fit_kwargs` go to gen_assets.training.fit.fit (accelerator, precision, ...).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    c = model.config
    real_x, rated_x = _image_tensor("real_x", real_x), _image_tensor("rated_x", rated_x)
    shape = (c.channels, c.image_size, c.image_size)
    for name, x in (("real_x", real_x), ("rated_x", rated_x)):
        if len(x) and tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name}: images are {tuple(x.shape[1:])} (C, H, W) but the model makes {shape}")
    real_y = _labels("real_y", real_y, len(real_x), c.num_classes)
    rated_y = _labels("rated_y", rated_y, len(rated_x), c.num_classes)
    p = _mixed(weights, len(rated_x), real_weights, len(real_x), mix)

    data = TensorDataset(torch.cat([real_x, rated_x]), torch.cat([real_y, rated_y]))
    sampler = WeightedRandomSampler(p, num_samples=steps * batch_size, replacement=True,
                                    generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True)
    lr = c.lr / 2 if lr is None else lr
    return _fit_copy(model, loader, {"lr": lr}, seed=seed, run_dir=run_dir, log=log, fit_kwargs=fit_kwargs)


class _WeightedStarts(RandomStarts):
    """`batches` batches of `batch_size` window starts per epoch: a document by its probability, then a
    token of it uniformly (the same as a start drawn by per-token probability, without one entry per
    token). Seeded by (seed, epoch), as the text loaders' RandomStarts."""

    def __init__(
        self, lengths: Sequence[int], doc_p: torch.Tensor, n_starts: int, batch_size: int, batches: int, seed: int
    ):
        super().__init__(n_starts, batch_size, batches, seed)
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.doc_p = doc_p.float()

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = seeded_generator(self.seed, self.epoch)
        n = self.batches * self.batch_size
        docs = torch.multinomial(self.doc_p, n, replacement=True, generator=g)
        within = (torch.rand(n, generator=g, dtype=torch.float64) * self.lengths[docs]).long()
        # a window must fit in the stream: starts in the last block_size tokens move to the last valid one
        starts = (self.offsets[docs] + within).clamp_max(self.n_starts - 1)
        yield from starts.view(self.batches, self.batch_size)


def _documents(tokenizer: Any, docs: Sequence[tuple[str | None, str]], name: str) -> list[torch.Tensor]:
    out = []
    for i, doc in enumerate(docs):
        if not (isinstance(doc, tuple | list) and len(doc) == 2):
            raise ValueError(f"{name}[{i}]: expected a (category, text) pair, got {type(doc).__name__}")
        category, text = doc
        try:
            out.append(encode_documents(tokenizer, [text], None if category is None else [category]))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name}[{i}]: {e}") from None
    return out


def finetune_text_generator(
    gpt: torch.nn.Module,
    tokenizer: Any,
    real_docs: Sequence[tuple[str | None, str]],
    rated_docs: Sequence[tuple[str | None, str]],
    weights: Any,
    *,
    steps: int = 200,
    mix: float = 0.5,
    batch_size: int = 12,
    lr: float = 3e-4,
    real_weights: Any = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> torch.nn.Module:
    """A fine-tuned copy of a GPT that leans towards the weighted texts, mixed with real text.

    Documents are (category, text) pairs (category None: unconditional), encoded as in training:
    `[category_id] + tokens + [eos]`. Each training window starts at a random token: `mix` of them in
    the real documents (each document by `real_weights`, uniform by default, then uniformly within it),
    the rest in the rated documents, each document chosen in proportion to its weight. A rated text is
    short, so its windows also take in its category token and eos: the model learns how a preferred
    document starts and ends, not only its middle. AdamW from `lr`, a short warmup, cosine decay to
    lr / 10 over `steps` batches of `batch_size` windows (the GPT's own schedule, re-targeted).
    `run_dir`, `seed` and `fit_kwargs` as for finetune_image_generator.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    block = int(gpt.config.block_size)
    real = _documents(tokenizer, real_docs, "real_docs")
    rated = _documents(tokenizer, rated_docs, "rated_docs")
    doc_p = _mixed(weights, len(rated), real_weights, len(real), mix)
    docs = real + rated
    stream = torch.cat(docs) if docs else torch.zeros(0, dtype=torch.long)
    if len(stream) <= block:
        raise ValueError(
            f"{len(stream)} tokens in all documents: windows of block_size={block} need at least {block + 1}"
        )
    sampler = _WeightedStarts([len(d) for d in docs], doc_p, len(stream) - block, batch_size, steps, seed)
    loader = DataLoader(TokenWindows(stream, block), sampler=sampler, batch_size=None)
    overrides = {
        "learning_rate": lr,
        "min_lr": lr / 10,
        "warmup_iters": min(gpt.config.warmup_iters, max(1, steps // 10)),
        "lr_decay_iters": steps,
    }
    return _fit_copy(gpt, loader, overrides, seed=seed, run_dir=run_dir, log=log, fit_kwargs=fit_kwargs)


def finetune_pretrained_text_generator(
    model: torch.nn.Module,
    real: Sequence[tuple[str | None, str | None, str]],
    rated: Sequence[tuple[str | None, str | None, str]],
    weights: Any,
    *,
    steps: int = 24,
    mix: float = 0.5,
    batch_size: int = 8,
    lr: float | None = None,
    real_weights: Any = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> torch.nn.Module:
    """A fine-tuned copy of a pretrained text generator (models.hf.HFCausalLM) that leans towards the
    weighted texts: supervised fine-tuning on (category, prompt, text) examples, its LoRA adapters (or
    all weights) trained further.

    `real`: the company's own copy (the train split's briefs with their reference texts), weighted by
    `real_weights` (uniform by default); `rated`: the candidates written for briefs, weighted by
    `weights`. Each batch draws its examples, with replacement, `mix` of the probability mass on the real
    ones. `lr` defaults to half the model's own. `run_dir`, `seed` and `fit_kwargs` as for
    finetune_image_generator.
    """
    from gen_assets.training.sft import sft_loaders

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    p = _mixed(weights, len(rated), real_weights, len(real), mix)
    loader, _ = sft_loaders(model, [*real, *rated], batch_size=batch_size, batches_per_epoch=steps, seed=seed,
                            weights=p)
    return _fit_copy(model, loader, schedule_overrides(model.config, lr, steps), seed=seed, run_dir=run_dir, log=log,
                     fit_kwargs=fit_kwargs)
