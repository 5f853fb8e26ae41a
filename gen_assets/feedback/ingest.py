"""Ingest rating files from the landing zone into DuckDB: one transaction per file, then the file moves.

Tables (declared with the rest of the warehouse in gen_assets.store.warehouse):
- feedback:       one row per accepted rating, with the modality of its sample (from `generated`) and
                  where it came from (file_name, file_sha, line).
- feedback_files: one row per ingested file content (file_sha is the primary key).
- feedback_versions: the feedback asset's data version and exactly which files it stands for
                  (`record_feedback_version`), so a model's lineage names the files it was tuned on.
- quarantine:     the shared table; refused rows land there with asset='feedback', source=<file name>,
                  row_id=<line number>, snapshot_version=<file sha>, reason, content_hash=sha256(line).

Why a crash at any point loses no rating and duplicates none: a file's good rows, its quarantined rows
and its feedback_files row are written in one transaction; the file leaves incoming/ only after that
commits. A crash before the commit leaves nothing behind and the file still waiting; a crash between
the commit and the move leaves the file waiting but its sha recorded, so the next run inserts nothing
and only moves it. The same content landed twice (under any name) is ingested once, for the same reason.

A file with a structural problem (see landing.py), or whose content fails the insert itself, is moved
to failed/ whole; one quarantine row (row_id NULL) records why, so it shows up next to every other
refused row. A rating already ingested from another file (the same (sample_id, user_id, ts)) is
quarantined as "duplicate of a rating in <file>", never counted twice.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from gen_assets.feedback.landing import (
    FeedbackFileError,
    FeedbackPaths,
    check_records,
    file_sha,
    landing_files,
    mtime_utc,
    parse_records,
    stable_text,
)
from gen_assets.store import registry
from gen_assets.store import warehouse as wh

ASSET = "feedback"  # the quarantine rows' asset name
# errors that a file's content causes while it is ingested (a value no check caught): the file goes to
# failed/ with the error as its reason, instead of failing every run while newer files wait behind it
CONTENT_ERRORS = (ValueError, TypeError, pa.ArrowException, duckdb.DataError, duckdb.IntegrityError)

FEEDBACK_COLUMNS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("rating", pa.int32()),
        ("user_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("comment", pa.string()),
        ("modality", pa.string()),
        ("file_name", pa.string()),
        ("file_sha", pa.string()),
        ("line", pa.int32()),
        ("ingested_at", pa.timestamp("us")),
    ]
)


@dataclass(frozen=True)
class IngestResult:
    file_name: str
    file_sha: str
    rows_ok: int
    rows_quarantined: int
    already_ingested: bool  # its content was ingested before: nothing inserted, the file only moved
    error: str | None = None  # a structural problem: the file went to failed/, nothing inserted
    path: str | None = None  # where the file is now
    by_modality: dict[str, int] = field(default_factory=dict)  # accepted ratings per modality


def ensure_feedback_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse tables (the feedback tables among them) and, if there is none yet, the `generated` view."""
    wh.ensure_schema(con)
    if not _exists(con, "generated"):
        registry.refresh_generated_view(con)


def _exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether a table or view exists; the read helpers use it so they also work on read-only connections."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema() AND table_catalog = current_database()",
        [name],
    ).fetchone()
    return row[0] > 0


def sample_modalities(con: duckdb.DuckDBPyConnection, sample_ids: list[str]) -> dict[str, str]:
    """sample_id -> modality for the ids found in `generated` (none when the view does not exist yet)."""
    ids = sorted(set(sample_ids))
    if not ids or not _exists(con, "generated"):
        return {}
    rows = con.execute(
        "SELECT sample_id, any_value(modality) FROM generated "
        "WHERE sample_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY sample_id",
        [ids],
    ).fetchall()
    return dict(rows)


def _ingested(con: duckdb.DuckDBPyConnection, sha: str) -> tuple[int, int] | None:
    row = con.execute("SELECT rows_ok, rows_quarantined FROM feedback_files WHERE file_sha = ?", [sha]).fetchone()
    return None if row is None else (row[0], row[1])


