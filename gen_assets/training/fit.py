"""One way to fit any of our LightningModules: checkpoints, resume, early stopping, history, progress.

Pure module (torch + Lightning only). The Dagster layer passes `log` (its run logger) so per-epoch
progress shows live in the UI; `progress_bar` is for terminals; `logger` sends the logged metrics to
the tools ML engineers read curves in (a CSV file, TensorBoard, MLflow).
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import importlib.util

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

LOGGERS = ("csv", "tensorboard", "mlflow", "none")

# What Lightning prints that says nothing about our runs, silenced by message so that every other
# warning still shows: adverts, and warnings about choices fit() and the project make on purpose.
QUIET_WARNINGS = (
    # our image and text sets are tensors in memory: loader workers would add start-up time, not speed
    r"The '\w+' does not have many workers",
    # accelerator="cpu" on a GPU machine is a deliberate choice (tests, GEN_ASSETS_ACCELERATOR=cpu)
    r"GPU available but not used",
    # our modules log per epoch only, so the per-step logging interval is irrelevant
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # the run folder holds last.ckpt on purpose: it is what a killed run resumes from
    r"Checkpoint directory .* exists and is not empty",
    # fit(val_dataloaders=None) is deliberate: fine-tuning has no val split, and fit() then skips validation
    r"You defined a `validation_step` but have no `val_dataloader`",
    # Lightning's own use of a torch API that torch deprecated: nothing for us to change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
# Lightning's INFO-level adverts for litlogger and litmodels
QUIET_INFO_PREFIX = "💡 Tip:"
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _drop_tips(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(QUIET_INFO_PREFIX)


def _install_quiet_filters() -> None:
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_drop_tips)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence QUIET_WARNINGS and Lightning's tips in this process for the duration of the block."""
    with warnings.catch_warnings():
        _install_quiet_filters()
        try:
            yield
        finally:
            for name in _RANK_ZERO_LOGGERS:
                logging.getLogger(name).removeFilter(_drop_tips)


class QuietRanks(Callback):
    """The same silence in the ranks that ddp_spawn starts: they are fresh processes, which the
    caller's warning filters do not reach. There the filters stay for the life of the rank."""

    def __init__(self) -> None:
        self._pid = os.getpid()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if os.getpid() != self._pid:
            _install_quiet_filters()


