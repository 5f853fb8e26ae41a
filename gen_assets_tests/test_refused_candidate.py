"""A retrain whose candidate the champion asset refuses: the run succeeds, the champion stays, and the
curated set is re-ranked by the new reward model all the same (ratings always count)."""

import io

import dagster as dg
import duckdb
import numpy as np
import pytest
from PIL import Image

from gen_assets import cli, settings


def ink(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png))).mean())


def curated_ink(con) -> float:
    rows = con.execute("SELECT content FROM curated WHERE modality = 'image'").fetchall()
    return float(np.mean([ink(png) for (png,) in rows]))


def test_a_refused_candidate_keeps_the_champion_and_the_ratings_still_reorder_curation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        champion = con.execute("SELECT model_version FROM models WHERE status = 'champion'").fetchone()[0]
        samples = con.execute("SELECT sample_id, content FROM generated WHERE modality = 'image'").fetchall()
        before = curated_ink(con)

    # a planted taste (more ink is better) over the whole batch, as people would rate it
    order = sorted(samples, key=lambda s: ink(s[1]))
    lines = ["sample_id,rating,user_id,ts"]
    lines += [f"{sid},{1 + (4 * i) // len(order)},rater,2026-11-22T10:00:00Z" for i, (sid, _) in enumerate(order)]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    assert cli.main(["feedback", "import", str(tmp_path / "ratings.csv")]) == 0

    # a bar no model meets: the tuned candidate is refused
    smoke = {**settings.PROFILES["smoke"], "image_champion": {"per_class": 20, "max_ratio_to_floor": 1e-6}}
    monkeypatch.setitem(settings.PROFILES, "smoke", smoke)
    assert cli.main(["retrain", "--modality", "image", "--profile", "smoke"]) == 0, "a refusal is a normal outcome"

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT model_version FROM models WHERE status = 'champion'").fetchone()[0] == champion
        action, refused, reason = con.execute(
            "SELECT action, model_version, reason FROM promotions ORDER BY acted_at DESC LIMIT 1").fetchone()
        assert action == "refuse" and refused != champion and "above the bar" in reason
        after = curated_ink(con)
        batches = {r[0] for r in con.execute("SELECT DISTINCT model_version FROM curated").fetchall()}
    assert batches == {champion}, "curation ranks the champion's batch"
    batch_mean = float(np.mean([ink(png) for _, png in samples]))
    assert after > max(before, batch_mean), f"curated ink {before:.1f} -> {after:.1f} (batch {batch_mean:.1f})"

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        meta = instance.get_latest_materialization_event(dg.AssetKey("image_champion")).asset_materialization.metadata
        assert meta["decision"].value == "refused" and meta["champion"].value == champion
        scored_by = instance.get_latest_materialization_event(
            dg.AssetKey("curated_images")).asset_materialization.metadata["scored_by"].value
        assert scored_by.startswith("reward-"), scored_by
