"""The model registry: every read and write of the tables `models`, `batches`, `metrics_history` and
`promotions` (their schema: gen_assets.store.warehouse.SCHEMA).

A model enters the registry as a candidate (`register_model`). It becomes the champion of its modality
through `promote`: called by the `<modality>_champion` asset (gen_assets.rules.promotion.review) when the
candidate's key metric is not worse than the champion's beyond the tolerance, or by a person (`gen-assets
promote`). `rollback` gives the championship back to the previous champion. Every change, and every
promotion the rule refused, is a row of `promotions` with who and when. The champion asset reads
`champion()` and hands the champion to generation; generation registers its batches (`register_batch`,
which redefines the `generated` view), evaluation its metrics (`record_metrics`). Retention
(store/retention.py) reads what it may prune here and marks it pruned with `mark_pruned`; the report,
the review page and `gen-assets lineage` read here too.

Artifact paths are stored relative to the artifacts root the connection is bound to and resolved
against it when read (gen_assets.store.locations): every function here takes and returns absolute
paths (or URLs). `migrate_stored_paths` rewrites an old warehouse's absolute paths once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import duckdb

from gen_assets.store import locations
from gen_assets.store.files import Location
from gen_assets.store.warehouse import define_generated_view, ensure_schema, now, rollback_quietly

log = logging.getLogger(__name__)

MODEL_COLUMNS = ("model_version", "modality", "arch", "status", "created_at", "checkpoint_path", "checkpoint_sha",
                 "config", "input_versions", "feedback_version", "details", "key_metric", "key_value", "pruned_at",
                 "gate_profile")


def _resolve(con: duckdb.DuckDBPyConnection, stored: str | None) -> str | None:
    """A stored artifact path as an absolute path or URL under the connection's artifacts root."""
    return locations.resolve(stored, locations.bound_root(con))


def _stored(con: duckdb.DuckDBPyConnection, path: str | None) -> str | None:
    """An artifact path as stored: relative to the connection's artifacts root."""
    return None if path is None else locations.to_stored(path, locations.bound_root(con))


def _model_dict(con: duckdb.DuckDBPyConnection, row: tuple) -> dict[str, Any]:
    m = dict(zip(MODEL_COLUMNS, row, strict=True))
    for key in ("config", "input_versions", "details"):
        m[key] = json.loads(m[key]) if m[key] else {}
    m["checkpoint_path"] = _resolve(con, m["checkpoint_path"])
    return m


