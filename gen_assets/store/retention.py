"""Retention: remove old model checkpoints and generation batches, keeping what anything still needs.

Per modality, kept:
- models: the champion, the model a rollback would restore (the one the champion replaced), the
  `keep_models` most recently registered models (a reused model counts as registered again), every model a kept model was tuned from (`base_model`,
  recursively) and every model whose batch is kept;
- batches: the `keep_batches` newest, every batch of the champion, every batch with a rated sample
  (the reward models learn from them) and every batch of the curated view.

Pruning a model deletes its checkpoint file and its finished training run folder and marks the registry
row `pruned_at` (the row stays: lineage and metric history keep their meaning). Pruning a batch removes
its row (and so its samples from the `generated` view) and then its Parquet file and grid. The warehouse
changes commit first and the files go after, so a crash in between leaves only orphan files, never a
view that points at a missing file. Files the registry does not list (evaluators, reward models,
tokenizers, raw snapshots) are left alone.

Pure module (DuckDB + files): no dagster import.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from gen_assets.store.files import remove
from gen_assets.store.samples import CURATED_SCHEMA
from gen_assets.store.warehouse import ensure_schema, now, refresh_generated_view, rollback_quietly


@dataclass
class PrunePlan:
    models: list[tuple[str, str]] = field(default_factory=list)  # (model_version, checkpoint path)
    batches: list[tuple[str, str, str | None]] = field(default_factory=list)  # (batch_id, path, grid path)
    training_dirs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"models": [v for v, _ in self.models], "batches": [b for b, _, _ in self.batches],
                "training_dirs": list(self.training_dirs)}


def plan_pruning(con: duckdb.DuckDBPyConnection, training_root: Path, *, keep_models: int, keep_batches: int) -> PrunePlan:
    """What `prune` would remove (nothing is changed)."""
    if keep_models < 1 or keep_batches < 1:
        raise ValueError(f"keep_models and keep_batches must be >= 1, got {keep_models} and {keep_batches}")
    ensure_schema(con)
    con.execute(CURATED_SCHEMA)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    rated = "SELECT DISTINCT g.batch_id FROM feedback f JOIN generated g USING (sample_id)" if "feedback" in tables else None

    batches = con.execute(
        """
        SELECT b.batch_id, b.path, b.grid_path, b.model_version,
               row_number() OVER (PARTITION BY b.modality ORDER BY b.created_at DESC, b.batch_id) AS newest,
               m.status = 'champion' AS of_champion
        FROM batches b LEFT JOIN models m USING (model_version)
        """
    ).fetchall()
    needed = {r[0] for r in con.execute("SELECT DISTINCT batch_id FROM curated_samples").fetchall()}
    if rated:
        needed |= {r[0] for r in con.execute(rated).fetchall()}
    plan = PrunePlan()
    kept_batch_models = set()
    for batch_id, path, grid, model_version, newest, of_champion in batches:
        if newest <= keep_batches or of_champion or batch_id in needed:
            kept_batch_models.add(model_version)
        else:
            plan.batches.append((batch_id, path, grid))

    models = con.execute(
        """
        SELECT model_version, checkpoint_path, status, input_versions,
               row_number() OVER (PARTITION BY modality
                                  ORDER BY coalesce(registered_at, created_at) DESC, model_version) AS newest
        FROM models WHERE pruned_at IS NULL
        """
    ).fetchall()
    base_of = {v: json.loads(inputs or "{}").get("base_model") for v, _, _, inputs, _ in models}
    keep = {v for v, _, status, _, newest in models if status == "champion" or newest <= keep_models}
    keep |= kept_batch_models
    # the model `gen-assets rollback` would restore: the one each champion replaced when promoted
    keep |= {r[0] for r in con.execute(
        "SELECT arg_max(p.previous_version, p.acted_at) FROM promotions p JOIN models m "
        "ON m.model_version = p.model_version AND m.status = 'champion' "
        "WHERE p.action = 'promote' AND p.previous_version IS NOT NULL GROUP BY p.model_version"
    ).fetchall()}
    frontier = list(keep)
    while frontier:  # a kept tuned model keeps the model it was tuned from, and so on
        base = base_of.get(frontier.pop())
        if base and base not in keep:
            keep.add(base)
            frontier.append(base)
    plan.models = [(v, path) for v, path, _, _, _ in models if v not in keep]
    pruned = {v for v, _ in plan.models}
    for done in sorted(Path(training_root).glob("*/*/done.json")) if Path(training_root).is_dir() else []:
        try:
            version = json.loads(done.read_text()).get("version")
        except (OSError, json.JSONDecodeError):
            continue
        if version in pruned:
            plan.training_dirs.append(str(done.parent))
    return plan


def prune(con: duckdb.DuckDBPyConnection, training_root: Path, *, keep_models: int, keep_batches: int,
          dry_run: bool = False) -> PrunePlan:
    """Apply `plan_pruning`: registry and batch rows in one transaction, then the files."""
    plan = plan_pruning(con, training_root, keep_models=keep_models, keep_batches=keep_batches)
    if dry_run or not (plan.models or plan.batches):
        return plan
    con.execute("BEGIN TRANSACTION")
    try:
        stamp = now()
        for version, _ in plan.models:
            con.execute("UPDATE models SET pruned_at = ? WHERE model_version = ?", [stamp, version])
        for batch_id, _, _ in plan.batches:
            con.execute("DELETE FROM batches WHERE batch_id = ?", [batch_id])
        refresh_generated_view(con)
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise
    for _, path in plan.models:
        remove(path)
    for _, path, grid in plan.batches:
        for file in (path, grid):
            if file:
                remove(file)
    for folder in plan.training_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    return plan
