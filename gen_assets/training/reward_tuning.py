"""Reward tuning: move an image generator up the reward model's gradient, anchored to the champion.

`finetune.finetune_image_generator` moves a generator towards a taste by resampling its training data;
for a taste far from the data that can cost a lot of quality (FID), and the promotion gate refuses the
result. Here the reward model is differentiable (a linear read-out over standardised features of the
image), so the generator is trained on it directly, with two terms that keep what it already does well:

    loss = -mean(standardised reward(x))
           + anchor * (|f(x) - f(x0)|² / total variance of f on the reference images
                       + |x - x0|² / total pixel variance of the reference images)
           + class_weight * cross-entropy(evaluator(x), y)

x = the tuned generator's image for noise z and category y, x0 = the frozen champion's image for the
SAME (z, y), f = the evaluator's penultimate features. The anchor is a distance per sample, not between
distributions: each image may move only as far as its reward gain pays for, so the samples keep their
variety (no collapse onto the one image the reward model likes best). Its two parts are in units of the
data's own spread, so `anchor` = 1 weighs "one rating standard deviation up" against "a typical fraction
of the distance between two real images away". The cross-entropy keeps the sample showing the category
it was asked for. A frozen copy of the champion's generator sits beside the tuned one: the image
generators here are small, so this costs little memory.

Which weights move: the network `generate` samples from, so that `model.generate` afterwards shows the
tuned result and the anchor compares like with like (the champion's samples are that network's too):
- DCGAN: `g_ema`, the weight average. The raw `generator` then gets the same weights, so that later
  adversarial training continues from the tuned weights (its average restarts next to them) instead of
  pulling the average back to the untuned ones within a few steps. The discriminator is untouched.
- VAE: the `decoder`. The encoder is untouched (it serves the ELBO, not generation).
Batch-norm layers stay in eval mode throughout: the tuned network computes exactly what `generate`
computes, and its running statistics do not drift.

The step size is chosen by the gate's own measure: every `eval_every` steps the FID against the reference
images (the val split; `eval_per_class` samples of every category with the fixed `eval_seed`, exactly as
rules/promotion.image_key_metric measures a candidate) and the mean predicted reward of those samples are
recorded. The LAST evaluated weights whose FID stays within (1 + max_fid_increase) times the starting
model's are returned; training stops once FID has been above that limit `patience` times in a row.

Training goes through gen_assets.training.fit.fit (Lightning: checkpoints in run_dir after every
evaluation, resume, the device choice). Pure torch + Lightning: no dagster import.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from gen_assets.metrics.images import frechet_distance
from gen_assets.models.reward import IMAGE_STAT_NAMES, category_statistics, image_features, pixel_statistics
from gen_assets.training.finetune import _clone, _image_tensor, _run_dir
from gen_assets.training.fit import fit
from gen_assets.training.sampling import generate_per_class

__all__ = ["differentiable_image_features", "reward_tune_image_generator"]


def differentiable_image_features(evaluator: nn.Module, images: torch.Tensor,
                                  labels: torch.Tensor | None = None) -> torch.Tensor:
    """reward.image_features with the graph kept: (N, C, H, W) in [0, 1] -> (N, num_features + 7
    [+ num_classes * 7 with labels]), so a loss on the reward model's prediction reaches the images. The
    evaluator is used in the mode it is in (put it in eval mode: dropout off, batch-norm statistics fixed);
    the features stay on its device."""
    return _features(evaluator, evaluator.features(images), images, labels)


def _features(evaluator: nn.Module, learned: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None):
    stats = pixel_statistics(images)
    if labels is None:
        return torch.cat([learned, stats], dim=1)
    return torch.cat([learned, stats, category_statistics(stats, labels, int(evaluator.config.num_classes))], dim=1)


def _sampler_net(model: nn.Module) -> nn.Module:
    """The network `generate` samples from: the DCGAN's weight average, the VAE's decoder."""
    if hasattr(model, "g_ema") and hasattr(model, "generator"):
        return model.g_ema
    if hasattr(model, "decoder") and hasattr(model, "encoder"):
        return model.decoder
    raise ValueError(f"reward tuning needs a DCGAN or a VAE image generator, got {type(model).__name__}")


def _images(net: nn.Module, z: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    out = net(z, y)
    return torch.sigmoid(out.float()) if logits else out.float()


class _RewardTuning(L.LightningModule):
    """The training run: the generator copy being tuned, a frozen copy of its sampling network as it
    was (the champion), and frozen copies of the evaluator and the reward model. One batch of `batch_size`
    fresh (z, y) per step; the loader only counts steps."""

    def __init__(self, model: nn.Module, evaluator: nn.Module, reward: nn.Module, *, batch_size: int, lr: float,
                 anchor: float, class_weight: float, feature_var: float, pixel_var: float):
        super().__init__()
        self.model = model
        self.is_vae = _sampler_net(model) is getattr(model, "decoder", None)
        self.net.requires_grad_(True)  # the DCGAN's g_ema is built frozen (it is normally set, not trained)
        self.champion = copy.deepcopy(self.net).requires_grad_(False)
        self.evaluator = evaluator.requires_grad_(False)
        self.reward = reward.requires_grad_(False)
        # a reward model fitted with the per-category statistics (reward.image_feature_groups) reads them here too
        self.by_category = reward.config.in_features > int(evaluator.config.num_features) + len(IMAGE_STAT_NAMES)
        self.batch_size, self.lr = batch_size, lr
        self.anchor, self.class_weight = anchor, class_weight
        self.register_buffer("feature_var", torch.tensor(float(feature_var)))
        self.register_buffer("pixel_var", torch.tensor(float(pixel_var)))

    @property
    def net(self) -> nn.Module:
        return _sampler_net(self.model)

    def train(self, mode: bool = True) -> "_RewardTuning":
        # Lightning sets train mode every epoch; every network here keeps eval-mode batch norm and no dropout
        super().train(mode)
        for m in (self.model, self.champion, self.evaluator, self.reward):
            m.eval()
        return self

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        c = self.model.config
        y = torch.randint(0, c.num_classes, (self.batch_size,), device=self.device)
        z = torch.randn(self.batch_size, c.latent_dim, device=self.device)
        x = _images(self.net, z, y, self.is_vae)
        with torch.no_grad():
            x0 = _images(self.champion, z, y, self.is_vae)
            f0 = self.evaluator.features(x0).float()
        f = self.evaluator.features(x).float()
        r = self.reward(_features(self.evaluator, f, x, y if self.by_category else None))
        reward = ((r - self.reward.rating_mean) / self.reward.rating_std).mean()
        moved = ((f - f0).square().sum(1).mean() / self.feature_var
                 + (x - x0).square().flatten(1).sum(1).mean() / self.pixel_var)
        class_loss = F.cross_entropy(self.evaluator.classifier(f), y)
        loss = -reward + self.anchor * moved + self.class_weight * class_loss
        for name, value in (("reward_std_units", reward), ("anchor_distance", moved), ("class_loss", class_loss)):
            self.log(name, value.detach(), on_step=False, on_epoch=True)
        return loss


class _Gate(Callback):
    """Measures FID and mean reward at the start and after every epoch (`eval_every` steps); keeps the
    last weights within the FID limit; stops after `patience` evaluations in a row above it. Its state
    (history, the kept weights) goes into every checkpoint, so a resumed run keeps its choice."""

    def __init__(self, reference: torch.Tensor, *, per_class: int, seed: int, max_fid_increase: float,
                 patience: int, log: Callable[[str], None] | None):
        self.reference = reference
        self.per_class, self.seed = per_class, seed
        self.max_fid_increase, self.patience = max_fid_increase, patience
        self.emit = log
        self.history: list[tuple[int, float, float]] = []
        self.kept_step = 0
        self.kept_state: dict[str, torch.Tensor] | None = None
        self.misses = 0
        self.stopped = False
        self._reference_feats: torch.Tensor | None = None

    @property
    def limit(self) -> float:
        return (1.0 + self.max_fid_increase) * self.history[0][1]

    @torch.no_grad()
    def measure(self, module: _RewardTuning) -> tuple[float, float]:
        """(FID against the reference, mean predicted reward) of the generator's fixed-seed samples: the
        promotion gate's measurement (rules/promotion.image_key_metric), plus the reward of the same samples."""
        evaluator, device = module.evaluator, module.device
        if self._reference_feats is None or self._reference_feats.device != device:
            self._reference_feats = evaluator.features(self.reference.to(device, torch.float32))
        fake, labels = generate_per_class(module.model, num_classes=module.model.config.num_classes,
                                          per_class=self.per_class, seed=self.seed)
        fid = frechet_distance(self._reference_feats, evaluator.features(fake.to(device, torch.float32)))
        reward = float(module.reward.predict(image_features(evaluator, fake, labels if module.by_category
                                                            else None)).mean())
        return fid, reward

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history:
            fid, reward = self.measure(pl_module)
            self.history.append((0, fid, reward))
            if self.emit:
                self.emit(f"reward tuning: start FID {fid:.4g} (limit {self.limit:.4g}), reward {reward:.4g}")
        if self.stopped:  # a resumed run that had already stopped early
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = int(trainer.global_step)
        if self.history[-1][0] == step:
            return
        fid, reward = self.measure(pl_module)
        self.history.append((step, fid, reward))
        inside = fid <= self.limit
        if inside:
            self.kept_step, self.misses = step, 0
            self.kept_state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}
        else:
            self.misses += 1
            if self.misses >= self.patience:
                self.stopped = True
                trainer.should_stop = True
        if self.emit:
            verdict = "kept" if inside else ("stopping" if self.stopped else "above the limit")
            self.emit(f"reward tuning: step {step} FID {fid:.4g} (limit {self.limit:.4g}), reward {reward:.4g}: "
                      f"{verdict}")

    def __getstate__(self) -> dict[str, Any]:
        # sent to the processes of ddp_spawn: the run logger (Dagster's) stays in the calling process
        return {**self.__dict__, "emit": None}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history], "kept_step": self.kept_step,
                "kept_state": self.kept_state, "misses": self.misses, "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.history = [(int(s), float(f), float(r)) for s, f, r in state_dict["history"]]
        self.kept_step, self.kept_state = int(state_dict["kept_step"]), state_dict["kept_state"]
        self.misses, self.stopped = int(state_dict["misses"]), bool(state_dict["stopped"])


