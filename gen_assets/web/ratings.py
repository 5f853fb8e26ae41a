"""Ratings from the review page into the feedback landing zone: checked, landed atomically, at most once.

- `check_rating` turns a request's fields into a row of the landing zone's schema (landing.FIELDS),
  checked the way ingestion checks a rating file (`landing.check_values`), plus what only the page can
  check before answering: the sample exists in `generated`, the sizes, no unknown field.
- `RatingDesk.land` writes each rating with `landing.append_ratings`: its own JSONL file under a unique
  name, written to a hidden temporary name and renamed into feedback/incoming/. That is the format the
  feedback asset ingests and the sensor counts, and concurrent raters never share or half-write a file.
- A client that retries a POST (a timeout, a double click, a reload) sends the same idempotency key (the
  `Idempotency-Key` header, or the form's nonce); the rating lands once per key. The key is claimed by
  linking a locked marker file into feedback/web/keys/ (named by the key's sha256: nothing the client
  sends becomes a path), so two requests with one key race safely, in one process or several. The marker
  records a fingerprint of the rating and the landed file *before* the file is renamed into incoming/:
  the same request again is answered as before ("replayed"), another rating under a used key is refused
  (409), and a claim whose request died is resolved (see RatingDesk). Markers are swept after a day.
- `WaitingRatings` counts the ratings waiting in incoming/ the way pending.scan counts them (records per
  file, 0 for a broken file), parsing each file once: with many raters the folder holds many files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
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
    ratings_file,
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
    """Lands ratings in the landing zone, each at most once per idempotency key.

    A key's marker (keys/<sha256 of the key>.json) appears already locked (flock, created under a private
    name and linked into place), and its claimant holds the lock until the rating has landed, so a lock
    that can be taken means the claimant is gone. The landing, in this order:
      1. write the rating to incoming/.<key sha>.web.tmp (hidden: ingestion and the sensor skip it), fsync;
      2. write the record (fingerprint, file name, sha) into the marker, fsync;
      3. rename the temporary file to its name in incoming/.
    A crash leaves a claim that `_settle` resolves, at start-up (`recover`) or when the key comes again:
    a record means the temporary file is complete, so it is landed (if step 3 had not happened); no record
    means nothing landed, so the temporary file is removed and the claim released. Either way a retry with
    the same key finds the landed rating or lands it once.
    """

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
            fd = self._claim(marker)
            if fd is not None:
                return self._land_claimed(fd, marker, row, digest)
            landed = self._settle(marker, digest)
            if landed is not None:
                return landed
            if time.monotonic() > deadline:
                raise RatingConflict(
                    "a request with this Idempotency-Key is still being processed; "
                    "retry later, or send a new key for a new rating"
                )
            time.sleep(0.02)

    def recover(self) -> None:
        """Resolve the claims of requests that died (a crash, a kill): at start-up, before any request."""
        if not self.keys.is_dir():
            return
        for staging in self.keys.glob(".*.claim"):  # died between creating its marker and linking it
            fd = _open_unlocked(staging)
            if fd is not None:
                staging.unlink(missing_ok=True)
                os.close(fd)
        for marker in self.keys.glob("*.json"):
            self._settle(marker, None)
        # a temporary file whose marker is gone cannot be landed (no record says where): remove it
        for tmp in self.paths.incoming.glob(".*.web.tmp"):
            if not (self.keys / f"{tmp.name.split('.')[1]}.json").exists():
                tmp.unlink(missing_ok=True)

    def _tmp(self, marker: Path) -> Path:
        return self.paths.incoming / f".{marker.stem}.web.tmp"

    @staticmethod
    def _claim(marker: Path) -> int | None:
        """The marker's descriptor, locked, when this call claimed the key; None when it was claimed before."""
        staging = marker.with_name(f".{marker.stem}.{uuid.uuid4().hex}.claim")
        fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.link(staging, marker)  # atomic, and fails if the key is claimed: the O_EXCL of a locked file
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            staging.unlink(missing_ok=True)
        return fd

    def _land_claimed(self, fd: int, marker: Path, row: Mapping, digest: str) -> Landed:
        tmp = self._tmp(marker)
        try:
            name, data = ratings_file([row])
            self.paths.incoming.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp, data)
            record = {"fingerprint": digest, "file": name, "sha": hashlib.sha256(data).hexdigest()}
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)  # nothing landed: a retry with the key may try again
            os.close(fd)
            raise
        try:
            os.replace(tmp, self.paths.incoming / name)
        finally:
            os.close(fd)  # a failed rename is finished by the next request with this key (or `recover`)
        return Landed(name, replayed=False)

    def _settle(self, marker: Path, digest: str | None, forget: bool = False) -> Landed | None:
        """The earlier request's answer for a claimed key, once its landing is known to be done (or done
        here, for a claimant that died after its record); None when the claim was released or is still
        in flight (claim again). Raises RatingConflict when the key landed another rating. `forget`: also
        remove the marker once settled (the key's TTL is over)."""
        fd = _open_unlocked(marker)
        if fd is None:  # its claimant is landing it now: answer when its record is there
            record = _read_record(marker)
            return None if record is None else _answer(record, digest)
        try:
            if not _same_file(fd, marker):
                return None  # released and claimed anew meanwhile
            with open(fd, "rb", closefd=False) as f:
                record = _parse_record(f.read())
            tmp = self._tmp(marker)
            if record is None or not self._finish(tmp, record):  # nothing (whole) landed
                tmp.unlink(missing_ok=True)
                marker.unlink(missing_ok=True)
                return None
            if forget:
                marker.unlink(missing_ok=True)
            return _answer(record, digest)
        finally:
            os.close(fd)

    def _finish(self, tmp: Path, record: dict) -> bool:
        """Land a recorded rating whose rename had not happened; False when its temporary file is not the
        recorded one (then nothing landed)."""
        try:
            data = tmp.read_bytes()
        except FileNotFoundError:
            return True  # renamed: it landed
        if hashlib.sha256(data).hexdigest() != record.get("sha"):
            return False
        os.replace(tmp, self.paths.incoming / record["file"])
        return True

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
                    self._settle(p, None, forget=True)
            except (FileNotFoundError, RatingConflict):
                pass


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _open_unlocked(path: Path) -> int | None:
    """A descriptor of `path` holding its lock, or None when another holds it (or the file is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _parse_record(text: bytes) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None  # empty or torn: the claimant died before its record was whole
    return record if isinstance(record, dict) and {"fingerprint", "file", "sha"} <= set(record) else None


def _read_record(marker: Path) -> dict | None:
    try:
        return _parse_record(marker.read_bytes())
    except FileNotFoundError:
        return None


def _answer(record: dict, digest: str | None) -> Landed:
    if digest is not None and record["fingerprint"] != digest:
        raise RatingConflict("this Idempotency-Key was already used for a different rating; send a new key")
    return Landed(record["file"], replayed=True)


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
