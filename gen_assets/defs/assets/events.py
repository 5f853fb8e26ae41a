"""Event ingestion: what people do with served content (impressions, clicks, conversions), from the event
landing zone into DuckDB, one transaction per file."""

import time
from dataclasses import dataclass, field

import dagster as dg
from dagster_duckdb import DuckDBResource

from gen_assets.defs.handles import lane, warehouse_table_metadata
from gen_assets.defs.resources import ArtifactStore
from gen_assets.feedback.events import EVENTS_DIR, EventPaths, events_summary, events_version, ingest_events


@dataclass(frozen=True)
class EventsRef:
    """The ingested events as of this materialization (the rows themselves stay in DuckDB)."""

    version: str
    summary: dict = field(default_factory=dict)  # modality -> impressions, clicks, conversions, samples, click_rate


@dg.asset(**lane("shared", "feedback"), kinds={"duckdb"}, code_version="1")
def events(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
           artifacts: ArtifactStore) -> dg.Output[EventsRef]:
    """Every event file waiting in GEN_ASSETS_HOME/feedback/events/incoming, validated into the `events` table.

    Invalid rows go to `quarantine` with file, line and reason; a file moves to processed/ only after its
    transaction commits; an event already stored (same event_id) adds nothing. The data version changes
    only when events were added, so the reward models retrain on new clicks, not on every run.
    """
    t0 = time.perf_counter()
    with warehouse.get_connection() as con:
        results = ingest_events(con, EventPaths(artifacts.paths.feedback / EVENTS_DIR))
        version = events_version(con)
        summary = events_summary(con)
        table = warehouse_table_metadata(con, "events")
    for r in results:
        if r.error:
            context.log.warning(f"{r.file_name}: refused whole ({r.error}); moved to failed/")
        elif r.already_ingested:
            context.log.info(f"{r.file_name}: already ingested, nothing added")
        else:
            context.log.info(f"{r.file_name}: {r.rows_added} events, {r.rows_duplicate} duplicates, "
                             f"{r.rows_quarantined} quarantined")
    added: dict[str, int] = {}
    for r in results:
        for modality, n in r.by_modality.items():
            added[modality] = added.get(modality, 0) + n
    return dg.Output(
        EventsRef(version, summary),
        data_version=dg.DataVersion(version),
        metadata={
            "files_ingested": sum(1 for r in results if not r.error and not r.already_ingested),
            "events_added": sum(r.rows_added for r in results),
            "events_duplicate": sum(r.rows_duplicate for r in results),
            "rows_quarantined": sum(r.rows_quarantined for r in results),
            "files_refused": len([r for r in results if r.error]),
            "events_added_by_modality": dg.MetadataValue.json(added),
            "events_by_modality": dg.MetadataValue.json(summary),
            "events_version": version,
            **table,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
