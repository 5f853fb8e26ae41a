import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torchmetrics.image.fid import FrechetInceptionDistance

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator, frechet_distance
from gen_assets.training.fit import fit


def digits(n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    images = np.round(d.images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    return images[order], d.target[order].astype(np.int64)


def test_images_to_tensor_layout_and_range():
    x = np.zeros((2, 8, 6, 3), dtype=np.uint8)
    x[0, 1, 2, 0] = 255
    t = images_to_tensor(x)
    assert t.shape == (2, 3, 8, 6) and t.dtype == torch.float32
    assert t[0, 0, 1, 2] == 1.0 and t.sum() == 1.0


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros((2, 8, 8), np.uint8), "N x H x W x C"), (np.zeros((2, 8, 8, 1), np.float32), "uint8")],
)
def test_images_to_tensor_refuses_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        images_to_tensor(bad)


def test_image_loaders_batches_and_seeded_shuffle():
    x, y = digits(100)
    train, val = image_loaders(x[:80], y[:80], x[80:], y[80:], batch_size=32, seed=3)
    xb, yb = next(iter(train))
    assert xb.shape == (32, 1, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert 0.0 <= xb.min() and xb.max() <= 1.0
    assert len(train) == 2  # drop_last: 80 images -> two full batches
    assert sum(len(b[0]) for b in val) == 20
    again, _ = image_loaders(x[:80], y[:80], None, None, batch_size=32, seed=3)
    other, none = image_loaders(x[:80], y[:80], None, None, batch_size=32, seed=4)
    assert none is None
    assert torch.equal(next(iter(again))[1], yb)
    assert not torch.equal(next(iter(other))[1], yb)


def test_image_loaders_refuse_mismatched_labels():
    x, y = digits(10)
    with pytest.raises(ValueError, match="train_y"):
        image_loaders(x, y[:9], None, None, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="val images"):
        image_loaders(x, y, np.zeros((2, 28, 28, 1), np.uint8), y[:2], batch_size=4, seed=0)


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3), (5, 1)])
def test_shapes_for_any_square_size(size, channels):
    model = ImageEvaluator(EvaluatorConfig(size, channels, num_classes=7, num_features=24)).eval()
    x = torch.rand(3, channels, size, size)
    assert model(x).shape == (3, 7)
    assert model.features(x).shape == (3, 24)
    extractor = model.feature_extractor()
    assert type(extractor.num_features) is int and extractor.num_features == 24
    assert extractor(x).shape == (3, 24)
    assert model.logits_extractor()(x).shape == (3, 7)
    # torchmetrics sizes its state from the extractor instead of probing it with a 299x299 image
    fid = FrechetInceptionDistance(feature=model.feature_extractor(), normalize=False)
    assert fid.real_features_sum.shape == (24,)


def test_extractors_stay_in_eval_mode():
    model = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    extractor = model.feature_extractor().train()
    assert not extractor.training and not model.training
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(extractor(x), extractor(x))  # dropout off, batch-norm running stats
    assert torch.equal(extractor((x * 255).to(torch.uint8)), extractor((x * 255).to(torch.uint8).float() / 255))


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    x, y = digits(256)
    xt, yt = images_to_tensor(x), torch.from_numpy(y)
    model = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    opt = model.configure_optimizers()
    before = torch.nn.functional.cross_entropy(model.eval()(xt), yt).item()
    model.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = torch.nn.functional.cross_entropy(model.eval()(xt), yt).item()
    assert after < 0.5 * before


def test_fit_reaches_high_test_accuracy_and_round_trips(tmp_path):
    x, y = digits()
    n = len(x)
    tr, va, te = slice(0, int(0.8 * n)), slice(int(0.8 * n), int(0.9 * n)), slice(int(0.9 * n), n)
    train, val = image_loaders(x[tr], y[tr], x[va], y[va], batch_size=64, seed=0)
    model = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    result = fit(model, train, val, run_dir=tmp_path / "run", max_epochs=6, monitor="val_loss", seed=0)
    assert {"train_loss", "val_loss", "val_acc"} <= set(result.history[-1])
    test_x, test_y = images_to_tensor(x[te]), torch.from_numpy(y[te])
    accuracy = (model.predict(test_x) == test_y).float().mean().item()
    assert accuracy >= 0.95

    save_model(tmp_path / "evaluator.pt", "evaluator", model)
    loaded = load_model(tmp_path / "evaluator.pt")
    assert torch.equal(loaded.features(test_x), model.eval().features(test_x))


def test_frechet_distance_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g)
    b = torch.randn(150, 6, generator=g) * 1.5 + 0.3
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)

    class Identity(torch.nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    fid = FrechetInceptionDistance(feature=Identity(), normalize=False)
    fid.update(a, real=True)
    fid.update(b, real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute().double()), rel=1e-4)
    assert frechet_distance(a, b) > 1.0
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_generators_val_fid_through_torchmetrics_matches_the_hand_computed_fid(arch):
    # val_fid used to be computed by hand: features of every val batch and of its generated twin, kept,
    # then frechet_distance over all of them. It is now torchmetrics' FID fed batch by batch; on one
    # process the two must agree, and a second validation must start afresh (Lightning resets the metric).
    from gen_assets.models.dcgan import DCGAN, DCGANConfig
    from gen_assets.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    x, y = digits(96)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10, num_features=16)).eval()
    if arch == "dcgan":
        model = DCGAN(DCGANConfig(8, 1, 10, width=4, d_width=4), evaluator=evaluator)
        bare = DCGAN(DCGANConfig(8, 1, 10, width=4, d_width=4))
    else:
        model = VAE(VAEConfig(8, 1, 10, width=4), evaluator=evaluator)
        bare = VAE(VAEConfig(8, 1, 10, width=4))
    # the metrics add nothing to the model's state: a model file loads into a generator built without them
    assert list(model.state_dict()) == list(bare.state_dict())
    _, val = image_loaders(x[:8], y[:8], x, y, batch_size=32, seed=0)  # 3 val batches

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    first = trainer.validate(model, val, verbose=False)[0]
    second = trainer.validate(model, val, verbose=False)[0]

    real, fake, hits = [], [], []
    with torch.no_grad():
        for i, (xb, yb) in enumerate(val):
            generated = model.generate(yb, seed=model.config.val_samples_seed + i)
            real.append(evaluator.features(xb))
            fake.append(evaluator.features(generated))
            hits.append(evaluator.classifier(fake[-1]).argmax(dim=1) == yb)
    expected_fid = frechet_distance(torch.cat(real), torch.cat(fake))
    expected_acc = float(torch.cat(hits).float().mean())
    assert expected_fid > 0.01  # a real distance, not two identical sets
    assert first["val_fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert first["val_class_acc"] == pytest.approx(expected_acc, abs=1e-6)
    assert second["val_fid"] == pytest.approx(first["val_fid"], rel=1e-6)
