import math

import numpy as np
import pandas as pd
import pytest
import torch

from gen_assets.rules.curation import NgramIndex, curate, image_confidence, text_flags
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.models.tokenizers import UNK_TEXT

TRAIN = [
    "Now is the winter of our discontent made glorious summer by this sun of York "
    "and all the clouds that lour'd upon our house in the deep bosom of the ocean buried.",
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.",
]


def candidates():
    rows = []
    for cat, rewards in (("a", [0.1, 0.9, 0.5, 0.7]), ("b", [0.3, 0.2])):
        for i, r in enumerate(rewards):
            rows.append({"sample_id": f"{cat}{i}", "category": cat, "reward": r, "confidence": 0.9, "reason": None})
    return rows


def test_keeps_the_top_k_per_category_in_reward_order():
    curated, dropped = curate(candidates(), k_per_category=2)
    assert dropped.empty
    assert list(curated["sample_id"]) == ["a1", "a3", "b0", "b1"]
    assert list(curated["rank"]) == [1, 2, 1, 2]
    assert list(curated["category"]) == ["a", "a", "b", "b"]
    assert "confidence" in curated.columns and "reason" not in curated.columns  # extra columns carried through
    # a category with fewer than k valid candidates keeps them all
    curated, _ = curate(candidates(), k_per_category=3)
    assert list(curated.groupby("category").size()) == [3, 2]


def test_drops_flagged_items_with_their_reasons_before_ranking():
    rows = candidates()
    rows[1]["reason"] = "blocklisted: 'zounds'"  # a1, the best of category a
    rows[3]["confidence"] = 0.2  # a3, the second best
    rows[4]["reward"] = math.nan  # b0
    rows[5]["category"] = None  # b1
    curated, dropped = curate(pd.DataFrame(rows), k_per_category=2, min_confidence=0.5)
    assert list(curated["sample_id"]) == ["a2", "a0"] and list(curated["rank"]) == [1, 2]
    reasons = dict(zip(dropped["sample_id"], dropped["reason"]))
    assert reasons == {
        "a1": "blocklisted: 'zounds'",
        "a3": "evaluator confidence 0.200 < 0.5",
        "b0": "no usable reward (nan)",
        "b1": "no category",
    }
    # every candidate is accounted for: curated, dropped, or valid but ranked below k
    assert set(curated["sample_id"]) | set(dropped["sample_id"]) <= {r["sample_id"] for r in rows}


def test_ties_are_broken_by_sample_id_whatever_the_input_order():
    rows = [{"sample_id": s, "category": "c", "reward": 1.0} for s in ["z", "b", "m", "a"]]
    for order in (rows, rows[::-1]):
        curated, _ = curate(order, k_per_category=3)
        assert list(curated["sample_id"]) == ["a", "b", "m"]


def test_bad_candidate_tables_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['reward'\]"):
        curate([{"sample_id": 1, "category": "a"}], k_per_category=1)
    with pytest.raises(ValueError, match=r"sample_id repeated in the candidates: \['x'\]"):
        curate([{"sample_id": "x", "category": "a", "reward": 1}] * 2, k_per_category=1)
    with pytest.raises(ValueError, match="no 'confidence' column"):
        curate([{"sample_id": "x", "category": "a", "reward": 1}], k_per_category=1, min_confidence=0.5)
    with pytest.raises(ValueError, match="k_per_category"):
        curate(candidates(), k_per_category=0)


def test_text_flags_name_every_reason():
    index = NgramIndex(TRAIN)
    copied = "he said: now is the winter of our discontent made glorious summer by this sun of York, and left"
    novel = "what light through yonder window breaks and who are you to stand there asking me questions"
    flags = text_flags(
        [novel, copied, "", "   \n", "Zounds, I say it plainly now", "the classic passage again friend",
         "two words", "a bad \x07 bell rings here", f"an odd {UNK_TEXT} char sits here"],
        blocklist=["zounds", "ass"],
        train_ngrams=index,
    )
    assert flags[0] is None
    assert flags[1].startswith("copy: 0.") and "8-word sequences are in the training split" in flags[1]
    assert flags[2] == flags[3] == "empty text"
    assert flags[4] == "blocklisted: 'zounds'"
    assert flags[5] is None, "'ass' inside 'classic' and 'passage' is not the blocklisted word"
    assert flags[6] == "too short: 2 words < 3"
    assert flags[7] == "broken text: control characters"
    assert flags[8] == "broken text: unknown characters"
    # the copy bound is configurable, and without an index no copy test is made
    assert text_flags([copied], train_ngrams=index, max_copy_share=0.99) == [None]
    assert text_flags([copied]) == [None]
    shares = index.copy_share([copied, novel, "too short"])
    assert shares[0] > 0.5 and shares[1] == 0 and math.isnan(shares[2])
    assert len(index.vocab) == len(NgramIndex(TRAIN).vocab), "scoring texts does not grow the shared index"


