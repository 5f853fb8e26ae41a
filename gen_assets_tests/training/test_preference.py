"""training.preference: preference pairs and KTO labels, DPO and KTO on the tiny random Llama of
gen_assets_tests.tiny_lm (LoRA adapters) and on a tiny from-scratch GPT (all weights), the reference
log-probs computed once from the starting model, resume, and errors that say why nothing qualified.

The effects are measured with the models' own log_likelihoods (HFCausalLM's, GPTWriter's), not with the
module's sequence_log_probs, so a mistake in the latter cannot hide itself."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.models.hf import HFCausalLM, HFConfig
from gen_assets.models.text_generators import GPTWriter
from gen_assets.models.tokenizers import CharTokenizer
from gen_assets.training import preference
from gen_assets.training.preference import (PreferenceBatches, dpo_loss, finetune_text_preferences, kto_labels,
                                            kto_loss, preference_pairs)
from gen_assets_tests.tiny_lm import save_tiny_llama, sentences

# peft asks transformers a question transformers has renamed: nothing for these tests to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
LORA = dict(lora_r=8, lora_alpha=16, learning_rate=1e-2, warmup_iters=2, lr_decay_iters=30, min_lr=1e-3)
CPU = dict(accelerator="cpu", logger="none")
THANKS, AWAY = " Thank you!", " Go away."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: a second thread only waits (see models/test_hf.py)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN_ASSETS_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> HFCausalLM:
    """A LoRA model whose adapters are not the identity (a champion after some tuning), so that "the
    starting model" and "the base" are different references. Tests must leave it as they found it."""
    folder = save_tiny_llama(tmp_path_factory.mktemp("base") / "tiny", seed=0)
    torch.manual_seed(0)
    model = HFCausalLM(HFConfig(base_model=str(folder), **LORA))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


BRIEFS = [("note", "Write a sentence."), ("note", None), ("ad", "Sell the boat.")]


def rated_examples(briefs=BRIEFS, offset: int = 0):
    """Per brief four sentences: two thank the reader (rated 5 and 4), two send them away (rated 1)."""
    s = sentences()[offset:]
    examples, scores = [], []
    for b, (category, prompt) in enumerate(briefs):
        for k, (end, score) in enumerate([(THANKS, 5.0), (AWAY, 1.0), (THANKS, 4.0), (AWAY, 1.0)]):
            examples.append((category, prompt, s[4 * b + k] + end))
            scores.append(score)
    return examples, scores


def logps(model, examples) -> np.ndarray:
    """log p(text | brief) by the model's own measure (HFCausalLM or GPTWriter)."""
    return -model.log_likelihoods([(c, p) for c, p, _ in examples], [t for _, _, t in examples])[0]


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def logged(lines: list[str], name: str) -> float:
    """The value of `name` in History's epoch line, e.g. 'epoch 1/1 (0s): train_loss=0.6931, ...'."""
    found = [m.group(1) for line in lines for m in [re.search(rf"\b{name}=([-+0-9.e]+|nan)", line)] if m]
    assert found, (name, lines)
    return float(found[-1])


# --- pairs and labels --------------------------------------------------------------------------------


def test_preference_pairs_pair_within_groups_by_gap():
    groups = ["a", "b", "a", "a", "b", "c", "a"]
    scores = [5, 3, 1, 4.5, 1, 5, 3]
    pairs = preference_pairs(groups, scores)
    # group a (0, 2, 3, 6): widest gaps first, ties by index; b: (1, 4); c alone: nothing
    assert pairs == [(0, 2), (3, 2), (0, 6), (6, 2), (3, 6), (1, 4)]
    assert all(groups[c] == groups[r] and scores[c] - scores[r] >= 1 for c, r in pairs)
    assert preference_pairs(groups, scores) == pairs  # deterministic
    assert preference_pairs(groups, scores, min_gap=2.5) == [(0, 2), (3, 2)]
    assert preference_pairs(groups, scores, max_pairs_per_group=2) == [(0, 2), (3, 2), (1, 4)]
    # reward-model predictions, tuple keys (category, prompt)
    briefs = [("ad", None), ("ad", "x"), ("ad", None)]
    assert preference_pairs(briefs, np.array([0.1, 0.9, 0.35]), min_gap=0.2) == [(2, 0)]
    assert preference_pairs(["a"] * 3, [2, 2, 2]) == []
    assert preference_pairs([], []) == []


