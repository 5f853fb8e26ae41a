"""Language-model validation loss, estimated nanoGPT's way (mean over fixed random windows). Pure."""

from __future__ import annotations

import torch

from gen_assets.training.text_data import text_loaders


@torch.no_grad()
def validation_loss(model: torch.nn.Module, ids: torch.Tensor, *, batch_size: int = 32, batches: int = 50, seed: int = 0) -> float:
    """Mean cross-entropy (nats per token) of `model` on `batches` random windows of the token stream."""
    block = model.config.block_size
    _, loader = text_loaders(ids, ids, block_size=block, batch_size=batch_size, seed=seed, iters_per_epoch=1, val_batches=batches)
    was_training = model.training
    model.eval()
    losses = []
    for x, y in loader:
        _, loss = model(x.to(model.device), y.to(model.device))
        losses.append(float(loss))
    model.train(was_training)
    return sum(losses) / len(losses)
