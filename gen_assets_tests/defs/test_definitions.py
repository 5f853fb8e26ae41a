"""The whole definitions graph, snapshotted: an accidental change to it shows up in review."""

import dagster as dg
import pytest

from gen_assets.definitions import build_definitions
from gen_assets.settings import PROFILES, Paths, profile_run_config

# asset -> (group: its lane, stage tag, parents)
EXPECTED_ASSETS = {
    "raw_images": ("image", "collection", set()),
    "clean_images": ("image", "cleaning", {"raw_images"}),
    "image_evaluator": ("image", "training", {"clean_images"}),
    "image_generator": ("image", "training", {"clean_images", "image_evaluator"}),
    "image_reward_model": ("image", "feedback", {"feedback", "events", "image_evaluator", "clean_images"}),
    "tuned_image_generator": ("image", "training", {"image_generator", "image_reward_model", "image_evaluator",
                                                    "feedback", "clean_images"}),
    "image_champion": ("image", "promotion", {"tuned_image_generator", "image_evaluator", "clean_images",
                                              "experiments"}),
    "generated_images": ("image", "generation", {"image_champion"}),
    "curated_images": ("image", "curation", {"generated_images", "image_reward_model", "image_evaluator",
                                             "clean_images"}),
    "image_metrics": ("image", "evaluation", {"generated_images", "image_champion", "image_evaluator", "clean_images"}),
    "raw_texts": ("text", "collection", set()),
    "clean_texts": ("text", "cleaning", {"raw_texts"}),
    "text_generator": ("text", "training", {"clean_texts"}),
    "text_reward_model": ("text", "feedback", {"feedback", "events", "text_generator"}),
    "tuned_text_generator": ("text", "training", {"text_generator", "text_reward_model", "feedback", "clean_texts"}),
    "text_champion": ("text", "promotion", {"tuned_text_generator", "text_generator", "text_reward_model",
                                            "clean_texts", "experiments"}),
    "generated_texts": ("text", "generation", {"text_champion", "clean_texts"}),
    "curated_texts": ("text", "curation", {"generated_texts", "text_reward_model", "text_generator", "clean_texts"}),
    "text_metrics": ("text", "evaluation", {"generated_texts", "text_champion", "clean_texts"}),
    "feedback": ("feedback", "feedback", set()),
    "events": ("feedback", "feedback", set()),
    "experiments": ("feedback", "feedback", {"events"}),
}
EXPECTED_CHECKS = {
    *{(t, f"{t}_{c}") for t in ("clean_images", "clean_texts")
      for c in ("no_duplicates", "no_nulls", "split_ratios", "quarantine_rate")},
    ("image_metrics", "image_quality"),
    ("text_metrics", "text_quality"),
    ("feedback", "feedback_quarantine_share"),
    ("feedback", "feedback_known_samples"),
    ("image_champion", "quality_bar"),
    ("text_champion", "quality_bar"),
    ("image_reward_model", "predicts"),
    ("text_reward_model", "predicts"),
}


def build(tmp_path):
    return build_definitions(Paths(tmp_path), timezone="Europe/Berlin")


def test_definitions_load_and_validate(tmp_path):
    defs = build(tmp_path)
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_snapshot(tmp_path):
    graph = build(tmp_path).resolve_asset_graph()
    got = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        got[key.to_user_string()] = (node.group_name, node.tags.get("stage"),
                                     {p.to_user_string() for p in node.parent_keys})
    assert got == EXPECTED_ASSETS
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS
    # checks observe; only a reward model that does not predict blocks what follows it (a refused candidate is
    # the champion asset's normal outcome)
    blocking = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys
                if graph.get_check_spec(k).blocking}
    assert blocking == {("image_reward_model", "predicts"), ("text_reward_model", "predicts")}


def test_every_asset_has_code_version_modality_tag_and_owners(tmp_path):
    graph = build(tmp_path).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.code_version, key
        assert node.tags.get("modality") in {"image", "text", "shared"}, key
        assert node.owners == ["team:gen-assets"], key


def test_owners_come_from_the_environment(monkeypatch):
    from gen_assets.defs.handles import lane

    monkeypatch.setenv("GEN_ASSETS_OWNERS", "ana@example.com, team:ml-platform")
    spec = dg.AssetSpec("x", **lane("image", "training"))
    assert spec.owners == ["ana@example.com", "team:ml-platform"]
    monkeypatch.setenv("GEN_ASSETS_OWNERS", "ana")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="email address or a team"):
        dg.AssetSpec("x", **lane("image", "training"))


def test_jobs_select_a_lane_and_the_shared_feedback(tmp_path):
    defs = build(tmp_path)
    for modality in ("image", "text"):
        job = defs.resolve_job_def(f"{modality}_job")
        lane = {name for name, (group, _, _) in EXPECTED_ASSETS.items() if group == modality}
        assert set(job.graph.node_dict) & set(EXPECTED_ASSETS) == lane | {"feedback", "events", "experiments"}, modality


