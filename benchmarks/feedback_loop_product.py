"""The feedback loop through the product itself, not through its pure modules:

    gen-assets run  ->  a simulated rater rates the generated batch  ->  gen-assets feedback import
    ->  gen-assets retrain (retrain_job: feedback, reward model, tuned generator, generation,
        curation, evaluation)  ->  the rater rates what the product now shows

    python benchmarks/feedback_loop_product.py [--modality image|text|all] [--profile demo] [--json]

The rater is benchmarks/feedback_loop.py's: 1 to 5 stars from the percentile of a hidden property
among real samples (images: ink; texts, the bundled product briefs' ad copy: how many numbers a line
mentions, its product's concrete figures such as "24 hours" or "640 g"), plus noise; the stars are
rounded to the integer ratings the feedback schema takes. Rows, each the mean stars of what it names:
- generated before: the batch the first run generated (what was rated);
- curated before: the `curated` view before any rating (ranked by evaluator confidence / length);
- curation only: the same first batch, ranked by the reward model the retrain fitted (top k);
- fine-tuning only: the batch the tuned generator made;
- curation + fine-tuning: the `curated` view after the retrain: what the business now shows.
Validity comes from the metrics the product recorded (class accuracy of generated images; the text
model's bits per byte on the held-out copy and its share of degenerate samples) and FID before and
after for images. Each modality runs in its own temporary GEN_ASSETS_HOME. `--show N` prints N curated
texts before and after the retrain, with their briefs.
"""

from __future__ import annotations

import argparse
import re
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feedback_loop import Rater  # noqa: E402

from gen_assets import cli  # noqa: E402
from gen_assets.rules.curation import curate  # noqa: E402
from gen_assets.models.checkpoint import load_model  # noqa: E402
from gen_assets.store.locations import resolve  # noqa: E402
from gen_assets.models.reward import image_features, writer_features  # noqa: E402
from gen_assets.models.text_generators import load_writer  # noqa: E402

K = {"image": 10, "text": 5}  # the curated assets' default k per category


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0


NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def taste(modality: str, contents: list) -> np.ndarray:
    if modality == "image":
        return np.array([pixels(c).mean() for c in contents])
    return np.array([len(NUMBER.findall(t or "")) for t in contents], dtype=float)


def latest_batch(con, modality: str) -> tuple[str, list, list, list]:
    batch_id, model_version = con.execute(
        "SELECT batch_id, model_version FROM batches WHERE modality = ? ORDER BY created_at DESC LIMIT 1", [modality]
    ).fetchone()
    column = "content" if modality == "image" else "text"
    rows = con.execute(f"SELECT sample_id, category, {column}, prompt FROM generated WHERE batch_id = ? "
                       "ORDER BY sample_id", [batch_id]).fetchall()
    return model_version, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]


def curated_now(con, modality: str, with_prompts: bool = False) -> list:
    column = "content" if modality == "image" else "text"
    rows = con.execute(f"SELECT {column}, prompt FROM curated WHERE modality = ? ORDER BY category, rank",
                       [modality]).fetchall()
    return rows if with_prompts else [r[0] for r in rows]


def metric(con, model_version: str, name: str) -> float:
    row = con.execute(
        "SELECT value FROM metrics_history WHERE model_version = ? AND metric = ? ORDER BY measured_at DESC LIMIT 1",
        [model_version, name],
    ).fetchone()
    return float(row[0]) if row else float("nan")


def real_values(con, modality: str, seed: int) -> np.ndarray:
    if modality == "image":
        images = [r[0] for r in con.execute("SELECT image FROM clean_images WHERE split = 'train'").fetchall()]
        return taste("image", images)
    texts = [r[0] for r in con.execute("SELECT text FROM clean_texts WHERE split = 'train' AND text IS NOT NULL").fetchall()]
    return taste("text", texts)


def reward_rank(home: Path, con, modality: str, categories: list, contents: list, prompts: list,
                before_model: str) -> list:
    """The first batch ranked by the reward model the retrain fitted: curation alone."""
    models = home / "artifacts" / "models" / modality
    reward = load_model(max(models.glob("reward-*.pt"), key=os.path.getmtime))
    if modality == "image":
        evaluator = load_model(next(models.glob("evaluator-*.pt")))
        images = torch.from_numpy(np.stack([pixels(c) for c in contents]))[:, None]
        feats = image_features(evaluator, images)
    else:
        path = con.execute("SELECT checkpoint_path FROM models WHERE model_version = ?", [before_model]).fetchone()[0]
        # the features of the generator the reward model was fitted on: the first champion's base
        base = con.execute("SELECT json_extract_string(input_versions, '$.base_model') FROM models "
                           "WHERE model_version = ?", [before_model]).fetchone()[0] or before_model
        path = con.execute("SELECT checkpoint_path FROM models WHERE model_version = ?", [base]).fetchone()[0]
        writer = load_writer(resolve(path, str(home / "artifacts")))  # stored relative to the artifacts root
        feats = writer_features(writer, list(zip(categories, prompts)), contents)
    scores = reward.predict(feats).numpy()
    frame = {"sample_id": list(range(len(contents))), "category": categories, "reward": scores}
    kept = curate([dict(zip(frame, v)) for v in zip(*frame.values())], k_per_category=K[modality]).curated
    return [contents[i] for i in kept["sample_id"]]