def get_model(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any]:
    """The registry row of a model version; KeyError naming it when there is none."""
    row = con.execute(f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE model_version = ?", [model_version]).fetchone()
    if row is None:
        raise KeyError(f"no model {model_version!r} in the registry")
    return _model_dict(con, row)


def champion(con: duckdb.DuckDBPyConnection, modality: str) -> dict[str, Any] | None:
    """The champion of a modality (the model generation and curation use), or None before the first."""
    row = con.execute(
        f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE modality = ? AND status = 'champion'", [modality]
    ).fetchone()
    return _model_dict(con, row) if row else None


# -- registering models, batches and measurements ---------------------------------------------------------


def register_model(
    con: duckdb.DuckDBPyConnection,
    *,
    model_version: str,
    modality: str,
    arch: str,
    config: Mapping,
    input_versions: Mapping[str, str],
    checkpoint_path: str,
    checkpoint_sha: str,
    details: Mapping | None = None,
) -> None:
    """Add a model to the registry as a candidate; a model already registered keeps its status.

    Only a promotion (`promote`: the champion asset's rule, or a person) makes a model champion.
    `registered_at` moves every time (a reused model is in use again, which retention counts),
    `created_at` stays the first registration."""
    ensure_schema(con)
    stamp = now()
    con.execute(
        """
        INSERT INTO models (model_version, modality, arch, config, input_versions, feedback_version, details,
                            checkpoint_path, checkpoint_sha, status, created_at, registered_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'candidate', ?, ?)
        ON CONFLICT (model_version) DO UPDATE SET
            checkpoint_path = excluded.checkpoint_path, checkpoint_sha = excluded.checkpoint_sha,
            details = excluded.details, pruned_at = NULL, registered_at = excluded.registered_at
        """,
        [
            model_version,
            modality,
            arch,
            json.dumps(dict(config), default=str),
            json.dumps(dict(input_versions)),
            input_versions.get("feedback"),
            json.dumps(dict(details or {}), default=str),
            _stored(con, checkpoint_path),
            checkpoint_sha,
            stamp,
            stamp,
        ],
    )


def refresh_generated_view(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)define `generated` over every registered batch file of every modality, oldest first."""
    rows = con.execute("SELECT modality, path FROM batches ORDER BY created_at, batch_id").fetchall()
    define_generated_view(con, rows)


def register_batch(
    con: duckdb.DuckDBPyConnection,
    *,
    batch_id: str,
    modality: str,
    model_version: str,
    path: str,
    grid_path: str | None,
    n_samples: int,
) -> None:
    """Add a generation batch (its Parquet file) and its samples to `generated`, in one transaction."""
    ensure_schema(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            [batch_id, modality, model_version, _stored(con, path), _stored(con, grid_path), n_samples, now()],
        )
        refresh_generated_view(con)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise


def record_metrics(
    con: duckdb.DuckDBPyConnection,
    *,
    model_version: str,
    modality: str,
    metrics: Mapping[str, float],
    batch_id: str | None,
) -> None:
    """Append one metrics_history row per metric, all with the same measurement time."""
    ensure_schema(con)
    ts = now()
    rows = [(model_version, modality, k, float(v), batch_id, ts) for k, v in metrics.items()]
    con.executemany("INSERT INTO metrics_history VALUES (?, ?, ?, ?, ?, ?)", rows)


def record_gate_profile(con: duckdb.DuckDBPyConnection, model_version: str, profile: str) -> None:
    """Remember under which profile's gate a champion was decided (models.gate_profile, which registering the
    model again leaves alone): a later run under another profile may not loosen that gate
    (gen_assets.project.effective)."""
    con.execute("UPDATE models SET gate_profile = ? WHERE model_version = ?", [profile, model_version])


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
    when the champion changed meanwhile (a person, or another run): the review compared
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
    """Record that the champion asset's review kept `model_version` a candidate, and why."""
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


# -- experiments: a challenger that passed the offline gate, against the champion, on live traffic --------

EXPERIMENT_COLUMNS = ("experiment_id", "modality", "champion_version", "challenger_version", "allocation",
                      "challenger_share", "status", "started_at", "decided_at", "decided_by", "reason", "figures")


def start_experiment(con: duckdb.DuckDBPyConnection, challenger_version: str, *, allocation: str,
                     challenger_share: float, actor: str, reason: str) -> str:
    """Make `challenger_version` its modality's challenger against the current champion; one transaction.

    A modality runs one experiment at a time: a running one is ended first (status 'replaced', its
    challenger back to candidate). Returns the experiment id."""
    if allocation not in ("bandit", "fixed"):
        raise ValueError(f"allocation must be 'bandit' or 'fixed', got {allocation!r}")
    if not 0.0 < challenger_share < 1.0:
        raise ValueError(f"challenger_share must be between 0 and 1, got {challenger_share}")
    ensure_schema(con)
    con.execute("BEGIN TRANSACTION")
    try:
        model = get_model(con, challenger_version)
        modality = model["modality"]
        current = champion(con, modality)
        if current is None:
            raise ValueError(f"no {modality} champion to run an experiment against")
        if current["model_version"] == challenger_version:
            raise ValueError(f"{challenger_version} is the champion already")
        for old in _running(con, modality):
            _close(con, old, "replaced", actor, f"replaced by an experiment of {challenger_version}", {})
        experiment_id = f"exp-{modality}-{now():%Y%m%d%H%M%S}-{challenger_version[-6:]}"
        con.execute("INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, 'running', ?, NULL, ?, ?, NULL)",
                    [experiment_id, modality, current["model_version"], challenger_version, allocation,
                     float(challenger_share), now(), actor, reason])
        con.execute("UPDATE models SET status = 'challenger' WHERE model_version = ?", [challenger_version])
        _log(con, modality, "experiment", challenger_version, current["model_version"], actor, reason)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
    return experiment_id


def _running(con: duckdb.DuckDBPyConnection, modality: str) -> list[dict]:
    rows = con.execute(f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE modality = ? "
                       "AND status = 'running' ORDER BY started_at", [modality]).fetchall()
    return [_experiment_dict(r) for r in rows]


