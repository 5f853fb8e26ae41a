"""The product path: `gen-assets run --profile smoke` (the whole graph, both modalities) through Dagster,
then `gen-assets report --json`."""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from gen_assets import cli
from gen_assets_tests.smoke import smoke_run

IMAGE_METRIC_KEYS = {"fid", "fid_noise", "fid_real_floor", "kid", "inception_score", "class_accuracy"}
TEXT_METRIC_KEYS = {"bits_per_byte", "degenerate_share", "in_length_share", "rouge1", "rouge2", "rougeL",
                    "distinct_1", "distinct_2", "novelty"}


@pytest.fixture(scope="module")
def smoke_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with smoke_run(home, "all"):
        yield home


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
    assert list((smoke_home / "artifacts" / "models" / "text").glob("hf-*.pt"))
    assert list((smoke_home / "artifacts" / "batches" / "text").glob("*.parquet"))


def test_report_json_is_the_stable_interface(smoke_home, capsys, monkeypatch):
    data = report(smoke_home, capsys, monkeypatch)
    models = {m["modality"]: m for m in data["models"]}
    assert set(models) == {"image", "text"}
    for model in models.values():
        assert set(model) == {"modality", "version", "arch", "status", "created_at", "metrics", "artifacts"}
        assert model["status"] == "champion"
        for path in model["artifacts"].values():
            assert Path(path).is_file() and Path(path).is_relative_to(smoke_home)
    image, text = models["image"], models["text"]
    assert image["arch"] == "dcgan" and text["arch"] == "hf"
    assert IMAGE_METRIC_KEYS <= set(image["metrics"]) and TEXT_METRIC_KEYS <= set(text["metrics"])
    assert image["metrics"]["fid_noise"] > image["metrics"]["fid_real_floor"]
    # the tiny random base: no better than guessing among its 400 tokens, but measured per byte, finite
    assert 0 < text["metrics"]["bits_per_byte"] < 10


def test_warehouse_tables_and_generated_view(smoke_home):
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        n_clean = con.execute("SELECT count(*) FROM clean_images").fetchone()[0]
        assert n_clean > 1500  # the digits: 1797 rows, a few exact duplicates
        assert con.execute("SELECT count(*) FROM clean_texts").fetchone()[0] == 96  # the bundled product briefs
        generated = dict(con.execute(
            "SELECT modality, count(*) || '/' || count(DISTINCT category) FROM generated GROUP BY modality").fetchall())
        assert generated == {"image": "200/10", "text": "36/6"}  # smoke: 20 per digit, 1 per brief
        text, prompt = con.execute("SELECT text, prompt FROM generated WHERE modality = 'text' LIMIT 1").fetchone()
        assert isinstance(text, str) and prompt.startswith("Write one short line of ad copy")
        metrics = {r[0] for r in con.execute("SELECT DISTINCT metric FROM metrics_history").fetchall()}
        assert IMAGE_METRIC_KEYS | TEXT_METRIC_KEYS <= metrics
        assert con.execute("SELECT count(*) FROM models WHERE status = 'champion'").fetchone()[0] == 2


TABLES = {"raw_images": "snapshot", "raw_texts": "snapshot", "clean_images": "clean_images", "clean_texts": "clean_texts",
          "feedback": "feedback", "generated_images": "batch", "generated_texts": "batch", "curated_images": "curated",
          "curated_texts": "curated"}
FILES = ["raw_images", "raw_texts", "image_evaluator", "image_generator", "text_generator",
         "tuned_image_generator", "tuned_text_generator", "image_champion", "text_champion", "generated_images",
         "generated_texts"]


