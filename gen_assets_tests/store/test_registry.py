"""The model registry: candidates, promotion and rollback with who/when, and what the report reads."""

import duckdb
import pytest

from gen_assets.feedback.ingest import ingest_pending, record_feedback_version
from gen_assets.feedback.landing import FeedbackPaths
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_schema(c)
    yield c
    c.close()


def register(con, version, modality="image", **extra):
    registry.register_model(con, model_version=version, modality=modality, arch="dcgan", config={"a": 1},
                            input_versions={"clean_images": "c", **extra}, checkpoint_path=f"/m/{version}.pt",
                            checkpoint_sha="s" + version, details={"categories": ["0", "1"]})


def statuses(con):
    return dict(con.execute("SELECT model_version, status FROM models").fetchall())


def test_a_registered_model_is_a_candidate_until_promoted(con):
    register(con, "v1")
    assert statuses(con) == {"v1": "candidate"} and registry.champion(con, "image") is None
    [entry] = registry.latest_models(con)  # before any promotion the report shows the newest model
    assert entry["version"] == "v1" and entry["status"] == "candidate"
    assert registry.promote(con, "v1", actor="ana", reason="first") is None
    champion = registry.champion(con, "image")
    assert champion["model_version"] == "v1" and champion["details"] == {"categories": ["0", "1"]}