def test_preference_pairs_and_kto_labels_name_what_is_wrong():
    with pytest.raises(ValueError, match="3 groups but 2 scores"):
        preference_pairs(["a", "a", "b"], [1, 2])
    with pytest.raises(ValueError, match="scores: nan at index 1;"):
        preference_pairs(["a", "a", "a"], [1, float("nan"), 2])
    with pytest.raises(ValueError, match=r"inf at index 0 \(and 1 more\)"):
        kto_labels([float("inf"), 3, float("nan")])
    with pytest.raises(ValueError, match="group 1 is a list"):
        preference_pairs(["a", ["b"]], [1, 2])
    with pytest.raises(ValueError, match="min_gap must be > 0"):
        preference_pairs(["a", "a"], [1, 2], min_gap=0)
    with pytest.raises(ValueError, match="max_pairs_per_group must be >= 1"):
        preference_pairs(["a", "a"], [1, 2], max_pairs_per_group=0)
    with pytest.raises(ValueError, match="scores must be numbers"):
        kto_labels(["good", "bad"])
    with pytest.raises(ValueError, match=r"liked \(2\) must be above disliked \(2\)"):
        kto_labels([1, 2], liked=2, disliked=2)


def test_kto_labels():
    labels = kto_labels([5, 4, 3.9, 3, 2.1, 2, 1])
    assert labels.tolist() == [1, 1, 0, 0, 0, -1, -1] and labels.dtype == np.int64
    assert kto_labels([0.8, 0.5, 0.2], liked=0.7, disliked=0.3).tolist() == [1, 0, -1]


# --- losses ------------------------------------------------------------------------------------------


def test_the_losses_are_the_papers():
    chosen, rejected = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    loss, margin = dpo_loss(chosen, rejected, beta=0.5)
    torch.testing.assert_close(margin, torch.tensor([1.0, -1.0, 0.0]))
    expected = -np.mean([math.log(1 / (1 + math.exp(-m))) for m in (1.0, -1.0, 0.0)])
    assert float(loss) == pytest.approx(expected)
    assert float(dpo_loss(torch.zeros(4), torch.zeros(4), beta=0.1)[0]) == pytest.approx(math.log(2))

    ratios, labels = torch.tensor([1.0, -2.0]), torch.tensor([1, -1])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    kl = torch.tensor(0.5)
    expected = np.mean([1 - sig(0.1 * (1.0 - 0.5)), 1 - sig(0.1 * (0.5 + 2.0))])
    assert float(kto_loss(ratios, labels, kl, beta=0.1)) == pytest.approx(expected)
    # z0 is clamped at 0 and weighted by lambda_D / lambda_U
    expected = np.mean([3 * (1 - sig(0.1 * 1.0)), 1 - sig(0.1 * 2.0)])
    assert float(kto_loss(ratios, labels, torch.tensor(-4.0), beta=0.1, desirable_weight=3)) == pytest.approx(expected)
    # z0 is detached: no gradient flows into the KL estimate
    kl = torch.tensor(0.5, requires_grad=True)
    kto_loss(ratios.requires_grad_(), labels, kl, beta=0.1).backward()
    assert kl.grad is None and ratios.grad[0] < 0 < ratios.grad[1]


def test_preference_batches_cover_every_item_and_follow_seed_and_epoch():
    s = PreferenceBatches(5, batch_size=2, batches=5, seed=0, n_real=3, real_batch_size=4)
    batches = list(s)
    items = torch.stack([i for i, _ in batches])
    assert items.shape == (5, 2) and sorted(items.flatten()[:5].tolist()) == [0, 1, 2, 3, 4]
    assert all(r.shape == (4,) and int(r.max()) < 3 for _, r in batches)
    assert torch.equal(torch.stack([i for i, _ in PreferenceBatches(5, 2, 5, seed=0)]), items)
    s.set_epoch(1)
    assert not torch.equal(torch.stack([i for i, _ in s]), items)
    assert all(len(r) == 0 for _, r in PreferenceBatches(5, 2, 3, seed=0))  # no real examples: none drawn


# --- DPO on a LoRA model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpo(champion, tmp_path_factory):
    examples, scores = rated_examples()
    before = state(champion)
    run_dir = tmp_path_factory.mktemp("dpo-run")
    lines: list[str] = []
    tuned = finetune_text_preferences(champion, examples, scores, method="dpo", min_gap=2, steps=12, batch_size=4,
                                      run_dir=run_dir, log=lines.append, **CPU)
    return tuned, examples, scores, before, run_dir, lines


