"""A populated home can be moved (`mv`) or copied (`cp -a`): report, lineage, the review pages and `run`
work at the new place, and `prune` in a copy removes the copy's files, never the original's."""

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gen_assets import cli
from gen_assets.settings import Paths
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.web.app import create_app
from gen_assets.web.config import WebConfig
from gen_assets_tests.smoke import smoke_run


@pytest.fixture(scope="module")
def smoke_home(tmp_path_factory):
    """A home after one `gen-assets run --modality image --profile smoke`."""
    home = tmp_path_factory.mktemp("smoke") / "home"
    with smoke_run(home, "image"):
        yield home


@pytest.fixture
def use_home(monkeypatch):
    def use(home: Path) -> Paths:
        monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
        monkeypatch.setenv("DAGSTER_HOME", str(home / "unused"))
        return Paths.from_env()
    return use


def copy_home(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def gen_assets(capsys, *argv) -> str:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def a_sample(paths: Paths) -> str:
    with wh.connect(paths.warehouse, read_only=True) as con:
        return con.execute("SELECT sample_id FROM curated ORDER BY sample_id LIMIT 1").fetchone()[0]


def test_a_moved_home_works(smoke_home, tmp_path, capsys, use_home):
    before = copy_home(smoke_home, tmp_path / "before")
    moved = tmp_path / "moved"
    shutil.move(before, moved)  # `mv`: the old place is gone
    paths = use_home(moved)

    data = json.loads(gen_assets(capsys, "report", "--json"))
    [image] = data["models"]
    for path in image["artifacts"].values():  # absolute, at the new place
        assert Path(path).is_relative_to(moved) and Path(path).is_file()

    sample = a_sample(paths)
    lineage = json.loads(gen_assets(capsys, "lineage", sample, "--json"))
    assert lineage["batch_id"] and Path(lineage["models"][0]["checkpoint"]).is_relative_to(moved)

    config = WebConfig(secret=b"s" * 32, allowed_hosts=("testserver",), busy_retry_seconds=0.3)
    with TestClient(create_app(paths, config), follow_redirects=False) as client:
        for page in ("/gallery", "/dashboard", "/api/samples"):
            assert client.get(page).status_code == 200, page
        png = client.get(f"/samples/{sample}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    gen_assets(capsys, "run", "--modality", "image", "--profile", "smoke")
    with wh.connect(paths.warehouse, read_only=True) as con:
        champion = registry.champion(con, "image")
        assert Path(champion["checkpoint_path"]).is_relative_to(moved)
        assert con.execute("SELECT count(*) FROM generated").fetchone()[0] > 0


def add_old_batch(paths: Paths) -> Path:
    """An old batch of a retired model: what `prune --keep-batches 1` removes."""
    table = batch_table(batch_id="image-old", model_version="dcgan-old", modality="image", categories=["0"],
                        contents=[b"\x89PNG"], seed=0)
    path = write_batch(table, paths.batches / "image", "image-old")
    with wh.connect(paths.warehouse) as con:
        registry.register_batch(con, batch_id="image-old", modality="image", model_version="dcgan-old",
                                path=str(path), grid_path=None, n_samples=1)
        con.execute("UPDATE batches SET created_at = ? WHERE batch_id = 'image-old'", [datetime(2020, 1, 1)])
    return path


def test_prune_in_a_copy_leaves_the_original_alone(smoke_home, tmp_path, capsys, use_home):
    original = copy_home(smoke_home, tmp_path / "original")
    old_batch = add_old_batch(Paths(original))
    copy = copy_home(original, tmp_path / "copy")
    before = sorted(p.relative_to(original) for p in (original / "artifacts").rglob("*") if p.is_file())

    use_home(copy)
    out = gen_assets(capsys, "prune", "--keep-batches", "1", "--keep-models", "1")
    assert "batch image-old" in out
    assert not (copy / old_batch.relative_to(original)).exists()  # the copy's own file went
    assert old_batch.is_file()
    assert sorted(p.relative_to(original) for p in (original / "artifacts").rglob("*") if p.is_file()) == before
    with wh.connect(original / "warehouse.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*) FROM batches WHERE batch_id = 'image-old'").fetchone()[0] == 1


def test_handles_stored_before_a_move_name_the_files_of_the_new_home(tmp_path):
    """What a partial run (`gen-assets retrain`, a materialization in the UI) loads from the IO manager:
    handles pickled at the old place name the files at the new one."""
    from gen_assets.defs.handles import ModelRef
    from gen_assets.defs.resources import rebase_handle

    old, new = tmp_path / "old", tmp_path / "new"
    model = new / "artifacts" / "models" / "image" / "evaluator-1.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    ref = ModelRef("image", "evaluator", "evaluator-1", str(old / "artifacts" / "models" / "image" / "evaluator-1.pt"),
                   "sha")
    assert rebase_handle(ref, new / "artifacts") == ModelRef("image", "evaluator", "evaluator-1", str(model), "sha")
    gone = ModelRef("image", "evaluator", "evaluator-2", str(old / "artifacts" / "models" / "image" / "gone.pt"), "s")
    assert rebase_handle(gone, new / "artifacts") == gone  # not in the new home: left as it was