def _move(path: Path, directory: Path, sha: str) -> Path:
    """Move a file out of incoming/ into `directory`, keeping its name unless another file has it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / path.name
    if target.exists():
        if file_sha(target.read_bytes()) == sha:  # the same content is already there
            path.unlink(missing_ok=True)
            return target
        target = directory / f"{path.stem}.{sha[:8]}{path.suffix}"
    os.replace(path, target)
    return target


def _already_ingested(path: Path, processed_dir: Path, sha: str, counts: tuple[int, int]) -> IngestResult:
    """The file's content is in the warehouse already (e.g. a crash came after the commit): only move it."""
    moved = _move(path, processed_dir, sha)
    return IngestResult(path.name, sha, counts[0], counts[1], already_ingested=True, path=str(moved))


def ingest_file(con: duckdb.DuckDBPyConnection, path: str | Path, processed_dir: str | Path) -> IngestResult:
    """Ingest one rating file in one transaction, then move it to processed_dir.

    Raises FeedbackFileError on a structural problem (nothing written, the file stays where it is;
    `ingest_pending` moves such files to failed/). Any other failure rolls the transaction back and
    leaves the file where it is, for the next run.
    """
    ensure_feedback_schema(con)
    path, processed_dir = Path(path), Path(processed_dir)
    data = path.read_bytes()
    sha = file_sha(data)
    name = path.name
    done = _ingested(con, sha)
    if done is not None:
        return _already_ingested(path, processed_dir, sha, done)
    # parsed before the transaction: a structural problem raises with nothing begun
    checked = check_records(parse_records(name, data), default_ts=mtime_utc(path))
    ingested_at = wh.now()
    con.execute("BEGIN TRANSACTION")
    try:
        done = _ingested(con, sha)
        if done is not None:  # another run got there first
            con.execute("ROLLBACK")
            return _already_ingested(path, processed_dir, sha, done)
        modality = sample_modalities(con, [c.rating.sample_id for c in checked if c.rating is not None])
        earlier = _rated_before(con, [c.rating for c in checked if c.rating is not None])
        good, bad = [], []
        for c in checked:
            if c.rating is not None and c.rating.sample_id not in modality:
                bad.append((c.record, f"unknown sample_id {c.rating.sample_id!r} (not in generated)"))
            elif c.rating is not None and _rating_key(c.rating) in earlier:
                bad.append((c.record, f"duplicate of a rating in {earlier[_rating_key(c.rating)]}"))
            elif c.rating is not None:
                good.append((c.record.line, c.rating))
            else:
                bad.append((c.record, c.reason))
        if good:
            table = pa.table(
                {
                    "sample_id": [r.sample_id for _, r in good],
                    "rating": [r.rating for _, r in good],
                    "user_id": [r.user_id for _, r in good],
                    "ts": [r.ts for _, r in good],
                    "comment": [r.comment for _, r in good],
                    "modality": [modality[r.sample_id] for _, r in good],
                    "file_name": [name] * len(good),
                    "file_sha": [sha] * len(good),
                    "line": [line for line, _ in good],
                    "ingested_at": [ingested_at] * len(good),
                },
                schema=FEEDBACK_COLUMNS,
            )
            view = f"_feedback_rows_{uuid.uuid4().hex}"  # a unique name: the registration is per connection
            con.register(view, table)
            try:
                con.execute(f"INSERT INTO feedback SELECT * FROM {view}")
            finally:
                con.unregister(view)
        wh.insert_quarantine(
            con,
            [
                {
                    "asset": ASSET,
                    "snapshot_version": sha,
                    "source": name,
                    "row_id": record.line,
                    "reason": reason,
                    "content_hash": hashlib.sha256(record.raw.encode("utf-8", "surrogatepass")).hexdigest(),
                    "quarantined_at": ingested_at,
                }
                for record, reason in bad
            ],
        )
        con.execute(
            "INSERT INTO feedback_files VALUES (?, ?, ?, ?, ?)", [sha, name, len(good), len(bad), ingested_at]
        )
        con.execute("COMMIT")
    except duckdb.Error:
        wh.rollback_quietly(con)
        done = _ingested(con, sha)
        if done is not None:  # a concurrent run committed the same content first
            return _already_ingested(path, processed_dir, sha, done)
        raise
    except BaseException:
        wh.rollback_quietly(con)
        raise
    moved = _move(path, processed_dir, sha)
    counts = Counter(modality[r.sample_id] for _, r in good)
    return IngestResult(name, sha, len(good), len(bad), already_ingested=False, path=str(moved), by_modality=dict(counts))


