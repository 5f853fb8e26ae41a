"""Image metrics over torchmetrics, measured in our evaluator's feature space (or Inception's, on request).

FID of a few hundred samples carries a large small-sample bias, so a bare number means little. Every
report therefore comes with two yardsticks measured the same way, with the same number of samples
against the same reference set: `fid_real_floor` (real images: what a perfect generator would score) and `fid_noise` (uniform noise: what a useless one would score).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from gen_assets.models.evaluator import ImageEvaluator, frechet_distance

__all__ = ["METRIC_KEYS", "frechet_distance", "image_metrics", "per_class_accuracy", "balanced_subsample"]

METRIC_KEYS = (
    "fid",
    "fid_real_floor",
    "fid_noise",
    "kid",
    "kid_std",
    "inception_score",
    "inception_score_std",
    "class_accuracy",
    "diversity",
    "real_diversity",
)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torchmetrics' KID and IS shuffle with the global RNG; pin it for repeatable figures, then restore."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _quietly(metric_class: type, **kwargs):
    """Build a torchmetrics metric without its warning that features are buffered (ours are small)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return metric_class(**kwargs)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def balanced_subsample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of n samples spread as evenly as possible over the categories (round robin, seeded)."""
    if n > len(labels):
        raise ValueError(f"cannot take {n} samples from {len(labels)}")
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    queues = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        queues.append(idx[torch.randperm(len(idx), generator=g)].tolist())
    picked: list[int] = []
    rank = 0
    while len(picked) < n:
        for q in queues:
            if rank < len(q) and len(picked) < n:
                picked.append(q[rank])
        rank += 1
    return torch.tensor(sorted(picked), dtype=torch.long)


def _check_images(name: str, images: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"{name}: expected a float tensor N x C x H x W, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected float images in [0, 1], got dtype {images.dtype}")
    if len(images) and (images.min() < 0 or images.max() > 1):
        lo, hi = float(images.min()), float(images.max())
        raise ValueError(f"{name}: values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
    if like is not None and images.shape[1:] != like.shape[1:]:
        ours, theirs = tuple(images.shape[1:]), tuple(like.shape[1:])
        raise ValueError(f"{name}: images are {ours} (C, H, W), reference images are {theirs}")


@torch.no_grad()
def _predict(evaluator: ImageEvaluator, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return evaluator.predict(images, batch_size=batch_size).cpu()


def per_class_accuracy(evaluator: ImageEvaluator, generated: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """Share of samples of each category that the evaluator recognises as that category."""
    if len(generated) != len(labels):
        raise ValueError(f"{len(generated)} images but {len(labels)} labels")
    hit = _predict(evaluator, generated) == labels.cpu()
    labels = labels.cpu()
    return {int(c): float(hit[labels == c].float().mean()) for c in labels.unique()}


def _diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise pixel L2 distance within each category, averaged over categories with 2+ samples."""
    flat, labels = images.flatten(1).float().cpu(), labels.cpu()
    per_class = []
    for c in labels.unique():
        x = flat[labels == c]
        k = len(x)
        if k < 2:
            continue
        d = torch.cdist(x, x)
        per_class.append(float(d.sum() / (k * (k - 1))))  # diagonal is zero: mean over distinct pairs
    return float(sum(per_class) / len(per_class)) if per_class else float("nan")


class _InceptionOutput(nn.Module):
    """float [0, 1] images (1 or 3 channels) -> one output of torchmetrics' Inception-v3.

    torchmetrics' network takes uint8 RGB and resizes to 299x299 itself; grey images get repeated to
    three channels. One network serves both outputs so the 100 MB of weights load once.
    """

    def __init__(self, net: nn.Module, index: int, num_features: int | None):
        super().__init__()
        self.net = net
        self.index = index
        if num_features is not None:
            self.num_features = num_features

    def train(self, mode: bool = True) -> "_InceptionOutput":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out = self.net._torch_fidelity_forward(x)[self.index]
        return out.reshape(x.shape[0], -1)


def _inception_modules(weights_path: str) -> tuple[nn.Module, nn.Module]:
    if not _TORCH_FIDELITY_AVAILABLE:
        raise ModuleNotFoundError(
            "inception_weights was given but torch-fidelity is not installed; torchmetrics needs it for its "
            "Inception-v3 network (pip install torch-fidelity), or leave inception_weights unset to measure in "
            "the evaluator's feature space"
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048", "logits_unbiased"],
        feature_extractor_weights_path=weights_path,
    )
    return _InceptionOutput(net, 0, 2048), _InceptionOutput(net, 1, None)


