"""Events: what people do with served content (impressions, clicks, conversions), from event files to the
DuckDB `events` table, and the click labels the reward models learn from.

An event file is JSONL (one JSON object per line, name ending in .jsonl), written by the web server that
serves the content, with the fields

    event_id       required  unique per event; the server uses sha256(serve_id + ":" + event)[:32]
                             (`event_id_for`), so a retried request repeats the id and adds nothing
    serve_id       required  one sample shown in answer to one request
    event          required  impression | click | conversion
    sample_id      required  a sample of the DuckDB view `generated`
    user_id        optional
    ts             required  ISO-8601; without an offset it is taken as UTC
    modality       required  image | text (that of the sample)
    category       required
    model_version  required  the model that made the sample
    arm            required  e.g. champion | challenger
    experiment_id  optional
    probability    required  in (0, 1]: the probability with which the server chose this sample for this
                             request; what makes the clicks usable as labels (see `click_labels`)
    slot           optional

Other fields are ignored. As for rating files (landing.py) there are two kinds of problem: a *structural*
one (not .jsonl, empty, no line is a JSON object, a required field in no record at all) means the file is
not event data, and it moves to failed/ whole with one quarantine row saying why; a *row* problem (a bad
field, a malformed line, an unknown sample, an event_id already used by another event) quarantines that
line with its number and reason and keeps every good line of the file.

Layout under GEN_ASSETS_HOME/feedback/events: incoming/ (waiting), processed/ (ingested), failed/. A file
must appear in incoming/ whole: `append_events` writes a hidden temporary name and renames it (names
starting with "." are skipped as files still being written).

Ingestion (`ingest_events`) mirrors the ratings' (ingest.py): a file's new events, its quarantined rows and
its `event_files` row are written in one transaction, and the file leaves incoming/ only after the commit;
the same content again (its sha is in event_files) adds nothing, not even quarantine rows, and an event
whose event_id is stored already (a retried request in another file) is counted as a duplicate, not added.
Quarantine rows have asset='events', source=<file name>, row_id=<line>, snapshot_version=<file sha>.

Pure module: DuckDB, pandas and the files; no dagster import.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from gen_assets.feedback.ingest import CONTENT_ERRORS, _exists, _move, ensure_feedback_schema, sample_modalities
from gen_assets.feedback.landing import (
    _SURROGATE,
    FeedbackFileError,
    Record,
    _json_type,
    _not_text,
    _optional_text,
    _shown,
    _stamp,
    _typed,
    file_sha,
    landing_files,
    parse_ts,
    read_file,
    stable_text,
    utc_naive,
)
from gen_assets.settings import Paths
from gen_assets.store import warehouse as wh
from gen_assets.store.files import atomic_write_bytes

ASSET = "events"  # the quarantine rows' asset name
EVENTS_DIR = "events"  # under GEN_ASSETS_HOME/feedback
SUFFIX = ".jsonl"
EVENT_KINDS = ("impression", "click", "conversion")
MODALITIES = ("image", "text")
FIELDS = ("event_id", "serve_id", "event", "sample_id", "user_id", "ts", "modality", "category", "model_version",
          "arm", "experiment_id", "probability", "slot")
REQUIRED = ("event_id", "serve_id", "event", "sample_id", "ts", "modality", "category", "model_version", "arm",
            "probability")
_REQUIRED_TEXT = ("event_id", "serve_id", "sample_id", "category", "model_version", "arm")
_OPTIONAL_TEXT = ("user_id", "experiment_id", "slot")

EVENT_COLUMNS = pa.schema(
    [
        ("event_id", pa.string()),
        ("serve_id", pa.string()),
        ("event", pa.string()),
        ("sample_id", pa.string()),
        ("user_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("modality", pa.string()),
        ("category", pa.string()),
        ("model_version", pa.string()),
        ("arm", pa.string()),
        ("experiment_id", pa.string()),
        ("probability", pa.float64()),
        ("slot", pa.string()),
        ("source_file", pa.string()),
        ("ingested_at", pa.timestamp("us")),
    ]
)
CLICK_LABEL_COLUMNS = ["sample_id", "impressions", "clicks", "ips_rate", "rating", "weight"]


@dataclass(frozen=True)
class EventPaths:
    """The events' landing zone under one root (GEN_ASSETS_HOME/feedback/events); failed/ as for ratings: one
    broken file must not block every later one."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def from_env(cls) -> "EventPaths":
        return cls(Paths.from_env().feedback / EVENTS_DIR)

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def ensure(self) -> "EventPaths":
        for p in (self.incoming, self.processed, self.failed):
            p.mkdir(parents=True, exist_ok=True)
        return self


