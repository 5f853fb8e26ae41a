"""The DuckDB warehouse: its whole schema, connecting, and the small amount of SQL every stage shares.

Every table and view of the warehouse is declared here (SCHEMA, applied by `ensure_schema`; the views
by `define_generated_view` and `define_curated_view`). Columns added after the first release are
`ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, so older warehouses stay readable. Who writes what:

- quarantine:      rows refused by any stage, with the reason (never silently dropped); `insert_quarantine`
- models:          the model registry (one row per model_version; status candidate | champion | retired)
- promotions:      every change of champion and every refused promotion: who, when, why
- metrics_history: one row per (model_version, metric) measurement, appended, for trends
- batches:         one row per generation batch (its Parquet file)
                   (these four: only through gen_assets.store.registry)
- generated (view): every generated sample of every modality, read from the batch Parquet files
                   (content BLOB: PNG bytes or UTF-8 text; text VARCHAR for text samples; prompt: the
                   brief a text was written for)
- curated_samples: the current curated set of each modality (gen_assets.store.samples)
- curated (view):  the columns of `generated` plus reward, rank and exploratory, for the curated samples
                   and the exploratory ones shown beside them to be rated
- feedback:        one accepted rating per row (gen_assets.feedback.ingest)
- feedback_files:  one row per ingested rating file content
- feedback_versions: one row per feedback version (the feedback asset's data version): exactly which
                   ingested files it stands for
- events:          one row per event of served content (impression, click, conversion), keyed by its
                   event_id, so a repeated event adds nothing (gen_assets.feedback.events)
- event_files:     one row per ingested event file content
- experiments:     one row per experiment between a champion and a challenger on live traffic (the
                   champion assets start and end them; the `experiments` asset records their figures)
- path_migrations: the one-time rewrite of an old warehouse's absolute artifact paths to relative ones

Artifact paths (checkpoint_path, batch path and grid_path) are stored relative to the artifacts root and
resolved against the current one when read (gen_assets.store.locations): a home can be moved or copied.
`connect` binds each connection to its artifacts root, and migrates an old warehouse once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from gen_assets.store import locations
from gen_assets.store.files import Location, duckdb_source, location, prepare_connection

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    asset            VARCHAR NOT NULL,   -- the asset (table) that refused the row, e.g. clean_images
    snapshot_version VARCHAR,            -- data version of the input the row came from
    source           VARCHAR,            -- file, folder or URL the row came from
    row_id           VARCHAR,            -- row id within the source (or file:line)
    reason           VARCHAR NOT NULL,
    content_hash     VARCHAR,
    quarantined_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    model_version   VARCHAR PRIMARY KEY,
    modality        VARCHAR NOT NULL,
    arch            VARCHAR NOT NULL,
    config          JSON,
    input_versions  JSON,                -- data versions of the inputs it was trained on
    checkpoint_path VARCHAR NOT NULL,
    checkpoint_sha  VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,    -- candidate | champion | retired
    created_at      TIMESTAMP NOT NULL
);
-- columns added after the first release: ALTER keeps older warehouses readable
ALTER TABLE models ADD COLUMN IF NOT EXISTS feedback_version VARCHAR;   -- feedback it was tuned on
ALTER TABLE models ADD COLUMN IF NOT EXISTS details JSON;               -- e.g. the category names
ALTER TABLE models ADD COLUMN IF NOT EXISTS key_metric VARCHAR;         -- promotion: fid | val_loss
ALTER TABLE models ADD COLUMN IF NOT EXISTS key_value DOUBLE;           -- its value at the last check
ALTER TABLE models ADD COLUMN IF NOT EXISTS pruned_at TIMESTAMP;        -- checkpoint file removed (retention)
ALTER TABLE models ADD COLUMN IF NOT EXISTS registered_at TIMESTAMP;    -- last registered (a reused model again)
ALTER TABLE models ADD COLUMN IF NOT EXISTS gate_profile VARCHAR;       -- the profile whose gate made it champion
CREATE TABLE IF NOT EXISTS promotions (
    modality         VARCHAR NOT NULL,
    action           VARCHAR NOT NULL,   -- promote (the check, or a person) | rollback | refuse
    model_version    VARCHAR NOT NULL,   -- the model the action is about (the new champion, or the refused one)
    previous_version VARCHAR,            -- the champion before the action
    actor            VARCHAR NOT NULL,   -- who: a user name, or dagster:<run id> for the champion asset's rule
    reason           VARCHAR NOT NULL,
    acted_at         TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics_history (
    model_version VARCHAR NOT NULL,
    modality      VARCHAR NOT NULL,
    metric        VARCHAR NOT NULL,
    value         DOUBLE,
    batch_id      VARCHAR,
    measured_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id      VARCHAR PRIMARY KEY,
    modality      VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    path          VARCHAR NOT NULL,
    grid_path     VARCHAR,
    n_samples     INTEGER NOT NULL,
    created_at    TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS curated_samples (
    sample_id  VARCHAR NOT NULL,
    modality   VARCHAR NOT NULL,
    batch_id   VARCHAR NOT NULL,
    category   VARCHAR NOT NULL,
    reward     DOUBLE NOT NULL,
    rank       INTEGER NOT NULL,
    curated_at TIMESTAMP NOT NULL
);
-- shown to be rated, beside the curated set: what the reward model is least sure about (rules.curation)
ALTER TABLE curated_samples ADD COLUMN IF NOT EXISTS exploratory BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS feedback (
    sample_id   VARCHAR NOT NULL,
    rating      INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    user_id     VARCHAR,
    ts          TIMESTAMP NOT NULL,  -- UTC; the file's landing time when the file gave none
    comment     VARCHAR,
    modality    VARCHAR NOT NULL,    -- of the sample, from `generated`
    file_name   VARCHAR NOT NULL,
    file_sha    VARCHAR NOT NULL,
    line        INTEGER NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    PRIMARY KEY (file_sha, line)     -- a line of a file is one rating, at most once
);
CREATE TABLE IF NOT EXISTS feedback_files (
    file_sha         VARCHAR PRIMARY KEY,
    file_name        VARCHAR NOT NULL,
    rows_ok          INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL,
    ingested_at      TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS path_migrations (
    migrated_at TIMESTAMP NOT NULL,
    artifacts   VARCHAR NOT NULL,        -- the artifacts root the paths were made relative to
    migrated    INTEGER NOT NULL,        -- stored paths rewritten
    left_as_is  VARCHAR[] NOT NULL       -- absolute paths outside the home whose file is not in it
);
CREATE TABLE IF NOT EXISTS feedback_versions (
    feedback_version VARCHAR PRIMARY KEY,  -- what models.input_versions["feedback"] names
    file_shas        VARCHAR[] NOT NULL,   -- its ingested files (feedback_files.file_sha), sorted
    recorded_at      TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id      VARCHAR PRIMARY KEY,   -- the server's sha256(serve_id || ':' || event)[:32]
    serve_id      VARCHAR NOT NULL,      -- one sample shown in answer to one request
    event         VARCHAR NOT NULL CHECK (event IN ('impression', 'click', 'conversion')),
    sample_id     VARCHAR NOT NULL,      -- a sample of `generated`
    user_id       VARCHAR,
    ts            TIMESTAMP NOT NULL,    -- UTC
    modality      VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    arm           VARCHAR NOT NULL,      -- e.g. champion | challenger
    experiment_id VARCHAR,
    probability   DOUBLE NOT NULL CHECK (probability > 0 AND probability <= 1),  -- of serving this sample
    slot          VARCHAR,
    source_file   VARCHAR NOT NULL,
    ingested_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS event_files (
    file_sha         VARCHAR PRIMARY KEY,
    file_name        VARCHAR NOT NULL,
    rows_added       INTEGER NOT NULL,   -- new events
    rows_duplicate   INTEGER NOT NULL,   -- events already stored (a retried request, a file sent twice)
    rows_quarantined INTEGER NOT NULL,
    ingested_at      TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id      VARCHAR PRIMARY KEY,
    modality           VARCHAR NOT NULL,
    champion_version   VARCHAR NOT NULL,   -- the champion when it started
    challenger_version VARCHAR NOT NULL,   -- the candidate that passed the offline gate
    allocation         VARCHAR NOT NULL,   -- bandit | fixed
    challenger_share   DOUBLE NOT NULL,    -- the starting (fixed: the whole) share of the challenger
    status             VARCHAR NOT NULL,   -- running | promoted | retired | stopped | replaced
    started_at         TIMESTAMP NOT NULL,
    decided_at         TIMESTAMP,
    decided_by         VARCHAR,            -- who started it, then who ended it
    reason             VARCHAR,
    figures            JSON                -- the last summary: per arm impressions, clicks, rate, interval, ...
);
"""

