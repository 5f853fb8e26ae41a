"""Image arrays as the warehouse stores them (uint8 N x H x W x C) -> batches the models train on.

Models take float tensors in [0, 1] shaped N x C x H x W and int64 category indices. Pure torch + numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C -> float32 N x C x H x W in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images shaped N x H x W x C, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0..255), got dtype {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


def as_category_indices(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A 1-d int64 tensor of category indices in [0, num_classes), or a clear error."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-d tensor of category indices, got shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{lo}, {hi}]")
    return labels


def _labels_to_tensor(labels: np.ndarray, n: int, name: str) -> torch.Tensor:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name}: expected {n} labels shaped ({n},), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected integer category indices, got dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise ValueError(f"{name}: category indices must be >= 0, got {labels.min()}")
    return torch.from_numpy(labels.astype(np.int64))


def seeded_generator(*entropy: int) -> torch.Generator:
    """A torch generator seeded from several integers, e.g. (seed, epoch). SeedSequence mixes them into
    an independent stream; seed + epoch would let the streams of neighbouring runs overlap."""
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


class EpochShuffle(Sampler):
    """A fresh permutation every epoch, drawn from (seed, epoch) alone (Lightning calls set_epoch), so
    a run resumed at an epoch boundary sees the batches an uninterrupted run would have seen."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        yield from torch.randperm(self.n, generator=seeded_generator(self.seed, self.epoch)).tolist()


def image_loaders(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray | None,
    val_y: np.ndarray | None,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader | None]:
    """(train_loader, val_loader); the train loader reshuffles each epoch from a seeded generator.

    The whole split is converted once up front: our image sets are small, and tensor indexing beats
    per-item decoding by a wide margin for 8x8..32x32 images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = images_to_tensor(train_x)
    if len(x) == 0:
        raise ValueError("the train split is empty")
    y = _labels_to_tensor(train_y, len(x), "train_y")
    # drop_last keeps every step the same size (a lone 1-image batch gives GAN losses a spike) but
    # only when there is more than one batch to begin with.
    train = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        sampler=EpochShuffle(len(x), seed),
        drop_last=len(x) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    if val_x is None:
        return train, None
    if val_y is None:
        raise ValueError("val_x given without val_y")
    vx = images_to_tensor(val_x)
    if vx.shape[1:] != x.shape[1:]:
        raise ValueError(f"val images are {tuple(vx.shape[1:])} (C, H, W) but train images are {tuple(x.shape[1:])}")
    vy = _labels_to_tensor(val_y, len(vx), "val_y")
    val = DataLoader(
        TensorDataset(vx, vy),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    return train, val
