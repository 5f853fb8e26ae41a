"""Reward models: predict the rating a person would give a sample, from features of the sample.

A reward model is a linear read-out over standardised features (a ridge regression, the default), or
that plus a small MLP, fitted on the ratings collected so far (`fit_reward`). The ridge is solved in
closed form by scikit-learn's RidgeCV, which also picks its penalty by efficient leave-one-out
cross-validation, and lands in the torch module's parameters; the MLP is trained with torch. It ranks
candidates for curation (gen_assets.rules.curation) and weights the fine-tuning targets
(gen_assets.training.finetune), so what matters is that it orders samples the way the ratings do.
`fit_reward` cross-validates that (rank correlation with ratings it never saw, with an uncertainty
band) and says whether the model `predicts`: a model below the bar must not be used, since ranking by
noise, or worse by an inverted taste, moves the content away from what people like. `uncertainty`
gives each prediction's standard deviation (a Bayesian reading of the ridge), which exploration uses to
choose what people should rate next.

Features per modality:
- images (`image_features`): the evaluator's penultimate features plus a few pixel statistics. The
  evaluator was trained to tell categories apart, so its features are built to ignore what does not
  change the category: stroke thickness, brightness, position, blur. That is exactly what a taste is
  often about ("bolder digits"), and a linear read-out of classifier features recovers it only
  partially. The statistics (ink, coverage, contrast, sharpness, centre of mass) cost one pass over the
  pixels and make such a taste a linear function of the features.
- texts (`text_features`): cheap surface statistics (length, rates of '?', '!', ',', '.', lines, word
  length, capitals, distinct words), plus the generator's mean-pooled final hidden states when a GPT is
  given: they carry register, topic and fluency that no surface count sees.

The feature and rating normalisation statistics are buffers, so `save_model(path, "reward", model)` /
`load_model` round-trip a fitted model exactly. Pure torch: no dagster import.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from statistics import NormalDist
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.linear_model import Ridge, RidgeCV
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

IMAGE_STAT_NAMES = ("ink", "coverage", "contrast", "sharpness", "center_y", "center_x", "spread")
TEXT_STAT_NAMES = (
    "log_chars",
    "question_rate",
    "exclamation_rate",
    "comma_rate",
    "period_rate",
    "line_rate",
    "mean_word_length",
    "upper_share",
    "distinct_word_share",
)


@dataclass
class RewardConfig:
    in_features: int
    # width of the MLP beside the linear read-out. 0 (the default) is a ridge regression: with a few
    # hundred ratings of ~100 features the MLP mostly fits the raters' noise (on the feedback benchmark
    # it predicted held-out ratings worse than the linear model for both modalities); give it width
    # when the ratings are many and the taste is not linear in the features
    hidden: int = 0
    dropout: float = 0.1  # the MLP's
    lr: float = 1e-2  # the MLP's AdamW
    # ridge penalty on the weights (not the biases), per unit of mean squared error in standardised
    # units. With hidden = 0 fit_reward chooses it by cross-validation (unless given) and stores the choice here.
    l2: float = 1e-2
    steps: int = 400  # the MLP's full-batch AdamW steps: a few hundred ratings fit in one batch
    # standardised features are clipped to [-clip, clip]: a feature that was (nearly) constant in the
    # ratings, such as '!' in texts that never exclaim, would otherwise reach z = 1000 on the first
    # sample that has it and swing the prediction by its barely-trained weight
    clip: float = 5.0
    # the features' blocks, by width, in order (e.g. [9, 576]: text statistics, then a model's hidden states).
    # A block of hundreds of hidden states outweighs nine statistics under one penalty; with groups, the
    # ridge's cross-validation also chooses each block's weight (group_scales, stored here), so a taste that
    # one statistic carries is found from a few dozen ratings
    groups: list[int] | None = None
    group_scales: list[float] | None = None

    def __post_init__(self):
        if self.in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {self.in_features}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        if self.groups is not None and (sum(self.groups) != self.in_features or min(self.groups) < 1):
            raise ValueError(f"groups {self.groups} must be positive widths summing to in_features={self.in_features}")


class RewardModel(nn.Module):
    config_class = RewardConfig

    def __init__(self, config: RewardConfig):
        super().__init__()
        self.config = config
        c = config
        # Standardisation lives in the model: features and ratings are scaled by the statistics of the
        # training split, and the prediction comes back in rating units.
        self.register_buffer("feature_mean", torch.zeros(c.in_features))
        self.register_buffer("feature_std", torch.ones(c.in_features))
        self.register_buffer("rating_mean", torch.zeros(()))
        self.register_buffer("rating_std", torch.ones(()))
        # the linear read-out's posterior covariance (Bayesian ridge, standardised units) and the
        # standardised features' mean over the fitted rows: `uncertainty` reads them
        self.register_buffer("feature_scale", torch.ones(c.in_features))  # each group's weight (RewardConfig.groups)
        self.register_buffer("posterior_cov", torch.zeros(c.in_features, c.in_features))
        self.register_buffer("fitted_mean", torch.zeros(c.in_features))
        # The linear read-out carries a preference that is (nearly) linear in the features, the common
        # case, with few ratings; the MLP adds what is not.
        self.linear = nn.Linear(c.in_features, 1)
        self.mlp = (
            nn.Sequential(nn.Linear(c.in_features, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))
            if c.hidden
            else None
        )

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.feature_mean) / self.feature_std
        z = z.clamp(-self.config.clip, self.config.clip) if self.config.clip > 0 else z
        return z * self.feature_scale

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features -> standardised rating."""
        out = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return out.squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N,) predicted ratings."""
        if features.ndim != 2 or features.shape[1] != self.config.in_features:
            raise ValueError(f"expected features shaped (N, {self.config.in_features}), got {tuple(features.shape)}")
        return self._raw(self.standardise(features.float())) * self.rating_std + self.rating_mean

    @torch.no_grad()
    def uncertainty(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) the standard deviation of each predicted rating, in rating units: how unsure the linear read-out
        is about a sample (Bayesian ridge: sqrt(x' S x) with S the weights' posterior covariance). High for a
        sample unlike the rated ones; what exploration shows people next."""
        z = self.standardise(features.to(self.feature_mean.device).float()) - self.fitted_mean
        var = ((z @ self.posterior_cov) * z).sum(1).clamp_min(0.0)
        return (var.sqrt() * self.rating_std).cpu()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a model file from before the uncertainty was kept: zero uncertainty, every other figure exact
        for name in ("posterior_cov", "fitted_mean"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        state_dict.setdefault(prefix + "feature_scale", torch.ones_like(self.feature_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted ratings in eval mode (no dropout), on the CPU."""
        was_training = self.training
        self.eval()
        try:
            return self(features.to(self.feature_mean.device)).cpu()
        finally:
            self.train(was_training)


@dataclass
class RewardReport:
    """How well a fitted reward model orders ratings it was not fitted on, and whether it may be used.

    The figures are cross-validated: `folds`-fold, repeated `repeats` times on reshuffled rows; every rating
    is predicted by a model that never saw it (the penalty chosen inside each fold, as for the final
    model), and the final model is fitted on all ratings. `cv_spearman` is the rank correlation between
    those out-of-fold predictions and the ratings (averaged over the repeats); the band is its
    `confidence` interval (Fisher's z with Bonett and Wright's variance for Spearman's rho). The model
    `predicts` when the band's low end reaches `min_rank_correlation`: then ranking by it agrees with the
    people with that confidence. When it does not, `ratings_needed` is about how many ratings in all would
    bring the band's low end to the bar if the agreement stayed as measured (or, when none is measured
    yet, for a modest taste of rho = 0.3); `verdict` says it in a sentence.
    """

    n: int
    folds: int
    repeats: int
    cv_pearson: float
    cv_spearman: float
    cv_spearman_low: float
    cv_spearman_high: float
    cv_mae: float
    cv_mae_baseline: float  # MAE of always predicting the mean training rating: the bar to beat
    train_pearson: float
    l2: float  # the ridge penalty the final model was fitted with (RewardConfig.l2): the CV's choice when hidden = 0
    min_rank_correlation: float
    confidence: float
    predicts: bool
    ratings_needed: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ASSUMED_TASTE = 0.3  # the agreement `ratings_needed` assumes when the ratings so far show none


def rank_correlation_band(rho: float, n: int, confidence: float) -> tuple[float, float]:
    """The `confidence` interval of a Spearman correlation `rho` measured on n pairs: Fisher's z transform
    with Bonett and Wright's (2000) variance (1 + rho^2 / 2) / (n - 3). NaN when n < 4 or rho is NaN."""
    if n < 4 or not math.isfinite(rho):
        return math.nan, math.nan
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt((1 + rho * rho / 2) / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def ratings_needed_for(rho: float, bar: float, confidence: float) -> int:
    """About how many ratings make the band of an agreement `rho` start at `bar` (rho <= bar: ASSUMED_TASTE)."""
    rho = rho if math.isfinite(rho) and rho > bar + 0.05 else max(ASSUMED_TASTE, bar + 0.1)
    q = NormalDist().inv_cdf(0.5 + confidence / 2)
    gap = math.atanh(min(rho, 0.999)) - math.atanh(bar)
    return int(math.ceil(3 + (1 + rho * rho / 2) * (q / gap) ** 2))


def _verdict(report_n: int, rho: float, low: float, high: float, bar: float, needed: int, constant: bool) -> str:
    if constant:
        return (f"all {report_n} ratings are equal: there is no preference to learn yet; about {needed} ratings "
                f"that differ are needed")
    band = f"rank correlation with held-out ratings {rho:+.2f} ({low:+.2f} to {high:+.2f})"
    if low >= bar:
        return f"predicts: {band}, at or above the bar {bar:g}, on {report_n} ratings"
    if needed > report_n and math.isfinite(rho) and rho > bar + 0.05:
        return (f"does not predict yet: {band}, below the bar {bar:g} on {report_n} ratings; the previous ranking "
                f"stays. About {needed - report_n} more ratings are needed (about {needed} in all)")
    if needed > report_n:
        return (f"does not predict: {band}, below the bar {bar:g} on {report_n} ratings; the previous ranking "
                f"stays. If the ratings carry a modest taste (rank correlation {ASSUMED_TASTE}), about "
                f"{needed - report_n} more would show it (about {needed} in all)")
    return (f"does not predict: {band}, below the bar {bar:g} on {report_n} ratings, enough to show a modest "
            f"taste (rank correlation {ASSUMED_TASTE}) if there were one; the previous ranking stays. The ratings "
            f"may not follow what the features see, or the raters disagree: more of the same ratings are unlikely "
            f"to help")


def _check_fit_inputs(features: Any, ratings: Any) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.as_tensor(features)
    ratings = torch.as_tensor(ratings)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if ratings.ndim != 1 or len(ratings) != len(features):
        raise ValueError(
            f"ratings must be (N,) with N = {len(features)} (one per feature row), got shape {tuple(ratings.shape)}"
        )
    features, ratings = features.double(), ratings.double()
    bad_rows = (~torch.isfinite(features)).any(1).nonzero().flatten().tolist()
    if bad_rows:
        raise ValueError(f"features hold NaN or inf in row(s) {bad_rows[:10]}{' ...' if len(bad_rows) > 10 else ''}")
    bad_ratings = (~torch.isfinite(ratings)).nonzero().flatten().tolist()
    if bad_ratings:
        more = " ..." if len(bad_ratings) > 10 else ""
        raise ValueError(f"ratings hold NaN or inf at row(s) {bad_ratings[:10]}{more}")
    return features.float(), ratings.float()


def _check_weights(weights: Any, n: int) -> torch.Tensor:
    """Per-row weights as a float64 (N,) tensor; a ValueError naming the problem otherwise."""
    w = torch.as_tensor(weights)
    if w.ndim != 1 or len(w) != n:
        raise ValueError(f"weights must be (N,) with N = {n} (one per rating), got shape {tuple(w.shape)}")
    if w.dtype == torch.bool or w.is_complex():
        raise ValueError(f"weights must be real numbers, got {w.dtype}")
    w = w.double()
    bad = (~torch.isfinite(w)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"weights hold NaN or inf at row(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}")
    negative = (w < 0).nonzero().flatten().tolist()
    if negative:
        raise ValueError(f"weights must be >= 0, got negative ones at row(s) {negative[:10]}"
                         f"{' ...' if len(negative) > 10 else ''}")
    return w


def effective_count(weights: torch.Tensor | None, n: int) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (n without weights): how many equally weighted
    rows the weighted ones are worth to an estimate; the cross-validated band's n."""
    if weights is None:
        return float(n)
    return float(weights.sum() ** 2 / weights.square().sum())


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean(0)
    p = (weights / weights.sum()).to(values.dtype)
    return (p.reshape(-1, *([1] * (values.ndim - 1))) * values).sum(0)


def _weighted_std(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The population standard deviation (what repeating each row `weight` times gives)."""
    if weights is None:
        return values.std(0, unbiased=False)
    return _weighted_mean((values - _weighted_mean(values, weights)).square(), weights).sqrt()


def _correlations(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[float, float]:
    """(Pearson, Spearman); NaN when either side is constant (no ordering to agree with). With weights: the
    weighted Pearson correlation, and for Spearman the weighted Pearson correlation of the (average) ranks."""
    if len(pred) < 2 or float(pred.std()) == 0.0 or float(target.std()) == 0.0:
        return math.nan, math.nan
    pred, target = pred.double(), target.double()
    if weights is None:
        return float(pearson_corrcoef(pred, target)), float(spearman_corrcoef(pred, target))
    ranks = [torch.from_numpy(rankdata(v.numpy())).double() for v in (pred, target)]
    return _weighted_pearson(pred, target, weights), _weighted_pearson(*ranks, weights)


def _weighted_pearson(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> float:
    a, b = a - _weighted_mean(a, weights), b - _weighted_mean(b, weights)
    denominator = float((_weighted_mean(a * a, weights) * _weighted_mean(b * b, weights)).sqrt())
    return float(_weighted_mean(a * b, weights)) / denominator if denominator > 0 else math.nan


def _fit(x: torch.Tensor, y: torch.Tensor, cfg: RewardConfig, choose_l2: bool, seed: int,
         w: torch.Tensor | None = None) -> RewardModel:
    """A reward model fitted on (x, y): standardisation from these rows, then the ridge (or the MLP). With
    weights `w`, every statistic and loss is weighted, so an integer weight is that many copies of the row."""
    cfg = dataclasses.replace(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights and dropout masks: one seed, one model
        model = RewardModel(cfg)
        std = _weighted_std(x, w)
        model.feature_mean.copy_(_weighted_mean(x, w))
        # a constant feature carries nothing; scale 1 keeps it at 0 instead of dividing by zero
        model.feature_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        r_std = float(_weighted_std(y, w))
        model.rating_mean.fill_(float(_weighted_mean(y, w)))
        model.rating_std.fill_(r_std if r_std > 1e-8 else 1.0)
        ys = (y - model.rating_mean) / model.rating_std
        if cfg.groups is not None and len(cfg.groups) > 1 and cfg.hidden == 0 and choose_l2:
            cfg.group_scales = _choose_group_scales(model.standardise(x), ys, cfg.groups, w)
        if cfg.group_scales is not None:
            model.feature_scale.copy_(torch.repeat_interleave(torch.tensor(cfg.group_scales), torch.tensor(cfg.groups)))
        xs = model.standardise(x)
        if cfg.hidden == 0:
            cfg.l2 = _fit_ridge(model.linear, xs, ys, None if choose_l2 else cfg.l2, w)
        else:
            _fit_mlp(model, xs, ys, w)
    return model.eval()


def fit_reward(
    features: torch.Tensor,
    ratings: torch.Tensor,
    *,
    seed: int,
    folds: int = 5,
    repeats: int | None = None,
    min_rank_correlation: float = 0.1,
    confidence: float = 0.9,
    weights: Any = None,
    **config: Any,
) -> tuple[RewardModel, RewardReport]:
    """Fit a reward model on (N, D) features and (N,) ratings; cross-validate it; say whether it predicts.

    The returned model is fitted on every rating; the report's figures come from `folds`-fold
    cross-validation repeated `repeats` times (None: 3 below 200 ratings, else 1) on rows shuffled with
    `seed`, so that 30 ratings give an estimate, not the luck of six held-out ones. `config` overrides
    RewardConfig's defaults (hidden, dropout, lr, l2, steps). The model `predicts` (RewardReport) when
    the low end of the `confidence` band of the cross-validated rank correlation reaches
    `min_rank_correlation`; callers use it only then.

    hidden = 0 (the default) is a ridge regression, solved exactly: scikit-learn's RidgeCV tries every
    penalty of L2_GRID with efficient leave-one-out cross-validation on the training rows (one
    decomposition of the data serves all of them) and refits at the best, unless `l2` is given. The
    penalty matters more than the solver: with a few dozen ratings per feature a fixed one either
    lets the model fit the raters' noise or flattens a clear taste. With hidden > 0 training is plain
    full-batch AdamW on the mean squared error in standardised units plus the ridge penalty at `l2`:
    a few hundred rows of a few dozen features take well under a second, and Lightning's machinery
    would cost more than the fit.

    `weights` (N,), non-negative: how much each row counts (e.g. a click label less than a rating). The
    fit minimises the weighted mean squared error (standardisation, the penalty's scale, the group and
    penalty choices weighted alike), so an integer weight k is the row repeated k times, and the ridge is
    still solved exactly (scikit-learn's sample_weight). A row of weight 0 is left out, as if not given,
    and equal weights are no weights. The cross-validation fits each fold with its rows' weights and
    weighs the held-out errors and correlations (Spearman: of the ranks) by them; its band takes Kish's
    effective number of rows, (sum w)^2 / sum w^2, for n. None (the default): every row counts once.
    """
    features, ratings = _check_fit_inputs(features, ratings)
    w = None if weights is None else _check_weights(weights, len(features))
    if w is not None:
        keep = w > 0
        if not bool(keep.any()):
            raise ValueError("weights are all 0: no row to fit")
        features, ratings, w = features[keep], ratings[keep], w[keep]
        if bool((w == w[0]).all()):
            w = None  # equal weights: the same fit as none
    n = len(features)
    if n < 4:
        raise ValueError(f"need at least 4 rated samples to fit and cross-validate a reward model, got {n}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    folds = min(folds, n)
    repeats = (3 if n < 200 else 1) if repeats is None else repeats
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    cfg = RewardConfig(in_features=features.shape[1], **config)
    choose_l2 = cfg.hidden == 0 and "l2" not in config
    model = _fit(features, ratings, cfg, choose_l2, seed, w)
    train_pearson, _ = _correlations(model.predict(features), ratings, w)

    g = torch.Generator().manual_seed(seed)
    pearsons, spearmans, maes, baselines, sq_errors = [], [], [], [], []
    for _ in range(repeats):
        order = torch.randperm(n, generator=g)
        oof, base = torch.empty(n), torch.empty(n)
        for k in range(folds):
            held = order[k::folds]
            keep = torch.ones(n, dtype=torch.bool)
            keep[held] = False
            fold_w = None if w is None else w[keep]
            fold_model = _fit(features[keep], ratings[keep], cfg, choose_l2, seed, fold_w)
            oof[held] = fold_model.predict(features[held])
            if fold_w is None:
                base[held] = ratings[keep].mean()
            else:
                base[held] = float(_weighted_mean(ratings[keep].double(), fold_w))
        # correlated as offsets from each fold's mean training rating: a fold that holds out high ratings
        # trains on a lower mean, so the raw out-of-fold predictions of a model that learnt nothing
        # anti-correlate with the ratings; the offsets are what the model says about each sample
        p, s = _correlations(oof - base, ratings, w)
        pearsons.append(p)
        spearmans.append(s)
        if w is None:
            maes.append(float((oof - ratings).abs().mean()))
            sq_errors.append(float((oof - ratings).square().mean()))
            baselines.append(float((base - ratings).abs().mean()))
        else:
            maes.append(float(_weighted_mean((oof - ratings).abs().double(), w)))
            sq_errors.append(float(_weighted_mean((oof - ratings).square().double(), w)))
            baselines.append(float(_weighted_mean((base - ratings).abs().double(), w)))
    # the noise the uncertainty assumes is the out-of-fold error, not the training residual: with fewer
    # ratings than features the ridge may fit every training rating exactly
    cv_mse = float(np.mean(sq_errors)) / float(model.rating_std) ** 2
    _fit_uncertainty(model, model.standardise(features), cv_mse, w)
    rho = float(np.mean(spearmans))  # NaN when a repeat's predictions or the ratings are constant
    low, high = rank_correlation_band(rho, effective_count(w, n), confidence)
    predicts = math.isfinite(low) and low >= min_rank_correlation
    needed = n if predicts else ratings_needed_for(rho, min_rank_correlation, confidence)
    constant = float(ratings.std()) == 0.0
    report = RewardReport(
        n=n, folds=folds, repeats=repeats, cv_pearson=float(np.mean(pearsons)), cv_spearman=rho,
        cv_spearman_low=low, cv_spearman_high=high, cv_mae=float(np.mean(maes)),
        cv_mae_baseline=float(np.mean(baselines)), train_pearson=train_pearson, l2=model.config.l2,
        min_rank_correlation=min_rank_correlation, confidence=confidence, predicts=predicts,
        ratings_needed=needed,
        verdict=_verdict(n, rho, low, high, min_rank_correlation, needed, constant),
    )
    return model, report


# the penalties the cross-validation chooses from, in RewardConfig.l2's units: half-decade steps from
# next to no shrinkage to ~1000 times the data's own weight, where every weight is practically zero
L2_GRID = tuple(float(v) for v in np.logspace(-5, 3, 17))


GROUP_FACTORS = (0.0, 0.1, 0.3)  # a block's weight relative to the others' that the group CV tries, beside 1


def _choose_group_scales(xs: torch.Tensor, ys: torch.Tensor, groups: Sequence[int],
                         w: torch.Tensor | None = None) -> list[float]:
    """Each feature block's weight: of all weights 1 and one block at a time down-weighted by GROUP_FACTORS,
    the one whose ridge (its penalty chosen among L2_GRID) has the least leave-one-out error (weighted by
    the rows' weights `w`, when given)."""
    n = len(xs) if w is None else float(w.sum())
    x, y = xs.double().numpy(), ys.double().numpy()
    sample_weight = None if w is None else w.double().numpy()
    options = [[1.0] * len(groups)] + [[f if g == i else 1.0 for g in range(len(groups))]
                                       for i in range(len(groups)) for f in GROUP_FACTORS]
    best, best_score = options[0], -math.inf
    for scales in options:
        scaled = x * np.repeat(np.array(scales), groups)
        ridge = RidgeCV(alphas=n * np.array(L2_GRID), fit_intercept=True)
        score = float(ridge.fit(scaled, y, sample_weight=sample_weight).best_score_)
        if score > best_score + 1e-12:
            best, best_score = scales, score
    return best


@torch.no_grad()
def _fit_ridge(linear: nn.Linear, xs: torch.Tensor, ys: torch.Tensor, l2: float | None,
               w: torch.Tensor | None = None) -> float:
    """Solve min_w,b mean((xs w + b - ys)^2) + l2 |w|^2 into `linear`; l2 None: choose it from L2_GRID by
    leave-one-out CV. Returns the l2 used. With row weights `w` the mean is weighted: sum w_i e_i^2 / sum w.

    scikit-learn's penalty `alpha` weighs the squared error summed, not averaged: alpha = n * l2 (with
    weights, sum w * l2: its sample_weight multiplies each squared error, so the fit stays closed form and
    an integer weight is a repeated row). Its intercept is left unpenalised, as our bias is.
    """
    n = len(xs) if w is None else float(w.sum())
    x, y = xs.double().numpy(), ys.double().numpy()
    sample_weight = None if w is None else w.double().numpy()
    if l2 is None:
        # gcv_mode="auto": leave-one-out errors for every alpha from one SVD (or eigendecomposition)
        alphas = n * np.array(L2_GRID)
        ridge = RidgeCV(alphas=alphas, fit_intercept=True).fit(x, y, sample_weight=sample_weight)
        l2 = L2_GRID[int(np.argmin(np.abs(alphas - ridge.alpha_)))]
    else:
        ridge = Ridge(alpha=n * l2, fit_intercept=True).fit(x, y, sample_weight=sample_weight)
    linear.weight.copy_(torch.from_numpy(np.asarray(ridge.coef_, dtype=np.float64)).reshape(linear.weight.shape))
    linear.bias.fill_(float(ridge.intercept_))
    return l2


@torch.no_grad()
def _fit_uncertainty(model: RewardModel, xs: torch.Tensor, noise: float, w: torch.Tensor | None = None) -> None:
    """The linear read-out's posterior covariance: noise x (Xc'Xc + n l2 I)^-1 on the centred standardised
    features (the bias is not penalised, so centring takes it out); `noise` the variance of a rating
    around the prediction, in standardised units. With row weights: Xc'WXc and sum w for n."""
    n, d = xs.shape
    mean = _weighted_mean(xs.double(), w)
    xc = xs.double() - mean
    if w is None:
        precision = xc.T @ xc + max(n * model.config.l2, 1e-6) * torch.eye(d, dtype=torch.float64)
    else:
        precision = (xc * w[:, None]).T @ xc + max(float(w.sum()) * model.config.l2, 1e-6) * torch.eye(
            d, dtype=torch.float64)
    model.posterior_cov.copy_((noise * torch.linalg.inv(precision)).float())
    model.fitted_mean.copy_(mean.float())


def _fit_mlp(model: RewardModel, xs: torch.Tensor, ys: torch.Tensor, w: torch.Tensor | None = None) -> None:
    """Full-batch AdamW on the (row-weighted, with `w`) mean squared error plus the ridge penalty on every
    weight matrix."""
    cfg = model.config
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    share = None if w is None else (w / w.sum()).float()
    model.train()
    for _ in range(cfg.steps):
        error = F.mse_loss(model._raw(xs), ys) if share is None else (share * (model._raw(xs) - ys).square()).sum()
        loss = error + cfg.l2 * sum(m.square().sum() for m in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ---- features -----------------------------------------------------------------------------------------


def pixel_statistics(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 7): the statistics of IMAGE_STAT_NAMES, on the channel mean.

    ink: mean intensity; coverage: share of pixels above 0.5; contrast: pixel standard deviation;
    sharpness: mean absolute difference between neighbouring pixels; center_y / center_x: the
    intensity-weighted centre of mass in [0, 1] (0.5 for a blank image); spread: the intensity-weighted
    distance from that centre (root mean square, in image widths; 0 for a blank image): how large the
    drawn figure is.
    """
    grey = images.float().mean(1)
    n, h, w = grey.shape
    flat = grey.flatten(1)
    ink = flat.mean(1)
    coverage = (flat > 0.5).float().mean(1)
    contrast = flat.std(1, unbiased=False)
    dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs().flatten(1)
    dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs().flatten(1)
    sharpness = torch.cat([dy, dx], dim=1).mean(1) if dy.shape[1] + dx.shape[1] else torch.zeros(n)
    mass = flat.sum(1)
    ys = torch.linspace(0, 1, h, device=grey.device) if h > 1 else torch.full((1,), 0.5, device=grey.device)
    xs = torch.linspace(0, 1, w, device=grey.device) if w > 1 else torch.full((1,), 0.5, device=grey.device)
    safe = mass.clamp_min(1e-8)
    center_y = torch.where(mass > 1e-8, (grey.sum(2) * ys).sum(1) / safe, torch.full_like(mass, 0.5))
    center_x = torch.where(mass > 1e-8, (grey.sum(1) * xs).sum(1) / safe, torch.full_like(mass, 0.5))
    dy2 = (grey.sum(2) * (ys[None, :] - center_y[:, None]) ** 2).sum(1)
    dx2 = (grey.sum(1) * (xs[None, :] - center_x[:, None]) ** 2).sum(1)
    spread = torch.where(mass > 1e-8, ((dy2 + dx2) / safe).clamp_min(0).sqrt(), torch.zeros_like(mass))
    return torch.stack([ink, coverage, contrast, sharpness, center_y, center_x, spread], dim=1)


def category_statistics(stats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, S) statistics and (N,) category indices -> (N, num_classes * S): each sample's statistics in its
    category's slot, zeros elsewhere. A linear read-out of them learns a taste per category ("bold 3s,
    thin 7s"), which the statistics alone, one weight each for every category, cannot."""
    labels = torch.as_tensor(labels).long().to(stats.device)
    if labels.shape != (len(stats),):
        raise ValueError(f"expected {len(stats)} category indices, got shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"category indices must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    onehot = F.one_hot(labels, num_classes).to(stats.dtype)
    return (onehot[:, :, None] * stats[:, None, :]).flatten(1)


def image_feature_groups(evaluator: nn.Module, *, by_category: bool = True) -> list[int]:
    """The widths of image_features' blocks (RewardConfig.groups): learned features, pixel statistics and,
    with categories, the per-category statistics."""
    c = evaluator.config
    groups = [int(c.num_features), len(IMAGE_STAT_NAMES)]
    return groups + [int(c.num_classes) * len(IMAGE_STAT_NAMES)] if by_category else groups


@torch.no_grad()
def image_features(evaluator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                   batch_size: int = 1024) -> torch.Tensor:
    """(N, C, H, W) float images in [0, 1] -> (N, num_features + 7 [+ num_classes * 7]) float32 on the CPU.

    The evaluator's penultimate features, then `pixel_statistics` (see the module doc for why both), then,
    when the categories the images were made for are given (`labels`, indices), `category_statistics`.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = getattr(images, "shape", type(images))
        raise ValueError(f"images must be a float tensor N x C x H x W in [0, 1], got {got}")
    if len(images) and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got [{float(images.min()):.3g}, {float(images.max()):.3g}]")
    device = next(evaluator.parameters()).device
    was_training = evaluator.training
    evaluator.eval()
    try:
        feats = [
            evaluator.features(chunk.to(device, torch.float32)).float().cpu() for chunk in images.split(batch_size)
        ]
    finally:
        evaluator.train(was_training)
    width = int(evaluator.config.num_features)
    learned = torch.cat(feats) if feats else torch.zeros(0, width)
    stats = pixel_statistics(images.cpu())
    if labels is None:
        return torch.cat([learned, stats], dim=1)
    return torch.cat([learned, stats, category_statistics(stats, labels, int(evaluator.config.num_classes))], dim=1)


_WORDS = re.compile(r"\w+")


def text_statistics(texts: Sequence[str]) -> torch.Tensor:
    """(N, 9): the statistics of TEXT_STAT_NAMES. Rates are per character, so length stays its own feature."""
    rows = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i}: expected a str, got {type(t).__name__}")
        n = max(len(t), 1)
        words = _WORDS.findall(t)
        letters = [c for c in t if c.isalpha()]
        rows.append(
            [
                math.log1p(len(t)),
                t.count("?") / n,
                t.count("!") / n,
                t.count(",") / n,
                t.count(".") / n,
                (t.count("\n") + 1) / n if t else 0.0,
                sum(map(len, words)) / len(words) if words else 0.0,
                sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
                len({w.lower() for w in words}) / len(words) if words else 0.0,
            ]
        )
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(TEXT_STAT_NAMES))


WORD_BUCKETS = 256


def word_features(texts: Sequence[str], buckets: int = WORD_BUCKETS) -> torch.Tensor:
    """(N, buckets): which words a text uses (lower-cased, each word hashed to a bucket, 1 when present).

    Vocabulary is a taste of its own ("new", "easy", a brand's word): a handful of words moves a mean of
    hidden states too little for a few dozen ratings to find, and one bucket per word makes it one
    feature. Hashing (crc32, stable across runs and machines) needs no fitted vocabulary, so the features
    of a text never change with the batch it comes in."""
    out = torch.zeros(len(texts), buckets)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i}: expected a str, got {type(t).__name__}")
        for w in {w.lower() for w in _WORDS.findall(t)}:
            out[i, zlib.crc32(w.encode()) % buckets] = 1.0
    return out


def text_feature_groups(width: int) -> list[int]:
    """The widths of writer_features' blocks (RewardConfig.groups) for features `width` wide: statistics,
    words, hidden states."""
    return [len(TEXT_STAT_NAMES), WORD_BUCKETS, width - len(TEXT_STAT_NAMES) - WORD_BUCKETS]


def gpt_hidden_states(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids -> (B, T, n_embd): the GPT's final hidden states (after ln_f, before lm_head).

    GPT.forward returns logits only; this runs the same modules (nanoGPT's layout) and stops one step
    earlier. The positions start at 0, as for a document the model generates.
    """
    tr = model.transformer
    pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
    x = tr.drop(tr.wte(idx) + tr.wpe(pos))
    for block in tr.h:
        x = block(x)
    return tr.ln_f(x)


@torch.no_grad()
def text_features(
    texts: Sequence[str],
    model: nn.Module | None = None,
    tokenizer: Any | None = None,
    *,
    categories: Sequence[str] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, 9) surface statistics, or (N, 9 + n_embd) with the GPT's mean-pooled hidden states appended.

    Each text is encoded as the model saw its documents: `[category_id] + tokens` when `categories` are
    given, `[eos] + tokens` otherwise (eos ends the previous document, so the model reads a fresh
    start). A text longer than the block is cut into consecutive blocks, each read from position 0, and
    the mean is over every position of every block.
    """
    texts = list(texts)
    stats = text_statistics(texts)
    if model is None:
        return stats
    if tokenizer is None:
        raise ValueError("text_features: a model was given without its tokenizer")
    if categories is not None and len(categories) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(categories)} categories")
    block = int(model.config.block_size)
    if categories is None:
        heads = [tokenizer.eos_id] * len(texts)
    else:
        heads = [tokenizer.category_id(c) for c in categories]
    chunks: list[tuple[int, list[int]]] = []
    for i, (head, ids) in enumerate(zip(heads, tokenizer.encode_batch(texts))):
        ids = [head, *ids]
        chunks += [(i, ids[s : s + block]) for s in range(0, len(ids), block)]
    device = next(model.parameters()).device
    width = int(model.config.n_embd)
    sums = torch.zeros(len(texts), width, dtype=torch.float64)
    counts = torch.zeros(len(texts), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        # longest first: rows of similar length share a batch and little compute goes to padding
        chunks.sort(key=lambda c: -len(c[1]))
        for start in range(0, len(chunks), batch_size):
            part = chunks[start : start + batch_size]
            length = len(part[0][1])
            idx = torch.zeros(len(part), length, dtype=torch.long)
            mask = torch.zeros(len(part), length)
            for row, (_, ids) in enumerate(part):
                idx[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1.0
            # right padding is harmless: attention is causal, so no real position sees a pad
            hidden = gpt_hidden_states(model, idx.to(device)).float().cpu()
            owners = torch.tensor([i for i, _ in part])
            sums.index_add_(0, owners, (hidden * mask[..., None]).sum(1).double())
            counts.index_add_(0, owners, mask.sum(1).double())
    finally:
        model.train(was_training)
    pooled = (sums / counts.clamp_min(1.0)[:, None]).float()
    return torch.cat([stats, pooled], dim=1)


def writer_features(writer: Any, briefs: Sequence[tuple[str, str | None]], texts: Sequence[str]) -> torch.Tensor:
    """(N, 9 + 256 + hidden size): surface statistics, the words used and a text generator's pooled hidden
    states of each text read after its brief (models.text_generators.TextWriter.features): the reward
    model's text features for any generator, pretrained or from scratch (blocks: text_feature_groups)."""
    texts = list(texts)
    return torch.cat([text_statistics(texts), word_features(texts), writer.features(list(briefs), texts).float()],
                     dim=1)
