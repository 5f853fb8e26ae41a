"""Text metrics: each moves the right way on inputs crafted to pin it (identical text, copied training text,
random words, repeated samples), and the degeneration guard counts what it names."""

from __future__ import annotations

import math
import random

import pytest
from gen_assets.metrics.texts import (METRIC_KEYS, distinct_n, guard_stats, length_bounds, novelty, repetition_rate,
                                      text_metrics, unfinished)

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


def test_identical_generation_scores_rouge_one():
    m = text_metrics([("history", SPEECH)], [("history", SPEECH), ("roman", OTHER)], [OTHER])
    assert set(m) == set(METRIC_KEYS)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(1.0), key
    # scored against its own category only: the same text filed under "roman" shares nothing with OTHER
    m = text_metrics([("roman", SPEECH)], [("history", SPEECH), ("roman", OTHER)], [OTHER])
    assert m["rouge2"] == 0.0


def test_a_short_generation_is_scored_against_passages_of_its_length():
    # a 12-word excerpt of a long reference: its passages are 12 words, so no brevity penalty wipes it out
    long_reference = " ".join([SPEECH, OTHER] * 5)
    excerpt = " ".join(long_reference.split()[:12])
    m = text_metrics([("a", excerpt)], [("a", long_reference)], [])
    assert m["rouge1"] == pytest.approx(1.0) and m["rougeL"] == pytest.approx(1.0)


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


def test_missing_reference_category_and_empty_input_are_errors():
    with pytest.raises(ValueError, match=r"no held-out references for categories \['comedy'\]"):
        text_metrics([("comedy", SPEECH)], [("history", OTHER)], [])
    with pytest.raises(ValueError, match="no generations"):
        text_metrics([], [("history", OTHER)], [])


def test_repetition_rate_and_unfinished():
    assert repetition_rate("fresh coffee for every morning of the week") == 0.0
    assert repetition_rate("buy it now buy it now buy it now") == pytest.approx(1 - 3 / 7)
    assert repetition_rate("two words") == 0.0
    assert not unfinished("Cold water, all day.") and not unfinished('"Ready when you are!"')
    assert unfinished("Cold water, all day and") and not unfinished("   ")


def test_length_bounds_follow_the_references():
    low, high = length_bounds(["x" * 40] * 10 + ["x" * 80] * 10)
    assert (low, high) == (20, 160)
    with pytest.raises(ValueError, match="no reference texts"):
        length_bounds(["", "  "])


def test_guard_stats_count_each_kind_of_degeneration():
    texts = ["A skillet that sears.", "", "buy now buy now buy now buy now", "It keeps drinks cold for", "x" * 500 + "."]
    stats = guard_stats(texts, (10, 100))
    assert stats["empty_share"] == pytest.approx(1 / 5)
    assert stats["repetitive_share"] == pytest.approx(1 / 5)
    assert stats["unfinished_share"] == pytest.approx(2 / 5)  # the repeated one and the cut one end mid-sentence
    assert stats["degenerate_share"] == pytest.approx(3 / 5)
    assert stats["in_length_share"] == pytest.approx(3 / 5)  # the empty and the 501-character one are out
    assert stats["mean_chars"] == pytest.approx(sum(len(t) for t in texts) / 5)
    with pytest.raises(ValueError):
        guard_stats([], (1, 2))
