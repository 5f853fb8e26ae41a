"""When a new model may replace the champion: its key metric, measured the same way for both, and the rule.

Key metric per modality (lower is better for both):
- image: `fid`, the Fréchet distance in the image evaluator's feature space between `per_class` samples
  of every category and the clean val split (fixed seed, so both models see the same latent noise);
- text: `bits_per_byte` of the clean val split's texts given their briefs: the model's cross-entropy in
  bits per UTF-8 byte, which compares models whatever their tokenizers (a pretrained base and the
  from-scratch GPT alike).

Besides the key metric a candidate may have to pass a guard (`review(guard=...)`): for texts, samples
on held-out briefs must not degenerate (empty, repetitive, unfinished), must keep to the length of the
user's own copy, and, once a reward model exists, must not score lower than the champion's
(`text_guard`).

The rule (`decide`): the candidate passes when candidate <= champion * (1 + tolerance), or when there is
no champion to compare with; for images also FID <= a multiple of the real-data floor (an absolute bar,
so tolerated losses cannot add up over many rounds). Both values are measured in the same run with the same data and evaluator,
so a change of evaluator or data between two training runs never makes an old number look better.

`review` applies the rule to a candidate against the registry's champion and records the outcome
(promoted, or refused with the reason) in `promotions`: a refused candidate is a normal outcome, the
champion stays. The `<modality>_champion` assets call it.

Pure module (torch and the store): no dagster import.
"""

from __future__ import annotations

import dataclasses

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import torch

from gen_assets.training.sampling import generate_per_class
from gen_assets.models.evaluator import frechet_distance
from gen_assets.store import registry

KEY_METRICS = {"image": "fid", "text": "bits_per_byte"}


@dataclass(frozen=True)
class Decision:
    passed: bool
    reason: str
    key_metric: str
    candidate: float | None = None
    champion: float | None = None
    tolerance: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    key_metric: str,
    candidate: float,
    champion: float | None,
    tolerance: float,
    *,
    champion_version: str | None = None,
    ceiling: float | None = None,
    ceiling_label: str = "",
) -> Decision:
    """Lower is better. Pass when candidate <= champion * (1 + tolerance) (or there is no champion) and,
    when a ceiling is given, candidate <= ceiling: an absolute bar, so tolerated small losses cannot add up
    over many promotions."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    args = (key_metric, candidate, champion, tolerance)
    if not math.isfinite(candidate):
        return Decision(False, f"the candidate's {key_metric} is {candidate}", *args)
    if ceiling is not None and candidate > ceiling:
        bar = f"{ceiling:.4g}" + (f", {ceiling_label}" if ceiling_label else "")
        return Decision(False, f"{key_metric} {candidate:.4g} is above the bar of {bar}", *args)
    if champion is None or not math.isfinite(champion):  # a broken measurement of the champion beats nothing
        return Decision(True, f"{key_metric} {candidate:.4g}; no comparable champion", *args)
    name = f"champion {champion_version}" if champion_version else "the champion"
    change = (candidate - champion) / abs(champion) if champion else math.inf
    if candidate <= champion * (1 + tolerance):
        return Decision(True, f"{key_metric} {candidate:.4g} vs {name}'s {champion:.4g} ({change:+.1%}; "
                              f"tolerance +{tolerance:.0%})", *args)
    return Decision(False, f"{key_metric} {candidate:.4g} is worse than {name}'s {champion:.4g} by {change:+.1%}, "
                           f"beyond the tolerance of +{tolerance:.0%}", *args)


def image_floor(evaluator, real: torch.Tensor, reference: torch.Tensor, *, n: int, seed: int = 0) -> float:
    """FID of `n` real images (a seeded subset of `real`, the train split) against `reference` (val split):
    what a perfect generator would score with the same sample count."""
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    was_training = evaluator.training
    evaluator.eval()
    try:
        device = next(evaluator.parameters()).device
        with torch.no_grad():
            feats = [evaluator.features(x.to(device, torch.float32)) for x in (reference, real[idx])]
    finally:
        evaluator.train(was_training)
    return frechet_distance(*feats)


@torch.no_grad()
def image_key_metric(generator, evaluator, reference: torch.Tensor, *, per_class: int, seed: int = 0) -> float:
    """FID (evaluator features) of `per_class` samples of every class against `reference` images.

    reference: float [0, 1] N x C x H x W (the val split); the generator must be class-conditional on the
    evaluator's classes."""
    num_classes = int(evaluator.config.num_classes)
    if int(generator.config.num_classes) != num_classes:
        raise ValueError(f"the generator has {generator.config.num_classes} classes, the evaluator {num_classes}")
    was_training = evaluator.training
    evaluator.eval()
    try:
        fake, _ = generate_per_class(generator, num_classes=num_classes, per_class=per_class, seed=seed)
        device = next(evaluator.parameters()).device
        feats = [evaluator.features(x.to(device, torch.float32)) for x in (reference, fake)]
    finally:
        evaluator.train(was_training)
    return frechet_distance(*feats)


