"""The feedback landing zone: rating files on disk, how they are read, and how they get there.

A rating file is CSV (a header row, then one rating per row) or JSONL (one JSON object per line, also
accepted as .ndjson), with the fields

    sample_id  required  a sample of the DuckDB view `generated`
    rating     required  a whole number from 1 to 5 (3.5, 5.0, "five", 0 and 6 are refused)
    user_id    optional  who rated
    ts         optional  when, ISO-8601 (e.g. 2024-05-01T12:00:00Z); without an offset it is taken as
                         UTC. A missing ts becomes the time the file landed in incoming/ (its mtime):
                         the closest honest value, and the same on every re-read of the file.
    comment    optional  free text

Other columns are ignored. Two kinds of problem, on purpose:
- a *structural* problem means the file cannot be split into ratings at all (unreadable, empty, not
  .csv/.jsonl, a CSV header without sample_id or rating, no JSONL line is an object, no record has a
  rating field, CSV that is not UTF-8 or has an unterminated quote). It raises `FeedbackFileError`
  naming the file; at ingestion such a file goes to failed/ whole, for a person to fix and re-import.
- a *row* problem (a bad rating, a bad timestamp, a missing field, a malformed line, a duplicate)
  concerns one rating; `validate_file` reports it and ingestion quarantines that row with its line
  number, keeping every good row of the file.

Layout under GEN_ASSETS_HOME/feedback: incoming/ (waiting), processed/ (ingested), failed/ (structural
problems). A file must appear in incoming/ whole: `import_file` and `append_ratings` write to a hidden
temporary name and rename it; anyone else dropping files in must do the same, since names starting
with "." are ignored as files still being written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from gen_assets.settings import Paths
from gen_assets.store.files import atomic_write_bytes

SUFFIXES = (".csv", ".jsonl", ".ndjson")
REQUIRED = ("sample_id", "rating")
FIELDS = ("sample_id", "rating", "user_id", "ts", "comment")
MIN_RATING, MAX_RATING = 1, 5
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: "٥" (Arabic-Indic five) is not a rating
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate (JSON "\\ud800"): not encodable, not text
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FeedbackFileError(ValueError):
    """A rating file that cannot be read as ratings at all. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class FeedbackPaths:
    """The landing zone under one root (GEN_ASSETS_HOME/feedback).

    failed/ exists so that one broken file dropped into incoming/ by hand cannot block every later
    ingestion: it is moved aside whole, with the problem recorded in quarantine.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def from_env(cls) -> "FeedbackPaths":
        return cls(Paths.from_env().feedback)

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def ensure(self) -> "FeedbackPaths":
        for p in (self.incoming, self.processed, self.failed):
            p.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class Record:
    """One record of a rating file as parsed, before its fields are checked."""

    line: int  # the line of the file where the record starts (a CSV header is line 1)
    raw: str  # the record's text, for the quarantine row's content_hash
    values: dict | None  # field -> value; None when the line itself is malformed
    error: str | None = None  # why the line is malformed


@dataclass(frozen=True)
class Rating:
    """A rating whose fields passed the checks (whether its sample exists is ingestion's question)."""

    sample_id: str
    rating: int
    user_id: str | None
    ts: datetime | None  # naive UTC; None when the file gave none (filled with the file's mtime)
    comment: str | None


@dataclass(frozen=True)
class CheckedRecord:
    record: Record
    rating: Rating | None  # None when refused
    reason: str | None = None  # why refused (no line number: the quarantine row carries it)


@dataclass(frozen=True)
class FileSummary:
    rows: int  # records (ratings, good or not) in the file
    errors: list[str] = field(default_factory=list)  # "line N: problem" for each row to be quarantined
    sha: str = ""  # sha256 of the file's bytes


def file_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_naive(ts: datetime) -> datetime:
    """The warehouse stores naive UTC timestamps (like warehouse.now()); naive input is taken as UTC."""
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def mtime_utc(path: Path) -> datetime:
    return datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc).replace(tzinfo=None)


