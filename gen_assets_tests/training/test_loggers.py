"""fit()'s Lightning loggers: where the curves go (csv by default, TensorBoard, MLflow, none)."""

import csv
import importlib.util

import numpy as np
import pytest
import torch

from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.training.fit import fit
from gen_assets.training.image_data import image_loaders


def tiny_fit(run_dir, **kwargs):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(48, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=48)
    train, val = image_loaders(x[:32], y[:32], x[32:], y[32:], batch_size=8, seed=0)
    model = ImageEvaluator(EvaluatorConfig(8, 1, 3, num_features=8, width=4))
    return fit(model, train, val, run_dir=run_dir, monitor="val_loss", seed=0, accelerator="cpu", **kwargs)


def test_the_csv_logger_is_the_default_and_a_resume_keeps_the_earlier_curve(tmp_path):
    result = tiny_fit(tmp_path / "run", max_epochs=2)
    with open(tmp_path / "run" / "logs" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"epoch", "train_loss", "val_loss", "val_acc"} <= set(rows[0])
    val_losses = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert val_losses == pytest.approx([row["val_loss"] for row in result.history])

    tiny_fit(tmp_path / "run", max_epochs=3)  # resumes from last.ckpt: a new version beside the first
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == ["version_0", "version_1"]
    assert (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().count("\n") == len(rows) + 1


def test_no_logger_writes_no_logs(tmp_path):
    tiny_fit(tmp_path / "run", max_epochs=1, logger="none")
    assert not (tmp_path / "run" / "logs").exists()
    with pytest.raises(ValueError, match="csv, tensorboard, mlflow, none"):
        tiny_fit(tmp_path / "other", max_epochs=1, logger="wandb")


def test_the_tensorboard_logger_writes_event_files_with_the_curves(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install .[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_fit(tmp_path / "run", max_epochs=2, logger="tensorboard")
    [events] = (tmp_path / "run" / "logs" / "version_0").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train_loss", "val_loss", "val_acc"} <= set(scalars)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_the_mlflow_logger_without_mlflow_names_the_extra_before_training(tmp_path):
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'gen_assets\[mlflow\]'"):
        tiny_fit(tmp_path / "run", max_epochs=1, logger="mlflow")
    assert not list((tmp_path / "run").glob("*.ckpt"))