def test_jobs_schedule_and_timezone(tmp_path):
    defs = build(tmp_path)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"image_job", "text_job", "nightly_job", "retrain_job"}
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.job_name == "nightly_job"
    assert schedule.tags == {"gen_assets/profile": "demo", "gen_assets/modality": "all"}  # no run config: demo
    prune = defs.resolve_schedule_def("prune_schedule")
    assert (prune.cron_schedule, prune.execution_timezone, prune.job_name) == ("0 4 * * *", "Europe/Berlin", "prune_job")
    nightly = defs.resolve_job_def("nightly_job")
    assert set(EXPECTED_ASSETS) <= set(nightly.graph.node_dict)


def test_profiles_are_valid_run_config_for_every_job(tmp_path):
    defs = build(tmp_path)
    for job_name in ("image_job", "text_job", "nightly_job", "retrain_job"):
        job = defs.resolve_job_def(job_name)
        for profile in PROFILES:
            config = profile_run_config(profile, set(job.graph.node_dict))
            assert dg.validate_run_config(job, config), (job_name, profile)


def test_feedback_sensor_is_on_by_default_and_retrains_one_modality_at_a_time(tmp_path):
    from gen_assets.defs.jobs import RETRAIN_ASSETS

    defs = build(tmp_path)
    sensor = defs.resolve_sensor_def("feedback_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
    retrain = defs.resolve_job_def("retrain_job")
    for modality, keys in RETRAIN_ASSETS.items():
        assert set(keys) <= set(retrain.graph.node_dict), modality
        assert keys[:3] == ["feedback", "events", "experiments"] and keys[-1].endswith("_metrics")


def test_training_assets_share_the_gpu_pool(tmp_path):
    graph = build(tmp_path).resolve_asset_graph()
    pooled = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).pools == {"gpu"}}
    assert pooled == {"image_evaluator", "image_generator", "text_generator", "tuned_image_generator",
                      "tuned_text_generator"}


def test_executor_comes_from_the_environment(tmp_path, monkeypatch):
    from gen_assets.definitions import executor_from_env

    monkeypatch.delenv("GEN_ASSETS_EXECUTOR", raising=False)
    assert executor_from_env() is None  # Dagster's multiprocess default
    monkeypatch.setenv("GEN_ASSETS_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="multiprocess, k8s or celery"):
        executor_from_env()
    monkeypatch.setenv("GEN_ASSETS_EXECUTOR", "k8s")
    pytest.importorskip("dagster_k8s", reason="the k8s extra is not installed: pip install .[k8s]")
    assert executor_from_env().name == "k8s"


def test_trainer_comes_from_the_environment(monkeypatch):
    from gen_assets.defs.resources import trainer_from_env

    monkeypatch.setenv("GEN_ASSETS_STRATEGY", "ddp_spawn")
    monkeypatch.setenv("GEN_ASSETS_DEVICES", "2")
    monkeypatch.setenv("GEN_ASSETS_NUM_NODES", "1")
    kwargs = trainer_from_env().fit_kwargs()
    assert (kwargs["strategy"], kwargs["devices"], kwargs["num_nodes"]) == ("ddp_spawn", 2, 1)
    assert kwargs["logger"] == "csv"  # the default: metrics.csv in the run folder
    monkeypatch.setenv("GEN_ASSETS_LOGGER", "tensorboard")
    assert trainer_from_env().fit_kwargs()["logger"] == "tensorboard"
    monkeypatch.setenv("GEN_ASSETS_LOGGER", "wandb")
    with pytest.raises(ValueError, match="GEN_ASSETS_LOGGER must be one of csv, tensorboard, mlflow, none"):
        trainer_from_env()
    monkeypatch.delenv("GEN_ASSETS_LOGGER")
    monkeypatch.setenv("GEN_ASSETS_NUM_NODES", "two")
    with pytest.raises(ValueError, match="GEN_ASSETS_NUM_NODES"):
        trainer_from_env()


def test_warehouse_settings_come_from_the_environment(monkeypatch, tmp_path):
    from gen_assets.defs.resources import warehouse_from_env
    from gen_assets.settings import Paths

    paths = Paths(tmp_path).ensure()
    with warehouse_from_env(paths).get_connection() as con:  # nothing set: DuckDB's own defaults
        default_limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    monkeypatch.setenv("GEN_ASSETS_DUCKDB_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("GEN_ASSETS_DUCKDB_THREADS", "1")
    with warehouse_from_env(paths).get_connection() as con:
        limit, threads, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')"
        ).fetchone()
    assert limit == "286.1 MiB" != default_limit and threads == 1
    assert spill == str(paths.warehouse) + ".tmp"  # where the cleaning spills beyond the limit
    monkeypatch.setenv("GEN_ASSETS_DUCKDB_THREADS", "many")
    with pytest.raises(ValueError, match="GEN_ASSETS_DUCKDB_THREADS"):
        warehouse_from_env(paths)


def test_inference_on_a_gpu_uses_tf32_matmuls(monkeypatch):
    import torch

    from gen_assets.defs.handles import inference_device

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert inference_device() == "cpu" and torch.get_float32_matmul_precision() == "highest"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert inference_device() == "cuda" and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_exploratory_share_is_a_share_of_k():
    from gen_assets.defs.assets.curated import explore_count

    assert [explore_count(s, 10) for s in (0.0, 0.2, 0.25, 1.0)] == [0, 2, 3, 10]
    assert explore_count(0.2, 5) == 1
    with pytest.raises(dg.Failure, match=r"explore_share must be in \[0, 1\], got 1.5"):
        explore_count(1.5, 10)
