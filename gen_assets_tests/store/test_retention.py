"""Retention: old checkpoints and batches go; a champion, its base models and anything rated, curated or
still in use stay, and the `generated` view never points at a missing file."""

import json

import duckdb
import pandas as pd
import pytest

from gen_assets.store import locations, registry, retention
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.store.samples import replace_curated


@pytest.fixture
def home(tmp_path):
    con = wh.connect(tmp_path / "w.duckdb", artifacts=str(tmp_path))  # tmp_path is the artifacts root
    wh.ensure_schema(con)
    yield tmp_path, con
    con.close()


def add_model(tmp_path, con, version, base=None, modality="image"):
    path = tmp_path / "models" / f"{version}.pt"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"weights")
    inputs = {"base_model": base} if base else {}
    registry.register_model(con, model_version=version, modality=modality, arch="dcgan", config={}, input_versions=inputs,
                            checkpoint_path=str(path), checkpoint_sha=version)
    run = tmp_path / "training" / "image_generator" / f"run-{version}"
    run.mkdir(parents=True)
    (run / "done.json").write_text(json.dumps({"version": version}))
    (run / "last.ckpt").write_bytes(b"ckpt")
    return path


def add_batch(tmp_path, con, batch_id, version, modality="image"):
    table = batch_table(batch_id=batch_id, model_version=version, modality=modality, categories=["a"],
                        contents=[b"\x89PNG"], seed=0)
    path = write_batch(table, tmp_path / "batches", batch_id)
    registry.register_batch(con, batch_id=batch_id, modality=modality, model_version=version, path=str(path),
                            grid_path=None, n_samples=1)
    return path


def test_prune_keeps_the_champion_its_base_and_the_newest(home):
    tmp_path, con = home
    paths = {v: add_model(tmp_path, con, v) for v in ("old1", "old2", "base", "mid", "new")}
    paths["tuned"] = add_model(tmp_path, con, "tuned", base="base")
    registry.promote(con, "tuned", actor="t", reason="x")
    plan = retention.prune(con, tmp_path / "training", keep_models=2, keep_batches=5)
    # newest two: tuned (also champion) and new; base is tuned's base model
    assert sorted(v for v, _ in plan.models) == ["mid", "old1", "old2"]
    for v in ("old1", "old2", "mid"):
        assert not paths[v].exists() and not (tmp_path / "training" / "image_generator" / f"run-{v}").exists()
        assert registry.get_model(con, v)["pruned_at"] is not None  # the row stays for lineage
    for v in ("base", "new", "tuned"):
        assert paths[v].exists() and registry.get_model(con, v)["pruned_at"] is None
    assert retention.prune(con, tmp_path / "training", keep_models=2, keep_batches=5).to_dict()["models"] == []


def test_prune_keeps_rated_curated_and_champion_batches(home):
    tmp_path, con = home
    add_model(tmp_path, con, "champ")
    registry.promote(con, "champ", actor="t", reason="x")
    add_model(tmp_path, con, "other")
    files = {b: add_batch(tmp_path, con, b, "other") for b in ("b1", "b2", "b3", "b4")}
    files["bc"] = add_batch(tmp_path, con, "bc", "champ")
    con.execute("INSERT INTO feedback VALUES ('b1-00000', 5, 'ann', now(), NULL, 'image', 'r.csv', 'sha', 2, now())")  # b1 was rated
    replace_curated(con, "image", "b2", pd.DataFrame({"sample_id": ["b2-00000"], "category": ["a"], "reward": [1.0],
                                                        "rank": [1]}))
    plan = retention.prune(con, tmp_path / "training", keep_models=5, keep_batches=1)
    # newest: bc (also the champion's); b1 rated; b2 curated; b3 and b4 go
    assert sorted(b for b, _, _ in plan.batches) == ["b3", "b4"]
    assert not files["b3"].exists() and files["b1"].exists() and files["bc"].exists()
    ids = {r[0] for r in con.execute("SELECT batch_id FROM generated").fetchall()}
    assert ids == {"b1", "b2", "bc"}  # the view reads only files that exist
    assert con.execute("SELECT count(*) FROM curated").fetchone()[0] == 1
    # "other" made a kept batch, so its checkpoint stays even beyond keep_models
    assert retention.plan_pruning(con, tmp_path / "training", keep_models=1, keep_batches=1).models == []


