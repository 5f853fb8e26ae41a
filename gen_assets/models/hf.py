"""Any Hugging Face causal language model as a text generator (arch "hf"), LoRA or full fine-tuning.

`HFCausalLM` is a LightningModule around a transformers model, so it trains through
gen_assets.training.fit like every model here (checkpoints, resume, bf16 on a GPU, DDP, gradient
accumulation). With `lora` (the default) the base is frozen and `peft` adds LoRA adapters (all linear
layers by default); otherwise every weight trains.

Its state_dict is what the model adds to its base: the adapter weights under LoRA (peft's
get_peft_model_state_dict), all weights under full fine-tuning. So a model file (models.checkpoint)
holds the adapters and the config, and the config names the base (`base_model`: hub id, folder or .gguf)
and the sha256 of the base's weights, never a copy of the base; rebuilding it resolves and loads the base
(models.pretrained: once per process) and checks that the weights are the ones it was trained on.

It writes from briefs: a brief is (category, prompt). The prompt (or, without one, a sentence naming
the category) becomes the user turn of the model's chat template when it has one, after an optional
system prompt; without a template the prompt and a newline precede the text. The same encoding is used
to train (supervised fine-tuning on prompt -> text, the loss on the text tokens and the closing eos
only), to generate (transformers' generate, batched with left padding and the KV cache), to measure
(bits per byte of a text given its brief: tokenizer-independent) and to read features (the last
hidden layer, mean-pooled over the text's tokens).

Pure torch + Lightning + transformers + peft: no dagster import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from gen_assets.models.gpt import warmup_cosine_lr
from gen_assets.models.pretrained import DEFAULT_BASE_MODEL, ResolvedBase, load_base, resolve_base

IGNORE = -100  # label of a position that carries no loss (transformers' convention)
ADAPTER_PREFIX = "adapter."

Brief = tuple[str, "str | None"]  # (category, prompt)


@dataclass
class HFConfig:
    base_model: str = DEFAULT_BASE_MODEL  # hub id, folder (save_pretrained layout) or .gguf file
    base_sha256: str = ""  # of the base's weights; "" until the base is first resolved
    lora: bool = True  # LoRA adapters (peft) on a frozen base; False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # peft's name for every linear layer but the output head; or "q_proj,v_proj"
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_iters: int = 5
    lr_decay_iters: int = 100
    min_lr: float = 2e-5
    grad_clip: float = 1.0
    max_length: int = 256  # tokens of prompt + text in training; longer texts are cut
    chat_template: bool = True  # use the tokenizer's chat template when it has one
    system_prompt: str | None = None  # the system turn (None: the template's default)

    def __post_init__(self):
        if self.lora_r < 1 or self.max_length < 2:
            raise ValueError(f"lora_r must be >= 1 and max_length >= 2, got {self.lora_r}, {self.max_length}")


def brief_prompt(category: str | None, prompt: str | None) -> str:
    """The user's request for one brief: its prompt, or a sentence naming the category."""
    if prompt and prompt.strip():
        return prompt.strip()
    return f"Write a short text of the kind '{category}'." if category else "Write a short text."


