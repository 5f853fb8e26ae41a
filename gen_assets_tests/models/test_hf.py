"""models.hf.HFCausalLM on the tiny random Llama of gen_assets_tests.tiny_lm (no download): chat-template
briefs, SFT examples, batched and seeded generation, LoRA and full fine-tuning through fit(), the
adapter-only model file and its base check, resume, log likelihoods, features, and a GGUF base."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gen_assets.models.checkpoint import load_model, read_model_file, save_model
from gen_assets.models.hf import ADAPTER_PREFIX, IGNORE, HFCausalLM, HFConfig, bits_per_byte, brief_prompt
from gen_assets.models.pretrained import BaseModelError, weights_sha256
from gen_assets.training.fit import fit
from gen_assets.training.sft import sft_loaders
from gen_assets_tests.tiny_lm import DEFAULT_SYSTEM, IM_END, IM_START, save_tiny_gguf, save_tiny_llama, sentences

BRIEFS = [  # prompts of different lengths: batches need left padding
    ("poem", "Hi."),
    ("story", "Write a long story about the old sailor, the blue boat and the long road home."),
    ("ad", None),
    ("note", "Tell me about the red fox near the river."),
    ("note", ""),
]
# peft asks transformers a question transformers has renamed: nothing for these tests to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
LORA = dict(lora_r=8, lora_alpha=16, learning_rate=1e-2, warmup_iters=2, lr_decay_iters=30, min_lr=1e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and on CPUs shared with other work OpenMP's
    barrier waits made a 12-token generate() take seconds instead of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """GEN_ASSETS_HOME in a temporary folder: the base model cache (GGUF bases) goes there."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN_ASSETS_HOME", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("base") / "tiny", seed=0)


@pytest.fixture(scope="module")
def lm(folder) -> HFCausalLM:
    """An untrained model (LoRA adapters start as the identity): tests must leave it as they found it."""
    torch.manual_seed(0)
    return HFCausalLM(HFConfig(base_model=str(folder), **LORA))


def train_examples(n: int = 20):
    """(category, prompt, text): short sentences, half of them with a prompt."""
    return [("note", "Write a sentence." if i % 2 else None, s) for i, s in enumerate(sentences()[:n])]


def bpb(model: HFCausalLM, examples) -> float:
    return bits_per_byte(*model.log_likelihoods([(c, p) for c, p, _ in examples], [t for _, _, t in examples]))


def train(model: HFCausalLM, run_dir, *, max_epochs: int, batches_per_epoch: int = 10, seed: int = 0):
    examples = train_examples()
    loader, val = sft_loaders(model, examples, examples[:8], batch_size=4, batches_per_epoch=batches_per_epoch,
                              seed=seed)
    return fit(model, loader, val, run_dir=run_dir, max_epochs=max_epochs, accelerator="cpu", logger="none",
               seed=seed)


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """A LoRA model trained for 30 steps on 20 examples, with its bits per byte before and after."""
    torch.manual_seed(1)
    model = HFCausalLM(HFConfig(base_model=str(folder), **LORA))
    before = bpb(model, train_examples())
    result = train(model, tmp_path_factory.mktemp("lora-run"), max_epochs=3)
    return SimpleNamespace(model=model.eval(), before=before, after=bpb(model, train_examples()), result=result)


