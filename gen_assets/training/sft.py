"""Supervised fine-tuning data for pretrained text generators: brief -> text examples in padded batches.

An example is one (category, prompt, text): the model's encoding of the brief followed by the text and
eos, the loss on the text and eos only (models.hf.HFCausalLM.example). Training batches draw examples
with replacement in proportion to a weight (uniform for the company's own copy, by preference when
tuning towards ratings), `batch_size` per batch and `batches` per epoch, seeded by (seed, epoch) like
the other text loaders, so a run resumed at an epoch boundary sees the batches an uninterrupted run
would have. The validation batches are every validation example once, in a fixed order.

Pure torch: no dagster import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from gen_assets.training.image_data import seeded_generator
from gen_assets.training.text_data import RandomStarts

Example = tuple[str | None, str | None, str]  # (category, prompt, text)


class EncodedExamples(Dataset):
    """The examples encoded once by the model; a batch of indices -> a padded batch."""

    def __init__(self, model: Any, examples: Sequence[Example]):
        self.model = model
        self.encoded = []
        for i, ex in enumerate(examples):
            if not (isinstance(ex, tuple | list) and len(ex) == 3 and isinstance(ex[2], str) and ex[2].strip()):
                raise ValueError(f"example {i}: expected (category, prompt, text) with a non-empty text, got {ex!r:.120}")
            self.encoded.append(model.example(*ex))

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, rows: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.collate([self.encoded[int(i)] for i in rows])


class WeightedBatches(RandomStarts):
    """`batches` batches of `batch_size` example indices per epoch, drawn by weight, seeded by (seed, epoch)
    (the text loaders' RandomStarts, with the indices drawn by weight instead of uniformly)."""

    def __init__(self, weights: torch.Tensor, batch_size: int, batches: int, seed: int):
        super().__init__(len(weights), batch_size, batches, seed)
        self.weights = weights.double()

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = seeded_generator(self.seed, self.epoch)
        picks = torch.multinomial(self.weights, self.batches * self.batch_size, replacement=True, generator=g)
        yield from picks.view(self.batches, self.batch_size)


def sft_loaders(
    model: Any,
    train: Sequence[Example],
    val: Sequence[Example] = (),
    *,
    batch_size: int,
    batches_per_epoch: int,
    seed: int,
    weights: Any = None,
    val_batch_size: int | None = None,
) -> tuple[DataLoader, DataLoader | None]:
    """(train_loader, val_loader) of padded batches (input_ids, attention_mask, labels); val None when empty."""
    if batch_size < 1 or batches_per_epoch < 1:
        raise ValueError(f"batch_size and batches_per_epoch must be >= 1, got {batch_size}, {batches_per_epoch}")
    if not train:
        raise ValueError("no training examples: the clean table holds no texts (reference copy) to learn from")
    data = EncodedExamples(model, train)
    w = torch.ones(len(data)) if weights is None else torch.as_tensor(weights, dtype=torch.float64).flatten()
    if len(w) != len(data) or not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError(f"weights: expected {len(data)} finite values >= 0 with a positive sum")
    train_loader = DataLoader(data, sampler=WeightedBatches(w, batch_size, batches_per_epoch, seed), batch_size=None)
    if not val:
        return train_loader, None
    val_data = EncodedExamples(model, val)
    size = val_batch_size or batch_size
    # shortest first, in fixed chunks: little padding, the same batches every epoch
    order = sorted(range(len(val_data)), key=lambda i: len(val_data.encoded[i][0]))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    return train_loader, DataLoader(val_data, sampler=chunks, batch_size=None)
