"""Content curation: of the candidates a generator made, keep the best k per category and drop the bad ones.

The generator makes more candidates than are needed; the reward model scores them; the filters here
drop what must never be shown, each with its reason:
- images: the evaluator's confidence that the image shows the category it was conditioned on
  (`image_confidence`); a candidate below the bound is a broken sample, whatever its reward.
- texts (`text_flags`): empty or broken text (control characters, the tokenizer's unknown-character
  mark, fewer than `min_words` words), a blocklisted word or phrase, and copying: the share of the
  text's word 8-grams found in the training split above a bound (the n-gram hashing of
  gen_assets.metrics.texts' novelty, not a second implementation of it).
`curate` then ranks what is left by reward within each category and keeps the top k; it returns the
curated rows and the dropped rows with their reasons, which the caller records in quarantine.

Pure module (torch, numpy, pandas): no dagster import.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from gen_assets.metrics.texts import NOVELTY_N, _hashed_ngrams, repetition_rate, unfinished
from gen_assets.models.tokenizers import UNK_TEXT

REQUIRED_COLUMNS = ("sample_id", "category", "reward")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline
_WORD = re.compile(r"\w+")


class Curation(NamedTuple):
    """`curated`: the kept candidates with `rank` (1 = best in its category), ordered by category then rank.
    `dropped`: the refused candidates with `reason`, in input order. Candidates that were valid but
    ranked below k are in neither."""

    curated: pd.DataFrame
    dropped: pd.DataFrame


# ---- image filter --------------------------------------------------------------------------------------


@torch.no_grad()
def image_confidence(
    evaluator: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1024
) -> torch.Tensor:
    """(N,) the evaluator's probability that each image shows its conditioned category (CPU float32)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a float tensor N x C x H x W, got {getattr(images, 'shape', type(images))}")
    if labels.shape != (len(images),):
        raise ValueError(f"{len(images)} images but labels shaped {tuple(labels.shape)}")
    num_classes = int(evaluator.config.num_classes)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    device = next(evaluator.parameters()).device
    was_training = evaluator.training
    evaluator.eval()
    try:
        probs = [
            torch.softmax(evaluator(chunk.to(device, torch.float32)).float(), dim=1).cpu()
            for chunk in images.split(batch_size)
        ]
    finally:
        evaluator.train(was_training)
    if not probs:
        return torch.zeros(0)
    return torch.cat(probs).gather(1, labels[:, None]).squeeze(1)


# ---- text filters --------------------------------------------------------------------------------------


