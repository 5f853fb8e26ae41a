"""Resources: the DuckDB warehouse, the artifact store under GEN_ASSETS_HOME, the Lightning trainer, and
the IO manager that keeps the handles passed between assets under GEN_ASSETS_HOME/dagster_home/storage."""

import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

import dagster as dg
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from dagster_duckdb import DuckDBResource

from gen_assets.settings import Paths
from gen_assets.store import locations
from gen_assets.store.warehouse import bind_connection
from gen_assets.training.fit import LOGGERS


class ArtifactStore(dg.ConfigurableResource):
    """Files under GEN_ASSETS_HOME (training runs, feedback) and the artifacts: snapshots, model files and
    batches, under <home>/artifacts or at `artifacts_url` (a folder or an fsspec URL such as s3://b/p)."""

    home: str
    artifacts_url: str | None = None

    @property
    def paths(self) -> Paths:
        return Paths(Path(self.home), self.artifacts_url).ensure()


class TrainerResource(dg.ConfigurableResource):
    """How Lightning runs: the device choice stays with Lightning (`accelerator="auto"`).

    `precision` None means bf16-mixed on a GPU that supports it and fp32 on CPU. `strategy`,
    `devices` and `num_nodes` are Lightning's own, e.g. strategy="ddp_spawn", devices=2 (plain "ddp"
    re-launches the current command once per rank, which inside a Dagster step is the step worker).

    `logger` sends the logged metrics (losses, val_fid, ...) to a Lightning logger under the training
    run's folder: "csv" (logs/version_N/metrics.csv), "tensorboard" (the tensorboard extra), "mlflow"
    (the mlflow extra; to `mlflow_tracking_uri`, else MLflow's own MLFLOW_TRACKING_URI, else a file
    store in the run folder) or "none".
    """

    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    progress_bar: bool | None = None  # None: a progress bar only when stderr is a terminal
    logger: str = "csv"
    mlflow_tracking_uri: str | None = None

    def fit_kwargs(self) -> dict:
        devices: int | str = int(self.devices) if self.devices.isdigit() else self.devices
        show = sys.stderr.isatty() if self.progress_bar is None else self.progress_bar
        return {
            "accelerator": self.accelerator,
            "devices": devices,
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
            "precision": self.precision,
            "progress_bar": show,
            "logger": self.logger,
            "mlflow_tracking_uri": self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        }


TRAINER_ENV = {  # TrainerResource field -> the environment variable that sets it for `gen-assets` and the UI
    "accelerator": "GEN_ASSETS_ACCELERATOR",
    "devices": "GEN_ASSETS_DEVICES",
    "strategy": "GEN_ASSETS_STRATEGY",
    "num_nodes": "GEN_ASSETS_NUM_NODES",
    "precision": "GEN_ASSETS_PRECISION",
    "logger": "GEN_ASSETS_LOGGER",
}


def trainer_from_env() -> TrainerResource:
    """TrainerResource with the fields set in the environment (e.g. GEN_ASSETS_STRATEGY=ddp_spawn,
    GEN_ASSETS_DEVICES=2); the run config of a single run (resources.trainer.config) still overrides."""
    values = {field: os.environ[var] for field, var in TRAINER_ENV.items() if os.environ.get(var)}
    if "num_nodes" in values:
        if not values["num_nodes"].isascii() or not values["num_nodes"].isdigit() or int(values["num_nodes"]) < 1:
            raise ValueError(f"GEN_ASSETS_NUM_NODES must be a whole number >= 1, got {values['num_nodes']!r}")
        values["num_nodes"] = int(values["num_nodes"])
    if "logger" in values and values["logger"] not in LOGGERS:
        raise ValueError(f"GEN_ASSETS_LOGGER must be one of {', '.join(LOGGERS)}, got {values['logger']!r}")
    return TrainerResource(**values)


DUCKDB_ENV = {  # DuckDB setting -> the environment variable that sets it on every warehouse connection
    "memory_limit": "GEN_ASSETS_DUCKDB_MEMORY_LIMIT",  # e.g. "4GB": cleaning spills to <warehouse>.tmp beyond it
    "threads": "GEN_ASSETS_DUCKDB_THREADS",
    "temp_directory": "GEN_ASSETS_DUCKDB_TEMP_DIRECTORY",
}


class Warehouse(DuckDBResource):
    """The DuckDB warehouse: a DuckDBResource whose every connection can read the artifacts at a URL
    (GEN_ASSETS_ARTIFACTS), which the `generated` view and the snapshot reads need, and is bound to the
    home's artifacts root, against which the stored artifact paths are relative (store/locations.py)."""

    artifacts_url: str | None = None

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as con:
            try:
                bind_connection(con, self.database, self.artifacts_url)
                yield con
            finally:  # DuckDBResource closes it only when the block succeeds: a failed step must not keep the file
                con.close()


def warehouse_from_env(paths: Paths) -> Warehouse:
    """The DuckDB warehouse, with the settings given in the environment (see DUCKDB_ENV)."""
    config = {setting: os.environ[var] for setting, var in DUCKDB_ENV.items() if os.environ.get(var)}
    if "threads" in config:
        if not config["threads"].isascii() or not config["threads"].isdigit() or int(config["threads"]) < 1:
            raise ValueError(f"GEN_ASSETS_DUCKDB_THREADS must be a whole number >= 1, got {config['threads']!r}")
        config["threads"] = int(config["threads"])
    return Warehouse(database=str(paths.warehouse), connection_config=config, artifacts_url=paths.artifacts_location)


HANDLE_PATH_FIELDS = ("path", "grid_path")  # the file fields of the handles (defs/handles.py, Snapshot)


def rebase_handle(value, artifacts_root):
    """A handle loaded from storage with its file paths placed in the current home: a handle stored
    before the home was moved or copied names the old place (locations.resolve rebases it)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    names = {f.name for f in dataclasses.fields(value)}
    changes = {name: locations.resolve(getattr(value, name), artifacts_root)
               for name in HANDLE_PATH_FIELDS if name in names and isinstance(getattr(value, name), str)}
    return dataclasses.replace(value, **changes) if changes else value


class HandleIOManager(PickledObjectFilesystemIOManager):
    """Dagster's pickling IO manager; the handles it loads name files in the current home."""

    def __init__(self, base_dir: str, artifacts_root: str):
        super().__init__(base_dir=base_dir)
        self.artifacts_root = artifacts_root

    def load_from_path(self, context: dg.InputContext, path):
        return rebase_handle(super().load_from_path(context, path), self.artifacts_root)


class HomeIOManager(dg.ConfigurableIOManagerFactory):
    """The handles passed between assets, pickled under <home>/dagster_home/storage."""

    base_dir: str
    artifacts_root: str

    def create_io_manager(self, context) -> HandleIOManager:
        return HandleIOManager(self.base_dir, self.artifacts_root)


def build_resources(paths: Paths) -> dict:
    return {
        "warehouse": warehouse_from_env(paths),
        "artifacts": ArtifactStore(home=str(paths.home), artifacts_url=paths.artifacts_location),
        "trainer": trainer_from_env(),
        "io_manager": HomeIOManager(base_dir=str(paths.dagster_home / "storage"), artifacts_root=str(paths.artifacts)),
    }
