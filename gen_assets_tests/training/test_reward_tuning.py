import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.models.dcgan import DCGAN, DCGANConfig
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator
from gen_assets.models.reward import fit_reward, image_features
from gen_assets.models.vae import VAE, VAEConfig
from gen_assets.rules.promotion import image_key_metric
from gen_assets.training.fit import fit
from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.training.reward_tuning import differentiable_image_features, reward_tune_image_generator
from gen_assets.training.sampling import generate_per_class

# the evaluation the tests ask for: 20 samples per category, the gate's seed
EVAL = dict(eval_per_class=20, eval_seed=0, batch_size=32, accelerator="cpu")
LABELS = torch.arange(10).repeat_interleave(30)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Digits (train 600, val 300), a trained evaluator, a DCGAN and a VAE trained for 30 epochs, and a reward
    model of a rater who likes ink (rating = the image's mean pixel, rescaled to 1..5)."""
    tmp = tmp_path_factory.mktemp("reward-tuning")
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))
    x = np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None]
    y = d.target[order].astype(np.int64)
    train, _ = image_loaders(x[:600], y[:600], None, None, batch_size=64, seed=0)
    torch.manual_seed(0)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 10, num_features=16, width=8))
    fit(evaluator, train, None, run_dir=tmp / "evaluator", max_epochs=5, seed=0, accelerator="cpu")
    models = {"dcgan": DCGAN(DCGANConfig(8, 1, 10, width=8, d_width=8)), "vae": VAE(VAEConfig(8, 1, 10, width=8))}
    for arch, model in models.items():
        fit(model, train, None, run_dir=tmp / arch, max_epochs=30, seed=0, accelerator="cpu")
        models[arch] = model.cpu().eval()
    evaluator = evaluator.cpu().eval()
    real = images_to_tensor(x[:600])
    ink = real.mean(dim=(1, 2, 3))
    reward, report = fit_reward(image_features(evaluator, real), 1 + 4 * (ink - ink.min()) / (ink.max() - ink.min()),
                                seed=0)
    assert report.cv_pearson > 0.95 and report.predicts
    return {"models": models, "evaluator": evaluator, "reward": reward, "val": images_to_tensor(x[600:900])}


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model, saved: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], v) for k, v in saved.items())


def measured_reward(reward, evaluator, model) -> float:
    fake, _ = generate_per_class(model, num_classes=10, per_class=20, seed=0)
    return float(reward.predict(image_features(evaluator, fake)).mean())


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_reward_tuning_raises_the_reward_within_the_fid_limit(arch, setup):
    base, evaluator, reward, val = setup["models"][arch], setup["evaluator"], setup["reward"], setup["val"]
    before = {"base": state(base), "evaluator": state(evaluator), "reward": state(reward)}
    tuned, report = reward_tune_image_generator(base, reward, evaluator, reference_x=val, steps=60, eval_every=10,
                                                max_fid_increase=0.3, **EVAL)

    assert report["steps_kept"] > 0, report
    assert report["fid_after"] <= 1.3 * report["fid_before"] and report["fid_limit"] == pytest.approx(
        1.3 * report["fid_before"])
    assert report["reward_after"] > report["reward_before"] + 0.3, report
    # the figures are the promotion gate's (rules/promotion.image_key_metric) for the same samples
    assert report["fid_before"] == pytest.approx(image_key_metric(base, evaluator, val, per_class=20, seed=0))
    assert report["fid_after"] == pytest.approx(image_key_metric(tuned, evaluator, val, per_class=20, seed=0))
    assert report["reward_after"] == pytest.approx(measured_reward(reward, evaluator, tuned), abs=1e-5)
    # the kept step is the last evaluated one inside the limit; training stopped after two misses in a row
    steps = [s for s, _, _ in report["history"]]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= 60
    inside = [s for s, f, _ in report["history"] if f <= report["fid_limit"]]
    assert report["steps_kept"] == inside[-1]
    assert report["stopped_early"] == (steps[-1] < 60)

    # what generate() shows moved: more ink on new samples (not those the gate measured), still the category
    b, a = base.generate(LABELS, seed=1), tuned.generate(LABELS, seed=1)
    assert float(a.mean()) > float(b.mean()) + 0.01, (float(b.mean()), float(a.mean()))
    assert float((evaluator.predict(a) == LABELS).float().mean()) > 0.85
    # a copy was trained: the inputs are untouched; the copy is on the CPU, in eval mode, with the config
    assert same_state(base, before["base"]) and same_state(evaluator, before["evaluator"])
    assert same_state(reward, before["reward"])
    assert tuned is not base and tuned.config == base.config and not tuned.training
    assert all(p.device.type == "cpu" for p in tuned.parameters())
    if arch == "dcgan":
        # the raw generator carries the tuned weights too: further adversarial training continues from them
        for (k, p), q in zip(tuned.generator.state_dict().items(), tuned.g_ema.state_dict().values()):
            assert torch.equal(p, q), k
        assert not any(p.requires_grad for p in tuned.g_ema.parameters())
        assert same_state(tuned.discriminator, base.discriminator.state_dict())
    else:
        assert same_state(tuned.encoder, base.encoder.state_dict())


