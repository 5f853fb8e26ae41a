"""The last Dagster runs, for the dashboard: read from the instance under GEN_ASSETS_HOME/dagster_home.

Best effort and cached: dagster is imported on first use (the gallery never needs it), the instance is
opened only once it has run storage (so the page never creates one where no run was recorded), and a
failure becomes a note on the dashboard instead of an error page.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path


class RecentRuns:
    def __init__(self, dagster_home: Path, *, ttl_seconds: float = 10.0, limit: int = 10):
        self.dagster_home = Path(dagster_home)
        self.ttl_seconds = ttl_seconds
        self.limit = limit
        self._cached: tuple[float, list[dict], str | None] | None = None
        self._instance = None
        self._lock = threading.Lock()

    def has_storage(self) -> bool:
        """Runs were recorded: the default SQLite run storage exists, or dagster.yaml names another storage."""
        if (self.dagster_home / "history" / "runs.db").exists():
            return True
        config = self.dagster_home / "dagster.yaml"
        return config.exists() and any(line.split(":")[0].strip() in ("storage", "run_storage")
                                       for line in config.read_text().splitlines() if not line.startswith((" ", "#")))

    def get(self) -> tuple[list[dict], str | None]:
        """(runs newest first, None) or ([], why there are none to show)."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl_seconds:
                return self._cached[1], self._cached[2]
            try:
                runs, note = self._read()
            except Exception as e:  # noqa: BLE001 - the dashboard shows the problem instead of failing
                runs, note = [], f"the Dagster instance could not be read: {type(e).__name__}: {e}"
            self._cached = (time.monotonic(), runs, note)
            return runs, note

    def _read(self) -> tuple[list[dict], str | None]:
        if not self.has_storage():
            return [], "no runs recorded yet (run `gen-assets run`)"
        if self._instance is None:
            from dagster import DagsterInstance

            self._instance = DagsterInstance.from_config(str(self.dagster_home))
        records = self._instance.get_run_records(limit=self.limit)
        return [_run_dict(r) for r in records], None if records else "no runs recorded yet (run `gen-assets run`)"


def _run_dict(record) -> dict:
    run = record.dagster_run
    started, ended = record.start_time, record.end_time
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": run.status.value,
        "trigger": run.tags.get("gen_assets/trigger") or ("sensor" if run.tags.get("dagster/sensor_name") else ""),
        "started": _ts(started) if started else _ts(record.create_timestamp.timestamp()),
        "duration": f"{ended - started:.0f} s" if started and ended else "",
    }


def _ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