def landing_files(directory: Path) -> list[Path]:
    """Files waiting in a folder, in name order; hidden names are temporary files still being written."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file())


def read_file(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise FeedbackFileError(path, "file does not exist")
    if not path.is_file():
        raise FeedbackFileError(path, "is not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise FeedbackFileError(path, f"cannot read: {e.strerror}") from None


# -- parsing -------------------------------------------------------------------------------------------


def parse_records(name: str | Path, data: bytes) -> list[Record]:
    """Split a rating file's bytes into records; structural problems raise FeedbackFileError(name)."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise FeedbackFileError(name, f"not a rating file: expected {', '.join(SUFFIXES)}, got {suffix or 'no extension'!r}")
    if not data.strip():
        raise FeedbackFileError(name, "empty file (no ratings)")
    records = _csv(name, data) if suffix == ".csv" else _jsonl(name, data)
    return records


def _csv(name: str | Path, data: bytes) -> list[Record]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FeedbackFileError(
            name, f"not UTF-8 text: byte 0x{data[e.start]:02x} on line {line}; save the file as UTF-8"
        ) from None
    # a long comment must not fail the file on the csv module's 128 KiB default field limit
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # strict: a stray quote fails only its own line (quarantined) instead of being silently merged
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise FeedbackFileError(name, f"malformed CSV header: {stable_text(e)}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise FeedbackFileError(
            name, f"CSV header has no {' or '.join(map(repr, missing))} column (columns: {', '.join(map(repr, header))})"
        )
    index = {h: i for i, h in enumerate(header) if h in FIELDS}
    lines = io.StringIO(text, newline="").readlines()  # split where the reader splits, for line numbers
    records: list[Record] = []
    previous = reader.line_num
    while True:
        start = previous + 1  # the record's first line (line_num is where it ended)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "end of data" in str(e):  # an unterminated quote swallowed the rest of the file
                raise FeedbackFileError(name, f"unterminated quote in the record starting on line {start}") from None
            records.append(Record(start, _lines(lines, start, reader.line_num), None, f"malformed CSV line: {stable_text(e)}"))
            previous = reader.line_num
            continue
        raw = _lines(lines, start, reader.line_num)
        previous = reader.line_num
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            problem = f"malformed CSV line: {len(row)} fields, the header has {len(header)}"
            records.append(Record(start, raw, None, problem))
            continue
        records.append(Record(start, raw, {k: row[i] for k, i in index.items()}))
    if not records:
        raise FeedbackFileError(name, "no ratings: the CSV file has a header but no rows")
    return records


def _lines(lines: list[str], first: int, last: int) -> str:
    return "".join(lines[first - 1 : last]).rstrip("\r\n")


def _jsonl(name: str | Path, data: bytes) -> list[Record]:
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
        raise FeedbackFileError(name, f"not JSONL ratings: no line is a JSON object (line {records[0].line}: {records[0].error})")
    missing = [c for c in REQUIRED if c not in fields_seen]
    if missing:
        raise FeedbackFileError(
            name, f"no record has a {' or '.join(map(repr, missing))} field (fields: {', '.join(map(repr, sorted(fields_seen)))})"
        )
    return records


def stable_text(error: BaseException | str) -> str:
    """An exception's message for a quarantine reason: the same text on every run, so without the memory
    addresses that the repr of an object carries ("<object object at 0x7f...>" becomes "<object object>")."""
    return _ADDRESS.sub("", str(error))


def _shown(value: object) -> str:
    """A refused value as a reason shows it: JSON for what a file can hold, else only its type (the repr
    of an arbitrary object carries its memory address, and a reason must be stable text)."""
    if isinstance(value, str):
        return repr(value)  # repr escapes a lone surrogate, so the reason itself is valid text
    if value is None or isinstance(value, (bool, int, float, list, dict)):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):  # e.g. a list holding other objects
            pass
    return f"a value of type {type(value).__name__}"


def _typed(value: object) -> str:
    """A refused value with its JSON type ("a number 12"), as far as it has one."""
    shown = _shown(value)
    return shown if shown.startswith("a value of type") else f"{_json_type(value)} {shown}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", list: "an array", dict: "an object", str: "a string", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# -- checking fields -----------------------------------------------------------------------------------


