"""Fine-tuning throughput of a pretrained causal LM: HFCausalLM through our fit() vs peft + a plain PyTorch loop.

    python benchmarks/lora_finetune.py \
        [--base-model HuggingFaceTB/SmolLM2-135M-Instruct] [--full] [--steps 6] [--warmup 2] [--repeats 2]
        [--batch-size 8] [--threads 1] [--peak-tflops T] [--json]

Both sides train the same model (the base resolved by gen_assets.models.pretrained.resolve_base: a hub
id, a folder or a .gguf file; SmolLM2-135M-Instruct by default) with the same LoRA adapters (rank 16,
alpha 32, dropout 0.05, every linear layer but the output head, initialised from the same seed), or,
with --full, every weight trainable. They see the same batches: 64 (category, prompt, text) ad-copy
examples built below, encoded by HFCausalLM.example (chat-template prompt, loss on the text and eos)
and padded by HFCausalLM.collate through gen_assets.training.sft.sft_loaders, `--batch-size` examples
a batch drawn with the same seed, so every step gets identical tensors on both sides. Same optimizer
(AdamW, lr 2e-4, no weight decay), the same warm-up + cosine schedule (models.gpt.warmup_cosine_lr,
stepped every batch), gradient-norm clipping at 1.0, fp32 on the CPU and bf16-mixed (autocast) on a
GPU with bf16, and on the CPU the deterministic algorithms fit()'s Trainer asks for, in both.

- ours: HFCausalLM(HFConfig(...)) trained by gen_assets.training.fit.fit itself (its Trainer, its
  callbacks, the module's training_step / configure_optimizers / configure_gradient_clipping), with
  logger="none" and a fresh run folder. Like benchmarks/lightning_vs_torch.py, a Callback times the
  batches: the clock starts at the end of warm-up batch `--warmup` and stops at the end of the last
  batch (on_train_batch_end, synchronized on a GPU). fit() writes its checkpoint (last.ckpt) at the
  epoch's end, after the clock has stopped, so checkpointing costs wall time but not the measured
  throughput; unlike lightning_vs_torch.py, which rebuilds fit()'s Trainer minus checkpoints, this
  calls fit() unchanged.
- plain: AutoModelForCausalLM.from_pretrained(folder) + peft.get_peft_model(LoraConfig(...)) (with
  --full, no peft) and a hand-written loop: forward (labels in the batch: transformers' loss), loss.backward,
  clip_grad_norm_, optimizer.step, scheduler.step, zero_grad; timed over the same batches.

Reported: tokens/s (non-pad tokens of the timed batches: the same count on both sides) and steps/s of
the best run of each, the ratio ours/plain of the best runs (goal >= 0.95) and of the median runs (when
the two disagree, the machine was too busy to tell), and the loss of the last step on each side (a
check that both trained the same thing). Runs alternate (plain, ours, plain, ...). On a GPU it also
prints the achieved share of the card's dense bf16 peak, from the FLOPs of the non-pad tokens:
full fine-tuning 6 x N per token (N: all parameters, the tied embedding/output matrix once);
LoRA (2 forward + 2 backward-activation) x N_frozen + 6 x N_trainable per token (the frozen base
needs no weight gradients, the adapters need all three matmuls). Attention's score matmuls are left
out (short sequences), so the share is slightly understated. --peak-tflops defaults by card name
(H100/H200 SXM 989, A100 312, L4 121) and is required on any other card.
Defaults on a GPU: --steps 50 --warmup 10 --repeats 3. On the CPU: 6, 2, 2 and --threads 1 (a LoRA step is
~4 s on one thread, the default run ~3 min): on a 2-core machine that other jobs share, a second torch
thread makes every operation wait at a barrier for whichever core another process holds (measured here:
3 s per step idle, up to 43 s per step busy, ratios of best runs and of medians 0.64 and 1.8), while one
thread gave 0.995 and 0.996 with a test suite running beside it. --threads 0 leaves torch's choice.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_vs_torch import StepClock, sync  # noqa: E402

from gen_assets.models.gpt import warmup_cosine_lr  # noqa: E402
from gen_assets.models.hf import HFCausalLM, HFConfig  # noqa: E402
from gen_assets.models.pretrained import DEFAULT_BASE_MODEL, resolve_base  # noqa: E402
from gen_assets.training.fit import default_precision, fit  # noqa: E402
from gen_assets.training.sft import sft_loaders  # noqa: E402

# dense bf16 tensor-core TFLOP/s (datasheets, SXM parts)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}

PRODUCTS = [
    ("TrailRunner 2", "trail running shoes", "a grippy sole and a 240 g upper"),
    ("Brewly", "pour-over coffee kettle", "a gooseneck spout and a built-in thermometer"),
    ("Nimbus Pillow", "memory-foam pillow", "a cooling gel layer"),
    ("PocketPro", "power bank", "20,000 mAh and two USB-C ports"),
    ("GreenBox", "weekly vegetable box", "produce from farms within 50 km"),
    ("Lumo", "desk lamp", "warm-to-cool light and a wireless charger in the base"),
    ("SnapFit", "resistance band set", "five strengths and a door anchor"),
    ("Aqua Pure", "water filter bottle", "a filter that lasts 300 refills"),
    ("QuietDesk", "standing desk", "a motor quieter than a library"),
    ("Petal & Co", "flower subscription", "fresh bouquets every other Friday"),
    ("ByteBook", "lightweight laptop", "14 hours of battery in 1.1 kg"),
    ("Cozy Knits", "merino wool socks", "seamless toes and a cushioned heel"),
    ("ZenMat", "yoga mat", "a non-slip natural rubber surface"),
    ("SparkClean", "robot vacuum", "a self-emptying dock"),
    ("FreshPaws", "dog shampoo", "oatmeal and aloe for sensitive skin"),
    ("Voyager Pack", "travel backpack", "a clamshell opening and a laptop sleeve"),
]
KINDS = {
    "headline": lambda n, what, f: f"{n}: the {what} with {f}.",
    "tagline": lambda n, what, f: f"{n}. Less fuss, more joy, thanks to {f}.",
    "product description": lambda n, what, f: (
        f"Meet {n}, the {what} built for everyday life. With {f}, it just works. Order today."),
    "social post": lambda n, what, f: (
        f"New drop! {n} is here: a {what} with {f}. Tap the link to grab yours."),
}


def ad_examples() -> list[tuple[str, str, str]]:
    """64 (category, prompt, text) ad-copy examples: 16 products x 4 kinds of copy."""
    return [(kind, f"A {kind} for {name}: {what}, {feature}.", make(name, what, feature))
            for name, what, feature in PRODUCTS for kind, make in KINDS.items()]


def lr_lambda(config: HFConfig):
    return lambda it: warmup_cosine_lr(it, config) / config.learning_rate


def plain_torch(folder: Path, config: HFConfig, loader, *, warmup: int, steps: int, seed: int,
                device: torch.device, bf16: bool) -> dict:
    """Seconds for `steps` batches after `warmup` batches, in a hand-written loop."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # fit's Trainer runs with deterministic=True on CPU; hold the plain loop to the same algorithms
    torch.use_deterministic_algorithms(device.type != "cuda")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    torch.manual_seed(seed)  # the adapters' initial weights: HFCausalLM draws them from the same seed
    if config.lora:
        model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    torch.manual_seed(seed)  # fit() seeds the same way before training: the same dropout masks
    loader.sampler.set_epoch(0)
    done, t0, tokens = 0, 0.0, 0
    for batch in loader:
        if done >= warmup:
            tokens += int(batch["attention_mask"].sum())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
        if done == warmup:
            sync(device)
            t0 = time.perf_counter()
        if done == warmup + steps:
            sync(device)
            seconds = time.perf_counter() - t0
            break
    else:
        raise RuntimeError(f"the loader ran out after {done} batches, expected {warmup + steps}")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"seconds": seconds, "tokens": tokens, "loss": float(loss.detach()), "frozen": frozen,
            "trainable": sum(p.numel() for p in params)}


