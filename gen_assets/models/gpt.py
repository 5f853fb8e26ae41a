"""A GPT language model in one file, after nanoGPT's model.py, as a LightningModule.

The text generator: documents are encoded as `[category_id] + tokens + [eos]` (see text_data.py), so
the first token of a document tells the model which category to write, and generating for a category
starts from `[category_id]`. The model itself knows nothing of tokenizers or categories.

Generation keeps a KV cache: the prompt is fed once (prefill), then one token per step attends to the
cached keys and values. Positions are learned and absolute, so once the context reaches block_size no
cached key stays valid when the window moves; the window then jumps: the last `keep` tokens are fed
again as a fresh prefill (default keep = block_size // 2) and decoding continues from there. The
uncached path follows the same rule (its context is also "the tokens since the last jump"), so the two
give identical output; keep=block_size is nanoGPT's one-token slide exactly (a full forward per token).

Pure torch + Lightning: no dagster import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # nanoGPT's train.py default: a little better and faster
    # optimisation: AdamW, linear warmup then cosine decay to min_lr, stepped once per iteration;
    # set lr_decay_iters to the run's total iterations (after it the rate stays at min_lr)
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99  # shakespeare_char's: few tokens per step
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    min_lr: float = 1e-4
    grad_clip: float = 1.0  # applied by Lightning through configure_gradient_clipping; 0 turns it off
    compile: bool = False  # torch.compile the training forward (worth it on a GPU)

    def __post_init__(self):
        if self.vocab_size < 1 or self.block_size < 1:
            raise ValueError(f"vocab_size and block_size must be >= 1, got {self.vocab_size}, {self.block_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


def warmup_cosine_lr(it: int, c) -> float:
    """nanoGPT's schedule: linear warmup, cosine decay to min_lr at lr_decay_iters, then min_lr.

    `c` has learning_rate, min_lr, warmup_iters and lr_decay_iters (GPTConfig, HFConfig)."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / max(1, c.lr_decay_iters - c.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return c.min_lr + coeff * (c.learning_rate - c.min_lr)


