"""Real DDP on CPU: fit() with strategy="ddp_spawn", 2 processes talking over gloo.

Both ranks end with the same weights (gradients are all-reduced every step), the process that called
fit() gets them back with the run's history and best checkpoint, and only rank 0 writes into the run
folder (Lightning's checkpointing is rank-0 only; the project writes model files and registry rows
after fit() returns, in the calling process only).
"""

import hashlib
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed

from gen_assets.training.image_data import image_loaders, images_to_tensor
from gen_assets.models.dcgan import DCGAN, DCGANConfig
from gen_assets.models.evaluator import EvaluatorConfig, ImageEvaluator, frechet_distance
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.training.text_data import text_loaders
from gen_assets.training.fit import fit

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend for CPU DDP")


def weights_hash(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """Hash of the state dict, less the entries whose names end with one of `skip`."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        if name.endswith(skip):
            continue
        h.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankReport(L.Callback):
    """Each rank writes its world size and final weights' hash to `folder` (outside the run folder),
    then the hash less the entries in `per_rank` (state each rank keeps for itself)."""

    def __init__(self, folder: str, per_rank: tuple[str, ...] = ()):
        self.folder = folder
        self.per_rank = per_rank

    def on_train_end(self, trainer, pl_module):
        report = f"{trainer.world_size} {weights_hash(pl_module)} {weights_hash(pl_module, self.per_rank)}"
        (Path(self.folder) / f"rank{trainer.global_rank}.txt").write_text(report)


class NoiseReport(L.Callback):
    """Each rank writes the first numbers its torch generator draws when training starts."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_start(self, trainer, pl_module):
        (Path(self.folder) / f"noise{trainer.global_rank}.txt").write_text(repr(torch.rand(4).tolist()))


def test_two_cpu_processes_agree_and_only_rank_zero_writes(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16, learning_rate=1e-2,
                          warmup_iters=2, lr_decay_iters=8))
    ids = torch.randint(0, 13, (400,), generator=torch.Generator().manual_seed(1))
    train_loader, val_loader = text_loaders(ids, ids[:120], block_size=16, batch_size=4, seed=0, iters_per_epoch=4,
                                            val_batches=2)
    reports, run_dir = tmp_path / "reports", tmp_path / "run"
    reports.mkdir()
    result = fit(model, train_loader, val_loader, run_dir=run_dir, max_epochs=2, monitor="val_loss", seed=0,
                 accelerator="cpu", devices=2, strategy="ddp_spawn",
                 extra_callbacks=[RankReport(str(reports)), NoiseReport(str(reports))])

    rank0, rank1 = ((reports / f"rank{r}.txt").read_text().split() for r in (0, 1))
    noise0, noise1 = ((reports / f"noise{r}.txt").read_text() for r in (0, 1))
    assert noise0 != noise1, "each rank draws its own noise (GAN latents, dropout masks)"
    assert rank0[0] == rank1[0] == "2", "two processes took part"
    assert rank0[1] == rank1[1], "both ranks end with the same weights"
    assert weights_hash(model) == rank0[1], "the caller got rank 0's weights back"
    assert len(result.history) == 2 and all("val_loss" in row for row in result.history)
    assert result.best_path and Path(result.best_path).is_file() and result.best_score is not None
    assert result.epochs == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.ckpt", "last.ckpt", "logs"]  # one copy, rank 0's
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["version_0"]


def test_the_dcgan_survives_pickling_with_its_spectral_norm_state():
    # ddp_spawn sends the module to its ranks pickled; the discriminator's spectral-norm layers cannot
    # be pickled as objects and travel as config + state dict
    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(8, 1, 3, latent_dim=8, width=4, d_width=4))
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 2, 1, 0])
    model.discriminator(x, y)  # one power iteration: u and v no longer those of the initialisation
    model.discriminator.out.eval()  # a layer out of step with its parent keeps its mode

    rng = torch.get_rng_state()
    copy = pickle.loads(pickle.dumps(model))
    assert torch.equal(torch.get_rng_state(), rng), "unpickling draws no random numbers"
    before, after = model.state_dict(), copy.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert any(k.endswith("_u") for k in before), "the power iteration's vectors are in the state dict"
    assert [m.training for m in copy.modules()] == [m.training for m in model.modules()]
    assert [p.requires_grad for p in copy.parameters()] == [p.requires_grad for p in model.parameters()]

    assert torch.equal(copy.discriminator(x, y), model.discriminator(x, y))  # a training-mode step of u, v
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(copy.generator(z, y), model.generator(z, y))
    assert torch.equal(copy.generate(y, seed=2), model.generate(y, seed=2))
    after, before = copy.state_dict(), model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before), "and both moved the same way"