class NgramIndex:
    """The hashed word n-grams of a training split, built once and shared by every `text_flags` call."""

    def __init__(self, train_texts: Iterable[str], n: int = NOVELTY_N):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.vocab: dict[str, int] = {}
        self.hashes = np.unique(_hashed_ngrams(list(train_texts), self.vocab, n))

    def copy_share(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, the share of its word n-grams found in the training split; NaN below n words."""
        out = np.full(len(texts), math.nan)
        vocab = dict(self.vocab)  # words new to training get fresh ids here, never in the shared index
        for i, text in enumerate(texts):
            grams = _hashed_ngrams([text], vocab, self.n)
            if len(grams) and len(self.hashes):
                # the index is sorted (np.unique): a binary search per n-gram, not np.isin's sort of both
                at = np.searchsorted(self.hashes, grams).clip(max=len(self.hashes) - 1)
                out[i] = float((self.hashes[at] == grams).mean())
            elif len(grams):
                out[i] = 0.0
        return out


def _blocklist_pattern(blocklist: Iterable[str]) -> re.Pattern | None:
    terms = sorted({t.strip().lower() for t in blocklist if t and t.strip()}, key=len, reverse=True)
    if not terms:
        return None
    # whole words (or phrases) only: "ass" must not flag "passage"
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)


def text_flags(
    texts: Sequence[str],
    *,
    blocklist: Iterable[str] = (),
    train_ngrams: NgramIndex | None = None,
    max_copy_share: float = 0.5,
    min_words: int = 3,
) -> list[str | None]:
    """Per text, why it must be dropped (reasons joined by "; "), or None to keep it.

    Reasons: "empty text"; "broken text: control characters"; "broken text: unknown characters";
    "too short: N words < min_words"; "blocklisted: 'term'"; "copy: S of its 8-word sequences are in
    the training split (> max_copy_share)". The copy test needs `train_ngrams` (an NgramIndex of the
    training split) and a text of at least n words.
    """
    if not 0.0 <= max_copy_share <= 1.0:
        raise ValueError(f"max_copy_share must be in [0, 1], got {max_copy_share}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i}: expected a str, got {type(t).__name__}")
    pattern = _blocklist_pattern(blocklist)
    shares = train_ngrams.copy_share(texts) if train_ngrams is not None else np.full(len(texts), math.nan)
    flags: list[str | None] = []
    for text, share in zip(texts, shares):
        if not text.strip():
            flags.append("empty text")
            continue
        reasons = []
        if _CONTROL.search(text):
            reasons.append("broken text: control characters")
        if UNK_TEXT in text:
            reasons.append("broken text: unknown characters")
        words = len(_WORD.findall(text))
        if words < min_words:
            reasons.append(f"too short: {words} words < {min_words}")
        if pattern is not None:
            found = sorted({m.lower() for m in pattern.findall(text)})
            reasons += [f"blocklisted: {term!r}" for term in found]
        if not math.isnan(share) and share > max_copy_share:
            n = train_ngrams.n
            reasons.append(f"copy: {share:.2f} of its {n}-word sequences are in the training split (> {max_copy_share})")
        flags.append("; ".join(reasons) or None)
    return flags


# ---- curation ------------------------------------------------------------------------------------------


def _as_frame(candidates: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = candidates.copy() if isinstance(candidates, pd.DataFrame) else pd.DataFrame(list(candidates))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {missing}; they have {list(frame.columns)}")
    frame = frame.reset_index(drop=True)
    no_id = frame.index[frame["sample_id"].isna()].tolist()
    if no_id:
        raise ValueError(f"candidate row(s) {no_id[:10]} have no sample_id")
    dup = frame["sample_id"][frame["sample_id"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"sample_id repeated in the candidates: {dup[:10]}")
    return frame


def shown(value) -> str:
    """A value as a quarantine reason may show it: plain values as they are, anything else by its type (an
    object's repr carries its memory address, which differs on every run)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"a value of type {type(value).__name__}"


def curate(
    candidates: pd.DataFrame | Sequence[dict[str, Any]],
    *,
    k_per_category: int,
    min_confidence: float | None = None,
    explore_per_category: int = 0,
) -> Curation:
    """Rank candidates by reward within each category, keep the top `k_per_category`, drop the bad ones.

    With `explore_per_category`, each category also shows that many exploratory samples beside its top k
    (`exploratory` True, ranked after them): of the valid candidates not in the top k, those with the
    largest `uncertainty` (a column, e.g. RewardModel.uncertainty: what the reward model is least sure
    about, so a rating of it teaches the most), or, without that column, a fixed pseudo-random choice
    (by a hash of the sample_id: the same candidates always give the same choice). People rate what the
    review page shows; without exploration they would only ever rate what the current ranking already
    likes.

    `candidates` (a DataFrame or a list of dicts) needs sample_id (unique), category and reward; any other
    column is carried through. Dropped, with a reason, before ranking:
    - a `reason` column's non-empty values (e.g. from `text_flags`);
    - confidence below `min_confidence` (requires a `confidence` column, e.g. from `image_confidence`);
    - a missing category; a reward that is missing, NaN or infinite.
    Ties in reward are broken by sample_id, so the same candidates always give the same ranks. A
    category with fewer than k valid candidates keeps all of them.
    """
    if not isinstance(k_per_category, int) or isinstance(k_per_category, bool) or k_per_category < 1:
        raise ValueError(f"k_per_category must be an int >= 1, got {k_per_category!r}")
    if not isinstance(explore_per_category, int) or isinstance(explore_per_category, bool) or explore_per_category < 0:
        raise ValueError(f"explore_per_category must be an int >= 0, got {explore_per_category!r}")
    frame = _as_frame(candidates)
    if min_confidence is not None and "confidence" not in frame.columns:
        raise ValueError("min_confidence was given but the candidates have no 'confidence' column")

    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    if "reason" in frame.columns:
        for i, r in enumerate(frame["reason"]):
            if isinstance(r, str) and r.strip():
                reasons[i].append(r.strip())
            elif r is not None and not (isinstance(r, float) and math.isnan(r)) and not isinstance(r, str):
                raise ValueError(f"candidate {frame['sample_id'][i]!r}: reason must be a string or empty, got {shown(r)}")
    reward = pd.to_numeric(frame["reward"], errors="coerce").astype(float)
    for i, (raw, value) in enumerate(zip(frame["reward"], reward)):
        if not math.isfinite(value):
            reasons[i].append(f"no usable reward ({shown(raw)})")
    for i, c in enumerate(frame["category"]):
        if c is None or (isinstance(c, float) and math.isnan(c)) or (isinstance(c, str) and not c.strip()):
            reasons[i].append("no category")
    if min_confidence is not None:
        confidence = pd.to_numeric(frame["confidence"], errors="coerce").astype(float)
        for i, c in enumerate(confidence):
            if not c >= min_confidence:  # NaN fails too
                reasons[i].append(f"evaluator confidence {c:.3f} < {min_confidence}")

    drop = np.array([bool(r) for r in reasons], dtype=bool)
    dropped = frame[drop].copy()
    dropped["reason"] = ["; ".join(r) for r, d in zip(reasons, drop) if d]

    kept = frame[~drop].copy()
    kept["reward"] = reward[~drop]
    # one stable sort: category, then reward (best first), then sample_id for ties
    kept = kept.sort_values(["category", "reward", "sample_id"], ascending=[True, False, True], kind="mergesort")
    kept["rank"] = kept.groupby("category", sort=False).cumcount() + 1
    curated = kept[kept["rank"] <= k_per_category].copy()
    curated["exploratory"] = False
    if explore_per_category:
        rest = kept[kept["rank"] > k_per_category].copy()
        if "uncertainty" in rest.columns:
            rest["_order"] = -pd.to_numeric(rest["uncertainty"], errors="coerce").fillna(-np.inf).astype(float)
        else:
            rest["_order"] = [zlib.crc32(str(sid).encode()) for sid in rest["sample_id"]]
        rest = rest.sort_values(["category", "_order", "sample_id"], kind="mergesort")
        picked = rest[rest.groupby("category", sort=False).cumcount() < explore_per_category].drop(columns="_order")
        picked = picked.sort_values(["category", "reward", "sample_id"], ascending=[True, False, True], kind="mergesort")
        # ranked after the category's curated samples, so rank stays unique within a category
        top = curated.groupby("category")["rank"].max()
        picked["rank"] = picked["category"].map(top).fillna(0).astype(int) + picked.groupby("category").cumcount() + 1
        picked["exploratory"] = True
        curated = pd.concat([curated, picked]).sort_values(["category", "rank"], kind="mergesort")
    curated = curated.reset_index(drop=True)
    if "reason" in curated.columns:
        curated = curated.drop(columns="reason")
    return Curation(curated, dropped.reset_index(drop=True))


def prior_text_score(texts: list[str], bounds: tuple[int, int]) -> np.ndarray:
    """The ranking before any rating: one point for a finished text (sentence punctuation at its end), one for
    a length within `bounds`, minus its repetition rate (metrics.texts); a neutral, documented prior."""
    finished = np.array([bool(t.strip()) and not unfinished(t) for t in texts], dtype=float)
    in_length = np.array([bounds[0] <= len(t.strip()) <= bounds[1] for t in texts], dtype=float)
    return finished + in_length - np.array([repetition_rate(t) for t in texts])
