"""Texts -> the token stream the GPT trains on, random (x, y) windows of it, and texts back out.

A document is `[category_id] + tokens + [eos]`; the stream is the documents one after another. The
model thus learns that a category token opens a document of that category and that eos closes it, and
generating for a category starts from `[category_id]` and stops at eos (`generate_texts`). Without
categories a document is `tokens + [eos]` and unconditional generation starts from `[eos]`.

Training batches are nanoGPT's get_batch: `batch_size` windows at random offsets, targets shifted by
one token. An "epoch" is a fixed number of such batches (`iters_per_epoch`), each epoch drawn from its
own seed (Lightning calls the sampler's set_epoch), so a run resumed at an epoch boundary sees the
batches an uninterrupted run would have seen. The validation batches are one fixed set, so val_loss
is comparable from epoch to epoch.

Pure torch: no dagster import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gen_assets.training.image_data import seeded_generator
from gen_assets.models.tokenizers import TextTokenizer


def encode_documents(
    tokenizer: TextTokenizer, texts: Sequence[str], categories: Sequence[str] | None = None
) -> torch.Tensor:
    """One int64 stream of `[category_id] + tokens + [eos]` per text (no category token when None)."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"document {i}: text must be a str, got {type(t).__name__}")
    if categories is not None:
        categories = list(categories)
        if len(categories) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(categories)} categories")
        heads = []
        for i, c in enumerate(categories):
            try:
                heads.append([tokenizer.category_id(c)])
            except KeyError as e:
                raise ValueError(f"document {i}: {e.args[0]}") from None
    else:
        heads = [[]] * len(texts)
    eos = [tokenizer.eos_id]
    ids = [np.asarray(h + body + eos, dtype=np.int64) for h, body in zip(heads, tokenizer.encode_batch(texts))]
    return torch.from_numpy(np.concatenate(ids)) if ids else torch.empty(0, dtype=torch.long)


def _as_stream(ids: Any, name: str, block_size: int) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {tuple(ids.shape)} {ids.dtype}")
    if len(ids) <= block_size:
        raise ValueError(f"{name} has {len(ids)} tokens: windows of block_size={block_size} need at least {block_size + 1}")
    if ids.min() < 0:
        raise ValueError(f"{name} holds a negative token id ({int(ids.min())})")
    return ids.long()


class TokenWindows(Dataset):
    """Indexed by a tensor of start offsets: (x, y) windows of block_size tokens, y shifted by one."""

    def __init__(self, ids: torch.Tensor, block_size: int):
        self.ids = ids
        self.offsets = torch.arange(block_size)

    def __len__(self) -> int:  # the number of valid start offsets
        return len(self.ids) - len(self.offsets)

    def __getitem__(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        at = starts[:, None] + self.offsets
        return self.ids[at], self.ids[at + 1]


class RandomStarts(Sampler):
    """`batches` batches of `batch_size` random start offsets per epoch, seeded by (seed, epoch)."""

    def __init__(self, n_starts: int, batch_size: int, batches: int, seed: int):
        self.n_starts, self.batch_size, self.batches, self.seed = n_starts, batch_size, batches, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from _random_starts(self.n_starts, self.batch_size, self.batches, [self.seed, self.epoch])


def _random_starts(n_starts: int, batch_size: int, batches: int, entropy: list[int]) -> torch.Tensor:
    return torch.randint(n_starts, (batches, batch_size), generator=seeded_generator(*entropy))


def text_loaders(
    train_ids: Any,
    val_ids: Any = None,
    *,
    block_size: int,
    batch_size: int,
    seed: int,
    iters_per_epoch: int,
    val_batches: int = 20,
) -> tuple[DataLoader, DataLoader | None]:
    """(train_loader, val_loader) of (x, y) LongTensor batches shaped (batch_size, block_size).

    The train loader gives `iters_per_epoch` random batches per epoch; the val loader the same
    `val_batches` random batches every time (None when val_ids is None).
    """
    for name, v in (("block_size", block_size), ("batch_size", batch_size), ("iters_per_epoch", iters_per_epoch)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    train = TokenWindows(_as_stream(train_ids, "train_ids", block_size), block_size)
    train_loader = DataLoader(train, sampler=RandomStarts(len(train), batch_size, iters_per_epoch, seed), batch_size=None)
    if val_ids is None:
        return train_loader, None
    if val_batches < 1:
        raise ValueError(f"val_batches must be >= 1, got {val_batches}")
    val = TokenWindows(_as_stream(val_ids, "val_ids", block_size), block_size)
    # a list of start batches is a sampler without set_epoch: the same windows every epoch
    val_starts = list(_random_starts(len(val), batch_size, val_batches, [seed, 1 << 32]))
    return train_loader, DataLoader(val, sampler=val_starts, batch_size=None)


def generate_texts(
    model: Any,
    tokenizer: TextTokenizer,
    categories: Sequence[str | None],
    *,
    max_new_tokens: int,
    prompt: str = "",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
) -> list[str]:
    """One sample per entry of `categories` (None: unconditional), `batch_size` rows at a time.

    Each row starts from its category token and the prompt, and stops at eos or after max_new_tokens;
    the returned text is the prompt plus the continuation, control tokens dropped. With a seed, batch
    i samples with seed + i, so the same call gives the same texts.
    """
    prompt_ids = tokenizer.encode(prompt)
    eos = tokenizer.eos_id
    heads = [eos if c is None else tokenizer.category_id(c) for c in categories]
    texts: list[str] = []
    for b, i in enumerate(range(0, len(heads), batch_size)):
        rows = [[h, *prompt_ids] for h in heads[i : i + batch_size]]
        idx = torch.tensor(rows, dtype=torch.long, device=model.device)
        out = model.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_ids=[[eos]],
            eos_id=eos,
            use_cache=use_cache,
            seed=None if seed is None else seed + b,
        )
        # a row that stopped is eos from there on, and decode drops control tokens
        texts.extend(tokenizer.decode(row) for row in out[:, 1:].tolist())
    return texts
