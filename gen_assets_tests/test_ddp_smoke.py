"""The text graph, smoke profile, with its training under real DDP: 2 CPU processes over gloo
(GEN_ASSETS_STRATEGY=ddp_spawn, GEN_ASSETS_DEVICES=2), through `gen-assets run` like a user would.

Rank agreement itself is checked in gen_assets_tests/models/test_ddp.py (hashes of both ranks' weights);
here: the run succeeds, and rank 0 alone wrote the files and the registry: one model file, one
registry row and one checkpoint set per training run, the history of the spawned ranks recorded.
"""

import json

import dagster as dg
import duckdb
import pytest
import torch.distributed

from gen_assets import cli

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="no gloo backend in this torch")


@pytest.fixture
def ddp_home(tmp_path, monkeypatch):
    """A fresh GEN_ASSETS_HOME, with training on 2 CPU ranks through ddp_spawn."""
    for name, value in {"GEN_ASSETS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "unused"),
                        "GEN_ASSETS_STRATEGY": "ddp_spawn", "GEN_ASSETS_DEVICES": "2",
                        "GEN_ASSETS_ACCELERATOR": "cpu"}.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def one_trained_model(home, modality: str, arch: str, asset: str, registry_rows: str) -> list[dict]:
    """Rank 0 alone wrote: one model file, one registry row (the champion) and one checkpoint set and
    metrics log for the training run of `asset`; `registry_rows` is the SQL condition on `models` that picks its rows.
    Returns the run's history, which came back from the spawned ranks."""
    models = sorted(p.name for p in (home / "artifacts" / "models" / modality).glob(f"{arch}-*.pt"))
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(f"SELECT model_version, status FROM models WHERE {registry_rows}").fetchall()
    assert len(models) == 1 and rows == [(models[0].removesuffix(".pt"), "champion")]
    [run] = (home / "artifacts" / "training" / asset).iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["best.ckpt", "done.json", "last.ckpt", "logs"]
    assert [p.name for p in (run / "logs").iterdir()] == ["version_0"]  # one CSV log, rank 0's
    return json.loads((run / "done.json").read_text())["history"]


def test_text_graph_trains_under_ddp_and_only_rank_zero_writes(ddp_home):
    assert cli.main(["run", "--modality", "text", "--profile", "smoke"]) == 0
    history = one_trained_model(ddp_home, "text", "hf", "text_generator", "modality = 'text'")
    assert history and all("val_loss" in row for row in history), "the ranks' history came back"
    with dg.DagsterInstance.from_config(str(ddp_home / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("text_generator"))
        assert event.asset_materialization.metadata["epochs"].value == len(history)


def test_image_graph_trains_under_ddp_and_only_rank_zero_writes(ddp_home):
    # the DCGAN's spectral-norm discriminator travels to the ranks as config + state dict, and its two
    # backward passes per step need DDP's unused-parameter search: both wired in fit()
    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
    history = one_trained_model(ddp_home, "image", "dcgan", "image_generator", "arch = 'dcgan'")
    assert history and all("val_fid" in row and "g_loss" in row for row in history)