def test_the_result_saves_and_loads(setup, tmp_path):
    base, evaluator, reward, val = setup["models"]["dcgan"], setup["evaluator"], setup["reward"], setup["val"]
    tuned, report = reward_tune_image_generator(base, reward, evaluator, reference_x=val, steps=20, eval_every=10,
                                                **EVAL)
    assert report["steps_kept"] > 0
    save_model(tmp_path / "tuned.pt", "dcgan", tuned)
    loaded = load_model(tmp_path / "tuned.pt")
    assert same_state(loaded, tuned.state_dict())
    torch.testing.assert_close(loaded.generate(LABELS, seed=3), tuned.generate(LABELS, seed=3))


def test_a_large_anchor_keeps_the_samples_near_the_champions(setup):
    base, evaluator, reward, val = setup["models"]["dcgan"], setup["evaluator"], setup["reward"], setup["val"]
    b = base.generate(LABELS, seed=1)
    moved = {}
    for anchor in (0.0, 100.0):
        tuned, report = reward_tune_image_generator(base, reward, evaluator, reference_x=val, steps=30, eval_every=30,
                                                    lr=1e-3, anchor=anchor, class_weight=0.0, max_fid_increase=1e9,
                                                    **EVAL)
        assert report["steps_kept"] == 30
        moved[anchor] = float((tuned.generate(LABELS, seed=1) - b).abs().mean())
    assert moved[100.0] < moved[0.0] / 3, moved


def test_no_step_inside_the_limit_returns_the_model_unchanged(setup, tmp_path):
    base, evaluator, reward, val = setup["models"]["dcgan"], setup["evaluator"], setup["reward"], setup["val"]
    # a greedy run (no anchor, high lr) leaves the data at once; no FID increase is allowed
    greedy = dict(reference_x=val, steps=60, eval_every=10, lr=3e-3, anchor=0.0, class_weight=0.0,
                  max_fid_increase=0.0, **EVAL)
    tuned, report = reward_tune_image_generator(base, reward, evaluator, run_dir=tmp_path / "run", **greedy)
    assert report["steps_kept"] == 0 and report["stopped_early"]
    assert [s for s, _, _ in report["history"]] == [0, 10, 20], "stops after two evaluations above the limit"
    assert all(f > report["fid_limit"] for _, f, _ in report["history"][1:])
    assert report["history"][-1][2] > report["reward_before"], "the reward did rise: the gate refused it"
    assert report["fid_after"] == report["fid_before"] and report["reward_after"] == report["reward_before"]
    assert "unchanged" in report["reason"]
    assert same_state(tuned, base.state_dict())
    # the run folder holds the stopped run: asked again, it is given back, not trained further
    again, report_again = reward_tune_image_generator(base, reward, evaluator, run_dir=tmp_path / "run", **greedy)
    assert report_again == report and same_state(again, base.state_dict())


def test_tuning_is_deterministic_for_a_seed(setup):
    base, evaluator, reward, val = setup["models"]["vae"], setup["evaluator"], setup["reward"], setup["val"]
    runs = [reward_tune_image_generator(base, reward, evaluator, reference_x=val, steps=10, eval_every=5, seed=seed,
                                        max_fid_increase=1e9, **EVAL) for seed in (4, 4, 5)]
    (a, ra), (b, rb), (c, _) = runs
    assert ra == rb and same_state(a, b.state_dict())
    assert not same_state(a, c.state_dict()), "another seed draws other noise"


def test_differentiable_features_match_the_reward_models_features(setup):
    evaluator = setup["evaluator"]
    images = setup["val"][:16].clone().requires_grad_(True)
    feats = differentiable_image_features(evaluator, images)
    torch.testing.assert_close(feats.detach(), image_features(evaluator, images.detach()))
    setup["reward"](feats).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_reward_tuning_checks_its_inputs(setup):
    base, evaluator, reward, val = setup["models"]["dcgan"], setup["evaluator"], setup["reward"], setup["val"]

    def tune(**kw):
        args = {"model": base, "reward": reward, "evaluator": evaluator, "reference_x": val, "steps": 1, **kw}
        return reward_tune_image_generator(args.pop("model"), args.pop("reward"), args.pop("evaluator"), **args)

    with pytest.raises(ValueError, match=r"reference_x: images are \(1, 4, 4\) \(C, H, W\) but the model makes"):
        tune(reference_x=torch.rand(10, 1, 4, 4))
    with pytest.raises(ValueError, match=r"reference_x: values must lie in \[0, 1\]"):
        tune(reference_x=val * 2)
    with pytest.raises(ValueError, match="at least 2 reference images"):
        tune(reference_x=val[:1])
    other, _ = fit_reward(torch.randn(20, 5), torch.randn(20), seed=0)
    with pytest.raises(ValueError, match="reward model reads 5 features.*23 wide"):
        tune(reward=other)
    with pytest.raises(ValueError, match="the model has 10 categories, the evaluator 3"):
        tune(evaluator=ImageEvaluator(EvaluatorConfig(8, 1, 3, num_features=16, width=8)))
    with pytest.raises(ValueError, match=r"the evaluator reads \(1, 16, 16\)"):
        tune(evaluator=ImageEvaluator(EvaluatorConfig(16, 1, 10, num_features=16, width=8)))
    with pytest.raises(ValueError, match="needs a DCGAN or a VAE"):
        tune(model=evaluator)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        tune(steps=0)
    with pytest.raises(ValueError, match="anchor must be finite and >= 0"):
        tune(anchor=-1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        tune(lr=0.0)
