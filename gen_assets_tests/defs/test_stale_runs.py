"""A run whose process was killed mid-way is marked failed on the next start, not STARTED forever."""

import os
import socket
import subprocess
import sys

import dagster as dg
import pytest

from dagster._core.utils import make_new_run_id

from gen_assets.defs import stale_runs


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as inst:
        yield inst


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def add_run(instance, status, tags):
    run = dg.DagsterRun(job_name="image_job", run_id=make_new_run_id(), status=status, tags=tags)
    instance.add_run(run)
    return run.run_id


def test_a_started_run_whose_process_is_gone_is_marked_failed(instance):
    host = socket.gethostname()
    dead = add_run(instance, dg.DagsterRunStatus.STARTED,
                   {stale_runs.PID_TAG: str(dead_pid()), stale_runs.HOST_TAG: host})
    starting = add_run(instance, dg.DagsterRunStatus.STARTING,
                       {stale_runs.PID_TAG: str(dead_pid()), stale_runs.HOST_TAG: host})
    alive = add_run(instance, dg.DagsterRunStatus.STARTED, stale_runs.process_tags())
    elsewhere = add_run(instance, dg.DagsterRunStatus.STARTED,
                        {stale_runs.PID_TAG: str(dead_pid()), stale_runs.HOST_TAG: "another-" + host})
    unknown = add_run(instance, dg.DagsterRunStatus.STARTED, {})

    assert sorted(stale_runs.fail_dead_runs(instance)) == sorted([dead, starting])

    status = {r: instance.get_run_by_id(r).status for r in (dead, starting, alive, elsewhere, unknown)}
    assert status == {dead: dg.DagsterRunStatus.FAILURE, starting: dg.DagsterRunStatus.FAILURE,
                      alive: dg.DagsterRunStatus.STARTED, elsewhere: dg.DagsterRunStatus.STARTED,
                      unknown: dg.DagsterRunStatus.STARTED}
    [failure] = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "is gone" in failure.dagster_event.message
    assert stale_runs.fail_dead_runs(instance) == []  # once


def test_a_run_launched_by_the_ui_is_found_by_its_worker_pid(instance):
    """The default run launcher's worker records its pid in an engine event, not in a tag."""
    run_id = add_run(instance, dg.DagsterRunStatus.STARTED, {})
    from dagster._core.events import EngineEventData

    pid = dead_pid()
    instance.report_engine_event(f"Started process for run (pid: {pid}).", instance.get_run_by_id(run_id),
                                 EngineEventData.in_process(pid))
    assert stale_runs.fail_dead_runs(instance) == [run_id]


def test_gen_assets_run_tags_its_run_and_fails_the_dead_ones(tmp_path, monkeypatch):
    """`gen-assets run` (cli.execute) fails a dead run of the home's instance before it starts its own,
    and tags its own with its pid."""
    from gen_assets import cli

    home = tmp_path / "home"
    monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    cli.prepare_dagster_home(cli.Paths.from_env())
    with dg.DagsterInstance.get() as inst:
        killed = add_run(inst, dg.DagsterRunStatus.STARTED,
                         {stale_runs.PID_TAG: str(dead_pid()), stale_runs.HOST_TAG: socket.gethostname()})
    assert cli.execute("prune_job", "smoke", "all", False, report=False) == 0
    with dg.DagsterInstance.get() as inst:
        assert inst.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        [own] = inst.get_runs(filters=dg.RunsFilter(job_name="prune_job"))
        assert own.status == dg.DagsterRunStatus.SUCCESS and own.tags[stale_runs.PID_TAG] == str(os.getpid())
