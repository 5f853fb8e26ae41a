"""The model registry (table `models`): champions, promotion and rollback, and what the report reads.

A model enters the registry as a candidate (gen_assets.store.warehouse.register_model). It becomes the
champion of its modality through `promote`: called by the blocking promotion check when the candidate's
key metric is not worse than the champion's beyond the tolerance, or by a person (`gen-assets promote`).
`rollback` gives the championship back to the previous champion. Every change, and every promotion the
check refused, is a row of `promotions` with who and when. Generation and curation use `champion()`.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from gen_assets.store.warehouse import ensure_schema, now, rollback_quietly

MODEL_COLUMNS = ("model_version", "modality", "arch", "status", "created_at", "checkpoint_path", "checkpoint_sha",
                 "config", "input_versions", "feedback_version", "details", "key_metric", "key_value", "pruned_at")


def _model_dict(row: tuple) -> dict[str, Any]:
    m = dict(zip(MODEL_COLUMNS, row, strict=True))
    for key in ("config", "input_versions", "details"):
        m[key] = json.loads(m[key]) if m[key] else {}
    return m


def get_model(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any]:
    """The registry row of a model version; KeyError naming it when there is none."""
    row = con.execute(f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE model_version = ?", [model_version]).fetchone()
    if row is None:
        raise KeyError(f"no model {model_version!r} in the registry")
    return _model_dict(row)


def champion(con: duckdb.DuckDBPyConnection, modality: str) -> dict[str, Any] | None:
    """The champion of a modality (the model generation and curation use), or None before the first."""
    row = con.execute(
        f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE modality = ? AND status = 'champion'", [modality]
    ).fetchone()
    return _model_dict(row) if row else None


def record_key_metric(con: duckdb.DuckDBPyConnection, model_version: str, key_metric: str, value: float) -> None:
    con.execute("UPDATE models SET key_metric = ?, key_value = ? WHERE model_version = ?", [key_metric, value, model_version])


def _log(con, modality: str, action: str, version: str, previous: str | None, actor: str, reason: str) -> None:
    con.execute(
        "INSERT INTO promotions VALUES (?, ?, ?, ?, ?, ?, ?)", [modality, action, version, previous, actor, reason, now()]
    )


class ChampionChanged(RuntimeError):
    """The champion is no longer the one a decision was measured against."""


_ANY = object()


def promote(con: duckdb.DuckDBPyConnection, model_version: str, *, actor: str, reason: str,
            action: str = "promote", expected_previous: object = _ANY) -> str | None:
    """Make `model_version` the champion of its modality, retiring the previous one; one transaction.

    With `expected_previous` (a version, or None for "no champion"), raise ChampionChanged instead
    when the champion changed meanwhile (a person, or another run): the promotion check compared
    against a champion that is gone. Returns the previous champion's version (None when there was
    none, or it is the same model)."""
    ensure_schema(con)
    con.execute("BEGIN TRANSACTION")
    try:
        model = get_model(con, model_version)
        if model["pruned_at"] is not None:
            raise ValueError(f"model {model_version} cannot be champion: its checkpoint was pruned at {model['pruned_at']}")
        current = champion(con, model["modality"])
        previous = current["model_version"] if current else None
        if expected_previous is not _ANY and previous != expected_previous:
            raise ChampionChanged(f"the {model['modality']} champion changed from {expected_previous} to {previous} "
                                  "while the candidate was measured")
        if previous != model_version:
            con.execute("UPDATE models SET status = 'retired' WHERE modality = ? AND status = 'champion'", [model["modality"]])
            con.execute("UPDATE models SET status = 'champion' WHERE model_version = ?", [model_version])
            _log(con, model["modality"], action, model_version, previous, actor, reason)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
    return previous if previous != model_version else None


def rollback(con: duckdb.DuckDBPyConnection, modality: str, *, actor: str, reason: str) -> tuple[str, str]:
    """Give the championship back to the model that held it before the current champion.

    Returns (new champion, demoted model). The demoted model is not promoted again by the promotion
    check (a person took it out); `promote` by hand brings it back."""
    current = champion(con, modality)
    if current is None:
        raise ValueError(f"no {modality} champion to roll back")
    row = con.execute(
        # the champion it replaced when it was last promoted (a rollback row would only undo the rollback)
        "SELECT previous_version FROM promotions WHERE modality = ? AND model_version = ? "
        "AND action = 'promote' AND previous_version IS NOT NULL ORDER BY acted_at DESC LIMIT 1",
        [modality, current["model_version"]],
    ).fetchone()
    if row is None:
        raise ValueError(f"{modality} champion {current['model_version']} has no previous champion to roll back to")
    promote(con, row[0], actor=actor, reason=reason, action="rollback")
    return row[0], current["model_version"]


def demoted_by_person(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any] | None:
    """The rollback that took `model_version` out, unless it was promoted again since; else None."""
    row = con.execute(
        "SELECT action, model_version, actor, acted_at, reason FROM promotions "
        "WHERE (action = 'rollback' AND previous_version = ?) OR (action IN ('promote', 'rollback') AND model_version = ?) "
        "ORDER BY acted_at DESC LIMIT 1",
        [model_version, model_version],
    ).fetchone()
    if row is None or row[0] != "rollback" or row[1] == model_version:
        return None
    return {"actor": row[2], "at": str(row[3]), "reason": row[4]}


def refuse(con: duckdb.DuckDBPyConnection, model_version: str, *, actor: str, reason: str) -> None:
    """Record that the promotion check kept `model_version` a candidate, and why."""
    model = get_model(con, model_version)
    current = champion(con, model["modality"])
    _log(con, model["modality"], "refuse", model_version, current["model_version"] if current else None, actor, reason)


def promotion_history(con: duckdb.DuckDBPyConnection, modality: str | None = None, limit: int = 20) -> list[dict]:
    where, args = ("WHERE modality = ?", [modality]) if modality else ("", [])
    rows = con.execute(
        f"SELECT modality, action, model_version, previous_version, actor, reason, acted_at FROM promotions {where} "
        f"ORDER BY acted_at DESC LIMIT {int(limit)}",
        args,
    ).fetchall()
    keys = ("modality", "action", "model_version", "previous_version", "actor", "reason", "acted_at")
    return [{**dict(zip(keys, r, strict=True)), "acted_at": str(r[6])} for r in rows]



def latest_models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One entry per modality: its champion (before the first promotion: its newest model), the latest
    value of each of its metrics, its files.

    The shape is the stable JSON interface of `gen-assets report --json`.
    """
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not {"models", "metrics_history", "batches"} <= tables:
        return []  # nothing trained yet (and a read-only connection cannot create the schema)
    rows = con.execute(
        """
        SELECT model_version, modality, arch, status, created_at, checkpoint_path
        FROM models
        QUALIFY row_number() OVER (
            PARTITION BY modality ORDER BY status = 'champion' DESC, created_at DESC, model_version) = 1
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


TREND_METRICS = {"image": ("fid", "fid_real_floor", "class_accuracy"), "text": ("val_loss", "bleu", "novelty")}


def metric_trend(con: duckdb.DuckDBPyConnection, modality: str, metrics: tuple[str, ...] | None = None) -> list[dict]:
    """One row per evaluated batch of a modality, oldest first: model_version, batch_id, measured_at and
    the metrics (default: TREND_METRICS[modality])."""
    metrics = metrics or TREND_METRICS.get(modality, ())
    rows = con.execute(
        # a batch evaluated again (an unchanged nightly run) counts once, with its latest values
        "SELECT batch_id, model_version, min(first_at) AS first_at, map(list(metric), list(value)) FROM ("
        "    SELECT batch_id, model_version, metric, arg_max(value, measured_at) AS value, min(measured_at) AS first_at"
        "    FROM metrics_history WHERE modality = ? GROUP BY ALL"
        ") GROUP BY batch_id, model_version ORDER BY first_at",
        [modality],
    ).fetchall()
    return [{"model_version": v, "batch_id": b, "measured_at": str(at), **{k: m[k] for k in metrics if k in m}}
            for b, v, at, m in rows]


def registry_summary(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """Per modality: the champion, the candidates registered since it (newest first), the last promotion
    decisions and the metric trend (what `gen-assets report` shows)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not {"models", "metrics_history", "promotions"} <= tables:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for (modality,) in con.execute("SELECT DISTINCT modality FROM models ORDER BY modality").fetchall():
        current = champion(con, modality)
        since = current["created_at"] if current else None
        candidates = con.execute(
            "SELECT model_version, arch, created_at, key_metric, key_value FROM models "
            "WHERE modality = ? AND status = 'candidate' AND (? IS NULL OR created_at > ?) ORDER BY created_at DESC",
            [modality, since, since],
        ).fetchall()
        out[modality] = {
            "champion": None if current is None else {
                "version": current["model_version"], "arch": current["arch"], "created_at": str(current["created_at"]),
                "key_metric": current["key_metric"], "key_value": current["key_value"]},
            "candidates": [{"version": v, "arch": a, "created_at": str(c), "key_metric": k, "key_value": kv}
                           for v, a, c, k, kv in candidates],
            "promotions": promotion_history(con, modality, limit=5),
            "trend": metric_trend(con, modality),
        }
    return out
