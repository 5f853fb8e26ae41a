"""Samples of the `generated` view joined with what people and curation said of them (table
`curated_samples`, view `curated`: declared in gen_assets.store.warehouse). Pure (DuckDB)."""

from __future__ import annotations

import uuid

import duckdb
import pandas as pd

from gen_assets.store.warehouse import define_curated_view, ensure_schema, now, rollback_quietly


def rated_samples(con: duckdb.DuckDBPyConnection, ratings: list[tuple[str, float]] | pd.DataFrame) -> pd.DataFrame:
    """sample_id, category, prompt, content (bytes), text, rating for the given (sample_id, mean rating) pairs.

    `ratings` may also be a frame with sample_id, rating and more columns (a reward model's training rows:
    weight, source), which are kept; a sample may then have several rows, kept in the frame's order."""
    if isinstance(ratings, pd.DataFrame):
        frame = ratings.reset_index(drop=True)
    else:
        frame = pd.DataFrame(ratings, columns=["sample_id", "rating"])
    if frame.empty:
        return frame.assign(category=[], prompt=[], content=[], text=[])
    frame = frame.assign(_row=range(len(frame)))
    view = f"_rated_{uuid.uuid4().hex}"
    con.register(view, frame)
    try:
        return con.execute(
            "SELECT g.sample_id, g.category, g.prompt, g.content, g.text, r.* EXCLUDE (sample_id, _row) "
            f"FROM generated g JOIN {view} r USING (sample_id) ORDER BY g.sample_id, r._row"
        ).df()
    finally:
        con.unregister(view)


def replace_curated(con: duckdb.DuckDBPyConnection, modality: str, batch_id: str, curated: pd.DataFrame) -> None:
    """Make `curated` (sample_id, category, reward, rank, optional exploratory) the current curated set of
    `modality`, atomically."""
    ensure_schema(con)
    rows = [
        (str(r.sample_id), modality, batch_id, str(r.category), float(r.reward), int(r.rank), now(),
         bool(getattr(r, "exploratory", False)))
        for r in curated.itertuples()
    ]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM curated_samples WHERE modality = ?", [modality])
        if rows:
            con.executemany("INSERT INTO curated_samples (sample_id, modality, batch_id, category, reward, rank, "
                            "curated_at, exploratory) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        define_curated_view(con)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
