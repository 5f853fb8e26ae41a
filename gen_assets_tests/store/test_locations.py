"""Stored artifact paths are relative to the artifacts root, resolved when read; an old warehouse with
absolute paths is migrated once, in place, also after its home was moved."""

import logging
import shutil

import duckdb
import pytest

from gen_assets.store import locations, registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch


def test_stored_paths_are_relative_and_resolve_against_the_current_root(tmp_path):
    root = tmp_path / "home" / "artifacts"
    assert locations.to_stored(root / "models" / "image" / "m.pt", root) == "models/image/m.pt"
    assert locations.resolve("models/image/m.pt", tmp_path / "moved") == f"{tmp_path}/moved/models/image/m.pt"
    with pytest.raises(locations.OutsideHome):
        locations.to_stored(tmp_path / "elsewhere" / "m.pt", root)
    assert locations.to_stored("s3://bucket/gen/batches/b.parquet", "s3://bucket/gen") == "batches/b.parquet"
    assert locations.resolve("batches/b.parquet", "s3://bucket/gen") == "s3://bucket/gen/batches/b.parquet"
    with pytest.raises(locations.OutsideHome):
        locations.to_stored("s3://other/gen/batches/b.parquet", "s3://bucket/gen")


def test_registry_stores_relative_paths_and_returns_absolute_ones(tmp_path):
    home = tmp_path / "home"
    (home / "artifacts" / "models").mkdir(parents=True)
    con = wh.connect(home / "warehouse.duckdb")
    registry.register_model(con, model_version="v1", modality="image", arch="dcgan", config={}, input_versions={},
                            checkpoint_path=str(home / "artifacts" / "models" / "v1.pt"), checkpoint_sha="s")
    assert con.execute("SELECT checkpoint_path FROM models").fetchone()[0] == "models/v1.pt"
    assert registry.get_model(con, "v1")["checkpoint_path"] == str(home / "artifacts" / "models" / "v1.pt")
    with pytest.raises(locations.OutsideHome):
        registry.register_model(con, model_version="v2", modality="image", arch="dcgan", config={}, input_versions={},
                                checkpoint_path=str(tmp_path / "other-home" / "v2.pt"), checkpoint_sha="s")
    con.close()


def old_home(home):
    """A warehouse as the releases before relative paths wrote it: absolute paths everywhere, the
    `generated` view over absolute batch file names. Returns (model file, batch file)."""
    artifacts = home / "artifacts"
    model = artifacts / "models" / "image" / "dcgan-1.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    table = batch_table(batch_id="b1", model_version="dcgan-1", modality="image", categories=["0"],
                        contents=[b"\x89PNG"], seed=0)
    batch = write_batch(table, artifacts / "batches" / "image", "b1")
    con = duckdb.connect(str(home / "warehouse.duckdb"))  # unbound: paths are stored as given, like before
    wh.ensure_schema(con)
    con.execute("DROP TABLE path_migrations")  # the old schema had none
    for version, path in (("dcgan-1", model), ("dcgan-0", artifacts / "models" / "image" / "dcgan-0.pt")):
        registry.register_model(con, model_version=version, modality="image", arch="dcgan", config={},
                                input_versions={}, checkpoint_path=str(path), checkpoint_sha="s")
    registry.register_batch(con, batch_id="b1", modality="image", model_version="dcgan-1", path=str(batch),
                            grid_path=None, n_samples=1)
    wh.insert_quarantine(con, [{"asset": "curated_images", "source": str(batch), "reason": "low reward"},
                               {"asset": "clean_images", "source": "/data/digits", "reason": "unreadable"}])
    assert "getvariable" not in con.execute(
        "SELECT sql FROM duckdb_views() WHERE view_name = 'generated'").fetchone()[0]
    con.close()
    return model, batch


def test_an_old_home_is_migrated_once_in_place(tmp_path, caplog):
    home = tmp_path / "home"
    model, batch = old_home(home)
    with caplog.at_level(logging.WARNING, logger="gen_assets.store.registry"):
        with wh.connect(home / "warehouse.duckdb", read_only=True) as con:  # a reader migrates it too
            stored = dict(con.execute("SELECT model_version, checkpoint_path FROM models").fetchall())
            assert stored == {"dcgan-1": "models/image/dcgan-1.pt", "dcgan-0": "models/image/dcgan-0.pt"}
            assert con.execute("SELECT path FROM batches").fetchone()[0] == "batches/image/b1.parquet"
            assert registry.get_model(con, "dcgan-1")["checkpoint_path"] == str(model)
            assert con.execute("SELECT sample_id FROM generated").fetchall() == [("b1-00000",)]
            assert con.execute("SELECT source FROM quarantine ORDER BY asset").fetchall() == [
                ("/data/digits",), ("batches/image/b1.parquet",)]  # a raw data source is no artifact
        with wh.connect(home / "warehouse.duckdb") as con:
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("migrated 4 stored paths to relative")


def test_a_home_moved_before_the_migration_is_rebased_where_its_files_are(tmp_path, caplog):
    """Paths of the old location are rebased onto the new home when the file is there; a path whose file
    is nowhere in the new home (a checkpoint pruned long ago) is left as it was, and reported."""
    old, new = tmp_path / "old", tmp_path / "new"
    old_home(old)
    shutil.move(old, new)
    with caplog.at_level(logging.WARNING, logger="gen_assets.store.registry"):
        with wh.connect(new / "warehouse.duckdb") as con:
            stored = dict(con.execute("SELECT model_version, checkpoint_path FROM models").fetchall())
            assert stored == {"dcgan-1": "models/image/dcgan-1.pt",
                              "dcgan-0": str(old / "artifacts" / "models" / "image" / "dcgan-0.pt")}
            assert con.execute("SELECT sample_id FROM generated").fetchall() == [("b1-00000",)]
            assert registry.get_model(con, "dcgan-1")["checkpoint_path"] == str(
                new / "artifacts" / "models" / "image" / "dcgan-1.pt")
            assert con.execute("SELECT migrated, left_as_is FROM path_migrations").fetchall() == [
                (3, [str(old / "artifacts" / "models" / "image" / "dcgan-0.pt")])]
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("migrated 3 stored paths to relative") and "left 1 absolute paths" in message
    assert str(old / "artifacts" / "models" / "image" / "dcgan-0.pt") in message
