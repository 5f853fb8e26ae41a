"""training.sft: weighted training batches seeded by (seed, epoch), every validation example once, and
errors that name the problem. The model is a stand-in with HFCausalLM's example()/collate() contract
(the tiny Llama's run through fit() is in models/test_hf.py)."""

from __future__ import annotations

import pytest
import torch

from gen_assets.training.sft import EncodedExamples, WeightedBatches, sft_loaders

IGNORE = -100


class StandIn:
    """example(): [example number, prompt length] as the prompt, the text's bytes as the body."""

    def __init__(self):
        self.encoded = []

    def example(self, category, prompt, text):
        head = [int(category), len(prompt or "")]
        body = list(text.encode())
        return head + body, [IGNORE] * len(head) + body

    def collate(self, examples):
        width = max(len(ids) for ids, _ in examples)
        ids = torch.zeros(len(examples), width, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE)
        mask = torch.zeros(len(examples), width, dtype=torch.long)
        for r, (i, lab) in enumerate(examples):
            ids[r, : len(i)], labels[r, : len(lab)], mask[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def examples(n: int, offset: int = 0):
    # text lengths vary, not in example order
    return [(str(offset + i), "p" * (i % 3), "x" * (1 + (7 * i) % 11)) for i in range(n)]


def epoch_of(sampler: WeightedBatches, epoch: int) -> torch.Tensor:
    sampler.set_epoch(epoch)
    return torch.stack(list(sampler))


def test_weighted_batches_are_a_function_of_seed_and_epoch():
    w = torch.ones(10)
    s = WeightedBatches(w, batch_size=4, batches=5, seed=3)
    assert len(s) == 5
    e0 = epoch_of(s, 0)
    assert e0.shape == (5, 4) and e0.dtype == torch.long and int(e0.min()) >= 0 and int(e0.max()) < 10
    assert torch.equal(epoch_of(s, 0), e0)  # again: the same batches
    assert torch.equal(epoch_of(WeightedBatches(w, 4, 5, seed=3), 0), e0)  # a new sampler (a resumed run)
    e1 = epoch_of(s, 1)
    assert not torch.equal(e1, e0)  # another epoch, other batches
    assert torch.equal(epoch_of(s, 1), e1) and torch.equal(epoch_of(s, 0), e0)  # any order of epochs
    assert not torch.equal(epoch_of(WeightedBatches(w, 4, 5, seed=4), 0), e0)  # another seed


def test_weighted_batches_follow_the_weights():
    w = torch.tensor([0.0, 1.0, 0.0, 2.0, 1.0, 0.0])
    picks = torch.cat([epoch_of(WeightedBatches(w, 8, 50, seed=0), e).flatten() for e in range(5)])
    counts = torch.bincount(picks, minlength=6)
    assert counts[[0, 2, 5]].tolist() == [0, 0, 0]  # zero weight: never drawn
    assert counts.sum() == 2000
    assert 1.7 < counts[3] / counts[1] < 2.3 and 0.8 < counts[4] / counts[1] < 1.25  # in proportion


def test_sft_loaders_train_batches():
    model = StandIn()
    train, val = sft_loaders(model, examples(6), batch_size=3, batches_per_epoch=4, seed=0, weights=[1, 1, 0, 1, 1, 0])
    assert val is None and len(train) == 4
    batches = list(train)
    assert len(batches) == 4
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "labels"} and b["input_ids"].shape[0] == 3
    drawn = {int(x) for b in batches for x in b["input_ids"][:, 0]}
    assert drawn <= {0, 1, 3, 4}  # the zero-weight examples 2 and 5 are never trained on
    # the loader's batches are its sampler's: Lightning's set_epoch moves them on
    assert torch.equal(torch.stack([b["input_ids"][:, 0] for b in batches]), epoch_of(train.sampler, 0))
    train.sampler.set_epoch(1)
    again = [b["input_ids"][:, 0] for b in train]
    assert not all(torch.equal(a, b["input_ids"][:, 0]) for a, b in zip(again, batches))


def test_the_val_loader_covers_every_example_once():
    model = StandIn()
    val_examples = examples(7, offset=100)
    _, val = sft_loaders(model, examples(2), val_examples, batch_size=2, batches_per_epoch=1, seed=0,
                         val_batch_size=3)
    batches = list(val)
    assert [len(b["input_ids"]) for b in batches] == [3, 3, 1]
    seen = [int(x) for b in batches for x in b["input_ids"][:, 0]]
    assert sorted(seen) == list(range(100, 107))
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]
    assert lengths == sorted(lengths)  # shortest first: little padding
    assert [int(x) for b in val for x in b["input_ids"][:, 0]] == seen  # the same batches every epoch
    # without val_batch_size, batch_size
    _, val = sft_loaders(model, examples(2), val_examples, batch_size=2, batches_per_epoch=1, seed=0)
    assert [len(b["input_ids"]) for b in val] == [2, 2, 2, 1]


def test_sft_loaders_errors_name_the_problem():
    model = StandIn()
    with pytest.raises(ValueError, match="no training examples"):
        sft_loaders(model, [], batch_size=2, batches_per_epoch=1, seed=0)
    with pytest.raises(ValueError, match="batch_size and batches_per_epoch must be >= 1, got 0, 1"):
        sft_loaders(model, examples(2), batch_size=0, batches_per_epoch=1, seed=0)
    with pytest.raises(ValueError, match="batch_size and batches_per_epoch must be >= 1, got 2, 0"):
        sft_loaders(model, examples(2), batch_size=2, batches_per_epoch=0, seed=0)
    for bad in ([1.0], [1.0, -1.0, 1.0], [1.0, float("nan"), 1.0], [0.0, 0.0, 0.0], [1.0, float("inf"), 1.0]):
        with pytest.raises(ValueError, match="weights: expected 3 finite values >= 0 with a positive sum"):
            sft_loaders(model, examples(3), batch_size=2, batches_per_epoch=1, seed=0, weights=bad)
    with pytest.raises(ValueError, match="example 1: expected \\(category, prompt, text\\) with a non-empty text"):
        sft_loaders(model, [("0", None, "fine"), ("1", None, "  ")], batch_size=2, batches_per_epoch=1, seed=0)
    with pytest.raises(ValueError, match="example 0: expected \\(category, prompt, text\\)"):
        sft_loaders(model, [("0", "no text")], batch_size=2, batches_per_epoch=1, seed=0)
    with pytest.raises(ValueError, match="example 2: .*non-empty text"):  # the validation examples too
        sft_loaders(model, examples(2), [("0", None, "a"), ("1", None, "b"), ("2", None, None)], batch_size=2,
                    batches_per_epoch=1, seed=0)


def test_encoded_examples_encode_once():
    model = StandIn()
    data = EncodedExamples(model, examples(4))
    assert len(data) == 4 and data.encoded[2] == model.example(*examples(4)[2])
    batch = data[torch.tensor([3, 1])]
    assert batch["input_ids"][:, 0].tolist() == [3, 1]
    assert (batch["labels"][:, :2] == IGNORE).all()