def parse_ts(value: str) -> datetime:
    """ISO-8601 as naive UTC. A trailing Z is spelled out so Python 3.10's fromisoformat accepts it too."""
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return utc_naive(datetime.fromisoformat(text))


def check_values(values: Mapping) -> tuple[Rating | None, str | None]:
    """Check one record's fields: (Rating, None) or (None, every problem found, joined by '; ').

    CSV gives strings and JSON gives typed values; both are accepted where the meaning is clear (a
    rating "4" or 4, a user_id "7" or 7), never where it is not (a rating 3.5, 5.0, true or "five").
    """
    problems: list[str] = []
    sample_id = values.get("sample_id")
    if sample_id is None or (isinstance(sample_id, str) and not sample_id.strip()):
        problems.append("missing sample_id")
    elif not isinstance(sample_id, str):
        problems.append(f"sample_id must be a string, got {_typed(sample_id)}")
    elif _SURROGATE.search(sample_id):
        problems.append(_not_text("sample_id", sample_id))
    rating = _rating(values.get("rating"), problems)
    user_id = _optional_text("user_id", values.get("user_id"), problems)
    comment = _optional_text("comment", values.get("comment"), problems)
    ts = None
    raw_ts = values.get("ts")
    if isinstance(raw_ts, str) and raw_ts.strip():
        try:
            ts = parse_ts(raw_ts)
        except ValueError:
            problems.append(f"ts {raw_ts!r} is not an ISO-8601 timestamp")
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00, past the last representable UTC time
            problems.append(f"ts {raw_ts!r} is out of range")
    elif raw_ts not in (None, ""):
        problems.append(f"ts must be an ISO-8601 string, got {_json_type(raw_ts)}")
    if problems:
        return None, "; ".join(problems)
    return Rating(sample_id.strip(), rating, user_id, ts, comment), None


def _rating(value: object, problems: list[str]) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append("missing rating")
        return None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        problems.append(f"rating must be a whole number from {MIN_RATING} to {MAX_RATING}, got {_shown(value)}")
        return None
    if not MIN_RATING <= number <= MAX_RATING:
        problems.append(f"rating {number} is outside {MIN_RATING}..{MAX_RATING}")
        return None
    return number


