"""Text cleaning: run gen_assets/sql/clean_texts.sql on a Parquet snapshot in one DuckDB transaction.

The SQL does the work (normalization, markup, whitespace, masking of personal data, length bounds,
duplicates, the split); this module validates the arguments, binds the variables, owns the transaction
and reads back the statistics. It also holds the readers of the clean table (`load_texts`, `load_briefs`,
`distinct_briefs`, `categories`) and the queries the asset checks use; `split_fractions` and
`quarantine_rate` are the image cleaning's, which work on any clean table.

A row may carry a prompt (the brief its text answers; see gen_assets.sources.texts): the prompt is cleaned
like the text, a row with a prompt and no text is a clean brief without reference copy, duplicates are
keyed on prompt and text together, and the split follows the prompt when there is one, so all rows of
one brief share a split. A corpus without prompts is cleaned exactly as before.

Quarantine rows are recorded under `asset = <table>` (by default "clean_texts"), so a clean table with
another name (a test, the benchmark) never replaces the quarantine rows of the real one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import partial

import duckdb

# One implementation of the table-name guard, the split arithmetic and the generic checks for both
# modalities: the rule "bucket = first 8 hex digits % 10,000, test first, then val" must not drift.
from gen_assets.cleaning.common import (  # noqa: F401 (split_fractions, quarantine_rate: re-exported for the checks; SplitTooSmall for callers)
    SPLITS,
    SplitTooSmall,
    check_snapshot_columns,
    require_split_rows,
    run_cleaning,
    quarantine_rate,
    split_buckets,
    split_fractions,
    table_identifier,
)
from gen_assets.sql import load_sql
from gen_assets.store.files import duckdb_source, location
from gen_assets.store.warehouse import ensure_schema, now

__all__ = [
    "Brief",
    "CleanStats",
    "clean_texts",
    "load_texts",
    "load_briefs",
    "distinct_briefs",
    "categories",
    "duplicate_count",
    "null_count",
    "split_fractions",
    "quarantine_rate",
]

REASON_KINDS = ("undecodable", "missing_category", "too_short", "too_long", "duplicate", "near_duplicate")
SNAPSHOT_COLUMNS = ("source", "row_id", "category", "title", "section", "text", "content_hash", "decode_error")
# optional in a snapshot: one collected before rows had prompts is cleaned as prompt-less
PROMPT_COLUMN = "prompt"
CLEAN_COLUMNS = (
    "row_id", "source", "category", "title", "section", "prompt", "text", "content_hash", "n_chars", "split",
)
# every clean column but title and section, which a document may lack, and prompt and text, of which a row
# needs one (null_count checks that)
REQUIRED_COLUMNS = ("row_id", "source", "category", "content_hash", "n_chars", "split")
_TEMP_TABLES = ("_clean_texts_checked",)
_VERSION_BATCH_ROWS = 65_536
_VARIABLES = (
    "snapshot_path", "snapshot_version", "asset", "min_chars", "max_chars", "test_buckets", "val_buckets",
    "quarantined_at",
)


@dataclass(frozen=True)
class Brief:
    """One clean row as a generator sees it: the brief (None in a corpus without prompts) and its reference
    text (None for a brief without reference copy)."""

    category: str
    prompt: str | None
    text: str | None
    row_id: str


@dataclass(frozen=True)
class CleanStats:
    """What one cleaning run did; `version` is the content hash of the clean table."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    by_reason: dict[str, int] = field(default_factory=dict)  # reason kind (REASON_KINDS) -> rows
    split_counts: dict[str, int] = field(default_factory=dict)  # train / val / test -> rows
    version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def clean_texts(
    con: duckdb.DuckDBPyConnection,
    snapshot_path: str,
    *,
    snapshot_version: str,
    min_chars: int = 20,
    max_chars: int = 20000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_split_rows: int = 0,
    table: str = "clean_texts",
) -> CleanStats:
    """Replace `table` with the clean rows of the snapshot and its quarantine rows, in one transaction.

    Each text and each prompt is NFC-normalized, has e-mail addresses, phone numbers and URLs masked
    (<EMAIL>, <PHONE>, <URL>), markdown markup removed (headings, **bold**, _emphasis_, links) and
    whitespace normalized (single spaces, single newlines, trimmed); a blank prompt is NULL. A row with a
    prompt and no text (NULL, or blank once cleaned) is a clean brief without reference copy (text NULL,
    n_chars 0). A row is quarantined, with the first reason that applies, when it has neither a text nor
    a prompt or its text could not be read (undecodable, or too long to keep: the reader's marker), its
    category is missing or blank, its cleaned text's length is outside [min_chars, max_chars] (a brief
    without text aside), or it repeats an earlier row's cleaned prompt and text exactly or up to case,
    punctuation and spacing (first by row_id stays; the reason names it). Categories are trimmed and
    lower-cased. Clean rows get a split from their cleaned prompt, or their cleaned text when they have no
    prompt: bucket = first 8 hex digits of sha256(prompt or text) % 10,000; bucket < test -> "test", then
    "val", then "train". All rows of one brief thus share a split, and a corpus without prompts splits as
    it always did.
    With `min_split_rows` > 0, fewer clean rows than that in train, val or test (over all categories: the
    text models train and validate across them; a split whose fraction is 0 aside) raises SplitTooSmall.
    If anything fails, the previous clean table and quarantine rows are left exactly as they were.
    """
    ident = table_identifier(table)
    if table in _TEMP_TABLES:
        raise ValueError(f"table name {table!r} is reserved for the cleaning's own temporary table")
    test_buckets, val_buckets = split_buckets(val_fraction, test_fraction)
    for name, value in (("min_chars", min_chars), ("max_chars", max_chars)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if min_chars > max_chars:
        raise ValueError(f"min_chars ({min_chars}) is larger than max_chars ({max_chars})")
    if not location(snapshot_path).is_file():
        raise FileNotFoundError(f"text snapshot {snapshot_path} does not exist")
    readable = duckdb_source(con, snapshot_path)  # a path, or a URL DuckDB reads (httpfs / fsspec)
    check_snapshot_columns(con, readable, SNAPSHOT_COLUMNS, "text")
    has_prompt = PROMPT_COLUMN in {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)",
                                                             [readable]).fetchall()}
    ensure_schema(con)

    variables = {
        "snapshot_path": readable,
        "snapshot_version": snapshot_version,
        "asset": table,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "test_buckets": test_buckets,
        "val_buckets": val_buckets,
        "quarantined_at": now(),
    }
    sql = load_sql("clean_texts").replace("{table}", ident)
    sql = sql.replace("{prompt}", f'"{PROMPT_COLUMN}"' if has_prompt else "NULL::VARCHAR")
    return run_cleaning(con, sql, variables=variables, ident=ident, temp_tables=_TEMP_TABLES,
                        snapshot_version=snapshot_version,
                        read_stats=partial(_read_stats, min_split_rows=min_split_rows,
                                           fractions={"val": val_fraction, "test": test_fraction}))


