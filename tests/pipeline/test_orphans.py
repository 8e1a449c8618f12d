"""Orphaned runs: a run whose process was killed -9 is failed with the reason and redone once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg

from mlcicd_dagster.pipeline import orphans

JOB = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    from mlcicd_dagster.pipeline.orphans import process_tags

    @dg.op
    def slow():
        print("running", flush=True)
        time.sleep(600)

    @dg.job
    def work():
        slow()

    inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[1]))
    work.execute_in_process(instance=inst, tags={**process_tags(), "dagster/run_key": "k1",
                                                 "mlcicd/trigger": "test"})
    """
)


def test_a_killed_runs_is_reaped_and_redone_once(instance, home_dir):
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB, str(home_dir / "dagster")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not (runs := instance.get_runs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    (run,) = runs
    assert run.status == dg.DagsterRunStatus.STARTED  # what the dead process left
    assert orphans.dead_reason(run) is not None

    result = orphans.orphans_tick(instance, {"work"})
    (request,) = result
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert f"process {proc.pid}" in failed.tags[orphans.ORPHAN_TAG]
    assert request.run_key == f"redo:{run.run_id}" and request.job_name == "work"
    assert request.tags[orphans.REDO_OF_TAG] == run.run_id
    assert request.tags["mlcicd/trigger"] == "test"
    assert orphans.PID_TAG not in request.tags  # the redo gets its own process's tags
    # Other jobs' sensors leave it alone; once a run carries the redo key, no more requests.
    assert isinstance(orphans.orphans_tick(instance, {"other"}), dg.SkipReason)

    @dg.op
    def fine():
        return 1

    @dg.job(name="work")
    def work():
        fine()

    work.execute_in_process(instance=instance, tags={"dagster/run_key": request.run_key})
    assert isinstance(orphans.orphans_tick(instance, {"work"}), dg.SkipReason)


def test_a_live_process_is_never_reaped(instance):
    @dg.op
    def quick():
        return 1

    @dg.job
    def live():
        quick()

    live.execute_in_process(instance=instance, tags=orphans.process_tags())
    (run,) = instance.get_runs()
    assert orphans.dead_reason(run) is None  # finished, and its process (us) is alive
    assert isinstance(orphans.orphans_tick(instance, {"live"}), dg.SkipReason)


def test_a_run_dagster_failed_for_a_dead_worker_is_redone_once_and_others_are_not(instance):
    """The code server that launched a daemon run fails it when its worker dies (before
    our sensor sees it live): that failure is adopted and redone; a gate's failure, or a
    crash that Dagster's own retries re-executed, is not."""
    from dagster._utils import get_run_crash_explanation

    @dg.op
    def slow():
        return 1

    @dg.job(name="work")
    def work():
        slow()

    def failed_like_the_code_server(crashed: bool):
        run = instance.create_run_for_job(work, tags={"mlcicd/trigger": "test"})
        if crashed:
            message = get_run_crash_explanation(
                prefix=f"Run execution process for {run.run_id}", exit_code=-9
            )
            instance.report_engine_event(message, run)
        instance.report_run_failed(run)
        return run

    crashed = failed_like_the_code_server(True)
    plain = failed_like_the_code_server(False)
    retried = failed_like_the_code_server(True)
    instance.create_run_for_job(work, tags={"dagster/parent_run_id": retried.run_id})

    requests = orphans.orphans_tick(instance, {"work"})
    (request,) = requests
    assert request.run_key == f"redo:{crashed.run_id}"
    tags = instance.get_run_by_id(crashed.run_id).tags
    assert "terminated by signal 9 (SIGKILL)" in tags[orphans.ORPHAN_TAG]
    assert tags["dagster/max_retries"] == "0"
    assert instance.get_run_by_id(plain.run_id).tags[orphans.CHECKED_TAG] == "not a crash"
    assert instance.get_run_by_id(retried.run_id).tags[orphans.CHECKED_TAG] == "retried by Dagster"