def run(modality: str, profile: str, seed: int, noise: float, log) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"feedback-product-{modality}-"))
    os.environ["GEN_ASSETS_HOME"] = str(home)
    warehouse = str(home / "warehouse.duckdb")
    assert cli.main(["run", "--modality", modality, "--profile", profile]) == 0
    with duckdb.connect(warehouse, read_only=True) as con:
        before_model, sample_ids, categories, contents, prompts = latest_batch(con, modality)
        curated_before = curated_now(con, modality)
        shown_before = curated_now(con, modality, with_prompts=True)
        rater = Rater(real_values(con, modality, seed), noise, seed)
        fid_before = metric(con, before_model, "fid")
    stars = np.clip(np.rint(rater(taste(modality, contents))), 1, 5).astype(int)
    ratings = home / "ratings.csv"
    ratings.write_text("sample_id,rating,user_id\n" + "".join(f"{s},{r},simulated\n" for s, r in zip(sample_ids, stars)))
    assert cli.main(["feedback", "import", str(ratings)]) == 0
    assert cli.main(["retrain", "--modality", modality, "--profile", profile]) == 0
    with duckdb.connect(warehouse, read_only=True) as con:
        after_model, _, _, after_contents, _ = latest_batch(con, modality)
        curated_after = curated_now(con, modality)
        shown_after = curated_now(con, modality, with_prompts=True)
        curation_only = reward_rank(home, con, modality, categories, contents, prompts, before_model)
        if modality == "image":
            validity = {"class_accuracy_before": metric(con, before_model, "class_accuracy"),
                        "class_accuracy_after": metric(con, after_model, "class_accuracy"),
                        "fid_before": fid_before, "fid_after": metric(con, after_model, "fid"),
                        "fid_real_floor": metric(con, after_model, "fid_real_floor")}
        else:
            validity = {"bits_per_byte_before": metric(con, before_model, "bits_per_byte"),
                        "bits_per_byte_after": metric(con, after_model, "bits_per_byte"),
                        "degenerate_share_before": metric(con, before_model, "degenerate_share"),
                        "degenerate_share_after": metric(con, after_model, "degenerate_share")}
    sets = {
        "generated before": contents,
        "curated before": curated_before,
        "curation only": curation_only,
        "fine-tuning only": after_contents,
        "curation + fine-tuning": curated_after,
    }
    rows = {name: float(rater(taste(modality, items)).mean()) for name, items in sets.items()}
    base = rows["generated before"]
    return {
        "modality": modality,
        "ratings": int(len(stars)),
        "rows": {name: {"mean_rating": r, "uplift": r / base - 1.0, "n": len(sets[name])} for name, r in rows.items()},
        "validity": validity,
        "models": {"before": before_model, "after": after_model},
        "shown": {"before": [list(r) for r in shown_before] if modality == "text" else [],
                  "after": [list(r) for r in shown_after] if modality == "text" else []},
        "home": str(home),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=["image", "text", "all"], default="all")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--show", type=int, default=0, help="print this many curated texts before and after")
    args = parser.parse_args(argv)
    modalities = ["image", "text"] if args.modality == "all" else [args.modality]
    results = [run(m, args.profile, args.seed, args.noise, print) for m in modalities]
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(f"\n== {r['modality']}: {r['ratings']} simulated ratings through gen-assets feedback import + retrain ==")
        print(f"{'shown':<26}{'samples':>8}{'rating':>9}{'uplift':>9}")
        for name, row in r["rows"].items():
            print(f"{name:<26}{row['n']:>8}{row['mean_rating']:>9.3f}{100 * row['uplift']:>+8.1f}%")
        print("validity: " + ", ".join(f"{k} {v:.4g}" for k, v in r["validity"].items()))
        print(f"models: {r['models']['before']} -> {r['models']['after']}")
        for when in ("before", "after") if args.show and r["shown"]["before"] else ():
            print(f"\ncurated texts {when} the retrain:")
            for text, prompt in r["shown"][when][: args.show]:
                print(f"  brief: {prompt}\n  copy:  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
