"""The one place that lists every asset, check, job, schedule, sensor and resource."""

import os

import dagster as dg

from gen_assets.defs.assets import (champions, clean, curated, evaluated, events, experiments, generated,
                                    human_feedback, raw, trained, tuned)
from gen_assets.defs.checks import checks
from gen_assets.defs.pruning import prune_job
from gen_assets.defs.jobs import build_jobs
from gen_assets.defs.project import Project, job_run_config, load_project
from gen_assets.defs.resources import build_resources
from gen_assets.defs.schedules import schedules_for
from gen_assets.defs.sensors import FeedbackPolicy, build_events_sensor, build_feedback_sensor, regeneration_sensor
from gen_assets.defs.stale_runs import fail_dead_runs_of_current_instance
from gen_assets.settings import Paths, timezone_from_env

ASSET_MODULES = [raw, clean, trained, human_feedback, events, experiments, tuned, champions, generated, curated,
                 evaluated]


def executor_from_env() -> dg.ExecutorDefinition | None:
    """GEN_ASSETS_EXECUTOR: multiprocess (default: Dagster's own), k8s (pip install .[k8s]: one pod per
    step) or celery (pip install .[celery]); their configuration is in docs/deploy/."""
    name = os.environ.get("GEN_ASSETS_EXECUTOR", "multiprocess")
    if name == "multiprocess":
        return None
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor
    raise ValueError(f"GEN_ASSETS_EXECUTOR={name!r}: choose multiprocess, k8s or celery")


def project_for(paths: Paths) -> Project:
    """The project file of this home (GEN_ASSETS_PROJECT's if set), checked against the assets' Config classes."""
    return load_project(paths, dg.load_assets_from_modules(ASSET_MODULES))


def build_definitions(paths: Paths | None = None, timezone: str | None = None) -> dg.Definitions:
    """Everything, configured by the project file: the jobs' default config (the UI's launchpad), the
    schedules' and the sensor's run config and status, the feedback policy."""
    paths = paths or Paths.from_env()
    assets = dg.load_assets_from_modules(ASSET_MODULES)
    project = load_project(paths, assets)
    jobs = build_jobs(lambda selection: job_run_config(project, selection, assets))
    switches, policy = project.file.sections.schedules, project.file.sections.feedback
    return dg.Definitions(
        executor=executor_from_env(),
        assets=assets,
        asset_checks=checks,
        jobs=[*jobs.values(), prune_job],
        schedules=schedules_for(timezone or timezone_from_env(), jobs["nightly_job"], project.run_config(),
                                nightly=switches.nightly, prune=switches.prune),
        sensors=[build_feedback_sensor(project.run_config, running=switches.feedback_sensor),
                 build_events_sensor(project.run_config, running=switches.feedback_sensor), regeneration_sensor],
        resources={**build_resources(paths),
                   "feedback_policy": FeedbackPolicy(min_new_ratings=policy.min_new_ratings,
                                                     max_age_seconds=policy.max_age_seconds,
                                                     min_new_events=policy.min_new_events)},
    )


defs = build_definitions()
fail_dead_runs_of_current_instance()  # a run killed mid-way is failed, not STARTED forever