def text_key_metric(writer, briefs, texts) -> float:
    """Bits per byte of `texts` (the val split's) given their briefs (models.text_generators)."""
    from gen_assets.models.text_generators import writer_bits_per_byte

    return writer_bits_per_byte(writer, briefs, texts)


def text_guard(candidate: dict[str, float], champion: dict[str, float] | None, *, max_degenerate_share: float,
               min_in_length_share: float, reward_tolerance: float) -> str | None:
    """Why the candidate's samples on held-out briefs are not fit to serve, or None when they are.

    `candidate` / `champion`: metrics.texts.guard_stats of each model's samples, plus "reward" (their
    mean predicted rating) when a reward model exists."""
    problems = []
    if candidate["degenerate_share"] > max_degenerate_share:
        problems.append(f"{candidate['degenerate_share']:.0%} of its samples degenerate (empty "
                        f"{candidate['empty_share']:.0%}, repetitive {candidate['repetitive_share']:.0%}, unfinished "
                        f"{candidate['unfinished_share']:.0%}; at most {max_degenerate_share:.0%})")
    if candidate["in_length_share"] < min_in_length_share:
        problems.append(f"only {candidate['in_length_share']:.0%} of its samples are of the references' length "
                        f"(at least {min_in_length_share:.0%}; mean {candidate['mean_chars']:.0f} characters)")
    if champion is not None and "reward" in candidate and "reward" in champion:
        if candidate["reward"] < champion["reward"] - reward_tolerance:
            problems.append(f"predicted rating {candidate['reward']:.3g} below the champion's {champion['reward']:.3g} "
                            f"by more than {reward_tolerance:g}")
    return "; ".join(problems) or None


def image_models_comparable(candidate_config, champion_config) -> str | None:
    """None when both generators make the same images (size, channels, classes); else why not."""
    for name in ("image_size", "channels", "num_classes"):
        a, b = getattr(candidate_config, name, None), getattr(champion_config, name, None)
        if a != b:
            return f"{name} differs ({a} vs the champion's {b})"
    return None


@dataclass(frozen=True)
class Review:
    """What `review` decided: the champion after it, and the numbers and reason behind it."""

    champion: dict[str, Any] | None  # registry row of the champion after the review (None: there is none)
    candidate_version: str
    promoted: bool
    reason: str
    key_metric: str
    candidate_value: float | None = None
    champion_value: float | None = None  # the champion's key metric after the review, when measured
    experiment_id: str | None = None  # passed the gate and became the challenger of this experiment


