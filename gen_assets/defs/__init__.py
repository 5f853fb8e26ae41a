"""The Dagster layer, the only folder that imports dagster: assets (one module per stage), checks, jobs,
schedules, sensors, resources, pruning."""
