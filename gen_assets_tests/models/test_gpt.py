import math

import pytest
import torch

from gen_assets.models.checkpoint import load_model, save_model
from gen_assets.models.gpt import GPT, GPTConfig, sample_next
from gen_assets.training.text_data import encode_documents, generate_texts, text_loaders
from gen_assets.models.tokenizers import CharTokenizer, tokenizer_from_dict
from gen_assets.training.fit import fit

TINY = dict(block_size=8, n_layer=2, n_head=2, n_embd=16)


def tiny(vocab_size: int = 11, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **{**TINY, **kw}))


def prompts(rows: int, length: int, vocab_size: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab_size, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_initial_loss():
    m = tiny(vocab_size=50)
    idx, targets = prompts(3, 8, 50), prompts(3, 8, 50, seed=2)
    logits, loss = m(idx, targets)
    assert logits.shape == (3, 8, 50)
    assert loss.item() == pytest.approx(math.log(50), abs=0.1)  # near-uniform predictions at init
    last, none = m(idx)
    assert last.shape == (3, 1, 50) and none is None
    torch.testing.assert_close(last[:, 0], logits[:, -1])
    assert m.lm_head.weight is m.transformer.wte.weight  # tied
    with pytest.raises(ValueError, match="block_size is 8"):
        m(prompts(1, 9, 50))


def test_attention_is_causal():
    m = tiny().eval()
    idx = prompts(2, 8)
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    a, b = m(idx, idx)[0], m(changed, changed)[0]
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, n_embd=10, n_head=3)


def test_lr_schedule_is_nanogpts():
    m = tiny(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)
    assert m.lr_at(0) == pytest.approx(1e-3 / 11)
    assert m.lr_at(9) == pytest.approx(1e-3 * 10 / 11)
    assert m.lr_at(10) == pytest.approx(1e-3)
    assert m.lr_at(60) == pytest.approx(5.5e-4)
    assert m.lr_at(110) == pytest.approx(1e-4) and m.lr_at(5000) == 1e-4
    opt = m.configure_optimizers()
    decay, no_decay = opt["optimizer"].param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


SAMPLINGS = {
    "greedy": dict(temperature=0),
    "sampled": dict(temperature=1.0),
    "top_k": dict(temperature=0.7, top_k=4),
    "top_p": dict(temperature=1.3, top_p=0.8),
}


@pytest.mark.parametrize("keep", [None, 8, 3])
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_kv_cache_equals_no_cache_past_block_size(sampling, keep):
    m = tiny()
    for idx in (prompts(4, 3), prompts(2, 12)):  # a short prompt, and one longer than block_size
        cached = m.generate(idx, 30, seed=5, keep=keep, **SAMPLINGS[sampling])
        uncached = m.generate(idx, 30, seed=5, keep=keep, use_cache=False, **SAMPLINGS[sampling])
        assert cached.shape == (idx.size(0), idx.size(1) + 30)
        assert torch.equal(cached[:, : idx.size(1)], idx)
        assert torch.equal(cached, uncached)


def test_kv_cache_feeds_each_token_once_between_window_jumps():
    m = tiny()
    fed = []
    m.transformer.wte.register_forward_hook(lambda mod, inp, out: fed.append(inp[0].size(1)))
    m.generate(prompts(1, 2), 20, keep=4)
    # prefill 2, then one token per step, and a 4-token prefill whenever the context passes block_size 8
    assert fed[:8] == [2, 1, 1, 1, 1, 1, 1, 4]
    assert max(fed) <= 4 and sum(fed) < 40
    fed.clear()
    m.generate(prompts(1, 2), 20, keep=4, use_cache=False)
    assert sum(fed) > 100  # the whole context every step


