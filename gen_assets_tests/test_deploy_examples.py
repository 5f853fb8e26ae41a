"""The deployment examples in docs/deploy/ are valid for the installed Dagster. No cluster, broker or
database is needed:

- the instance files (dagster.yaml, dagster.postgres.yaml) against Dagster's instance schema, and an
  instance built from dagster.yaml;
- the multiprocess run config against nightly_job;
- the k8s and celery run configs against nightly_job with that executor. Kubernetes also gets the Job
  that dagster-k8s builds for a training step and for a light step. These tests are skipped when the
  extra (`pip install .[k8s]` / `.[celery]`) is not installed.

The training steps named in the examples must be exactly the assets that train (the ones that use
the `trainer` resource). A new training asset then fails here until the examples route it to a GPU.
"""

import importlib.util
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

# Private: 1.13 has no public way to validate an instance file without building the instance
# (which, for PostgreSQL storage, needs a database). This function is what DagsterInstance.from_config
# uses to validate.
from dagster._core.instance.config import dagster_instance_config

from gen_assets.defs.handles import TRAINING_POOL
from gen_assets.definitions import build_definitions
from gen_assets.settings import Paths

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
INSTANCE_FILES = ["dagster.yaml", "dagster.postgres.yaml"]
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
GPU = "nvidia.com/gpu"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    return build_definitions(Paths(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def training_steps(defs) -> set[str]:
    steps = {a.key.to_user_string() for a in defs.assets
             if isinstance(a, dg.AssetsDefinition) and "trainer" in a.required_resource_keys}
    assert steps, "no asset uses the trainer resource"
    return steps


def nightly_job_with(defs: dg.Definitions, executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    """nightly_job as the code location defines it, but with `executor` for every job (Definitions(executor=))."""
    job = dg.Definitions.merge(defs, dg.Definitions(executor=executor)).resolve_job_def("nightly_job")
    assert job.executor_def is executor
    return job


def executor_config(job: dg.JobDefinition, run_config: dict) -> dict:
    """The executor's part of the run config, validated against the job and with defaults filled in."""
    return dg.validate_run_config(job, run_config)["execution"][job.executor_def.name]


# --- instance files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_instance_file_matches_the_instance_schema(name, tmp_path):
    shutil.copy(DEPLOY / name, tmp_path / "dagster.yaml")
    config, custom_instance_class = dagster_instance_config(str(tmp_path))
    assert custom_instance_class is None
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}, "one training step per GPU"


def test_postgres_file_is_the_single_machine_file_plus_postgres_storage():
    single, postgres = load("dagster.yaml"), load("dagster.postgres.yaml")
    assert "storage" not in single and set(postgres["storage"]) == {"postgres"}
    assert postgres["concurrency"]["pools"] == single["concurrency"]["pools"]
    assert {k: v for k, v in postgres.items() if k not in ("storage", "concurrency")} == \
           {k: v for k, v in single.items() if k != "concurrency"}


def test_single_machine_instance_queues_runs_and_limits_the_gpu_pool(tmp_path):
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert concurrency.run_queue_config.max_concurrent_runs == 1
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"


def test_postgres_credentials_come_from_the_environment(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import storage_config_schema

    env = {"DAGSTER_PG_HOST": "pg.internal", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "s3cret",
           "DAGSTER_PG_DB": "gen_assets"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage = load("dagster.postgres.yaml")["storage"]
    assert "s3cret" not in yaml.safe_dump(storage)
    result = process_config({"storage": storage_config_schema()}, {"storage": storage})
    assert result.success, result.errors
    db = result.value["storage"]["postgres"]["postgres_db"]
    assert (db["hostname"], db["username"], db["password"], db["db_name"], db["port"]) == \
           ("pg.internal", "dagster", "s3cret", "gen_assets", 5432)
    pg_utils = pytest.importorskip("dagster_postgres.utils", reason="the postgres extra is not installed")
    assert pg_utils.pg_url_from_config(result.value["storage"]["postgres"]) == \
           "postgresql://dagster:s3cret@pg.internal:5432/gen_assets"


# --- the project side: what the executors route on -----------------------------------------------


def test_training_assets_hold_the_gpu_pool(defs, training_steps):
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert TRAINING_POOL == "gpu"
    assert {name for name, pool in pools.items() if pool == TRAINING_POOL} == training_steps


def test_training_assets_go_to_the_gpu_celery_queue(defs, training_steps):
    queues = {a.key.to_user_string(): a.op.tags.get(CELERY_QUEUE_TAG) for a in defs.assets
              if isinstance(a, dg.AssetsDefinition)}
    assert {name for name, queue in queues.items() if queue == "gpu"} == training_steps


# --- executors -----------------------------------------------------------------------------------


def test_multiprocess_run_config(defs):
    job = defs.resolve_job_def("nightly_job")
    config = executor_config(job, load("run_config.multiprocess.yaml"))["multiprocess"]
    assert config["max_concurrent"] == 2
    for module in config["start_method"]["forkserver"]["preload_modules"]:
        assert importlib.util.find_spec(module) is not None, module


def test_k8s_run_config(defs, training_steps):
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="the k8s extra is not installed: pip install .[k8s]")
    job = nightly_job_with(defs, dagster_k8s.k8s_job_executor)
    config = executor_config(job, load("k8s/run_config.yaml"))
    per_step = config["per_step_k8s_config"]
    # Dagster does not check these keys: a misspelt step would silently get a CPU pod
    assert set(per_step) <= set(job.graph.node_dict), set(per_step) - set(job.graph.node_dict)
    gpu_steps = {step for step, k8s in per_step.items()
                 if GPU in k8s.get("container_config", {}).get("resources", {}).get("limits", {})}
    assert gpu_steps == training_steps


def k8s_step_job(executor_cfg: dict, step: str):
    """The Kubernetes Job dagster-k8s would create for `step`, merged as K8sStepHandler merges it
    (executor config, then the per-step override). Internal API of dagster-k8s, hence the imports here."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    context = K8sContainerContext(
        env_vars=executor_cfg.get("env_vars"), env_secrets=executor_cfg.get("env_secrets"),
        volumes=executor_cfg.get("volumes"), volume_mounts=executor_cfg.get("volume_mounts"),
        resources=executor_cfg.get("resources"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_cfg.get("step_k8s_config", {})),
    ).merge(K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_cfg["per_step_k8s_config"].get(step, {}))))
    job_config = DagsterK8sJobConfig(job_image="registry.example.com/gen-assets:test",
                                     dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance")
    return construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"],
                                     job_name=f"dagster-step-{step.replace('_', '-')}", component="step_worker",
                                     user_defined_k8s_config=context.run_k8s_config)


def test_k8s_step_pods_get_a_gpu_for_training_and_a_small_cpu_pod_otherwise(defs):
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="the k8s extra is not installed: pip install .[k8s]")
    config = executor_config(nightly_job_with(defs, dagster_k8s.k8s_job_executor), load("k8s/run_config.yaml"))
    pods = {step: k8s_step_job(config, step).spec.template.spec for step in ("text_generator", "clean_images")}
    for step, pod in pods.items():
        [container] = pod.containers
        assert {"GEN_ASSETS_HOME": "/gen_assets"}.items() <= {e.name: e.value for e in container.env}.items(), step
        assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("gen-assets-home", "/gen_assets")]
        assert [(v.name, v.persistent_volume_claim.claim_name) for v in pod.volumes] == \
               [("gen-assets-home", "gen-assets-home")]
    training = pods["text_generator"].containers[0].resources
    assert training.limits[GPU] == "1" and training.requests["memory"] == "16Gi"
    assert [t.key for t in pods["text_generator"].tolerations] == [GPU]
    light = pods["clean_images"].containers[0].resources
    assert GPU not in light.limits and light.requests == {"cpu": "1", "memory": "2Gi"}
    assert not pods["clean_images"].tolerations


def test_celery_run_config(defs, tmp_path, monkeypatch):
    dagster_celery = pytest.importorskip("dagster_celery", reason="the celery extra is not installed: "
                                                                  "pip install .[celery]")
    from dagster_celery.cli import get_validated_config
    from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

    assert DAGSTER_CELERY_QUEUE_TAG == CELERY_QUEUE_TAG
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://redis:6379/1")
    job = nightly_job_with(defs, dagster_celery.celery_executor)
    config = executor_config(job, load("celery/run_config.yaml"))
    assert (config["broker"], config["backend"]) == ("redis://redis:6379/0", "redis://redis:6379/1")
    # a worker reads the same file (`dagster-celery worker start -y ...`)
    worker = get_validated_config(str(DEPLOY / "celery" / "run_config.yaml"))
    assert (worker["broker"], worker["backend"]) == ("redis://redis:6379/0", "redis://redis:6379/1")
