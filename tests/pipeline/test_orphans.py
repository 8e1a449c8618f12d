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