def test_dpo_raises_the_chosen_over_the_rejected(champion, dpo):
    tuned, examples, scores, _, _, lines = dpo
    pairs = preference_pairs([(c, p) for c, p, _ in examples], scores, min_gap=2)
    assert len(pairs) == 12 and "DPO on 12 pairs from 12 of 12 examples in 3 groups" in lines[0]
    delta = logps(tuned, examples) - logps(champion, examples)  # log-ratio against the reference
    margins = np.array([delta[c] - delta[r] for c, r in pairs])  # all 0 before training, by definition
    assert margins.mean() > 5.0, margins
    assert (margins > 0).mean() >= 0.9, margins  # the implicit reward ranks the pairs as people did
    assert logged(lines, "reward_accuracy") > 0.5 and logged(lines, "reward_margin") > 0
    assert logged(lines, "train_loss") < math.log(2)
    # it learned the preference, not the twelve sentences: new sentences for new briefs rank the same way
    new, _ = rated_examples([("poem", "A line about the sea."), ("ad", None)], offset=100)
    held = logps(tuned, new) - logps(champion, new)
    assert np.mean(held[[0, 2, 4, 6]]) > np.mean(held[[1, 3, 5, 7]]) + 2.0, held


def test_dpo_trains_the_adapters_only_and_leaves_the_original(champion, dpo):
    tuned, _, _, before, _, _ = dpo
    assert type(tuned) is HFCausalLM and not tuned.training and tuned.device.type == "cpu"
    assert tuned.config == champion.config  # the fine-tuning's schedule is not kept
    base = dict(champion.model.named_parameters())
    changed = 0
    for name, p in tuned.model.named_parameters():
        if "lora_" in name:
            changed += not torch.equal(p, base[name])
        else:
            assert torch.equal(p, base[name]), name  # base weights identical
    assert changed == sum("lora_" in n for n in base)  # every adapter matrix moved
    after = champion.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)  # original untouched


def test_the_tuned_model_file_round_trips(dpo, tmp_path):
    tuned, examples, *_ = dpo
    path = tmp_path / "dpo.pt"
    save_model(path, "hf", tuned)
    again = load_model(path)
    assert type(again) is HFCausalLM and set(again.state_dict()) == set(tuned.state_dict())
    np.testing.assert_allclose(logps(again, examples), logps(tuned, examples), rtol=1e-6)


def test_a_finished_run_dir_gives_its_run_back(champion, dpo):
    tuned, examples, scores, _, run_dir, _ = dpo
    assert (run_dir / "last.ckpt").exists()
    # another seed would train other batches: the run folder's finished run comes back instead, with its
    # adapters (the wrapper's checkpoint holds the policy's adapter-only state_dict)
    again = finetune_text_preferences(champion, examples, scores, method="dpo", min_gap=2, steps=12, batch_size=4,
                                      run_dir=run_dir, seed=5, **CPU)
    expected = tuned.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in again.state_dict().items())
    assert not torch.equal(next(iter(expected.values())), next(iter(champion.state_dict().values())))


def test_the_reference_is_the_starting_model(champion):
    """At step 0 the policy's log-probs are the reference's (dropout off, same encoding): the first DPO loss
    is log 2 and the margins 0. With the base as reference the starting adapters already make margins."""
    examples, scores = rated_examples()
    lines: list[str] = []
    finetune_text_preferences(champion, examples, scores, min_gap=2, beta=1.0, steps=1, batch_size=12,
                              log=lines.append, **CPU)
    assert logged(lines, "train_loss") == pytest.approx(math.log(2), abs=2e-4)
    assert abs(logged(lines, "reward_margin")) < 1e-3
    lines.clear()
    finetune_text_preferences(champion, examples, scores, min_gap=2, beta=1.0, steps=1, batch_size=12,
                              reference="base", log=lines.append, **CPU)
    assert abs(logged(lines, "reward_margin")) > 0.01
    assert logged(lines, "train_loss") != pytest.approx(math.log(2), abs=2e-4)


# --- KTO ---------------------------------------------------------------------------------------------


