"""A new user's own data sticks: the project file's image folder is collected by every `gen-assets run`,
retrain runs with the project's settings, and `--profile smoke` cannot replace a real champion through
its loose gate."""

import dagster as dg
import duckdb
import numpy as np
from PIL import Image

from gen_assets import cli

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def colour_folder(root):
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(np.array(rgb) + rng.integers(-30, 30, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i:03d}.png")


def sources(home) -> list[str]:
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        events = instance.fetch_materializations(dg.AssetKey("raw_images"), limit=10).records
        return [e.asset_materialization.metadata["source"].value for e in events]


def champion(home) -> str:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT model_version FROM models WHERE modality = 'image' AND status = 'champion'"
                           ).fetchone()[0]


def test_the_projects_data_sticks_and_smoke_does_not_replace_its_champion(tmp_path, monkeypatch):
    home = tmp_path / "home"
    colour_folder(tmp_path / "home" / "colours")
    monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.delenv("GEN_ASSETS_PROJECT", raising=False)
    # (a 4-epoch evaluator is rarely 90% sure of a sample: curation and tuning may pick any)
    project = ("images: {source: colours, channels: 3}\n"
               "assets:\n  tuned_image_generator: {min_confidence: 0.0}\n  curated_images: {min_confidence: 0.0}\n")
    (home / "gen_assets.yaml").write_text(project)

    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
    first = champion(home)
    assert sources(home) == [str(home / "colours")]

    # the user sets a gate no model meets, and runs again with another seed so the candidate differs:
    # smoke's gate (tolerance 10, no bar) would promote it; the project's own gate, which no profile may
    # loosen, refuses it
    project += "  image_generator: {seed: 1}\ngate:\n  image: {max_ratio_to_floor: 1.0e-6}\n"
    (home / "gen_assets.yaml").write_text(project)
    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0
    assert sources(home) == [str(home / "colours")] * 2, "no run re-collects builtin:digits"
    assert champion(home) == first
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        action, refused, reason = con.execute(
            "SELECT action, model_version, reason FROM promotions ORDER BY acted_at DESC LIMIT 1").fetchone()
        assert action == "refuse" and refused != first and "above the bar" in reason
        samples = con.execute("SELECT sample_id, category FROM generated WHERE modality = 'image'").fetchall()
        categories = {r[0] for r in con.execute(
            "SELECT DISTINCT category FROM generated WHERE modality = 'image'").fetchall()}
    assert categories == set(COLOURS)

    # a taste the reward model can learn (one colour over the others), so the retrain reaches the gate
    stars = {c: 1 + 2 * i for i, c in enumerate(sorted(COLOURS))}
    lines = ["sample_id,rating,user_id"] + [f"{sid},{stars[c]},rater" for sid, c in samples]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    assert cli.main(["feedback", "import", str(tmp_path / "ratings.csv")]) == 0
    assert cli.main(["retrain", "--modality", "image", "--profile", "smoke"]) == 0
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        run = instance.get_run_by_id(
            instance.get_latest_materialization_event(dg.AssetKey("image_champion")).run_id)
        assert run.job_name == "retrain_job"
        assert run.run_config["ops"]["image_champion"]["config"]["max_ratio_to_floor"] == 1.0e-6
        assert run.run_config["ops"]["tuned_image_generator"]["config"]["min_confidence"] == 0.0
    assert champion(home) == first
    assert sources(home) == [str(home / "colours")] * 2
