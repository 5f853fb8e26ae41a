"""Reading the model registry: the latest model per modality with its metrics and artifacts."""

from __future__ import annotations

from typing import Any

import duckdb



def latest_models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One entry per modality: its newest model, the latest value of each of its metrics, its files.

    The shape is the stable JSON interface of `gen-assets report --json`.
    """
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not {"models", "metrics_history", "batches"} <= tables:
        return []  # nothing trained yet (and a read-only connection cannot create the schema)
    rows = con.execute(
        """
        SELECT model_version, modality, arch, status, created_at, checkpoint_path
        FROM models
        QUALIFY row_number() OVER (PARTITION BY modality ORDER BY created_at DESC, model_version) = 1
        ORDER BY modality
        """
    ).fetchall()
    models = []
    for version, modality, arch, status, created_at, checkpoint in rows:
        metrics = dict(
            con.execute(
                """
                SELECT metric, value FROM metrics_history WHERE model_version = ?
                QUALIFY row_number() OVER (PARTITION BY metric ORDER BY measured_at DESC) = 1
                ORDER BY metric
                """,
                [version],
            ).fetchall()
        )
        batch = con.execute(
            "SELECT path, grid_path FROM batches WHERE model_version = ? ORDER BY created_at DESC LIMIT 1", [version]
        ).fetchone()
        artifacts = {"checkpoint": checkpoint}
        if batch:
            artifacts["samples"] = batch[0]
            if batch[1]:
                artifacts["grid"] = batch[1]
        models.append(
            {
                "modality": modality,
                "version": version,
                "arch": arch,
                "status": status,
                "created_at": created_at.isoformat() if created_at else None,
                "metrics": metrics,
                "artifacts": artifacts,
            }
        )
    return models
