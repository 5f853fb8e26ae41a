"""Serving curated samples, and experiments between two models: what each request is shown, and when to stop.

The content API serves, per request, one curated sample (ad copy or an image) of the asked category; the
clicks and impressions come back as events. Two questions follow, one per half of this module:

- Which sample to show (`serving_probabilities`). The reward model's ranking is only a prior: people's clicks
  decide. Each sample is a bandit arm with a Beta posterior of its click rate (the prior mean from the reward
  model, of a small strength, so a few clicks outweigh it). Top-two Thompson sampling (Russo 2016, the
  challenger taken from the same posterior draw) serves the best arm of a draw with probability `top_two` and
  the second best otherwise: plain Thompson sampling (`top_two=1`) stops showing the runner-up once the leader
  looks better, and so never learns which of the two is really best. Every arm keeps `min_share` of the
  traffic, so a sample that was unlucky early is still seen, and so every logged serving probability stays
  away from 0: the server draws from exactly these probabilities (`choose`) and logs the probability of what
  it served, the propensity that inverse-propensity weighting divides by. The probabilities are a Monte Carlo
  estimate, fixed by the seed; what is logged is the probability actually used, so the weighting stays exact.
  The price of `top_two` < 1 is regret: with a clear winner it gets about `top_two` of the traffic, not all.

- Whether a challenger model replaces the champion (`summarise_experiment`). Traffic is split between the two
  (by `serving_probabilities` over the two, each user's `sticky_unit` choosing from them, so a person keeps
  seeing the same model while the shares hold); each model's click rate gets a
  Beta(1 + clicks, 1 + impressions - clicks) posterior, and the rule (`ExperimentRule`) promotes when the
  challenger is better with high probability and choosing it costs little click rate if it is not (expected
  loss), retires it in the mirror case, and gives up (keeping the champion) after `max_impressions`. The
  posterior treats impressions as independent; impressions of one user are not quite, so the figures are a
  little optimistic when users see many impressions. Looking again and again until the rule fires raises the
  false promotion rate above 1 - promote_probability; the expected-loss bound and `min_impressions` limit it.

Pure module (numpy and the standard library): no dagster, torch or scipy import.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

CHAMPION, CHALLENGER = "champion", "challenger"


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


# ---- serving: top-two Thompson sampling with a minimum share -----------------------------------------------


@dataclass(frozen=True)
class ArmCounts:
    """One bandit arm (a curated sample) and what people did with it. Counts are floats: they may be
    propensity-weighted elsewhere. The prior is Beta(prior_mean * prior_strength, (1 - prior_mean) * prior_strength):
    e.g. the reward model's predicted click rate, worth `prior_strength` impressions."""

    key: str
    impressions: float
    clicks: float
    prior_mean: float = 0.05
    prior_strength: float = 2.0

    def __post_init__(self):
        name = f"arm {self.key!r}"
        for field in ("impressions", "clicks", "prior_mean", "prior_strength"):
            value = getattr(self, field)
            if not _finite(value):
                raise ValueError(f"{name}: {field} must be a finite number, got {value!r}")
        if self.impressions < 0:
            raise ValueError(f"{name}: impressions must be >= 0, got {self.impressions}")
        if self.clicks < 0:
            raise ValueError(f"{name}: clicks must be >= 0, got {self.clicks}")
        if self.clicks > self.impressions:
            raise ValueError(f"{name}: {self.clicks} clicks but only {self.impressions} impressions")
        if not 0.0 < self.prior_mean < 1.0:
            raise ValueError(f"{name}: prior_mean must be in (0, 1), got {self.prior_mean}")
        if not self.prior_strength > 0.0:
            raise ValueError(f"{name}: prior_strength must be > 0, got {self.prior_strength}")

    @property
    def alpha(self) -> float:
        return self.prior_mean * self.prior_strength + self.clicks

    @property
    def beta(self) -> float:
        return (1.0 - self.prior_mean) * self.prior_strength + self.impressions - self.clicks