def test_dry_run_changes_nothing_and_bad_limits_are_refused(home):
    tmp_path, con = home
    paths = [add_model(tmp_path, con, v) for v in ("a", "b", "c")]
    plan = retention.prune(con, tmp_path / "training", keep_models=1, keep_batches=1, dry_run=True)
    assert sorted(plan.to_dict()["models"]) == ["a", "b"] and all(p.exists() for p in paths)
    with pytest.raises(ValueError, match="keep_models"):
        retention.plan_pruning(con, tmp_path / "training", keep_models=0, keep_batches=1)


def test_prune_keeps_what_a_rollback_would_restore(home):
    tmp_path, con = home
    for v in ("g", "t1", "t2"):
        add_model(tmp_path, con, v, base="g" if v != "g" else None)
    registry.promote(con, "t1", actor="t", reason="x")
    registry.promote(con, "t2", actor="t", reason="x")
    for v in ("c1", "c2", "c3"):  # refused candidates push t1 out of the newest
        add_model(tmp_path, con, v)
    plan = retention.prune(con, tmp_path / "training", keep_models=2, keep_batches=1)
    assert "t1" not in {v for v, _ in plan.models}
    assert registry.rollback(con, "image", actor="bo", reason="undo") == ("t1", "t2")


def test_a_reused_model_counts_as_recent(home):
    """An old model registered again (an unchanged or reverted config reuses it) is in use: not pruned."""
    tmp_path, con = home
    for v in ("old", "a", "b"):
        add_model(tmp_path, con, v)
    registry.register_model(con, model_version="old", modality="image", arch="dcgan", config={}, input_versions={},
                            checkpoint_path=str(tmp_path / "models" / "old.pt"), checkpoint_sha="old")
    plan = retention.plan_pruning(con, tmp_path / "training", keep_models=2, keep_batches=1)
    assert [v for v, _ in plan.models] == ["a"]


@pytest.mark.parametrize("stored", ["absolute", "relative"])
def test_prune_refuses_a_file_outside_the_home_and_changes_nothing(home, tmp_path_factory, stored):
    """A stored path that resolves outside the artifacts root (an absolute one left by a migration, or a
    relative one climbing out with "..") is never deleted: prune stops before touching anything."""
    tmp_path, con = home
    elsewhere = tmp_path_factory.mktemp("another-home") / "models" / "a.pt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"someone else's weights")
    for v in ("a", "b", "c"):
        add_model(tmp_path, con, v)
    value = str(elsewhere) if stored == "absolute" else "../" * len(tmp_path.parts) + str(elsewhere).lstrip("/")
    con.execute("UPDATE models SET checkpoint_path = ? WHERE model_version = 'a'", [value])
    with pytest.raises(locations.OutsideHome, match="outside the current home"):
        retention.prune(con, tmp_path / "training", keep_models=1, keep_batches=1)
    assert elsewhere.read_bytes() == b"someone else's weights"
    assert (tmp_path / "models" / "b.pt").exists()  # refused before anything was removed
    assert con.execute("SELECT count(*) FROM models WHERE pruned_at IS NOT NULL").fetchone()[0] == 0


def test_prune_refuses_a_connection_without_a_home(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))  # not bound: stored paths cannot be placed
    wh.ensure_schema(con)
    for v in ("a", "b"):
        add_model(tmp_path, con, v)
    with pytest.raises(locations.OutsideHome, match="bound to its home"):
        retention.prune(con, tmp_path / "training", keep_models=1, keep_batches=1)
    assert (tmp_path / "models" / "a.pt").exists()
    con.close()