def _check(model: nn.Module, reward: nn.Module, evaluator: nn.Module, reference_x: Any) -> torch.Tensor:
    _sampler_net(model)
    c, e = model.config, evaluator.config
    shape = (c.channels, c.image_size, c.image_size)
    if (e.channels, e.image_size, e.image_size) != shape:
        raise ValueError(f"the evaluator reads {(e.channels, e.image_size, e.image_size)} (C, H, W) images but the "
                         f"model makes {shape}")
    if e.num_classes != c.num_classes:
        raise ValueError(f"the model has {c.num_classes} categories, the evaluator {e.num_classes}")
    width = int(e.num_features) + len(IMAGE_STAT_NAMES)
    if reward.config.in_features not in (width, width + int(e.num_classes) * len(IMAGE_STAT_NAMES)):
        raise ValueError(f"the reward model reads {reward.config.in_features} features, but image features of this "
                         f"evaluator are {width} wide ({e.num_features} learned + {len(IMAGE_STAT_NAMES)} pixel "
                         f"statistics), or {width + int(e.num_classes) * len(IMAGE_STAT_NAMES)} with the per-category "
                         f"statistics: was it fitted on another evaluator's features?")
    reference = _image_tensor("reference_x", reference_x)
    if tuple(reference.shape[1:]) != shape:
        raise ValueError(f"reference_x: images are {tuple(reference.shape[1:])} (C, H, W) but the model makes {shape}")
    if len(reference) < 2:
        raise ValueError(f"reference_x: FID needs at least 2 reference images, got {len(reference)}")
    return reference