def _rating_key(rating) -> tuple:
    return (rating.sample_id, rating.user_id, rating.ts)


def _rated_before(con: duckdb.DuckDBPyConnection, ratings: list) -> dict[tuple, str]:
    """(sample_id, user_id, ts) -> the file it was ingested from, for those of `ratings` already in `feedback`.

    A rating is one person's verdict on one sample at one time, whatever file carries it: the same export
    saved again (CRLF line ends, another column order) has another sha, but its ratings are not new.
    Anonymous ratings (user_id NULL) match each other, as within a file (landing.check_records)."""
    if not ratings:
        return {}
    keys = pa.table(
        {
            "sample_id": pa.array([r.sample_id for r in ratings], pa.string()),
            "user_id": pa.array([r.user_id for r in ratings], pa.string()),
            "ts": pa.array([r.ts for r in ratings], pa.timestamp("us")),
        }
    )
    view = f"_feedback_keys_{uuid.uuid4().hex}"
    con.register(view, keys)
    try:
        rows = con.execute(
            f"SELECT k.sample_id, k.user_id, k.ts, min(f.file_name) FROM {view} k JOIN feedback f "
            "ON f.sample_id = k.sample_id AND f.ts = k.ts AND f.user_id IS NOT DISTINCT FROM k.user_id "
            "GROUP BY ALL"
        ).fetchall()
    finally:
        con.unregister(view)
    return {(sample_id, user_id, ts): name for sample_id, user_id, ts, name in rows}


def _fail_file(con: duckdb.DuckDBPyConnection, path: Path, failed_dir: Path, sha: str, error: FeedbackFileError) -> IngestResult:
    """Record a file that cannot be ingested in quarantine (once per content) and move it to failed/."""
    reason = f"file refused: {stable_text(error.problem)}"
    con.execute("BEGIN TRANSACTION")
    try:
        recorded = con.execute(
            "SELECT count(*) FROM quarantine WHERE asset = ? AND snapshot_version = ? AND row_id IS NULL",
            [ASSET, sha],
        ).fetchone()[0]
        if not recorded:  # a crash after this commit and before the move must not record it twice
            wh.insert_quarantine(
                con, [{"asset": ASSET, "snapshot_version": sha, "source": path.name, "reason": reason, "content_hash": sha}]
            )
        con.execute("COMMIT")
    except BaseException:
        wh.rollback_quietly(con)
        raise
    moved = _move(path, failed_dir, sha)
    return IngestResult(path.name, sha, 0, 0, already_ingested=False, error=str(error), path=str(moved))


def ingest_pending(con: duckdb.DuckDBPyConnection, root: str | Path | FeedbackPaths) -> list[IngestResult]:
    """Ingest every file waiting in incoming/, in name order (import names start with the landing time).

    A file that cannot be ingested goes to failed/ (its result has `error` set): a structural problem, or
    content that fails the insert itself (CONTENT_ERRORS: a value the checks let through by mistake).
    Neither stops the others. Any other failure (the disk, the database) is not the file's fault: the file
    stays for the next run, the files after it are still ingested, and the first such error is raised at
    the end, so the run fails visibly without one file holding back every newer one.
    """
    ensure_feedback_schema(con)
    paths = (root if isinstance(root, FeedbackPaths) else FeedbackPaths(Path(root))).ensure()
    results, first_error = [], None
    for path in landing_files(paths.incoming):
        try:
            results.append(ingest_file(con, path, paths.processed))
        except FileNotFoundError:
            continue  # taken by a concurrent run
        except FeedbackFileError as e:
            results.append(_fail_file(con, path, paths.failed, file_sha(path.read_bytes()), e))
        except CONTENT_ERRORS as e:
            error = FeedbackFileError(path.name, f"cannot be ingested: {type(e).__name__}: {stable_text(e)}")
            results.append(_fail_file(con, path, paths.failed, file_sha(path.read_bytes()), error))
        except Exception as e:
            first_error = first_error or e
    if first_error is not None:
        raise first_error
    return results


