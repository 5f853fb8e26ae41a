"""A small CNN classifier whose penultimate layer is the feature space for FID / KID on our images.

Inception-v3 features mean little on 8x8 digits, so we train our own evaluator on the real images: its
`num_features`-wide penultimate layer plays Inception's pool3 (FID, KID) and its logits play Inception's
logits (Inception Score), and its argmax tells whether a generated sample shows the category it was
conditioned on. Keep `num_features` small: FID estimates a covariance from a few hundred samples.

Also here, so the generators, rules/promotion.py and metrics/images.py share one definition:
`frechet_distance`, and `SampleQuality`, the generators' per-epoch val_fid / val_class_acc as torchmetrics
metrics over the evaluator's features (`feature_extractor`, the same network metrics/images.py hands torchmetrics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance


@dataclass
class EvaluatorConfig:
    image_size: int
    channels: int
    num_classes: int
    num_features: int = 64
    width: int = 32  # channels of the first stage; doubled at each downsampling
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0


def downsample_stages(image_size: int, min_size: int = 4) -> int:
    """How many stride-2 halvings take image_size down to min_size or below (8 -> 1, 28 -> 3, 32 -> 3)."""
    stages, size = 0, image_size
    while size > min_size:
        size = (size + 1) // 2
        stages += 1
    return stages


class ImageEvaluator(L.LightningModule):
    config_class = EvaluatorConfig

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        self.save_hyperparameters(dataclasses.asdict(config))
        c = config
        layers: list[nn.Module] = []
        ch_in, ch, size = c.channels, c.width, c.image_size
        # a full-resolution conv first: at 8x8 every pixel matters and an early stride would throw half away
        layers += [nn.Conv2d(ch_in, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        for _ in range(downsample_stages(c.image_size)):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.BatchNorm2d(ch * 2), nn.ReLU(inplace=True)]
            ch, size = ch * 2, (size + 1) // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(c.dropout),
            nn.Linear(ch * size * size, c.num_features),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(c.num_features, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, num_features): the space FID and KID are measured in."""
        # centre the [0, 1] input so the first conv sees zero-mean data whatever the image set
        return self.head(self.body(x * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, acc = self._step(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("val_acc", acc, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Argmax category of each image, in eval mode and batches; returns int64 on x's device."""
        was_training = self.training
        self.eval()
        try:
            out = [self(chunk.to(self.device, torch.float32)).argmax(dim=1) for chunk in x.split(batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out).to(x.device) if out else torch.zeros(0, dtype=torch.long, device=x.device)

    def feature_extractor(self) -> "EvaluatorFeatures":
        """An nn.Module for torchmetrics FID / KID (`feature=`): float [0, 1] images -> features."""
        return EvaluatorFeatures(self)

    def logits_extractor(self) -> "EvaluatorLogits":
        """An nn.Module for torchmetrics InceptionScore (`feature=`): float [0, 1] images -> logits."""
        return EvaluatorLogits(self)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (the FID formula).

    Same estimator as torchmetrics' FrechetInceptionDistance (unbiased covariances, trace of the
    square root via the eigenvalues of the product), which computes the generators' val_fid and the
    reported fid: the promotion rules' distances agree with both.
    """
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        shapes = f"{tuple(feats_a.shape)} and {tuple(feats_b.shape)}"
        raise ValueError(f"expected two (N, D) feature sets with the same D, got {shapes}")
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError(f"Fréchet distance needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    a, b = feats_a.detach().double().cpu(), feats_b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    sqrt_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * sqrt_trace)


class SampleQuality(nn.Module):
    """A generator's validation yardstick, as torchmetrics metrics for the generator to log by object:
    `fid` (Fréchet distance between real and generated images in the evaluator's feature space: val_fid)
    and `class_acc` (share of generated images the evaluator puts in the category they were conditioned
    on: val_class_acc).

    They keep sums, not per-rank results: under DDP torchmetrics all-reduces the feature sums and
    outer products before computing, so val_fid is the FID of the whole val split rather than a mean
    of per-rank FIDs (which FID's small-sample bias would push up). Their states are not persistent
    and the evaluator is hidden from nn.Module (see _Frozen), so this module adds nothing to the
    generator's state_dict, checkpoints, optimizers or DDP gradient sync: a generator loaded from
    its file without an evaluator has the same keys.
    """

    def __init__(self, evaluator: ImageEvaluator):
        super().__init__()
        # reset_real_features (the default): the real split is fed again every epoch, and under DDP
        # each rank holds its own shard of it
        self.fid = FrechetInceptionDistance(feature=evaluator.feature_extractor(), normalize=False)
        self.class_acc = MeanMetric()
        self.logits = evaluator.logits_extractor()

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor) -> None:
        self.fid.update(real, real=True)
        self.fid.update(fake, real=False)
        hits = self.logits(fake).argmax(dim=1) == labels.to(fake.device)
        self.class_acc.update(hits.float())


class _Frozen(nn.Module):
    """The evaluator as a torchmetrics `feature=` network, without owning it.

    The evaluator sits in a tuple, out of nn.Module's sight: a metric holding this wrapper (a
    generator's val_fid) adds none of its weights to its owner's state_dict, optimizer or DDP
    gradient sync. For the same reason the owner's .to() and .train() do not reach it, so the
    wrapper itself keeps it in eval mode (dropout off, batch-norm statistics fixed) and on the
    device of its input, and in fp32 even under bf16 autocast: FID subtracts traces of nearly equal size.
    """

    def __init__(self, evaluator: ImageEvaluator):
        super().__init__()
        self._evaluator = (evaluator,)
        evaluator.eval()

    @property
    def evaluator(self) -> ImageEvaluator:
        return self._evaluator[0]

    def train(self, mode: bool = True) -> "_Frozen":
        return super().train(False)

    def _ready(self, x: torch.Tensor) -> tuple[ImageEvaluator, torch.Tensor]:
        evaluator = self.evaluator
        if evaluator.training:
            evaluator.eval()
        if evaluator.device != x.device:
            evaluator.to(x.device)
        if x.dtype == torch.uint8:  # torchmetrics' own convention for images is uint8 0..255
            x = x.float() / 255.0
        return evaluator, x.float()


class EvaluatorFeatures(_Frozen):
    def __init__(self, evaluator: ImageEvaluator):
        super().__init__(evaluator)
        # torchmetrics reads this to size its state; it must be a plain int
        self.num_features: int = int(evaluator.config.num_features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evaluator, x = self._ready(x)
        with torch.autocast(x.device.type, enabled=False):
            return evaluator.features(x)


class EvaluatorLogits(_Frozen):
    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evaluator, x = self._ready(x)
        with torch.autocast(x.device.type, enabled=False):
            return evaluator(x)
