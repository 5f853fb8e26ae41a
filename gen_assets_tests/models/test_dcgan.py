import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.training.image_data import image_loaders
from gen_assets.models.dcgan import DCGAN, DCGANConfig, upsample_stages
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.training.fit import fit


def digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))[:n]
    return np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None], d.target[order].astype(np.int64)


def test_upsample_stages_follow_the_image_size():
    assert upsample_stages(8) == (2, 2)
    assert upsample_stages(28) == (7, 2)
    assert upsample_stages(32) == (4, 3)
    assert upsample_stages(5) == (5, 0)


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3)])
def test_shapes_and_range(size, channels):
    model = DCGAN(DCGANConfig(size, channels, num_classes=4, width=8, d_width=8, latent_dim=16))
    labels = torch.tensor([0, 1, 2, 3, 3])
    images = model.generate(labels, seed=0)
    assert images.shape == (5, channels, size, size) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert model.discriminator(images, labels).shape == (5,)


def test_generate_is_deterministic_for_a_seed_and_leaves_modes_alone():
    model = DCGAN(DCGANConfig(8, 1, 10)).train()
    labels = torch.arange(10)
    a = model.generate(labels, seed=7)
    assert torch.equal(a, model.generate(labels, seed=7))
    assert not torch.equal(a, model.generate(labels, seed=8))
    assert model.training and model.g_ema.training
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.generate(torch.tensor([10]))


def test_the_evaluator_is_not_part_of_the_model():
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    model = DCGAN(DCGANConfig(8, 1, 10), evaluator=evaluator)
    assert model.evaluator is evaluator
    assert not any(k.startswith(("evaluator", "_evaluator")) for k in model.state_dict())
    evaluator_params = {id(p) for p in evaluator.parameters()}
    assert not evaluator_params & {id(p) for p in model.parameters()}


def test_fit_trains_logs_and_round_trips(tmp_path):
    torch.manual_seed(0)
    x, y = digits(320)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10)).eval()
    evaluator_state = {k: v.clone() for k, v in evaluator.state_dict().items()}
    model = DCGAN(DCGANConfig(8, 1, 10, width=8, d_width=8), evaluator=evaluator)
    d_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in model.g_ema.state_dict().items()}
    train, val = image_loaders(x[:256], y[:256], x[256:], y[256:], batch_size=64, seed=0)
    result = fit(model, train, val, run_dir=tmp_path / "run", max_epochs=3, monitor="val_fid", patience=5, seed=0)

    assert len(result.history) == 3 and result.best_path
    losses = [(row["g_loss"], row["d_loss"]) for row in result.history]
    assert all(math.isfinite(v) for pair in losses for v in pair)
    assert len(set(losses)) == 3, "the losses move from epoch to epoch"
    last = result.history[-1]
    assert math.isfinite(last["val_fid"]) and last["val_fid"] >= 0 and 0 <= last["val_class_acc"] <= 1
    assert any(not torch.equal(v, d_before[k]) for k, v in model.discriminator.state_dict().items())
    assert any(not torch.equal(v, g_before[k]) for k, v in model.g_ema.state_dict().items())
    for k, v in evaluator.state_dict().items():  # the yardstick is used, never trained
        assert torch.equal(v.cpu(), evaluator_state[k]), k

    save_model(tmp_path / "dcgan.pt", "dcgan", model)
    loaded = load_model(tmp_path / "dcgan.pt")
    assert isinstance(loaded, DCGAN) and loaded.config == model.config
    labels = torch.arange(10).repeat(3)
    assert torch.equal(loaded.generate(labels, seed=1), model.generate(labels, seed=1))

    # a killed run continues from last.ckpt
    again = DCGAN(DCGANConfig(8, 1, 10, width=8, d_width=8), evaluator=evaluator)
    resumed = fit(again, train, val, run_dir=tmp_path / "run", max_epochs=4, monitor="val_fid", seed=0)
    assert resumed.resumed_from and resumed.epochs == 4 and len(resumed.history) == 4


def test_fakes_come_in_pairs_sharing_a_category_and_collapse_is_penalised():
    model = DCGAN(DCGANConfig(8, 1, 10))
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    z, yf = model.noise_and_labels(y)
    assert z.shape == (7, model.config.latent_dim)
    assert yf.tolist() == [0, 1, 2, 0, 1, 2, 6]
    assert torch.equal(DCGAN(DCGANConfig(8, 1, 10, mode_seeking=0.0)).noise_and_labels(y)[1], y)

    z, yf = model.noise_and_labels(torch.arange(8))
    diverse = torch.rand(8, 1, 8, 8)
    collapsed = torch.cat([diverse[:4], diverse[:4]])  # each pair: two noises, one image
    adversarial, total = model.g_loss(z, diverse, yf)
    assert total > adversarial
    _, total_collapsed = model.g_loss(z, collapsed, yf)
    assert total_collapsed > 100 * total


def test_compile_is_in_place_so_checkpoints_keep_the_plain_keys(tmp_path):
    model = DCGAN(DCGANConfig(8, 1, 10, compile=True))
    keys = list(model.state_dict())
    model.configure_model()  # what Lightning calls before fitting; the compilation itself is lazy
    model.configure_model()  # and only once
    assert model.generator._compiled_call_impl is not None and model.discriminator._compiled_call_impl is not None
    assert list(model.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    save_model(tmp_path / "m.pt", "dcgan", model)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config.compile and loaded.generator._compiled_call_impl is None  # inference stays eager
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    plain = DCGAN(DCGANConfig(8, 1, 10))
    plain.configure_model()
    assert plain.generator._compiled_call_impl is None
