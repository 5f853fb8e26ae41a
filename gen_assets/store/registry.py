"""Reading the model registry: the latest model per modality with its metrics and artifacts."""

from __future__ import annotations

import json
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


def lineage(con: duckdb.DuckDBPyConnection, sample_id: str) -> dict[str, Any]:
    """Where a sample came from: its batch and model, the model's chain of base models with the data
    versions and raw sources each was trained on, and the feedback files that influenced it."""
    row = con.execute(
        "SELECT batch_id, model_version, modality, category, created_at FROM generated WHERE sample_id = ?", [sample_id]
    ).fetchone()
    if row is None:
        raise KeyError(f"no sample {sample_id!r} in the generated view")
    batch_id, version, modality, category, created_at = row
    models, feedback_versions = [], []
    while version:
        m = con.execute(
            "SELECT model_version, arch, status, created_at, checkpoint_path, input_versions FROM models WHERE model_version = ?",
            [version],
        ).fetchone()
        if m is None:
            models.append({"version": version, "note": "not in the registry"})
            break
        inputs = json.loads(m[5] or "{}")
        models.append({"version": m[0], "arch": m[1], "status": m[2], "created_at": str(m[3]),
                       "checkpoint": m[4], "inputs": inputs})
        if inputs.get("feedback"):
            feedback_versions.append((inputs["feedback"], m[3]))
        version = inputs.get("base_model")
    files = []
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if feedback_versions and "feedback_files" in tables:
        # the files ingested up to the newest tuning that used feedback
        newest = max(ts for _, ts in feedback_versions)
        files = [
            {"file": name, "sha256": sha, "ratings": ok, "ingested_at": str(at)}
            for name, sha, ok, at in con.execute(
                "SELECT file_name, file_sha, rows_ok, ingested_at FROM feedback_files WHERE ingested_at <= ? "
                "ORDER BY ingested_at",
                [newest],
            ).fetchall()
        ]
    return {"sample_id": sample_id, "modality": modality, "category": category, "batch_id": batch_id,
            "created_at": str(created_at), "models": models, "feedback_files": files}
