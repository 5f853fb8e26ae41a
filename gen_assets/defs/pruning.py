"""Housekeeping: prune_job removes old checkpoints and batches (gen_assets.store.retention), nightly
after the graph has run, through prune_schedule (gen_assets.defs.schedules). `gen-assets prune` runs the
same rules by hand."""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.defs.resources import ArtifactStore
from gen_assets.store import retention


class RetentionConfig(dg.Config):
    keep_models: int = Field(default=5, description="newest registered models kept per modality (the champion, "
                             "the models it was tuned from and models of kept batches are kept as well)")
    keep_batches: int = Field(default=5, description="newest generation batches kept per modality (the champion's, "
                              "rated and curated batches are kept as well)")
    dry_run: bool = Field(default=False, description="only report what would be removed")


@dg.op(description="Remove checkpoints and batches beyond the retention; never a champion or anything still used.")
def prune_artifacts(context: dg.OpExecutionContext, config: RetentionConfig, warehouse: DuckDBResource,
                    artifacts: ArtifactStore) -> dict:
    with warehouse.get_connection() as con:
        plan = retention.prune(con, artifacts.paths.training, keep_models=config.keep_models,
                               keep_batches=config.keep_batches, dry_run=config.dry_run)
    summary = plan.to_dict()
    verb = "would remove" if config.dry_run else "removed"
    context.log.info(f"{verb} {len(plan.models)} model checkpoints, {len(plan.batches)} batches, "
                     f"{len(plan.training_dirs)} training run folders")
    context.add_output_metadata({"models": len(plan.models), "batches": len(plan.batches),
                                 "training_dirs": len(plan.training_dirs), "removed": dg.MetadataValue.json(summary),
                                 "dry_run": config.dry_run})
    return summary


@dg.job(description="Apply the retention rules to model checkpoints and generation batches.")
def prune_job():
    prune_artifacts()

