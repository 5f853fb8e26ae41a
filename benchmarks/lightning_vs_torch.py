"""Training throughput of the DCGAN: through a Lightning Trainer vs a plain PyTorch loop.

Both train the same generator and discriminator (same config, same initial weights), on the same data
loader (the digits' train split, same batch size, same shuffling seed), for the same number of steps
after the same warm-up, with the same step: DCGAN.noise_and_labels / d_loss / g_loss / update_ema.
What differs is only what Lightning adds around it: manual optimization (toggle_optimizer,
manual_backward), the hooks and the per-step `self.log` of the epoch means.
The Trainer has the settings of gen_assets.training.fit.fit (no logger, no progress bar, no model
summary, the same precision and determinism), minus checkpoint writing and validation, which are
not training throughput. Runs alternate (plain, Lightning, plain, ...) so a burst of load from
elsewhere hurts neither side more than the other; the ratio is that of the best run of each, and the
ratio of the median runs is printed beside it: when the two disagree, the machine was too busy to tell.

    python benchmarks/lightning_vs_torch.py [--steps 100] [--warmup 30] [--repeats 5] [--batch-size 64]
                                            [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.datasets import load_digits

from gen_assets.training.image_data import image_loaders
from gen_assets.models.dcgan import DCGAN, DCGANConfig
from gen_assets.training.fit import default_precision


def digits_train() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))[: int(0.8 * len(d.images))]
    return np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None], d.target[order].astype(np.int64)


def fresh_model(seed: int) -> DCGAN:
    torch.manual_seed(seed)
    return DCGAN(DCGANConfig(8, 1, 10))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_torch(loader, *, warmup: int, steps: int, seed: int, device: torch.device, bf16: bool) -> float:
    """Seconds for `steps` batches after `warmup` batches, in a hand-written loop."""
    # fit's Trainer runs with deterministic=True on CPU; hold the plain loop to the same algorithms
    torch.use_deterministic_algorithms(device.type != "cuda")
    model = fresh_model(seed).to(device).train()
    opt_g, opt_d = model.configure_optimizers()
    d_sum = torch.zeros((), device=device)  # the epoch means Lightning's self.log keeps, kept here too
    g_sum = torch.zeros((), device=device)
    done, t0 = 0, None
    while True:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                z, yf = model.noise_and_labels(y)
                fake = model.generator(z, yf)
                d_loss = model.d_loss(x, y, fake.detach(), yf)
            d_loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            model.discriminator.requires_grad_(False)  # what toggle_optimizer does: no D grads in the G step
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                g_loss, loss = model.g_loss(z, fake, yf)
            loss.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            model.discriminator.requires_grad_(True)
            model.update_ema(done)
            d_sum += d_loss.detach()
            g_sum += g_loss.detach()
            done += 1
            if done == warmup:
                sync(device)
                t0 = time.perf_counter()
            if done == warmup + steps:
                sync(device)
                return time.perf_counter() - t0


class StepClock(Callback):
    """Times the batches after `warmup` batches, `steps` of them (t0 to t1), on the device's clock."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.done = warmup, steps, 0
        self.t0 = self.t1 = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        if self.done in (self.warmup, self.warmup + self.steps):
            sync(pl_module.device)
            if self.done == self.warmup:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()


def lightning(loader, *, warmup: int, steps: int, seed: int, precision: str) -> float:
    model = fresh_model(seed)
    clock = StepClock(warmup, steps)
    trainer = L.Trainer(
        max_steps=2 * (warmup + steps),  # manual optimization: each batch steps two optimizers
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        precision=precision,
        callbacks=[clock],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=not torch.cuda.is_available(),
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, loader)
    if clock.done != warmup + steps:
        raise RuntimeError(f"Lightning ran {clock.done} batches, expected {warmup + steps}")
    return clock.t1 - clock.t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="timed batches per run")
    ap.add_argument("--warmup", type=int, default=30, help="untimed batches first")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="runs of each, alternating; the fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    precision = default_precision()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, y = digits_train()
    loader, _ = image_loaders(x, y, None, None, batch_size=args.batch_size, seed=args.seed)

    plain_s, lightning_s = [], []
    for _ in range(args.repeats):
        torch.manual_seed(args.seed)
        plain_s.append(plain_torch(loader, warmup=args.warmup, steps=args.steps, seed=args.seed, device=device,
                                   bf16=precision == "bf16-mixed"))
        torch.manual_seed(args.seed)
        lightning_s.append(lightning(loader, warmup=args.warmup, steps=args.steps, seed=args.seed, precision=precision))

    images = args.steps * args.batch_size
    plain_ips, lightning_ips = images / min(plain_s), images / min(lightning_s)
    median_ratio = float(np.median(plain_s) / np.median(lightning_s))
    result = {
        "device": str(device),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "plain_images_per_s": round(plain_ips, 1),
        "lightning_images_per_s": round(lightning_ips, 1),
        "ratio": round(lightning_ips / plain_ips, 3),
        "ratio_of_medians": round(median_ratio, 3),
        "goal": 0.95,
        "plain_seconds": [round(s, 3) for s in plain_s],
        "lightning_seconds": [round(s, 3) for s in lightning_s],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"DCGAN training throughput, {device} ({precision}, {result['torch_threads']} threads), "
              f"batch {args.batch_size}, {args.steps} steps after {args.warmup} warm-up, best of {args.repeats}")
        print(f"{'plain img/s':>14} {'lightning img/s':>16} {'ratio':>7} {'median ratio':>13} {'goal':>6}")
        print(f"{plain_ips:14.1f} {lightning_ips:16.1f} {result['ratio']:7.3f} {median_ratio:13.3f} {'>=0.95':>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