class KVCache:
    """One layer's keys and values for the tokens fed so far, preallocated to block_size."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, nh, T, hs) keys/values after those already here; return all of them."""
        t = k.size(2)
        if t > 1 and self.length:
            raise RuntimeError("a prefill needs an empty cache (reset() it first)")
        if self.length + t > self.max_len:
            raise RuntimeError(f"KV cache full: {self.length} + {t} tokens > block_size {self.max_len}")
        if self.k is None:
            b, nh, _, hs = k.shape
            self.k = k.new_empty(b, nh, self.max_len, hs)
            self.v = v.new_empty(b, nh, self.max_len, hs)
        self.k[:, :, self.length : self.length + t] = k
        self.v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reset(self) -> None:
        self.length = 0


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(k, v)
        # T > 1 is a whole sequence (training or a prefill into an empty cache): causal. T == 1 is one
        # decoding step, whose query may see every cached key.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(L.LightningModule):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig | dict):
        super().__init__()
        if isinstance(config, dict):  # from a Lightning checkpoint's hyperparameters
            config = GPTConfig(**config)
        self.config = config
        # {"config": ...} so that GPT.load_from_checkpoint(ckpt) rebuilds the model from a Lightning checkpoint
        self.save_hyperparameters({"config": dataclasses.asdict(config)})
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the input embedding and the output projection are one matrix
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance in check
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self._train_forward = None  # torch.compile'd forward when config.compile (see configure_model)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, caches: Sequence[KVCache] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, loss). With targets: logits for every position; without: for the last one only.

        `caches` (one KVCache per layer) continue the sequence already in them: idx's positions start
        after the cached tokens.
        """
        t = idx.size(1)
        start = caches[0].length if caches else 0
        if start + t > self.config.block_size:
            raise ValueError(f"cannot forward {start + t} tokens: block_size is {self.config.block_size}")
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss
        # inference: only the last position's logits are needed (list index keeps the time dimension)
        return self.lm_head(x[:, [-1], :]), None

    # --- training -----------------------------------------------------------------------------------

    def configure_model(self) -> None:
        # Lightning calls this before fitting; compile once, lazily (the first batch triggers the work).
        if self.config.compile and self._train_forward is None:
            self._train_forward = torch.compile(self.forward)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        forward = self._train_forward or self.forward
        return forward(x, y)[1]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        # epoch mean, accumulated on the device: no host sync per step
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch[0].size(0), sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=batch[0].size(0), sync_dist=True)
        return loss

    def lr_at(self, it: int) -> float:
        return warmup_cosine_lr(it, self.config)

    def configure_optimizers(self):
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        # weight decay on the matrices (matmuls, embeddings); none on biases and norm gains
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # not fused=True (nanoGPT's choice on CUDA): Lightning refuses to clip gradients for an optimizer
        # that unscales them itself; the default foreach implementation is nearly as fast
        optimizer = torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: self.lr_at(it) / c.learning_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # nanoGPT clips at 1.0; a Trainer-level gradient_clip_val, when given, wins
        clip = gradient_clip_val if gradient_clip_val is not None else self.config.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # --- generation ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_ids: Sequence[Sequence[int]] = (),
        use_cache: bool = True,
        seed: int | None = None,
        eos_id: int | None = None,
        keep: int | None = None,
    ) -> torch.Tensor:
        """Continue each row of idx (B, T) by up to max_new_tokens; return (B, T + generated).

        temperature 0 is greedy decoding. top_k keeps the k likeliest tokens, top_p the smallest set
        whose probability reaches p. A row stops when its tail equals one of `stop_ids` (kept in the
        output); afterwards it is padded with `eos_id` (required with stop_ids), and generation ends
        when every row has stopped. `seed` makes sampling reproducible (own generator: the global RNG
        is left alone). `keep` is how many tokens a full context is cut back to (module docstring).
        """
        c = self.config
        if idx.dim() != 2 or idx.size(1) < 1 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a (B, T >= 1) LongTensor, got {tuple(idx.shape)} {idx.dtype}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        keep = c.block_size // 2 if keep is None else keep
        if not 1 <= keep <= c.block_size:
            raise ValueError(f"keep must be in [1, block_size={c.block_size}], got {keep}")
        stops = [torch.as_tensor(list(s), dtype=torch.long, device=idx.device) for s in stop_ids]
        if any(s.numel() == 0 for s in stops):
            raise ValueError("stop sequences must not be empty")
        if stops and eos_id is None:
            raise ValueError("stop_ids need eos_id to pad the rows that stopped")

        was_training = self.training
        self.eval()
        generator = None
        if seed is not None:
            generator = torch.Generator(device=idx.device).manual_seed(seed)
        B, T0 = idx.shape
        out = idx.new_empty(B, T0 + max_new_tokens)
        out[:, :T0] = idx
        n = T0  # tokens in out so far
        start = max(0, n - c.block_size)  # the context is out[:, start:n]
        caches = [KVCache(c.block_size) for _ in range(c.n_layer)] if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        logits, _ = self(out[:, start:n], caches=caches)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            if stops:
                nxt = torch.where(finished, eos_id, nxt)
            out[:, n] = nxt
            n += 1
            if stops:
                for s in stops:
                    if len(s) <= n:
                        finished |= (out[:, n - len(s) : n] == s).all(dim=1)
                if bool(finished.all()):
                    break
            if n == out.size(1):
                break
            if n - start > c.block_size:  # the next context would not fit: jump the window
                start = n - keep
                if caches:
                    for cache in caches:
                        cache.reset()
                    logits, _ = self(out[:, start:n], caches=caches)
                    continue
            logits, _ = self(out[:, n - 1 : n] if caches else out[:, start:n], caches=caches)
        self.train(was_training)
        return out[:, :n]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of (B, V) logits: greedy at temperature 0, else sampled."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the likelier ones before it already reach top_p (the first always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