def _paths(root: str | Path | EventPaths) -> EventPaths:
    return root if isinstance(root, EventPaths) else EventPaths(Path(root))


@dataclass(frozen=True)
class Event:
    """An event whose fields passed the checks (whether its sample exists is ingestion's question)."""

    event_id: str
    serve_id: str
    event: str
    sample_id: str
    user_id: str | None
    ts: datetime  # naive UTC
    modality: str
    category: str
    model_version: str
    arm: str
    experiment_id: str | None
    probability: float
    slot: str | None

    def key(self) -> tuple[str, str, str]:
        """What an event_id stands for: a repeat with the same key is the same event (a retried request)."""
        return (self.serve_id, self.event, self.sample_id)


def event_id_for(serve_id: str, event: str) -> str:
    """The event_id the web server gives an event: one per (serve_id, event), the same on every retry."""
    return hashlib.sha256(f"{serve_id}:{event}".encode()).hexdigest()[:32]


# -- checking one event --------------------------------------------------------------------------------


def check_event(values: Mapping) -> tuple[Event | None, str | None]:
    """Check one event's fields: (Event, None) or (None, every problem found, joined by '; ').

    Each problem names its field. Text fields must be JSON strings (an id 12 is refused rather than guessed
    at), except the optional ones, where a number is taken as its text as for ratings' user_id."""
    problems: list[str] = []
    text = {name: _required_text(name, values.get(name), problems) for name in _REQUIRED_TEXT}
    event = _choice("event", values.get("event"), EVENT_KINDS, problems)
    modality = _choice("modality", values.get("modality"), MODALITIES, problems)
    optional = {name: _optional_text(name, values.get(name), problems) for name in _OPTIONAL_TEXT}
    ts = _ts(values.get("ts"), problems)
    probability = _probability(values.get("probability"), problems)
    if problems:
        return None, "; ".join(problems)
    return Event(ts=ts, event=event, modality=modality, probability=probability, **text, **optional), None


def _required_text(name: str, value: object, problems: list[str]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"missing {name}")
    elif not isinstance(value, str):
        problems.append(f"{name} must be a string, got {_typed(value)}")
    elif _SURROGATE.search(value):
        problems.append(_not_text(name, value))
    else:
        return value.strip()
    return None


def _choice(name: str, value: object, allowed: tuple[str, ...], problems: list[str]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"missing {name}")
    elif not isinstance(value, str) or value.strip() not in allowed:
        problems.append(f"{name} must be one of {', '.join(allowed)}, got {_shown(value)}")
    else:
        return value.strip()
    return None


def _ts(value: object, problems: list[str]) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append("missing ts")
    elif not isinstance(value, str):
        problems.append(f"ts must be an ISO-8601 string, got {_json_type(value)}")
    else:
        try:
            return parse_ts(value)
        except ValueError:
            problems.append(f"ts {value!r} is not an ISO-8601 timestamp")
        except OverflowError:
            problems.append(f"ts {value!r} is out of range")
    return None


def _probability(value: object, problems: list[str]) -> float | None:
    if value is None:
        problems.append("missing probability")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"probability must be a number in (0, 1], got {_typed(value)}")
    elif not math.isfinite(value):
        problems.append(f"probability must be a finite number in (0, 1], got {value}")
    elif not 0.0 < value <= 1.0:
        problems.append(f"probability {value} is outside (0, 1]: the chance with which this sample was served")
    else:
        return float(value)
    return None


# -- writing event files (the web server) --------------------------------------------------------------


