"""Preference optimization for text generators: DPO and KTO over log-probabilities of a policy and a reference.

Where finetune.py moves a generator towards what people like by sampling the liked texts more often
(a weighted LM loss), preference optimization also learns from what they dislike, and only relative to
where the model started:

- DPO (Rafailov et al. 2023) takes pairs of texts for one brief, one rated better than the other
  (`preference_pairs`), and raises the likelihood of the chosen text relative to the rejected one:
  loss = -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r))).
- KTO (Ethayarajh et al. 2024) takes single texts labelled liked or disliked (`kto_labels`), no pairs:
  a liked text's loss is 1 - sigmoid(beta * ((logp - ref) - z0)), a disliked one's
  1 - sigmoid(beta * (z0 - (logp - ref))), with z0 the batch's estimate of KL(policy || reference),
  clamped at 0 and detached. As in TRL, z0 is read on mismatched pairs: each brief with another
  example's text, fixed (seeded) for the run.

logp is the summed log-probability of the response tokens only (the text and its closing eos, the
labels of supervised fine-tuning): the prompt (HFCausalLM: the chat-template brief) or the category
token (GPT: documents are `[category_id] + tokens + [eos]`, the prompt ignored as GPTWriter does) is
context. A text longer than the model's window is cut (HFConfig.max_length; the GPT's block_size).

The reference is the starting model, i.e. the policy at step 0, as DPO defines it: for a LoRA model the
base with the champion's adapters. No second copy of the model is held: its log-probs of every training
sequence are computed once, before training, in eval mode under the training's precision, and stored
with the data set. Dropout stays off in training too (TRL's disable_dropout default), so at step 0 the
policy's log-probs are the reference's and the DPO loss starts at log 2, KTO's at 1/2. A LoRA model may
take the base itself as its reference instead (`reference="base"`: peft's disable_adapter()).

Training goes through gen_assets.training.fit.fit with `PreferenceTuning`, a small LightningModule
around the policy (a copy of the given model: the original is left untouched), for one "epoch" of
`steps` batches; the copy comes back in eval mode on the CPU, the same class as the model given, with
its own config (the fine-tuning's learning-rate schedule is not kept in it).

Pure torch + Lightning: no dagster import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from gen_assets.models.gpt import GPT
from gen_assets.models.hf import IGNORE, HFCausalLM, pad_examples
from gen_assets.training.finetune import _clone, fit_retargeted, schedule_overrides
from gen_assets.training.fit import default_precision
from gen_assets.training.image_data import seeded_generator
from gen_assets.training.text_data import RandomStarts

Example = tuple[str | None, str | None, str]  # (category, prompt, text)
Encoded = tuple[list[int], list[int]]  # (input_ids, labels: IGNORE off the response)
METHODS = ("dpo", "kto")
REFERENCES = ("start", "base")
REFERENCE_BATCH = 16  # sequences per forward of the reference pass
KTO_CYCLE = 0x4B544F  # entropy of the mismatched pairs' cycle, apart from the batches' (seed, epoch)


# --- which examples train ----------------------------------------------------------------------------


def _scores(scores: Any) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"scores must be numbers, got {scores!r:.80}") from None
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"scores: {s[bad[0]]} at index {bad[0]}{more}; every score must be a finite number")
    return s


def _members(groups: Sequence[Any], n: int) -> dict[Any, list[int]]:
    """Example indices per group, groups in order of first appearance."""
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups but {n} scores")
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        try:
            members.setdefault(g, []).append(i)
        except TypeError:
            raise ValueError(f"group {i} is a {type(g).__name__}, which cannot key a group (use a str or a tuple)") from None
    return members


def preference_pairs(
    groups: Sequence[Any], scores: Any, *, min_gap: float = 1.0, max_pairs_per_group: int | None = None
) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs of samples in the same group whose scores differ by >= min_gap.

    `groups`: one hashable key per sample (the brief (category, prompt), or the category alone: the
    caller's choice); `scores`: people's ratings or reward-model predictions, higher is better. Groups
    come in order of first appearance, and within a group the widest gaps first (ties by index); with
    `max_pairs_per_group` only that many of them. Deterministic: the same inputs give the same list.
    """
    s = _scores(scores)
    members = _members(groups, len(s))
    if not min_gap > 0:
        raise ValueError(f"min_gap must be > 0 (equal scores prefer nothing), got {min_gap}")
    if max_pairs_per_group is not None and max_pairs_per_group < 1:
        raise ValueError(f"max_pairs_per_group must be >= 1 or None, got {max_pairs_per_group}")
    pairs = []
    for idx in members.values():
        found = sorted((-(s[c] - s[r]), c, r) for c in idx for r in idx if s[c] - s[r] >= min_gap)
        pairs += [(c, r) for _, c, r in found[:max_pairs_per_group]]
    return pairs


