"""Text metrics: how close generations are to held-out text, how varied, how new, how well formed.

- rouge1/2/L (torchmetrics): each generation against the held-out references of its category.
- distinct_1/2: unique n-grams / all n-grams over every generation (low: the model repeats itself).
- novelty: the share of generated word 8-grams that never occur in the training split (low: copying).
- the degeneration guard (`guard_stats`): empty, repetitive and unfinished texts, and lengths outside
  the bounds the references set (`length_bounds`). The bits per byte of held-out references, the
  tokenizer-independent fit of a model, is measured by the model itself (models.text_generators).

BLEU and self-BLEU were dropped: with short ad copy against a handful of references, and for a
character-level model against Shakespeare, both were 0 in every run and said nothing.

References are cut into passages. Held-out documents may be scenes of thousands of words, generations a
few hundred characters. So each reference document is cut into consecutive windows of W words,
W = the median generation length in words, and a generation is scored against the passages of its
category. A generation identical to a reference of its own length still scores 1.

Speed. ROUGEScore runs a pure-Python LCS for every (prediction, reference) pair, so:
- ROUGE is the best over the `rouge_candidates` (2) passages of the generation's category that share the
  most distinct words with it, not over all of them: torchmetrics' ROUGEScore (accumulate="best") gets
  just those. On 300 Shakespeare excerpts 2 and 4 candidates agreed to 1e-5.
- novelty hashes word 8-grams to 64-bit integers with numpy, so a 1M-character training split is one
  sorted array, built once.
All these metrics for 300 generations of 100 words, 100 reference scenes and a 3.9M-character training
split: about 4 s on that shared machine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.text import ROUGEScore

METRIC_KEYS = ("rouge1", "rouge2", "rougeL", "distinct_1", "distinct_2", "novelty")
GUARD_KEYS = ("empty_share", "repetitive_share", "unfinished_share", "degenerate_share", "in_length_share", "mean_chars")
NOVELTY_N = 8
ROUGE_CANDIDATES = 2

_WORD = re.compile(r"\w+")
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")  # torchmetrics ROUGE: lower-case, non-alphanumerics are spaces


def text_metrics(
    generated: Sequence[tuple[str, str]],
    references: Sequence[tuple[str, str]],
    train_texts: Sequence[str],
    *,
    rouge_candidates: int = ROUGE_CANDIDATES,
) -> dict[str, float]:
    """The metrics of METRIC_KEYS for (category, text) generations; see the module doc for each.

    `references` are held-out (category, text) documents; every category in `generated` needs at least
    one. `train_texts` is the training split the novelty is measured against. distinct-n tokenizes on
    whitespace, ROUGE lower-cases and keeps letters and digits (torchmetrics ROUGE's), novelty uses
    lower-cased \\w+ words so that a copy is found whatever its line breaks and punctuation. A value that
    cannot be measured (novelty when no generation has 8 words) is NaN.
    """
    if not generated:
        raise ValueError("no generations to measure")
    if rouge_candidates < 1:
        raise ValueError(f"rouge_candidates must be >= 1, got {rouge_candidates}")
    by_category: dict[str, list[str]] = {}
    for category, text in references:
        by_category.setdefault(category, []).append(text)
    missing = sorted({c for c, _ in generated} - set(by_category))
    if missing:
        raise ValueError(
            f"no held-out references for categories {missing} (references have {sorted(by_category)})"
        )

    tokens = [text.split() for _, text in generated]
    window = max(1, int(np.median([len(t) for t in tokens])))
    passages = {c: _passages(texts, window) for c, texts in by_category.items()}

    rouge = _rouge(generated, passages, rouge_candidates)
    return {
        "rouge1": rouge["rouge1"],
        "rouge2": rouge["rouge2"],
        "rougeL": rouge["rougeL"],
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "novelty": novelty([text for _, text in generated], train_texts),
    }


# ---- passages ---------------------------------------------------------------------------------------


def _passages(texts: Sequence[str], window: int) -> list[list[str]]:
    """Each text's whitespace tokens cut into consecutive windows of `window` tokens (the last shorter)."""
    out = []
    for text in texts:
        words = text.split()
        out += [words[i : i + window] for i in range(0, len(words), window)] or [[]]
    return out


# ---- ROUGE --------------------------------------------------------------------------------------------


def _rouge(
    generated: Sequence[tuple[str, str]], passages: dict[str, list[list[str]]], candidates: int
) -> dict[str, float]:
    """ROUGE-1/2/L F-measure, each generation against the best of its most word-sharing passages."""
    targets: list[list[str] | None] = [None] * len(generated)
    for category, refs in passages.items():
        rows = [i for i, (c, _) in enumerate(generated) if c == category]
        if not rows:
            continue
        ref_texts = [" ".join(r) for r in refs]
        shared = _shared_words([generated[i][1] for i in rows], ref_texts)
        # stable sort: equal overlaps keep reference order, so the choice is deterministic
        order = np.argsort(-shared, axis=1, kind="stable")[:, :candidates]
        for row, picks in zip(rows, order):
            targets[row] = [ref_texts[j] for j in picks]
    metric = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))  # accumulate="best" over a target list
    metric.update([text for _, text in generated], targets)  # not metric(...): forward would score twice
    scores = metric.compute()
    return {key: float(scores[f"{key}_fmeasure"]) for key in ("rouge1", "rouge2", "rougeL")}


