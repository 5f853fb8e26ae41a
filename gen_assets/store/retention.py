"""Retention: remove old model checkpoints and generation batches, keeping what anything still needs.

Per modality, kept:
- models: the champion and a running experiment's challenger, the model a rollback would restore (the
  one the champion replaced), the `keep_models` most recently registered models (a reused model counts
  as registered again), every model a kept model was tuned from (`base_model`, recursively) and every
  model whose batch is kept;
- batches: the `keep_batches` newest, every batch of the champion, every batch with a rated sample
  (the reward models learn from them) and every batch of the curated view.

Pruning a model deletes its checkpoint file and its finished training run folder and marks the registry
row `pruned_at` (the row stays: lineage and metric history keep their meaning). Pruning a batch removes
its row (and so its samples from the `generated` view) and then its Parquet file and grid. The warehouse
changes commit first and the files go after, so a crash in between leaves only orphan files, never a
view that points at a missing file. Files the registry does not list (evaluators, reward models,
tokenizers, raw snapshots) are left alone.

Nothing outside the current home is ever deleted: the connection must be bound to its artifacts root
(gen_assets.store.warehouse.connect), and a file or folder that resolves outside that root and the
training folder is refused (`locations.OutsideHome`) before anything is changed.

Pure module (DuckDB + files): no dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from gen_assets.store import locations, registry
from gen_assets.store.warehouse import ensure_schema


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
    # before the first batch there is no `generated` view, and no rating (ratings name generated samples)
    has_generated = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'generated' "
        "AND database_name = current_database() AND schema_name = current_schema()"
    ).fetchone()[0] > 0

    batches = registry.batches_by_age(con)
    needed = {r[0] for r in con.execute("SELECT DISTINCT batch_id FROM curated_samples").fetchall()}
    if has_generated:
        needed |= {r[0] for r in con.execute(
            "SELECT DISTINCT g.batch_id FROM feedback f JOIN generated g USING (sample_id)").fetchall()}
    plan = PrunePlan()
    kept_batch_models = set()
    for batch_id, path, grid, model_version, age, of_champion in batches:
        if age <= keep_batches or of_champion or batch_id in needed:
            kept_batch_models.add(model_version)
        else:
            plan.batches.append((batch_id, path, grid))

    models = registry.unpruned_models(con)
    base_of = {v: inputs.get("base_model") for v, _, _, inputs, _ in models}
    # the challenger of a running experiment is served to customers: in use like the champion
    keep = {v for v, _, status, _, age in models if status in ("champion", "challenger") or age <= keep_models}
    keep |= kept_batch_models
    keep |= registry.rollback_targets(con)  # the model `gen-assets rollback` would restore
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
    """Apply `plan_pruning`: registry and batch rows in one transaction, then the files.

    Refused (OutsideHome, nothing changed) when the connection has no artifacts root or a file to remove
    lies outside it and `training_root`."""
    plan = plan_pruning(con, training_root, keep_models=keep_models, keep_batches=keep_batches)
    if dry_run or not (plan.models or plan.batches):
        return plan
    root = locations.bound_root(con)
    if root is None:
        raise locations.OutsideHome("prune needs a warehouse connection bound to its home's artifacts "
                                    "(gen_assets.store.warehouse.connect): it deletes nothing it cannot place")
    roots = (root, Path(training_root))
    files = [p for _, p in plan.models] + [f for _, p, g in plan.batches for f in (p, g) if f]
    for path in [*files, *plan.training_dirs]:
        locations.check_inside(path, roots)
    registry.mark_pruned(con, model_versions=[v for v, _ in plan.models], batch_ids=[b for b, _, _ in plan.batches])
    for path in files:
        locations.remove_inside(path, roots)
    for folder in plan.training_dirs:
        locations.rmtree_inside(folder, roots)
    return plan
