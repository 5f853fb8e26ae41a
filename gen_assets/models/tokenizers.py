"""Text <-> token ids for the GPT: characters (the default) or byte-level BPE, with control tokens on top.

Both tokenizers lay their ids out the same way:

    [0, n_text)            text tokens (characters, or BPE pieces)
    n_text                 <|eos|>   ends a document
    n_text + 1 + i         <|category|> for categories[i]: starts a document and conditions generation

Control tokens sit above the text vocabulary, so no text can ever encode to one of them (a play that
happens to contain the string "<|eos|>" is encoded as its characters), and `decode` drops them.

The character tokenizer maps a character it did not see in training to `<|unk|>`, its last text id,
which decodes to U+FFFD (the replacement character, '\ufffd'): a round trip shows where a character
was lost instead of silently closing the gap. Byte-level BPE needs no unknown token: any text is bytes.

Pure module: no dagster import.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gen_assets.store.files import atomic_write_bytes, location

UNK_TEXT = "\ufffd"
DEFAULT_BPE_VOCAB = 1024
_RESERVED = ("eos", "unk")


def _check_categories(categories: Sequence[str]) -> list[str]:
    categories = list(categories)
    for i, c in enumerate(categories):
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"category {i} must be a non-empty string, got {c!r}")
        if c in _RESERVED:
            raise ValueError(f"category {c!r} is reserved for a control token; rename it")
    dupes = sorted(c for c, n in Counter(categories).items() if n > 1)
    if dupes:
        raise ValueError(f"categories must be distinct; repeated: {dupes}")
    return categories


def _check_texts(texts: Iterable[str]) -> Iterable[str]:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} must be a str, got {type(t).__name__}")
        yield t


class _Tokenizer:
    """What the two tokenizers share: the control tokens above `n_text` and (de)serialisation."""

    kind = ""

    def __init__(self, n_text: int, categories: Sequence[str]):
        self.n_text = n_text
        self.categories = _check_categories(categories)
        self._category_ids = {c: n_text + 1 + i for i, c in enumerate(self.categories)}

    @property
    def eos_id(self) -> int:
        return self.n_text

    @property
    def vocab_size(self) -> int:
        return self.n_text + 1 + len(self.categories)

    def category_id(self, category: str) -> int:
        try:
            return self._category_ids[category]
        except KeyError:
            raise KeyError(f"unknown category {category!r}; this tokenizer knows {self.categories}") from None

    def is_control(self, token_id: int) -> bool:
        return token_id >= self.n_text

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def _decode_text(self, ids: list[int]) -> str:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` with control tokens (eos, categories) dropped."""
        text_ids = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary (size {self.vocab_size})")
            if i < self.n_text:
                text_ids.append(i)
        return self._decode_text(text_ids)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, categories={self.categories})"


class CharTokenizer(_Tokenizer):
    """One id per character seen in training, then `<|unk|>` for any other character."""

    kind = "char"

    def __init__(self, chars: Sequence[str], categories: Sequence[str] = ()):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        super().__init__(len(chars) + 1, categories)
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @property
    def unk_id(self) -> int:
        return self.n_text - 1

    @classmethod
    def train(
        cls, texts: Iterable[str], categories: Sequence[str] = (), vocab_size: int | None = None
    ) -> CharTokenizer:
        """Every character of `texts`, or only the `vocab_size - 1` most frequent (the rest become unk).

        `vocab_size` counts text tokens (characters plus unk); control tokens come on top of it.
        """
        counts: Counter[str] = Counter()
        for t in _check_texts(texts):
            counts.update(t)
        if not counts:
            raise ValueError("cannot train a tokenizer on no text")
        if vocab_size is not None:
            if vocab_size < 2:
                raise ValueError(f"vocab_size must be >= 2 (one character and unk), got {vocab_size}")
            # most_common breaks ties by first occurrence; sorting below makes the ids independent of it
            counts = Counter(dict(counts.most_common(vocab_size - 1)))
        return cls(sorted(counts), categories)

    def encode(self, text: str) -> list[int]:
        stoi, unk = self._stoi, self.unk_id
        return [stoi.get(c, unk) for c in text]

    def _decode_text(self, ids: list[int]) -> str:
        chars, unk = self.chars, self.unk_id
        return "".join(UNK_TEXT if i == unk else chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": self.categories, "chars": self.chars}


class BPETokenizer(_Tokenizer):
    """Byte-level BPE (GPT-2's scheme) trained locally with Hugging Face `tokenizers`."""

    kind = "bpe"

    def __init__(self, tokenizer: Any, categories: Sequence[str] = ()):
        # No special tokens live inside the HF tokenizer: ours sit above its vocabulary (see the module
        # docstring), so its encode can never produce one.
        super().__init__(tokenizer.get_vocab_size(), categories)
        self._tok = tokenizer

    @classmethod
    def train(
        cls, texts: Iterable[str], categories: Sequence[str] = (), vocab_size: int | None = None
    ) -> BPETokenizer:
        """`vocab_size` (text tokens: 256 bytes plus merges, default 1024); control tokens on top."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        texts = list(_check_texts(texts))
        if not any(texts):
            raise ValueError("cannot train a tokenizer on no text")
        vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet):
            raise ValueError(f"byte-level BPE needs vocab_size >= {len(alphabet)} (one id per byte), got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
        tok.train_from_iterator(texts, trainer)
        return cls(tok, categories)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _decode_text(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": self.categories, "tokenizer": self._tok.to_str()}


TextTokenizer = CharTokenizer | BPETokenizer
TOKENIZERS: dict[str, type[_Tokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}


def train_tokenizer(
    kind: str, texts: Iterable[str], categories: Sequence[str] = (), vocab_size: int | None = None
) -> TextTokenizer:
    """`kind` is "char" (default in the product) or "bpe"."""
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].train(texts, categories, vocab_size)


def tokenizer_from_dict(d: dict[str, Any]) -> TextTokenizer:
    """Inverse of `to_dict`."""
    if not isinstance(d, dict) or d.get("kind") not in TOKENIZERS:
        kind = d.get("kind") if isinstance(d, dict) else None
        raise ValueError(f"a tokenizer dict needs 'kind' in {sorted(TOKENIZERS)}, got {kind!r}")
    field = {"char": "chars", "bpe": "tokenizer"}[d["kind"]]
    if field not in d:
        raise ValueError(f"a {d['kind']} tokenizer dict needs the key {field!r}")
    categories = d.get("categories", [])
    if d["kind"] == "char":
        return CharTokenizer(d["chars"], categories)
    from tokenizers import Tokenizer as HFTokenizer

    return BPETokenizer(HFTokenizer.from_str(d["tokenizer"]), categories)


def load_tokenizer(path: str | Path) -> TextTokenizer:
    path = location(path)
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"tokenizer file {path} is not valid JSON: {e}") from None
    try:
        return tokenizer_from_dict(d)
    except Exception as e:  # ours are ValueErrors; HF's parser raises its own Exception
        raise ValueError(f"tokenizer file {path}: {e}") from e