def kto_labels(scores: Any, *, liked: float = 4.0, disliked: float = 2.0) -> np.ndarray:
    """+1 where score >= liked, -1 where score <= disliked, 0 in between (not trained on), as int64."""
    s = _scores(scores)
    if not liked > disliked:
        raise ValueError(f"liked ({liked}) must be above disliked ({disliked})")
    return np.where(s >= liked, 1, np.where(s <= disliked, -1, 0)).astype(np.int64)


def _why_no_pairs(members: dict[Any, list[int]], s: np.ndarray, min_gap: float, identical: int) -> str:
    head = f"DPO found no (chosen, rejected) pair in {len(s)} examples of {len(members)} groups: "
    if len(s) == 0:
        return "DPO found no (chosen, rejected) pair: no examples were given"
    if identical:
        return head + f"the pairs found ({identical}) have the same text on both sides"
    if all(len(idx) == 1 for idx in members.values()):
        return head + f"all {len(s)} examples are in different groups (briefs); a pair needs two samples of one brief"
    gap = max(float(s[idx].max() - s[idx].min()) for idx in members.values())
    return head + f"no two scores in a group differ by >= {min_gap:g} (the widest gap in a group is {gap:g})"


# --- losses ------------------------------------------------------------------------------------------


def dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean DPO loss, per-pair implicit reward margin, detached). A logratio is logp - ref of one text;
    the implicit reward of a text is beta times it."""
    margin = beta * (chosen_logratios - rejected_logratios)
    return -F.logsigmoid(margin).mean(), margin.detach()


def kto_loss(logratios: torch.Tensor, labels: torch.Tensor, kl: torch.Tensor, beta: float, *,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Mean KTO loss of texts labelled +1 (liked) or -1 (disliked); `kl`: the batch's estimate of
    KL(policy || reference), the reference point z0 once clamped at 0 and detached (TRL's "kto" loss)."""
    z0 = kl.clamp(min=0).detach()
    liked = 1 - torch.sigmoid(beta * (logratios - z0))
    disliked = 1 - torch.sigmoid(beta * (z0 - logratios))
    return torch.where(labels > 0, desirable_weight * liked, undesirable_weight * disliked).mean()


# --- sequences and their log-probs --------------------------------------------------------------------


def _encoder(model: torch.nn.Module, tokenizer: Any) -> Callable[[str | None, str | None, str], Encoded]:
    if isinstance(model, HFCausalLM):
        return model.example
    if not isinstance(model, GPT):
        raise TypeError(f"preference tuning takes an HFCausalLM or a GPT, got {type(model).__name__}")
    if tokenizer is None:
        raise ValueError("a GPT needs its tokenizer (tokenizer=...) to encode the examples")
    limit = int(model.config.block_size) + 1  # the GPT reads block_size tokens to predict the next ones

    def encode(category: str | None, prompt: str | None, text: str) -> Encoded:
        head = [] if category is None else [tokenizer.category_id(category)]
        body = list(tokenizer.encode(text)) + [tokenizer.eos_id]
        return (head + body)[:limit], ([IGNORE] * len(head) + body)[:limit]

    return encode


def _pad_id(model: torch.nn.Module, tokenizer: Any) -> int:
    return int(model.tokenizer.pad_token_id) if isinstance(model, HFCausalLM) else int(tokenizer.eos_id)