def reward_tune_image_generator(
    model: nn.Module,
    reward: nn.Module,
    evaluator: nn.Module,
    *,
    reference_x: Any,
    steps: int = 200,
    batch_size: int = 64,
    lr: float | None = None,
    anchor: float = 1.0,
    class_weight: float = 1.0,
    max_fid_increase: float = 0.3,
    eval_every: int = 25,
    eval_per_class: int = 100,
    eval_seed: int = 0,
    patience: int = 2,
    seed: int = 0,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """(tuned copy, report) of an image generator (DCGAN or VAE) trained up the reward model's gradient,
    anchored to its own samples (see the module doc for the loss and which weights move).

    reward: a RewardModel fitted on `image_features(evaluator, ...)`; evaluator: the image evaluator
    those features and the FID come from; reference_x: the images FID is measured against (the val
    split; float N x C x H x W in [0, 1] or the warehouse's uint8 N x H x W x C). `steps` Adam steps of
    `batch_size` fresh samples at `lr` (default: the model's own lr / 10); `anchor` and `class_weight`
    weigh the two terms that keep quality. Every `eval_every` steps (and at the start) the FID of
    `eval_per_class` samples per category drawn with `eval_seed` (the promotion gate's defaults: 100
    and 0) and their mean predicted reward are measured; the last weights with FID <= (1 +
    max_fid_increase) * the starting FID are returned, and training stops after `patience` evaluations
    in a row above that. If none stays inside, the copy comes back unchanged.

    report: steps_kept (0: unchanged), fid_before / fid_after and reward_before / reward_after (mean
    predicted rating of the evaluation samples) of the returned model, fid_limit, stopped_early,
    history: [(step, fid, reward), ...] (step 0: the starting model) and reason (a sentence).
    `run_dir`, `seed`, `log` and `fit_kwargs` as for finetune.finetune_image_generator (a run_dir holding a
    finished or stopped run gives it back).
    The given model, reward model and evaluator are left untouched; the copy comes back on the CPU in
    eval mode with the original's config. Deterministic for a seed on a given device.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                        ("eval_per_class", eval_per_class), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("anchor", anchor), ("class_weight", class_weight), ("max_fid_increase", max_fid_increase)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr}")
    if eval_per_class * model.config.num_classes < 2:
        raise ValueError(f"FID needs at least 2 samples: eval_per_class={eval_per_class} with "
                         f"{model.config.num_classes} categories")
    reference = _check(model, reward, evaluator, reference_x)

    frozen_evaluator = _clone(evaluator).eval()
    with torch.no_grad():
        ref_feats = frozen_evaluator.features(reference)
    feature_var = float(ref_feats.double().var(0).sum().clamp_min(1e-12))
    pixel_var = float(reference.double().flatten(1).var(0).sum().clamp_min(1e-12))
    run = _RewardTuning(
        _clone(model), frozen_evaluator, _clone(reward).eval(), batch_size=batch_size,
        lr=model.config.lr / 10 if lr is None else lr, anchor=anchor, class_weight=class_weight,
        feature_var=feature_var, pixel_var=pixel_var,
    )
    gate = _Gate(reference, per_class=eval_per_class, seed=eval_seed, max_fid_increase=max_fid_increase,
                 patience=patience, log=log)
    # one "epoch" is eval_every steps: the gate measures and fit() checkpoints after each
    loader = DataLoader(TensorDataset(torch.arange(eval_every)), batch_size=1)
    with _run_dir(run_dir) as directory, warnings.catch_warnings():
        # the networks stay in eval mode on purpose (see _RewardTuning.train)
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        result = fit(run, loader, None, run_dir=directory, max_epochs=math.ceil(steps / eval_every), max_steps=steps,
                     seed=seed, log=log, extra_callbacks=[gate], **fit_kwargs)
        if not gate.history and Path(result.last_path).exists():
            # trained in spawned processes (ddp_spawn): the gate's state is in the last checkpoint
            state = torch.load(result.last_path, map_location="cpu", weights_only=False)
            gate.load_state_dict(state["callbacks"].get(gate.state_key, {}))

    tuned = _clone(model)
    if gate.kept_state is not None:
        _sampler_net(tuned).load_state_dict(gate.kept_state)
        if _sampler_net(tuned) is getattr(tuned, "g_ema", None):
            tuned.generator.load_state_dict(tuned.g_ema.state_dict())
    by_step = {s: (f, r) for s, f, r in gate.history}
    (_, fid_before, reward_before), (fid_after, reward_after) = gate.history[0], by_step[gate.kept_step]
    report = {
        "steps_kept": gate.kept_step,
        "fid_before": fid_before,
        "fid_after": fid_after,
        "reward_before": reward_before,
        "reward_after": reward_after,
        "fid_limit": gate.limit,
        "stopped_early": gate.stopped and gate.history[-1][0] < steps,  # the rule fired before the last step
        "history": list(gate.history),
        "reason": (f"step {gate.kept_step}: the last evaluated step with FID within {gate.limit:.4g}" if gate.kept_step
                   else f"no evaluated step kept FID within {gate.limit:.4g}: the model is returned unchanged"),
    }
    if log:
        log(f"reward tuning: {report['reason']}")
    return tuned.cpu().eval(), report