class HFCausalLM(L.LightningModule):
    config_class = HFConfig

    def __init__(self, config: HFConfig | dict, *, base: ResolvedBase | None = None):
        super().__init__()
        if isinstance(config, dict):  # from a Lightning checkpoint's hyperparameters
            config = HFConfig(**config)
        base = base or resolve_base(config.base_model, expect_sha256=config.base_sha256 or None)
        if config.base_sha256 and base.sha256 != config.base_sha256:
            raise ValueError(f"base {config.base_model!r} has weights {base.sha256[:12]}, the config says "
                             f"{config.base_sha256[:12]}")
        self.config = dataclasses.replace(config, base_sha256=base.sha256)
        self.base = base
        model, self.tokenizer = load_base(base)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if config.lora:
            from peft import LoraConfig, get_peft_model

            targets = config.target_modules
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                              task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
        self.model = model.train()  # the base comes in eval mode; Lightning keeps the mode it finds
        self.save_hyperparameters({"config": dataclasses.asdict(self.config)})

    # --- what a model file holds --------------------------------------------------------------------

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        if not self.config.lora:
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        from peft import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(self.model)
        out = {f"{prefix}{ADAPTER_PREFIX}{k}": (v if keep_vars else v.detach()) for k, v in adapter.items()}
        if destination is not None:  # inside another module: its state_dict reads what we add to `destination`
            destination.update(out)
            return destination
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if not self.config.lora:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        from peft import set_peft_model_state_dict

        foreign = [k for k in state_dict if not k.startswith(ADAPTER_PREFIX)]
        if strict and foreign:
            raise RuntimeError(f"not LoRA adapter weights: {foreign[:5]} (a full fine-tuning file loaded with lora=True?)")
        adapter = {k[len(ADAPTER_PREFIX):]: v for k, v in state_dict.items() if k.startswith(ADAPTER_PREFIX)}
        result = set_peft_model_state_dict(self.model, adapter)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"adapter weights do not fit the model: missing {missing[:5]}, "
                               f"unexpected {list(result.unexpected_keys)[:5]}")
        return result

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- encoding -----------------------------------------------------------------------------------

    @property
    def uses_chat_template(self) -> bool:
        return bool(self.config.chat_template and getattr(self.tokenizer, "chat_template", None))

    def prompt_ids(self, category: str | None, prompt: str | None) -> list[int]:
        """The tokens that precede a text of this brief (module doc)."""
        request = brief_prompt(category, prompt)
        if self.uses_chat_template:
            messages = [{"role": "user", "content": request}]
            if self.config.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.config.system_prompt})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return self.tokenizer(request + "\n", add_special_tokens=True).input_ids

    def example(self, category: str | None, prompt: str | None, text: str, *, truncate: bool = True
                ) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one brief -> text: labels IGNORE on the prompt, the text's ids then eos."""
        head = self.prompt_ids(category, prompt)
        body = self.tokenizer(text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        if truncate:
            body = body[: max(1, self.config.max_length - len(head))]
        return head + body, [IGNORE] * len(head) + body

    def collate(self, examples: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-padded batch: input_ids, attention_mask, labels (IGNORE on padding)."""
        return pad_examples(examples, self.tokenizer.pad_token_id)

    # --- training -----------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch["input_ids"].size(0), sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("val_loss", loss, on_epoch=True, batch_size=batch["input_ids"].size(0), sync_dist=True)
        return loss

    def configure_optimizers(self):
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=c.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: warmup_cosine_lr(it, c) / c.learning_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.config.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # --- writing ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def write(
        self,
        briefs: Sequence[Brief],
        *,
        max_new_tokens: int = 48,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = 0.95,
        stop: Sequence[str] = (),
        seed: int | None = None,
        batch_size: int = 32,
        cache_implementation: str | None = None,
    ) -> list[str]:
        """One text per brief, `batch_size` briefs at a time (briefs of similar prompt length together).

        Temperature 0 is greedy decoding. A text ends at eos, at the first of the `stop` strings (cut
        there, the stop string dropped) or after max_new_tokens. With a seed the call is reproducible
        (batch b samples with seed + b; the global random state is left as it was).
        `cache_implementation` goes to transformers ("static" with torch.compile on a GPU).
        """
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        prompts = [self.prompt_ids(c, p) for c, p in briefs]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        pad = self.tokenizer.pad_token_id
        device = self.device
        settings = {"max_new_tokens": max_new_tokens, "pad_token_id": pad, "eos_token_id": self.tokenizer.eos_token_id,
                    "do_sample": temperature > 0}
        if temperature > 0:
            settings.update(temperature=temperature, top_p=1.0 if top_p is None else top_p, top_k=top_k or 0)
        else:
            settings.update(temperature=None, top_p=None, top_k=None)
        if stop:
            settings.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        if cache_implementation:
            settings["cache_implementation"] = cache_implementation
        try:
            for b, start in enumerate(range(0, len(order), batch_size)):
                rows = order[start : start + batch_size]
                width = max(len(prompts[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):  # left padding: every row's next token is at the same column
                    input_ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
                    mask[r, width - len(prompts[i]):] = 1
                # forked only when seeded: an unseeded call draws from (and moves on) the global generator
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
                    if seed is not None:
                        torch.manual_seed(seed + b)
                    sequences = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                                    **settings)
                for r, i in enumerate(rows):
                    text = self.tokenizer.decode(sequences[r, width:], skip_special_tokens=True)
                    for s in stop:
                        if s in text:
                            text = text[: text.index(s)]
                    out[i] = text.strip()
        finally:
            self.train(was_training)
        return out

    # --- measuring ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def _forward_texts(self, briefs: Sequence[Brief], texts: Sequence[str], batch_size: int, hidden: bool):
        if len(briefs) != len(texts):
            raise ValueError(f"{len(briefs)} briefs but {len(texts)} texts")
        was_training = self.training
        self.eval()
        examples = [self.example(c, p, t, truncate=False) for (c, p), t in zip(briefs, texts)]
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = {k: v.to(self.device) for k, v in self.collate([examples[i] for i in rows]).items()}
                labels = batch.pop("labels")
                output = self.model(**batch, output_hidden_states=hidden)
                yield rows, labels, output
        finally:
            self.train(was_training)

    def log_likelihoods(self, briefs: Sequence[Brief], texts: Sequence[str], *, batch_size: int = 16
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(nats, utf-8 bytes) per text: -log p(text | brief), summed over the text's tokens (not eos)."""
        nats = np.zeros(len(texts))
        for rows, labels, output in self._forward_texts(briefs, texts, batch_size, hidden=False):
            logits = output.logits[:, :-1].float()
            target = labels[:, 1:].clone()
            # eos closes every text: its loss says where texts end, not how likely the text is
            last = (target != IGNORE).long().cumsum(1).argmax(1)
            target[torch.arange(len(rows)), last] = IGNORE
            token_nll = F.cross_entropy(logits.transpose(1, 2), target.clamp_min(0), reduction="none")
            token_nll = token_nll * (target != IGNORE)
            nats[rows] = token_nll.sum(1).double().cpu().numpy()
        sizes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
        return nats, sizes

    def features(self, briefs: Sequence[Brief], texts: Sequence[str], *, batch_size: int = 16) -> torch.Tensor:
        """(N, hidden size): the last hidden layer, mean-pooled over each text's tokens."""
        width = int(self.model.config.hidden_size)
        out = torch.zeros(len(texts), width)
        for rows, labels, output in self._forward_texts(briefs, texts, batch_size, hidden=True):
            h = output.hidden_states[-1].float()
            on_text = (labels != IGNORE).float()[..., None]
            out[rows] = ((h * on_text).sum(1) / on_text.sum(1).clamp_min(1.0)).cpu()
        return out


def pad_examples(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(input ids, labels) pairs -> a right-padded batch: input_ids (pad_id), attention_mask, labels (IGNORE)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def bits_per_byte(nats: np.ndarray, sizes: np.ndarray) -> float:
    """Total bits over total bytes: the tokenizer-independent loss of a set of texts."""
    total = float(np.sum(sizes))
    return float(np.sum(nats) / math.log(2) / total) if total else math.nan