# -- reading back --------------------------------------------------------------------------------------


def _ingested_shas(con: duckdb.DuckDBPyConnection) -> list[str]:
    if not _exists(con, "feedback_files"):
        return []
    return [r[0] for r in con.execute("SELECT file_sha FROM feedback_files ORDER BY file_sha").fetchall()]


def _version_of(shas: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()[:16]


def feedback_version(con: duckdb.DuckDBPyConnection) -> str:
    """The feedback asset's data version: a hash of the set of ingested file shas (order-free).

    Reads only; `record_feedback_version` also records which files the version stands for."""
    return _version_of(_ingested_shas(con))


def record_feedback_version(con: duckdb.DuckDBPyConnection) -> str:
    """The current feedback version, its set of files recorded in `feedback_versions` (once per version).

    What the feedback asset hands on: a model tuned on it names it in input_versions["feedback"], and
    `gen_assets.store.registry.lineage` lists exactly these files, however many arrive later. The set and
    its hash are read in the same transaction, so they agree even while another run ingests."""
    ensure_feedback_schema(con)
    con.execute("BEGIN TRANSACTION")
    try:
        shas = _ingested_shas(con)
        version = _version_of(shas)
        con.execute(
            "INSERT INTO feedback_versions VALUES (?, ?, ?) ON CONFLICT (feedback_version) DO NOTHING",
            [version, shas, wh.now()],
        )
        con.execute("COMMIT")
    except BaseException:
        wh.rollback_quietly(con)
        raise
    return version


def quarantine_share_by_file(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """file_name -> share of its rows that were quarantined (files of the same name are pooled)."""
    if not _exists(con, "feedback_files"):
        return {}
    rows = con.execute(
        "SELECT file_name, sum(rows_quarantined) / greatest(sum(rows_ok + rows_quarantined), 1) "
        "FROM feedback_files GROUP BY file_name ORDER BY file_name"
    ).fetchall()
    return {name: float(share) for name, share in rows}


def unknown_sample_count(con: duckdb.DuckDBPyConnection) -> int:
    """Ratings whose sample is not (or no longer) in `generated`; ingestion refuses them, so this is 0
    unless a batch left the view after its ratings came in."""
    if not _exists(con, "feedback"):
        return 0
    if not _exists(con, "generated"):
        return con.execute("SELECT count(*) FROM feedback").fetchone()[0]
    return con.execute(
        "SELECT count(*) FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM generated g WHERE g.sample_id = f.sample_id)"
    ).fetchone()[0]


def failed_files(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(file name, reason) of every file refused whole for a structural problem."""
    if not _exists(con, "quarantine"):
        return []
    return con.execute(
        "SELECT source, reason FROM quarantine WHERE asset = ? AND row_id IS NULL ORDER BY quarantined_at, source",
        [ASSET],
    ).fetchall()


def ratings_for(con: duckdb.DuckDBPyConnection, modality: str) -> list[tuple[str, float]]:
    """(sample_id, mean rating) of every rated sample of a modality, by sample_id."""
    if not _exists(con, "feedback"):
        return []
    rows = con.execute(
        "SELECT sample_id, avg(rating) FROM feedback WHERE modality = ? GROUP BY sample_id ORDER BY sample_id",
        [modality],
    ).fetchall()
    return [(sample_id, float(mean)) for sample_id, mean in rows]


def ratings_summary(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, float]]:
    """modality -> ratings, samples rated, mean rating: for the asset's metadata."""
    if not _exists(con, "feedback"):
        return {}
    rows = con.execute(
        "SELECT modality, count(*), count(DISTINCT sample_id), avg(rating) FROM feedback GROUP BY modality ORDER BY modality"
    ).fetchall()
    return {m: {"ratings": n, "samples": k, "mean_rating": float(mean)} for m, n, k, mean in rows}
