import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from gen_assets.metrics.lm import validation_loss
from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.models.dcgan import DCGAN, DCGANConfig
from gen_assets.training.finetune import finetune_image_generator, finetune_text_generator, preference_weights
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.training.text_data import encode_documents, generate_texts, text_loaders
from gen_assets.models.tokenizers import CharTokenizer
from gen_assets.training.fit import fit
from gen_assets.models.vae import VAE, VAEConfig


def test_preference_weights():
    w = preference_weights([1.0, 3.0, 2.0, 2.0])
    assert float(w.sum()) == pytest.approx(1.0)
    assert w[1] > w[2] == w[3] > w[0]
    greedy = preference_weights([1.0, 3.0, 2.0, 2.0], temperature=0.25)
    assert greedy[1] > w[1], "a lower temperature puts more weight on the best"
    top = preference_weights([1.0, 3.0, 2.0, 2.5], top_fraction=0.5)
    assert top[0] == 0 and top[2] == 0 and top[1] > top[3] > 0
    torch.testing.assert_close(preference_weights([5.0, 5.0]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"NaN or inf at \[1\]"):
        preference_weights([1.0, float("nan")])
    with pytest.raises(ValueError, match="temperature"):
        preference_weights([1.0], temperature=0)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))[:600]
    x = np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None]
    return x, d.target[order].astype(np.int64)


def ink(images: torch.Tensor) -> float:
    return float(images.mean())