def hf_name(peft_name: str) -> str:
    """The base checkpoint's name of a parameter of the peft-wrapped model."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


# --- encoding -----------------------------------------------------------------------------------------


def test_prompt_ids_are_the_chat_template_with_a_generation_prompt(lm, folder):
    tok = lm.tokenizer
    assert lm.uses_chat_template
    user = [{"role": "user", "content": "Write a haiku."}]
    expected = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert expected == (f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n{IM_START}user\nWrite a haiku.{IM_END}\n"
                        f"{IM_START}assistant\n")
    ids = lm.prompt_ids("poem", "  Write a haiku. ")
    assert ids == tok(expected, add_special_tokens=False).input_ids
    assert ids.count(tok.convert_tokens_to_ids(IM_START)) == 3  # the special tokens whole, not in pieces
    assert tok.decode(ids) == expected

    with_system = HFCausalLM(HFConfig(base_model=str(folder), system_prompt="Be brief."))
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith(f"{IM_START}system\nBe brief.{IM_END}\n") and DEFAULT_SYSTEM not in text
    assert with_system.prompt_ids("poem", "Write a haiku.") == tok(text, add_special_tokens=False).input_ids


def test_prompt_ids_without_a_chat_template(lm, folder, tmp_path):
    plain = HFCausalLM(HFConfig(base_model=str(save_tiny_llama(tmp_path / "plain", chat_template=False))))
    no_template = HFCausalLM(HFConfig(base_model=str(folder), chat_template=False))
    for model in (plain, no_template):
        assert not model.uses_chat_template
        ids = model.prompt_ids("poem", "Write a haiku.")
        assert ids == model.tokenizer("Write a haiku.\n").input_ids
        assert model.tokenizer.decode(ids) == "Write a haiku.\n"


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_a_brief_without_a_prompt_names_its_category(lm, prompt):
    request = brief_prompt("poem", prompt)
    assert request == "Write a short text of the kind 'poem'."
    assert lm.prompt_ids("poem", prompt) == lm.prompt_ids("poem", request)
    assert f"user\n{request}{IM_END}" in lm.tokenizer.decode(lm.prompt_ids("poem", prompt))
    assert brief_prompt(None, None) == "Write a short text."


def test_example_labels_the_text_and_eos_only(lm, folder):
    text = "The cat sees the blue boat."
    head = lm.prompt_ids("poem", "Write.")
    body = lm.tokenizer(text, add_special_tokens=False).input_ids + [lm.tokenizer.eos_token_id]
    ids, labels = lm.example("poem", "Write.", text)
    assert ids == head + body and labels == [IGNORE] * len(head) + body
    assert lm.tokenizer.decode(ids[len(head):]) == text + IM_END

    short = HFCausalLM(HFConfig(base_model=str(folder), max_length=len(head) + 3))
    ids, labels = short.example("poem", "Write.", text)
    assert len(ids) == len(labels) == len(head) + 3  # cut at max_length, the prompt kept whole
    assert ids[len(head):] == labels[len(head):] == body[:3]
    assert short.example("poem", "Write.", text, truncate=False) == lm.example("poem", "Write.", text)
    tiny = HFCausalLM(HFConfig(base_model=str(folder), max_length=2))
    assert tiny.example("poem", "Write.", text)[1] == [IGNORE] * len(head) + body[:1]  # at least one label

    batch = lm.collate([lm.example("a", None, "Hi."), lm.example("a", None, text)])
    n = len(lm.example("a", None, "Hi.")[0])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)  # right padded
    assert (batch["labels"][0, n:] == IGNORE).all()


# --- writing ------------------------------------------------------------------------------------------


def test_batched_greedy_writing_equals_one_by_one(lm):
    one_by_one = [lm.write([b], temperature=0, max_new_tokens=12)[0] for b in BRIEFS]
    assert len(set(one_by_one)) >= 3 and all(one_by_one)  # the briefs lead to different texts
    assert lm.write(BRIEFS, temperature=0, max_new_tokens=12) == one_by_one
    assert lm.write(BRIEFS, temperature=0, max_new_tokens=12, batch_size=2) == one_by_one
    assert lm.training  # the mode it was in


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng(lm):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = lm.write(BRIEFS, temperature=1.0, seed=7, max_new_tokens=12, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert lm.write(BRIEFS, temperature=1.0, seed=7, max_new_tokens=12, batch_size=2) == a
    assert lm.write(BRIEFS, temperature=1.0, seed=8, max_new_tokens=12, batch_size=2) != a
    assert a != lm.write(BRIEFS, temperature=0, max_new_tokens=12)  # it did sample
    assert torch.equal(torch.get_rng_state(), state)
    # unseeded: draws from the global generator and moves it on, so two calls in a row differ
    unseeded = lm.write(BRIEFS, temperature=1.0, max_new_tokens=12)
    assert not torch.equal(torch.get_rng_state(), state)
    assert lm.write(BRIEFS, temperature=1.0, max_new_tokens=12) != unseeded
    torch.set_rng_state(state)
    assert lm.write(BRIEFS, temperature=1.0, max_new_tokens=12) == unseeded


def test_stop_strings_cut_the_text(lm):
    brief = BRIEFS[1]
    full = lm.write([brief], temperature=0, max_new_tokens=16)[0]
    k = next(i for i in range(3, len(full) - 1) if not full[i:i + 2].isspace() and full.index(full[i:i + 2]) == i)
    stop = full[k:k + 2]
    assert lm.write([brief], temperature=0, max_new_tokens=16, stop=[stop]) == [full[:k].strip()]
    assert lm.write([brief], temperature=0, max_new_tokens=16, stop=["never in the text"]) == [full]
    with pytest.raises(ValueError, match="temperature"):
        lm.write([brief], temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.write([brief], max_new_tokens=0)


# --- measuring ----------------------------------------------------------------------------------------


def test_log_likelihoods_are_the_text_tokens_nll(lm):
    brief, text = ("poem", "Write."), "The old sailor paints the garden gate."
    ids, labels = lm.example(*brief, text, truncate=False)
    lm.eval()
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    lm.train()
    text_positions = [j for j, lab in enumerate(labels) if lab != IGNORE][:-1]  # not the closing eos
    assert len(text_positions) == len(lm.tokenizer(text, add_special_tokens=False).input_ids)
    by_hand = -sum(float(logp[j - 1, ids[j]]) for j in text_positions)
    nats, sizes = lm.log_likelihoods([brief], [text])
    assert nats[0] == pytest.approx(by_hand, rel=1e-5) and sizes.tolist() == [len(text)]

    texts = [text, "Café au lait, s'il vous plaît.", "Hi.", sentences()[5]]
    briefs = [brief, ("ad", None), ("note", "Say hi."), ("poem", None)]
    nats, sizes = lm.log_likelihoods(briefs, texts, batch_size=4)  # right padding in the batch
    one = np.array([lm.log_likelihoods([b], [t])[0][0] for b, t in zip(briefs, texts)])
    np.testing.assert_allclose(nats, one, rtol=1e-5)
    assert nats[0] == pytest.approx(by_hand, rel=1e-5)
    assert sizes.tolist() == [len(t.encode("utf-8")) for t in texts] and sizes[1] > len(texts[1])
    assert bits_per_byte(nats, sizes) == pytest.approx(nats.sum() / math.log(2) / sizes.sum())
    assert math.isnan(bits_per_byte(np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="2 briefs but 1 texts"):
        lm.log_likelihoods(briefs[:2], texts[:1])


def test_features_pool_the_last_hidden_layer(lm):
    texts = ["The cat sees the blue boat.", "A small dog waits for the morning train.", "Hi."]
    briefs = [("poem", None)] * 3
    f = lm.features(briefs + [briefs[0]], texts + [texts[0]], batch_size=4)
    assert f.shape == (4, 32) and torch.isfinite(f).all()
    assert not torch.allclose(f[0], f[1]) and not torch.allclose(f[1], f[2])
    torch.testing.assert_close(f[3], f[0])
    torch.testing.assert_close(lm.features(briefs, texts, batch_size=1), f[:3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(lm.features([("ad", "Sell it.")], texts[:1]), f[:1])  # the brief is context


# --- training -----------------------------------------------------------------------------------------


def test_lora_training_lowers_the_loss_and_touches_only_the_adapters(trained, folder):
    model = trained.model
    assert trained.after < 0.75 * trained.before, (trained.before, trained.after)
    val = [row["val_loss"] for row in trained.result.history]
    assert len(val) == 3 and val[-1] < val[0]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert model.trainable_parameters == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    stored = load_file(folder / "model.safetensors")
    compared = 0
    for name, p in model.model.named_parameters():
        if "lora_" not in name and hf_name(name) in stored:
            assert torch.equal(p.detach(), stored[hf_name(name)]), name
            compared += 1
    assert compared == len(stored)  # every base weight still as stored


def test_full_fine_tuning_lowers_the_loss_and_keeps_every_weight(folder, tmp_path):
    torch.manual_seed(0)
    model = HFCausalLM(HFConfig(base_model=str(folder), lora=False, learning_rate=3e-3, warmup_iters=2,
                                lr_decay_iters=20, min_lr=3e-4))
    assert model.trainable_parameters == sum(p.numel() for p in model.parameters())
    before = bpb(model, train_examples())
    train(model, tmp_path / "run", max_epochs=2)
    after = bpb(model, train_examples())
    assert after < 0.75 * before, (before, after)
    state = model.state_dict()
    assert set(state) == {f"model.{k}" for k in model.model.state_dict()}
    assert not torch.equal(state["model.model.embed_tokens.weight"],
                           load_file(folder / "model.safetensors")["model.embed_tokens.weight"])
    # its model file rebuilds it exactly
    path = tmp_path / "full.pt"
    save_model(path, "hf", model)
    again = load_model(path)
    assert again.config.lora is False
    ids = torch.tensor([model.prompt_ids("poem", None)])
    with torch.no_grad():
        assert torch.equal(again.model(input_ids=ids).logits, model.eval().model(input_ids=ids).logits)
    # and the base other models get is the stored one: training worked on a copy
    fresh = HFCausalLM(HFConfig(base_model=str(folder), lora=False))
    assert torch.equal(fresh.model.model.embed_tokens.weight,
                       load_file(folder / "model.safetensors")["model.embed_tokens.weight"])


def test_the_model_file_holds_the_adapters_and_names_its_base(trained, folder, tmp_path):
    model = trained.model
    path = tmp_path / "lora.pt"
    save_model(path, "hf", model)
    payload = read_model_file(path)
    from peft import get_peft_model_state_dict

    adapter_keys = {ADAPTER_PREFIX + k for k in get_peft_model_state_dict(model.model)}
    assert payload["arch"] == "hf" and set(payload["state_dict"]) == adapter_keys
    assert all("lora_" in k for k in payload["state_dict"])
    stored = load_file(folder / "model.safetensors")
    assert sum(v.numel() for v in payload["state_dict"].values()) < sum(v.numel() for v in stored.values()) / 2
    assert payload["config"]["base_model"] == str(folder)
    assert payload["config"]["base_sha256"] == weights_sha256(folder)

    again = load_model(path)
    assert not again.training
    assert again.write(BRIEFS, temperature=0, max_new_tokens=12) == model.write(BRIEFS, temperature=0,
                                                                                max_new_tokens=12)
    texts = [t for _, _, t in train_examples(6)]
    briefs = [(c, p) for c, p, _ in train_examples(6)]
    np.testing.assert_allclose(again.log_likelihoods(briefs, texts)[0], model.log_likelihoods(briefs, texts)[0],
                               rtol=1e-6)
    # the adapters are what the training left, not a fresh init
    for k, v in again.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_a_model_file_whose_base_changed_does_not_load(tmp_path):
    base = save_tiny_llama(tmp_path / "base", seed=0)
    torch.manual_seed(0)
    model = HFCausalLM(HFConfig(base_model=str(base), lora_r=2))
    save_model(tmp_path / "m.pt", "hf", model)
    trained_on = weights_sha256(base)
    save_tiny_llama(base, seed=3)  # other weights at the same folder
    later = (base / "model.safetensors").stat().st_mtime_ns + 10**9  # (coarse filesystem clocks)
    os.utime(base / "model.safetensors", ns=(later, later))
    now = weights_sha256(base)
    assert now != trained_on
    with pytest.raises(BaseModelError) as e:
        load_model(tmp_path / "m.pt")
    assert trained_on[:12] in str(e.value) and now[:12] in str(e.value)
    save_tiny_llama(base, seed=0)  # the base put back: the file loads again
    os.utime(base / "model.safetensors", ns=(later + 10**9, later + 10**9))
    assert load_model(tmp_path / "m.pt").config.base_sha256 == trained_on


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(folder, tmp_path):
    def fresh(init_seed: int) -> HFCausalLM:
        torch.manual_seed(init_seed)
        return HFCausalLM(HFConfig(base_model=str(folder), **LORA))

    whole = fresh(0)
    train(whole, tmp_path / "whole", max_epochs=2, batches_per_epoch=4)
    killed = fresh(0)
    first = train(killed, tmp_path / "resumed", max_epochs=1, batches_per_epoch=4)
    assert first.resumed_from is None
    # a new process: the model built again (its adapters initialised differently), the run resumed
    resumed = fresh(5)
    result = train(resumed, tmp_path / "resumed", max_epochs=2, batches_per_epoch=4)
    assert result.resumed_from and result.resumed_from.endswith("last.ckpt")
    expected, got = whole.state_dict(), resumed.state_dict()
    assert set(got) == set(expected) and all(k.startswith(ADAPTER_PREFIX) for k in got)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    assert not torch.equal(got[next(iter(got))], fresh(5).state_dict()[next(iter(got))])


# --- a GGUF base --------------------------------------------------------------------------------------


def test_a_gguf_base_writes_as_the_folder_does(lm, folder, home, tmp_path):
    gguf = save_tiny_gguf(tmp_path / "tiny.F32.gguf", folder)
    torch.manual_seed(0)
    from_gguf = HFCausalLM(HFConfig(base_model=str(gguf), **LORA))
    assert from_gguf.base.source == f"gguf:{gguf.name}"
    assert from_gguf.base.folder.parent == home / "base_models"
    assert from_gguf.config.base_sha256 == from_gguf.base.sha256
    assert from_gguf.prompt_ids("poem", "Hi.") == lm.prompt_ids("poem", "Hi.")
    assert from_gguf.write(BRIEFS, temperature=0, max_new_tokens=12) == lm.write(BRIEFS, temperature=0,
                                                                                max_new_tokens=12)
