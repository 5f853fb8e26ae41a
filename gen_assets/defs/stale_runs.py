"""Runs whose process died (killed, power cut) are marked failed, instead of showing STARTED forever.

A run records the process that executes it: `gen-assets run/retrain` executes in its own process and tags
the run with that pid and the host (`start_runs`); a run the Dagster UI launched (the default run
launcher) has its worker's pid in the "Started process for run (pid: N)" engine event. When
`gen-assets run/retrain` or the definitions start, `fail_dead_runs` reports every STARTING/STARTED run
of the instance whose process on this host is gone as failed, with a message saying why.

A run whose process cannot be told (another host, no pid recorded) is left as it is. A recycled pid
reads as alive: such a run stays STARTED until that process ends too, never is a live run failed.
"""

from __future__ import annotations

import logging
import os
import socket

import dagster as dg
from dagster._core.events import DagsterEventType

PID_TAG = "gen_assets/pid"
HOST_TAG = "gen_assets/host"
ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]

log = logging.getLogger(__name__)


def process_tags() -> dict[str, str]:
    """Tags naming the current process as the one executing a run (for execute_in_process)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the process executing `run` on this host, or None when it cannot be told."""
    if PID_TAG in run.tags:
        if run.tags.get(HOST_TAG) != socket.gethostname():
            return None
        return int(run.tags[PID_TAG])
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith("Started process for run"):
            continue
        pid = event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report failed every STARTING/STARTED run whose process is gone; returns their run ids."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)):
        pid = run_pid(instance, run)
        if pid is None or pid_alive(pid):
            continue
        message = (f"marked failed by gen-assets: the process executing this run (pid {pid} on "
                   f"{socket.gethostname()}) is gone; it was killed or crashed mid-run")
        instance.report_run_failed(run, message=message)
        log.warning(f"run {run.run_id} ({run.job_name}) {message}")
        failed.append(run.run_id)
    return failed


def start_runs(instance: dg.DagsterInstance) -> dict[str, str]:
    """Before executing a run in this process: fail the dead runs, and return the tags that let a later
    start tell whether this run's process is gone (pass them to execute_in_process)."""
    fail_dead_runs(instance)
    return process_tags()


def fail_dead_runs_of_current_instance() -> list[str]:
    """`fail_dead_runs` on the instance of DAGSTER_HOME, when it exists (the definitions start);
    best effort: a problem is logged, never keeps the definitions from loading."""
    if not os.path.isdir(os.environ.get("DAGSTER_HOME") or ""):
        return []  # no instance here yet: nothing ran
    try:
        with dg.DagsterInstance.get() as instance:
            return fail_dead_runs(instance)
    except Exception as e:  # noqa: BLE001 - loading the definitions matters more than this cleanup
        log.warning(f"could not check for runs whose process died: {e}")
        return []