def test_keep_block_size_is_nanogpts_generate():
    m = tiny()
    idx = prompts(3, 2)
    ref = idx
    for _ in range(20):  # nanoGPT's generate loop, greedy
        logits, _ = m(ref[:, -m.config.block_size :])
        ref = torch.cat((ref, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(m.generate(idx, 20, temperature=0, keep=m.config.block_size), ref)


def test_top_k_one_and_tiny_top_p_equal_greedy():
    m = tiny()
    idx = prompts(4, 3)
    greedy = m.generate(idx, 15, temperature=0)
    assert torch.equal(m.generate(idx, 15, temperature=1.5, top_k=1, seed=3), greedy)
    assert torch.equal(m.generate(idx, 15, temperature=1.5, top_p=1e-6, seed=3), greedy)
    assert not torch.equal(m.generate(idx, 15, temperature=1.5, seed=3), greedy)


def test_sample_next_respects_top_k_and_top_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(4000, 1)
    g = torch.Generator().manual_seed(0)

    def drawn(**kw):
        return set(sample_next(logits, 1.0, generator=g, **kw).tolist())

    assert drawn() == {0, 1, 2, 3}
    assert drawn(top_k=2) == {0, 1}
    assert drawn(top_p=0.5) == {0}  # 0.5 alone reaches p
    assert drawn(top_p=0.75) == {0, 1}
    assert drawn(top_p=0.85) == {0, 1, 2}
    assert sample_next(logits[:3], 0).tolist() == [0, 0, 0]
    a = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def reference_stop(rows: torch.Tensor, t0: int, stop: list[int], eos: int) -> list[list[int]]:
    """Each row cut where its tail first equals `stop` (from the first generated token on), eos after."""
    out = []
    for row in rows.tolist():
        for end in range(t0 + 1, len(row) + 1):
            if end >= len(stop) and row[end - len(stop) : end] == stop:
                row = row[:end] + [eos] * (len(row) - end)
                break
        out.append(row)
    return out


@pytest.mark.parametrize("use_cache", [True, False])
def test_stop_sequence_stops_rows_and_pads_with_eos(use_cache):
    m = tiny()
    eos = 10
    idx = prompts(3, 2)
    free = m.generate(idx, 25, temperature=0, use_cache=use_cache)
    stop = free[0, 8:10].tolist()  # certainly in row 0 by step 8
    out = m.generate(idx, 25, temperature=0, stop_ids=[[99, 98, 97], stop], eos_id=eos, use_cache=use_cache)
    expected = reference_stop(free, 2, stop, eos)
    width = out.size(1)
    assert [r[:width] for r in expected] == out.tolist()
    assert all(r[width:] == [eos] * (27 - width) for r in expected)  # only finished rows were dropped
    # a single row ends the whole generation at its stop
    one = m.generate(idx[:1], 25, temperature=0, stop_ids=[stop], eos_id=eos, use_cache=use_cache)
    assert one.tolist()[0][-2:] == stop and one.size(1) <= 10


def test_generate_validates_and_leaves_state_alone():
    m = tiny(dropout=0.1).train()
    idx = prompts(2, 3)
    rng = torch.get_rng_state()
    m.generate(idx, 5, seed=1)
    assert torch.equal(torch.get_rng_state(), rng) and m.training
    for bad, match in [
        (dict(idx=idx.float()), "LongTensor"),
        (dict(stop_ids=[[1]]), "eos_id"),
        (dict(stop_ids=[[]], eos_id=0), "empty"),
        (dict(keep=9), "keep"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(temperature=-1), "temperature"),
    ]:
        kw = {"idx": idx, **bad}
        with pytest.raises(ValueError, match=match):
            m.generate(kw.pop("idx"), 5, **kw)


def test_text_loaders_give_shifted_windows_per_epoch_and_fixed_val():
    ids = torch.arange(100)
    train, val = text_loaders(ids, ids[:50], block_size=8, batch_size=4, seed=0, iters_per_epoch=5, val_batches=3)
    assert len(train) == 5 and len(val) == 3
    x, y = next(iter(train))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)  # contiguous windows, shifted by one
    first = [x for x, _ in train]
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in train]))  # an epoch is reproducible
    train.sampler.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in train]))  # a new epoch, new windows
    v1 = [x for x, _ in val]
    assert all(torch.equal(a, b) for a, b in zip(v1, [x for x, _ in val]))
    assert max(int(x.max()) for x in v1) < 49  # the last window's target is the last token


def test_text_loaders_errors():
    with pytest.raises(ValueError, match="val_ids has 8 tokens"):
        text_loaders(torch.arange(100), torch.arange(8), block_size=8, batch_size=2, seed=0, iters_per_epoch=1)
    with pytest.raises(ValueError, match="1-D integer"):
        text_loaders(torch.rand(100), None, block_size=8, batch_size=2, seed=0, iters_per_epoch=1)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        text_loaders(torch.arange(100), None, block_size=8, batch_size=2, seed=0, iters_per_epoch=0)


