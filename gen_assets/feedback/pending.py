"""What the feedback sensor sees and decides, as pure functions the sensor (Dagster layer) calls.

`scan` lists the rating files waiting in incoming/; `decide` turns them and the sensor's cursor into
at most one run request. The rules:

- a file is *new* unless the cursor has seen its (name, sha); a file edited in place is new again;
- a run is requested when the new files hold at least `min_new_ratings` ratings, or when the oldest
  new file has waited longer than `max_age_seconds` (so a trickle of ratings is not kept forever);
- the run_key is a hash of the new files' (name, sha) list, so one batch of files gives one key, and
  Dagster never starts two runs for it;
- the new cursor records the files only when a run is requested; files below the threshold stay new
  and keep accumulating. Files that left incoming/ (ingested) are dropped from the cursor then, so it
  does not grow without end.

A requested run ingests every waiting file, not only the new ones. If that run fails, its files stay
in incoming/ but are in the cursor; the next run (a new batch of files, or the schedule) ingests them.

The retrain is per modality: `files_by_modality` groups the files by the modality of the samples they
rate (looked up in `generated`), and `run_key_for(files, modality)` gives each modality's run its key.
The count and the age are taken over all modalities together: the point is to ingest waiting ratings
promptly, and a retrain uses every rating of its modality, not only the new ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from gen_assets.feedback.ingest import sample_modalities
from gen_assets.feedback.landing import FeedbackFileError, file_sha, landing_files, parse_records

DEFAULT_MIN_NEW_RATINGS = 50
DEFAULT_MIN_NEW_EVENTS = 5000  # impressions, clicks and conversions: a click label needs 20+ impressions of a sample
DEFAULT_MAX_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class PendingFile:
    name: str
    sha: str
    ratings: int  # records in the file, good or not (ingestion sorts them out); 0 for a broken file
    oldest: datetime  # when it landed (mtime, aware UTC): ratings wait from then, whatever their ts says
    sample_ids: tuple[str, ...] = field(default=(), repr=False)  # the samples it rates, for the modality


@dataclass(frozen=True)
class Decision:
    files: list[PendingFile]  # the new files (those the run is for, when one is requested)
    run_key: str | None  # None: no run
    new_cursor: str  # JSON, to store as the sensor's cursor
    reason: str  # a sentence for the sensor's log / skip reason


def _waiting(incoming_dir: str | Path, parse) -> Iterator[tuple[Path, bytes, datetime, list]]:
    """(path, bytes, when it landed, its records) of every file waiting in incoming/, in name order; a file
    `parse` refuses has no records, a file ingested (moved) while we looked is skipped."""
    for path in landing_files(Path(incoming_dir)):
        try:
            data = path.read_bytes()
            landed = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except FileNotFoundError:
            continue
        try:
            records = parse(path.name, data)
        except FeedbackFileError:
            records = []
        yield path, data, landed, records


def scan(incoming_dir: str | Path) -> list[PendingFile]:
    """Every file waiting in incoming/, in name order. Never raises on a broken file: it is listed with 0
    ratings (its age still triggers a run, which moves it to failed/)."""
    pending = []
    for path, data, landed, records in _waiting(incoming_dir, parse_records):
        ids = {r.values.get("sample_id") for r in records if r.values}
        ids = tuple(sorted({i.strip() for i in ids if isinstance(i, str)}))
        pending.append(PendingFile(path.name, file_sha(data), len(records), landed, ids))
    return pending


def _seen(cursor: Mapping | str | None) -> set[tuple[str, str]]:
    """The (name, sha) pairs a cursor records. An unreadable cursor counts as empty: at worst one extra
    run request, whose run_key Dagster has seen before if the files are the same."""
    if isinstance(cursor, str):
        try:
            cursor = json.loads(cursor) if cursor.strip() else None
        except json.JSONDecodeError:
            cursor = None
    if not isinstance(cursor, Mapping):
        return set()
    return {(str(p[0]), str(p[1])) for p in cursor.get("seen", []) if isinstance(p, (list, tuple)) and len(p) == 2}


def encode_cursor(seen: set[tuple[str, str]]) -> str:
    return json.dumps({"seen": sorted([name, sha] for name, sha in seen)}, separators=(",", ":"))


def run_key_for(files: Sequence[PendingFile], modality: str | None = None) -> str:
    """A key per batch of files (order-free), and per modality when given."""
    blob = "\n".join(sorted(f"{f.name}\t{f.sha}" for f in files))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"feedback-{modality}-{digest}" if modality else f"feedback-{digest}"


def decide(
    pending: Sequence[PendingFile],
    cursor: Mapping | str | None,
    *,
    min_new_ratings: int = DEFAULT_MIN_NEW_RATINGS,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    now: datetime | None = None,
    noun: str = "ratings",
) -> Decision:
    """Whether the files waiting now call for a run (rules in the module docstring). Pure: `now`
    defaults to the current time only so the sensor need not pass it; `noun` names what the files hold
    in the reason (events_sensor counts events)."""
    now = now or datetime.now(timezone.utc)
    seen = _seen(cursor)
    new = [f for f in pending if (f.name, f.sha) not in seen]
    if not new:
        return Decision([], None, encode_cursor(seen), f"no new {noun[:-1] if noun.endswith('s') else noun} files")
    ratings = sum(f.ratings for f in new)
    oldest = min(f.oldest for f in new)
    waited = (now - oldest).total_seconds()
    files = f"{len(new)} new file{'s' if len(new) != 1 else ''}"
    if ratings >= min_new_ratings:
        reason = f"{ratings} new {noun} in {files} (threshold {min_new_ratings})"
    elif waited > max_age_seconds:
        reason = f"{ratings} new {noun} in {files}; the oldest waited {waited:.0f} s (> {max_age_seconds:.0f} s)"
    else:
        reason = (
            f"waiting: {ratings} new {noun} in {files} (threshold {min_new_ratings}); "
            f"the oldest waited {waited:.0f} s of {max_age_seconds:.0f} s"
        )
        return Decision(new, None, encode_cursor(seen), reason)
    still_there = {(f.name, f.sha) for f in pending}
    return Decision(new, run_key_for(new), encode_cursor((seen & still_there) | {(f.name, f.sha) for f in new}), reason)


def scan_events(incoming_dir: str | Path) -> list[tuple[PendingFile, tuple[str, ...]]]:
    """Every event file waiting in feedback/events/incoming/, in name order, with the modalities its events
    concern (each event names its own). A broken file is listed with 0 events and no modality."""
    from gen_assets.feedback.events import parse_event_records  # the events' own reader

    pending = []
    for path, data, landed, records in _waiting(incoming_dir, parse_event_records):
        modalities = tuple(sorted({r.values.get("modality") for r in records if r.values
                                   and r.values.get("modality") in ("image", "text")}))
        pending.append((PendingFile(path.name, file_sha(data), len(records), landed), modalities))
    return pending


def files_by_modality(con: duckdb.DuckDBPyConnection, files: Sequence[PendingFile]) -> dict[str | None, list[PendingFile]]:
    """modality -> the files rating at least one sample of it (a file rating both is under both).

    Files rating no known sample (broken files, only unknown ids) are under None: they need an
    ingestion run (to quarantine or refuse them) but no retrain.
    """
    modality = sample_modalities(con, [s for f in files for s in f.sample_ids])
    groups: dict[str | None, list[PendingFile]] = {}
    for f in files:
        found = sorted({modality[s] for s in f.sample_ids if s in modality})
        for m in found or [None]:
            groups.setdefault(m, []).append(f)
    return groups