def _experiment_dict(row: tuple) -> dict[str, Any]:
    d = dict(zip(EXPERIMENT_COLUMNS, row, strict=True))
    d["figures"] = json.loads(d["figures"]) if d["figures"] else {}
    d["champion"], d["challenger"] = d["champion_version"], d["challenger_version"]
    for k in ("started_at", "decided_at"):
        d[k] = None if d[k] is None else str(d[k])
    return d


def _close(con, experiment: dict, status: str, actor: str, reason: str, figures: Mapping) -> None:
    con.execute("UPDATE experiments SET status = ?, decided_at = ?, decided_by = ?, reason = ?, figures = ? "
                "WHERE experiment_id = ?", [status, now(), actor, reason, _figures_json(figures),
                                            experiment["experiment_id"]])
    # the challenger goes back to being a candidate that lost (retired), unless it became champion
    con.execute("UPDATE models SET status = 'retired' WHERE model_version = ? AND status = 'challenger'",
                [experiment["challenger_version"]])


def _figures_json(figures: Mapping) -> str:
    """JSON of an experiment's figures; a rate of an arm with no impressions (NaN) is null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(dict(figures)), default=str)


def running_experiments(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """modality -> its running experiment (experiment_id, champion, challenger, allocation, ...)."""
    rows = con.execute(f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE status = 'running' "
                       "ORDER BY started_at").fetchall()
    return {e["modality"]: e for e in map(_experiment_dict, rows)}


def record_experiment_figures(con: duckdb.DuckDBPyConnection, experiment_id: str, figures: Mapping) -> None:
    """The latest figures of a running experiment (rates, intervals, probability to beat), for the dashboard."""
    con.execute("UPDATE experiments SET figures = ? WHERE experiment_id = ?", [_figures_json(figures), experiment_id])


def end_experiment(con: duckdb.DuckDBPyConnection, experiment_id: str, *, outcome: str, actor: str, reason: str,
                   figures: Mapping) -> str | None:
    """End a running experiment; one transaction. outcome 'promote': the challenger becomes champion (the
    promotion's reason carries the experiment's figures); 'retire': the champion stays; 'stop': a person
    stopped it (the champion stays). Returns the champion it ended with."""
    if outcome not in ("promote", "retire", "stop"):
        raise ValueError(f"outcome must be promote, retire or stop, got {outcome!r}")
    row = con.execute(f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE experiment_id = ?",
                      [experiment_id]).fetchone()
    if row is None:
        raise KeyError(f"no experiment {experiment_id!r}")
    experiment = _experiment_dict(row)
    if experiment["status"] != "running":
        raise ValueError(f"experiment {experiment_id} is {experiment['status']} already, not running")
    if outcome == "promote":
        promote(con, experiment["challenger_version"], actor=actor, reason=reason,
                expected_previous=experiment["champion_version"])
    con.execute("BEGIN TRANSACTION")
    try:
        status = {"promote": "promoted", "retire": "retired", "stop": "stopped"}[outcome]
        _close(con, experiment, status, actor, reason, figures)
        if outcome != "promote":
            _log(con, experiment["modality"], "retire" if outcome == "retire" else "stop",
                 experiment["challenger_version"], experiment["champion_version"], actor, reason)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
    return experiment["challenger_version"] if outcome == "promote" else experiment["champion_version"]


def experiment_of(con: duckdb.DuckDBPyConnection, challenger_version: str) -> dict[str, Any] | None:
    """The latest experiment `challenger_version` was the challenger of (None: never)."""
    row = con.execute(f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE challenger_version = ? "
                      "ORDER BY started_at DESC LIMIT 1", [challenger_version]).fetchone()
    return None if row is None else _experiment_dict(row)


def experiment_history(con: duckdb.DuckDBPyConnection, modality: str | None = None, limit: int = 10) -> list[dict]:
    where, args = ("WHERE modality = ?", [modality]) if modality else ("", [])
    rows = con.execute(f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments {where} "
                       f"ORDER BY started_at DESC LIMIT {int(limit)}", args).fetchall()
    return [_experiment_dict(r) for r in rows]


# -- what retention reads and writes (store/retention.py decides) ----------------------------------------


def batches_by_age(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str | None, str, int, bool]]:
    """Every batch as (batch_id, path, grid_path, model_version, age, of_champion): age 1 is the newest
    batch of its modality; of_champion tells whether its model is the champion now."""
    rows = con.execute(
        """
        SELECT b.batch_id, b.path, b.grid_path, b.model_version,
               row_number() OVER (PARTITION BY b.modality ORDER BY b.created_at DESC, b.batch_id) AS age,
               coalesce(m.status = 'champion', false) AS of_champion
        FROM batches b LEFT JOIN models m USING (model_version)
        """
    ).fetchall()
    return [(b, _resolve(con, path), _resolve(con, grid), v, age, champ) for b, path, grid, v, age, champ in rows]


def unpruned_models(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, dict, int]]:
    """Every model whose checkpoint is still there, as (model_version, checkpoint_path, status,
    input_versions, age): age 1 is the most recently registered model of its modality (a reused model
    counts as registered again)."""
    rows = con.execute(
        """
        SELECT model_version, checkpoint_path, status, input_versions,
               row_number() OVER (PARTITION BY modality
                                  ORDER BY coalesce(registered_at, created_at) DESC, model_version) AS age
        FROM models WHERE pruned_at IS NULL
        """
    ).fetchall()
    return [(v, _resolve(con, path), status, json.loads(inputs or "{}"), age) for v, path, status, inputs, age in rows]


def rollback_targets(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The models `rollback` would restore: for each champion, the champion it replaced when last promoted."""
    return {r[0] for r in con.execute(
        "SELECT arg_max(p.previous_version, p.acted_at) FROM promotions p JOIN models m "
        "ON m.model_version = p.model_version AND m.status = 'champion' "
        "WHERE p.action = 'promote' AND p.previous_version IS NOT NULL GROUP BY p.model_version"
    ).fetchall()}


