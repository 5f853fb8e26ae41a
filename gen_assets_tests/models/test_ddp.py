"""Real DDP on CPU: fit() with strategy="ddp_spawn", 2 processes talking over gloo.

Both ranks end with the same weights (gradients are all-reduced every step), the process that called
fit() gets them back with the run's history and best checkpoint, and only rank 0 writes into the run
folder (Lightning's checkpointing is rank-0 only; the project writes model files and registry rows
after fit() returns, in the calling process only).
"""

import hashlib
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed

from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.models.text_data import text_loaders
from gen_assets.models.training import fit

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend for CPU DDP")


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankReport(L.Callback):
    """Each rank writes its world size and final weights' hash to `folder` (outside the run folder)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        report = f"{trainer.world_size} {weights_hash(pl_module)}"
        (Path(self.folder) / f"rank{trainer.global_rank}.txt").write_text(report)


def test_two_cpu_processes_agree_and_only_rank_zero_writes(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16, learning_rate=1e-2,
                          warmup_iters=2, lr_decay_iters=8))
    ids = torch.randint(0, 13, (400,), generator=torch.Generator().manual_seed(1))
    train_loader, val_loader = text_loaders(ids, ids[:120], block_size=16, batch_size=4, seed=0, iters_per_epoch=4,
                                            val_batches=2)
    reports, run_dir = tmp_path / "reports", tmp_path / "run"
    reports.mkdir()
    result = fit(model, train_loader, val_loader, run_dir=run_dir, max_epochs=2, monitor="val_loss", seed=0,
                 accelerator="cpu", devices=2, strategy="ddp_spawn", extra_callbacks=[RankReport(str(reports))])

    rank0, rank1 = ((reports / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0[0] == rank1[0] == "2", "two processes took part"
    assert rank0[1] == rank1[1], "both ranks end with the same weights"
    assert weights_hash(model) == rank0[1], "the caller got rank 0's weights back"
    assert len(result.history) == 2 and all("val_loss" in row for row in result.history)
    assert result.best_path and Path(result.best_path).is_file() and result.best_score is not None
    assert result.epochs == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.ckpt", "last.ckpt"]  # one copy, rank 0's
