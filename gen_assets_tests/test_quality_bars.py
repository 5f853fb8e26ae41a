"""A quality bar that fails fails the run, says what to do, and promotes nothing: an evaluator near chance,
a split that cannot be made (images, texts), a batch with nothing curated."""

import io
import re
import types

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from PIL import Image

from gen_assets import cli, settings
from gen_assets.cleaning.common import SplitTooSmall
from gen_assets.cleaning.texts import clean_texts
from gen_assets.defs.assets import curated as curated_assets
from gen_assets.defs.assets.trained import ImageEvaluatorConfig, evaluator_bar
from gen_assets.defs.handles import Batch
from gen_assets.sources.texts import TEXT_SNAPSHOT_HASH_COLUMNS, collect_texts
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.snapshots import write_snapshot

OLD_CHAMPION = "dcgan-oldchampion"


def noise_folder(root, per_category: dict[str, int], seed: int = 0):
    """<root>/<category>/<i>.png: 16x16 colour noise, the same distribution in every category."""
    rng = np.random.default_rng(seed)
    for category, n in per_category.items():
        (root / category).mkdir(parents=True)
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
            (root / category / f"{i}.png").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home whose image champion exists already: a failing run must leave it (and the registry) alone."""
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    paths = settings.Paths(tmp_path / "home").ensure()
    with duckdb.connect(str(paths.warehouse)) as con:
        wh.ensure_schema(con)
        registry.register_model(con, model_version=OLD_CHAMPION, modality="image", arch="dcgan", config={},
                                checkpoint_path="/m/old.pt", input_versions={}, checkpoint_sha="0" * 64)
        registry.promote(con, OLD_CHAMPION, actor="test", reason="an earlier run")
    return paths


def registry_state(paths) -> tuple:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        champion = con.execute("SELECT model_version FROM models WHERE status = 'champion'").fetchall()
        models = con.execute("SELECT count(*) FROM models").fetchone()[0]
        promotions = con.execute("SELECT count(*) FROM promotions").fetchone()[0]
    return champion, models, promotions


def run_images(monkeypatch, capsys, **profile) -> tuple[int, str]:
    monkeypatch.setitem(settings.PROFILES, "smoke", {**settings.PROFILES["smoke"], **profile})
    status = cli.main(["run", "--modality", "image", "--profile", "smoke"])
    return status, capsys.readouterr().err


def test_an_evaluator_near_chance_fails_the_run_and_promotes_nothing(home, tmp_path, monkeypatch, capsys):
    # noise in every category: nothing to learn, the evaluator can only guess
    folder = noise_folder(tmp_path / "noise", {"a": 60, "b": 60, "c": 60})
    before = registry_state(home)
    status, err = run_images(
        monkeypatch, capsys,
        raw_images={"source": str(folder)},
        clean_images={"val_fraction": 0.25, "test_fraction": 0.25},  # big enough splits: no split failure
        image_evaluator={"max_epochs": 2, "patience": 2, "min_accuracy_vs_chance": 2.0},  # bar 67%
    )
    assert status == 1
    message = re.search(r"step image_evaluator failed: (.*)", err).group(1)
    assert "near chance (33%; the bar is 67%)" in message and "of 3 categories" in message
    assert "Add data (about 60 images per category now) or use a longer profile" in message
    assert registry_state(home) == before, "no model registered, none promoted"

    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        clean = instance.get_latest_materialization_event(dg.AssetKey("clean_images")).asset_materialization
        assert clean.metadata["channels"].value == 3 and clean.metadata["image_size"].value == "16x16"
        assert instance.get_latest_materialization_event(dg.AssetKey("image_evaluator")) is None


def test_the_evaluator_bar_is_a_multiple_of_chance_capped_at_90_percent():
    assert evaluator_bar(ImageEvaluatorConfig(), 3) == pytest.approx(0.5)
    assert evaluator_bar(ImageEvaluatorConfig(), 10) == pytest.approx(0.15)
    assert evaluator_bar(ImageEvaluatorConfig(), 1) == pytest.approx(0.9)
    assert evaluator_bar(ImageEvaluatorConfig(min_accuracy_vs_chance=0.0), 3) == 0.0


def test_a_category_too_small_to_split_fails_cleaning_and_keeps_the_previous_table(home, tmp_path, monkeypatch,
                                                                                   capsys):
    folder = noise_folder(tmp_path / "small", {"big": 40, "tiny": 2})
    before = registry_state(home)
    status, err = run_images(monkeypatch, capsys, raw_images={"source": str(folder)})
    assert status == 1
    message = re.search(r"step clean_images failed: (.*)", err).group(1)
    assert re.search(r"category 'tiny': \d train, \d val, \d test", message), message
    assert "'big'" not in message, "only the short category is named"
    assert "Add images" in message and "val_fraction" in message and "the previous clean table is kept" in message
    assert registry_state(home) == before
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "clean_images" not in tables, "the cleaning rolled back"


def test_texts_without_a_val_split_fail_cleaning(tmp_path):
    table = collect_texts().slice(0, 3)  # three plays' passages: far too few for a 10% val split
    snap = write_snapshot(table, tmp_path, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source="test")
    con = duckdb.connect()
    stats = clean_texts(con, snap.path, snapshot_version=snap.version)  # no bar: the pure default
    assert stats.rows_clean == 3 and stats.split_counts["val"] == 0
    with pytest.raises(SplitTooSmall, match=r"too few texts to split: \d train, 0 val, \d test\. The data needs"):
        clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.1, min_split_rows=1)
    assert clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.0, test_fraction=0.0,
                       min_split_rows=1).rows_clean == 3  # a split asked to be empty may be


def test_nothing_curated_fails_with_the_reasons_and_advice(tmp_path):
    database = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(database) as con:
        wh.ensure_schema(con)
        wh.define_generated_view(con, [])  # no batch file: the samples themselves are not read here
    batch = Batch(modality="image", batch_id="b1", model_version="dcgan-x", path="/b/b1.parquet", grid_path=None,
                  n_samples=3)
    dropped = pd.DataFrame({"sample_id": ["s1", "s2", "s3"],
                            "reason": ["low confidence: 0.31 < 0.9", "low confidence: 0.2 < 0.9", "no category"]})
    context = types.SimpleNamespace(log=types.SimpleNamespace(info=lambda message: None))
    with pytest.raises(dg.Failure) as failure:
        curated_assets.record(context, DuckDBResource(database=database), asset="curated_images", modality="image",
                              batch=batch, curated=pd.DataFrame(columns=["sample_id", "category", "reward", "rank"]),
                              dropped=dropped, scored_by="evaluator confidence", advice=curated_assets.IMAGE_ADVICE)
    message = failure.value.description
    assert "kept 0 of 3 samples of batch b1 (dropped: 2 low confidence, 1 no category" in message
    assert "nothing to show for image" in message and "--profile demo" in message
    with duckdb.connect(database, read_only=True) as con:  # the reasons are recorded before failing
        assert con.execute("SELECT count(*) FROM quarantine WHERE asset = 'curated_images'").fetchone()[0] == 3


def test_the_advice_for_nothing_curated_follows_the_main_reason():
    import pandas as pd

    from gen_assets.defs.assets.curated import TEXT_ADVICE, main_reason

    dropped = pd.DataFrame({"reason": ["copy: 0.93 of its 8-word sequences are in the training split (> 0.5)"] * 3
                           + ["blocklisted: 'cheap'"]})
    assert main_reason(dropped) == "copy" and "more varied texts" in TEXT_ADVICE[main_reason(dropped)]
    assert main_reason(dropped.iloc[3:]) == "blocklisted"
    assert main_reason(dropped.iloc[:0]) == ""