def serving_probabilities(arms: Sequence[ArmCounts], *, min_share: float = 0.02, top_two: float = 0.5,
                          draws: int = 2000, seed: int = 0) -> np.ndarray:
    """(K,) the probability of serving each arm, in the order of `arms`: sums to 1, every entry >= min_share.

    Top-two Thompson sampling over `draws` joint posterior draws: p_ts(i) = top_two * P(i is best) +
    (1 - top_two) * P(i is second best), then p = min_share + (1 - K * min_share) * p_ts (uniform when
    K * min_share >= 1). Deterministic for a seed."""
    arms = list(arms)
    if not arms:
        raise ValueError("arms is empty: there is nothing to serve")
    for i, arm in enumerate(arms):
        if not isinstance(arm, ArmCounts):
            raise TypeError(f"arms[{i}]: expected an ArmCounts, got {type(arm).__name__}")
    keys = [arm.key for arm in arms]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"arm key(s) repeated: {repeated[:10]}")
    if not (_finite(min_share) and 0.0 <= min_share <= 1.0):
        raise ValueError(f"min_share must be in [0, 1], got {min_share!r}")
    if not (_finite(top_two) and 0.0 <= top_two <= 1.0):
        raise ValueError(f"top_two must be in [0, 1], got {top_two!r}")
    if not isinstance(draws, (int, np.integer)) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")

    k = len(arms)
    if k == 1:
        return np.ones(1)
    if k * min_share >= 1.0:
        return np.full(k, 1.0 / k)
    rng = np.random.default_rng(seed)
    alpha = np.array([arm.alpha for arm in arms])
    beta = np.array([arm.beta for arm in arms])
    theta = rng.beta(alpha, beta, size=(draws, k))  # draws x K joint posterior draws
    rows = np.arange(draws)
    best = theta.argmax(axis=1)
    theta[rows, best] = -np.inf
    second = theta.argmax(axis=1)  # the challenger of the same draw (Russo 2016's top-two TS)
    p_best = np.bincount(best, minlength=k) / draws
    p_second = np.bincount(second, minlength=k) / draws
    p_ts = top_two * p_best + (1.0 - top_two) * p_second
    p = min_share + (1.0 - k * min_share) * p_ts
    total = p.sum()
    assert abs(total - 1.0) < 1e-9, f"serving probabilities sum to {total!r}"
    return p / total


def choose(probabilities: np.ndarray, rng_or_u: np.random.Generator | float) -> int:
    """The index drawn from `probabilities` with a uniform number: `rng_or_u` is u in [0, 1) or a numpy
    Generator to draw u from. An entry of probability 0 is never drawn."""
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D array, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"probabilities must be finite and >= 0, got {p.tolist()[:10]}")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"probabilities must sum to 1, they sum to {p.sum()!r}")
    if isinstance(rng_or_u, np.random.Generator):
        u = float(rng_or_u.random())
    elif _finite(rng_or_u) and 0.0 <= rng_or_u < 1.0:
        u = float(rng_or_u)
    else:
        raise ValueError(f"rng_or_u must be a numpy Generator or a number in [0, 1), got {rng_or_u!r}")
    cumulative = np.cumsum(p)
    index = int(np.searchsorted(cumulative, u, side="right"))  # side="right": a zero-probability entry is skipped
    if index >= len(p):  # u above a cumulative sum that rounding left just below 1: the last possible entry
        index = int(np.flatnonzero(p > 0)[-1])
    return index


def sticky_unit(*parts: str) -> float:
    """A uniform number in [0, 1) from a sha256 of the parts joined by '\\x1f': the same parts (user,
    experiment) always give the same number, on every server and after every restart."""
    if not parts:
        raise ValueError("sticky_unit needs at least one part")
    for i, part in enumerate(parts):
        if not isinstance(part, str):
            raise TypeError(f"part {i}: expected a str, got {type(part).__name__}")
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)  # 53 bits: exact in a float, < 1


# ---- experiments: champion vs challenger -------------------------------------------------------------------


@dataclass(frozen=True)
class ArmResult:
    """One model's figures in an experiment; the posterior is Beta(1 + clicks, 1 + impressions - clicks)."""

    arm: str
    impressions: int
    clicks: int
    rate: float  # clicks / impressions; NaN without impressions
    low: float  # the equal-tailed credible interval of the click rate (ExperimentRule.credible)
    high: float
    p_best: float  # the probability that this arm has the highest click rate
    expected_loss: float  # E[max(theta_other) - theta_this]^+: the click rate lost by choosing this arm


