"""Serving curated content where customers see it, and counting what they do with it.

`GET /api/content` asks for one sample of a category to show in a slot (an ad, a product page, an
e-mail). `Serving.choose` answers in microseconds, without touching the warehouse or the disk:

1. **The arm.** While an experiment runs for the modality (a challenger that passed the offline gate,
   against the champion: `experiments` in the registry), the request goes to the champion's or the
   challenger's content. With `allocation = "bandit"` the shares come from top-two Thompson sampling
   over the arms' click rates (gen_assets.rules.bandit, with a minimum share per arm so the experiment
   keeps measuring both); with "fixed" they stay at the experiment's challenger_share. A request with a
   user_id is sticky: the user's number `sticky_unit(experiment, user)` picks the arm from the current
   shares, so the same person keeps seeing the same model while the shares settle.
2. **The sample.** Among the arm's curated samples of the category (not the exploratory ones: those are
   for people rating on purpose), the same bandit over the samples' click rates.
3. **The serve id.** What was served, from which arm, with which probability (the arm's share times the
   sample's), signed with the server's key. `POST /api/events` takes it back with an impression, click
   or conversion: the server verifies the signature and writes the event with those fields, so an event
   cannot claim a probability, a sample or an arm the server did not serve, and ingestion needs no
   log of serves. The probability is what lets the reward model and the experiment weigh each
   event by the inverse of how likely the bandit was to serve it.

Counts come from the `events` table (the snapshot: what the `events` asset ingested) plus what this
process landed since (kept in memory, dropped once the files have left feedback/events/incoming/).
The shares are recomputed at most every `refresh_seconds` per (category, arm), from a Monte Carlo
of `draws` posterior draws, so a request costs a lookup and one uniform number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gen_assets.rules.bandit import ArmCounts, choose, serving_probabilities, sticky_unit
from gen_assets.web.catalog import CuratedSample, Snapshot

EVENTS = ("impression", "click", "conversion")
TOKEN_PREFIX = "s1"
KEY_FILE = "serve.key"


class ServeIdError(ValueError):
    """A serve id this server did not issue (or one that was altered)."""


@dataclass(frozen=True)
class Served:
    """One answer of /api/content: what to show, and the serve id the events must send back."""

    serve_id: str
    sample: CuratedSample
    arm: str  # "champion" | "challenger"
    probability: float  # of serving this sample to this request: the arm's share x the sample's
    arm_share: float
    experiment_id: str | None
    slot: str | None
    user_id: str | None


@dataclass(frozen=True)
class ServeClaim:
    """What a verified serve id says was served."""

    sample_id: str
    modality: str
    category: str
    model_version: str
    arm: str
    probability: float
    experiment_id: str | None
    slot: str | None
    user_id: str | None
    served_at: float


def serving_key(root: Path, secret: bytes | None = None) -> bytes:
    """The key that signs serve ids: GEN_ASSETS_WEB_SECRET when set, else a random key kept in
    `root`/serve.key (created once, readable by the owner only), so serve ids outlive a restart."""
    if secret:
        return hashlib.sha256(b"gen-assets serve ids\x00" + secret).digest()
    path = Path(root) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)  # the first process to get here wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


class ServeTokens:
    """Serve ids: a compact JSON of what was served, and an HMAC-SHA256 of it (truncated to 128 bits)."""

    def __init__(self, key: bytes):
        self.key = key

    def _mac(self, payload: bytes) -> str:
        return _b64(hmac.new(self.key, payload, hashlib.sha256).digest()[:16])

    def issue(self, claim: ServeClaim) -> str:
        body = {"s": claim.sample_id, "m": claim.modality, "c": claim.category, "v": claim.model_version,
                "a": claim.arm, "p": round(claim.probability, 6), "e": claim.experiment_id, "l": claim.slot,
                "u": claim.user_id, "t": round(claim.served_at, 3), "n": secrets.token_hex(4)}
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
        return f"{TOKEN_PREFIX}.{_b64(payload)}.{self._mac(payload)}"

    def verify(self, serve_id: object) -> ServeClaim:
        if not isinstance(serve_id, str) or serve_id.count(".") != 2 or len(serve_id) > 2048:
            raise ServeIdError("serve_id is not a serve id of this server (as /api/content answers it)")
        prefix, body, mac = serve_id.split(".")
        try:
            payload = _unb64(body)
        except ValueError:
            raise ServeIdError("serve_id is not a serve id of this server (as /api/content answers it)") from None
        if prefix != TOKEN_PREFIX or not hmac.compare_digest(mac, self._mac(payload)):
            raise ServeIdError("serve_id was not issued by this server (or was altered): send it back as "
                               "/api/content gave it")
        d = json.loads(payload)
        return ServeClaim(d["s"], d["m"], d["c"], d["v"], d["a"], float(d["p"]), d["e"], d["l"], d["u"], float(d["t"]))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from None


@dataclass
class _Shares:
    keys: tuple[str, ...]
    probabilities: np.ndarray
    counts: tuple
    at: float


@dataclass
class ServingSettings:
    min_share: float = 0.02  # every sample (and every experiment arm, see arm_min_share) keeps this much traffic
    arm_min_share: float = 0.1
    # top-two Thompson sampling among samples: the best of a posterior draw this often, the runner-up
    # otherwise, so the two leading samples keep being compared (1.0: plain Thompson sampling)
    top_two: float = 0.7
    # between an experiment's two models plain Thompson sampling: with two arms top-two at 0.5 would be a
    # fixed 50/50 split; arm_min_share keeps the experiment measuring both
    arm_top_two: float = 1.0
    draws: int = 1000  # Monte Carlo draws per recomputation of the shares
    refresh_seconds: float = 0.25  # shares are recomputed at most this often per (category, arm)
    prior_strength: float = 10.0  # the Beta prior: the category's pooled click rate, worth this many impressions


@dataclass
class _Delta:
    """Events this process landed that the snapshot does not hold yet."""

    impressions: dict[str, set] = field(default_factory=dict)  # sample_id -> serve ids
    clicks: dict[str, set] = field(default_factory=dict)
    arms: dict[tuple[str, str], list[set]] = field(default_factory=dict)  # (experiment, arm) -> [impr, clicks]
    files: set[str] = field(default_factory=set)


class EventBatcher:
    """Group commit for events: requests wait for the next file, which holds every event queued meanwhile.

    One file per request would be safe but would leave ingestion a file per page view (tens of
    thousands a day, each its own transaction). Here a writer thread takes everything queued, waits
    `flush_seconds` for more (up to `max_events`), lands it as one file (`append_events`: temporary name,
    fsync, rename) and only then answers each waiting request with the file's name: an acknowledged
    event is on disk, and a crash before the rename answers nobody (the clients retry; event ids keep
    the retry harmless). If a batch cannot be written, each request's events are tried on their own,
    so one request's problem never fails another's."""

    def __init__(self, write: Callable[[list[Mapping]], Path], *, flush_seconds: float = 0.02,
                 max_events: int = 5000):
        self.write = write
        self.flush_seconds = flush_seconds
        self.max_events = max_events
        self._queue: list[tuple[list[Mapping], Future]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def land(self, rows: Sequence[Mapping]) -> Future:
        """Queue a request's events; the future gives the landed file's name (or the write's exception)."""
        future: Future = Future()
        with self._cond:
            self._queue.append((list(rows), future))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
            time.sleep(self.flush_seconds)  # let the requests of the next few milliseconds join this file
            with self._cond:
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_events):
                    rows, future = self._queue.pop(0)
                    batch.append((rows, future))
                    size += len(rows)
            self._flush(batch)

    def _flush(self, batch: list[tuple[list[Mapping], Future]]) -> None:
        try:
            name = self.write([r for rows, _ in batch for r in rows]).name
        except Exception:  # noqa: BLE001 -- retried per request below, each answered with its own outcome
            for rows, future in batch:
                try:
                    future.set_result(self.write(rows).name)
                except Exception as e:  # noqa: BLE001
                    future.set_exception(e)
            return
        for _, future in batch:
            future.set_result(name)