def collate(encoded: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch (input_ids, attention_mask, labels), the layout of HFCausalLM.collate."""
    return pad_examples(encoded, pad_id)


def sequence_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row: the summed log-probability under `model` of the labelled tokens (the response)."""
    ids, labels = batch["input_ids"], batch["labels"]
    if isinstance(model, HFCausalLM):
        logits = model.model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
    else:
        # right padding needs no mask under causal attention; targets ask the GPT for every position's logits
        logits, _ = model(ids[:, :-1], ids[:, 1:].contiguous())
    target = labels[:, 1:]
    nll = F.cross_entropy(logits.float().transpose(1, 2), target.clamp_min(0), reduction="none")
    return -(nll * (target != IGNORE)).sum(1)


def _reference_log_probs(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, *, base: bool,
                         fit_kwargs: dict[str, Any]) -> torch.Tensor:
    """The model's log-probs of every sequence, once, in eval mode, on the device and under the precision
    that fit() will train with (so that the policy at step 0 reproduces them)."""
    accelerator = fit_kwargs.get("accelerator", "auto")
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    precision = str(fit_kwargs.get("precision") or default_precision(accelerator))
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None
    home, was_training = next(model.parameters()).device, model.training
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths together
    out = torch.zeros(len(encoded))
    model.to(device).eval()
    try:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with torch.no_grad(), (model.model.disable_adapter() if base else nullcontext()), autocast:
            for start in range(0, len(order), REFERENCE_BATCH):
                rows = order[start : start + REFERENCE_BATCH]
                batch = {k: v.to(device) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
                out[rows] = sequence_log_probs(model, batch).float().cpu()
    finally:
        model.to(home).train(was_training)
    return out


# --- data --------------------------------------------------------------------------------------------


class PreferenceData(Dataset):
    """The training sequences, encoded once, with their reference log-probs; a batch of item indices
    (and of real example indices) -> a padded batch.

    DPO items are (chosen, rejected) sequence indices; KTO items are (sequence, mismatched sequence)
    with a label +1 / -1. `real`: encoded examples of the company's own copy for the SFT anchor."""

    def __init__(self, method: str, sequences: Sequence[Encoded], reference: torch.Tensor, items: torch.Tensor,
                 pad_id: int, labels: torch.Tensor | None = None, real: Sequence[Encoded] = ()):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if len(reference) != len(sequences):
            raise ValueError(f"{len(reference)} reference log-probs for {len(sequences)} sequences")
        self.method, self.sequences, self.reference = method, list(sequences), reference.float()
        self.items, self.labels, self.pad_id, self.real = items.long(), labels, pad_id, list(real)

    def __len__(self) -> int:
        return len(self.items)

    def _batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return collate([self.sequences[int(i)] for i in rows], self.pad_id)

    def __getitem__(self, rows: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        item_rows, real_rows = rows
        pick = self.items[item_rows]
        if self.method == "dpo":
            both = torch.cat([pick[:, 0], pick[:, 1]])  # chosen then rejected: one forward for the two
            out: dict[str, Any] = {"seqs": self._batch(both), "ref": self.reference[both]}
        else:
            out = {"seqs": self._batch(pick[:, 0]), "ref": self.reference[pick[:, 0]],
                   "label": self.labels[item_rows], "kl_seqs": self._batch(pick[:, 1]),
                   "kl_ref": self.reference[pick[:, 1]]}
        if len(real_rows):
            out["real"] = collate([self.real[int(i)] for i in real_rows], self.pad_id)
        return out


class PreferenceBatches(RandomStarts):
    """`batches` batches per epoch of `batch_size` items, drawn without replacement until every item has
    come once (random permutations one after another), with `real_batch_size` real example indices drawn
    uniformly; seeded by (seed, epoch) like the other text loaders, so a resumed run sees the same batches."""

    def __init__(self, n_items: int, batch_size: int, batches: int, seed: int, *, n_real: int = 0,
                 real_batch_size: int = 0):
        super().__init__(n_items, batch_size, batches, seed)
        self.n_real, self.real_batch_size = n_real, real_batch_size if n_real else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = seeded_generator(self.seed, self.epoch)
        need = self.batches * self.batch_size
        perms = [torch.randperm(self.n_starts, generator=g) for _ in range(-(-need // self.n_starts))]
        items = torch.cat(perms)[:need].view(self.batches, self.batch_size)
        real = torch.randint(max(1, self.n_real), (self.batches, self.real_batch_size), generator=g)
        yield from zip(items, real)


# --- training ----------------------------------------------------------------------------------------


class PreferenceTuning(L.LightningModule):
    """The policy (the model being tuned, a submodule: the one copy in memory) and its preference loss.

    Logs train_loss and, for DPO, reward_margin (mean beta * margin of the pairs) and reward_accuracy
    (the share of pairs whose chosen text has the higher implicit reward); for KTO, kl (the z0 estimate
    before clamping) and reward_liked / reward_disliked; with an SFT anchor, sft_loss. Its state_dict is
    the policy's (HFCausalLM under LoRA: the adapters), so checkpoints and resume work as for the policy.
    """

    def __init__(self, policy: L.LightningModule, method: str = "dpo", *, beta: float = 0.1,
                 desirable_weight: float = 1.0, undesirable_weight: float = 1.0, sft_weight: float = 0.0):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.policy = policy
        self.method, self.beta, self.sft_weight = method, beta, sft_weight
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # no dropout: the policy at step 0 is exactly the reference (module doc). Eval mode changes the
        # forward only, not the gradients; set here because Lightning keeps, and checks, the mode it finds.
        self.policy.eval()

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        # the policy's own state_dict (not nn.Module's recursion, which would skip HFCausalLM's adapter-only one)
        return {f"{prefix}policy.{k}": v for k, v in self.policy.state_dict(keep_vars=keep_vars).items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        inner = {k.removeprefix("policy."): v for k, v in state_dict.items()}
        return self.policy.load_state_dict(inner, strict=strict)

    def _log(self, name: str, value: torch.Tensor, n: int) -> None:
        self.log(name, value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logratios = sequence_log_probs(self.policy, batch["seqs"]) - batch["ref"]
        if self.method == "dpo":
            n = len(logratios) // 2
            loss, margin = dpo_loss(logratios[:n], logratios[n:], self.beta)
            self._log("reward_margin", margin.mean(), n)
            self._log("reward_accuracy", (margin > 0).float().mean(), n)
        else:
            n, labels = len(logratios), batch["label"]
            with torch.no_grad():  # z0 is detached: no graph for the mismatched pairs
                kl = (sequence_log_probs(self.policy, batch["kl_seqs"]) - batch["kl_ref"]).mean()
                if self.trainer.world_size > 1:
                    kl = self.all_gather(kl).mean()
            loss = kto_loss(logratios, labels, kl, self.beta, desirable_weight=self.desirable_weight,
                            undesirable_weight=self.undesirable_weight)
            self._log("kl", kl, n)
            rewards = self.beta * logratios.detach()
            for name, side in (("reward_liked", labels > 0), ("reward_disliked", labels < 0)):
                if side.any():
                    self._log(name, rewards[side].mean(), int(side.sum()))
        if self.sft_weight and "real" in batch:
            real = batch["real"]
            tokens = (real["labels"][:, 1:] != IGNORE).sum().clamp_min(1)
            sft = -sequence_log_probs(self.policy, real).sum() / tokens
            self._log("sft_loss", sft, len(real["labels"]))
            loss = loss + self.sft_weight * sft
        self._log("train_loss", loss, n)
        return loss

    def configure_optimizers(self):
        return self.policy.configure_optimizers()  # the model's own optimizer and schedule (its config)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else self.policy.config.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")


def _check_examples(examples: Sequence[Example], name: str) -> list[Example]:
    out = []
    for i, ex in enumerate(examples):
        if not (isinstance(ex, tuple | list) and len(ex) == 3 and isinstance(ex[2], str) and ex[2].strip()):
            raise ValueError(f"{name}[{i}]: expected (category, prompt, text) with a non-empty text, got {ex!r:.120}")
        out.append(tuple(ex))
    return out


def _encode_all(encode: Callable[..., Encoded], examples: Sequence[Example], name: str,
                indices: Sequence[int] | None = None) -> list[Encoded]:
    """Encoded examples; `indices`: their places in the caller's list, for the error message."""
    out = []
    for k, ex in enumerate(examples):
        try:
            out.append(encode(*ex))
        except KeyError as e:  # the GPT tokenizer's unknown category
            raise ValueError(f"{name}[{k if indices is None else indices[k]}]: {e.args[0]}") from None
    return out


def finetune_text_preferences(
    model: torch.nn.Module,
    examples: Sequence[Example],
    scores: Any,
    *,
    method: str = "dpo",
    beta: float = 0.1,
    steps: int = 24,
    batch_size: int = 8,
    lr: float | None = None,
    min_gap: float = 1.0,
    max_pairs_per_group: int | None = None,
    liked: float = 4.0,
    disliked: float = 2.0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    groups: Sequence[Any] | None = None,
    tokenizer: Any = None,
    reference: str = "start",
    sft_weight: float = 0.0,
    real: Sequence[Example] | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> torch.nn.Module:
    """A copy of a text generator tuned on preferences by DPO or KTO (module doc); the original is untouched.

    `model`: an HFCausalLM (its LoRA adapters train, or all weights without LoRA) or the from-scratch
    GPT (all weights; `tokenizer`, its tokenizer, required). `examples`: (category, prompt, text), one
    `score` each (ratings or reward-model predictions, higher is better).
    DPO: pairs within `groups` (default: the brief (category, prompt) of each example) whose scores differ
    by >= `min_gap` (`preference_pairs`; a pair with the same text on both sides is dropped); `batch_size`
    pairs per batch. KTO: examples scored >= `liked` are desirable, <= `disliked` undesirable, the others
    unused (`kto_labels`); `batch_size` examples per batch, weighted by desirable_weight /
    undesirable_weight (lambda_D, lambda_U). `beta`: the strength of the pull towards the reference.
    `reference`: "start" (the model given, the default) or "base" (a LoRA model's base without adapters).
    `sft_weight` > 0 adds that times the SFT loss (token mean) of `batch_size` examples drawn uniformly
    from `real` (the company's own copy) to every batch: an anchor on real text.
    `steps` batches; AdamW and the model's warmup + cosine schedule re-targeted from `lr` (default: half
    the model's learning rate) to lr / 10 over the run. `run_dir`, `seed` and `fit_kwargs` as for
    finetune.finetune_image_generator (a run_dir holding a finished run gives that run back).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not beta > 0 or sft_weight < 0:
        raise ValueError(f"beta must be > 0 and sft_weight >= 0, got {beta} and {sft_weight}")
    encode = _encoder(model, tokenizer)
    if reference == "base" and not (isinstance(model, HFCausalLM) and model.config.lora):
        raise ValueError('reference="base" needs a LoRA model (its base is the model without adapters)')
    examples = _check_examples(examples, "examples")
    s = _scores(scores)
    if len(s) != len(examples):
        raise ValueError(f"{len(s)} scores for {len(examples)} examples")
    if sft_weight > 0 and not real:
        raise ValueError(f"sft_weight={sft_weight} asks for an SFT anchor on real examples, but none were given")
    real = _check_examples(real, "real") if sft_weight > 0 else []

    if method == "dpo":
        groups = [(c, p) for c, p, _ in examples] if groups is None else list(groups)
        members = _members(groups, len(s))
        found = preference_pairs(groups, s, min_gap=min_gap, max_pairs_per_group=max_pairs_per_group)
        pairs = [(c, r) for c, r in found if examples[c][2] != examples[r][2]]
        if not pairs:
            raise ValueError(_why_no_pairs(members, s, min_gap, len(found)))
        used = sorted({i for pair in pairs for i in pair})
        at = {i: k for k, i in enumerate(used)}
        sequences = _encode_all(encode, [examples[i] for i in used], "examples", used)
        items, labels = torch.tensor([(at[c], at[r]) for c, r in pairs]), None
        what = f"{len(pairs)} pairs from {len(used)} of {len(examples)} examples in {len(members)} groups"
    else:
        tags = kto_labels(s, liked=liked, disliked=disliked)
        used = np.flatnonzero(tags).tolist()
        if not used:
            span = f"they range {s.min():g}..{s.max():g}" if len(s) else "no examples were given"
            raise ValueError(f"KTO found no liked (score >= {liked:g}) or disliked (<= {disliked:g}) example "
                             f"among {len(s)}: {span}")
        # mismatched pairs for z0: each brief with the text of the next example in a seeded cycle
        cycle = torch.randperm(len(used), generator=seeded_generator(seed, KTO_CYCLE)).tolist()
        partner = {cycle[k]: cycle[(k + 1) % len(cycle)] for k in range(len(cycle))}
        mismatched = [(*examples[used[k]][:2], examples[used[partner[k]]][2]) for k in range(len(used))]
        sequences = _encode_all(encode, [examples[i] for i in used], "examples", used)
        sequences += _encode_all(encode, mismatched, "examples")  # the same briefs and texts: they encode
        items = torch.tensor([(k, len(used) + k) for k in range(len(used))])
        labels = torch.from_numpy(tags[used])
        what = f"{int((labels > 0).sum())} liked and {int((labels < 0).sum())} disliked of {len(examples)} examples"
    real_encoded = _encode_all(encode, real, "real")

    policy = _clone(model)
    pad_id = _pad_id(model, tokenizer)
    ref = _reference_log_probs(policy, sequences, pad_id, base=reference == "base", fit_kwargs=fit_kwargs)
    if log:
        log(f"{method.upper()} on {what}; reference log-probs of {len(sequences)} sequences computed once")
    data = PreferenceData(method, sequences, ref, items, pad_id, labels, real_encoded)
    sampler = PreferenceBatches(len(items), batch_size, steps, seed, n_real=len(real_encoded),
                                real_batch_size=batch_size)
    loader = DataLoader(data, sampler=sampler, batch_size=None)

    tuning = PreferenceTuning(policy, method, beta=beta, desirable_weight=desirable_weight,
                              undesirable_weight=undesirable_weight, sft_weight=sft_weight)
    fit_retargeted(tuning, policy, loader, schedule_overrides(policy.config, lr, steps), seed=seed, run_dir=run_dir,
                   log=log, fit_kwargs=fit_kwargs)
    return policy.cpu().eval()
