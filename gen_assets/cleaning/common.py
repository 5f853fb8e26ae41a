"""What the cleaning runners share: table names pasted into SQL, the split rule, snapshot checks, and
the queries behind the clean tables' asset checks. Pure (DuckDB)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import duckdb

from gen_assets.store.warehouse import sql_literal

Stats = TypeVar("Stats")

SPLITS = ("train", "val", "test")
BUCKETS = 10_000  # the split resolution: a fraction is rounded to 1/10,000


def table_identifier(table: str) -> str:
    """A plain table name, double-quoted for SQL; anything else is refused (it is pasted into SQL)."""
    if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise ValueError(f"invalid table name {table!r}: letters, digits and _ only, not starting with a digit")
    return f'"{table}"'


def split_buckets(val_fraction: float, test_fraction: float) -> tuple[int, int]:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must leave rows for train, got {val_fraction + test_fraction}")
    return round(test_fraction * BUCKETS), round(val_fraction * BUCKETS)


class SplitTooSmall(ValueError):
    """A split the pipeline needs is empty (or nearly) for a category or for the whole table; the cleaning
    that finds it rolls back, so the previous clean table stays."""


def require_split_rows(con: duckdb.DuckDBPyConnection, ident: str, *, by: str | None, min_rows: int,
                       fractions: Mapping[str, float], kind: str) -> None:
    """Raise SplitTooSmall unless each group (each value of column `by`; the whole table when None) has at
    least `min_rows` rows in every split whose fraction is above 0 ("train" always). min_rows 0: no check.
    An empty table passes: having no rows at all is reported on its own."""
    if min_rows <= 0:
        return
    needed = [s for s in SPLITS if s == "train" or fractions.get(s, 0.0) > 0]
    group = by if by is not None else "NULL"
    rows = con.execute(
        f"SELECT {group} AS g, " + ", ".join(f"count(*) FILTER (split = '{s}')" for s in SPLITS)
        + f" FROM {ident} GROUP BY g ORDER BY g"
    ).fetchall()
    short = []
    for g, *counts in rows:
        per_split = dict(zip(SPLITS, counts, strict=True))
        if any(per_split[s] < min_rows for s in needed):
            counts_text = ", ".join(f"{per_split[s]} {s}" for s in SPLITS)
            short.append(f"category {g!r}: {counts_text}" if by is not None else counts_text)
    if not short:
        return
    smallest = min(fractions.get(s, 1.0) for s in needed if s != "train") if len(needed) > 1 else 1.0
    enough = math.ceil(5 * min_rows / smallest)
    who, per = ("Each category", " per category") if by is not None else ("The data", "")
    raise SplitTooSmall(
        f"too few {kind}s to split: {'; '.join(short)}. {who} needs at least {min_rows} row(s) in "
        f"{', '.join(needed)}; each row's split follows its content hash (val_fraction "
        f"{fractions.get('val', 0.0):g}, test_fraction {fractions.get('test', 0.0):g}). Add {kind}s (with about "
        f"{enough} or more{per} a short split is unlikely), or raise val_fraction / test_fraction"
        + (", or merge small categories" if by is not None else "")
    )


def check_snapshot_columns(con: duckdb.DuckDBPyConnection, path: str, columns: tuple[str, ...], kind: str) -> None:
    """A clear error when the snapshot is not Parquet or lacks a column the cleaning SQL reads."""
    try:
        names = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()]
    except duckdb.Error as e:
        raise ValueError(f"{kind} snapshot {path} cannot be read as Parquet: {e}") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{kind} snapshot {path} lacks column(s) {', '.join(missing)}")


def split_fractions(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, float]:
    """Share of the clean rows in each split (train / val / test; all 0.0 for an empty table)."""
    ident = table_identifier(table)
    counts = dict(con.execute(f"SELECT split, count(*) FROM {ident} GROUP BY split").fetchall())
    total = sum(counts.values())
    return {s: (counts.get(s, 0) / total if total else 0.0) for s in SPLITS}


def split_units(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many independent draws the split rule made: one per row, or one per brief in a table with prompts
    (all rows of a brief share its split)."""
    ident = table_identifier(table)
    columns = {r[0] for r in con.execute(f"DESCRIBE {ident}").fetchall()}
    unit = "count(DISTINCT coalesce(prompt, text))" if {"prompt", "text"} <= columns else "count(*)"
    return int(con.execute(f"SELECT {unit} FROM {ident}").fetchone()[0])


def quarantine_rate(con: duckdb.DuckDBPyConnection, asset: str, snapshot_version: str) -> float:
    """Quarantined rows / input rows of the run that cleaned `snapshot_version` into table `asset`.

    The input row count comes from the clean table's comment, written in the same transaction; a table
    built from another snapshot raises ValueError rather than returning a rate about the wrong data.
    """
    ident = table_identifier(asset)
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema()", [asset]
    ).fetchone()
    if row is None:
        raise ValueError(f"no table {ident}: clean snapshot {snapshot_version} first")
    try:
        info = json.loads(row[0] or "{}")
    except json.JSONDecodeError:
        info = {}
    if info.get("snapshot_version") != snapshot_version:
        raise ValueError(
            f"table {ident} was built from snapshot {info.get('snapshot_version')!r}, not {snapshot_version!r}"
        )
    rows_in = int(info["rows_in"])
    quarantined = con.execute(
        "SELECT count(*) FROM quarantine WHERE asset = ? AND snapshot_version = ?", [asset, snapshot_version]
    ).fetchone()[0]
    return quarantined / rows_in if rows_in else 0.0



def run_cleaning(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    variables: Mapping[str, object],
    ident: str,
    temp_tables: tuple[str, ...],
    snapshot_version: str,
    read_stats: Callable[[duckdb.DuckDBPyConnection, str], Stats],
) -> Stats:
    """Run a cleaning SQL file in ONE transaction: the clean table, its quarantine rows and its comment
    (snapshot version and input row count, which quarantine_rate reads) appear together or not at all.

    The values reach the SQL as DuckDB variables (getvariable), reset afterwards.
    """
    for name, value in variables.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            stats = read_stats(con, ident)
            comment = json.dumps({"snapshot_version": snapshot_version, "rows_in": stats.rows_in})
            con.execute(f"COMMENT ON TABLE {ident} IS {sql_literal(comment)}")
            for temp in temp_tables:
                con.execute(f"DROP TABLE IF EXISTS temp.{temp}")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # the original error is the one worth seeing
                con.execute("ROLLBACK")
            raise
    finally:
        for name in variables:
            con.execute(f"RESET VARIABLE {name}")
    return stats
