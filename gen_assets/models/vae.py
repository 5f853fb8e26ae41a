"""Conditional VAE: the second image generator, a steady baseline next to the DCGAN.

Encoder: convs down to the DCGAN's base size, then (features, category embedding) -> mean and
log-variance of q(z | x, y). Decoder: the DCGAN generator's shape, (z, category embedding) -> pixel
logits. Pixels in [0, 1] are scored with a Bernoulli likelihood (binary cross-entropy on logits), the
usual choice for digit-like images; `generate` returns the decoder's mean image for z ~ N(0, I).
The loss is the negative ELBO per image (summed over pixels), with `kl_weight` scaling the KL term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_assets.training.image_data import as_category_indices
from gen_assets.models.dcgan import upsample_stages
from gen_assets.models.evaluator import ImageEvaluator, SampleQuality


@dataclass
class VAEConfig:
    image_size: int
    channels: int
    num_classes: int
    latent_dim: int = 16
    width: int = 32  # channels at full resolution, doubled at each coarser stage
    lr: float = 2e-3
    weight_decay: float = 0.0
    kl_weight: float = 1.0  # 1 is the true ELBO; lower trades sample quality for sharper reconstructions
    val_samples_seed: int = 1234  # fixed noise for validation samples: val_fid moves only when the model does


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        base, stages = upsample_stages(c.image_size)
        chs = [c.width * 2**i for i in range(stages + 1)]  # fine -> coarse
        layers: list[nn.Module] = [
            nn.Conv2d(c.channels, chs[0], 3, padding=1),
            nn.BatchNorm2d(chs[0]),
            nn.LeakyReLU(0.2),
        ]
        for ch_in, ch_out in zip(chs[:-1], chs[1:]):
            layers += [nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1), nn.BatchNorm2d(ch_out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        dim = chs[-1] * base * base
        self.embed = nn.Embedding(c.num_classes, c.latent_dim)
        self.fc = nn.Linear(dim + c.latent_dim, 2 * c.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.net(x * 2.0 - 1.0), self.embed(y)], dim=1)
        mu, logvar = self.fc(h).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        self.base, stages = upsample_stages(c.image_size)
        chs = [c.width * 2**i for i in reversed(range(stages + 1))]  # coarse -> fine
        self.embed = nn.Embedding(c.num_classes, c.latent_dim)
        self.fc = nn.Linear(2 * c.latent_dim, chs[0] * self.base * self.base)
        layers: list[nn.Module] = [nn.BatchNorm2d(chs[0]), nn.ReLU(inplace=True)]
        for ch_in, ch_out in zip(chs[:-1], chs[1:]):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch_in, ch_out, 3, padding=1),
                nn.BatchNorm2d(ch_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(chs[-1], c.channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel logits; sigmoid gives the mean image."""
        h = self.fc(torch.cat([z, self.embed(y)], dim=1))
        return self.net(h.view(len(z), -1, self.base, self.base))


class VAE(L.LightningModule):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig, evaluator: ImageEvaluator | None = None):
        super().__init__()
        self.config = config
        self.save_hyperparameters(dataclasses.asdict(config))
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # a tuple hides the evaluator from nn.Module: a yardstick for validation, not part of the model
        self._evaluator = (evaluator,)
        # val_fid and val_class_acc as torchmetrics metrics that Lightning computes, syncs across DDP ranks
        # and resets each epoch; they add no keys to the state_dict (see SampleQuality)
        self.val_quality = SampleQuality(evaluator) if evaluator is not None else None

    @property
    def evaluator(self) -> ImageEvaluator | None:
        return self._evaluator[0]

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative ELBO with kl_weight, reconstruction term, KL term), each averaged over the batch."""
        mu, logvar = self.encoder(x, y)
        mu, logvar = mu.float(), logvar.float()
        noise = torch.randn_like(mu) if noise is None else noise.to(mu)
        z = mu + noise * torch.exp(0.5 * logvar)
        logits = self.decoder(z, y).float()
        recon = F.binary_cross_entropy_with_logits(logits, x.float(), reduction="none").flatten(1).sum(1).mean()
        kl = (0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)).sum(1).mean()
        return recon + self.config.kl_weight * kl, recon, kl

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, _, _ = self.loss(x, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Mean images (N, C, H, W) in [0, 1] for the given categories, z ~ N(0, I).

        The noise is drawn on the CPU from its own generator, so a seed gives the same images on any device.
        """
        labels = as_category_indices(labels, self.config.num_classes)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(len(labels), self.config.latent_dim, generator=g)
        was_training = self.decoder.training
        self.decoder.eval()
        try:
            logits = self.decoder(z.to(self.device), labels.to(self.device))
        finally:
            self.decoder.train(was_training)
        return torch.sigmoid(logits.float())

    # validation: the negative ELBO always; FID and category accuracy when an evaluator is given

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        # the KL weight is a training knob; the reported figure is the true negative ELBO. Fixed noise
        # for the reparameterisation keeps val_loss from jittering between epochs.
        g = torch.Generator().manual_seed(self.config.val_samples_seed + batch_idx)
        _, recon, kl = self.loss(x, y, noise=torch.randn(len(x), self.config.latent_dim, generator=g))
        self.log("val_loss", recon + kl, on_step=False, on_epoch=True, sync_dist=True)
        if self.val_quality is not None:
            self.val_quality.update(x, self.generate(y, seed=self.config.val_samples_seed + batch_idx), y)
            # logged as metric objects: Lightning calls compute() at the epoch's end, where torchmetrics
            # gathers the ranks' sums first, so under DDP val_fid is that of the whole val split
            self.log("val_fid", self.val_quality.fid, on_step=False, on_epoch=True)
            self.log("val_class_acc", self.val_quality.class_acc, on_step=False, on_epoch=True)
