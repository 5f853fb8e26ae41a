"""The text graph with its artifacts at a URL (GEN_ASSETS_ARTIFACTS=file:///...), the way a team points
them at s3:// or gs://: snapshots, model files, tokenizers, batches and reports go there, through fsspec;
DuckDB reads the snapshot and the batches from the URL; nothing but Lightning's training folders stays
under <home>/artifacts."""

import json

import dagster as dg
import duckdb
import pytest
from upath import UPath

from gen_assets import cli
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets_tests.smoke import smoke_run


@pytest.fixture(scope="module")
def url_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("url")
    home, remote = root / "home", root / "remote"
    url = f"file://{remote}"
    with smoke_run(home, "text", GEN_ASSETS_ARTIFACTS=url) as mp:
        yield home, remote, url, mp


def test_artifacts_land_at_the_url_and_nothing_else_under_home(url_run):
    home, remote, url, _ = url_run
    assert list((remote / "snapshots" / "raw_texts").glob("*.parquet"))
    assert list((remote / "models" / "text").glob("hf-*.pt"))
    assert list((remote / "batches" / "text").glob("*.parquet"))
    local = sorted(p.name for p in (home / "artifacts").iterdir())
    assert local == ["training"], f"only Lightning's run folders stay local, found {local}"
    assert not list(remote.rglob("*.tmp")), "no temporary file is left at the URL"


def test_registry_and_batches_record_urls_that_duckdb_reads(url_run):
    home, remote, url, _ = url_run
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        # stored relative to the URL (store/locations.py) ...
        (stored,) = con.execute("SELECT checkpoint_path FROM models WHERE arch = 'hf' AND status = 'champion'").fetchone()
        assert stored.startswith("models/text/")
        batch_paths = [r[0] for r in con.execute("SELECT path FROM batches").fetchall()]
        assert batch_paths and all(p.startswith("batches/text/") for p in batch_paths)
        # a fresh connection reads the generated view over the batch files at the URL
        assert con.execute("SELECT count(*) FROM generated WHERE modality = 'text'").fetchone()[0] == 36  # 1 per brief
        assert con.execute("SELECT count(*) FROM clean_texts").fetchone()[0] == 96
    with wh.connect(home / "warehouse.duckdb", read_only=True, artifacts=url) as con:
        # ... and read as URLs
        path = registry.champion(con, "text")["checkpoint_path"]
        assert path == f"{url}/{stored}" and UPath(path).is_file()
        assert all(b[1].startswith(url + "/batches/text/") for b in registry.batches_by_age(con))


def test_second_run_reuses_the_models_at_the_url(url_run):
    home, remote, url, _ = url_run
    models_before = sorted(p.name for p in (remote / "models" / "text").iterdir())
    assert cli.main(["run", "--modality", "text", "--profile", "smoke"]) == 0
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("text_generator"))
        assert event.asset_materialization.metadata["reused"].value is True, "the model at the URL was retrained"
    assert sorted(p.name for p in (remote / "models" / "text").iterdir()) == models_before


def test_report_names_the_artifacts_by_url(url_run, capsys):
    home, remote, url, _ = url_run
    capsys.readouterr()
    assert cli.main(["report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (text,) = [m for m in data["models"] if m["modality"] == "text"]
    assert text["artifacts"] and all(str(v).startswith(url) for v in text["artifacts"].values())
    assert (remote / "reports" / "metric_trend_text.png").is_file()
