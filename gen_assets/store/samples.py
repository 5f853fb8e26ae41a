"""Samples of the `generated` view joined with what people and curation said of them. Pure (DuckDB)."""

from __future__ import annotations

import duckdb
import pandas as pd

from gen_assets.store.warehouse import ensure_schema, now, rollback_quietly

CURATED_SCHEMA = """
CREATE TABLE IF NOT EXISTS curated_samples (
    sample_id  VARCHAR NOT NULL,
    modality   VARCHAR NOT NULL,
    batch_id   VARCHAR NOT NULL,
    category   VARCHAR NOT NULL,
    reward     DOUBLE NOT NULL,
    rank       INTEGER NOT NULL,
    curated_at TIMESTAMP NOT NULL
);
"""


def rated_samples(con: duckdb.DuckDBPyConnection, ratings: list[tuple[str, float]]) -> pd.DataFrame:
    """sample_id, category, content (bytes), text, rating for the given (sample_id, mean rating) pairs."""
    frame = pd.DataFrame(ratings, columns=["sample_id", "rating"])
    if frame.empty:
        return frame.assign(category=[], content=[], text=[])
    con.register("_rated", frame)
    try:
        return con.execute(
            "SELECT g.sample_id, g.category, g.content, g.text, r.rating FROM generated g "
            "JOIN _rated r USING (sample_id) ORDER BY g.sample_id"
        ).df()
    finally:
        con.unregister("_rated")


def refresh_curated_view(con: duckdb.DuckDBPyConnection) -> None:
    """`curated`: the columns of `generated` plus reward and rank, for the current curated set of each modality."""
    con.execute(CURATED_SCHEMA)
    con.execute(
        "CREATE OR REPLACE VIEW curated AS SELECT g.*, c.reward, c.rank FROM curated_samples c "
        "JOIN generated g USING (sample_id) ORDER BY g.modality, g.category, c.rank"
    )


def replace_curated(con: duckdb.DuckDBPyConnection, modality: str, batch_id: str, curated: pd.DataFrame) -> None:
    """Make `curated` (sample_id, category, reward, rank) the current curated set of `modality`, atomically."""
    ensure_schema(con)
    con.execute(CURATED_SCHEMA)
    rows = [
        (str(r.sample_id), modality, batch_id, str(r.category), float(r.reward), int(r.rank), now())
        for r in curated.itertuples()
    ]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM curated_samples WHERE modality = ?", [modality])
        if rows:
            con.executemany("INSERT INTO curated_samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        refresh_curated_view(con)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