def event_file(rows: Sequence[Mapping]) -> tuple[str, bytes]:
    """The event file for these rows: (a unique name for incoming/, its bytes).

    Checks every row first (ValueError naming the row and field; nothing is written unless all pass: the
    server can still log it). A row without event_id gets `event_id_for(serve_id, event)`, one without ts
    the current time; a datetime ts without tzinfo is taken as UTC."""
    if not rows:
        raise ValueError("event_file: no rows given")
    now = datetime.now(timezone.utc)
    lines = []
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise ValueError(f"event_file: row {i}: unknown field(s) {', '.join(map(repr, unknown))}; "
                             f"fields are {', '.join(FIELDS)}")
        values = {k: row.get(k) for k in FIELDS}
        if values["ts"] is None or values["ts"] == "":
            values["ts"] = now
        if isinstance(values["ts"], datetime):
            values["ts"] = utc_naive(values["ts"]).isoformat() + "Z"
        serve_id, kind = values["serve_id"], values["event"]
        if values["event_id"] in (None, "") and isinstance(serve_id, str) and isinstance(kind, str):
            values["event_id"] = event_id_for(serve_id, kind)
        _, reason = check_event(values)
        if reason:
            raise ValueError(f"event_file: row {i}: {reason}")
        lines.append(json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return f"{_stamp()}-{file_sha(data)[:8]}-events-{uuid.uuid4().hex[:12]}{SUFFIX}", data


def append_events(paths: str | Path | EventPaths, rows: Sequence[Mapping]) -> Path:
    """Land events as a new file in incoming/ and return its path: written under a hidden temporary name,
    fsynced and renamed (store.files.atomic_write_bytes), so concurrent writers never see or leave half a
    file, and every call gets its own name."""
    name, data = event_file(rows)
    paths = _paths(paths)
    paths.incoming.mkdir(parents=True, exist_ok=True)
    target = paths.incoming / name
    atomic_write_bytes(target, data)
    return target


# -- reading event files -------------------------------------------------------------------------------


def parse_event_records(name: str | Path, data: bytes) -> list[Record]:
    """Split an event file's bytes into records (line numbers from 1, blank lines skipped); structural
    problems raise FeedbackFileError(name)."""
    suffix = Path(name).suffix.lower()
    if suffix != SUFFIX:
        raise FeedbackFileError(name, f"not an event file: expected {SUFFIX}, got {suffix or 'no extension'!r}")
    if not data.strip():
        raise FeedbackFileError(name, "empty file (no events)")
    records: list[Record] = []
    fields_seen: set[str] = set()
    objects = 0
    for n, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        if not line.strip():
            continue
        raw = line.decode("utf-8", "replace").rstrip("\r")
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            records.append(Record(n, raw, None, f"malformed line: not UTF-8 (byte 0x{line[e.start]:02x})"))
            continue
        except json.JSONDecodeError as e:
            records.append(Record(n, raw, None, f"malformed line: invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(value, dict):
            records.append(Record(n, raw, None, f"malformed line: expected a JSON object, got {_json_type(value)}"))
            continue
        objects += 1
        fields_seen.update(value)
        records.append(Record(n, raw, {k: v for k, v in value.items() if k in FIELDS}))
    if objects == 0:
        raise FeedbackFileError(name, f"not JSONL events: no line is a JSON object (line {records[0].line}: "
                                      f"{records[0].error})")
    missing = [c for c in REQUIRED if c not in fields_seen]
    if missing:
        raise FeedbackFileError(name, f"no record has a {' or '.join(map(repr, missing))} field "
                                      f"(fields: {', '.join(map(repr, sorted(fields_seen)))})")
    return records


# -- ingestion -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventIngestResult:
    file_name: str
    file_sha: str
    rows_added: int  # new events
    rows_duplicate: int  # events stored already (same event_id and the same serve_id, event and sample)
    rows_quarantined: int
    already_ingested: bool  # its content was ingested before: nothing written, the file only moved
    error: str | None = None  # a structural problem: the file went to failed/, nothing inserted
    path: str | None = None  # where the file is now
    by_modality: dict[str, int] = field(default_factory=dict)  # new events per modality


def _ingested(con: duckdb.DuckDBPyConnection, sha: str) -> tuple[int, int, int] | None:
    row = con.execute("SELECT rows_added, rows_duplicate, rows_quarantined FROM event_files WHERE file_sha = ?",
                      [sha]).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _already_ingested(path: Path, processed: Path, sha: str, counts: tuple[int, int, int]) -> EventIngestResult:
    moved = _move(path, processed, sha)
    return EventIngestResult(path.name, sha, *counts, already_ingested=True, path=str(moved))


def _stored(con: duckdb.DuckDBPyConnection, event_ids: list[str]) -> dict[str, tuple[tuple[str, str, str], str]]:
    """event_id -> ((serve_id, event, sample_id), source_file) for those of `event_ids` already stored."""
    if not event_ids:
        return {}
    rows = con.execute(
        "SELECT event_id, serve_id, event, sample_id, source_file FROM events "
        "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
        [sorted(set(event_ids))],
    ).fetchall()
    return {event_id: ((serve, kind, sample), source) for event_id, serve, kind, sample, source in rows}


def _checked(records: list[Record]) -> list[tuple[Record, Event | None, str | None]]:
    out = []
    for record in records:
        if record.values is None:
            out.append((record, None, record.error))
        else:
            out.append((record, *check_event(record.values)))
    return out


def ingest_event_file(con: duckdb.DuckDBPyConnection, path: str | Path, processed_dir: str | Path) -> EventIngestResult:
    """Ingest one event file in one transaction, then move it to processed_dir.

    Raises FeedbackFileError on a structural problem (nothing written, the file stays where it is;
    `ingest_events` moves it to failed/). Any other failure rolls the transaction back and leaves the file
    in place for the next run."""
    ensure_feedback_schema(con)
    path, processed_dir = Path(path), Path(processed_dir)
    data = path.read_bytes()
    sha, name = file_sha(data), path.name
    done = _ingested(con, sha)
    if done is not None:
        return _already_ingested(path, processed_dir, sha, done)
    checked = _checked(parse_event_records(name, data))  # before the transaction: a structural problem begins nothing
    ingested_at = wh.now()
    con.execute("BEGIN TRANSACTION")
    try:
        done = _ingested(con, sha)
        if done is not None:  # another run got there first
            con.execute("ROLLBACK")
            return _already_ingested(path, processed_dir, sha, done)
        events = [e for _, e, _ in checked if e is not None]
        modality = sample_modalities(con, [e.sample_id for e in events])
        stored = _stored(con, [e.event_id for e in events])
        first: dict[str, tuple[int, tuple]] = {}  # event_id -> (line, key) of its first good line here
        good: list[Event] = []
        bad: list[tuple[Record, str]] = []
        duplicates = 0
        for record, e, reason in checked:
            if e is None:
                bad.append((record, reason))
            elif e.sample_id not in modality:
                bad.append((record, f"unknown sample_id {e.sample_id!r} (not in generated)"))
            elif modality[e.sample_id] != e.modality:
                bad.append((record, f"modality {e.modality!r} does not match sample {e.sample_id!r}, "
                                    f"a {modality[e.sample_id]} sample"))
            elif e.event_id in first:
                line, key = first[e.event_id]
                if key == e.key():
                    duplicates += 1  # the same event twice in one file: a retry the server logged twice
                else:
                    bad.append((record, f"event_id {e.event_id!r} already names another event on line {line}"))
            elif e.event_id in stored:
                key, source = stored[e.event_id]
                if key == e.key():
                    duplicates += 1
                else:
                    bad.append((record, f"event_id {e.event_id!r} already names another event, from {source}"))
            else:
                first[e.event_id] = (record.line, e.key())
                good.append(e)
        added = _insert(con, good, name, ingested_at)
        duplicates += len(good) - added  # only when a concurrent writer stored some first
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
        con.execute("INSERT INTO event_files VALUES (?, ?, ?, ?, ?, ?)",
                    [sha, name, added, duplicates, len(bad), ingested_at])
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
    counts = Counter(e.modality for e in good) if added == len(good) else _added_by_modality(con, name, ingested_at)
    return EventIngestResult(name, sha, added, duplicates, len(bad), already_ingested=False, path=str(moved),
                             by_modality=dict(counts))


def _insert(con: duckdb.DuckDBPyConnection, good: list[Event], name: str, ingested_at: datetime) -> int:
    """Insert the events (OR IGNORE: a concurrent writer's copy of an event_id wins); returns how many were new."""
    if not good:
        return 0
    columns = {c: [getattr(e, c) for e in good] for c in FIELDS}
    table = pa.table({**columns, "source_file": [name] * len(good), "ingested_at": [ingested_at] * len(good)},
                     schema=EVENT_COLUMNS)
    view = f"_event_rows_{uuid.uuid4().hex}"  # a unique name: the registration is per connection
    con.register(view, table)
    try:
        return con.execute(f"INSERT OR IGNORE INTO events SELECT * FROM {view}").fetchone()[0]
    finally:
        con.unregister(view)


def _added_by_modality(con: duckdb.DuckDBPyConnection, name: str, ingested_at: datetime) -> dict[str, int]:
    rows = con.execute("SELECT modality, count(*) FROM events WHERE source_file = ? AND ingested_at = ? GROUP BY ALL",
                       [name, ingested_at]).fetchall()
    return dict(rows)


def _fail_file(con: duckdb.DuckDBPyConnection, path: Path, failed_dir: Path, sha: str,
               error: FeedbackFileError) -> EventIngestResult:
    """Record a file that cannot be ingested in quarantine (once per content) and move it to failed/."""
    con.execute("BEGIN TRANSACTION")
    try:
        recorded = con.execute(
            "SELECT count(*) FROM quarantine WHERE asset = ? AND snapshot_version = ? AND row_id IS NULL", [ASSET, sha]
        ).fetchone()[0]
        if not recorded:  # a crash after this commit and before the move must not record it twice
            wh.insert_quarantine(con, [{"asset": ASSET, "snapshot_version": sha, "source": path.name,
                                        "reason": f"file refused: {stable_text(error.problem)}", "content_hash": sha}])
        con.execute("COMMIT")
    except BaseException:
        wh.rollback_quietly(con)
        raise
    moved = _move(path, failed_dir, sha)
    return EventIngestResult(path.name, sha, 0, 0, 0, already_ingested=False, error=str(error), path=str(moved))


def ingest_events(con: duckdb.DuckDBPyConnection, paths: str | Path | EventPaths) -> list[EventIngestResult]:
    """Ingest every event file waiting in incoming/, in name order (names start with the writing time).

    As `ingest.ingest_pending`: a structurally broken file, or one whose content fails the insert itself,
    goes to failed/ (its result has `error`) and does not stop the others; any other failure (disk,
    database) leaves the file for the next run, the later files are still ingested, and the first such
    error is raised at the end."""
    ensure_feedback_schema(con)
    paths = _paths(paths).ensure()
    results, first_error = [], None
    for path in landing_files(paths.incoming):
        try:
            results.append(ingest_event_file(con, path, paths.processed))
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


def validate_event_file(path: str | Path) -> list[str]:
    """Check an event file without a database: raises FeedbackFileError on a structural problem, returns
    "line N: problem" for each line ingestion would quarantine (unknown samples show up only then)."""
    path = Path(path)
    checked = _checked(parse_event_records(path, read_file(path)))
    return [f"line {record.line}: {reason}" for record, e, reason in checked if e is None]


# -- reading back --------------------------------------------------------------------------------------


def events_version(con: duckdb.DuckDBPyConnection) -> str:
    """The events asset's data version: changes exactly when events were added. Events are only ever
    added (an event_id once), so their count and the last ingestion time say it; a file of duplicates
    only, or one refused whole, leaves it as it was."""
    if not _exists(con, "events"):
        n, last = 0, None
    else:
        n, last = con.execute("SELECT count(*), max(ingested_at) FROM events").fetchone()
    return hashlib.sha256(f"{n}:{last}".encode()).hexdigest()[:16]


def events_summary(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """modality -> impressions, clicks, conversions, samples (served at least once), click_rate (clicks per
    impression; None without impressions): for the asset's metadata."""
    if not _exists(con, "events"):
        return {}
    rows = con.execute(
        "SELECT modality, count(DISTINCT serve_id) FILTER (event = 'impression'), "
        "count(DISTINCT serve_id) FILTER (event = 'click'), count(DISTINCT serve_id) FILTER (event = 'conversion'), "
        "count(DISTINCT sample_id) FILTER (event = 'impression') FROM events GROUP BY modality ORDER BY modality"
    ).fetchall()
    return {m: {"impressions": i, "clicks": c, "conversions": v, "samples": s,
                "click_rate": c / i if i else None} for m, i, c, v, s in rows}


def arm_counts(con: duckdb.DuckDBPyConnection, experiment_id: str) -> dict[str, tuple[int, int]]:
    """arm -> (impressions, clicks) of one experiment: the distinct serve_ids with an impression in it, and
    of those the ones with a click (a click is matched to its impression by serve_id, so clicks never
    exceed impressions, as a Beta posterior needs; a click whose impression has not landed yet waits)."""
    if not _exists(con, "events"):
        return {}
    rows = con.execute(
        "WITH imp AS (SELECT DISTINCT arm, serve_id FROM events WHERE event = 'impression' AND experiment_id = ?), "
        "clk AS (SELECT DISTINCT serve_id FROM events WHERE event = 'click') "
        "SELECT arm, count(*), count(clk.serve_id) FROM imp LEFT JOIN clk USING (serve_id) GROUP BY arm ORDER BY arm",
        [experiment_id],
    ).fetchall()
    return {arm: (int(i), int(c)) for arm, i, c in rows}


def click_labels(con: duckdb.DuckDBPyConnection, modality: str, *, min_impressions: int = 20) -> pd.DataFrame:
    """Per sample of `modality` served at least `min_impressions` times: sample_id, impressions, clicks,
    ips_rate, rating, weight (sorted by sample_id); the reward model's click rows.

    ips_rate: the self-normalised inverse-propensity click rate sum(c_i / p_i) / sum(1 / p_i) over the
    sample's impressions (c_i = 1 when impression i was clicked, matched by serve_id; p_i the probability with
    which the server chose the sample for that request). The server does not show samples at random: a bandit
    shows the one it believes in more often, and more often where it expects a click (to the people, pages,
    hours that click). The plain share of clicked impressions then measures where the sample was shown as
    much as the sample. Weighting each impression by 1/p_i counts it for all the requests like it that got
    another sample, which makes the estimate that of serving the sample to every request (Horvitz-Thompson);
    dividing by sum(1/p_i) instead of the count (Hajek) keeps it within [0, 1] and its variance low.

    rating: 1 + 4 x the mid-rank percentile of ips_rate among these samples ((below + equal / 2) / n). Click
    rates live on their own scale (a few percent, set by the page and the slot more than by the sample) and
    mean nothing next to a number of stars; their order does. The percentile puts them on the stars' 1-5
    range with a spread like people's ratings, keeps one outlier from squashing the rest, and the reward
    model is judged by rank correlation anyway. Ties share a rating.

    weight: how much such a row counts next to a rating (weight 1): the effective sample size of the
    impressions' weights, (sum w)^2 / sum w^2 with w = 1/p, over min_impressions, capped at 1. A sample shown
    min_impressions times with even probabilities counts like a rating; a few impressions of small
    probability dominating the estimate make it count less.
    """
    if min_impressions < 1:
        raise ValueError(f"min_impressions must be >= 1, got {min_impressions}")
    if not _exists(con, "events"):
        dtypes = ["object", "int64", "int64", "float64", "float64", "float64"]
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(CLICK_LABEL_COLUMNS, dtypes)})
    frame = con.execute(
        "WITH imp AS (SELECT serve_id, arg_min(sample_id, ts) AS sample_id, arg_min(probability, ts) AS p "
        "             FROM events WHERE event = 'impression' AND modality = ? GROUP BY serve_id), "
        "clk AS (SELECT DISTINCT serve_id FROM events WHERE event = 'click'), "
        "per AS (SELECT imp.sample_id, imp.p, CASE WHEN clk.serve_id IS NULL THEN 0 ELSE 1 END AS clicked "
        "        FROM imp LEFT JOIN clk USING (serve_id)) "
        "SELECT sample_id, count(*) AS impressions, sum(clicked)::BIGINT AS clicks, "
        "       sum(clicked / p) / sum(1 / p) AS ips_rate, pow(sum(1 / p), 2) / sum(1 / (p * p)) AS ess "
        "FROM per GROUP BY sample_id HAVING count(*) >= ? ORDER BY sample_id",
        [modality, min_impressions],
    ).df()
    n = len(frame)
    ranks = frame["ips_rate"].rank(method="average").to_numpy(dtype=float)
    frame["rating"] = 1.0 + 4.0 * (ranks - 0.5) / max(n, 1)
    frame["weight"] = np.minimum(frame["ess"].to_numpy(dtype=float) / min_impressions, 1.0)
    frame["impressions"] = frame["impressions"].astype("int64")
    frame["clicks"] = frame["clicks"].astype("int64")
    return frame[CLICK_LABEL_COLUMNS].reset_index(drop=True)


def reward_rows(ratings: Sequence[tuple[str, float]], clicks: pd.DataFrame) -> pd.DataFrame:
    """A reward model's training rows: sample_id, rating, weight, source ("ratings" | "clicks").

    People's ratings (a sample's mean rating, weight 1) and the click labels of `click_labels`, one row each;
    a sample with both keeps both, as two measurements of it."""
    rated = pd.DataFrame(list(ratings), columns=["sample_id", "rating"]).assign(weight=1.0, source="ratings")
    clicked = clicks[["sample_id", "rating", "weight"]].assign(source="clicks")
    frames = [f for f in (rated, clicked) if len(f)]
    if not frames:
        return rated
    return pd.concat(frames, ignore_index=True).astype({"rating": "float64", "weight": "float64"})