# --- a tiny model that has learned two categories ------------------------------------------------------

TEXTS = ["ab" * 12, "xy" * 12]
CATEGORIES = ["comedy", "tragedy"]


@pytest.fixture(scope="module")
def trained():
    """Two categories with disjoint alphabets, learned in a plain loop (fit is tested on its own below)."""
    tok = CharTokenizer.train(TEXTS, CATEGORIES)
    ids = encode_documents(tok, TEXTS * 10, CATEGORIES * 10)
    m = tiny(tok.vocab_size, block_size=16, n_layer=1, n_embd=32, learning_rate=1e-2, warmup_iters=5, lr_decay_iters=150)
    train, _ = text_loaders(ids, None, block_size=16, batch_size=16, seed=0, iters_per_epoch=150)
    opt = m.configure_optimizers()
    for x, y in train:
        _, loss = m(x, y)
        loss.backward()
        opt["optimizer"].step()
        opt["lr_scheduler"]["scheduler"].step()
        opt["optimizer"].zero_grad(set_to_none=True)
    return m.eval(), tok


def test_generation_for_a_category_starts_after_its_control_token(trained):
    m, tok = trained
    for category, alphabet in zip(CATEGORIES, ("ab", "xy")):
        idx = torch.tensor([[tok.category_id(category)]] * 4)
        out = m.generate(idx, 10, temperature=0.5, seed=0, stop_ids=[[tok.eos_id]], eos_id=tok.eos_id)
        assert (out[:, 0] == tok.category_id(category)).all()
        assert all(not tok.is_control(i) for i in out[:, 1].tolist())
        for text in generate_texts(m, tok, [category] * 4, max_new_tokens=40, temperature=0.5, seed=0):
            assert text[:2] == alphabet and set(text) <= set(alphabet), text


def test_generate_texts_is_reproducible_and_uses_the_prompt(trained):
    m, tok = trained
    a = generate_texts(m, tok, ["comedy", "tragedy", "comedy"], max_new_tokens=20, prompt="ab", seed=4, batch_size=2)
    b = generate_texts(m, tok, ["comedy", "tragedy", "comedy"], max_new_tokens=20, prompt="ab", seed=4, batch_size=2)
    assert a == b and len(a) == 3 and all(t.startswith("ab") for t in a)


def test_checkpoint_round_trip(trained, tmp_path):
    m, tok = trained
    sha = save_model(tmp_path / "gpt.pt", "gpt", m, extra={"tokenizer": tok.to_dict()})
    assert len(sha) == 64
    again = load_model(tmp_path / "gpt.pt")
    assert isinstance(again, GPT) and again.config == m.config
    idx = torch.tensor([[tok.category_id("comedy"), 0, 1]])
    torch.testing.assert_close(again(idx)[0], m(idx)[0], rtol=0, atol=0)
    assert torch.equal(again.generate(idx, 20, seed=2), m.generate(idx, 20, seed=2))
    tok2 = tokenizer_from_dict(again.extra["tokenizer"])
    assert tok2.category_id("tragedy") == tok.category_id("tragedy") and tok2.encode("abxy") == tok.encode("abxy")


def test_fit_drives_the_loaders_and_lowers_the_loss(tmp_path):
    tok = CharTokenizer.train(TEXTS, CATEGORIES)
    ids = encode_documents(tok, TEXTS * 10, CATEGORIES * 10)
    m = tiny(tok.vocab_size, block_size=16, n_layer=1, n_embd=32, learning_rate=1e-2, warmup_iters=5, lr_decay_iters=60)
    train, val = text_loaders(ids, ids, block_size=16, batch_size=8, seed=0, iters_per_epoch=30, val_batches=2)
    result = fit(m, train, val, run_dir=tmp_path, max_epochs=2, monitor="val_loss", accelerator="cpu")
    assert [set(r) >= {"train_loss", "val_loss"} for r in result.history] == [True, True]
    assert result.history[-1]["val_loss"] < math.log(tok.vocab_size) - 1.5
    again = GPT.load_from_checkpoint(result.last_path)  # Lightning's own checkpoint rebuilds the model too
    assert again.config == m.config
