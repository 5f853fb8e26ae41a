"""Schedules: the nightly run of the whole graph at 02:00 in the user's timezone."""

import dagster as dg

from gen_assets.jobs import nightly_job


def nightly_schedule_for(timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="nightly_schedule",
        job=nightly_job,
        cron_schedule="0 2 * * *",
        execution_timezone=timezone,
        description="Materialize every asset at 02:00 (GEN_ASSETS_TIMEZONE, else TZ, else UTC).",
    )
