"""Ratings from the review page into the feedback landing zone: checked, landed atomically, at most once.

- `check_rating` turns a request's fields into a row of the landing zone's schema (landing.FIELDS),
  checked the way ingestion checks a rating file (`landing.check_values`), plus what only the page can
  check before answering: the sample exists in `generated`, the sizes, no unknown field.
- `RatingDesk.land` writes each rating with `landing.append_ratings`: its own JSONL file under a unique
  name, written to a hidden temporary name and renamed into feedback/incoming/. That is the format the
  feedback asset ingests and the sensor counts, and concurrent raters never share or half-write a file.
- A client that retries a POST (a timeout, a double click, a reload) sends the same idempotency key (the
  `Idempotency-Key` header, or the form's nonce); the rating lands once per key. The key is claimed by
  creating a marker file with O_EXCL under feedback/web/keys/ (named by the key's sha256: nothing the
  client sends becomes a path), so two requests with one key race safely, in one process or several.
  The marker records a fingerprint of the rating and the landed file: the same request again is answered
  as before ("replayed"), another rating under a used key is refused (409). Markers are swept after a day.
- `WaitingRatings` counts the ratings waiting in incoming/ the way pending.scan counts them (records per
  file, 0 for a broken file), parsing each file once: with many raters the folder holds many files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gen_assets.feedback.landing import (
    MAX_RATING,
    MIN_RATING,
    FeedbackFileError,
    FeedbackPaths,
    append_ratings,
    check_values,
    landing_files,
    parse_records,
)

SAMPLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
THUMBS = {"up": MAX_RATING, "down": MIN_RATING}  # the quick thumbs map to the ends of the scale
REQUEST_FIELDS = ("sample_id", "rating", "comment", "user_id")
KEY_TTL_SECONDS = 24 * 3600
UNKNOWN_SAMPLE = "unknown sample_id"  # how check_rating's answer starts when the sample is not in `known`


class RatingConflict(Exception):
    """An idempotency key already used for another rating, or still in flight (HTTP 409)."""


@dataclass(frozen=True)
class Landed:
    file: str  # the landed file's name in feedback/incoming/
    replayed: bool  # the same request (same key) landed before: nothing new was written


def check_rating(
    values: Mapping, known: Mapping[str, str], *, max_comment: int, max_user_id: int
) -> tuple[dict | None, str | None]:
    """(row, None) for a good rating, (None, what is wrong) otherwise. `known`: sample_id -> modality."""
    unknown = sorted(set(values) - set(REQUEST_FIELDS))
    if unknown:
        return None, f"unknown field(s) {', '.join(map(repr, unknown))}; a rating has {', '.join(REQUEST_FIELDS)}"
    rating, reason = check_values({k: values.get(k) for k in REQUEST_FIELDS})
    if reason:
        return None, reason
    sample_id, comment, user_id = rating.sample_id, rating.comment, rating.user_id
    if not SAMPLE_ID.fullmatch(sample_id):
        return None, f"sample_id {sample_id[:140]!r} is not a sample id (letters, digits, '.', '_', '-'; at most 128)"
    if sample_id not in known:
        return None, f"{UNKNOWN_SAMPLE} {sample_id!r}: no such sample in generated"
    if isinstance(comment, str) and len(comment) > max_comment:
        return None, f"comment is {len(comment)} characters; at most {max_comment}"
    if isinstance(user_id, str) and len(user_id) > max_user_id:
        return None, f"user_id is {len(user_id)} characters; at most {max_user_id}"
    return {"sample_id": sample_id, "rating": rating.rating, "user_id": user_id, "comment": comment}, None


def fingerprint(row: Mapping) -> str:
    """What makes two requests the same rating (the time it lands is the server's, not the request's)."""
    blob = json.dumps([row.get(k) for k in REQUEST_FIELDS], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class RatingDesk:
    """Lands ratings in the landing zone, each at most once per idempotency key."""

    def __init__(self, feedback_root: Path, *, wait_seconds: float = 2.0, key_ttl_seconds: float = KEY_TTL_SECONDS):
        self.paths = FeedbackPaths(Path(feedback_root))
        self.keys = self.paths.root / "web" / "keys"
        self.wait_seconds = wait_seconds
        self.key_ttl_seconds = key_ttl_seconds
        self._next_sweep = 0.0

    def land(self, row: Mapping, key: str | None = None) -> Landed:
        if key is None:
            return Landed(append_ratings(self.paths, [row]).name, replayed=False)
        self.keys.mkdir(parents=True, exist_ok=True)
        self._sweep()
        marker = self.keys / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
        digest = fingerprint(row)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                landed = self._answered(marker, digest)
                if landed is not None:
                    return landed
                if time.monotonic() > deadline:
                    raise RatingConflict(
                        "a request with this Idempotency-Key is still being processed (or did not finish); "
                        "retry later, or send a new key for a new rating"
                    ) from None
                time.sleep(0.02)
                continue
            return self._land_claimed(fd, marker, row, digest)

    def _land_claimed(self, fd: int, marker: Path, row: Mapping, digest: str) -> Landed:
        try:
            path = append_ratings(self.paths, [row])
        except BaseException:
            os.close(fd)
            marker.unlink(missing_ok=True)  # nothing landed: a retry with the key may try again
            raise
        with os.fdopen(fd, "w") as f:
            json.dump({"fingerprint": digest, "file": path.name}, f)
            f.flush()
            os.fsync(f.fileno())
        return Landed(path.name, replayed=False)

    @staticmethod
    def _answered(marker: Path, digest: str) -> Landed | None:
        """The earlier request's answer; None while it is still landing (or gave up: marker gone)."""
        try:
            record = json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):
            return None  # being written, or removed after a failure: try to claim it again
        if record.get("fingerprint") != digest:
            raise RatingConflict("this Idempotency-Key was already used for a different rating; send a new key")
        return Landed(record["file"], replayed=True)

    def _sweep(self) -> None:
        """Forget keys older than the TTL, at most once an hour (a retry comes within minutes)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 3600
        cutoff = time.time() - self.key_ttl_seconds
        for p in self.keys.glob("*.json"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:
                pass


class WaitingRatings:
    """How many ratings wait in incoming/ for the next ingestion (the sensor's count)."""

    def __init__(self, incoming: Path, *, min_interval_seconds: float = 0.5):
        self.incoming = Path(incoming)
        self.min_interval_seconds = min_interval_seconds
        self._files: dict[str, tuple[tuple, int]] = {}  # name -> ((size, mtime), ratings)
        self._total = 0
        self._counted_at = float("-inf")
        self._lock = threading.Lock()

    def count(self) -> int:
        """Exact for ratings landed through `note`; files that others add or ingestion removes show up
        within `min_interval_seconds` (a scan of a large folder per request would not keep up)."""
        with self._lock:
            if time.monotonic() - self._counted_at >= self.min_interval_seconds:
                self._scan()
            return self._total

    def note(self, name: str) -> None:
        """A file this process just landed: counted now, without a scan."""
        with self._lock:
            if name not in self._files:
                entry = self._count_file(self.incoming / name)
                if entry is not None:
                    self._files[name] = entry
                    self._total += entry[1]

    def _scan(self) -> None:
        files = {}
        for path in landing_files(self.incoming):
            entry = self._count_file(path, self._files.get(path.name))
            if entry is not None:
                files[path.name] = entry
        self._files, self._total = files, sum(n for _, n in files.values())
        self._counted_at = time.monotonic()

    @staticmethod
    def _count_file(path: Path, known: tuple[tuple, int] | None = None) -> tuple[tuple, int] | None:
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            if known is not None and known[0] == stamp:
                return known
            data = path.read_bytes()
        except FileNotFoundError:
            return None  # ingested (moved) while we looked
        try:
            return stamp, len(parse_records(path.name, data))
        except FeedbackFileError:
            return stamp, 0
