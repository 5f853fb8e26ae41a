import json

import pytest
import torch

from gen_assets.training.text_data import encode_documents
from gen_assets.models.tokenizers import (
    UNK_TEXT,
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

TEXTS = [
    "ROMEO:\nBut soft, what light through yonder window breaks?\n",
    "JULIET:\tO Romeo, Romeo! wherefore art thou Romeo?  Deny thy father — and refuse thy name.\n",
    "Ünïcödé, emoji 🎭 and CJK 日本 survive too.",
]
CATEGORIES = ["comedy", "tragedy", "history"]


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXTS * 20, CATEGORIES, vocab_size=300)


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.train(TEXTS, CATEGORIES)


def test_char_round_trip_of_seen_characters(char):
    for text in TEXTS + ["".join(reversed(TEXTS[1])), ""]:
        ids = char.encode(text)
        assert len(ids) == len(text)
        assert char.decode(ids) == text


def test_char_unseen_characters_become_unk(char):
    ids = char.encode("Romeo%Z")
    assert ids.count(char.unk_id) == 2
    assert char.decode(ids) == f"Romeo{UNK_TEXT}{UNK_TEXT}"


def test_char_vocab_size_keeps_the_most_frequent_characters():
    tok = CharTokenizer.train(["aaaabbbc"], vocab_size=3)  # a, b and unk
    assert tok.chars == ["a", "b"] and tok.n_text == 3
    assert tok.decode(tok.encode("abc")) == "ab" + UNK_TEXT


def test_bpe_round_trips_any_text_and_compresses(bpe):
    unseen = "Zebra quartz ⚡ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00 tabs\t\n"
    for text in TEXTS + [unseen]:
        assert bpe.decode(bpe.encode(text)) == text
    assert len(bpe.encode(TEXTS[0])) < 0.75 * len(TEXTS[0].encode("utf-8"))  # merges learned from the corpus
    assert bpe.n_text == 300


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_control_ids_are_distinct_and_above_the_text_vocabulary(kind, char, bpe):
    tok = {"char": char, "bpe": bpe}[kind]
    controls = [tok.eos_id] + [tok.category_id(c) for c in CATEGORIES]
    assert len(set(controls)) == len(controls)
    assert all(tok.n_text <= i < tok.vocab_size for i in controls)
    assert tok.vocab_size == tok.n_text + 1 + len(CATEGORIES)
    # text that spells a control token is still text: no injection of control ids
    spelled = "<|comedy|> <|eos|>"
    ids = tok.encode(spelled)
    assert not set(ids) & set(controls)
    # decode drops control tokens wherever they are
    body = tok.encode("Romeo")
    assert tok.decode([tok.category_id("tragedy"), *body, tok.eos_id, tok.eos_id]) == "Romeo"


def test_category_errors(char):
    with pytest.raises(KeyError, match="unknown category 'farce'"):
        char.category_id("farce")
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer.train(["x"], ["a", "b", "a"])
    with pytest.raises(ValueError, match="reserved"):
        CharTokenizer.train(["x"], ["eos"])
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.train(["x"], [""])


def test_training_input_errors():
    with pytest.raises(ValueError, match="no text"):
        CharTokenizer.train([])
    with pytest.raises(ValueError, match="no text"):
        BPETokenizer.train(["", ""])
    with pytest.raises(TypeError, match="text 1 must be a str"):
        CharTokenizer.train(["ok", None])
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        BPETokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer("word", ["abc"])


def test_decode_rejects_ids_outside_the_vocabulary(char):
    with pytest.raises(ValueError, match="outside"):
        char.decode([char.vocab_size])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_and_dict_round_trip(kind, char, bpe, tmp_path):
    tok = {"char": char, "bpe": bpe}[kind]
    d = tok.to_dict()
    json.dumps(d)  # plain JSON
    path = tmp_path / "tok" / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary left behind
    for again in (load_tokenizer(path), tokenizer_from_dict(json.loads(json.dumps(d)))):
        assert type(again) is type(tok)
        assert again.categories == CATEGORIES and again.vocab_size == tok.vocab_size
        assert again.eos_id == tok.eos_id and again.category_id("history") == tok.category_id("history")
        for text in TEXTS:
            assert again.encode(text) == tok.encode(text)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_tokenizer(bad)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"kind": "word"}))
    with pytest.raises(ValueError, match="odd.json.*'kind'"):
        load_tokenizer(odd)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"kind": "char", "categories": []}))
    with pytest.raises(ValueError, match="partial.json.*'chars'"):
        load_tokenizer(partial)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_encode_documents_layout(kind, char, bpe):
    tok = {"char": char, "bpe": bpe}[kind]
    ids = encode_documents(tok, ["Romeo", "O"], ["tragedy", "comedy"])
    expected = [tok.category_id("tragedy"), *tok.encode("Romeo"), tok.eos_id]
    expected += [tok.category_id("comedy"), *tok.encode("O"), tok.eos_id]
    assert ids.dtype == torch.long and ids.tolist() == expected
    assert encode_documents(tok, ["Romeo"]).tolist() == [*tok.encode("Romeo"), tok.eos_id]  # unconditional


def test_encode_documents_errors(char):
    with pytest.raises(ValueError, match="2 texts but 1 categories"):
        encode_documents(char, ["a", "b"], ["comedy"])
    with pytest.raises(ValueError, match="document 1: unknown category 'farce'"):
        encode_documents(char, ["a", "b"], ["comedy", "farce"])
    with pytest.raises(TypeError, match="document 0"):
        encode_documents(char, [b"bytes"], ["comedy"])