def load_texts(
    con: duckdb.DuckDBPyConnection, *, split: str | None = None, table: str = "clean_texts"
) -> list[tuple[str, str]]:
    """(category, text) of the clean documents that have a text (all, or one split), in row_id order; a
    brief without reference copy has none and is left out (see `load_briefs`)."""
    ident = table_identifier(table)
    where, params = _split_filter(split)
    rows = con.execute(
        f"SELECT category, text FROM {ident} WHERE text IS NOT NULL {where} ORDER BY row_id, source", params
    ).fetchall()
    return [(category, text) for category, text in rows]


def load_briefs(
    con: duckdb.DuckDBPyConnection, *, split: str | None = None, table: str = "clean_texts"
) -> list[Brief]:
    """Every clean row (all, or one split) as a Brief (category, prompt, text, row_id), in row_id order:
    reference texts with their brief, briefs without reference copy (text None), and in a corpus without
    prompts texts with prompt None."""
    ident = table_identifier(table)
    where, params = _split_filter(split)
    rows = con.execute(
        f"SELECT category, prompt, text, row_id FROM {ident} WHERE true {where} ORDER BY row_id, source", params
    ).fetchall()
    return [Brief(category, prompt, text, row_id) for category, prompt, text, row_id in rows]


def distinct_briefs(briefs: Iterable[Brief]) -> list[tuple[str, str | None]]:
    """The distinct (category, prompt) pairs of `briefs`, in first-seen order: one entry per brief to write
    for (and one per category, prompt None, in a corpus without prompts)."""
    return list(dict.fromkeys((b.category, b.prompt) for b in briefs))