def test_dagster_standard_metadata_and_run_tags(smoke_home):
    """Row count and column schema on the table-like assets, a URI on the file outputs, metrics rounded to 4
    significant digits, and the CLI's run tagged with its profile and modality."""
    with dg.DagsterInstance.from_config(str(smoke_home / "dagster_home")) as instance:
        latest = {name: instance.get_latest_materialization_event(dg.AssetKey(name)) for name in {*TABLES, *FILES,
                                                                                                  "image_metrics", "text_metrics"}}
        meta = {name: event.asset_materialization.metadata for name, event in latest.items()}
        for name, kind in TABLES.items():
            columns = [c.name for c in meta[name]["dagster/column_schema"].value.columns]
            rows = meta[name]["dagster/row_count"].value
            assert rows >= 0 and columns, name
            if kind in ("clean_images", "clean_texts", "feedback"):  # a warehouse table, as it is
                assert meta[name]["dagster/table_name"].value == kind
                with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
                    assert rows == con.execute(f"SELECT count(*) FROM {kind}").fetchone()[0], name
                    assert columns == [r[0] for r in con.execute(f"DESCRIBE {kind}").fetchall()], name
        assert meta["generated_images"]["dagster/row_count"].value == 200  # smoke: 20 per digit
        assert {"sample_id", "category", "content"} <= {c.name for c in meta["generated_texts"]["dagster/column_schema"].value.columns}
        assert {"sample_id", "category", "reward", "rank"} <= {c.name for c in meta["curated_images"]["dagster/column_schema"].value.columns}
        for name in FILES:
            uri = meta[name]["dagster/uri"].value
            assert uri.startswith("file:///") and Path(uri.removeprefix("file://")).is_file(), (name, uri)
        for name in ("image_metrics", "text_metrics"):
            for key, value in meta[name].items():  # the metrics, not the step's timing
                if isinstance(value, dg.FloatMetadataValue) and value.value == value.value and key != "seconds":
                    assert value.value == float(f"{value.value:.4g}"), (name, key)
        run = instance.get_run_by_id(latest["raw_images"].run_id)
        assert {k: run.tags[k] for k in ("gen_assets/profile", "gen_assets/modality")} == {
            "gen_assets/profile": "smoke", "gen_assets/modality": "all"}


def test_second_run_with_unchanged_inputs_reuses_the_models(smoke_home, capsys, monkeypatch):
    before = {m["version"] for m in report(smoke_home, capsys, monkeypatch)["models"]}
    monkeypatch.setenv("GEN_ASSETS_HOME", str(smoke_home))
    assert cli.main(["run", "--modality", "all", "--profile", "smoke"]) == 0
    after = {m["version"] for m in report(smoke_home, capsys, monkeypatch)["models"]}
    assert after == before
    with dg.DagsterInstance.from_config(str(smoke_home / "dagster_home")) as instance:
        for name in ("image_evaluator", "image_generator", "text_generator"):
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            assert event.asset_materialization.metadata["reused"].value is True, f"{name} was retrained"
            runs = list((smoke_home / "artifacts" / "training" / name).iterdir())
            assert len(runs) == 1, f"{name}: same data and config, so one training run"