def bold(x: torch.Tensor) -> torch.Tensor:
    """Thicker strokes (a 2x2 dilation): what a rater who likes bold digits rates highly."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)


def judge(real_x: torch.Tensor, real_y: torch.Tensor):
    """Accuracy of a logistic regression on the pixels, fitted to real digits and their bold versions:
    a judge of the category that does not mind the stroke width (~0.95 on both)."""
    x = torch.cat([real_x, bold(real_x)]).flatten(1).numpy()
    model = LogisticRegression(max_iter=300).fit(x, np.concatenate([real_y.numpy()] * 2))
    return lambda images, labels: float((model.predict(images.flatten(1).numpy()) == labels.numpy()).mean())


def train_briefly(model, x, y, tmp_path, epochs):
    train, _ = image_loaders(x, y, None, None, batch_size=64, seed=0)
    fit(model, train, None, run_dir=tmp_path / "base", max_epochs=epochs, seed=0, accelerator="cpu")
    return model.cpu().eval()


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_image_finetuning_moves_ink_towards_the_rated_samples(arch, digits, tmp_path):
    x, y = digits
    torch.manual_seed(0)
    if arch == "dcgan":
        base = train_briefly(DCGAN(DCGANConfig(8, 1, 10, width=8, d_width=8)), x, y, tmp_path, epochs=8)
    else:
        base = train_briefly(VAE(VAEConfig(8, 1, 10, width=8)), x, y, tmp_path, epochs=8)
    before_state = {k: v.clone() for k, v in base.state_dict().items()}
    real_x, real_y = images_to_tensor(x), torch.from_numpy(y)
    rated_x, rated_y = bold(real_x[:200]), real_y[:200]
    assert ink(rated_x) > ink(real_x) + 0.1
    labels = torch.arange(10).repeat_interleave(30)
    before = base.generate(labels, seed=1)

    tuned = finetune_image_generator(base, x, y, rated_x, rated_y, torch.ones(len(rated_x)), steps=60, mix=0.3,
                                     seed=0, accelerator="cpu")
    after = tuned.generate(labels, seed=1)
    assert ink(after) > ink(before) + 0.03, (ink(before), ink(after))
    # still digits of the category asked for: no worse than before (a young GAN's are often better after
    # the extra steps), and far above chance (0.1)
    accuracy = judge(real_x, real_y)
    acc_before, acc_after = accuracy(before, labels), accuracy(after, labels)
    assert acc_after >= min(acc_before - 0.1, 0.8), (acc_before, acc_after)
    assert accuracy(after, labels) > 0.3
    assert torch.isfinite(after).all() and 0 <= float(after.min()) and float(after.max()) <= 1
    # a copy was trained: the base model is untouched and the config is the model's, not the run's
    for k, v in base.state_dict().items():
        assert torch.equal(v, before_state[k]), k
    assert tuned is not base and tuned.config == base.config and not tuned.training


def test_image_finetuning_checks_its_inputs(digits):
    x, y = digits
    model = DCGAN(DCGANConfig(8, 1, 10, width=8, d_width=8))
    rated = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="3 weights for 4 samples"):
        finetune_image_generator(model, x, y, rated, torch.zeros(4, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match=r"rated_x: images are \(1, 4, 4\)"):
        finetune_image_generator(model, x, y, torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), torch.ones(4))
    with pytest.raises(ValueError, match=r"rated_y: category indices must lie in \[0, 10\)"):
        finetune_image_generator(model, x, y, rated, torch.full((4,), 10), torch.ones(4))
    with pytest.raises(ValueError, match="mix must be in"):
        finetune_image_generator(model, x, y, rated, torch.zeros(4, dtype=torch.long), torch.ones(4), mix=1.5)
    with pytest.raises(ValueError, match="sum to 0"):
        finetune_image_generator(model, x, y, rated, torch.zeros(4, dtype=torch.long), torch.zeros(4))


# ---- text ---------------------------------------------------------------------------------------------

WORDS = ["the king", "a fool", "my lord", "the queen", "good night", "sweet love", "the sword", "fair lady"]


def statements(n: int, seed: int, end: str = ".") -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=3)) + end for _ in range(n)]


def test_text_finetuning_makes_the_preferred_punctuation_more_frequent(tmp_path):
    categories = ["play"]
    real = [("play", " ".join(statements(40, seed=i))) for i in range(6)]
    val = [("play", " ".join(statements(40, seed=100)))]
    rated = [("play", s) for s in statements(30, seed=7, end="?")] + [("play", s) for s in statements(30, seed=8)]
    weights = torch.tensor([1.0] * 30 + [0.05] * 30)  # the questions were rated highly
    tokenizer = CharTokenizer.train([t for _, t in real] + ["?"], categories)
    train_ids = encode_documents(tokenizer, [t for _, t in real], ["play"] * len(real))
    val_ids = encode_documents(tokenizer, [t for _, t in val], ["play"])
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32,
                         warmup_iters=10, lr_decay_iters=150, learning_rate=3e-3))
    loader, _ = text_loaders(train_ids, None, block_size=32, batch_size=16, seed=0, iters_per_epoch=150)
    fit(base, loader, None, run_dir=tmp_path / "base", max_epochs=1, seed=0, accelerator="cpu")
    base = base.cpu().eval()
    base.extra = {"tokenizer": tokenizer.to_dict()}

    def question_rate(model) -> float:
        texts = generate_texts(model, tokenizer, ["play"] * 16, max_new_tokens=60, seed=0, temperature=1.0)
        return sum(t.count("?") for t in texts) / sum(len(t) for t in texts)

    tuned = finetune_text_generator(base, tokenizer, real, rated, weights, steps=60, mix=0.5, lr=3e-3,
                                    batch_size=16, seed=0, accelerator="cpu")
    assert question_rate(tuned) > question_rate(base) + 0.005
    # still a model of the real text: its loss there moves little
    loss_before, loss_after = validation_loss(base, val_ids, batches=5), validation_loss(tuned, val_ids, batches=5)
    assert loss_after < loss_before + 0.15, (loss_before, loss_after)
    assert tuned.config == base.config and tuned.extra == base.extra
    with pytest.raises(ValueError, match=r"rated_docs\[0\]: expected a \(category, text\) pair"):
        finetune_text_generator(base, tokenizer, real, ["no category"], [1.0])
    with pytest.raises(ValueError, match=r"rated_docs\[0\]: .*unknown category 'poem'"):
        finetune_text_generator(base, tokenizer, real, [("poem", "x")], [1.0])


def test_preference_weights_depend_on_the_order_only():
    scores = torch.tensor([0.1, 0.3, 0.2, 0.25])
    wild = torch.tensor([0.1, 1000.0, 0.2, 0.25])  # one absurd reward-model prediction
    torch.testing.assert_close(preference_weights(scores), preference_weights(wild))
    torch.testing.assert_close(preference_weights(scores), preference_weights(scores * 7 + 3))
    w = preference_weights(torch.arange(1000.0))
    assert 15 < float(w[-1] / w[500]) < 30, "the best of a thousand: about 20x the median"