def _shared_words(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
    """(len(queries), len(docs)) counts of distinct ROUGE tokens each query shares with each doc."""
    doc_sets = [set(_ROUGE_TOKEN.findall(d.lower())) for d in docs]
    query_sets = [set(_ROUGE_TOKEN.findall(q.lower())) for q in queries]
    shared = [[len(q & d) for d in doc_sets] for q in query_sets]
    return np.array(shared, dtype=np.int64).reshape(len(queries), len(docs))


# ---- diversity and novelty ----------------------------------------------------------------------------


def distinct_n(tokens: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams / all n-grams over every generation's tokens (NaN when there is no n-gram)."""
    grams = [tuple(t[i : i + n]) for t in tokens for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit constant (golden ratio); arithmetic wraps mod 2^64


def _hashed_ngrams(texts: Sequence[str], vocab: dict[str, int], n: int = NOVELTY_N) -> np.ndarray:
    """64-bit hashes of every word n-gram of each text (n-grams never cross from one text to the next)."""
    out = []
    for text in texts:
        ids = np.fromiter(
            (vocab.setdefault(w, len(vocab) + 1) for w in _WORD.findall(text.lower())), dtype=np.uint64
        )
        if len(ids) < n:
            continue
        h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):  # polynomial hash of the n ids in order
                h = h * _HASH_MULT + ids[k : len(ids) - n + 1 + k]
        out.append(h)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def novelty(generated: Sequence[str], train_texts: Sequence[str], n: int = NOVELTY_N) -> float:
    """Share of the generations' word n-grams (lower-cased \\w+ words) absent from the training texts.

    0 means every 8 consecutive words were seen in training (copying), 1 that none were. NaN when no
    generation has `n` words.
    """
    vocab: dict[str, int] = {}
    train = np.unique(_hashed_ngrams(train_texts, vocab, n))
    gen = _hashed_ngrams(generated, vocab, n)
    if len(gen) == 0:
        return math.nan
    return float(1.0 - np.isin(gen, train, assume_unique=False).mean())


# ---- the degeneration guard ----------------------------------------------------------------------------

REPETITION_N = 3
MAX_REPETITION = 0.3  # a text whose word 3-grams repeat more than this share is repetitive
_ENDINGS = tuple('.!?…"\')»)*')


def repetition_rate(text: str, n: int = REPETITION_N) -> float:
    """Share of a text's word n-grams (lower-cased \\w+ words) that repeat an earlier one (0: none)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def unfinished(text: str) -> bool:
    """A text that does not end in sentence punctuation: cut off by the token budget, mid-sentence."""
    t = text.strip()
    return bool(t) and not t.endswith(_ENDINGS)


def length_bounds(references: Sequence[str], *, low: float = 0.5, high: float = 2.0) -> tuple[int, int]:
    """(min_chars, max_chars) a generation should fall within: `low` x the 5th percentile and `high` x the
    95th percentile of the references' lengths, so the bounds follow the user's own copy."""
    lengths = np.array([len(t.strip()) for t in references if t and t.strip()], dtype=float)
    if len(lengths) == 0:
        raise ValueError("no reference texts to take length bounds from")
    return max(1, int(low * np.percentile(lengths, 5))), int(np.ceil(high * np.percentile(lengths, 95)))


def guard_stats(texts: Sequence[str], bounds: tuple[int, int], *, max_repetition: float = MAX_REPETITION
                ) -> dict[str, float]:
    """The degeneration guard's measures (GUARD_KEYS) of a set of generations.

    empty: blank after stripping; repetitive: repetition_rate above `max_repetition`; unfinished: not
    ending in sentence punctuation (cut off by the token budget, mid-sentence); degenerate: any of the
    three; in_length: length within `bounds` (length_bounds); mean_chars: the mean length.
    """
    if not texts:
        raise ValueError("no generations to measure")
    stripped = [t.strip() for t in texts]
    empty = np.array([not t for t in stripped])
    repetitive = np.array([repetition_rate(t) > max_repetition for t in stripped])
    cut = np.array([unfinished(t) for t in stripped])
    lengths = np.array([len(t) for t in stripped])
    return {
        "empty_share": float(empty.mean()),
        "repetitive_share": float(repetitive.mean()),
        "unfinished_share": float(cut.mean()),
        "degenerate_share": float((empty | repetitive | cut).mean()),
        "in_length_share": float(((lengths >= bounds[0]) & (lengths <= bounds[1])).mean()),
        "mean_chars": float(lengths.mean()),
    }