def mark_pruned(con: duckdb.DuckDBPyConnection, *, model_versions: Iterable[str], batch_ids: Iterable[str]) -> None:
    """In one transaction: mark the models' checkpoints pruned (the rows stay, for lineage and metric
    history) and remove the batches, and with them their samples from `generated`."""
    con.execute("BEGIN TRANSACTION")
    try:
        stamp = now()
        for version in model_versions:
            con.execute("UPDATE models SET pruned_at = ? WHERE model_version = ?", [stamp, version])
        for batch_id in batch_ids:
            con.execute("DELETE FROM batches WHERE batch_id = ?", [batch_id])
        refresh_generated_view(con)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise


# -- what the report and the review page read ------------------------------------------------------------


def latest_batches(con: duckdb.DuckDBPyConnection, limit: int = 10) -> list[dict[str, Any]]:
    """The newest generation batches, newest first: batch_id, modality, model_version, n_samples, created_at."""
    rows = con.execute(
        "SELECT batch_id, modality, model_version, n_samples, created_at FROM batches "
        f"ORDER BY created_at DESC, batch_id LIMIT {int(limit)}"
    ).fetchall()
    keys = ("batch_id", "modality", "model_version", "n_samples", "created_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def last_retrain(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, datetime]]:
    """modality -> (model_version, created_at) of the newest model tuned on feedback (what a retrain
    registers). A warehouse from before the feedback loop has no feedback_version column: no retrain then."""
    try:
        rows = con.execute(
            "SELECT modality, arg_max(model_version, created_at), max(created_at) FROM models "
            "WHERE feedback_version IS NOT NULL GROUP BY modality ORDER BY modality"
        ).fetchall()
    except duckdb.BinderException:
        return {}
    return {m: (v, at) for m, v, at in rows}


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
        artifacts = {"checkpoint": _resolve(con, checkpoint)}
        if batch:
            artifacts["samples"] = _resolve(con, batch[0])
            if batch[1]:
                artifacts["grid"] = _resolve(con, batch[1])
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
    versions and raw sources each was trained on, and the feedback files that influenced it: exactly
    the files of the feedback versions the chain was tuned on (input_versions["feedback"]), as
    `record_feedback_version` (gen_assets.feedback.ingest) recorded them. A version whose files were
    never recorded (tuned before versions recorded them) is listed in `unrecorded_feedback_versions`."""
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
                       "checkpoint": _resolve(con, m[4]), "inputs": inputs})
        if inputs.get("feedback"):
            feedback_versions.append(inputs["feedback"])
        version = inputs.get("base_model")
    files, recorded = [], set()
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if feedback_versions and {"feedback_versions", "feedback_files"} <= tables:
        recorded = {r[0] for r in con.execute(
            "SELECT feedback_version FROM feedback_versions WHERE list_contains(?::VARCHAR[], feedback_version)",
            [feedback_versions],
        ).fetchall()}
        files = [
            {"file": name, "sha256": sha, "ratings": ok, "ingested_at": str(at)}
            for name, sha, ok, at in con.execute(
                "SELECT f.file_name, f.file_sha, f.rows_ok, f.ingested_at FROM feedback_files f "
                "WHERE f.file_sha IN (SELECT unnest(file_shas) FROM feedback_versions "
                "                     WHERE list_contains(?::VARCHAR[], feedback_version)) "
                "ORDER BY f.ingested_at, f.file_sha",
                [feedback_versions],
            ).fetchall()
        ]
    return {"sample_id": sample_id, "modality": modality, "category": category, "batch_id": batch_id,
            "created_at": str(created_at), "models": models, "feedback_files": files,
            "unrecorded_feedback_versions": [v for v in dict.fromkeys(feedback_versions) if v not in recorded]}


TREND_METRICS = {"image": ("fid", "fid_real_floor", "class_accuracy"), "text": ("bits_per_byte", "degenerate_share", "novelty")}


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
            "experiments": experiment_history(con, modality, limit=3) if "experiments" in tables else [],
        }
    return out


# -- making an old warehouse's absolute paths relative (once) ------------------------------------------

STORED_PATH_COLUMNS = (("models", "model_version", "checkpoint_path"), ("batches", "batch_id", "path"),
                       ("batches", "batch_id", "grid_path"))


def _absolute_where(column: str) -> str:
    return f"({column} LIKE '/%' OR {column} LIKE '%://%' OR regexp_matches({column}, '^[A-Za-z]:[\\\\/]'))"


def needs_path_migration(con: duckdb.DuckDBPyConnection) -> bool:
    """True for a warehouse written before paths were relative: absolute artifact paths, never migrated."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    if "path_migrations" in tables and con.execute("SELECT count(*) FROM path_migrations").fetchone()[0]:
        return False
    return any(
        con.execute(f"SELECT count(*) FROM {table} WHERE {_absolute_where(column)}").fetchone()[0]
        for table, _, column in STORED_PATH_COLUMNS if table in tables
    )


def migrate_stored_paths(con: duckdb.DuckDBPyConnection, root: Location) -> tuple[int, list[str]]:
    """Rewrite the absolute artifact paths of an old warehouse relative to `root`, in one transaction.

    A path under `root` becomes relative to it; a path outside it (the home was moved before this
    migration) is rebased when its part under "artifacts/" exists under `root`, else left as it is and
    reported. The `generated` view is redefined and the migration recorded, so it happens once.
    Returns (paths rewritten, paths left)."""
    ensure_schema(con)
    migrated, left = 0, []
    con.execute("BEGIN TRANSACTION")
    try:
        for table, key, column in STORED_PATH_COLUMNS:
            rows = con.execute(f"SELECT {key}, {column} FROM {table} WHERE {_absolute_where(column)}").fetchall()
            for row_key, stored in rows:
                resolved = locations.resolve(stored, root)
                try:
                    relative = locations.to_stored(resolved, root)
                except locations.OutsideHome:
                    left.append(stored)
                    continue
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", [relative, row_key])
                migrated += 1
        # quarantine.source names a batch file (curation) or a raw data source: only artifact files change
        for (source,) in con.execute(f"SELECT DISTINCT source FROM quarantine WHERE {_absolute_where('source')}").fetchall():
            relative = locations.to_stored_if_inside(locations.resolve(source, root), root)
            if relative != source and not locations.is_absolute(relative):
                migrated += con.execute("UPDATE quarantine SET source = ? WHERE source = ?",
                                        [relative, source]).fetchone()[0]
        refresh_generated_view(con)
        con.execute("INSERT INTO path_migrations VALUES (?, ?, ?, ?)", [now(), str(root), migrated, left])
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
    message = f"migrated {migrated} stored paths to relative paths under the artifacts location {root}"
    if left:
        message += (f"; left {len(left)} absolute paths whose files are not in this home: "
                    + ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
    log.warning(message)
    return migrated, left
