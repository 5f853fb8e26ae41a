import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gen_assets.models import checkpoint
from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.models.reward import (
    IMAGE_STAT_NAMES,
    L2_GRID,
    TEXT_STAT_NAMES,
    WORD_BUCKETS,
    RewardConfig,
    RewardModel,
    fit_reward,
    image_features,
    pixel_statistics,
    text_feature_groups,
    text_features,
    text_statistics,
    word_features,
)
from gen_assets.models.tokenizers import CharTokenizer


def planted(n: int = 500, d: int = 16, noise: float = 0.3, seed: int = 0):
    """Features on very different scales and a rating that is linear in two of them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.logspace(-2, 2, d)
    z = x / torch.logspace(-2, 2, d)
    ratings = 3.0 + z[:, 0] - 0.5 * z[:, 5] + noise * torch.randn(n, generator=g)
    return x, ratings


def test_learns_a_planted_preference_on_held_out_ratings():
    x, ratings = planted()
    model, report = fit_reward(x, ratings, seed=0)
    assert report.n == 500 and report.folds == 5 and report.repeats == 1
    assert report.cv_pearson > 0.9 and report.cv_spearman > 0.9
    assert report.cv_spearman_low < report.cv_spearman < report.cv_spearman_high
    assert report.cv_mae < 0.5 * report.cv_mae_baseline
    assert report.predicts and report.verdict.startswith("predicts")
    # predictions come back in rating units, not standardised ones
    pred = model.predict(x)
    assert abs(float(pred.mean()) - float(ratings.mean())) < 0.1
    # and the fit is reproducible for a seed
    _, again = fit_reward(x, ratings, seed=0)
    assert again == report


def test_the_mlp_learns_what_a_linear_model_cannot():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(800, 4, generator=g)
    ratings = x[:, 0].square() + 0.1 * torch.randn(800, generator=g)  # a taste for extremes
    _, linear = fit_reward(x, ratings, seed=0, hidden=0)
    _, mlp = fit_reward(x, ratings, seed=0, hidden=32)
    assert linear.cv_mae > 0.9 * linear.cv_mae_baseline  # hardly better than a constant guess
    assert mlp.cv_pearson > 0.8 and mlp.cv_mae < 0.5 * mlp.cv_mae_baseline


def test_save_load_round_trip_keeps_the_normalisation(tmp_path, monkeypatch):
    monkeypatch.setitem(checkpoint.ARCHS, "reward", "gen_assets.models.reward:RewardModel")
    x, ratings = planted(n=100)
    model, _ = fit_reward(x, ratings, seed=0, hidden=8)
    assert float(model.feature_std.min()) < 0.1 and float(model.rating_mean) > 2  # real statistics, not 0/1
    save_model(tmp_path / "reward.pt", "reward", model, extra={"features": "synthetic"})
    loaded = load_model(tmp_path / "reward.pt")
    assert isinstance(loaded, RewardModel) and loaded.config == model.config
    assert loaded.extra == {"features": "synthetic"}
    torch.testing.assert_close(loaded.predict(x), model.predict(x))


def test_bad_inputs_are_named():
    x, ratings = planted(n=20)
    with pytest.raises(ValueError, match=r"ratings must be \(N,\) with N = 20"):
        fit_reward(x, ratings[:-1], seed=0)
    bad = x.clone()
    bad[7, 2] = math.nan
    with pytest.raises(ValueError, match=r"row\(s\) \[7\]"):
        fit_reward(bad, ratings, seed=0)
    r = ratings.clone()
    r[3] = math.inf
    with pytest.raises(ValueError, match=r"ratings hold NaN or inf at row\(s\) \[3\]"):
        fit_reward(x, r, seed=0)
    with pytest.raises(ValueError, match="at least"):
        fit_reward(x[:3], ratings[:3], seed=0)
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        RewardModel(RewardConfig(16))(torch.zeros(2, 3))


def test_constant_ratings_give_nan_correlation_not_a_crash():
    x, _ = planted(n=40)
    model, report = fit_reward(x, torch.full((40,), 4.0), seed=0)
    assert math.isnan(report.cv_pearson) and not report.predicts
    assert "all 40 ratings are equal" in report.verdict
    torch.testing.assert_close(model.predict(x), torch.full((40,), 4.0), atol=0.02, rtol=0)


# ---- image features -----------------------------------------------------------------------------------


def test_pixel_statistics_on_known_images():
    blank = torch.zeros(1, 1, 8, 8)
    full = torch.ones(1, 1, 8, 8)
    left = torch.zeros(1, 1, 8, 8)
    left[..., :, 0] = 1.0  # one bright column on the left edge
    stats = pixel_statistics(torch.cat([blank, full, left]))
    s = dict(zip(IMAGE_STAT_NAMES, stats.T))
    torch.testing.assert_close(s["ink"], torch.tensor([0.0, 1.0, 1 / 8]))
    torch.testing.assert_close(s["coverage"], torch.tensor([0.0, 1.0, 1 / 8]))
    torch.testing.assert_close(s["center_x"], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(s["center_y"], torch.tensor([0.5, 0.5, 0.5]))
    assert s["sharpness"][0] == 0 and s["sharpness"][1] == 0 and s["sharpness"][2] > 0
    # spread: 0 for a blank image; a single column sits closer to its centre than a full image's pixels do
    assert s["spread"][0] == 0 and 0 < s["spread"][2] < s["spread"][1]


def test_a_taste_per_category_needs_the_per_category_statistics():
    """Ratings that like ink in categories 0-4 and dislike it in 5-9: one ink weight for all categories
    cannot learn it; the per-category statistics can."""
    from gen_assets.models.reward import category_statistics, image_feature_groups

    d = load_digits()
    images = torch.from_numpy(d.images[:800] / 16.0).float()[:, None]
    labels = torch.from_numpy(d.target[:800])
    torch.manual_seed(0)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    ink = images.mean(dim=(1, 2, 3))
    sign = torch.where(labels < 5, 1.0, -1.0)
    ratings = 3 + sign * (ink - ink.mean()) / ink.std() + 0.3 * torch.randn(800, generator=torch.Generator().manual_seed(0))
    plain, with_labels = image_features(evaluator, images), image_features(evaluator, images, labels)
    groups = image_feature_groups(evaluator)
    assert with_labels.shape[1] == sum(groups) == plain.shape[1] + 10 * len(IMAGE_STAT_NAMES)
    stats = pixel_statistics(images)
    torch.testing.assert_close(with_labels[:, plain.shape[1]:], category_statistics(stats, labels, 10))
    row = category_statistics(stats[:1], labels[:1], 10).view(10, -1)
    assert row[int(labels[0])].abs().sum() > 0 and row.abs().sum() == row[int(labels[0])].abs().sum()

    def within_category_rho(model, feats):
        pred = model.predict(feats)
        return float(np.mean([np.corrcoef(pred[labels == c], ratings[labels == c])[0, 1] for c in range(10)]))

    without, _ = fit_reward(plain, ratings, seed=0, groups=image_feature_groups(evaluator, by_category=False))
    model, _ = fit_reward(with_labels, ratings, seed=0, groups=groups)
    with_rho, without_rho = within_category_rho(model, with_labels), within_category_rho(without, plain)
    assert with_rho > 0.7 and with_rho > without_rho + 0.2, (with_rho, without_rho)
    with pytest.raises(ValueError, match="category indices"):
        category_statistics(stats, labels + 5, 10)


def test_a_taste_for_ink_is_learnable_from_image_features():
    d = load_digits()
    images = torch.from_numpy(d.images[:600] / 16.0).float()[:, None]
    torch.manual_seed(0)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10))  # untrained: the pixel statistics carry the taste
    feats = image_features(evaluator, images)
    assert feats.shape == (600, evaluator.config.num_features + len(IMAGE_STAT_NAMES))
    g = torch.Generator().manual_seed(0)
    ink = images.mean(dim=(1, 2, 3))
    ratings = 1 + 4 * (ink - ink.min()) / (ink.max() - ink.min()) + 0.2 * torch.randn(600, generator=g)
    _, report = fit_reward(feats, ratings, seed=0)
    assert report.cv_pearson > 0.85
    assert evaluator.training, "image_features leaves the evaluator's mode as it found it"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_features(evaluator, images * 2)


# ---- text features ------------------------------------------------------------------------------------


def test_text_statistics():
    feats = text_features(["Who is there? Stand!", "", "a b\nc d."])
    s = dict(zip(TEXT_STAT_NAMES, feats.T))
    assert feats.shape == (3, len(TEXT_STAT_NAMES))
    assert s["question_rate"][0] == pytest.approx(1 / 20) and s["exclamation_rate"][0] == pytest.approx(1 / 20)
    assert s["question_rate"][1] == 0 and s["log_chars"][1] == 0
    assert s["line_rate"][2] == pytest.approx(2 / 8) and s["mean_word_length"][2] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="text 1"):
        text_features(["ok", None])


def test_gpt_hidden_states_are_pooled_per_text_whatever_the_batch():
    texts = ["to be or not to be?", "a much longer line that runs past the block of sixteen tokens, twice over", "x"]
    tokenizer = CharTokenizer.train(texts, categories=["a", "b"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    feats = text_features(texts, model, tokenizer)
    assert feats.shape == (3, len(TEXT_STAT_NAMES) + 8)
    # padding and batching do not leak between texts
    for i, t in enumerate(texts):
        torch.testing.assert_close(text_features([t], model, tokenizer)[0], feats[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_features(texts, model, tokenizer, batch_size=1), feats, atol=1e-5, rtol=1e-5)
    # the category token conditions the hidden states
    conditioned = text_features(texts[:1], model, tokenizer, categories=["a"])
    assert not torch.allclose(conditioned[0, len(TEXT_STAT_NAMES):], feats[0, len(TEXT_STAT_NAMES):])
    with pytest.raises(ValueError, match="without its tokenizer"):
        text_features(texts, model)
    np.testing.assert_array_equal(feats[:, : len(TEXT_STAT_NAMES)].numpy(), text_features(texts).numpy())


# ---- the ridge (hidden = 0): closed form, penalty by cross-validation ---------------------------------


def standardised(x: torch.Tensor, clip: float = 5.0) -> np.ndarray:
    """The model's own input transform, redone by hand: z-scores by the training rows' statistics, clipped."""
    std = x.std(0, unbiased=False)
    z = (x - x.mean(0)) / torch.where(std > 1e-8, std, torch.ones_like(std))
    return z.clamp(-clip, clip).double().numpy()


def test_the_ridge_is_sklearns_ridge_at_the_penalty_leave_one_out_prefers():
    from sklearn.linear_model import Ridge

    x, ratings = planted(n=60, d=8, noise=1.0)
    model, report = fit_reward(x, ratings, seed=0)  # the model is fitted on every row
    assert report.l2 in L2_GRID and model.config.l2 == report.l2
    # sklearn's alpha weighs the summed squared error, ours the mean one
    z, r = standardised(x), ratings.double().numpy()
    expected = Ridge(alpha=len(x) * report.l2).fit(z, r).predict(z)
    np.testing.assert_allclose(model.predict(x).double().numpy(), expected, rtol=1e-5, atol=1e-5)

    # the penalty is the one with the least leave-one-out error, found by refitting without each row in turn
    # (standardised once, as the CV does)
    def loo_error(l2: float) -> float:
        errors = []
        for i in range(len(z)):
            keep = np.arange(len(z)) != i
            fitted = Ridge(alpha=(len(z) - 1) * l2).fit(z[keep], r[keep])
            errors.append(float(fitted.predict(z[i : i + 1])[0] - r[i]) ** 2)
        return float(np.mean(errors))

    errors = {l2: loo_error(l2) for l2 in L2_GRID}
    assert report.l2 == min(errors, key=errors.get)


def test_the_cross_validation_shrinks_more_on_noise_than_on_a_clean_taste():
    x, clean = planted(n=200, d=16, noise=0.1)
    noise = torch.randn(200, generator=torch.Generator().manual_seed(5))
    _, on_taste = fit_reward(x, clean, seed=0)
    model, on_noise = fit_reward(x, noise, seed=0)
    assert on_noise.l2 >= 100 * on_taste.l2
    assert on_taste.cv_pearson > 0.95
    # ratings that carry no taste leave the model close to the mean rating, not fitted to the noise
    assert float(model.predict(x).std()) < 0.2 * float(noise.std())
    # a penalty that is given is used as it is
    _, fixed = fit_reward(x, noise, seed=0, l2=1e-3)
    assert fixed.l2 == 1e-3


def test_save_load_round_trip_of_the_ridge_keeps_its_penalty(tmp_path):
    x, ratings = planted(n=100)
    model, report = fit_reward(x, ratings, seed=0)
    assert model.mlp is None and float(model.linear.weight.detach().abs().max()) > 0.1
    save_model(tmp_path / "reward.pt", "reward", model)
    loaded = load_model(tmp_path / "reward.pt")
    assert loaded.config == model.config and loaded.config.l2 == report.l2
    torch.testing.assert_close(loaded.predict(x), model.predict(x))


# ---- the guard: a reward model is used only when it predicts -----------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_random_ratings_do_not_make_a_model_that_predicts(seed):
    """Ratings that follow nothing in the features, in the numbers a review page collects."""
    x, _ = planted(n=40, d=64, seed=seed)
    noise = torch.randint(1, 6, (40,), generator=torch.Generator().manual_seed(100 + seed)).float()
    _, report = fit_reward(x, noise, seed=0)
    assert not report.predicts
    assert report.cv_spearman_low < report.min_rank_correlation
    assert "the previous ranking stays" in report.verdict


def test_a_taste_in_few_ratings_predicts_and_the_band_narrows_with_more():
    x, ratings = planted(n=200, d=8, noise=1.0)
    _, few = fit_reward(x[:40], ratings[:40], seed=0)
    _, many = fit_reward(x, ratings, seed=0)
    assert few.predicts and many.predicts
    assert (many.cv_spearman_high - many.cv_spearman_low) < (few.cv_spearman_high - few.cv_spearman_low)
    assert few.repeats == 3 and many.repeats == 1


def test_a_weak_taste_says_how_many_more_ratings_it_needs():
    x, ratings = planted(n=400, d=16, noise=2.0)  # a real but faint taste
    _, small = fit_reward(x[:30], ratings[:30], seed=0)
    _, large = fit_reward(x, ratings, seed=0)
    assert not small.predicts and small.ratings_needed > 30
    assert f"about {small.ratings_needed - 30} more" in small.verdict
    assert large.predicts  # and given the ratings it asked for (and more), it does


def test_the_band_and_the_ratings_needed_by_formula():
    from gen_assets.models.reward import rank_correlation_band, ratings_needed_for

    low, high = rank_correlation_band(0.5, 40, 0.9)
    z, se = math.atanh(0.5), math.sqrt((1 + 0.125) / 37)
    assert low == pytest.approx(math.tanh(z - 1.6448536 * se)) and high == pytest.approx(math.tanh(z + 1.6448536 * se))
    n = ratings_needed_for(0.5, 0.1, 0.9)
    assert rank_correlation_band(0.5, n, 0.9)[0] >= 0.1 > rank_correlation_band(0.5, n - 1, 0.9)[0]
    assert math.isnan(rank_correlation_band(0.5, 3, 0.9)[0])


def test_uncertainty_is_larger_far_from_the_rated_samples():
    x, ratings = planted(n=80, d=8, noise=0.5)
    model, _ = fit_reward(x, ratings, seed=0)
    near = model.uncertainty(x[:20])
    far = model.uncertainty(x[:20] * 3)
    assert near.shape == (20,) and bool((near > 0).all())
    assert float(far.mean()) > 2 * float(near.mean())


def test_a_model_file_without_the_uncertainty_still_loads(tmp_path):
    x, ratings = planted(n=60)
    model, _ = fit_reward(x, ratings, seed=0)
    state = {k: v for k, v in model.state_dict().items() if k not in ("posterior_cov", "fitted_mean")}
    old = RewardModel(model.config)
    old.load_state_dict(state)
    torch.testing.assert_close(old.predict(x), model.predict(x))
    assert float(old.uncertainty(x).abs().max()) == 0.0


def test_feature_groups_find_a_taste_one_statistic_carries_beside_hundreds_of_hidden_states(tmp_path):
    """Nine statistics and 576 hidden states, 40 ratings of a taste for the first statistic: under one
    penalty the hidden states drown it; with groups the cross-validation weighs the blocks."""
    g = torch.Generator().manual_seed(0)
    stats, hidden = torch.randn(40, 9, generator=g), torch.randn(40, 576, generator=g)
    x, ratings = torch.cat([stats, hidden], 1), 3 + stats[:, 0] + 0.5 * torch.randn(40, generator=g)
    _, one = fit_reward(x, ratings, seed=0)
    model, grouped = fit_reward(x, ratings, seed=0, groups=[9, 576])
    assert not one.predicts and grouped.predicts and grouped.cv_spearman > 0.7
    assert model.config.group_scales[0] == 1.0 and model.config.group_scales[1] < 1.0
    save_model(tmp_path / "reward.pt", "reward", model)
    loaded = load_model(tmp_path / "reward.pt")
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="summing to in_features"):
        fit_reward(x, ratings, seed=0, groups=[9, 500])


def test_a_taste_for_a_few_words_is_learnt_from_the_word_block_beside_hundreds_of_hidden_states():
    rng = np.random.default_rng(0)
    vocabulary = ["sleek", "speaker", "desk", "lamp", "oak", "steel", "compact", "bright", "quiet", "fast"]
    upbeat = ["great", "new", "easy"]
    texts, liked = [], []
    for i in range(90):
        words = list(rng.choice(vocabulary, size=6))
        hit = i % 6 == 0
        if hit:  # one word swapped: the same number of words
            words[int(rng.integers(0, 6))] = str(rng.choice(upbeat))
        texts.append(" ".join(words) + ".")
        liked.append(hit)
    ratings = torch.tensor(np.clip(np.rint(3 + 2 * np.array(liked) + rng.normal(0, 0.5, 90)), 1, 5))
    hidden = torch.randn(90, 576, generator=torch.Generator().manual_seed(1))
    features = torch.cat([text_statistics(texts), word_features(texts), hidden], 1)
    groups = text_feature_groups(features.shape[1])
    assert groups == [len(TEXT_STAT_NAMES), WORD_BUCKETS, 576]
    _, with_words = fit_reward(features, ratings, seed=0, groups=groups)
    assert with_words.predicts and with_words.cv_spearman > 0.3
    no_words = torch.cat([text_statistics(texts), hidden], 1)
    _, without = fit_reward(no_words, ratings, seed=0, groups=[len(TEXT_STAT_NAMES), 576])
    # the statistics carry a little of it (word lengths), the mean of hidden states (here noise) none
    assert without.cv_spearman < with_words.cv_spearman - 0.15


def test_word_features_are_stable_presence_per_bucket():
    a = word_features(["New, NEW and new!", "old"])
    assert a.shape == (2, WORD_BUCKETS) and a.sum(1).tolist() == [2.0, 1.0]  # {new, and}; {old}
    assert torch.equal(word_features(["new and"]), a[:1])  # the same text, the same buckets, in any batch
    with pytest.raises(TypeError, match="text 0"):
        word_features([3])

def test_a_row_of_weight_zero_is_ignored():
    x, ratings = planted(n=60, d=8, noise=1.0)
    w = torch.rand(60, generator=torch.Generator().manual_seed(3)) + 0.5  # uneven: the weighted path
    outlier_x, outlier_r = torch.cat([x, x[:1] * 50]), torch.cat([ratings, torch.tensor([100.0])])
    model, report = fit_reward(outlier_x, outlier_r, seed=0, weights=torch.cat([w, torch.zeros(1)]))
    without, expected = fit_reward(x, ratings, seed=0, weights=w)
    assert report == expected
    torch.testing.assert_close(model.predict(outlier_x), without.predict(outlier_x))
    # with any weight the outlier does move the fit
    moved, _ = fit_reward(outlier_x, outlier_r, seed=0, weights=torch.cat([w, torch.ones(1)]))
    assert float((moved.predict(x) - without.predict(x)).abs().max()) > 0.1


def test_integer_weights_are_repeated_rows():
    x, ratings = planted(n=50, d=8, noise=1.0)
    counts = torch.randint(1, 4, (50,), generator=torch.Generator().manual_seed(1))
    for hidden, extra in ((0, {}), (0, {"groups": [4, 4], "group_scales": [1.0, 0.3]})):
        weighted, _ = fit_reward(x, ratings, seed=0, weights=counts, l2=0.05, hidden=hidden, **extra)
        repeated, _ = fit_reward(x.repeat_interleave(counts, 0), ratings.repeat_interleave(counts), seed=0, l2=0.05,
                                 hidden=hidden, **extra)
        torch.testing.assert_close(weighted.feature_mean, repeated.feature_mean)
        torch.testing.assert_close(weighted.feature_std, repeated.feature_std)
        torch.testing.assert_close(weighted.predict(x), repeated.predict(x), atol=1e-4, rtol=1e-4)
    # equal weights are no weights: the same model and report as without
    model, report = fit_reward(x, ratings, seed=0, weights=torch.full((50,), 2.0))
    plain, plain_report = fit_reward(x, ratings, seed=0)
    assert report == plain_report
    torch.testing.assert_close(model.predict(x), plain.predict(x))


def test_weights_decide_between_two_tastes():
    """Half the rows like the first feature, half dislike it: the fit follows the rows that weigh more."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(120, 4, generator=g)
    ratings = 3 + torch.where(torch.arange(120) < 60, x[:, 0], -x[:, 0]) + 0.1 * torch.randn(120, generator=g)
    first = torch.where(torch.arange(120) < 60, 1.0, 0.05)
    likes, report = fit_reward(x, ratings, seed=0, weights=first)
    dislikes, _ = fit_reward(x, ratings, seed=0, weights=first.flip(0))
    probe = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    assert float(likes.predict(probe)[0] - likes.predict(probe)[1]) > 1.0
    assert float(dislikes.predict(probe)[0] - dislikes.predict(probe)[1]) < -1.0
    # the cross-validated figures weigh the rows too: measured mostly on the first half, the fit predicts
    assert report.cv_spearman > 0.5


def test_bad_weights_are_named():
    x, ratings = planted(n=20)
    with pytest.raises(ValueError, match=r"weights must be \(N,\) with N = 20"):
        fit_reward(x, ratings, seed=0, weights=torch.ones(19))
    with pytest.raises(ValueError, match=r"weights must be >= 0, got negative ones at row\(s\) \[4\]"):
        fit_reward(x, ratings, seed=0, weights=torch.ones(20).index_fill(0, torch.tensor([4]), -1.0))
    with pytest.raises(ValueError, match=r"weights hold NaN or inf at row\(s\) \[2\]"):
        fit_reward(x, ratings, seed=0, weights=torch.ones(20).index_fill(0, torch.tensor([2]), math.nan))
    with pytest.raises(ValueError, match="weights are all 0"):
        fit_reward(x, ratings, seed=0, weights=torch.zeros(20))
    with pytest.raises(ValueError, match="at least 4"):
        fit_reward(x, ratings, seed=0, weights=torch.cat([torch.ones(3), torch.zeros(17)]))