def default_precision(accelerator: str = "auto") -> str:
    """bf16 mixed precision on a GPU that supports it, full fp32 elsewhere."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class History(Callback):
    """Keeps one dict of logged metrics per epoch; saved in checkpoints so a resumed run keeps its curve."""

    def __init__(self, log: Callable[[str], None] | None = None, every: int = 1):
        self.rows: list[dict[str, float]] = []
        self.emit = log
        self.every = max(1, every)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        for k, v in trainer.callback_metrics.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                row[k] = float(v)
        self.rows.append(row)
        if self.emit and (trainer.current_epoch % self.every == 0 or trainer.current_epoch + 1 == trainer.max_epochs):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            elapsed = time.perf_counter() - self._t0
            self.emit(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({elapsed:.0f}s): {shown}")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def __getstate__(self) -> dict[str, Any]:
        # sent to the processes of ddp_spawn: the run logger (Dagster's) stays in the calling process
        return {**self.__dict__, "emit": None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class RandomState(Callback):
    """Saves the random generators' state in every checkpoint and restores it on resume, so a resumed
    run draws the same noise (dropout, GAN latents, VAE samples) as an uninterrupted one.

    Under DDP it also gives each rank its own noise. Every spawned rank starts from the run's seed
    (Lightning re-seeds each process with it), so without an offset all ranks would draw the same GAN
    latents and dropout masks, and the extra ranks would add data but no noise diversity. Ranks other
    than 0 re-seed from the seed and their rank, as nanoGPT does (seed + rank offset). Rank 0, and so
    every single-process run, keeps exactly the noise it always had. A checkpoint holds rank 0's state
    only, so on resume the other ranks branch off it: deterministic, but not the noise an uninterrupted
    DDP run would have drawn (a single-process resume is exact).
    """

    def __init__(self) -> None:
        self._rank = 0
        self._world_size = 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._rank, self._world_size = trainer.global_rank, trainer.world_size
        if self._world_size > 1 and self._rank > 0:
            self._seed_this_rank(torch.initial_seed())

    def _seed_this_rank(self, base: int) -> None:
        seed = (base + 1_000_003 * self._rank) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def state_dict(self) -> dict[str, Any]:
        # plain tensors and ints only: Lightning resumes with torch.load(weights_only=True)
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        if self._world_size > 1 and self._rank > 0:
            # the checkpoint holds rank 0's state: the other ranks branch off it, deterministically
            self._seed_this_rank(int(torch.randint(0, 2**31, (1,)).item()))


class RankZeroBuffers(Callback):
    """Under DDP, hand rank 0's buffers to every rank before each validation.

    Batch-norm running statistics are buffers that each rank updates with its own batches; DDP hands
    rank 0's out at the start of every training step, so after the last step before validation they
    differ between ranks. Generated validation samples (the DCGAN's g_ema, the VAE's decoder, in eval
    mode) read them, so without this each rank would measure a slightly different model, none of them
    exactly the one rank 0 checkpoints. DDP would broadcast the same buffers at the next step anyway.
    """

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in pl_module.buffers():
                torch.distributed.broadcast(buffer, src=0)


def make_logger(kind: str, run_dir: Path, *, mlflow_tracking_uri: str | None = None) -> Logger | None:
    """The Lightning logger named by `kind` (one of LOGGERS), writing under run_dir/logs.

    csv: run_dir/logs/version_N/metrics.csv (+ hparams.yaml); tensorboard: event files in the same
    place (`tensorboard --logdir <run_dir>/logs`); mlflow: a run in the experiment "gen_assets" at
    `mlflow_tracking_uri`, or in a file store at run_dir/logs/mlruns without one (the caller reads
    MLflow's MLFLOW_TRACKING_URI: TrainerResource does). Each start of the
    run, a resume included, is a new version: the curves of a killed run are kept, not overwritten.
    """
    if kind not in LOGGERS:
        raise ValueError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGERS)}")
    logs = run_dir / "logs"
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=run_dir, name="logs")
    if kind == "tensorboard":
        if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
            raise ModuleNotFoundError(
                "logger 'tensorboard' needs the tensorboard package: pip install 'gen_assets[tensorboard]'"
            )
        # default_hp_metric=False: no placeholder "hp_metric" curve at -1
        return TensorBoardLogger(save_dir=run_dir, name="logs", default_hp_metric=False)
    if importlib.util.find_spec("mlflow") is None:
        raise ModuleNotFoundError("logger 'mlflow' needs the mlflow package: pip install 'gen_assets[mlflow]'")
    # one MLflow run per training run folder (<asset>/<key of config and inputs>), named after it
    return MLFlowLogger(experiment_name="gen_assets", run_name=f"{run_dir.parent.name}/{run_dir.name}",
                        tracking_uri=mlflow_tracking_uri, save_dir=str(logs / "mlruns"))


def use_tensor_cores(trainer: L.Trainer) -> None:
    """On a CUDA accelerator, let fp32 matmuls run on TF32 tensor cores ("high"; torch's default is
    "highest"). bf16-mixed training barely notices, but fp32 runs (precision="32-true", GPUs without
    bf16) and the fp32 parts of a mixed run are several times faster, for a 10-bit mantissa in the
    matmul inputs that training noise dwarfs."""
    if isinstance(trainer.accelerator, CUDAAccelerator):
        torch.set_float32_matmul_precision("high")


class TensorCores(Callback):
    """use_tensor_cores in every rank: the setting is per process, and ddp_spawn's ranks are new ones."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        use_tensor_cores(trainer)


@dataclass
class FitResult:
    best_path: str | None  # best checkpoint by the monitored metric (None when nothing is monitored)
    last_path: str
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0
    resumed_from: str | None = None
    best_score: float | None = None


def fit(
    module: L.LightningModule,
    train_dataloaders: Any,
    val_dataloaders: Any = None,
    *,
    run_dir: str | Path,
    max_epochs: int,
    monitor: str | None = None,
    mode: str = "min",
    patience: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str | None = None,
    gradient_clip_val: float | None = None,
    accumulate_grad_batches: int = 1,
    max_steps: int = -1,
    val_check_interval: int | float | None = None,
    check_val_every_n_epoch: int = 1,
    log: Callable[[str], None] | None = None,
    log_every_epochs: int = 1,
    progress_bar: bool = False,
    resume: bool = True,
    extra_callbacks: Sequence[Callback] = (),
    logger: str = "csv",
    mlflow_tracking_uri: str | None = None,
) -> FitResult:
    """Train `module`; resume from run_dir/last.ckpt when it exists (a killed run continues).

    `logger` (one of LOGGERS) and `mlflow_tracking_uri`: see make_logger. `accumulate_grad_batches`
    batches make one optimizer step (Lightning's gradient accumulation; max_steps counts optimizer steps).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # built first: a missing optional package fails the run before any training
    lightning_logger = make_logger(logger, run_dir, mlflow_tracking_uri=mlflow_tracking_uri)
    L.seed_everything(seed, workers=True, verbose=False)
    # Two checkpoints: best.ckpt by the monitored metric, and last.ckpt rewritten after EVERY epoch (what
    # a killed run resumes from). ModelCheckpoint(save_last=True) alone moves last.ckpt only on epochs
    # that saved a new best, so a run killed after a plateau would repeat epochs, and without a monitor
    # there would be no last.ckpt until the end.
    last_checkpoint = ModelCheckpoint(dirpath=run_dir, filename="last", monitor=None, save_top_k=1,
                                      enable_version_counter=False)
    history = History(log=log, every=log_every_epochs)
    callbacks: list[Callback] = [last_checkpoint, history, RandomState(), RankZeroBuffers(), QuietRanks(),
                                 TensorCores(), *extra_callbacks]
    checkpoint = None
    if monitor:
        checkpoint = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                                     enable_version_counter=False)
        callbacks.insert(0, checkpoint)
    if monitor and patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    precision = precision or default_precision(accelerator)

    def make_trainer(strategy: str) -> L.Trainer:
        if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook") and not module.automatic_optimization:
            # a manual-optimization step (the GAN's) takes one backward per optimizer, each reaching only that
            # optimizer's parameters; DDP's gradient sync accepts such partial passes only when it looks for
            # the parameters a backward did not reach, and otherwise fails on the first step
            strategy = f"{strategy}_find_unused_parameters_true"
        if isinstance(strategy, str) and "spawn" in strategy:
            # the spawned ranks receive the module and loaders pickled; torch's default file-descriptor
            # sharing of their tensors fails in some sandboxes ("unable to resize file"), shared files do not
            torch.multiprocessing.set_sharing_strategy("file_system")
        return L.Trainer(
            default_root_dir=run_dir,
            max_epochs=max_epochs,
            max_steps=max_steps,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            precision=precision,
            gradient_clip_val=gradient_clip_val,
            accumulate_grad_batches=accumulate_grad_batches,
            callbacks=callbacks,
            logger=lightning_logger if lightning_logger is not None else False,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            deterministic=not torch.cuda.is_available(),
            val_check_interval=val_check_interval,
            check_val_every_n_epoch=check_val_every_n_epoch,
            num_sanity_val_steps=0,
            limit_val_batches=None if val_dataloaders is not None else 0,
        )

    # Trainer() prints the tips and the GPU warning, fit() the rest (QuietRanks covers spawned ranks)
    with quiet_lightning():
        trainer = make_trainer(strategy)
        if strategy == "auto" and trainer.num_devices * trainer.num_nodes > 1:
            # Lightning's own pick for several devices (devices="auto" on a multi-GPU machine) is "ddp", which
            # re-launches the current command once per rank: inside a Dagster step, that is the step worker.
            # The ranks are spawned from this process instead.
            trainer = make_trainer("ddp_spawn")
        use_tensor_cores(trainer)  # here too, before Lightning checks the setting (and advises it) at fit start
        last = run_dir / "last.ckpt"
        resumed_from = str(last) if resume and last.exists() else None
        if resumed_from and log:
            log(f"resuming from {resumed_from}")
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders, val_dataloaders, ckpt_path=resumed_from)
    seconds = time.perf_counter() - t0
    epochs = trainer.current_epoch
    if not history.rows and last.exists():
        # the training ran in processes this one started (ddp_spawn, ddp_fork): the weights came back
        # (Lightning loads rank 0's into `module`), the callbacks' state is in last.ckpt
        state = torch.load(last, map_location="cpu", weights_only=False)
        history.load_state_dict(state["callbacks"].get(history.state_key, {}))
        if checkpoint is not None:
            checkpoint.load_state_dict(state["callbacks"].get(checkpoint.state_key, {}))
        epochs = max(epochs, int(state["epoch"]) + 1)
    best = (checkpoint.best_model_path or None) if checkpoint else None
    best_score = None
    if checkpoint is not None and checkpoint.best_model_score is not None:
        best_score = float(checkpoint.best_model_score)
    return FitResult(
        best_path=best,
        last_path=str(last),
        history=history.rows,
        epochs=epochs,
        seconds=seconds,
        resumed_from=resumed_from,
        best_score=best_score,
    )
