"""What the review page shows, read from the warehouse without ever writing to it or getting in a run's way.

The warehouse is one DuckDB file that Dagster runs write to, and DuckDB lets one process hold it for
writing: while a retrain has it open, another process cannot even open it read-only ("Could not set
lock on file"). So the page never keeps a connection. `Catalog` opens a short read-only connection,
reads one `Snapshot` of everything the pages need (the curated samples with their image bytes, the ids
of every generated sample, the registry summary, the latest batches, the last retrain), and closes it.
It reads again only when the file changed (size and mtime of the file and of its write-ahead log), so
most page views cost no connection at all.

When the file is locked the catalog serves the last snapshot, marked stale, and leaves the file alone
for `busy_backoff_seconds`: pages keep working through a retrain, and the retrain (whose connections
Dagster retries with backoff) is not pestered by a read per request. Only before the first good read
is there nothing to serve; then it retries for `busy_retry_seconds` and raises `WarehouseBusy` (the
app answers 503 with Retry-After) — never a hang, never a crash.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from gen_assets.store import registry
from gen_assets.store.warehouse import connect

MODALITIES = ("image", "text")  # what the pipeline makes: one with nothing curated is empty, not unknown
MAX_AGE_SECONDS = 60.0  # read again after this long even if the file looks unchanged
IMAGE_CACHE_ENTRIES = 2048  # images of samples outside the curated set, read on demand


class WarehouseBusy(RuntimeError):
    """The warehouse could not be read and there is no earlier snapshot to show instead."""

    retry_after = 2  # seconds, for the Retry-After header


@dataclass(frozen=True)
class CuratedSample:
    sample_id: str
    modality: str
    category: str
    model_version: str
    batch_id: str
    reward: float
    rank: int
    created_at: str
    text: str | None  # texts only; images are served by id
    prompt: str | None = None  # the brief a text was written for
    exploratory: bool = False  # shown beside the curated set to be rated: the reward model is unsure of it


@dataclass(frozen=True)
class Snapshot:
    """One consistent read of the warehouse: everything the pages show."""

    samples: tuple[CuratedSample, ...] = ()  # curated, by modality, category, rank
    images: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # curated images: sample_id -> PNG
    known: Mapping[str, str] = field(default_factory=dict, repr=False)  # every generated sample -> modality
    registry: Mapping[str, Any] = field(default_factory=dict)  # store.registry.registry_summary
    batches: tuple[dict, ...] = ()  # the latest generation batches, newest first
    last_retrain: Mapping[str, dict] = field(default_factory=dict)  # modality -> newest model tuned on feedback
    read_at: datetime | None = None  # None: there is no warehouse yet
    signature: tuple = ()
    stale: bool = False  # served from before: the file is busy (a run is writing it)
    busy_since: datetime | None = None
    # what customers did with served content (the `events` table): sample_id -> (impressions, clicks),
    # (experiment_id, arm) -> (impressions, clicks); and the running experiment per modality
    event_counts: Mapping[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    arm_counts: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict, repr=False)
    experiments: Mapping[str, dict] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.samples})

    def categories(self, modality: str) -> list[str]:
        return sort_categories({s.category for s in self.samples if s.modality == modality})

    def curated(self, modality: str | None = None, category: str | None = None) -> list[CuratedSample]:
        return [s for s in self.samples
                if (modality is None or s.modality == modality) and (category is None or s.category == category)]

    def newest_retrain(self, modality: str | None = None) -> dict | None:
        entries = [e for m, e in self.last_retrain.items() if modality is None or m == modality]
        return max(entries, key=lambda e: e["at"], default=None)


def category_key(category: str) -> tuple:
    """Digit labels in numeric order ("2" before "10"), other names alphabetically."""
    return (0, int(category), "") if category.isdigit() else (1, 0, category)


def sort_categories(categories) -> list[str]:
    return sorted(categories, key=category_key)


def file_signature(path: Path) -> tuple:
    """What changes whenever DuckDB commits: the database file and its write-ahead log."""
    parts = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            parts.append(None)
            continue
        parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(parts)


def _locked(error: duckdb.Error) -> bool:
    """Another process writes the file (or this process holds it with another configuration)."""
    text = str(error).lower()
    return "lock" in text or "different configuration" in text


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Catalog:
    """The warehouse as the pages see it: `current()` gives a snapshot, `image()` one sample's PNG."""

    def __init__(self, warehouse: Path, *, busy_retry_seconds: float = 1.0, busy_backoff_seconds: float = 1.0,
                 artifacts: str | None = None):
        self.path = Path(warehouse)
        self.artifacts = artifacts  # GEN_ASSETS_ARTIFACTS when it is a URL: the batch files are read there
        self.busy_retry_seconds = busy_retry_seconds
        self.busy_backoff_seconds = busy_backoff_seconds
        self._snapshot: Snapshot | None = None
        self._refresh = threading.Lock()  # one reader at a time; the others serve what is there
        self._quiet_until = 0.0
        self._busy_since: datetime | None = None
        self._problem = "the warehouse is busy"  # why the last read failed
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._images_lock = threading.Lock()

    # -- snapshots -------------------------------------------------------------------------------------

    def current(self) -> Snapshot:
        """The latest snapshot: read again if the file changed; the last one, stale, if it is busy."""
        signature = file_signature(self.path)
        snap = self._snapshot
        if snap is not None and self._fresh(snap, signature):
            return snap
        if time.monotonic() < self._quiet_until:
            return self._busy(snap)
        if not self._refresh.acquire(blocking=snap is None):
            return snap  # another request is reading it right now; this one shows the previous read
        try:
            snap = self._snapshot
            if snap is not None and self._fresh(snap, signature):
                return snap
            if time.monotonic() < self._quiet_until:
                return self._busy(snap)  # the read this request waited for has just failed: no second try
            try:
                new = self._read(signature, retry_seconds=0.0 if snap is not None else self.busy_retry_seconds)
            except (WarehouseBusy, duckdb.Error) as e:
                self._quiet_until = time.monotonic() + self.busy_backoff_seconds
                self._busy_since = self._busy_since or _utcnow()
                self._problem = str(e) if isinstance(e, WarehouseBusy) else f"the warehouse cannot be read: {e}"
                return self._busy(snap)
            self._snapshot, self._busy_since = new, None
            return new
        finally:
            self._refresh.release()

    def _busy(self, snap: Snapshot | None) -> Snapshot:
        """What to serve while the file cannot be read: the last snapshot, marked stale, or a 503."""
        if snap is None:
            raise WarehouseBusy(self._problem)
        return dataclasses.replace(snap, stale=True, busy_since=self._busy_since)

    @staticmethod
    def _fresh(snap: Snapshot, signature: tuple) -> bool:
        age = (_utcnow() - snap.read_at).total_seconds() if snap.read_at else 0.0
        return snap.signature == signature and age < MAX_AGE_SECONDS

    def _read(self, signature: tuple, retry_seconds: float) -> Snapshot:
        if signature[0] is None:
            return Snapshot(signature=signature)  # no warehouse yet: nothing curated, nothing trained
        with self.connection(retry_seconds) as con:
            return read_snapshot(con, signature)

    @contextmanager
    def connection(self, retry_seconds: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, closed on exit; a locked file is tried again for `retry_seconds`."""
        deadline = time.monotonic() + retry_seconds
        delay = 0.02
        while True:
            try:
                con = connect(self.path, read_only=True, artifacts=self.artifacts)
                break
            except duckdb.Error as e:
                if not _locked(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise WarehouseBusy("the warehouse is busy: a run is writing it; try again in a few seconds") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield con
        finally:
            con.close()

    # -- images ----------------------------------------------------------------------------------------

    def image(self, sample_id: str) -> bytes | None:
        """A sample's PNG bytes; None when the sample is not a generated image. Curated images come from
        the snapshot; any other one is read on demand (and kept: a sample's content never changes)."""
        snap = self.current()
        if sample_id in snap.images:
            return snap.images[sample_id]
        if snap.known.get(sample_id) != "image":
            return None
        with self._images_lock:
            if sample_id in self._images:
                self._images.move_to_end(sample_id)
                return self._images[sample_id]
        with self.connection(self.busy_retry_seconds) as con:
            row = con.execute("SELECT content FROM generated WHERE sample_id = ? LIMIT 1", [sample_id]).fetchone()
        if row is None or row[0] is None:
            return None
        data = bytes(row[0])
        with self._images_lock:
            self._images[sample_id] = data
            while len(self._images) > IMAGE_CACHE_ENTRIES:
                self._images.popitem(last=False)
        return data


# -- reading one snapshot ------------------------------------------------------------------------------


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Tables and views of the main schema (a read-only connection cannot create missing ones)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_catalog = current_database()"
    ).fetchall()
    return {r[0] for r in rows}


def read_snapshot(con: duckdb.DuckDBPyConnection, signature: tuple = ()) -> Snapshot:
    """Everything the pages show, in one read-only connection. Missing tables read as empty."""
    relations = _relations(con)
    samples, images = _curated(con) if "curated" in relations else ((), {})
    known = {}
    if "generated" in relations:
        known = dict(con.execute("SELECT sample_id, modality FROM generated").fetchall())
    return Snapshot(
        samples=samples,
        images=images,
        known=known,
        registry=registry.registry_summary(con),
        batches=_batches(con) if "batches" in relations else (),
        last_retrain=_last_retrain(con) if "models" in relations else {},
        read_at=_utcnow(),
        signature=signature,
        **(_event_counts(con) if "events" in relations else {}),
        experiments=registry.running_experiments(con) if "experiments" in relations else {},
    )


def _event_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Impressions and clicks per sample and per experiment arm (distinct serves: a repeated click counts once)."""
    per_sample = con.execute(
        "SELECT sample_id, count(DISTINCT serve_id) FILTER (WHERE event = 'impression'), "
        "count(DISTINCT serve_id) FILTER (WHERE event = 'click') FROM events GROUP BY sample_id").fetchall()
    per_arm = con.execute(
        "SELECT experiment_id, arm, count(DISTINCT serve_id) FILTER (WHERE event = 'impression'), "
        "count(DISTINCT serve_id) FILTER (WHERE event = 'click') FROM events WHERE experiment_id IS NOT NULL "
        "GROUP BY experiment_id, arm").fetchall()
    return {"event_counts": {s: (int(i), int(c)) for s, i, c in per_sample},
            "arm_counts": {(e, a): (int(i), int(c)) for e, a, i, c in per_arm}}


def _curated(con: duckdb.DuckDBPyConnection) -> tuple[tuple[CuratedSample, ...], dict[str, bytes]]:
    # a warehouse whose view predates exploration reads as having none
    columns = {row[0] for row in con.execute("DESCRIBE curated").fetchall()}
    exploratory = "exploratory" if "exploratory" in columns else "false"
    rows = con.execute(
        "SELECT sample_id, modality, category, model_version, batch_id, reward, rank, created_at, text, prompt, "
        f"{exploratory}, CASE WHEN modality = 'image' THEN content END FROM curated "
        "ORDER BY modality, category, rank, sample_id"
    ).fetchall()
    samples, images = [], {}
    for sample_id, modality, category, version, batch_id, reward, rank, created_at, text, prompt, explore, content in rows:
        samples.append(CuratedSample(sample_id, modality, str(category), version, batch_id, float(reward), int(rank),
                                     _iso(created_at), text, prompt, bool(explore)))
        if content is not None:
            images[sample_id] = bytes(content)
    samples.sort(key=lambda s: (s.modality, category_key(s.category), s.rank, s.sample_id))
    return tuple(samples), images


def _batches(con: duckdb.DuckDBPyConnection) -> tuple[dict, ...]:
    return tuple({**b, "created_at": _iso(b["created_at"])} for b in registry.latest_batches(con, limit=10))


def _last_retrain(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """modality -> the newest model tuned on feedback (what a retrain registers) and when.

    The registry, not the Dagster instance, on purpose: it is in the same cheap read as the rest, and it
    says when a retrain last produced a model."""
    return {m: {"modality": m, "model_version": v, "at": _iso(at)} for m, (v, at) in registry.last_retrain(con).items()}


def _iso(value) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else str(value)
