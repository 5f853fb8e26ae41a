"""Batch generation from a trained generator, in chunks with progress. Pure module (torch only)."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def generate_per_class(
    model: torch.nn.Module,
    *,
    num_classes: int,
    per_class: int,
    seed: int,
    chunk_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images for every class, labels in class-major order; deterministic for a seed."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    out = []
    for i, start in enumerate(range(0, len(labels), chunk_size)):
        chunk = labels[start : start + chunk_size]
        out.append(model.generate(chunk.to(model.device if hasattr(model, "device") else "cpu"), seed=seed + i).cpu())
        if progress:
            progress(min(start + chunk_size, len(labels)), len(labels))
    return torch.cat(out), labels
