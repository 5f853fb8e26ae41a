"""One interface to every text generator: a pretrained causal LM (arch "hf") or the from-scratch GPT ("gpt").

The Dagster layer writes, measures and reads features through `TextWriter`, whatever the model:

- `write(briefs, ...)`: one text per brief (category, prompt);
- `log_likelihoods(briefs, texts)`: (nats, utf-8 bytes) per text given its brief, so that
  `bits_per_byte` compares models with different tokenizers;
- `features(briefs, texts)`: the model's hidden states, mean-pooled per text (the reward model's input).

`HFCausalLM` is a TextWriter itself. The GPT is conditioned on the category alone (a control token; it
has no notion of a prompt), so `GPTWriter` gives it the brief's category and ignores the prompt.

Pure module: no dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from gen_assets.models.checkpoint import load_model
from gen_assets.models.hf import Brief, HFCausalLM, bits_per_byte  # noqa: F401 (bits_per_byte: for callers)
from gen_assets.models.tokenizers import tokenizer_from_dict
from gen_assets.training.text_data import generate_texts


class TextWriter(Protocol):
    def write(self, briefs: Sequence[Brief], *, max_new_tokens: int, temperature: float = 0.8,
              top_k: int | None = None, top_p: float | None = 0.95, stop: Sequence[str] = (),
              seed: int | None = None, batch_size: int = 32) -> list[str]: ...

    def log_likelihoods(self, briefs: Sequence[Brief], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def features(self, briefs: Sequence[Brief], texts: Sequence[str]) -> torch.Tensor: ...


class GPTWriter:
    """The from-scratch GPT with its tokenizer, as a TextWriter (prompts ignored: module doc)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any):
        self.module = model
        self.tokenizer = tokenizer

    def write(self, briefs: Sequence[Brief], *, max_new_tokens: int, temperature: float = 0.8,
              top_k: int | None = None, top_p: float | None = 0.95, stop: Sequence[str] = (),
              seed: int | None = None, batch_size: int = 64) -> list[str]:
        texts = generate_texts(self.module, self.tokenizer, [c for c, _ in briefs], max_new_tokens=max_new_tokens,
                               temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, batch_size=batch_size)
        out = []
        for t in texts:
            for s in stop:
                if s in t:
                    t = t[: t.index(s)]
            out.append(t.strip())
        return out

    @torch.no_grad()
    def log_likelihoods(self, briefs: Sequence[Brief], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-log p(text | category token) in nats, the text read in windows of block_size tokens."""
        if len(briefs) != len(texts):
            raise ValueError(f"{len(briefs)} briefs but {len(texts)} texts")
        model, block = self.module, int(self.module.config.block_size)
        was_training = model.training
        model.eval()
        nats = np.zeros(len(texts))
        try:
            for i, ((category, _), ids) in enumerate(zip(briefs, self.tokenizer.encode_batch(list(texts)))):
                stream = torch.tensor([self.tokenizer.category_id(category), *ids], dtype=torch.long)
                # windows of block_size + 1 tokens overlapping by one: every text token is predicted once;
                # the full windows of a text in one batch, the shorter last one on its own
                full = (len(stream) - 1) // block
                windows = [stream[: full * block + 1].unfold(0, block + 1, block)] if full else []
                if (len(stream) - 1) % block:
                    windows.append(stream[full * block :][None])
                for w in windows:
                    w = w.to(model.device)
                    logits, _ = model(w[:, :-1], w[:, 1:])
                    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten(),
                                                            reduction="sum")
                    nats[i] += float(nll)
        finally:
            model.train(was_training)
        return nats, np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)

    def features(self, briefs: Sequence[Brief], texts: Sequence[str]) -> torch.Tensor:
        from gen_assets.models.reward import TEXT_STAT_NAMES, text_features

        feats = text_features(list(texts), self.module, self.tokenizer, categories=[c for c, _ in briefs])
        return feats[:, len(TEXT_STAT_NAMES):]


def module_of(writer: TextWriter) -> torch.nn.Module:
    """The LightningModule behind a TextWriter: what trains."""
    return writer if isinstance(writer, HFCausalLM) else writer.module


def writer_of(model: torch.nn.Module) -> TextWriter:
    """The TextWriter of a loaded text generator model (load_model's result)."""
    if isinstance(model, HFCausalLM):
        return model
    if "tokenizer" not in getattr(model, "extra", {}):
        raise ValueError(f"{type(model).__name__} is not a text generator (no tokenizer in its model file)")
    return GPTWriter(model, tokenizer_from_dict(model.extra["tokenizer"]))


def load_writer(path: str, device: str | torch.device = "cpu") -> TextWriter:
    """A text generator's model file -> its TextWriter, on `device`."""
    return writer_of(load_model(path, device))


def writer_bits_per_byte(writer: TextWriter, briefs: Sequence[Brief], texts: Sequence[str]) -> float:
    """Bits per byte of `texts` given their briefs: the tokenizer-independent loss."""
    nats, sizes = writer.log_likelihoods(briefs, texts)
    return bits_per_byte(nats, sizes)
