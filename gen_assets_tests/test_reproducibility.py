"""Same inputs, config and seed on CPU give the same model file (the checkpoint hash is the model version)."""

import dagster as dg

from gen_assets.defs.assets import clean, raw, trained
from gen_assets.defs.resources import build_resources
from gen_assets.settings import Paths

RUN_CONFIG = {
    "ops": {
        "image_evaluator": {"config": {"max_epochs": 2, "patience": 2}},
        "image_generator": {"config": {"max_epochs": 2, "patience": 2}},
    }
}


def train_in(home) -> tuple[str, str]:
    assets = [raw.raw_images, clean.clean_images, trained.image_evaluator, trained.image_generator]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(assets, resources=build_resources(Paths(home)), run_config=RUN_CONFIG, instance=instance)
        assert result.success
        return (result.output_for_node("image_evaluator").sha256, result.output_for_node("image_generator").sha256)


def test_same_inputs_config_and_seed_give_the_same_checkpoints(tmp_path):
    assert train_in(tmp_path / "a") == train_in(tmp_path / "b")
