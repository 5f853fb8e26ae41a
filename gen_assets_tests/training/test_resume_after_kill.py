"""A training run SIGKILLed mid-way and re-run continues from run_dir/last.ckpt and ends where an uninterrupted run does.

A child process trains a tiny GPT through `fit()` and kills itself (SIGKILL: no cleanup, no
exception handling) partway through epoch 2, after the end-of-epoch-1 checkpoint was written.
Re-running `fit()` on the same run_dir resumes from that checkpoint and runs only the remaining
steps (epoch 2 again from its start, then epoch 3); the final weights, step count, history and
best score equal those of an uninterrupted run with the same seed, bit for bit (CPU, deterministic
algorithms, loaders seeded per epoch, the random generators' state restored from the checkpoint),
with or without a monitored metric and with dropout.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from gen_assets.training.image_data import image_loaders
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.training.text_data import text_loaders
from gen_assets.training.fit import fit

ITERS, EPOCHS, KILL_AT_STEP = 4, 3, 6  # killed 2 steps into epoch 2, after epoch 1's last.ckpt


class Steps(L.Callback):
    """Counts the optimizer steps run in this process; SIGKILLs the process at global step `kill_at`."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.ran, self.global_step = kill_at, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ran += 1
        if self.kill_at and trainer.global_step >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, trainer, pl_module):
        self.global_step = trainer.global_step


def train(run_dir, monitor="val_loss", kill_at_step=None, dropout=0.0, kind="gpt"):
    """The same fresh model, data and seed every time; the child process calls this with kill_at_step.

    kind "gpt": a tiny GPT on text windows; "image": the image evaluator on shuffled image batches."""
    torch.manual_seed(0)
    if kind == "image":
        model = ImageEvaluator(EvaluatorConfig(image_size=8, channels=1, num_classes=3, num_features=8, width=8,
                                               dropout=dropout))
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, size=(4 * ITERS, 8, 8, 1), dtype=np.uint8)
        labels = rng.integers(0, 3, size=4 * ITERS)
        train_loader, val_loader = image_loaders(images, labels, images[:8], labels[:8], batch_size=4, seed=0)
    else:
        model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=dropout,
                              learning_rate=1e-2, warmup_iters=2, lr_decay_iters=ITERS * EPOCHS))
        ids = torch.randint(0, 13, (400,), generator=torch.Generator().manual_seed(1))
        train_loader, val_loader = text_loaders(ids, ids[:100], block_size=16, batch_size=4, seed=0,
                                                iters_per_epoch=ITERS, val_batches=2)
    steps = Steps(kill_at_step)
    result = fit(model, train_loader, val_loader if monitor else None, run_dir=run_dir, max_epochs=EPOCHS,
                 monitor=monitor, seed=0, accelerator="cpu", extra_callbacks=[steps])
    return model, result, steps


@pytest.mark.parametrize(("monitor", "dropout"), [
    ("val_loss", 0.0),
    (None, 0.0),  # no best checkpoint: last.ckpt must still be written every epoch
    ("val_loss", 0.1),  # dropout draws from torch's global generator: its state is in the checkpoint too
    pytest.param("val_loss", 0.2, id="image"),  # shuffled image batches: the order depends on the epoch alone
])
def test_a_killed_run_resumes_from_last_ckpt_and_equals_an_uninterrupted_run(tmp_path, request, monitor, dropout):
    kind = "image" if request.node.callspec.id == "image" else "gpt"
    run_dir = tmp_path / "killed"
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys; from gen_assets_tests.training.test_resume_after_kill import train; "
         "train(sys.argv[1], sys.argv[2] or None, kill_at_step=int(sys.argv[3]), dropout=float(sys.argv[4]), "
         "kind=sys.argv[5])",
         str(run_dir), monitor or "", str(KILL_AT_STEP), str(dropout), kind],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    last = run_dir / "last.ckpt"
    assert last.exists(), "the kill landed after epoch 1's checkpoint"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == ITERS

    resumed_model, resumed, resumed_steps = train(run_dir, monitor, dropout=dropout, kind=kind)
    straight_model, straight, straight_steps = train(tmp_path / "straight", monitor, dropout=dropout, kind=kind)

    assert straight.resumed_from is None and resumed.resumed_from == str(last)
    assert resumed_steps.ran == ITERS * (EPOCHS - 1) and straight_steps.ran == ITERS * EPOCHS
    assert resumed_steps.global_step == straight_steps.global_step == ITERS * EPOCHS
    assert resumed.epochs == straight.epochs == EPOCHS
    assert resumed.history == straight.history and len(resumed.history) == EPOCHS
    assert resumed.best_score == straight.best_score
    straight_state = straight_model.state_dict()
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, straight_state[name]), name
