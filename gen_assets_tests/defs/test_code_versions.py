"""Code is part of a model's identity: in the asset graph (code_version) and in a training run's key."""

from types import SimpleNamespace

import dagster as dg
import torch
from torch.utils.data import DataLoader, TensorDataset

from gen_assets.defs.assets import trained
from gen_assets.defs.resources import ArtifactStore
from gen_assets.definitions import build_definitions
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.settings import Paths
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.training.fit import FitResult
from gen_assets_tests.training.test_fingerprint import ASSET_CODE  # every training-like asset's code roots


def test_training_assets_code_version_is_their_code_fingerprint(tmp_path):
    graph = build_definitions(Paths(tmp_path), timezone="Europe/Berlin").resolve_asset_graph()
    node = graph.get(dg.AssetKey("image_generator"))
    assert node.code_version == code_fingerprint(*trained.IMAGE_GENERATOR_CODE)
    assert node.code_version != "1"
    for name, roots in ASSET_CODE.items():
        assert graph.get(dg.AssetKey(name)).code_version == code_fingerprint(*roots), name


def test_a_finished_run_is_reused_only_by_the_same_code(tmp_path, monkeypatch):
    """Same inputs, config and code: the finished run is reused. New code: trained again, in a new run."""
    runs: list[str] = []

    def fake_fit(module, train, val, *, run_dir, **kwargs):
        # what train_and_save does with a finished fit is the point here, not Lightning
        runs.append(run_dir.name)
        run_dir.mkdir(parents=True, exist_ok=True)  # as fit does: its checkpoints live there
        return FitResult(best_path=None, last_path=str(run_dir / "last.ckpt"), history=[{"epoch": 0, "val_loss": 1.0}])

    monkeypatch.setattr(trained, "fit", fake_fit)
    context = SimpleNamespace(log=SimpleNamespace(info=lambda message: None))
    artifacts = ArtifactStore(home=str(tmp_path))
    loader = DataLoader(TensorDataset(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)), batch_size=2)

    def train(code_version: str):
        module = ImageEvaluator(EvaluatorConfig(image_size=8, channels=1, num_classes=2, num_features=4, width=4))
        return trained.train_and_save(
            context, name="image_evaluator", modality="image", arch="evaluator", module=module,
            loaders=(loader, loader), fit_args={}, key_parts={"clean_images": "c1"}, code_version=code_version,
            artifacts=artifacts, retrain=False,
        )

    _, _, first = train("code-a")
    _, _, again = train("code-a")
    _, _, edited = train("code-b")
    assert (first["reused"], again["reused"], edited["reused"]) == (False, True, False)
    assert len(runs) == 2 and runs[0] != runs[1]