class Serving:
    """Chooses what to serve (`choose`) and counts the events this process lands (`note`)."""

    def __init__(self, tokens: ServeTokens, incoming: Path, settings: ServingSettings | None = None):
        self.tokens = tokens
        self.incoming = Path(incoming)
        self.settings = settings or ServingSettings()
        self._lock = threading.Lock()
        self._shares: dict[tuple, _Shares] = {}
        self._delta = _Delta()
        self._delta_for: tuple = ()  # the snapshot signature the delta is relative to
        self._rng = np.random.default_rng()
        self._seed = 0

    # -- choosing ----------------------------------------------------------------------------------------

    def choose(self, snap: Snapshot, modality: str, category: str, *, user_id: str | None = None,
               slot: str | None = None, rng: np.random.Generator | None = None) -> Served:
        """One sample to serve. `rng`: where the draws come from (a seeded one in tests)."""
        rng = rng or self._rng
        samples = [s for s in snap.curated(modality, category) if not s.exploratory]
        if not samples:
            raise LookupError(f"nothing curated to serve for {modality} {category!r}")
        experiment = snap.experiments.get(modality)
        by_version: dict[str, list[CuratedSample]] = {}
        for s in samples:
            by_version.setdefault(s.model_version, []).append(s)
        with self._lock:
            self._sync(snap)
            arm, arm_share, version = "champion", 1.0, None
            if experiment and experiment["challenger"] in by_version and experiment["champion"] in by_version:
                shares = self._arm_shares(snap, experiment)
                u = sticky_unit(experiment["experiment_id"], user_id) if user_id else float(rng.random())
                pick = choose(shares, u)
                arm = ("champion", "challenger")[pick]
                arm_share = float(shares[pick])
                version = experiment[arm]
            else:
                experiment = None
                champion = (snap.registry.get(modality) or {}).get("champion") or {}
                version = champion.get("version") if champion.get("version") in by_version else None
            pool = by_version[version] if version else samples
            shares = self._sample_shares(snap, modality, category, version or "*", pool)
            pick = choose(shares.probabilities, float(rng.random()))
        sample = pool[pick]
        probability = arm_share * float(shares.probabilities[pick])
        claim = ServeClaim(sample.sample_id, modality, category, sample.model_version, arm, probability,
                           experiment["experiment_id"] if experiment else None, slot, user_id, time.time())
        return Served(self.tokens.issue(claim), sample, arm, probability, arm_share, claim.experiment_id, slot, user_id)

    def _counts(self, snap: Snapshot, sample_id: str) -> tuple[int, int]:
        impressions, clicks = snap.event_counts.get(sample_id, (0, 0))
        return (impressions + len(self._delta.impressions.get(sample_id, ())),
                clicks + len(self._delta.clicks.get(sample_id, ())))

    def _sample_shares(self, snap: Snapshot, modality: str, category: str, version: str,
                       pool: Sequence[CuratedSample]) -> _Shares:
        keys = tuple(s.sample_id for s in pool)
        return self._bandit((modality, category, version), keys, tuple(self._counts(snap, k) for k in keys),
                            min_share=min(self.settings.min_share, 1.0 / len(keys)), top_two=self.settings.top_two)

    def experiment_shares(self, snap: Snapshot, experiment: Mapping) -> list[float]:
        """[champion, challenger]: the traffic shares of a running experiment now."""
        with self._lock:
            self._sync(snap)
            return self._arm_shares(snap, experiment).tolist()

    def _arm_shares(self, snap: Snapshot, experiment: Mapping) -> np.ndarray:
        """[champion, challenger] shares of an experiment now (the lock held)."""
        if experiment.get("allocation", "bandit") == "fixed":
            share = float(experiment.get("challenger_share", 0.5))
            return np.array([1.0 - share, share])
        eid = experiment["experiment_id"]
        counts = []
        for arm in ("champion", "challenger"):
            i, c = snap.arm_counts.get((eid, arm), (0, 0))
            extra = self._delta.arms.get((eid, arm), [set(), set()])
            counts.append((i + len(extra[0]), c + len(extra[1])))
        return self._bandit(("experiment", eid), ("champion", "challenger"), tuple(counts),
                            min_share=self.settings.arm_min_share, top_two=self.settings.arm_top_two).probabilities

    def _bandit(self, key: tuple, keys: tuple[str, ...], counts: tuple, *, min_share: float,
                top_two: float) -> _Shares:
        """The serving probabilities of `keys` with these (impressions, clicks), recomputed when the counts
        changed and at most every refresh_seconds (the lock held). The prior is their pooled click rate."""
        cached = self._shares.get(key)
        now = time.monotonic()
        if cached is not None and cached.keys == keys and (
                cached.counts == counts or now - cached.at < self.settings.refresh_seconds):
            return cached
        impressions = sum(i for i, _ in counts)
        clicks = sum(c for _, c in counts)
        prior = min(max((clicks + 1.0) / (impressions + 20.0), 1e-3), 0.999)
        arms = [ArmCounts(k, float(i), float(min(c, i)), prior_mean=prior, prior_strength=self.settings.prior_strength)
                for k, (i, c) in zip(keys, counts)]
        self._seed += 1
        p = serving_probabilities(arms, min_share=min_share, top_two=top_two, draws=self.settings.draws,
                                  seed=self._seed)
        self._shares[key] = _Shares(keys, p, counts, now)
        return self._shares[key]

    def current_shares(self, snap: Snapshot) -> list[dict]:
        """The bandit's shares now, per category and arm (the dashboard's view)."""
        out = []
        with self._lock:
            self._sync(snap)
            for key, shares in sorted(self._shares.items(), key=lambda kv: tuple(map(str, kv[0]))):
                if key[0] == "experiment":
                    continue
                modality, category, version = key
                top = int(np.argmax(shares.probabilities))
                out.append({"modality": modality, "category": category, "model_version": version,
                            "samples": len(shares.keys), "top_sample": shares.keys[top],
                            "top_share": float(shares.probabilities[top]),
                            "impressions": int(sum(i for i, _ in shares.counts)),
                            "clicks": int(sum(c for _, c in shares.counts))})
        return out

    # -- counting ----------------------------------------------------------------------------------------

    def note(self, snap: Snapshot, file: str, rows: Sequence[Mapping]) -> None:
        """Events this process just landed (in feedback/events/incoming/`file`): counted now."""
        with self._lock:
            self._sync(snap)
            self._note_unlocked(file, rows)

    def _sync(self, snap: Snapshot) -> None:
        """A new snapshot holds what was ingested: keep only the events whose files still wait."""
        if snap.signature == self._delta_for:
            return
        self._delta_for = snap.signature
        if not self._delta.files:
            return
        waiting = {f for f in self._delta.files if (self.incoming / f).exists()}
        if waiting == self._delta.files:
            return
        # rebuild from the waiting files (rare: once per ingestion)
        self._delta = _Delta()
        for name in waiting:
            try:
                lines = (self.incoming / name).read_text().splitlines()
            except FileNotFoundError:
                continue
            rows = [json.loads(line) for line in lines if line.strip()]
            self._note_unlocked(name, rows)

    def _note_unlocked(self, file: str, rows: Sequence[Mapping]) -> None:
        d = self._delta
        d.files.add(file)
        for r in rows:
            target = d.impressions if r["event"] == "impression" else d.clicks if r["event"] == "click" else None
            if target is not None:
                target.setdefault(r["sample_id"], set()).add(r["serve_id"])
                if r.get("experiment_id"):
                    slot = d.arms.setdefault((r["experiment_id"], r["arm"]), [set(), set()])
                    slot[0 if r["event"] == "impression" else 1].add(r["serve_id"])