def test_kto_raises_the_liked_over_the_disliked(champion):
    # one text per brief (no pairs), and some rated in between that KTO leaves alone
    s = sentences()[40:]
    examples = [("note", f"Brief {i}.", s[i] + (THANKS if i % 3 == 0 else AWAY if i % 3 == 1 else "")) for i in range(18)]
    scores = [5.0 if i % 3 == 0 else 1.0 if i % 3 == 1 else 3.0 for i in range(18)]
    lines: list[str] = []
    tuned = finetune_text_preferences(champion, examples, scores, method="kto", steps=12, batch_size=6,
                                      log=lines.append, **CPU)
    assert "KTO on 6 liked and 6 disliked of 18 examples" in lines[0]
    delta = logps(tuned, examples) - logps(champion, examples)
    liked, disliked = delta[0::3], delta[1::3]
    assert liked.mean() > disliked.mean() + 5.0, (liked, disliked)
    assert liked.mean() > 0 > disliked.mean()
    assert logged(lines, "reward_liked") > logged(lines, "reward_disliked")
    assert logged(lines, "kl") == logged(lines, "kl")  # a number (not nan): the mismatched pairs were scored


def test_kto_starts_at_one_half(champion):
    s = sentences()
    examples = [("note", None, s[i] + (THANKS if i % 2 else AWAY)) for i in range(8)]
    lines: list[str] = []
    finetune_text_preferences(champion, examples, [5, 1] * 4, method="kto", beta=1.0, steps=1, batch_size=8,
                              log=lines.append, **CPU)
    assert logged(lines, "train_loss") == pytest.approx(0.5, abs=2e-4)  # policy = reference, z0 = 0


# --- DPO on the from-scratch GPT ---------------------------------------------------------------------


WORDS = ["the king", "a fool", "my lord", "the queen", "good night", "sweet love", "the sword", "fair lady"]


def statements(n: int, seed: int, end: str) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=3)) + end for _ in range(n)]


@pytest.fixture(scope="module")
def gpt():
    categories = ["play", "poem"]
    texts = statements(50, seed=0, end=".") + ["?!"]
    tokenizer = CharTokenizer.train(texts, categories)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=32,
                          dropout=0.1, learning_rate=6e-3, warmup_iters=2, lr_decay_iters=40))
    model.extra = {"tokenizer": tokenizer.to_dict()}
    return model.eval(), tokenizer


def gpt_examples(seed: int = 1):
    """Per category, questions (rated 5) and statements (rated 1): the same words, another ending."""
    examples, scores = [], []
    for k, category in enumerate(["play", "poem"]):
        for q, st in zip(statements(4, seed + k, "?"), statements(4, seed + 10 + k, ".")):
            examples += [(category, None, q), (category, None, st)]
            scores += [5.0, 1.0]
    return examples, scores


def test_dpo_fine_tunes_every_weight_of_a_gpt(gpt, tmp_path):
    model, tokenizer = gpt
    before = state(model)
    examples, scores = gpt_examples()
    tuned = finetune_text_preferences(model, examples, scores, tokenizer=tokenizer, steps=15, batch_size=8,
                                      run_dir=tmp_path / "run", **CPU)
    assert type(tuned) is GPT and tuned.config == model.config and tuned.extra == model.extra
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # original untouched
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == list(before)  # full fine-tuning: every weight moved
    pairs = preference_pairs([c for c, _, _ in examples], scores)
    ref, new = GPTWriter(model, tokenizer), GPTWriter(tuned, tokenizer)
    delta = logps(new, examples) - logps(ref, examples)
    margins = np.array([delta[c] - delta[r] for c, r in pairs])
    assert margins.mean() > 2.0 and (margins > 0).mean() >= 0.9, margins
    held, _ = gpt_examples(seed=50)  # other sentences: questions still gain on statements
    d = logps(new, held) - logps(ref, held)
    assert d[0::2].mean() > d[1::2].mean() + 1.0, d
    path = tmp_path / "gpt.pt"
    save_model(path, "gpt", tuned, extra=tuned.extra)
    np.testing.assert_allclose(logps(GPTWriter(load_model(path), tokenizer), examples), logps(new, examples),
                               rtol=1e-6)