@dataclass(frozen=True)
class ExperimentSummary:
    arms: tuple[ArmResult, ...]  # champion, challenger
    p_challenger_beats: float  # P(theta_challenger > theta_champion)
    lift: float  # the challenger's posterior mean click rate over the champion's, minus 1
    decision: str  # "promote" | "retire" | "continue"
    reason: str  # one sentence saying why, with the figures

    def arm(self, name: str) -> ArmResult:
        for result in self.arms:
            if result.arm == name:
                return result
        raise KeyError(f"no arm {name!r}; the arms are {[a.arm for a in self.arms]}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentRule:
    """When an experiment stops (the thresholds come from the project settings).

    promote: P(challenger beats) >= promote_probability and the challenger's expected loss <= max_expected_loss;
    retire: P(challenger beats) <= retire_probability and the champion's expected loss <= max_expected_loss;
    no decision while either arm has fewer than min_impressions; once both arms have max_impressions (when
    set) and neither rule fired: retire, inconclusive (the champion stays). Expected loss is in absolute
    click rate (0.001 = 0.1 percentage point)."""

    min_impressions: int = 500
    promote_probability: float = 0.95
    retire_probability: float = 0.05
    max_expected_loss: float = 0.001
    max_impressions: int | None = None
    credible: float = 0.9

    def __post_init__(self):
        def whole(name, value, least):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
                raise ValueError(f"ExperimentRule.{name} must be an int >= {least}, got {value!r}")

        whole("min_impressions", self.min_impressions, 0)
        if self.max_impressions is not None:
            whole("max_impressions", self.max_impressions, max(1, self.min_impressions))
        for name in ("promote_probability", "retire_probability", "max_expected_loss", "credible"):
            if not _finite(getattr(self, name)):
                raise ValueError(f"ExperimentRule.{name} must be a finite number, got {getattr(self, name)!r}")
        if not 0.0 < self.retire_probability < self.promote_probability < 1.0:
            raise ValueError(f"ExperimentRule needs 0 < retire_probability < promote_probability < 1, got "
                             f"retire_probability={self.retire_probability}, "
                             f"promote_probability={self.promote_probability}")
        if self.max_expected_loss < 0:
            raise ValueError(f"ExperimentRule.max_expected_loss must be >= 0, got {self.max_expected_loss}")
        if not 0.0 < self.credible < 1.0:
            raise ValueError(f"ExperimentRule.credible must be in (0, 1), got {self.credible}")


def _counts(name: str, value) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be (impressions, clicks), got {value!r}")
    impressions, clicks = value
    for field, x in (("impressions", impressions), ("clicks", clicks)):
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 0:
            raise ValueError(f"{name}: {field} must be an int >= 0, got {x!r}")
    if clicks > impressions:
        raise ValueError(f"{name}: {clicks} clicks but only {impressions} impressions")
    return int(impressions), int(clicks)


def _pct(rate: float) -> str:
    return f"{rate:.1%}" if math.isfinite(rate) else "n/a"


def summarise_experiment(champion: tuple[int, int], challenger: tuple[int, int],
                         rule: ExperimentRule = ExperimentRule(), *, draws: int = 20000,
                         seed: int = 0) -> ExperimentSummary:
    """The figures of an experiment and its decision; `champion` and `challenger` are (impressions, clicks).

    Probabilities, expected losses and credible intervals come from `draws` Monte Carlo draws of the two
    posteriors (deterministic for a seed)."""
    counts = {CHAMPION: _counts(CHAMPION, champion), CHALLENGER: _counts(CHALLENGER, challenger)}
    if not isinstance(rule, ExperimentRule):
        raise TypeError(f"rule must be an ExperimentRule, got {type(rule).__name__}")
    if not isinstance(draws, (int, np.integer)) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")

    rng = np.random.default_rng(seed)
    n = np.array([counts[CHAMPION][0], counts[CHALLENGER][0]], dtype=float)
    c = np.array([counts[CHAMPION][1], counts[CHALLENGER][1]], dtype=float)
    theta = rng.beta(1.0 + c, 1.0 + n - c, size=(draws, 2))  # column 0: champion, 1: challenger
    p_beats = float((theta[:, 1] > theta[:, 0]).mean())
    p_best = (1.0 - p_beats, p_beats)  # ties (probability 0) count for the champion
    loss = (theta.max(axis=1, keepdims=True) - theta).mean(axis=0)
    tail = (1.0 - rule.credible) / 2.0
    bounds = np.quantile(theta, [tail, 1.0 - tail], axis=0)
    posterior_mean = (1.0 + c) / (2.0 + n)
    lift = float(posterior_mean[1] / posterior_mean[0] - 1.0)
    results = tuple(
        ArmResult(name, counts[name][0], counts[name][1], counts[name][1] / counts[name][0] if counts[name][0] else
                  math.nan, float(bounds[0, j]), float(bounds[1, j]), float(p_best[j]), float(loss[j]))
        for j, name in enumerate((CHAMPION, CHALLENGER))
    )
    champ, chall = results

    figures = (f"click rate {_pct(chall.rate)} vs {_pct(champ.rate)}, expected loss of the challenger "
               f"{chall.expected_loss:.4f}, of the champion {champ.expected_loss:.4f}")
    fewest = int(min(n))
    if fewest < rule.min_impressions:
        decision = "continue"
        reason = (f"too few impressions: the champion has {champ.impressions} and the challenger "
                  f"{chall.impressions}, at least {rule.min_impressions} each before a decision")
    elif p_beats >= rule.promote_probability and chall.expected_loss <= rule.max_expected_loss:
        decision = "promote"
        reason = f"the challenger beats the champion with probability {p_beats:.2f} ({figures})"
    elif p_beats <= rule.retire_probability and champ.expected_loss <= rule.max_expected_loss:
        decision = "retire"
        reason = f"the challenger beats the champion with probability only {p_beats:.2f} ({figures})"
    elif rule.max_impressions is not None and fewest >= rule.max_impressions:
        decision = "retire"
        reason = (f"inconclusive after {fewest} impressions per arm: the challenger beats the champion with "
                  f"probability {p_beats:.2f} ({figures}); the champion stays")
    else:
        decision = "continue"
        reason = (f"not yet conclusive: the challenger beats the champion with probability {p_beats:.2f} "
                  f"({figures}); promote at >= {rule.promote_probability:g}, retire at <= "
                  f"{rule.retire_probability:g}, with an expected loss <= {rule.max_expected_loss:g}")
    return ExperimentSummary(results, p_beats, lift, decision, reason)
