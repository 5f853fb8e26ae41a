"""Batched generation throughput of a pretrained causal LM: HFCausalLM.write() vs transformers' generate.

    python benchmarks/text_generation.py \
        [--base-model HuggingFaceTB/SmolLM2-135M-Instruct] [--briefs 32] [--max-new-tokens 48] [--repeats 2]
        [--dtype auto|float32|bfloat16] [--no-lora-row] [--threads 1] [--json]

Both sides run the same model (the base resolved by gen_assets.models.pretrained.resolve_base; ours is
HFCausalLM(HFConfig(lora=False)), so no adapters, the same transformers model as the plain side's) on
the same `--briefs` ad-copy briefs, all in one batch of 32, with the same settings: sampling at
temperature 0.8, top_p 0.95, top-k off (write() passes top_k=0 when it is not given; a bare generate()
call would add transformers' default top_k=50, so the plain side passes top_k=0 too), at most
`--max-new-tokens` 48 new tokens, the KV cache, the same seed.

- plain: the prompts are HFCausalLM.prompt_ids (the chat template), then exactly what a transformers
  user writes: AutoTokenizer(padding_side="left").pad(...), one model.generate(**batch, ...) call,
  tokenizer.batch_decode of the new tokens. Timed from the padding to the decoded texts.
- ours: HFCausalLM.write(briefs, batch_size=32, seed=...), timed whole (it encodes the briefs itself,
  pads, generates through the same generate(), decodes).

write() has no min_new_tokens, so rows end at eos at different lengths: the tokens counted are, for
every row, the positions generated up to and including its first eos (or all `--max-new-tokens`
without one), read from the sequences generate() returned (ours: recorded by a thin wrapper around the
model's generate). The plain side gets its prompts in write()'s order (shortest first, a stable sort)
and sampling starts from the same seed on both sides, so on the CPU the two generate the same tokens
(column "same tokens"): both sides did the same work. The "steps" of a run is its longest row (the
batch runs until every row has ended).

Runs alternate (plain, ours, ours with LoRA, plain, ...) after one untimed warm-up of each (2 new tokens on the CPU,
every code path at little cost; all of them on a GPU); the ratio ours/plain is that of the best runs
(goal >= 1.0 on the CPU), the ratio of the medians is printed beside it: when the two disagree, the
machine was too busy to tell. The third method, "ours, LoRA r16 adapters (unmerged)", is write() on
HFCausalLM(HFConfig()) (the default: LoRA r16 on every linear layer, not merged, as a freshly trained
LoRA model writes; fresh adapters change no output), for what the adapters cost (--no-lora-row: left out).
On the CPU the default is --threads 1 (a run is ~18-25 s, the default ~2.5 min): on a 2-core machine that
other jobs share, a second torch thread waits at every operation for whichever core another process
holds, and the ratios stop repeating (benchmarks/lora_finetune.py measured it); --threads 0 leaves
torch's choice.

On a GPU (--dtype auto: bfloat16 weights on both sides; float32 on the CPU) two more pairs run, after
their own untimed warm-up (compilation): cache_implementation="static" (transformers compiles its
decoding step itself on CUDA with a static cache: its CompileConfig, mode "reduce-overhead"), and
"static" with the model's forward wrapped in torch.compile(mode="reduce-overhead") and transformers' own
compilation turned off (generation_config.disable_compile) so that it is not stacked on top (ours:
module.model.forward compiled, then write(cache_implementation="static")); their goal is >= 3x plain
eager generate ("x plain eager"). On the CPU those rows
print "(GPU only)".
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_vs_torch import sync  # noqa: E402

from gen_assets.models.hf import HFCausalLM, HFConfig  # noqa: E402
from gen_assets.models.pretrained import DEFAULT_BASE_MODEL, resolve_base  # noqa: E402

PRODUCTS = [
    ("TrailRunner 2", "trail running shoes"), ("Brewly", "pour-over coffee kettle"),
    ("Nimbus Pillow", "memory-foam pillow"), ("PocketPro", "20,000 mAh power bank"),
    ("GreenBox", "weekly vegetable box"), ("Lumo", "desk lamp with a wireless charger"),
    ("SnapFit", "resistance band set"), ("Aqua Pure", "water filter bottle"),
    ("QuietDesk", "standing desk"), ("Petal & Co", "flower subscription"),
    ("ByteBook", "lightweight laptop"), ("Cozy Knits", "merino wool socks"),
    ("ZenMat", "yoga mat"), ("SparkClean", "robot vacuum"),
    ("FreshPaws", "dog shampoo for sensitive skin"), ("Voyager Pack", "travel backpack"),
]
KINDS = ("headline", "tagline", "product description", "social post")


def ad_briefs(n: int) -> list[tuple[str, str]]:
    """n (category, prompt) briefs: products x kinds of copy, cycled."""
    pairs = [(kind, name, what) for name, what in PRODUCTS for kind in KINDS]
    return [(kind, f"Write a short {kind} for {name}, a {what}.")
            for kind, name, what in (pairs[i % len(pairs)] for i in range(n))]


def generated_tokens(new: torch.Tensor, eos: int) -> int:
    """Positions generated per row up to and including its first eos (all of them without one), summed."""
    is_eos = new == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(is_eos[:, 0], new.size(1),
                                                                                      dtype=torch.long))
    return int(first.sum())


class Recorder:
    """Wraps a model's generate to keep what it returned (ours: write() returns only the decoded texts)."""

    def __init__(self, model: torch.nn.Module):
        self.generate = model.generate
        self.calls: list[tuple[int, torch.Tensor]] = []
        model.generate = self

    def __call__(self, *args, **kwargs):
        out = self.generate(*args, **kwargs)
        self.calls.append((kwargs["input_ids"].shape[1], out))
        return out