def test_reference_log_probs_are_computed_once_and_no_copy_is_held(gpt, monkeypatch):
    model, tokenizer = gpt
    calls: list[tuple[bool, int]] = []  # (grad enabled, rows) per call
    from gen_assets.training import finetune

    real_log_probs, real_fit = preference.sequence_log_probs, finetune.fit
    modules = []

    def counting(m, batch):
        calls.append((torch.is_grad_enabled(), len(batch["input_ids"])))
        return real_log_probs(m, batch)

    def capturing_fit(module, *args, **kwargs):
        modules.append(module)
        return real_fit(module, *args, **kwargs)

    monkeypatch.setattr(preference, "sequence_log_probs", counting)
    monkeypatch.setattr(finetune, "fit", capturing_fit)  # preference trains through finetune.fit_retargeted
    examples, scores = gpt_examples()
    real = [("play", None, s) for s in statements(5, seed=3, end=".")]
    lines: list[str] = []
    tuned = finetune_text_preferences(model, examples * 2, scores * 2, tokenizer=tokenizer, steps=3, batch_size=4,
                                      sft_weight=0.5, real=real, log=lines.append, **CPU)
    # 32 examples, all in pairs: two reference forwards of 16, before any training; then per step one
    # forward of the 8 sequences of 4 pairs and one of the 4 real examples (the SFT anchor)
    assert calls == [(False, 16), (False, 16)] + [(True, 8), (True, 4)] * 3
    assert "reference log-probs of 32 sequences computed once" in lines[0] and logged(lines, "sft_loss") > 0
    (wrapper,) = modules
    assert wrapper.policy is tuned and list(wrapper.children()) == [tuned]
    assert sum(p.numel() for p in wrapper.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_run_is_a_function_of_its_seed(gpt):
    model, tokenizer = gpt
    examples, scores = gpt_examples()

    def run(seed: int) -> dict[str, torch.Tensor]:
        return finetune_text_preferences(model, examples, scores, tokenizer=tokenizer, steps=3, batch_size=2,
                                         seed=seed, **CPU).state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # other batches


# --- errors ------------------------------------------------------------------------------------------


def test_errors_say_why_nothing_qualified(champion, gpt):
    examples, scores = rated_examples()
    with pytest.raises(ValueError, match="no \\(chosen, rejected\\) pair in 12 examples of 12 groups: all 12 "
                                         "examples are in different groups"):
        finetune_text_preferences(champion, examples, scores, groups=list(range(12)), **CPU)
    with pytest.raises(ValueError, match="in 12 examples of 3 groups: no two scores in a group differ by >= 5 "
                                         "\\(the widest gap in a group is 4\\)"):
        finetune_text_preferences(champion, examples, scores, min_gap=5, **CPU)
    same = [("a", None, "Same text."), ("a", None, "Same text.")]
    with pytest.raises(ValueError, match="the pairs found \\(1\\) have the same text on both sides"):
        finetune_text_preferences(champion, same, [5, 1], **CPU)
    with pytest.raises(ValueError, match="KTO found no liked \\(score >= 4\\) or disliked \\(<= 2\\) example among "
                                         "12: they range 2.5..3.5"):
        finetune_text_preferences(champion, examples, np.linspace(2.5, 3.5, 12), method="kto", **CPU)
    with pytest.raises(ValueError, match="12 scores for 11 examples"):
        finetune_text_preferences(champion, examples[:11], scores, **CPU)
    with pytest.raises(ValueError, match="scores: nan at index 3"):
        finetune_text_preferences(champion, examples, [*scores[:3], float("nan"), *scores[4:]], **CPU)
    with pytest.raises(ValueError, match="examples\\[2\\]: expected \\(category, prompt, text\\) with a non-empty"):
        finetune_text_preferences(champion, [*examples[:2], ("a", None, " ")], [1, 2, 3], **CPU)
    with pytest.raises(ValueError, match="sft_weight=1 asks for an SFT anchor on real examples"):
        finetune_text_preferences(champion, examples, scores, sft_weight=1, **CPU)
    with pytest.raises(ValueError, match="method must be one of"):
        finetune_text_preferences(champion, examples, scores, method="ppo", **CPU)
    model, tokenizer = gpt
    with pytest.raises(ValueError, match="a GPT needs its tokenizer"):
        finetune_text_preferences(model, examples, scores, **CPU)
    with pytest.raises(ValueError, match="examples\\[0\\]: unknown category 'note'"):
        finetune_text_preferences(model, examples, scores, tokenizer=tokenizer, **CPU)
    with pytest.raises(ValueError, match='reference="base" needs a LoRA model'):
        finetune_text_preferences(model, *gpt_examples(), tokenizer=tokenizer, reference="base", **CPU)
    with pytest.raises(TypeError, match="takes an HFCausalLM or a GPT, got Linear"):
        finetune_text_preferences(torch.nn.Linear(2, 2), examples, scores, **CPU)
