"""The product path: `gen-assets run --profile smoke` through Dagster, then `gen-assets report --json`."""

import json
from pathlib import Path

import duckdb
import pytest

from gen_assets import cli

IMAGE_METRIC_KEYS = {"fid", "fid_noise", "fid_real_floor", "kid", "inception_score", "class_accuracy"}


@pytest.fixture(scope="module")
def smoke_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEN_ASSETS_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "unused"))  # restored afterwards; the CLI points it into home
    try:
        assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
        yield home
    finally:
        mp.undo()


def report(home, capsys, monkeypatch):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
    capsys.readouterr()
    assert cli.main(["report", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_state_lives_under_gen_assets_home(smoke_home):
    assert (smoke_home / "warehouse.duckdb").is_file()
    assert (smoke_home / "dagster_home" / "dagster.yaml").is_file()
    assert any((smoke_home / "dagster_home").rglob("*.db")), "the Dagster SQLite instance is under the home"
    assert list((smoke_home / "artifacts" / "snapshots" / "raw_images").glob("*.parquet"))
    assert list((smoke_home / "artifacts" / "models" / "image").glob("dcgan-*.pt"))
    assert list((smoke_home / "artifacts" / "batches" / "image").glob("*.png"))


def test_report_json_is_the_stable_interface(smoke_home, capsys, monkeypatch):
    data = report(smoke_home, capsys, monkeypatch)
    [model] = data["models"]
    assert set(model) == {"modality", "version", "arch", "status", "created_at", "metrics", "artifacts"}
    assert model["modality"] == "image" and model["arch"] == "dcgan" and model["status"] == "champion"
    assert IMAGE_METRIC_KEYS <= set(model["metrics"])
    assert model["metrics"]["fid_noise"] > model["metrics"]["fid_real_floor"]
    for path in model["artifacts"].values():
        assert Path(path).is_file() and Path(path).is_relative_to(smoke_home)


def test_warehouse_tables_and_generated_view(smoke_home):
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        n_clean = con.execute("SELECT count(*) FROM clean_images").fetchone()[0]
        assert n_clean > 1500  # the digits: 1797 rows, a few exact duplicates
        n_gen, n_cat = con.execute("SELECT count(*), count(DISTINCT category) FROM generated").fetchone()
        assert (n_gen, n_cat) == (200, 10)  # smoke: 20 per category
        metrics = {r[0] for r in con.execute("SELECT DISTINCT metric FROM metrics_history").fetchall()}
        assert IMAGE_METRIC_KEYS <= metrics
        assert con.execute("SELECT count(*) FROM models WHERE status = 'champion'").fetchone()[0] == 1


def test_second_run_with_unchanged_inputs_reuses_the_models(smoke_home, capsys, monkeypatch):
    before = report(smoke_home, capsys, monkeypatch)["models"][0]["version"]
    monkeypatch.setenv("GEN_ASSETS_HOME", str(smoke_home))
    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert before in out
    runs = list((smoke_home / "artifacts" / "training" / "image_generator").iterdir())
    assert len(runs) == 1, "same data and config: one training run, reused"
