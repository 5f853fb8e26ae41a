"""The from-scratch GPT stays a text generator: Shakespeare (`builtin:shakespeare`) with `arch: gpt` in the
project file runs the text graph, its champion measured in bits per byte like a pretrained model's."""

import math

import duckdb

from gen_assets import cli
from gen_assets_tests.smoke import smoke_run

PROJECT = """\
texts:
  source: builtin:shakespeare
assets:
  text_generator: {arch: gpt, n_layer: 1, n_head: 2, n_embd: 32, block_size: 32}
"""


def test_shakespeare_with_the_from_scratch_gpt(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "gen_assets.yaml").write_text(PROJECT)
    with smoke_run(home, "text"):
        pass
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        arch, config = con.execute("SELECT arch, config FROM models WHERE status = 'champion'").fetchone()
        assert arch == "gpt" and '"n_embd": 32' in config
        rows = con.execute("SELECT category, prompt, text FROM generated WHERE modality = 'text'").fetchall()
        # no prompts in this corpus: one sample per genre (smoke: samples_per_brief 1), conditioned on it
        assert sorted(c for c, _, _ in rows) == ["comedy", "history", "problem", "roman", "romance", "tragedy"]
        assert all(p is None and isinstance(t, str) for _, p, t in rows)
        (bpb,) = con.execute("SELECT value FROM metrics_history WHERE metric = 'bits_per_byte'").fetchone()
        assert math.isfinite(bpb) and 0 < bpb < 10