class _Clock(StepClock):
    """lightning_vs_torch.py's clock that also counts the timed batches' tokens and keeps the last loss."""

    def __init__(self, warmup: int, steps: int):
        super().__init__(warmup, steps)
        self.tokens = 0
        self.loss = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done >= self.warmup:
            self.tokens += int(batch["attention_mask"].sum())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.done == self.warmup + self.steps:
            self.loss = float(outputs["loss"])


def ours(base, config: HFConfig, examples, *, batch_size: int, warmup: int, steps: int, seed: int,
         precision: str) -> dict:
    torch.manual_seed(seed)  # the adapters' initial weights, as on the plain side
    module = HFCausalLM(config, base=base)
    loader, _ = sft_loaders(module, examples, batch_size=batch_size, batches_per_epoch=warmup + steps, seed=seed)
    clock = _Clock(warmup, steps)
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as run_dir:
        result = fit(module, loader, run_dir=run_dir, max_epochs=1, max_steps=warmup + steps, seed=seed,
                     precision=precision, logger="none", resume=False, extra_callbacks=[clock])
        checkpoint_mb = Path(result.last_path).stat().st_size / 2**20
    if clock.done != warmup + steps:
        raise RuntimeError(f"fit ran {clock.done} batches, expected {warmup + steps}")
    # fit's own wall time beyond the timed window: Trainer set-up, the warm-up batches, the checkpoint
    return {"seconds": clock.t1 - clock.t0, "tokens": clock.tokens, "loss": clock.loss,
            "fit_seconds": result.seconds, "checkpoint_mb": checkpoint_mb}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="hub id, folder (save_pretrained) or .gguf")
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--steps", type=int, default=None, help="timed batches per run (CPU 6, GPU 50)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed batches first (CPU 2, GPU 10)")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each, alternating (CPU 2, GPU 3)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 without a GPU, see the module doc; 0: torch's own choice)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak (default by name: H100/H200 989, A100 312, L4 121)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.steps = args.steps if args.steps is not None else (50 if cuda else 6)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.repeats = args.repeats if args.repeats is not None else (3 if cuda else 2)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        ap.error("--warmup, --steps and --repeats must be >= 1")
    peak, gpu_name = None, None
    if cuda:
        gpu_name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu_name), None)
        if peak is None:
            ap.error(f"no known bf16 peak for {gpu_name!r}: pass --peak-tflops")

    if args.threads is None and not torch.cuda.is_available():
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    precision = default_precision()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.set_float32_matmul_precision("high")  # what fit() sets on a GPU (use_tensor_cores), for both sides

    base = resolve_base(args.base_model, log=lambda m: print(m, file=sys.stderr))
    config = HFConfig(base_model=args.base_model, lora=not args.full)
    examples = ad_examples()
    # the plain loop's batches: the same sft loader, encoded by an HFCausalLM (prompt_ids/example/collate)
    encoder = HFCausalLM(config, base=base)
    plain_loader, _ = sft_loaders(encoder, examples, batch_size=args.batch_size,
                                  batches_per_epoch=args.warmup + args.steps, seed=args.seed)
    batches = list(plain_loader)
    widths = [b["input_ids"].shape[1] for b in batches]
    timed = batches[args.warmup:]
    padded_share = 1 - (sum(int(b["attention_mask"].sum()) for b in timed)
                        / sum(b["attention_mask"].numel() for b in timed))

    plain_runs, our_runs = [], []
    for _ in range(args.repeats):
        plain_runs.append(plain_torch(base.folder, config, plain_loader, warmup=args.warmup, steps=args.steps,
                                      seed=args.seed, device=device, bf16=precision == "bf16-mixed"))
        our_runs.append(ours(base, config, examples, batch_size=args.batch_size, warmup=args.warmup,
                             steps=args.steps, seed=args.seed, precision=precision))
    if plain_runs[0]["tokens"] != our_runs[0]["tokens"]:
        raise RuntimeError(f"the two sides saw different batches: {plain_runs[0]['tokens']} vs "
                           f"{our_runs[0]['tokens']} tokens")

    tokens = plain_runs[0]["tokens"]
    plain_s = [r["seconds"] for r in plain_runs]
    our_s = [r["seconds"] for r in our_runs]
    frozen, trainable = plain_runs[0]["frozen"], plain_runs[0]["trainable"]
    flops_per_token = 6 * trainable if args.full else 4 * frozen + 6 * trainable
    rows = []
    plain_name = "plain (torch loop)" if args.full else "plain (peft + torch loop)"
    for method, secs in ((plain_name, plain_s), ("ours (HFCausalLM + fit)", our_s)):
        best = min(secs)
        row = {"method": method, "tokens_per_s": tokens / best, "steps_per_s": args.steps / best,
               "seconds": [round(s, 3) for s in secs]}
        if peak:
            row["share_of_peak"] = flops_per_token * tokens / best / (peak * 1e12)
        rows.append(row)
    ratio = min(plain_s) / min(our_s)
    median_ratio = statistics.median(plain_s) / statistics.median(our_s)
    result = {
        "device": gpu_name or "cpu",
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "base_model": args.base_model,
        "base_source": base.source,
        "mode": "full fine-tuning" if args.full else f"LoRA r{config.lora_r} alpha {config.lora_alpha} "
                                                   f"dropout {config.lora_dropout} all-linear",
        "trainable_parameters": trainable,
        "frozen_parameters": frozen,
        "batch_size": args.batch_size,
        "padded_widths": [min(widths), max(widths)],
        "pad_share_of_positions": round(padded_share, 3),
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "timed_tokens": tokens,
        "repeats": args.repeats,
        "rows": rows,
        "ratio": round(ratio, 3),
        "ratio_of_medians": round(median_ratio, 3),
        "goal": 0.95,
        "final_loss": {"plain": round(plain_runs[-1]["loss"], 4), "ours": round(our_runs[-1]["loss"], 4)},
        "ours_fit_seconds": [round(r["fit_seconds"], 2) for r in our_runs],
        "ours_checkpoint_mb": round(our_runs[0]["checkpoint_mb"], 1),
        "peak_bf16_tflops": peak,
        "flops_per_token": flops_per_token,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['mode']} of {args.base_model} ({base.source.split(' (')[0]}), {result['device']} ({precision}, "
          f"{result['torch_threads']} threads), batch {args.batch_size} padded to {min(widths)}-{max(widths)} "
          f"tokens, {args.steps} steps after {args.warmup} warm-up, best of {args.repeats}")
    print(f"trainable {trainable:,} of {trainable + frozen:,} parameters; {tokens:,} non-pad tokens timed; "
          f"{100 * padded_share:.0f}% of the positions are padding; last-step loss plain "
          f"{result['final_loss']['plain']}, ours {result['final_loss']['ours']}")
    print(f"ours: fit() took {min(result['ours_fit_seconds']):.1f} s for {args.warmup + args.steps} batches "
          f"(timed window {min(our_s):.1f} s; the rest: set-up, warm-up, a {result['ours_checkpoint_mb']:.0f} MB "
          f"last.ckpt)")
    head = f"{'method':<28} {'tokens/s':>9} {'steps/s':>8} {'ratio best':>11} {'ratio median':>13} {'goal':>6}"
    if peak:
        head += f" {'% of bf16 peak':>15}"
    print(head)
    for row in rows:
        ours_row = row["method"].startswith("ours")
        line = (f"{row['method']:<28} {row['tokens_per_s']:9.1f} {row['steps_per_s']:8.3f} "
                f"{(f'{ratio:.3f}' if ours_row else '1'):>11} {(f'{median_ratio:.3f}' if ours_row else '1'):>13} "
                f"{('>=0.95' if ours_row else ''):>6}")
        if peak:
            line += f" {100 * row['share_of_peak']:15.2f}"
        print(line)
    if peak:
        formula = "6 x N" if args.full else "4 x N_frozen + 6 x N_trainable"
        print(f"FLOPs per non-pad token = {formula} = {flops_per_token:,}; peak {peak} TFLOP/s ({gpu_name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
