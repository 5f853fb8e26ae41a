"""The GPU path of both generators: fp32 vs bf16-mixed vs bf16 + torch.compile, and TFLOP/s vs peak.

    python benchmarks/gpu_throughput.py [--steps 200] [--gen-repeats 20] [--json]

Trains through gen_assets.training.fit.fit (the product's Trainer settings) on synthetic data of
the product's shapes, and measures after a warm-up (compilation included there, not in the timing):

- image generator (DCGAN): training samples/s at the digits' 8x8x1 and at 32x32x3 (a CIFAR-sized corpus),
  fp32 / bf16-mixed / bf16-mixed + compile, and generation samples/s (1,000 per batch, as generated_images);
- text generator (GPT): training tokens/s for the demo model (4 layers, 128 wide, block 64) and for
  nanoGPT's GPU recipe (6 layers, 384 wide, block 256, batch 64), and batch generation tokens/s
  (32 samples x 500 new tokens, KV cache).

FLOPs per training step are counted by torch.utils.flop_counter on one real step (matmuls and
convolutions; forward and backward), so the achieved TFLOP/s is counted work over measured time. The
peak is the card's dense bf16 tensor-core figure from its datasheet. Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gen_assets.models.dcgan import DCGAN, DCGANConfig  # noqa: E402
from gen_assets.models.gpt import GPT, GPTConfig  # noqa: E402
from gen_assets.training.text_data import text_loaders  # noqa: E402
from gen_assets.training.fit import fit  # noqa: E402

# dense bf16 tensor-core TFLOP/s (datasheets, SXM parts)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


class StepTimer(Callback):
    """Wall time of the training steps after `warmup` steps (synchronized on the GPU)."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.t0, self.seconds = warmup, 0, None, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        if self.t0 is not None:
            self.seconds = time.perf_counter() - self.t0


def timed_fit(module, loader, *, steps: int, warmup: int, precision: str, run_dir: Path) -> float:
    """Seconds per step after warm-up, through the product's fit()."""
    timer = StepTimer(warmup)
    fit(module, loader, None, run_dir=run_dir, max_epochs=10**6, max_steps=steps + warmup, precision=precision,
        accelerator="gpu", devices=1, resume=False, extra_callbacks=[timer])
    return timer.seconds / steps


def flops_per_step(make_module, loader, precision: str, run_dir: Path) -> float:
    module = make_module()
    with FlopCounterMode(display=False) as counter:
        fit(module, loader, None, run_dir=run_dir, max_epochs=1, max_steps=1, precision=precision,
            accelerator="gpu", devices=1, resume=False)
    return float(counter.get_total_flops())


def image_rows(args, run_dir: Path) -> list[dict]:
    rows = []
    for size, channels, batch in ((8, 1, 64), (32, 3, 256)):
        n = batch * 8
        data = TensorDataset(torch.rand(n, channels, size, size), torch.randint(0, 10, (n,)))
        loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
        config = DCGANConfig(size, channels, 10) if size == 8 else DCGANConfig(size, channels, 10, width=64, d_width=64)
        flops = flops_per_step(lambda: DCGAN(config), loader, "bf16-mixed", run_dir / "flops")
        name = f"dcgan {size}x{size}x{channels} batch {batch}"
        for precision, compiled in (("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)):
            cfg = DCGANConfig(**{**config.__dict__, "compile": compiled})
            sec = timed_fit(DCGAN(cfg), loader, steps=args.steps, warmup=args.warmup, precision=precision,
                            run_dir=run_dir / f"img{size}{precision}{compiled}")
            rows.append({"model": name, "precision": precision + (" + compile" if compiled else ""),
                         "throughput": batch / sec, "unit": "train samples/s", "tflops": flops / sec / 1e12})
        # batch generation as generated_images does it: g_ema, noise drawn on the CPU from a seed
        model = DCGAN(config).cuda().eval()
        labels = torch.arange(10, device="cuda").repeat_interleave(100)  # 1,000 samples, 100 per category
        for autocast in (False, True):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                model.generate(labels, seed=0)  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for i in range(args.gen_repeats):
                    model.generate(labels, seed=i)
                torch.cuda.synchronize()
            sec = (time.perf_counter() - t0) / args.gen_repeats
            rows.append({"model": name, "precision": "generate 1,000" + (", bf16 autocast" if autocast else ""),
                         "throughput": len(labels) / sec, "unit": "samples/s", "tflops": None})
    return rows


def text_rows(args, run_dir: Path) -> list[dict]:
    rows = []
    ids = torch.randint(0, 96, (2_000_000,))
    recipes = {
        "gpt demo 4x128 block 64 batch 12": (GPTConfig(vocab_size=100, block_size=64), 12),
        "gpt nanoGPT-GPU 6x384 block 256 batch 64": (
            GPTConfig(vocab_size=100, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0), 64),
    }
    for name, (config, batch) in recipes.items():
        loader, _ = text_loaders(ids, None, block_size=config.block_size, batch_size=batch, seed=0,
                                 iters_per_epoch=args.steps + args.warmup + 10)
        tokens = batch * config.block_size
        flops = flops_per_step(lambda: GPT(config), loader, "bf16-mixed", run_dir / "flops")
        for precision, compiled in (("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)):
            cfg = GPTConfig(**{**config.__dict__, "compile": compiled})
            sec = timed_fit(GPT(cfg), loader, steps=args.steps, warmup=args.warmup, precision=precision,
                            run_dir=run_dir / f"gpt{config.n_embd}{precision}{compiled}")
            rows.append({"model": name, "precision": precision + (" + compile" if compiled else ""),
                         "throughput": tokens / sec, "unit": "train tokens/s", "tflops": flops / sec / 1e12})
        model = GPT(config).cuda().eval()
        idx = torch.randint(0, 96, (32, 1), device="cuda")
        for autocast in (False, True):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                model.generate(idx, 20, seed=0)  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model.generate(idx, 500, seed=0, top_k=50)
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            rows.append({"model": name, "precision": "generate, KV cache" + (", bf16 autocast" if autocast else ""),
                         "throughput": (out.shape[1] - 1) * 32 / sec, "unit": "new tokens/s", "tflops": None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--gen-repeats", type=int, default=20, help="timed image generation batches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (this benchmark is for the GPU path)")
        return 0
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = image_rows(args, Path(tmp)) + text_rows(args, Path(tmp))
    for row in rows:
        row["share_of_peak"] = row["tflops"] / peak if (peak and row["tflops"] is not None) else None
    if args.json:
        print(json.dumps({"device": name, "peak_bf16_tflops": peak, "torch": torch.__version__, "rows": rows}))
        return 0
    print(f"{name}, torch {torch.__version__}, dense bf16 peak {peak} TFLOP/s\n")
    print(f"| {'model':<42} | {'precision':<32} | {'throughput':>22} | {'TFLOP/s':>8} | {'% of peak':>9} |")
    print(f"|{'-' * 44}|{'-' * 34}|{'-' * 24}|{'-' * 10}|{'-' * 11}|")
    for r in rows:
        tf = f"{r['tflops']:.2f}" if r["tflops"] is not None else "-"
        share = f"{100 * r['share_of_peak']:.2f}" if r["share_of_peak"] is not None else "-"
        thr = f"{r['throughput']:,.0f} {r['unit']}"
        print(f"| {r['model']:<42} | {r['precision']:<32} | {thr:>22} | {tf:>8} | {share:>9} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
