"""Promotion: the decision rule, and `review`'s bookkeeping (champion, refusals, rollbacks)."""

import math
from types import SimpleNamespace

import duckdb
import pytest
import torch

from gen_assets.rules import promotion
from gen_assets.store import registry


def test_decide_within_and_beyond_the_tolerance():
    assert promotion.decide("fid", 10.9, 10.0, 0.1).passed
    refused = promotion.decide("fid", 11.5, 10.0, 0.1, champion_version="dcgan-1")
    assert not refused.passed and "dcgan-1" in refused.reason and "+15.0%" in refused.reason
    assert promotion.decide("val_loss", 1.0, 1.2, 0.0).passed  # better always passes
    assert promotion.decide("fid", 50.0, None, 0.1).passed  # the first model has nothing to beat


def test_decide_absolute_bar_and_broken_values():
    assert not promotion.decide("fid", 12.0, 30.0, 0.1, ceiling=11.0, ceiling_label="3x the floor").passed
    assert not promotion.decide("fid", math.nan, 10.0, 0.1).passed
    assert not promotion.decide("val_loss", math.inf, None, 0.1).passed
    with pytest.raises(ValueError):
        promotion.decide("fid", 1.0, 1.0, -0.1)


def test_image_key_metric_ranks_a_copy_of_the_data_above_noise():
    """FID of the real val images themselves ~0; of uniform noise, large."""

    class Copy(torch.nn.Module):  # a "generator" that returns real images of the asked class
        def __init__(self, images):
            super().__init__()
            self.images, self.config = images, SimpleNamespace(num_classes=2)

        def generate(self, labels, seed=None):
            return self.images[: len(labels)]

    class Noise(Copy):
        def generate(self, labels, seed=None):
            return torch.rand((len(labels), 1, 8, 8), generator=torch.Generator().manual_seed(seed or 0))

    class Evaluator(torch.nn.Module):
        config = SimpleNamespace(num_classes=2)

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(64, 6)

        def features(self, x):
            return self.proj(x.flatten(1))

    torch.manual_seed(0)
    val = torch.rand(200, 1, 8, 8) * 0.3
    evaluator = Evaluator()
    same = promotion.image_key_metric(Copy(val), evaluator, val, per_class=100)
    noise = promotion.image_key_metric(Noise(val), evaluator, val, per_class=100)
    assert same < 1e-6 < noise and noise > 0.1


@pytest.fixture
def setup(tmp_path):
    """A warehouse, a fake model loader (path -> its key metric), and `review` with a trivial comparable."""
    database = str(tmp_path / "w.duckdb")
    values: dict[str, float] = {}

    def connect():
        return duckdb.connect(database)

    def run(version: str, value: float, tolerance: float = 0.1, ceiling=None) -> promotion.Review:
        values[f"/m/{version}.pt"] = value
        with connect() as con:
            if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'models'").fetchone()[0] or \
                    not con.execute("SELECT count(*) FROM models WHERE model_version = ?", [version]).fetchone()[0]:
                registry.register_model(con, model_version=version, modality="image", arch="dcgan", config={},
                                        input_versions={}, checkpoint_path=f"/m/{version}.pt", checkpoint_sha=version)
        return promotion.review(connect, version, load=lambda path: path, measure=values.__getitem__,
                                comparable=lambda a, b: None, tolerance=tolerance, actor="dagster:run-1",
                                ceiling=ceiling)

    def state():
        with connect() as con:
            status = dict(con.execute("SELECT model_version, status FROM models").fetchall())
            return status, registry.promotion_history(con, "image")

    return SimpleNamespace(run=lambda *a, **k: run(*a, **k).promoted, review=run, state=state, database=database,
                           values=values)


def test_review_promotes_the_first_and_better_models_and_refuses_a_worse_one(setup):
    assert setup.run("v1", 10.0)
    assert setup.run("v2", 10.5)  # within 10%
    assert not setup.run("v3", 20.0)
    status, history = setup.state()
    assert status == {"v1": "retired", "v2": "champion", "v3": "candidate"}
    refusal = history[0]
    assert refusal["action"] == "refuse" and refusal["model_version"] == "v3" and refusal["actor"] == "dagster:run-1"
    assert "20" in refusal["reason"] and "10.5" in refusal["reason"]
    kept = setup.review("v2", 10.5)  # the champion itself: kept, nothing recorded (an unchanged nightly run)
    assert not kept.promoted and kept.champion["model_version"] == "v2" and kept.champion_value == 10.5
    assert len(setup.state()[1]) == len(history)
    with duckdb.connect(setup.database) as con:
        assert registry.get_model(con, "v3")["key_value"] == 20.0


def test_review_does_not_undo_a_persons_rollback(setup):
    assert setup.run("v1", 10.0) and setup.run("v2", 9.0)
    with duckdb.connect(setup.database) as con:
        registry.rollback(con, "image", actor="bo", reason="complaints")
    assert not setup.run("v2", 9.0)  # better by the metric, but a person took it out
    status, history = setup.state()
    assert status["v1"] == "champion" and "rolled back by bo" in history[0]["reason"]


def test_review_refuses_when_the_champion_changed_while_it_measured(setup, monkeypatch):
    assert setup.run("v1", 10.0)
    real_decide = promotion.decide

    def decide_while_a_person_promotes(*args, **kwargs):  # someone promotes v0 during the measurement
        with duckdb.connect(setup.database) as con:
            registry.register_model(con, model_version="v0", modality="image", arch="dcgan", config={}, input_versions={},
                                    checkpoint_path="/m/v0.pt", checkpoint_sha="v0")
            registry.promote(con, "v0", actor="ana", reason="by hand")
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(promotion, "decide", decide_while_a_person_promotes)
    setup.values["/m/v0.pt"] = 12.0
    outcome = setup.review("v2", 5.0)
    assert not outcome.promoted and outcome.champion["model_version"] == "v0"
    assert outcome.champion_value == 12.0  # the person's champion, measured the same way
    status, history = setup.state()
    assert status["v0"] == "champion" and status["v2"] == "candidate"
    assert "changed from v1 to v0" in history[0]["reason"]


def test_a_broken_champion_measurement_does_not_block_forever():
    assert promotion.decide("val_loss", 1.9, math.nan, 0.02).passed
    assert not promotion.decide("val_loss", 3.0, math.nan, 0.02, ceiling=2.5).passed


def test_a_refused_candidate_keeps_the_champion_with_its_measured_value(setup):
    assert setup.run("v1", 10.0)
    refused = setup.review("v2", 30.0)
    assert not refused.promoted and refused.champion["model_version"] == "v1"
    assert (refused.candidate_value, refused.champion_value) == (30.0, 10.0)
    assert "worse" in refused.reason


def test_a_first_candidate_above_the_bar_leaves_no_champion(setup):
    outcome = setup.review("v1", 50.0, ceiling=(20.0, "3x the floor"))
    assert outcome.champion is None and not outcome.promoted and "above the bar" in outcome.reason
    status, history = setup.state()
    assert status == {"v1": "candidate"} and history[0]["action"] == "refuse"