def test_ratings_that_follow_no_taste_change_nothing_and_the_run_says_why(smoke_home, capsys, monkeypatch, tmp_path):
    """Random ratings: the reward models do not predict, their blocking checks stop the retrain before it
    curates, tunes or promotes anything, and the run says how many more ratings are needed."""
    import random
    import shutil

    home = tmp_path / "home"
    shutil.copytree(smoke_home, home)  # a home can be copied; the shared one stays as it was
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT sample_id FROM generated ORDER BY sample_id").fetchall()]
        before = con.execute("SELECT modality, sample_id, rank FROM curated ORDER BY ALL").fetchall()
        champions = con.execute("SELECT model_version FROM models WHERE status = 'champion' ORDER BY ALL").fetchall()
    rng = random.Random(7)
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("sample_id,rating,user_id,ts,comment\n" +
                       "".join(f"{sid},{rng.randint(1, 5)},rater,2026-11-22T10:00:00Z,\n" for sid in ids))
    monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
    assert cli.main(["feedback", "import", str(ratings)]) == 0
    capsys.readouterr()
    assert cli.main(["retrain", "--modality", "all", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    for modality in ("image", "text"):
        assert f"check {modality}_reward_model:predicts failed (blocked the assets downstream)" in err
    assert "does not predict" in err and "the previous ranking stays" in err and "more" in err
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == len(ids)  # the ratings are kept
        assert con.execute("SELECT modality, sample_id, rank FROM curated ORDER BY ALL").fetchall() == before
        assert con.execute("SELECT model_version FROM models WHERE status = 'champion' ORDER BY ALL").fetchall() == champions


def test_feedback_import_retrain_and_curation(smoke_home, capsys, monkeypatch, tmp_path, tiny_text_base):
    """Ratings with a planted taste -> `gen-assets feedback import` -> `gen-assets retrain` -> curated view."""
    import io

    import numpy as np
    from PIL import Image

    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        images = con.execute("SELECT sample_id, content FROM generated WHERE modality = 'image'").fetchall()
        texts = con.execute("SELECT sample_id, text FROM generated WHERE modality = 'text'").fetchall()
    ink = {sid: float(np.asarray(Image.open(io.BytesIO(png))).mean()) for sid, png in images}
    order = sorted(ink, key=ink.get)
    lines = ["sample_id,rating,user_id,ts,comment"]
    lines += [f"{sid},{1 + (4 * i) // len(order)},rater,2026-11-22T10:00:00Z,more ink please" for i, sid in enumerate(order)]
    # texts: the rater likes short copy (a taste the reward model's features carry)
    by_length = sorted(texts, key=lambda t: (len(t[1]), t[0]))
    lines += [f"{sid},{5 - (4 * i) // len(by_length)},rater,2026-11-22T10:00:00Z," for i, (sid, _) in enumerate(by_length)]
    lines += ["no-such-sample,5,rater,2026-11-22T10:00:00Z,", f"{order[0]},9,rater,2026-11-22T10:00:00Z,"]
    ratings_file = tmp_path / "ratings.csv"
    ratings_file.write_text("\n".join(lines) + "\n")

    monkeypatch.setenv("GEN_ASSETS_HOME", str(smoke_home))
    assert cli.main(["feedback", "import", str(ratings_file)]) == 0
    assert len(list((smoke_home / "feedback" / "incoming").iterdir())) == 1
    assert cli.main(["retrain", "--modality", "all", "--profile", "smoke"]) == 0

    assert not list((smoke_home / "feedback" / "incoming").iterdir())
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == len(images) + len(texts)
        reasons = [r[0] for r in con.execute("SELECT reason FROM quarantine WHERE asset = 'feedback'").fetchall()]
        assert len(reasons) == 2 and any("no-such-sample" in r or "unknown" in r for r in reasons)
        tuned = con.execute(
            "SELECT modality, json_extract_string(input_versions, '$.feedback') FROM models WHERE status = 'champion'"
        ).fetchall()
        assert {m for m, fb in tuned if fb} == {"image", "text"}, "both champions were tuned on the feedback"
        curated = dict(con.execute("SELECT modality, count(*) FROM curated WHERE NOT exploratory "
                                   "GROUP BY modality").fetchall())
        assert curated["image"] <= 10 * 10 and curated["text"] <= 5 * 6 and min(curated.values()) > 0
        ranks = con.execute("SELECT min(rank), count(DISTINCT sample_id) = count(*) FROM curated").fetchone()
        assert ranks == (1, True)
        # beside them, per category, the samples the reward model is least sure about, ranked after them
        explore = con.execute("SELECT modality, category, max(rank) FILTER (NOT exploratory), "
                              "min(rank) FILTER (exploratory), count(*) FILTER (exploratory) FROM curated "
                              "GROUP BY ALL").fetchall()
        assert all(n <= (2 if m == "image" else 1) and (n == 0 or lo > hi) for m, _, hi, lo, n in explore)
        assert sum(n for *_, n in explore) > 0
        assert con.execute("SELECT count(*) FROM curated c ANTI JOIN generated g USING (sample_id)").fetchone()[0] == 0

    # lineage of a curated sample: tuned model -> base model -> data versions and raw source; the feedback file
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        sample = con.execute("SELECT sample_id FROM curated WHERE modality = 'image' LIMIT 1").fetchone()[0]
    capsys.readouterr()
    assert cli.main(["lineage", sample, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    tuned, base = info["models"]
    assert tuned["inputs"]["base_model"] == base["version"] and tuned["inputs"]["feedback"]
    assert base["inputs"]["raw_source"] == "builtin:digits" and base["inputs"]["raw_images"]
    assert base["inputs"]["code"] and tuned["inputs"]["code"] not in ("", base["inputs"]["code"])  # code is identity
    assert [f["ratings"] for f in info["feedback_files"]] == [len(images) + len(texts)]
    assert cli.main(["lineage", "no-such-sample"]) == 1

    # a text's lineage names the pretrained base: its name and the hash of its weights
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        sample = con.execute("SELECT sample_id FROM curated WHERE modality = 'text' LIMIT 1").fetchone()[0]
    assert cli.main(["lineage", sample, "--json"]) == 0
    tuned, base = json.loads(capsys.readouterr().out)["models"]
    assert tuned["arch"] == base["arch"] == "hf" and tuned["inputs"]["base_model"] == base["version"]
    assert base["inputs"]["pretrained_base"] == str(tiny_text_base) and len(base["inputs"]["pretrained_sha256"]) == 64
    assert base["inputs"]["pretrained_source"] == "folder"


def test_rollback_and_promote_by_hand_and_the_registry_report(smoke_home, capsys, monkeypatch):
    """After the feedback round the tuned models are champions; a person rolls image back and forth."""
    monkeypatch.setenv("GEN_ASSETS_HOME", str(smoke_home))
    data = report(smoke_home, capsys, monkeypatch)
    tuned = {m["modality"]: m["version"] for m in data["models"]}["image"]
    entry = data["registry"]["image"]
    assert entry["champion"]["version"] == tuned and entry["champion"]["key_metric"] == "fid"
    assert [p["action"] for p in entry["promotions"]][:1] == ["promote"]
    assert Path(entry["trend_png"]).read_bytes()[:4] == b"\x89PNG" and len(entry["trend"]) >= 2

    assert cli.main(["rollback", "--modality", "image", "--by", "tester", "--reason", "too dark", "--profile", "smoke"]) == 0
    data = report(smoke_home, capsys, monkeypatch)
    restored = {m["modality"]: m for m in data["models"]}["image"]
    assert restored["version"] != tuned and restored["status"] == "champion"
    last = data["registry"]["image"]["promotions"][0]
    assert (last["action"], last["actor"], last["reason"], last["previous_version"]) == (
        "rollback", "tester", "too dark", tuned)

    assert cli.main(["promote", tuned, "--by", "tester", "--profile", "smoke"]) == 0
    assert {m["modality"]: m["version"] for m in report(smoke_home, capsys, monkeypatch)["models"]}["image"] == tuned
    assert cli.main(["promote", "no-such-version"]) == 1
    assert cli.main(["rollback", "--modality", "text", "--by", "tester", "--profile", "smoke"]) == 0


def test_prune_keeps_what_is_in_use(smoke_home, capsys, monkeypatch):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(smoke_home))
    assert cli.main(["prune", "--keep-models", "1", "--keep-batches", "1"]) == 0
    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        champions = con.execute("SELECT checkpoint_path FROM models WHERE status = 'champion'").fetchall()
        assert len(champions) == 2 and all((smoke_home / "artifacts" / p).is_file() for (p,) in champions)
        # every batch the view lists still has its file, and the rated batches are all there
        assert con.execute("SELECT count(*) FROM generated").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM feedback f ANTI JOIN generated g USING (sample_id)").fetchone()[0] == 0
    # the graph still runs after pruning (models it needs are retrained or kept)
    assert cli.main(["run", "--modality", "image", "--profile", "smoke"]) == 0


def test_the_review_page_shows_each_text_with_its_brief(smoke_home):
    from starlette.testclient import TestClient

    from gen_assets.settings import Paths
    from gen_assets.web.app import create_app
    from gen_assets_tests.web.conftest import test_config

    with duckdb.connect(str(smoke_home / "warehouse.duckdb"), read_only=True) as con:
        category, prompt = con.execute(
            "SELECT category, prompt FROM curated WHERE modality = 'text' ORDER BY category, rank LIMIT 1").fetchone()
    with TestClient(create_app(Paths(smoke_home), test_config())) as client:
        html = client.get("/gallery", params={"modality": "text", "category": category}).text
        samples = client.get("/api/samples", params={"modality": "text", "category": category}).json()
    assert prompt.startswith("Write one short line of ad copy")
    assert '<p class="brief"><span>brief</span> ' + prompt.replace("'", "&#39;") in html
    assert samples and all(s["prompt"] and s["text"] is not None for s in samples["samples"])
