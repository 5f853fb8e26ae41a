"""Resources: the DuckDB warehouse, the artifact store under GEN_ASSETS_HOME, and the Lightning trainer."""

import sys
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from gen_assets.settings import Paths


class ArtifactStore(dg.ConfigurableResource):
    """Files under GEN_ASSETS_HOME: snapshots, model files, training runs, batches, feedback."""

    home: str

    @property
    def paths(self) -> Paths:
        return Paths(Path(self.home)).ensure()


class TrainerResource(dg.ConfigurableResource):
    """How Lightning runs: the device choice stays with Lightning (`accelerator="auto"`).

    `precision` None means bf16-mixed on a GPU that supports it and fp32 on CPU. `strategy`,
    `devices` and `num_nodes` are Lightning's own (e.g. strategy="ddp", devices=2).
    """

    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    progress_bar: bool | None = None  # None: a progress bar only when stderr is a terminal

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
        }


def build_resources(paths: Paths) -> dict:
    return {
        "warehouse": DuckDBResource(database=str(paths.warehouse)),
        "artifacts": ArtifactStore(home=str(paths.home)),
        "trainer": TrainerResource(),
        "io_manager": dg.FilesystemIOManager(base_dir=str(paths.dagster_home / "storage")),
    }