def sampling(args, tokenizer) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "do_sample": True, "temperature": args.temperature,
            "top_p": args.top_p, "top_k": 0, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id}


def plain_run(model, tokenizer, prompts: list[list[int]], settings: dict, *, seed: int, device: torch.device,
              cache_implementation: str | None = None) -> dict:
    extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**batch, **settings, **extra)
    width = batch["input_ids"].shape[1]
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    sync(device)
    seconds = time.perf_counter() - t0
    new = out[:, width:].cpu()
    return {"seconds": seconds, "tokens": generated_tokens(new, settings["eos_token_id"]), "steps": new.size(1),
            "new": new, "texts": texts}


def our_run(module: HFCausalLM, recorder: Recorder, briefs, args, *, device: torch.device,
            cache_implementation: str | None = None, max_new_tokens: int | None = None) -> dict:
    recorder.calls.clear()
    sync(device)
    t0 = time.perf_counter()
    texts = module.write(briefs, max_new_tokens=max_new_tokens or args.max_new_tokens, temperature=args.temperature,
                         top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
                         cache_implementation=cache_implementation)
    sync(device)
    seconds = time.perf_counter() - t0
    eos = module.tokenizer.eos_token_id
    news = [out[:, width:].cpu() for width, out in recorder.calls]
    return {"seconds": seconds, "tokens": sum(generated_tokens(n, eos) for n in news),
            "steps": sum(n.size(1) for n in news), "new": news[0] if len(news) == 1 else None, "texts": texts}