def image_metrics(
    evaluator: ImageEvaluator,
    *,
    generated: torch.Tensor,
    generated_labels: torch.Tensor,
    reference: torch.Tensor,
    real: torch.Tensor,
    kid_subset_size: int | None = None,
    seed: int = 0,
    inception_weights: str | None = None,
    real_labels: torch.Tensor | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Quality of `generated` (float [0, 1] N x C x H x W, conditioned on `generated_labels`).

    reference is the train split, real the test split. The three FIDs use the same n =
    min(len(generated), len(real)) samples (generated: a seeded, category-balanced subsample) against
    the whole reference set. KID and the Inception Score use all generated samples; the KID subset size
    defaults to 1000 and is clamped to min(len(generated), len(reference)), so few samples still work.
    real_diversity groups real by real_labels, or by the evaluator's predictions when those are
    not given. With inception_weights, FID / KID / IS use torchmetrics' Inception-v3 (2048-d pool
    features, logits) loaded from that file instead; class accuracy and diversity stay as they are.
    """
    _check_images("reference", reference)
    _check_images("generated", generated, like=reference)
    _check_images("real", real, like=reference)
    if len(generated_labels) != len(generated):
        raise ValueError(f"{len(generated)} generated images but {len(generated_labels)} generated_labels")
    if real_labels is not None and len(real_labels) != len(real):
        raise ValueError(f"{len(real)} real images but {len(real_labels)} real_labels")
    n = min(len(generated), len(real))
    if n < 2 or len(reference) < 2:
        counts = f"{len(generated)}, {len(real)}, {len(reference)}"
        raise ValueError(f"image metrics need at least 2 generated, real and reference images; got {counts}")
    if kid_subset_size is not None and kid_subset_size < 2:
        raise ValueError(f"kid_subset_size must be >= 2, got {kid_subset_size}")

    was_training = evaluator.training
    evaluator.eval()
    device = _device(evaluator)
    generated_labels = generated_labels.cpu().long()
    if inception_weights:
        features, logits = _inception_modules(inception_weights)
        batch_size = min(batch_size, 64)  # 299x299 activations
    else:
        features, logits = evaluator.feature_extractor(), evaluator.logits_extractor()

    g = torch.Generator().manual_seed(seed)
    gen_idx = balanced_subsample(generated_labels, n, seed=seed)
    real_idx = torch.randperm(len(real), generator=g)[:n].sort().values if len(real) > n else torch.arange(n)
    noise = torch.rand((n, *reference.shape[1:]), generator=g)

    def feed(metric, images: torch.Tensor, **kw) -> None:
        for chunk in images.split(batch_size):
            metric.update(chunk.to(device, torch.float32), **kw)

    out: dict[str, float] = {}
    try:
        # the reference features are extracted once and kept across the three fake sets
        fid = FrechetInceptionDistance(feature=features, reset_real_features=False, normalize=False).to(device)
        feed(fid, reference, real=True)
        for key, fake in (("fid", generated[gen_idx]), ("fid_real_floor", real[real_idx]), ("fid_noise", noise)):
            fid.reset()
            feed(fid, fake, real=False)
            out[key] = float(fid.compute())

        subset = min(kid_subset_size or 1000, len(generated), len(reference))
        kid = _quietly(KernelInceptionDistance, feature=features, subsets=100, subset_size=subset, normalize=False)
        kid = kid.to(device)
        feed(kid, reference, real=True)
        feed(kid, generated, real=False)
        with _seeded(seed):
            kid_mean, kid_std = kid.compute()
        out["kid"], out["kid_std"] = float(kid_mean), float(kid_std)

        # at least ~10 samples per split, or the per-split marginal is mostly noise
        splits = max(1, min(10, len(generated) // 10))
        inception = _quietly(InceptionScore, feature=logits, splits=splits, normalize=False).to(device)
        feed(inception, generated)
        with _seeded(seed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: std undefined
            is_mean, is_std = inception.compute()
        out["inception_score"] = float(is_mean)
        out["inception_score_std"] = float(is_std) if splits > 1 else 0.0

        out["class_accuracy"] = float((_predict(evaluator, generated) == generated_labels).float().mean())
        labels_of_real = real_labels.cpu().long() if real_labels is not None else _predict(evaluator, real)
        out["diversity"] = _diversity(generated, generated_labels)
        out["real_diversity"] = _diversity(real, labels_of_real)
    finally:
        evaluator.train(was_training)
    # the metric modules only point at the evaluator (see models/evaluator.py _Frozen); they are dropped here
    return {k: out[k] for k in METRIC_KEYS}
