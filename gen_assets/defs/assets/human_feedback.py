"""Feedback ingestion: people's ratings from the landing zone into DuckDB, one transaction per file."""

import time
from dataclasses import dataclass, field

import dagster as dg
from dagster_duckdb import DuckDBResource

from gen_assets.feedback.ingest import failed_files, ingest_pending, ratings_summary, record_feedback_version
from gen_assets.defs.handles import lane, warehouse_table_metadata
from gen_assets.defs.resources import ArtifactStore


@dataclass(frozen=True)
class FeedbackRef:
    """The ingested ratings as of this materialization (the rows themselves stay in DuckDB)."""

    version: str
    ratings: dict = field(default_factory=dict)  # modality -> {"ratings", "samples", "mean_rating"}


@dg.asset(**lane("shared", "feedback"), kinds={"duckdb"}, code_version="1")
def feedback(context: dg.AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore) -> dg.Output[FeedbackRef]:
    """Every rating file waiting in GEN_ASSETS_HOME/feedback/incoming, validated into the `feedback` table.

    Invalid rows go to `quarantine` with file, line and reason; a file moves to processed/ only after
    its transaction commits, and a file already ingested (same content hash) adds nothing.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        results = ingest_pending(con, artifacts.paths.feedback)
        version = record_feedback_version(con)  # with the exact set of files it stands for
        summary = ratings_summary(con)
        refused = failed_files(con)
        table = warehouse_table_metadata(con, "feedback")
    for r in results:
        if r.error:
            context.log.warning(f"{r.file_name}: refused whole ({r.error}); moved to failed/")
        elif r.already_ingested:
            context.log.info(f"{r.file_name}: already ingested, nothing added")
        else:
            context.log.info(f"{r.file_name}: {r.rows_ok} ratings, {r.rows_quarantined} quarantined")
    return dg.Output(
        FeedbackRef(version, summary),
        data_version=dg.DataVersion(version),
        metadata={
            "files_ingested": sum(1 for r in results if not r.error and not r.already_ingested),
            "ratings_added": sum(r.rows_ok for r in results),
            "rows_quarantined": sum(r.rows_quarantined for r in results),
            "files_refused": len([r for r in results if r.error]),
            "files_refused_ever": len(refused),
            "ratings_by_modality": dg.MetadataValue.json(summary),
            "feedback_version": version,
            **table,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