def alternate(fns: list, warmups: list, repeats: int) -> list[list[dict]]:
    """One untimed warm-up call each, then `repeats` rounds of one run of each in turn."""
    for warm in warmups:
        warm()
    runs: list[list[dict]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            runs[i].append(fn())
    return runs


def summary(method: str, runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["seconds"])
    return {"method": method, "tokens_per_s": best["tokens"] / best["seconds"], "s_per_run": best["seconds"],
            "tokens": best["tokens"], "steps": best["steps"], "seconds": [round(r["seconds"], 3) for r in runs],
            "tokens_each_run": [r["tokens"] for r in runs]}


def compared(method: str, runs: list[dict], plain: list[dict], goal: float | None) -> dict:
    """The row of `runs` with the ratio of its throughput to plain's: best runs and median runs
    (throughputs, not times: the token counts of two sides differ where their sampling differs)."""
    row = summary(method, runs)
    plain_best = max(r["tokens"] / r["seconds"] for r in plain)
    row.update(ratio=row["tokens_per_s"] / plain_best,
               ratio_median=(statistics.median(r["tokens"] / r["seconds"] for r in runs)
                             / statistics.median(r["tokens"] / r["seconds"] for r in plain)),
               goal=goal, same_tokens=same(runs[0]["new"], plain[0]["new"]))
    return row


def same(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    return a is not None and a.shape == b.shape and bool(torch.equal(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="hub id, folder (save_pretrained) or .gguf")
    ap.add_argument("--briefs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32, help="write()'s batch_size (the plain side: one batch)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each, alternating, after one warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="weights on both sides (auto: bfloat16 on a GPU, float32 on the CPU)")
    ap.add_argument("--no-lora-row", action="store_true", help="leave out the row of write() with LoRA adapters")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 without a GPU, see the module doc; 0: torch's own choice)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.briefs < 1 or args.max_new_tokens < 1 or args.repeats < 1:
        ap.error("--briefs, --max-new-tokens and --repeats must be >= 1")
    if args.batch_size < args.briefs:
        ap.error("--batch-size must be >= --briefs: the plain side generates all briefs in one call")

    if args.threads is None and not torch.cuda.is_available():
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[args.dtype]
    if cuda:
        torch.set_float32_matmul_precision("high")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = resolve_base(args.base_model, log=lambda m: print(m, file=sys.stderr))
    briefs = ad_briefs(args.briefs)

    module = HFCausalLM(HFConfig(base_model=args.base_model, lora=False), base=base).to(device=device, dtype=dtype)
    recorder = Recorder(module.model)
    # the plain side: prompts built by prompt_ids, in write()'s order (shortest first, stable)
    prompts = [module.prompt_ids(c, p) for c, p in briefs]
    prompts = sorted(prompts, key=len)
    model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base.folder), padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    settings = sampling(args, tokenizer)

    # CPU: the warm-up generates 2 tokens (every code path, little time); GPU: all of them (the static cache's
    # size and the compiled graphs depend on max_new_tokens)
    warm_tokens = args.max_new_tokens if cuda else min(2, args.max_new_tokens)

    def plain_fn(cache=None, tokens=None):
        run_settings = {**settings, "max_new_tokens": tokens or args.max_new_tokens}
        return lambda: plain_run(model, tokenizer, prompts, run_settings, seed=args.seed, device=device,
                                 cache_implementation=cache)

    def our_fn(m, rec, cache=None, tokens=None):
        return lambda: our_run(m, rec, briefs, args, device=device, cache_implementation=cache, max_new_tokens=tokens)

    fns = [plain_fn(), our_fn(module, recorder)]
    warmups = [plain_fn(tokens=warm_tokens), our_fn(module, recorder, tokens=warm_tokens)]
    if not args.no_lora_row:  # in the same alternation, so that load from elsewhere hits it alike
        lora = HFCausalLM(HFConfig(base_model=args.base_model), base=base).to(device=device, dtype=dtype)
        lora_recorder = Recorder(lora.model)
        fns.append(our_fn(lora, lora_recorder))
        warmups.append(our_fn(lora, lora_recorder, tokens=warm_tokens))
    runs = alternate(fns, warmups, args.repeats)
    rows = [summary("plain, eager generate", runs[0]), compared("ours, eager generate", runs[1], runs[0], 1.0)]
    if not args.no_lora_row:
        rows.append(compared("ours, LoRA r16 adapters (unmerged)", runs[2], runs[0], None))
        del lora, lora_recorder, fns, warmups
    gpu_labels = ("static cache", "static cache + torch.compile")
    if cuda:
        for label in gpu_labels:
            try:
                if "compile" in label:
                    for m in (model, module.model):
                        # this compiled forward alone, not transformers' own compiled call on top of it
                        m.generation_config.disable_compile = True
                        m.forward = torch.compile(m.forward, mode="reduce-overhead")
                gpu_runs = alternate([plain_fn("static"), our_fn(module, recorder, "static")],
                                     [plain_fn("static"), our_fn(module, recorder, "static")], args.repeats)
                pair_rows = [summary(f"plain, {label}", gpu_runs[0]),
                             compared(f"ours, {label}", gpu_runs[1], gpu_runs[0], 3.0)]
            except Exception as e:  # noqa: BLE001 - one failing GPU variant should not hide the others
                pair_rows = [{"method": f"{who}, {label}", "error": f"{type(e).__name__}: {str(e)[:300]}"}
                             for who in ("plain", "ours")]
            rows.extend(pair_rows)
    for r in rows:  # every row against plain eager generate (the GPU variants' goal of 3x is against it)
        if "tokens_per_s" in r:
            r["vs_plain_eager"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]

    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "base_model": args.base_model,
        "base_source": base.source,
        "briefs": args.briefs,
        "batch_size": args.batch_size,
        "prompt_tokens": [len(prompts[0]), len(prompts[-1])],
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "repeats": args.repeats,
        "rows": rows,
        "gpu_rows": None if cuda else "(GPU only)",
    }
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return 0
    print(f"generation from {args.base_model} ({base.source.split(' (')[0]}), {result['device']} ({result['dtype']}, "
          f"{result['torch_threads']} threads): {args.briefs} briefs in one batch, prompts of "
          f"{len(prompts[0])}-{len(prompts[-1])} tokens, <= {args.max_new_tokens} new tokens, temperature "
          f"{args.temperature}, top_p {args.top_p}; best of {args.repeats} after a warm-up")
    print("tokens: generated positions up to each row's eos (write() has no min_new_tokens); steps: the longest row")
    print(f"{'method':<44} {'tokens/s':>9} {'tokens':>7} {'steps':>6} {'s/run':>7} {'ratio best':>11} "
          f"{'ratio median':>13} {'goal':>6} {'x plain eager':>14} {'same tokens':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<44} failed: {r['error']}")
            continue
        plain_row = r["method"].startswith("plain")
        ratio, median, goal, same_ = (r.get(k) for k in ("ratio", "ratio_median", "goal", "same_tokens"))
        print(f"{r['method']:<44} {r['tokens_per_s']:9.1f} {r['tokens']:7d} {r['steps']:6d} {r['s_per_run']:7.2f} "
              f"{('1' if plain_row else f'{ratio:.3f}' if ratio is not None else '-'):>11} "
              f"{('1' if plain_row else f'{median:.3f}' if median is not None else '-'):>13} "
              f"{(f'>={goal:g}' if goal == 1.0 else ''):>6} "
              f"{r['vs_plain_eager']:14.3f}{' (>=3)' if goal == 3.0 else '':<5} "
              f"{('' if same_ is None else 'yes' if same_ else 'no'):>7}")
    if not cuda:
        for label in gpu_labels:
            for who in ("plain", "ours"):
                print(f"{who + ', ' + label:<44} (GPU only)")
    print("ratio: ours / plain of the same pair (best runs; medians); x plain eager: tokens/s over plain eager "
          "generate's; same tokens: ours generated exactly the plain side's tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
