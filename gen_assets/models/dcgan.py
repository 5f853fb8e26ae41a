"""Class-conditional DCGAN: the default image generator.

Generator: noise + category embedding -> linear -> (upsample, conv, batch norm) per stage -> sigmoid
image in [0, 1]. Discriminator: strided convs with spectral norm, then a projection head (Miyato &
Koyama 2018): a linear read-out plus the inner product of the features with the category's embedding.
Hinge loss, Adam with beta1 = 0.5, a mode-seeking term against per-category collapse, and an
exponential moving average of the generator's weights (`g_ema`), which is what `generate` samples
from: on small data the raw generator jitters from step to step and the average sits closer to the data.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from gen_assets.training.image_data import as_category_indices
from gen_assets.models.evaluator import ImageEvaluator, SampleQuality


@dataclass
class DCGANConfig:
    image_size: int
    channels: int
    num_classes: int
    latent_dim: int = 64
    width: int = 16  # generator channels at full resolution, doubled at each coarser stage
    d_width: int = 16  # discriminator channels at full resolution, doubled at each coarser stage
    lr: float = 1e-3  # both generator and discriminator
    beta1: float = 0.5
    beta2: float = 0.999
    # weight of the mode-seeking term (Mao et al. 2019). Without it the conditional generator collapses
    # to one image per category on the digits for thousands of steps: the discriminator judges samples
    # one at a time and cannot see that two noise vectors gave the same picture.
    mode_seeking: float = 0.05
    ema_decay: float = 0.999  # 0 turns the average off: g_ema then copies the generator after every step
    val_samples_seed: int = 1234  # fixed noise for validation samples: val_fid moves only when the model does
    compile: bool = False  # torch.compile the generator and discriminator for training (worth it on a GPU)


def upsample_stages(image_size: int) -> tuple[int, int]:
    """(base size, number of 2x upsamplings): halve while even, down to 2, at most 3 times.

    8 -> 2 -> 4 -> 8, 28 -> 7 -> 14 -> 28, 32 -> 4 -> 8 -> 16 -> 32; odd sizes get no upsampling.
    """
    base, stages = image_size, 0
    while base % 2 == 0 and base // 2 >= 2 and stages < 3:
        base, stages = base // 2, stages + 1
    return base, stages


class Generator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        self.base, stages = upsample_stages(c.image_size)
        chs = [c.width * 2**i for i in reversed(range(stages + 1))]  # coarse -> fine
        self.embed = nn.Embedding(c.num_classes, c.latent_dim)
        self.fc = nn.Linear(2 * c.latent_dim, chs[0] * self.base * self.base)
        layers: list[nn.Module] = [nn.BatchNorm2d(chs[0]), nn.ReLU(inplace=True)]
        for ch_in, ch_out in zip(chs[:-1], chs[1:]):
            # nearest upsampling + conv rather than a transposed conv: no checkerboard artefacts
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch_in, ch_out, 3, padding=1),
                nn.BatchNorm2d(ch_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(chs[-1], c.channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1))
        return torch.sigmoid(self.net(h.view(len(z), -1, self.base, self.base)))


class Discriminator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        self.config = c
        base, stages = upsample_stages(c.image_size)
        chs = [c.d_width * 2**i for i in range(stages + 1)]  # fine -> coarse
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(c.channels, chs[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for ch_in, ch_out in zip(chs[:-1], chs[1:]):
            layers += [spectral_norm(nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        dim = chs[-1] * base * base
        self.out = spectral_norm(nn.Linear(dim, 1))
        self.embed = spectral_norm(nn.Embedding(c.num_classes, dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.net(x * 2.0 - 1.0)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)

    def __reduce__(self):
        # Spectral norm's parametrized layers refuse to be pickled, and ddp_spawn pickles the module for
        # its ranks: travel as config + state dict instead (the power iteration's u and v included, so
        # the copy computes exactly what the original does), with each layer's mode and requires_grad.
        modes = {name: m.training for name, m in self.named_modules()}
        grads = {name: p.requires_grad for name, p in self.named_parameters()}
        return _rebuild_discriminator, (self.config, self.state_dict(), modes, grads)


def _rebuild_discriminator(
    config: DCGANConfig, state: dict[str, torch.Tensor], modes: dict[str, bool], grads: dict[str, bool]
) -> Discriminator:
    with torch.random.fork_rng(devices=[]):  # the throwaway initialisation leaves the caller's RNG alone
        d = Discriminator(config)
    d.load_state_dict(state, assign=True)  # assign: the tensors keep their device and dtype
    for name, m in d.named_modules():
        m.training = modes[name]
    for name, p in d.named_parameters():
        p.requires_grad_(grads[name])
    return d


class DCGAN(L.LightningModule):
    config_class = DCGANConfig

    def __init__(self, config: DCGANConfig, evaluator: ImageEvaluator | None = None):
        super().__init__()
        self.config = config
        self.save_hyperparameters(dataclasses.asdict(config))
        self.automatic_optimization = False
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # a tuple hides the evaluator from nn.Module: it is a yardstick for validation, not part of the
        # model, so it stays out of state_dict, checkpoints and the optimizers
        self._evaluator = (evaluator,)
        # val_fid and val_class_acc as torchmetrics metrics that Lightning computes, syncs across DDP ranks
        # and resets each epoch; they add no keys to the state_dict (see SampleQuality)
        self.val_quality = SampleQuality(evaluator) if evaluator is not None else None
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0

    @property
    def evaluator(self) -> ImageEvaluator | None:
        return self._evaluator[0]

    def configure_model(self) -> None:
        # Lightning calls this before fitting (in each rank, after ddp_spawn). Module.compile() compiles
        # in place, so state_dict keys, checkpoints and the optimizers' parameters stay the plain ones.
        if self.config.compile and not getattr(self, "_compiled", False):
            self.generator.compile()
            self.discriminator.compile()
            self._compiled = True

    def configure_optimizers(self):
        c = self.config
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        return [opt_g, opt_d]

    # the three pieces of a training step, shared by training_step and the plain-torch benchmark loop

    def noise_and_labels(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise and categories for one fake batch the size of the real one.

        Fakes come in pairs sharing a category (first half, second half), so that the mode-seeking
        term compares like with like; the category mix stays that of the real batch.
        """
        half = len(y) // 2
        yf = torch.cat([y[:half], y[:half], y[2 * half :]]) if self.config.mode_seeking > 0 else y
        return torch.randn(len(y), self.config.latent_dim, device=y.device), yf

    def d_loss(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, yf: torch.Tensor) -> torch.Tensor:
        # one discriminator pass over real and fake together: half the calls (no batch norm in D)
        scores = self.discriminator(torch.cat([x, fake]), torch.cat([y, yf]))
        return F.relu(1.0 - scores[: len(x)]).mean() + F.relu(1.0 + scores[len(x) :]).mean()

    def g_loss(self, z: torch.Tensor, fake: torch.Tensor, yf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial loss, loss to minimise = adversarial + mode-seeking term)."""
        adversarial = -self.discriminator(fake, yf).mean()
        half = len(z) // 2
        if self.config.mode_seeking <= 0 or half == 0:
            return adversarial, adversarial
        # pixel distance per unit of noise distance between the two fakes of each pair; its inverse is
        # small when different noise gives different images
        dx = (fake[:half] - fake[half : 2 * half]).abs().mean()
        dz = (z[:half] - z[half : 2 * half]).abs().mean()
        return adversarial, adversarial + self.config.mode_seeking * dz / (dx + 1e-5)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """Fold the generator into g_ema; the decay ramps up so short runs are not stuck near the init."""
        decay = min(self.config.ema_decay, (1.0 + step) / (10.0 + step))
        for p_ema, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        opt_g, opt_d = self.optimizers()
        z, yf = self.noise_and_labels(y)
        fake = self.generator(z, yf)

        self.toggle_optimizer(opt_d)
        d_loss = self.d_loss(x, y, fake.detach(), yf)
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_d)

        # the same fake batch, scored by the updated discriminator: saves a generator forward pass
        self.toggle_optimizer(opt_g)
        g_loss, loss = self.g_loss(z, fake, yf)
        self.manual_backward(loss)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_g)

        # global_step counts optimizer steps: two per batch under manual optimization
        self.update_ema(self.global_step // 2)
        self._log_epoch_means(batch_idx, d_loss=d_loss, g_loss=g_loss)

    def on_train_epoch_start(self) -> None:
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0

    def _log_epoch_means(self, batch_idx: int, **losses: torch.Tensor) -> None:
        """Log the epoch means of the losses, once, in the epoch's last batch.

        Each self.log call walks Lightning's metric bookkeeping (a few hundred microseconds on a CPU),
        which per step would be several percent of this small model's step. The sums stay on the
        device, so no synchronisation either. Logged in the last batch rather than in
        on_train_epoch_end, because fit's History callback reads the metrics before that hook runs.
        """
        n_batches = self.trainer.num_training_batches
        if n_batches == float("inf"):  # a loader without a length: fall back to Lightning's own means
            for name, value in losses.items():
                self.log(name, value.detach(), on_step=False, on_epoch=True, sync_dist=True)
            return
        for name, value in losses.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach().float()
        self._loss_count += 1
        if batch_idx + 1 >= n_batches:
            for name, total in self._loss_sums.items():
                self.log(name, total / self._loss_count, on_step=False, on_epoch=True, sync_dist=True)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] for the given categories, from the averaged generator.

        The noise is drawn on the CPU from its own generator, so a seed gives the same images on any device.
        """
        labels = as_category_indices(labels, self.config.num_classes)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(len(labels), self.config.latent_dim, generator=g)
        was_training = self.g_ema.training
        self.g_ema.eval()
        try:
            x = self.g_ema(z.to(self.device), labels.to(self.device))
        finally:
            self.g_ema.train(was_training)
        return x.float()

    # validation: FID and category accuracy in the evaluator's feature space, when one is given

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.val_quality is not None:
            x, y = batch
            self.val_quality.update(x, self.generate(y, seed=self.config.val_samples_seed + batch_idx), y)
            # logged as metric objects: Lightning calls compute() at the epoch's end, where torchmetrics
            # gathers the ranks' sums first, so under DDP val_fid is that of the whole val split
            self.log("val_fid", self.val_quality.fid, on_step=False, on_epoch=True)
            self.log("val_class_acc", self.val_quality.class_acc, on_step=False, on_epoch=True)