def test_text_flags_feed_curation():
    texts = ["a fine and novel line of verse", "zounds what a line of verse", "the best line of all of them"]
    frame = pd.DataFrame({"sample_id": [1, 2, 3], "category": "play", "reward": [0.5, 0.9, 0.7],
                          "reason": text_flags(texts, blocklist=["zounds"])})
    curated, dropped = curate(frame, k_per_category=5)
    assert list(curated["sample_id"]) == [3, 1]
    assert list(dropped["sample_id"]) == [2] and list(dropped["reason"]) == ["blocklisted: 'zounds'"]


def test_image_confidence_is_the_probability_of_the_conditioned_category():
    torch.manual_seed(0)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 4)).eval()
    images = torch.rand(5, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 0])
    conf = image_confidence(evaluator, images, labels, batch_size=2)
    expected = torch.softmax(evaluator(images), dim=1)[torch.arange(5), labels]
    torch.testing.assert_close(conf, expected)
    assert ((conf > 0) & (conf < 1)).all()
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        image_confidence(evaluator, images, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="5 images"):
        image_confidence(evaluator, images, labels[:3])
    # the confidence column drives the image filter
    frame = pd.DataFrame({"sample_id": np.arange(5), "category": labels.numpy(), "reward": np.arange(5.0),
                          "confidence": conf.numpy()})
    bound = float(conf.median())
    curated, dropped = curate(frame, k_per_category=1, min_confidence=bound)
    low = set(np.flatnonzero(conf.numpy() < bound))
    assert set(dropped["sample_id"]) == low and low
    kept = frame[~frame["sample_id"].isin(low)]
    best = kept.sort_values("reward", ascending=False).groupby("category").head(1)
    assert set(curated["sample_id"]) == set(best["sample_id"])


def test_quarantine_reasons_carry_no_memory_address():
    import re

    frame = pd.DataFrame({"sample_id": ["a", "b"], "category": ["x", "x"], "reward": [object(), 1.0]})
    dropped = curate(frame, k_per_category=1).dropped
    reason = dropped.set_index("sample_id").loc["a", "reason"]
    assert "no usable reward" in reason and not re.search(r"0x[0-9a-f]+", reason), reason


def test_exploration_adds_the_least_certain_beside_the_top_k():
    rows = candidates()
    for r, u in zip(rows, [0.9, 0.1, 0.2, 0.3, 0.5, 0.4]):
        r["uncertainty"] = u
    rows[0]["reason"] = "blocklisted: 'x'"  # the most uncertain one is broken: never shown
    curated, dropped = curate(rows, k_per_category=1, explore_per_category=1)
    assert list(dropped["sample_id"]) == ["a0"]
    assert list(curated["sample_id"]) == ["a1", "a3", "b0", "b1"]
    assert list(curated["exploratory"]) == [False, True, False, True]
    assert list(curated["rank"]) == [1, 2, 1, 2]
    # without uncertainty: a fixed choice by sample_id, the same whatever the input order
    plain = [{k: v for k, v in r.items() if k != "uncertainty"} for r in candidates()]
    one, _ = curate(plain, k_per_category=1, explore_per_category=2)
    two, _ = curate(plain[::-1], k_per_category=1, explore_per_category=2)
    assert list(one["sample_id"]) == list(two["sample_id"]) and int(one["exploratory"].sum()) == 3
    none, _ = curate(plain, k_per_category=2)
    assert not none["exploratory"].any()
    with pytest.raises(ValueError, match="explore_per_category"):
        curate(plain, k_per_category=1, explore_per_category=-1)