CURATED_VIEW = (
    "CREATE OR REPLACE VIEW curated AS SELECT g.*, c.reward, c.rank, coalesce(c.exploratory, false) AS exploratory "
    "FROM curated_samples c "
    "JOIN generated g USING (sample_id) ORDER BY g.modality, g.category, c.rank"
)


def artifacts_root(database: str | os.PathLike, artifacts: str | None) -> Location:
    """The artifacts root of the home whose warehouse is `database`: `artifacts` (GEN_ASSETS_ARTIFACTS,
    a folder or URL) when given, else the home's own folder (settings.Paths.artifacts)."""
    if artifacts:
        return location(artifacts)
    return Path(os.path.abspath(database)).parent / locations.ARTIFACTS_DIR


def connect(database: str | os.PathLike, *, read_only: bool = False, artifacts: str | None = None,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file that can also read the artifacts at `artifacts` (a URL), bound
    to the home's artifacts root (gen_assets.store.locations.bind).

    An old warehouse (absolute artifact paths) is migrated first, once: by this connection when it may
    write, else by a short writing one (skipped while another process holds the file; the paths are
    still resolved when read)."""
    root = artifacts_root(database, artifacts)
    con = _open(database, read_only, artifacts, config, root)
    if not read_only:
        try:
            _migrate_if_needed(con, root)
        except BaseException:
            con.close()
            raise
        return con
    try:
        needed = _needs_migration(con)
    except BaseException:
        con.close()
        raise
    if needed:
        con.close()
        try:
            with _open(database, False, artifacts, config, root) as writer:
                _migrate_if_needed(writer, root)
        except (duckdb.IOException, duckdb.ConnectionException):
            pass  # another process writes the file; it migrates it (every writing connection checks)
        con = _open(database, True, artifacts, config, root)
    return con


def _open(database, read_only: bool, artifacts: str | None, config: dict | None, root: Location):
    con = duckdb.connect(str(database), read_only=read_only, config=config or {})
    try:
        prepare_connection(con, artifacts)
        locations.bind(con, root)
    except BaseException:
        con.close()
        raise
    return con


def _needs_migration(con: duckdb.DuckDBPyConnection) -> bool:
    from gen_assets.store import registry  # registry builds on this module

    return registry.needs_path_migration(con)


def _migrate_if_needed(con: duckdb.DuckDBPyConnection, root: Location) -> None:
    from gen_assets.store import registry

    if registry.needs_path_migration(con):
        registry.migrate_stored_paths(con, root)


def bind_connection(con: duckdb.DuckDBPyConnection, database: str | os.PathLike, artifacts: str | None) -> None:
    """What `connect` does to a connection opened elsewhere (Dagster's DuckDBResource): make the
    artifacts readable, bind the artifacts root, migrate an old warehouse once."""
    root = artifacts_root(database, artifacts)
    prepare_connection(con, artifacts)
    locations.bind(con, root)
    _migrate_if_needed(con, root)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK after an error, keeping that error the one raised: a failed COMMIT has already ended
    the transaction, and the ROLLBACK's own error would hide why."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def sql_literal(value: str) -> str:
    """Quote a string (e.g. a file path) for places where DuckDB takes no parameters (table functions in views)."""
    return "'" + str(value).replace("'", "''") + "'"


def stored_file_sql(con: duckdb.DuckDBPyConnection, stored: str) -> str:
    """SQL for the file DuckDB reads for a stored artifact path.

    A relative path is resolved when the view is READ, against the reading connection's artifacts root
    (the variable `locations.bind` sets), so a moved or copied home reads its own files; a connection
    nobody bound (the duckdb shell, say) falls back to the root the view was defined with. An absolute
    path (left by a migration) is read as it is."""
    if locations.is_absolute(stored):
        return sql_literal(duckdb_source(con, stored))
    root = locations.bound_root(con)
    fallback = sql_literal(duckdb_source(con, root)) if root is not None else sql_literal(locations.ARTIFACTS_DIR)
    return f"coalesce(getvariable('{locations.ROOT_VARIABLE}'), {fallback}) || {sql_literal('/' + stored)}"


def define_generated_view(con: duckdb.DuckDBPyConnection, batch_files: Iterable[tuple[str, str]]) -> None:
    """(Re)define `generated` over the given (modality, stored Parquet path) batch files, in that order.

    `content` is BLOB for all of them (PNG bytes, or the UTF-8 bytes of a text); `text` holds a text
    sample as a string (NULL for images), so text is readable in SQL without decoding. The batch files
    come from the registry (gen_assets.store.registry.refresh_generated_view), relative to the artifacts
    root (see `stored_file_sql`).
    """
    by_modality: dict[str, list[str]] = {}
    for modality, path in batch_files:
        by_modality.setdefault(modality, []).append(path)
    common = "sample_id, batch_id, model_version, modality, category, created_at, seed"
    selects = []
    for modality, paths in sorted(by_modality.items()):
        # a batch at a URL: its filesystem made readable on this connection (see store/files.py)
        files = "[" + ", ".join(stored_file_sql(con, p) for p in paths) + "]"
        source = f"read_parquet({files}, union_by_name = true)"
        if modality == "text":
            # batches written before texts had briefs have no prompt column
            content = "encode(content) AS content, content AS text, " + (
                "prompt" if _has_column(con, source, "prompt") else "NULL::VARCHAR AS prompt")
        else:
            content = "CAST(content AS BLOB) AS content, NULL::VARCHAR AS text, NULL::VARCHAR AS prompt"
        selects.append(f"SELECT {common}, {content} FROM {source}")
    if not selects:
        selects.append(
            "SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS batch_id, NULL::VARCHAR AS model_version, "
            "NULL::VARCHAR AS modality, NULL::VARCHAR AS category, NULL::TIMESTAMP AS created_at, "
            "NULL::BIGINT AS seed, NULL::BLOB AS content, NULL::VARCHAR AS text, NULL::VARCHAR AS prompt WHERE false"
        )
    con.execute("CREATE OR REPLACE VIEW generated AS " + " UNION ALL ".join(selects))


def _has_column(con: duckdb.DuckDBPyConnection, source: str, column: str) -> bool:
    try:
        return column in {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    except duckdb.Error:  # an unreadable file fails the view's readers, with DuckDB's message, not this
        return False


def define_curated_view(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)define `curated`: the columns of `generated` plus reward and rank, for the current curated set
    of each modality (the rows of curated_samples)."""
    con.execute(CURATED_VIEW)


def insert_quarantine(con: duckdb.DuckDBPyConnection, rows: Iterable[Mapping]) -> int:
    """Append quarantined rows (dicts with the quarantine columns; quarantined_at defaults to now)."""
    ts = now()
    root = locations.bound_root(con)  # a batch file as source is stored relative, like every artifact path
    data = [
        (
            r["asset"],
            r.get("snapshot_version"),
            locations.to_stored_if_inside(r.get("source"), root),
            None if r.get("row_id") is None else str(r["row_id"]),
            r["reason"],
            r.get("content_hash"),
            r.get("quarantined_at", ts),
        )
        for r in rows
    ]
    if data:
        con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", data)
    return len(data)