def _optional_text(name: str, value: object, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if _SURROGATE.search(value):
            problems.append(_not_text(name, value))
            return None
        return value.strip() if name == "user_id" else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a numeric user id exported by a spreadsheet or a JSON writer
    problems.append(f"{name} must be a string, got {_json_type(value)}")
    return None


def _not_text(name: str, value: str) -> str:
    """A string holding a lone surrogate: JSON can spell one ("\\ud800"), but it is no character and cannot
    be stored as UTF-8, so the row is refused here rather than failing its whole file at the insert."""
    at = _SURROGATE.search(value).start()
    return f"{name} is not valid text: a lone surrogate \\u{ord(value[at]):04x} at character {at + 1}"


def check_records(records: Sequence[Record], default_ts: datetime) -> list[CheckedRecord]:
    """Check every record's fields and refuse duplicates within the file.

    A missing ts becomes `default_ts` (the file's landing time). Two good ratings with the same
    (sample_id, user_id, ts) are one rating given twice: the first is kept, the later ones are refused
    as "duplicate of line N". Anonymous ratings without ts of the same sample in one file therefore
    count once; give them a ts (append_ratings always does) to keep them apart.
    """
    out: list[CheckedRecord] = []
    first_line: dict[tuple, int] = {}
    for record in records:
        if record.values is None:
            out.append(CheckedRecord(record, None, record.error))
            continue
        rating, reason = check_values(record.values)
        if rating is None:
            out.append(CheckedRecord(record, None, reason))
            continue
        if rating.ts is None:
            rating = Rating(rating.sample_id, rating.rating, rating.user_id, default_ts, rating.comment)
        key = (rating.sample_id, rating.user_id, rating.ts)
        if key in first_line:
            out.append(CheckedRecord(record, None, f"duplicate of line {first_line[key]}"))
            continue
        first_line[key] = record.line
        out.append(CheckedRecord(record, rating))
    return out


def summarize(name: str | Path, data: bytes, default_ts: datetime) -> FileSummary:
    checked = check_records(parse_records(name, data), default_ts)
    errors = [f"line {c.record.line}: {c.reason}" for c in checked if c.rating is None]
    return FileSummary(rows=len(checked), errors=errors, sha=file_sha(data))


def validate_file(path: str | Path) -> FileSummary:
    """Read and check a rating file without a database: raises FeedbackFileError on a structural problem,
    lists row problems (those rows will be quarantined at ingestion; unknown samples show up only then)."""
    path = Path(path)
    return summarize(path, read_file(path), mtime_utc(path))


# -- landing files -------------------------------------------------------------------------------------


def _stamp() -> str:
    """A UTC timestamp for file names: sorts by time, no characters a file system dislikes."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _landed_with_sha(paths: FeedbackPaths, sha: str) -> Path | None:
    for directory in (paths.incoming, paths.processed):
        for p in sorted(directory.glob(f"*-{sha[:8]}-*")):
            if not p.name.startswith(".") and p.is_file() and file_sha(p.read_bytes()) == sha:
                return p
    return None


def import_file(src: str | Path, root: str | Path | FeedbackPaths) -> Path:
    """Validate a rating file and land a copy in incoming/ as `<UTC timestamp>-<sha8>-<original name>`.

    Structural problems raise FeedbackFileError (nothing is landed); row problems do not (those rows are
    quarantined at ingestion). Content already landed (waiting in incoming/ or ingested into processed/)
    is not landed again: the existing path is returned. Two imports of the same content at the very
    same moment may both land; ingestion then counts that content once (same sha).
    """
    src = Path(src)
    data = read_file(src)
    summarize(src, data, mtime_utc(src))  # raises on a structural problem
    paths = root if isinstance(root, FeedbackPaths) else FeedbackPaths(Path(root))
    paths.ensure()
    sha = file_sha(data)
    existing = _landed_with_sha(paths, sha)
    if existing is not None:
        return existing
    target = paths.incoming / f"{_stamp()}-{sha[:8]}-{_SAFE_NAME.sub('_', src.name)}"
    atomic_write_bytes(target, data)
    return target


def append_ratings(root: str | Path | FeedbackPaths, rows: Sequence[Mapping]) -> Path:
    """Land ratings (dicts with the rating fields) as a new JSONL file in incoming/; returns its path.

    For the web review page: every call writes its own file under a unique name (timestamp, content
    sha, random part), written to a hidden temporary name and renamed, so concurrent writers never
    overwrite or half-write each other. The rows are checked first and nothing is written unless all
    pass (ValueError naming the row), since the caller can still tell the person. A row without ts gets
    the current time, which the caller knows better than ingestion does.
    """
    name, data = ratings_file(rows)
    paths = root if isinstance(root, FeedbackPaths) else FeedbackPaths(Path(root))
    paths.incoming.mkdir(parents=True, exist_ok=True)
    target = paths.incoming / name
    atomic_write_bytes(target, data)
    return target


def ratings_file(rows: Sequence[Mapping]) -> tuple[str, bytes]:
    """The file `append_ratings` lands for these rows: (its unique name in incoming/, its bytes).

    Checks the rows (ValueError naming the first bad one) and fills a missing ts with the current time;
    for a caller that writes the file itself (the web desk records its idempotency key in between)."""
    if not rows:
        raise ValueError("append_ratings: no rows given")
    now = datetime.now(timezone.utc)
    lines = []
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise ValueError(f"append_ratings: row {i}: unknown field(s) {', '.join(map(repr, unknown))}; fields are {', '.join(FIELDS)}")
        values = {k: row.get(k) for k in FIELDS}
        ts = values["ts"]
        if ts is None or ts == "":
            ts = now
        if isinstance(ts, datetime):
            ts = utc_naive(ts).isoformat() + "Z"  # naive datetimes are taken as UTC, like in files
        values["ts"] = ts
        _, reason = check_values(values)
        if reason:
            raise ValueError(f"append_ratings: row {i}: {reason}")
        lines.append(json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return f"{_stamp()}-{file_sha(data)[:8]}-web-{uuid.uuid4().hex[:12]}.jsonl", data
