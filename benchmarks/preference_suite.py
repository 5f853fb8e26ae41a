"""Learning from ratings for any taste: planted tastes, a simulated rater who rates only what the review
page shows, and the Pareto table of each method's uplift against its quality cost.

    python benchmarks/preference_suite.py [--modality image|text|all] [--rounds 3] [--seeds 0]
                                          [--methods ...] [--tastes ...] [--cache-dir DIR] [--json]

Set-up, per modality: `gen-assets run --modality M --profile demo` in a home under --cache-dir (kept for
later runs): the demo profile's champion, evaluator and clean splits are the starting point, exactly what
the product makes. Then, for each planted taste, seed and method, starting from that champion:

round r = 1 .. --rounds:
1. the review page: the current champion's batch (images: 300 per category, texts: 8 per brief, the
   generated assets' defaults),
   curated as the product does (gen_assets.rules.curation.curate, k per category 10 / 5, the broken ones
   dropped), ranked by the reward model when it predicts and by the product's prior otherwise (images:
   evaluator confidence; texts: the form score), plus the product's exploratory share (20% of k per
   category: the samples the reward model is least sure about, at random before one exists);
2. the rater rates --ratings-per-round of the samples shown (80 of the 120 images, all 36 texts), and only
   those: 1 + 4 x the sample's percentile of the hidden
   property among real samples (the train split), plus Gaussian noise (--noise stars), rounded to 1..5;
3. the reward model is fitted on every rating so far with the product's features and guard
   (gen_assets.models.reward.fit_reward): used only when it predicts;
4. if it predicts and the method tunes (texts: in the rounds of --text-tune-rounds, by default the
   last), the champion's base is tuned toward it by the method and the
   gate decides (images: FID on the val split at most +30% over the starting champion's; texts: bits
   per byte on the val copy at most +3% and at most half the samples degenerate); a promoted
   candidate makes the next round's batch.
At the end the curated set (no exploration) is measured with the rater's noise-free stars. Uplift: its
mean stars over those of the curated set before any rating, minus 1. Quality cost: the final
champion's FID / bits per byte over the starting champion's, minus 1.

Methods: images `curation` (reward-ranked curation only), `weighted` (training/finetune.py's
reward-weighted resampling) and `anchored` (training/reward_tuning.py: differentiable reward tuning
anchored to the champion, step count chosen inside the gate); texts `curation`, `weighted` (supervised
fine-tuning on the best-scored candidates), `dpo` and `kto` (training/preference.py). Tastes: see
IMAGE_TASTES and TEXT_TASTES. Goals (issue 15): median uplift >= +50% per modality, the worst taste
>= +20%, quality cost inside the gate, and never a negative uplift from a model that does not predict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import duckdb
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import feedback_loop  # noqa: E402

from gen_assets import cli  # noqa: E402
from gen_assets.cleaning import texts as text_cleaning  # noqa: E402
from gen_assets.cleaning.images import categories as image_categories, load_images  # noqa: E402
from gen_assets.metrics.texts import guard_stats, length_bounds  # noqa: E402
from gen_assets.models.checkpoint import load_model  # noqa: E402
from gen_assets.models.reward import (fit_reward, image_feature_groups, text_feature_groups,  # noqa: E402
                                     image_features, pixel_statistics, writer_features)
from gen_assets.models.text_generators import load_writer, module_of, writer_bits_per_byte, writer_of  # noqa: E402
from gen_assets.rules import promotion  # noqa: E402
from gen_assets.rules.curation import NgramIndex, curate, image_confidence, prior_text_score, text_flags  # noqa: E402
from gen_assets.store.locations import resolve  # noqa: E402
from gen_assets.training.finetune import (finetune_image_generator, finetune_pretrained_text_generator,  # noqa: E402
                                         preference_weights)
from gen_assets.training.image_data import images_to_tensor  # noqa: E402
from gen_assets.training.sampling import generate_per_class  # noqa: E402

K = {"image": 10, "text": 5}
EXPLORE = {"image": 2, "text": 1}  # the curated assets' default explore_share 0.2 of k, rounded up
FID_TOLERANCE, BPB_TOLERANCE, MAX_DEGENERATE = 0.30, 0.03, 0.5
IMAGE_PER_CLASS, TEXT_PER_BRIEF = 300, 8


# ---- tastes: a hidden property per sample (higher is liked) ----------------------------------------------


def _moments(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    grey = images.float().mean(1)
    n, h, w = grey.shape
    ys, xs = torch.linspace(0, 1, h)[:, None], torch.linspace(0, 1, w)[None, :]
    mass = grey.sum((1, 2)).clamp_min(1e-8)
    cy, cx = (grey * ys).sum((1, 2)) / mass, (grey * xs).sum((1, 2)) / mass
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    spread = ((grey * (dy ** 2 + dx ** 2)).sum((1, 2)) / mass).sqrt()
    slant = (grey * dy * dx).sum((1, 2)) / mass
    return cy, cx, spread, slant


def _ink(x, y):
    return x.float().mean((1, 2, 3)).numpy()


IMAGE_TASTES: dict[str, Callable[[torch.Tensor, torch.Tensor], np.ndarray]] = {
    "bold strokes (ink)": _ink,
    "thin strokes": lambda x, y: -_ink(x, y),
    "sits to the left": lambda x, y: -_moments(x)[1].numpy(),
    "sits high": lambda x, y: -_moments(x)[0].numpy(),
    "compact (small spread)": lambda x, y: -_moments(x)[2].numpy(),
    "slanted (italic)": lambda x, y: -_moments(x)[3].numpy(),
    "sharp, high contrast": lambda x, y: pixel_statistics(x)[:, 3].numpy(),
    "per category: bold 0-4, thin 5-9": lambda x, y: np.where(y.numpy() < 5, 1.0, -1.0) * _ink(x, y),
}

WORDS = re.compile(r"[A-Za-z']+")
UPBEAT = {"amazing", "love", "perfect", "great", "best", "new", "enjoy", "beautiful", "easy", "favorite", "favourite"}


def _content_words(text: str | None) -> set[str]:
    return {w.lower() for w in WORDS.findall(text or "") if len(w) > 3}


def _mentions(briefs, texts) -> np.ndarray:
    return np.array([len(_content_words(p) & _content_words(t)) for (_, p), t in zip(briefs, texts)], dtype=float)


TEXT_TASTES: dict[str, Callable[[list, list[str]], np.ndarray]] = {
    "short copy": lambda b, t: -np.array([len(s) for s in t], dtype=float),
    "long copy": lambda b, t: np.array([min(len(s), 400) for s in t], dtype=float),
    "upbeat tone": lambda b, t: np.array([s.count("!") + sum(w.lower() in UPBEAT for w in WORDS.findall(s))
                                          for s in t], dtype=float),
    # punctuation: commas (lists of features). Not "?" or "!": no line of the demo's copy, real or generated,
    # holds one, so a rater's stars would be the same for every sample and no method could learn anything
    "lists with commas": lambda b, t: np.array([s.count(",") for s in t], dtype=float),
    "speaks to you": lambda b, t: np.array([sum(w.lower() in ("you", "your", "you'll", "you're") for w in WORDS.findall(s))
                                            for s in t], dtype=float),
    "names the product's attributes": _mentions,
    "names figures": lambda b, t: np.array([len(re.findall(r"\d+(?:[.,]\d+)?", s)) for s in t], dtype=float),
}


class Rater(feedback_loop.Rater):
    """feedback_loop.py's rater: 1 + 4 x the mid-rank percentile of the hidden property among real samples,
    + noise; here rounded to the integer stars people give."""

    def expected(self, values: np.ndarray) -> np.ndarray:
        return 1.0 + 4.0 * self.percentile(values)

    def rate(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(self(values)), 1, 5)


# ---- one modality's world: what the product made, and how to make, show and judge more ------------------


def product_home(cache: Path, modality: str) -> Path:
    home = cache / modality
    os.environ["GEN_ASSETS_HOME"] = str(home)  # its base models' cache too
    if not (home / "warehouse.duckdb").is_file():
        assert cli.main(["run", "--modality", modality, "--profile", "demo"]) == 0, "gen-assets run failed"
    return home


def champion_path(home: Path, modality: str) -> str:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT checkpoint_path FROM models WHERE status = 'champion' AND modality = ?",
                             [modality]).fetchone()[0]
    return resolve(stored, str(home / "artifacts"))


class Images:
    modality = "image"

    def __init__(self, home: Path, log):
        self.log = log
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            train, val = load_images(con, split="train"), load_images(con, split="val")
            self.categories = image_categories(con)  # the product's order: the generators' class indices
        index = {c: i for i, c in enumerate(self.categories)}
        self.train_x = images_to_tensor(train.images)
        self.train_y = torch.tensor([index[c] for c in train.labels])
        self.val_x = images_to_tensor(val.images)
        self.champion = load_model(champion_path(home, "image"))
        self.evaluator = load_model(next((home / "artifacts" / "models" / "image").glob("evaluator-*.pt")))
        self.fid_start = self.quality(self.champion)
        self.groups = image_feature_groups(self.evaluator)  # as image_reward_model's
        self._pools: dict[int, Any] = {}

    def real_values(self, taste) -> np.ndarray:
        return taste(self.train_x, self.train_y)

    def pool(self, model, seed: int):
        """The model's batch (the champion's, the same for every taste, is made once per seed)."""
        if model is self.champion and seed in self._pools:
            return self._pools[seed]
        x, y = generate_per_class(model, num_classes=len(self.categories), per_class=IMAGE_PER_CLASS, seed=seed)
        pool = {"x": x, "y": y, "features": image_features(self.evaluator, x, y),
                "confidence": image_confidence(self.evaluator, x, y).numpy()}
        if model is self.champion:
            self._pools[seed] = pool
        return pool

    def values(self, taste, pool, idx) -> np.ndarray:
        return taste(pool["x"][idx], pool["y"][idx])

    def frame(self, pool) -> dict:
        return {"sample_id": np.arange(len(pool["y"])), "category": pool["y"].numpy(), "confidence": pool["confidence"],
                "prior": pool["confidence"]}

    curate_kwargs = {"min_confidence": 0.9}

    def quality(self, model) -> float:
        return promotion.image_key_metric(model, self.evaluator, self.val_x, per_class=100, seed=0)

    def gate(self, model) -> tuple[bool, float]:
        fid = self.quality(model)
        return fid <= (1 + FID_TOLERANCE) * self.fid_start, fid / self.fid_start - 1

    def tune(self, method: str, reward, pool, seed: int):
        if method == "anchored":
            from gen_assets.training.reward_tuning import reward_tune_image_generator

            tuned, report = reward_tune_image_generator(
                self.champion, reward, self.evaluator, reference_x=self.val_x, max_fid_increase=0.25, steps=100,
                eval_every=2, seed=seed, progress_bar=False)  # tuned_image_generator's defaults
            self.log(f"      anchored: kept {report['steps_kept']} steps, FID {report['fid_before']:.2f} -> "
                     f"{report['fid_after']:.2f}")
            return tuned if report["steps_kept"] else None  # as tuned_image_generator: no step kept, no candidate
        keep = pool["confidence"] >= 0.9
        scores = reward.predict(pool["features"]).numpy()[keep]
        keep_t = torch.from_numpy(keep)
        return finetune_image_generator(
            self.champion, self.train_x, self.train_y, pool["x"][keep_t], pool["y"][keep_t],
            preference_weights(scores, top_fraction=0.1), steps=300, batch_size=64, mix=0.5,
            real_weights=preference_weights(reward.predict(image_features(self.evaluator, self.train_x, self.train_y))),
            seed=seed,
            progress_bar=False)


class Texts:
    modality = "text"

    def __init__(self, home: Path, log):
        self.log = log
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            train = text_cleaning.load_briefs(con, split="train")
            val = text_cleaning.load_briefs(con, split="val")
            every = text_cleaning.load_briefs(con)
        self.real = [(b.category, b.prompt, b.text) for b in train if b.text]
        self.briefs = text_cleaning.distinct_briefs(every)  # generated_texts writes for every brief
        self.val = [((b.category, b.prompt), b.text) for b in val if b.text]
        self.index = NgramIndex([t for *_, t in self.real])
        self.bounds = length_bounds([t for *_, t in self.real])
        self.champion = load_writer(champion_path(home, "text"))
        self.bpb_start = self.quality(self.champion)
        self.groups = None  # set by the first pool: [text statistics, hidden states], as text_reward_model's
        self._pools: dict[int, Any] = {}

    def real_values(self, taste) -> np.ndarray:
        return taste([(c, p) for c, p, _ in self.real], [t for *_, t in self.real])

    def pool(self, writer, seed: int):
        """The writer's batch (the champion's, the same for every taste, is written once per seed)."""
        if writer is self.champion and seed in self._pools:
            return self._pools[seed]
        wanted = [b for b in self.briefs for _ in range(TEXT_PER_BRIEF)]
        t0 = time.perf_counter()
        texts = writer.write(wanted, max_new_tokens=48, temperature=0.8, top_p=0.95, seed=seed)
        self.log(f"      wrote {len(texts)} texts in {time.perf_counter() - t0:.0f} s")
        pool = {"briefs": wanted, "texts": texts, "prior": prior_text_score(texts, self.bounds),
                "reason": text_flags(texts, train_ngrams=self.index),
                # the reward model's features are always the starting model's, as text_reward_model's are
                "features": writer_features(self.champion, wanted, texts)}
        self.groups = text_feature_groups(pool["features"].shape[1])
        if writer is self.champion:
            self._pools[seed] = pool
        return pool

    def values(self, taste, pool, idx) -> np.ndarray:
        return taste([pool["briefs"][i] for i in idx], [pool["texts"][i] for i in idx])

    def frame(self, pool) -> dict:
        return {"sample_id": np.arange(len(pool["texts"])), "category": [c for c, _ in pool["briefs"]],
                "reason": pool["reason"], "prior": pool["prior"]}

    curate_kwargs: dict = {}

    def quality(self, writer) -> float:
        return writer_bits_per_byte(writer, [b for b, _ in self.val], [t for _, t in self.val])

    def gate(self, writer) -> tuple[bool, float]:
        bpb = self.quality(writer)
        wanted = [b for b in self.briefs[:8] for _ in range(2)]
        degenerate = guard_stats(writer.write(wanted, max_new_tokens=48, seed=0), self.bounds)["degenerate_share"]
        ok = bpb <= (1 + BPB_TOLERANCE) * self.bpb_start and degenerate <= MAX_DEGENERATE
        return ok, bpb / self.bpb_start - 1

    def tune(self, method: str, reward, pool, seed: int):
        keep = np.array([not r for r in pool["reason"]])
        score = reward.predict(pool["features"]).numpy()[keep]
        rated = [(c, p, t) for (c, p), t, k in zip(pool["briefs"], pool["texts"], keep) if k]
        module = module_of(self.champion).cpu()
        if method in ("dpo", "kto"):
            from gen_assets.training.preference import finetune_text_preferences

            z = (score - score.mean()) / max(float(score.std()), 1e-8)
            tuned = finetune_text_preferences(module, rated, z, method=method, min_gap=1.0, liked=0.674,
                                              disliked=-0.674, steps=24, batch_size=4 if method == "dpo" else 8,
                                              seed=seed, progress_bar=False)
        else:
            real_w = preference_weights(reward.predict(writer_features(
                self.champion, [(c, p) for c, p, _ in self.real], [t for *_, t in self.real])))
            tuned = finetune_pretrained_text_generator(
                module, self.real, rated, preference_weights(score, top_fraction=0.1), steps=24, batch_size=8,
                mix=0.5, real_weights=real_w, seed=seed, progress_bar=False)
        return writer_of(tuned)


# ---- the loop, per taste, seed and method ------------------------------------------------------------------


def shown_set(world, pool, reward, usable: bool, explore: bool):
    frame = world.frame(pool)
    frame["reward"] = reward.predict(pool["features"]).numpy() if usable else frame["prior"]
    if reward is not None and explore:
        frame["uncertainty"] = reward.uncertainty(pool["features"]).numpy()
    rows = [dict(zip(frame, v)) for v in zip(*frame.values())]
    curated = curate(rows, k_per_category=K[world.modality], explore_per_category=EXPLORE[world.modality] if explore else 0,
                     **world.curate_kwargs).curated
    return curated["sample_id"].to_numpy(), curated["exploratory"].to_numpy(bool)


def play(world, taste_name: str, method: str, seed: int, rounds: int, noise: float, per_round: int,
         tune_rounds: list[int] | None = None) -> dict:
    taste = (IMAGE_TASTES if world.modality == "image" else TEXT_TASTES)[taste_name]
    rater = Rater(world.real_values(taste), noise, seed)
    model = world.champion
    pool = world.pool(model, seed)
    before_idx, _ = shown_set(world, pool, None, False, False)
    before = float(rater.expected(world.values(taste, pool, before_idx)).mean())
    features, ratings, reward, usable, history = [], [], None, False, []
    promoted, cost, candidate_cost = False, 0.0, None
    for r in range(1, rounds + 1):
        idx, _ = shown_set(world, pool, reward, usable, explore=True)
        if len(idx) > per_round:  # people rate some of what the page shows, not all of it
            idx = np.sort(np.random.default_rng([seed, r]).choice(idx, per_round, replace=False))
        features.append(pool["features"][torch.from_numpy(idx)])
        ratings.append(rater.rate(world.values(taste, pool, idx)))
        reward, report = fit_reward(torch.cat(features), torch.from_numpy(np.concatenate(ratings)), seed=seed,
                                    groups=world.groups)
        usable = report.predicts
        if usable and method != "curation" and (tune_rounds is None or r in tune_rounds):
            t0 = time.perf_counter()
            candidate = world.tune(method, reward, pool, seed)
            ok, delta = world.gate(candidate) if candidate is not None else (False, 0.0)
            candidate_cost = delta if candidate is not None else candidate_cost
            world.log(f"    round {r}: tuned ({time.perf_counter() - t0:.0f} s), quality {100 * delta:+.1f}%, "
                      f"{'promoted' if ok else 'refused'}")
            if ok:
                model, promoted, cost = candidate, True, delta
                pool = world.pool(model, seed + r)
        final_idx, _ = shown_set(world, pool, reward, usable, explore=False)
        after = float(rater.expected(world.values(taste, pool, final_idx)).mean())
        history.append({"round": r, "ratings": int(sum(map(len, ratings))), "predicts": bool(usable),
                        "cv_spearman": report.cv_spearman, "uplift": after / before - 1})
        world.log(f"    round {r}: {history[-1]['ratings']} ratings, reward model {report.verdict[:60]}..., "
                  f"uplift {100 * (after / before - 1):+.0f}%")
    return {"taste": taste_name, "method": method, "seed": seed, "before": before, "after": after,
            "uplift": after / before - 1, "quality_cost": cost, "promoted": promoted, "history": history,
            "candidate_cost": candidate_cost,  # of the last tuned candidate, promoted or refused
            "predicted": any(h["predicts"] for h in history)}


def summary(results: list[dict]) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in results):
        rs = [r for r in results if r["method"] == method]
        up = np.array([r["uplift"] for r in rs])
        silent = [r["uplift"] for r in rs if not r["predicted"]]
        out.append({"method": method, "runs": len(rs), "median_uplift": float(np.median(up)),
                    "worst_uplift": float(up.min()), "median_cost": float(np.median([r["quality_cost"] for r in rs])),
                    "max_cost": float(max(r["quality_cost"] for r in rs)),
                    "promoted": sum(r["promoted"] for r in rs),
                    "worst_without_a_predicting_model": float(min(silent)) if silent else None,
                    "ratings": int(np.median([r["history"][-1]["ratings"] for r in rs])),
                    # how many ratings the method needed: the first round whose curated set was +20% or more
                    "ratings_to_20": float(np.median([next((h["ratings"] for h in r["history"] if h["uplift"] >= 0.2),
                                                           np.inf) for r in rs]))})
    return out


def print_tables(modality: str, results: list[dict], start: float) -> None:
    unit = "FID" if modality == "image" else "bits/byte"
    print(f"\n== {modality}: uplift of the curated set on the hidden taste, quality cost ({unit} vs the starting "
          f"champion {start:.3f}) ==")
    print(f"{'taste':<34}{'method':<10}{'seed':>5}{'ratings':>8}  {'uplift per round':<22}{'cost':>8}  "
          f"promoted (last candidate's cost)")
    for r in results:
        rounds = " ".join(f"{100 * h['uplift']:+.0f}%{'' if h['predicts'] else '*'}" for h in r["history"])
        last = r.get("candidate_cost")
        print(f"{r['taste']:<34}{r['method']:<10}{r['seed']:>5}{r['history'][-1]['ratings']:>8}  {rounds:<22}"
              f"{100 * r['quality_cost']:>+7.1f}%  {'yes' if r['promoted'] else 'no'}"
              + ("" if last is None else f" ({100 * last:+.1f}%)"))
    print("(* the reward model did not predict that round: the previous ranking stayed)")
    print(f"\n{'method':<10}{'runs':>5}{'median uplift':>15}{'worst':>8}{'median cost':>13}{'max cost':>10}"
          f"{'promoted':>10}{'ratings to +20%':>17}  worst uplift without a predicting model")
    for s in summary(results):
        silent = "-" if s["worst_without_a_predicting_model"] is None else f"{100 * s['worst_without_a_predicting_model']:+.0f}%"
        print(f"{s['method']:<10}{s['runs']:>5}{100 * s['median_uplift']:>+14.0f}%{100 * s['worst_uplift']:>+7.0f}%"
              f"{100 * s['median_cost']:>+12.1f}%{100 * s['max_cost']:>+9.1f}%{s['promoted']:>10}"
              f"{s['ratings_to_20']:>17.0f}  {silent}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=["image", "text", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--noise", type=float, default=0.5, help="the rater's noise, in stars (sd)")
    parser.add_argument("--ratings-per-round", type=int, nargs=2, default=[80, 36], metavar=("IMAGES", "TEXTS"),
                        help="how many of the samples shown the rater rates per round (at random)")
    parser.add_argument("--image-methods", nargs="+", default=["curation", "weighted", "anchored"])
    parser.add_argument("--text-methods", nargs="+", default=["curation", "weighted", "dpo", "kto"])
    parser.add_argument("--tastes", nargs="+", default=None, help="names of tastes to run (default: all)")
    parser.add_argument("--text-tune-rounds", type=int, nargs="+", default=[2],
                        help="the rounds in which texts are tuned (a LoRA run and a new batch cost minutes on a CPU; "
                             "images are tuned every round)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "benchmarks" / "preference_suite")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="print the tables of earlier --json files, merged")
    args = parser.parse_args(argv)
    if args.from_json:  # several files (e.g. runs of different tastes) are printed as one table per modality
        merged: dict[str, Any] = {}
        for path in args.from_json:
            for modality, part in json.loads(path.read_text()).items():
                merged.setdefault(modality, {"results": [], "start_quality": part["start_quality"]})
                merged[modality]["results"] += part["results"]
        for modality, part in merged.items():
            print_tables(modality, part["results"], part["start_quality"])
        return 0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out: dict[str, Any] = {}
    log = lambda m: print(m, flush=True)  # noqa: E731
    for modality in (["image", "text"] if args.modality == "all" else [args.modality]):
        t0 = time.perf_counter()
        home = product_home(args.cache_dir, modality)
        world = Images(home, log) if modality == "image" else Texts(home, log)
        tastes = IMAGE_TASTES if modality == "image" else TEXT_TASTES
        methods = args.image_methods if modality == "image" else args.text_methods
        results = []
        for name in tastes:
            if args.tastes and name not in args.tastes:
                continue
            for seed in args.seeds:
                for method in methods:
                    log(f"{modality} | {name} | {method} | seed {seed}")
                    results.append(play(world, name, method, seed, args.rounds, args.noise,
                                        args.ratings_per_round[modality == "text"],
                                        None if modality == "image" else args.text_tune_rounds))
                    if args.json:  # after every run: a long suite stopped half-way keeps what it measured
                        start = world.fid_start if modality == "image" else world.bpb_start
                        out[modality] = {"results": results, "summary": summary(results), "start_quality": start}
                        args.json.write_text(json.dumps(out, indent=1, default=float))
        start = world.fid_start if modality == "image" else world.bpb_start
        print_tables(modality, results, start)
        print(f"({modality}: {time.perf_counter() - t0:.0f} s)")
        out[modality] = {"results": results, "summary": summary(results), "start_quality": start}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
