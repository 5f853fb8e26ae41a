import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.training.fit import fit
from gen_assets.models.vae import VAE, VAEConfig


def digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))[:n]
    return np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None], d.target[order].astype(np.int64)


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3)])
def test_shapes_and_range(size, channels):
    model = VAE(VAEConfig(size, channels, num_classes=4, width=8, latent_dim=4))
    labels = torch.tensor([0, 1, 2, 3, 3])
    images = model.generate(labels, seed=0)
    assert images.shape == (5, channels, size, size) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    mu, logvar = model.encoder(images, labels)
    assert mu.shape == logvar.shape == (5, 4)


def test_generate_is_deterministic_for_a_seed():
    model = VAE(VAEConfig(8, 1, 10)).train()
    labels = torch.arange(10)
    a = model.generate(labels, seed=3)
    assert torch.equal(a, model.generate(labels, seed=3))
    assert not torch.equal(a, model.generate(labels, seed=4))
    assert model.decoder.training
    with pytest.raises(ValueError, match="1-d"):
        model.generate(torch.zeros(2, 2, dtype=torch.long))


def test_a_few_steps_lower_the_negative_elbo():
    torch.manual_seed(0)
    x, y = digits(256)
    xt, yt = images_to_tensor(x), torch.from_numpy(y)
    model = VAE(VAEConfig(8, 1, 10))
    opt = model.configure_optimizers()
    noise = torch.randn(len(xt), model.config.latent_dim)
    before = model.loss(xt, yt, noise=noise)[0].item()
    for _ in range(40):
        loss, recon, kl = model.loss(xt, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(xt, yt, noise=noise)[0].item() < 0.8 * before
    assert recon.item() > 0 and kl.item() >= 0


def test_fit_trains_logs_and_round_trips(tmp_path):
    torch.manual_seed(0)
    x, y = digits(320)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10)).eval()
    model = VAE(VAEConfig(8, 1, 10, width=8), evaluator=evaluator)
    assert not any("evaluator" in k for k in model.state_dict())
    train, val = image_loaders(x[:256], y[:256], x[256:], y[256:], batch_size=64, seed=0)
    result = fit(model, train, val, run_dir=tmp_path / "run", max_epochs=3, monitor="val_fid", seed=0)

    rows = result.history
    assert {"train_loss", "val_loss", "val_fid", "val_class_acc"} <= set(rows[-1])
    assert all(math.isfinite(r["val_loss"]) and r["val_loss"] > 0 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    save_model(tmp_path / "vae.pt", "vae", model)
    loaded = load_model(tmp_path / "vae.pt")
    assert isinstance(loaded, VAE) and loaded.config == model.config
    labels = torch.arange(10)
    assert torch.equal(loaded.generate(labels, seed=1), model.generate(labels, seed=1))


def test_fit_without_an_evaluator_monitors_val_loss(tmp_path):
    x, y = digits(192)
    model = VAE(VAEConfig(8, 1, 10, width=8))
    train, val = image_loaders(x[:128], y[:128], x[128:], y[128:], batch_size=64, seed=0)
    result = fit(model, train, val, run_dir=tmp_path / "run", max_epochs=2, monitor="val_loss", seed=0)
    assert "val_fid" not in result.history[-1] and result.best_score == pytest.approx(
        min(r["val_loss"] for r in result.history)
    )
