"""models.text_generators: the one interface to both text architectures (the GPT side; the pretrained
side is HFCausalLM itself, tested in test_hf.py)."""

import math

import numpy as np
import pytest
import torch

from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.models.reward import TEXT_STAT_NAMES, WORD_BUCKETS, text_feature_groups, writer_features
from gen_assets.models.text_generators import GPTWriter, module_of, writer_bits_per_byte, writer_of
from gen_assets.models.tokenizers import train_tokenizer

CORPUS = ["hello world, the quick brown fox jumps over the lazy dog!", "a second text? yes."]


@pytest.fixture(scope="module")
def writer():
    tokenizer = train_tokenizer("char", CORPUS, ["a", "b"], None)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    model.extra = {"tokenizer": tokenizer.to_dict()}
    return writer_of(model)


def by_hand(model, ids: list[int], block: int) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):
            window = torch.tensor(ids[start : start + block + 1])[None]
            logits, _ = model(window[:, :-1], window[:, 1:])
            total += float(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
    return total


def test_gpt_log_likelihoods_read_each_token_once_in_windows_of_the_block(writer):
    assert isinstance(writer, GPTWriter) and module_of(writer) is writer.module
    texts = [CORPUS[0], "hello", "the quick brown f"]  # 3 windows and a part; shorter than one; exactly 2 windows
    briefs = [("a", None), ("b", "the prompt is ignored"), ("a", None)]
    nats, sizes = writer.log_likelihoods(briefs, texts)
    for (category, _), text, n in zip(briefs, texts, nats):
        ids = [writer.tokenizer.category_id(category), *writer.tokenizer.encode(text)]
        assert n == pytest.approx(by_hand(writer.module, ids, 8), rel=1e-5)
    assert list(sizes) == [len(t.encode()) for t in texts]
    assert writer_bits_per_byte(writer, briefs, texts) == pytest.approx(nats.sum() / math.log(2) / sizes.sum())
    with pytest.raises(ValueError, match="2 briefs but 3 texts"):
        writer.log_likelihoods(briefs[:2], texts)


def test_gpt_writes_per_category_and_cuts_at_stop_strings(writer):
    texts = writer.write([("a", None), ("b", None)], max_new_tokens=20, seed=0)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert texts == writer.write([("a", None), ("b", None)], max_new_tokens=20, seed=0)
    alone = writer.write([("a", None)], max_new_tokens=20, seed=0)[0]  # a batch of one draws its own noise
    stop = next(c for c in alone[1:] if not c.isspace())
    cut = writer.write([("a", None)], max_new_tokens=20, seed=0, stop=[stop])[0]
    assert cut == alone[: alone.index(stop)].strip()


def test_writer_features_are_statistics_words_then_pooled_hidden_states(writer):
    feats = writer_features(writer, [("a", None), ("b", None)], CORPUS)
    assert feats.shape == (2, len(TEXT_STAT_NAMES) + WORD_BUCKETS + 16)
    assert text_feature_groups(feats.shape[1]) == [len(TEXT_STAT_NAMES), WORD_BUCKETS, 16]
    assert not torch.equal(feats[0], feats[1])
    np.testing.assert_allclose(feats[:1].numpy(), writer_features(writer, [("a", None)], CORPUS[:1]).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_a_model_without_a_tokenizer_is_not_a_text_generator():
    with pytest.raises(ValueError, match="not a text generator"):
        writer_of(GPT(GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=4)))
