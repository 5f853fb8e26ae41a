"""Sensors: retrain when new human feedback lands; regenerate when a champion changes."""

from collections.abc import Callable

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.feedback.events import EVENTS_DIR
from gen_assets.feedback.pending import (DEFAULT_MAX_AGE_SECONDS, DEFAULT_MIN_NEW_EVENTS, DEFAULT_MIN_NEW_RATINGS, decide,
                                         files_by_modality, run_key_for, scan, scan_events)
from gen_assets.defs.jobs import DEFAULT_PROFILE, RETRAIN_ASSETS, run_tags
from gen_assets.defs.resources import ArtifactStore


class FeedbackPolicy(dg.ConfigurableResource):
    """When waiting ratings call for a retrain."""

    min_new_ratings: int = Field(default=DEFAULT_MIN_NEW_RATINGS, description="new ratings that trigger a retrain")
    max_age_seconds: float = Field(
        default=DEFAULT_MAX_AGE_SECONDS, description="a new rating file older than this triggers a retrain anyway"
    )
    min_new_events: int = Field(default=DEFAULT_MIN_NEW_EVENTS, description="new events (impressions, clicks, "
                                "conversions of served content) that trigger a retrain (events_sensor)")


def build_feedback_sensor(run_config_for: Callable[[list[str]], dict] | None = None, running: bool = True):
    """feedback_sensor; run_config_for(asset names) gives a retrain's run config (the project's settings),
    running: its default status (the project file's schedules.feedback_sensor)."""

    @dg.sensor(
        job_name="retrain_job",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description="Watches GEN_ASSETS_HOME/feedback/incoming; requests retrain_job for the modality the new "
        "ratings concern once enough are waiting or the oldest has waited long enough.",
    )
    def feedback_sensor(
        context: dg.SensorEvaluationContext,
        artifacts: ArtifactStore,
        warehouse: DuckDBResource,
        feedback_policy: FeedbackPolicy,
    ):
        incoming = artifacts.paths.feedback / "incoming"
        decision = decide(
            scan(incoming),
            context.cursor,
            min_new_ratings=feedback_policy.min_new_ratings,
            max_age_seconds=feedback_policy.max_age_seconds,
        )
        if decision.run_key is None:
            return dg.SkipReason(decision.reason)
        with warehouse.get_connection() as con:
            groups = files_by_modality(con, decision.files)
        requests = []
        for modality, files in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            # unknown samples only: ingest (and quarantine), the waiting events with them
            selection = RETRAIN_ASSETS.get(modality, ["feedback", "events"])
            requests.append(
                dg.RunRequest(
                    run_key=run_key_for(files, modality),
                    asset_selection=[dg.AssetKey(key) for key in selection],
                    tags={**run_tags(DEFAULT_PROFILE, modality or "none"), "gen_assets/trigger": "feedback"},
                    run_config=run_config_for(selection) if run_config_for else None,
                )
            )
        context.update_cursor(decision.new_cursor)
        context.log.info(decision.reason)
        return requests

    return feedback_sensor


feedback_sensor = build_feedback_sensor()  # with the Config defaults; build_definitions builds the project's


def build_events_sensor(run_config_for: Callable[[list[str]], dict] | None = None, running: bool = True):
    """events_sensor: feedback_sensor's rule for what customers did with served content (its own cursor)."""

    @dg.sensor(
        job_name="retrain_job",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description="Watches GEN_ASSETS_HOME/feedback/events/incoming; requests retrain_job for the modalities the "
        "new events concern once min_new_events are waiting or the oldest has waited max_age_seconds.",
    )
    def events_sensor(context: dg.SensorEvaluationContext, artifacts: ArtifactStore, feedback_policy: FeedbackPolicy):
        pending = scan_events(artifacts.paths.feedback / EVENTS_DIR / "incoming")
        decision = decide([f for f, _ in pending], context.cursor, min_new_ratings=feedback_policy.min_new_events,
                          max_age_seconds=feedback_policy.max_age_seconds, noun="events")
        if decision.run_key is None:
            return dg.SkipReason(decision.reason)
        new = {f.name for f in decision.files}
        modalities = sorted({m for f, ms in pending if f.name in new for m in ms}) or [None]
        requests = []
        for modality in modalities:
            selection = RETRAIN_ASSETS.get(modality, ["events"])
            requests.append(dg.RunRequest(
                run_key=run_key_for(decision.files, modality).replace("feedback-", "events-", 1),
                asset_selection=[dg.AssetKey(key) for key in selection],
                tags={**run_tags(DEFAULT_PROFILE, modality or "none"), "gen_assets/trigger": "events"},
                run_config=run_config_for(selection) if run_config_for else None,
            ))
        context.update_cursor(decision.new_cursor)
        context.log.info(decision.reason)
        return requests

    return events_sensor


# Generation, curation and the metrics follow the champion (AutomationCondition.eager() on those assets):
# after a person's `gen-assets promote`, which materializes only <modality>_champion, this sensor requests
# them. Dagster's own default_automation_condition_sensor would start stopped on a fresh instance; this one is
# on from the start, like feedback_sensor. It runs where the daemon runs (`dagster dev`, `make ui`).
regeneration_sensor = dg.AutomationConditionSensorDefinition(
    "regeneration_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={"gen_assets/profile": DEFAULT_PROFILE, "gen_assets/trigger": "automation"},
    description="Requests the assets whose automation condition is true: generation, curation and the metrics "
    "of a lane whose champion changed.",
)
