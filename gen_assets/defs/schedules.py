"""Schedules, in the user's timezone (GEN_ASSETS_TIMEZONE, else TZ, else UTC): the whole graph at
02:00, the pruning of old checkpoints and batches at 04:00."""

import dagster as dg

from gen_assets.defs.pruning import prune_job
from gen_assets.defs.jobs import DEFAULT_PROFILE, nightly_job, run_tags


def schedules_for(timezone: str) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(name="nightly_schedule", job=nightly_job, cron_schedule="0 2 * * *",
                              execution_timezone=timezone, description="Materialize every asset at 02:00.",
                              tags=run_tags(DEFAULT_PROFILE, "all")),
        dg.ScheduleDefinition(name="prune_schedule", job=prune_job, cron_schedule="0 4 * * *",
                              execution_timezone=timezone,
                              description="Prune old checkpoints and batches at 04:00, after the nightly run."),
    ]