def test_the_image_generator_trains_on_two_cpu_processes(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=64)
    evaluator = ImageEvaluator(EvaluatorConfig(8, 1, 3, num_features=8, width=4)).eval()
    model = DCGAN(DCGANConfig(8, 1, 3, latent_dim=8, width=4, d_width=4), evaluator=evaluator)
    train_loader, val_loader = image_loaders(x[:48], y[:48], x[48:], y[48:], batch_size=8, seed=0)
    reports, run_dir = tmp_path / "reports", tmp_path / "run"
    reports.mkdir()
    # the generator's batch-norm statistics are each rank's own: DDP hands rank 0's to the other ranks at
    # the start of every step, so those of the last step stay local
    report = RankReport(str(reports), per_rank=("running_mean", "running_var"))
    # plain "ddp_spawn", as GEN_ASSETS_STRATEGY sets it: fit() turns on the unused-parameter search that
    # the GAN's two backward passes per step need
    result = fit(model, train_loader, val_loader, run_dir=run_dir, max_epochs=2, monitor="val_fid", seed=0,
                 accelerator="cpu", devices=2, strategy="ddp_spawn", extra_callbacks=[report])

    rank0, rank1 = ((reports / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0[0] == rank1[0] == "2", "two processes took part"
    assert rank0[2] == rank1[2], "both ranks end with the same weights, spectral-norm vectors included"
    assert weights_hash(model) == rank0[1], "the caller got rank 0's weights back"
    assert len(result.history) == 2 and all({"g_loss", "d_loss", "val_fid"} <= set(row) for row in result.history)
    assert result.best_path and Path(result.best_path).is_file() and result.best_score is not None
    assert result.epochs == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.ckpt", "last.ckpt", "logs"]  # one copy, rank 0's
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["version_0"]

    # val_fid is the FID of the whole val split, not the mean of the ranks' FIDs: recompute it in this
    # process from the final weights (the last validation came after the last step) with the split as
    # the ranks saw it: Lightning's DistributedSampler deals the 16 val images out in turn, so rank r
    # validated images r, r + 2, ... in one batch, generated with the seed of batch 0
    val_x, val_y = images_to_tensor(x[48:]), torch.from_numpy(y[48:])
    real, fake, per_rank = [], [], []
    with torch.no_grad():
        for r in (0, 1):
            xb, yb = val_x[r::2], val_y[r::2]
            real.append(evaluator.features(xb))
            fake.append(evaluator.features(model.generate(yb, seed=model.config.val_samples_seed)))
            per_rank.append(frechet_distance(real[-1], fake[-1]))
    whole = frechet_distance(torch.cat(real), torch.cat(fake))
    assert result.history[-1]["val_fid"] == pytest.approx(whole, rel=1e-4)
    assert abs(sum(per_rank) / 2 - whole) > 1e-3 * whole, "the mean of the ranks' FIDs would be another number"


def test_several_devices_with_the_automatic_strategy_spawn_their_ranks(tmp_path):
    # Lightning's automatic choice for devices > 1 is "ddp", which would re-run this very command (pytest
    # here, the step worker under Dagster) once per rank; fit() spawns the ranks instead
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16))
    ids = torch.randint(0, 13, (400,), generator=torch.Generator().manual_seed(1))
    train_loader, _ = text_loaders(ids, None, block_size=16, batch_size=4, seed=0, iters_per_epoch=2)
    reports = tmp_path / "reports"
    reports.mkdir()
    fit(model, train_loader, None, run_dir=tmp_path / "run", max_epochs=1, seed=0, accelerator="cpu", devices=2,
        strategy="auto", extra_callbacks=[RankReport(str(reports))])
    rank0, rank1 = ((reports / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0[0] == rank1[0] == "2" and rank0[1] == rank1[1] == weights_hash(model)