def review(
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    candidate_version: str,
    *,
    load: Callable[[str], Any],
    measure: Callable[[Any], float],
    comparable: Callable[[Any, Any], str | None],
    tolerance: float,
    actor: str,
    ceiling: tuple[float, str] | None = None,
    guard: Callable[[Any, Any | None], str | None] | None = None,
    experiment: tuple[str, float] | None = None,
) -> Review:
    """Promote `candidate_version` to champion of its modality when its key metric passes `decide` against
    the current champion's, measured now the same way; otherwise it stays a candidate. Every decision is a
    row of `promotions`; a model a person rolled back is refused (only a person brings it back).

    connect() -> a warehouse connection (held only while reading or writing the registry, never while
    measuring); load(checkpoint path) -> model; measure(model) -> key metric; comparable(candidate model,
    champion model) -> None, or why their metrics cannot be compared; ceiling: (bar, label) or None;
    guard(candidate model, champion model or None) -> None, or why the candidate is unfit whatever its
    key metric (asked only when the key metric passes); experiment: (allocation, challenger_share) to make a
    candidate that passes the challenger of an experiment against the champion instead of promoting it
    (registry.start_experiment: customers' clicks then decide); without a champion it is promoted."""
    with connect() as con:
        candidate = registry.get_model(con, candidate_version)
        key = KEY_METRICS[candidate["modality"]]
        current = registry.champion(con, candidate["modality"])
        demoted = registry.demoted_by_person(con, candidate_version)

    def outcome(champion: dict | None, promoted: bool, reason: str, cand=None, champ=None) -> Review:
        return Review(champion, candidate_version, promoted, reason, key, cand, champ)

    if current and current["model_version"] == candidate_version:
        value = measure(load(candidate["checkpoint_path"]))
        with connect() as con:
            registry.record_key_metric(con, candidate_version, key, value)
            current = registry.champion(con, candidate["modality"])
        return outcome(current, False, f"{candidate_version} is already the champion", value, value)
    if demoted:
        reason = (f"{candidate_version} was rolled back by {demoted['actor']} at {demoted['at']}; "
                  f"only a person brings it back (gen-assets promote {candidate_version})")
        with connect() as con:
            registry.refuse(con, candidate_version, actor=actor, reason=reason)
        return outcome(current, False, reason, champ=_measure_champion(current, load, measure))

    cand_model = load(candidate["checkpoint_path"])
    cand_value = measure(cand_model)
    champ_value, note, champ_model = None, None, None
    if current is not None:
        if current["pruned_at"] is not None:
            note = f"champion {current['model_version']}'s checkpoint was pruned"
        else:
            champ_model = load(current["checkpoint_path"])
            note = comparable(cand_model, champ_model)
            if note is None:
                champ_value = measure(champ_model)
    decision = decide(key, cand_value, champ_value, tolerance,
                      champion_version=current["model_version"] if current else None,
                      ceiling=ceiling[0] if ceiling else None, ceiling_label=ceiling[1] if ceiling else "")
    reason, passed = decision.reason + (f" ({note})" if note else ""), decision.passed
    if passed and guard is not None:
        unfit = guard(cand_model, champ_model)
        if unfit:
            passed, reason = False, f"{unfit} ({decision.reason})"
    with connect() as con:
        registry.record_key_metric(con, candidate_version, key, cand_value)
        if champ_value is not None:
            registry.record_key_metric(con, current["model_version"], key, champ_value)
        if passed and experiment is not None and current is not None:
            allocation, share = experiment
            experiment_id = registry.start_experiment(con, candidate_version, allocation=allocation,
                                                      challenger_share=share, actor=actor, reason=reason)
            review = outcome(registry.champion(con, candidate["modality"]), False,
                             f"{reason}; now the challenger of experiment {experiment_id} ({allocation} allocation)",
                             cand_value, champ_value)
            return dataclasses.replace(review, experiment_id=experiment_id)
        if passed:
            try:
                registry.promote(con, candidate_version, actor=actor, reason=reason,
                                 expected_previous=current["model_version"] if current else None)
            except registry.ChampionChanged as e:
                passed, reason = False, f"{e}; materialize the champion again to compare with the new one"
        if not passed:
            registry.refuse(con, candidate_version, actor=actor, reason=reason)
        champion_now = registry.champion(con, candidate["modality"])
    if passed:
        return outcome(champion_now, True, reason, cand_value, cand_value)
    if champion_now is not None and (current is None or champion_now["model_version"] != current["model_version"]
                                     or champ_value is None):
        champ_value = _measure_champion(champion_now, load, measure)  # a person's champion, or an incomparable one
    return outcome(champion_now, False, reason, cand_value, champ_value)


def _measure_champion(champion: dict | None, load, measure) -> float | None:
    if champion is None or champion["pruned_at"] is not None:
        return None
    return measure(load(champion["checkpoint_path"]))
