"""Text metrics: the fast BLEU equals torchmetrics' BLEUScore, and each metric moves the right way on
inputs crafted to pin it (identical text, copied training text, random words, repeated samples)."""

from __future__ import annotations

import math
import random

import pytest
from torchmetrics.text import BLEUScore

from gen_assets.metrics.texts import METRIC_KEYS, _bleu, distinct_n, novelty, perplexity, self_bleu, text_metrics

SPEECH = (
    "Now is the winter of our discontent made glorious summer by this sun of York and all the clouds "
    "that lour'd upon our house in the deep bosom of the ocean buried"
)
OTHER = (
    "Friends Romans countrymen lend me your ears I come to bury Caesar not to praise him the evil that "
    "men do lives after them the good is oft interred with their bones"
)
WORDS = [f"w{i}" for i in range(6)]  # a tiny vocabulary, so random sentences share n-grams


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.mark.parametrize("seed", range(4))
def test_bleu_and_self_bleu_equal_torchmetrics_bleuscore(seed):
    rng = random.Random(seed)
    preds = [sentence(rng, rng.randint(3, 25)) for _ in range(10)]
    targets = [[sentence(rng, rng.randint(3, 25)) for _ in range(rng.randint(1, 4))] for _ in preds]
    ours = _bleu([p.split() for p in preds], [[t.split() for t in ts] for ts in targets])
    assert ours == pytest.approx(float(BLEUScore(smooth=True)(preds, targets)), abs=1e-6)
    others = [[q for j, q in enumerate(preds) if j != i] for i in range(len(preds))]
    assert self_bleu([p.split() for p in preds]) == pytest.approx(float(BLEUScore(smooth=True)(preds, others)), abs=1e-6)


def test_identical_generation_scores_bleu_and_rouge_one():
    m = text_metrics([("history", SPEECH)], [("history", SPEECH), ("roman", OTHER)], [OTHER])
    assert set(m) == set(METRIC_KEYS)
    for key in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(1.0), key
    # scored against its own category only: the same text filed under "roman" shares nothing with OTHER
    m = text_metrics([("roman", SPEECH)], [("history", SPEECH), ("roman", OTHER)], [OTHER])
    assert m["bleu"] == 0.0 and m["rouge2"] == 0.0


def test_a_short_generation_is_scored_against_passages_of_its_length():
    # a 12-word excerpt of a long reference: its passages are 12 words, so no brevity penalty wipes it out
    long_reference = " ".join([SPEECH, OTHER] * 5)
    excerpt = " ".join(long_reference.split()[:12])
    m = text_metrics([("a", excerpt)], [("a", long_reference)], [])
    assert m["bleu"] == pytest.approx(1.0) and m["rouge1"] == pytest.approx(1.0)


def test_novelty_is_zero_for_copied_training_text_and_one_for_random_words():
    rng = random.Random(0)
    train = [SPEECH, OTHER]
    copied = [SPEECH.upper(), " ".join(OTHER.split()[3:20]).replace(" ", ",\n")]  # case and layout do not hide copies
    assert novelty(copied, train) == 0.0
    vocabulary = [f"word{i}" for i in range(5000)]
    random_text = [" ".join(rng.choice(vocabulary) for _ in range(200)) for _ in range(5)]
    assert novelty(random_text, train) == pytest.approx(1.0)
    half = [" ".join(SPEECH.split()[:15] + random_text[0].split()[:15])]  # 8 copied 8-grams of 23
    assert novelty(half, train) == pytest.approx(1 - 8 / 23)
    assert math.isnan(novelty(["too short"], train))


def test_distinct_n_on_crafted_inputs():
    tokens = [["a", "b", "a", "b"], ["a", "b", "c"]]
    assert distinct_n(tokens, 1) == pytest.approx(3 / 7)  # a, b, c of 7 words
    assert distinct_n(tokens, 2) == pytest.approx(3 / 5)  # ab, ba, bc of ab ba ab ab bc
    assert distinct_n([["x", "y", "z"]], 1) == 1.0
    assert math.isnan(distinct_n([["x"]], 2))
    m = text_metrics([("a", "a b a b"), ("a", "a b c")], [("a", "a b c d")], [])
    assert (m["distinct_1"], m["distinct_2"]) == (pytest.approx(3 / 7), pytest.approx(3 / 5))


def test_self_bleu_is_one_for_identical_samples_and_low_for_different_ones():
    assert self_bleu([SPEECH.split()] * 5) == pytest.approx(1.0)
    assert self_bleu([SPEECH.split(), OTHER.split()]) < 0.1
    assert math.isnan(self_bleu([SPEECH.split()]))


def test_missing_reference_category_and_empty_input_are_errors():
    with pytest.raises(ValueError, match=r"no held-out references for categories \['comedy'\]"):
        text_metrics([("comedy", SPEECH)], [("history", OTHER)], [])
    with pytest.raises(ValueError, match="no generations"):
        text_metrics([], [("history", OTHER)], [])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(42.0)) == pytest.approx(42.0)
    assert perplexity(1e6) == math.inf
