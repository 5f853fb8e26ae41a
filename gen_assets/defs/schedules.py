"""Schedules, in the user's timezone (GEN_ASSETS_TIMEZONE, else TZ, else UTC): the whole graph at
02:00, the pruning of old checkpoints and batches at 04:00. The project file switches them on
(schedules: nightly / prune) and gives the nightly run its config."""

import dagster as dg

from gen_assets.defs.jobs import DEFAULT_PROFILE, run_tags
from gen_assets.defs.pruning import prune_job


def status(on: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED


def schedules_for(timezone: str, nightly_job, run_config: dict | None = None,
                  nightly: bool = False, prune: bool = False) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(name="nightly_schedule", job=nightly_job, cron_schedule="0 2 * * *",
                              execution_timezone=timezone, run_config=run_config, default_status=status(nightly),
                              description="Materialize every asset at 02:00, with the project's settings.",
                              tags=run_tags(DEFAULT_PROFILE, "all")),
        dg.ScheduleDefinition(name="prune_schedule", job=prune_job, cron_schedule="0 4 * * *",
                              execution_timezone=timezone, default_status=status(prune),
                              description="Prune old checkpoints and batches at 04:00, after the nightly run."),
    ]