def categories(con: duckdb.DuckDBPyConnection, table: str = "clean_texts") -> list[str]:
    """The distinct categories of the clean table, sorted."""
    ident = table_identifier(table)
    return sorted(r[0] for r in con.execute(f"SELECT DISTINCT category FROM {ident}").fetchall())


# ---- queries for the asset checks (split_fractions and quarantine_rate: see the imports) ----------------


def duplicate_count(con: duckdb.DuckDBPyConnection, table: str = "clean_texts") -> int:
    """Rows whose prompt and text repeat another row's up to case, punctuation and spacing (0 after
    cleaning); NULLs are equal here (two briefs without text, two texts without a brief)."""
    ident = table_identifier(table)
    letters = r"regexp_replace(lower({}), '[^\p{{L}}\p{{N}}]', '', 'g')"
    distinct = f"SELECT DISTINCT {letters.format('prompt')}, {letters.format('text')} FROM {ident}"
    return int(con.execute(f"SELECT (SELECT count(*) FROM {ident}) - (SELECT count(*) FROM ({distinct}))")
               .fetchone()[0])


def null_count(con: duckdb.DuckDBPyConnection, table: str = "clean_texts") -> int:
    """Rows with a NULL in a required column, a blank category, or neither a text nor a prompt (NULL or
    blank) (0 after cleaning)."""
    ident = table_identifier(table)
    any_null = " OR ".join(f"{c} IS NULL" for c in REQUIRED_COLUMNS)
    neither = "(coalesce(trim(text), '') = '' AND coalesce(trim(prompt), '') = '')"
    query = f"SELECT count(*) FROM {ident} WHERE {any_null} OR trim(category) = '' OR {neither}"
    return int(con.execute(query).fetchone()[0])


# ---- helpers ---------------------------------------------------------------------------------------------


def _split_filter(split: str | None) -> tuple[str, list]:
    """(" AND split = ?", [split]) for one split, ("", []) for all; an unknown split is refused."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    return ("AND split = ?", [split]) if split is not None else ("", [])


def _read_stats(con: duckdb.DuckDBPyConnection, ident: str, *, min_split_rows: int,
                fractions: dict[str, float]) -> CleanStats:
    require_split_rows(con, ident, by=None, min_rows=min_split_rows, fractions=fractions, kind="text")
    rows_in, rows_clean = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason_kind IS NULL) FROM _clean_texts_checked"
    ).fetchone()
    by_reason = dict(
        con.execute(
            "SELECT reason_kind, count(*) FROM _clean_texts_checked WHERE reason_kind IS NOT NULL "
            "GROUP BY reason_kind ORDER BY reason_kind"
        ).fetchall()
    )
    splits = dict(con.execute(f"SELECT split, count(*) FROM {ident} GROUP BY split").fetchall())
    return CleanStats(
        rows_in=int(rows_in),
        rows_clean=int(rows_clean),
        rows_quarantined=int(rows_in - rows_clean),
        by_reason={k: int(v) for k, v in by_reason.items()},
        split_counts={s: int(splits.get(s, 0)) for s in SPLITS},
        version=_table_version(con, ident),
    )


def _table_version(con: duckdb.DuckDBPyConnection, ident: str) -> str:
    """sha256 over what load_briefs returns, in its order, plus the split: the clean table's content hash.

    Row ids are in it because they set the order training sees the documents in. One line per row
    (row_id, category, split, sha256 of the text or '' without one, and sha256 of the prompt only when there
    is one, so a table without prompts keeps the version it always had; fields joined by chr(31), lines by
    chr(30)), hashed as the sorted rows stream out in batches: an ordered string_agg would hold every line
    in memory at once, which is what stopped a corpus larger than DuckDB's memory_limit from being cleaned.
    """
    h = hashlib.sha256()
    reader = con.sql(
        f"SELECT row_id || chr(31) || category || chr(31) || split || chr(31) || coalesce(sha256(text), '')"
        f" || CASE WHEN prompt IS NULL THEN '' ELSE chr(31) || sha256(prompt) END AS line "
        f"FROM {ident} ORDER BY row_id, source"
    ).to_arrow_reader(_VERSION_BATCH_ROWS)
    first = True
    for batch in reader:
        lines = batch.column(0).to_pylist()
        if not lines:
            continue
        h.update(("" if first else "\x1e").encode() + "\x1e".join(lines).encode())
        first = False
    return h.hexdigest()