def test_promotion_retires_the_old_champion_and_is_recorded_with_who_and_when(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v2", feedback="fb1")
    assert registry.promote(con, "v2", actor="dagster:run-1", reason="fid better") == "v1"
    assert statuses(con) == {"v1": "retired", "v2": "champion"}
    [last, first] = registry.promotion_history(con, "image")
    assert (last["action"], last["model_version"], last["previous_version"], last["actor"]) == (
        "promote", "v2", "v1", "dagster:run-1")
    assert last["reason"] == "fid better" and last["acted_at"] >= first["acted_at"]
    assert registry.get_model(con, "v2")["feedback_version"] == "fb1"


def test_registering_again_keeps_the_status(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v1")  # an unchanged nightly run registers the reused model again
    assert statuses(con) == {"v1": "champion"}


def test_the_report_shows_the_champion_not_a_newer_candidate(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    registry.record_metrics(con, model_version="v1", modality="image", metrics={"fid": 2.0}, batch_id="b1")
    register(con, "v2")
    [entry] = registry.latest_models(con)
    assert entry["version"] == "v1" and entry["status"] == "champion" and entry["metrics"] == {"fid": 2.0}
    summary = registry.registry_summary(con)["image"]
    assert summary["champion"]["version"] == "v1"
    assert [c["version"] for c in summary["candidates"]] == ["v2"]


def test_promote_is_one_transaction(con, monkeypatch):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v2")

    def broken_log(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_log", broken_log)
    with pytest.raises(RuntimeError):
        registry.promote(con, "v2", actor="ana", reason="x")
    assert statuses(con) == {"v1": "champion", "v2": "candidate"}


def test_promote_refuses_unknown_and_pruned_models(con):
    with pytest.raises(KeyError, match="no-such"):
        registry.promote(con, "no-such", actor="ana", reason="x")
    register(con, "v1")
    con.execute("UPDATE models SET pruned_at = now()")
    with pytest.raises(ValueError, match="pruned"):
        registry.promote(con, "v1", actor="ana", reason="x")


def test_rollback_restores_the_previous_champion_and_remembers_who_demoted(con):
    for v in ("v1", "v2", "v3"):
        register(con, v)
        registry.promote(con, v, actor="dagster:run", reason="better")
    assert registry.rollback(con, "image", actor="bo", reason="customers complained") == ("v2", "v3")
    assert statuses(con) == {"v1": "retired", "v2": "champion", "v3": "retired"}
    assert registry.demoted_by_person(con, "v3")["actor"] == "bo"
    assert registry.demoted_by_person(con, "v2") is None
    assert registry.rollback(con, "image", actor="bo", reason="again") == ("v1", "v2")
    assert registry.demoted_by_person(con, "v2")["actor"] == "bo"
    registry.promote(con, "v3", actor="cy", reason="fixed upstream")  # a person brings v3 back
    assert registry.demoted_by_person(con, "v3") is None
    with pytest.raises(ValueError, match="no text champion"):
        registry.rollback(con, "text", actor="bo", reason="x")


def test_rollback_needs_a_previous_champion(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    with pytest.raises(ValueError, match="no previous champion"):
        registry.rollback(con, "image", actor="bo", reason="x")


def test_metric_trend_counts_a_batch_evaluated_twice_once(con):
    for version, batch, fid in (("v1", "b1", 3.0), ("v1", "b1", 2.5), ("v2", "b2", 2.0)):
        registry.record_metrics(con, model_version=version, modality="image", metrics={"fid": fid, "class_accuracy": 0.9},
                                batch_id=batch)
    trend = registry.metric_trend(con, "image")
    assert [(r["model_version"], r["fid"]) for r in trend] == [("v1", 2.5), ("v2", 2.0)]


def rated_batch(tmp_path, con, batch_id, version):
    """A batch of two image samples (<batch_id>-00000, -00001) generated by `version`."""
    table = batch_table(batch_id=batch_id, model_version=version, modality="image", categories=["0", "1"],
                        contents=[b"\x89PNG0", b"\x89PNG1"], seed=0)
    path = write_batch(table, tmp_path / "batches", batch_id)
    registry.register_batch(con, batch_id=batch_id, modality="image", model_version=version, path=str(path),
                            grid_path=None, n_samples=2)


def ingest_ratings(paths, con, name, sample_id):
    (paths.incoming / name).write_text(f"sample_id,rating\n{sample_id},5\n")
    [result] = ingest_pending(con, paths.root)
    assert result.rows_ok == 1


def test_lineage_lists_exactly_the_files_of_the_feedback_versions_the_chain_was_tuned_on(tmp_path, con):
    paths = FeedbackPaths(tmp_path / "feedback").ensure()
    register(con, "base")
    rated_batch(tmp_path, con, "b0", "base")
    ingest_ratings(paths, con, "a.csv", "b0-00000")
    version_a = record_feedback_version(con)
    # b.csv comes in while the model is tuned on version_a: it is older than the model, and not in it
    ingest_ratings(paths, con, "b.csv", "b0-00001")
    register(con, "tuned", base_model="base", feedback=version_a)
    rated_batch(tmp_path, con, "b1", "tuned")

    info = registry.lineage(con, "b1-00000")
    assert [m["version"] for m in info["models"]] == ["tuned", "base"]
    assert [f["file"] for f in info["feedback_files"]] == ["a.csv"]
    assert info["unrecorded_feedback_versions"] == []

    # tuned again on a version with both files: its samples name both, once each
    version_ab = record_feedback_version(con)
    register(con, "tuned2", base_model="tuned", feedback=version_ab)
    rated_batch(tmp_path, con, "b2", "tuned2")
    assert [f["file"] for f in registry.lineage(con, "b2-00000")["feedback_files"]] == ["a.csv", "b.csv"]
    assert [f["file"] for f in registry.lineage(con, "b1-00001")["feedback_files"]] == ["a.csv"]


def test_lineage_names_a_feedback_version_whose_files_were_never_recorded(tmp_path, con):
    register(con, "base")
    register(con, "tuned", base_model="base", feedback="0123456789abcdef")  # tuned before versions were recorded
    rated_batch(tmp_path, con, "b1", "tuned")
    info = registry.lineage(con, "b1-00000")
    assert info["feedback_files"] == [] and info["unrecorded_feedback_versions"] == ["0123456789abcdef"]


def test_an_experiment_makes_a_challenger_and_ends_in_one_decision(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v2")
    eid = registry.start_experiment(con, "v2", allocation="bandit", challenger_share=0.3, actor="run-1",
                                    reason="passed the gate")
    assert statuses(con) == {"v1": "champion", "v2": "challenger"}
    running = registry.running_experiments(con)["image"]
    assert (running["experiment_id"], running["champion"], running["challenger"]) == (eid, "v1", "v2")
    assert registry.registry_summary(con)["image"]["experiments"][0]["status"] == "running"
    registry.record_experiment_figures(con, eid, {"p_challenger_beats": 0.5})
    assert registry.running_experiments(con)["image"]["figures"] == {"p_challenger_beats": 0.5}
    # promoted on its figures: the challenger is champion, the promotion says which experiment
    assert registry.end_experiment(con, eid, outcome="promote", actor="run-2", reason=f"experiment {eid}: won",
                                   figures={"p_challenger_beats": 0.99}) == "v2"
    assert statuses(con) == {"v1": "retired", "v2": "champion"}
    assert registry.running_experiments(con) == {}
    done = registry.experiment_of(con, "v2")
    assert done["status"] == "promoted" and done["figures"] == {"p_challenger_beats": 0.99}
    assert registry.promotion_history(con, "image", limit=1)[0]["reason"] == f"experiment {eid}: won"
    with pytest.raises(ValueError, match="promoted already, not running"):
        registry.end_experiment(con, eid, outcome="retire", actor="x", reason="late", figures={})


def test_a_retired_or_replaced_challenger_goes_back_to_retired_and_the_champion_stays(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v2")
    register(con, "v3")
    first = registry.start_experiment(con, "v2", allocation="fixed", challenger_share=0.5, actor="r", reason="gate")
    second = registry.start_experiment(con, "v3", allocation="bandit", challenger_share=0.5, actor="r", reason="gate")
    assert registry.experiment_of(con, "v2")["status"] == "replaced"  # one experiment per modality at a time
    assert registry.running_experiments(con)["image"]["experiment_id"] == second != first
    registry.end_experiment(con, second, outcome="retire", actor="r", reason="lost", figures={})
    assert statuses(con) == {"v1": "champion", "v2": "retired", "v3": "retired"}
    for bad, message in ((dict(allocation="random", challenger_share=0.5), "allocation"),
                         (dict(allocation="fixed", challenger_share=1.0), "challenger_share")):
        with pytest.raises(ValueError, match=message):
            registry.start_experiment(con, "v3", actor="r", reason="x", **bad)
    with pytest.raises(ValueError, match="is the champion already"):
        registry.start_experiment(con, "v1", allocation="fixed", challenger_share=0.5, actor="r", reason="x")
    with pytest.raises(KeyError, match="no experiment"):
        registry.end_experiment(con, "nope", outcome="stop", actor="r", reason="x", figures={})


def test_figures_of_an_arm_without_impressions_are_stored_as_null(con):
    register(con, "v1")
    registry.promote(con, "v1", actor="ana", reason="first")
    register(con, "v2")
    eid = registry.start_experiment(con, "v2", allocation="bandit", challenger_share=0.5, actor="r", reason="gate")
    registry.record_experiment_figures(con, eid, {"arms": [{"arm": "champion", "rate": float("nan")}], "lift": 1.0})
    assert registry.running_experiments(con)["image"]["figures"] == {"arms": [{"arm": "champion", "rate": None}],
                                                                     "lift": 1.0}
