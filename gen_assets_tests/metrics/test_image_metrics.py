import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from gen_assets.metrics.images import METRIC_KEYS, balanced_subsample, image_metrics, per_class_accuracy
from gen_assets.training.image_data import images_to_tensor
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator


@pytest.fixture(scope="module")
def data():
    """Digits split 80/10/10 and an evaluator trained on the train split (a couple of seconds)."""
    torch.manual_seed(0)
    d = load_digits()
    images = images_to_tensor(np.round(d.images * 255 / 16).astype(np.uint8)[..., None])
    labels = torch.from_numpy(d.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    a, b = int(0.8 * len(order)), int(0.9 * len(order))
    train, test = order[:a], order[b:]
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10))
    opt = evaluator.configure_optimizers()
    for epoch in range(6):
        for idx in train[torch.randperm(len(train))].split(64):
            loss = F.cross_entropy(evaluator(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    evaluator.eval()
    return {
        "evaluator": evaluator,
        "train": images[train],
        "test": images[test],
        "test_labels": labels[test],
    }


def test_keys_and_yardsticks(data):
    # "generated" = jittered real test images: close to the data but not identical to it
    g = torch.Generator().manual_seed(1)
    fake = (data["test"] + 0.05 * torch.randn(data["test"].shape, generator=g)).clamp(0, 1)
    m = image_metrics(
        data["evaluator"],
        generated=fake,
        generated_labels=data["test_labels"],
        reference=data["train"],
        real=data["test"],
        real_labels=data["test_labels"],
    )
    assert tuple(m) == METRIC_KEYS
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert m["fid_noise"] > 10 * m["fid_real_floor"] > 0
    assert m["fid"] < m["fid_noise"] / 5
    assert m["class_accuracy"] > 0.9
    assert 1.0 < m["inception_score"] <= 10.0 + 1e-6
    assert m["real_diversity"] > 0.5 and m["diversity"] > 0.5


def test_identical_sets_give_zero_fid(data):
    x, y = data["test"], data["test_labels"]
    m = image_metrics(data["evaluator"], generated=x, generated_labels=y, reference=x, real=x)
    assert m["fid"] == pytest.approx(0.0, abs=1e-2)
    assert m["fid_real_floor"] == pytest.approx(0.0, abs=1e-2)
    # (KID is no check here: its unbiased estimator assumes independent sets and goes negative)
    assert m["fid_noise"] > 100 * max(m["fid"], 1e-3)


def test_class_accuracy_of_real_images_is_the_evaluators_accuracy(data):
    evaluator, x, y = data["evaluator"], data["test"], data["test_labels"]
    m = image_metrics(evaluator, generated=x, generated_labels=y, reference=data["train"], real=x)
    with torch.no_grad():
        accuracy = (evaluator(x).argmax(1) == y).float().mean().item()
    assert m["class_accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.9
    per_class = per_class_accuracy(evaluator, x, y)
    assert sorted(per_class) == list(range(10))
    counts = torch.bincount(y, minlength=10).float()
    assert sum(per_class[c] * counts[c].item() for c in per_class) / len(y) == pytest.approx(accuracy)


def test_fids_use_the_same_number_of_samples(data):
    evaluator = data["evaluator"]
    # 1000 "generated" images but 180 held out: fid and its yardsticks all use n = 180
    many = data["train"][:1000]
    labels = evaluator.predict(many)
    kw = {"reference": data["train"], "real": data["test"], "kid_subset_size": 200}
    m = image_metrics(evaluator, generated=many, generated_labels=labels, **kw)
    idx = balanced_subsample(labels, len(data["test"]), seed=0)
    assert len(idx) == len(data["test"]) == len(set(idx.tolist()))
    assert torch.bincount(labels[idx]).max() - torch.bincount(labels[idx]).min() <= 1
    # seeded: the same call gives the same figures
    again = image_metrics(evaluator, generated=many, generated_labels=labels, **kw)
    assert again == m


def test_few_samples_clamp_the_kid_subset(data):
    evaluator = data["evaluator"]
    kw = {"generated": data["test"][:12], "generated_labels": data["test_labels"][:12], "reference": data["train"]}
    results = {}
    for subset in (None, 5, 1000):
        m = image_metrics(evaluator, **kw, real=data["test"], kid_subset_size=subset)
        assert np.isfinite(m["kid"]) and np.isfinite(m["kid_std"])
        assert m["inception_score_std"] == 0.0  # 12 samples: a single split
        results[subset] = m["kid"]
    assert results[None] == results[1000] != results[5]  # both clamped to the 12 samples there are
    with pytest.raises(ValueError, match="kid_subset_size"):
        image_metrics(evaluator, **kw, real=data["test"], kid_subset_size=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"generated": torch.rand(4, 1, 8, 8) * 2}, r"generated: values must lie in \[0, 1\]"),
        ({"generated": torch.rand(4, 3, 8, 8)}, "generated: images are"),
        ({"generated_labels": torch.zeros(3, dtype=torch.long)}, "generated_labels"),
        ({"real": torch.rand(1, 1, 8, 8)}, "at least 2"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(data, kwargs, message):
    args = {
        "generated": torch.rand(4, 1, 8, 8),
        "generated_labels": torch.tensor([0, 1, 2, 3]),
        "reference": data["train"][:50],
        "real": data["test"][:10],
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        image_metrics(data["evaluator"], **args)


@pytest.mark.skipif(_TORCH_FIDELITY_AVAILABLE, reason="torch-fidelity is installed")
def test_inception_weights_without_torch_fidelity_says_so(data, tmp_path):
    x, y = data["test"][:20], data["test_labels"][:20]
    with pytest.raises(ModuleNotFoundError, match="torch-fidelity"):
        image_metrics(
            data["evaluator"], generated=x, generated_labels=y, reference=x, real=x,
            inception_weights=str(tmp_path / "weights.pth"),
        )
