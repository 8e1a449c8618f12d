"""The loop under a real ``dagster-daemon`` (not ``mlcicd cycle``), on the suite's home.

A batch lands; the daemon's landing sensor launches its data gate, whose run worker is
killed with SIGKILL. The orphaned-runs sensor (under the daemon) fails that run (or
adopts the failure the code server that launched the worker reported) and redoes it,
the training sensor trains on the batch, and the rollout controller sensor's ticks (the
daemon's, every poll interval) move the canary up a step and promote it.
Nothing else ticks meanwhile: no cycle runs and the suite's agent is idle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlcicd_dagster.pipeline.orphans import ORPHAN_TAG, PID_TAG, REDO_OF_TAG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_daemon_redoes_a_killed_run_and_its_controller_ticks_promote_the_canary(loop):
    loop.ticks_until(lambda: not loop.in_flight())  # (a rollout an earlier test left)
    bad = loop.bad_version()
    if loop.state().stable.version != bad:  # a weak stable: the canary is decided in seconds
        loop.deploy(bad, "blue_green")
    before = loop.state()  # (promoted by that deploy, or left so by an earlier scenario)
    assert before.stable.version == bad and not loop.in_flight(), before.to_dict()
    started_at = before.updated_at
    loop.land()
    env = {**loop._env(None), "DAGSTER_HOME": str(loop.home.dagster_home)}
    log = loop.home.root / "daemon.log"
    exe = Path(sys.executable).with_name("dagster-daemon")
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            [str(exe), "run", "-m", "definitions", "-d", str(loop.project)],
            cwd=loop.project, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        victim = _wait_for_gate_worker(loop, daemon, log)
        os.kill(int(victim.tags[PID_TAG]), signal.SIGKILL)
        deadline = time.monotonic() + 420

        def promoted() -> bool:
            s = loop.state()
            return s.phase == "promoted" and s.stable.version not in (bad, before.stable.version)

        while not (promoted() and not loop.live_runs() and not loop.alias_mismatches()):
            assert daemon.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                loop.state().to_dict(),
                loop.progress(),
                loop.why(),
            )
            time.sleep(1.0)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
        deadline = time.monotonic() + 120  # runs it launched last finish on their own
        while loop.live_runs() and time.monotonic() < deadline:
            time.sleep(1.0)
    reaped = loop.instance().get_run_by_id(victim.run_id)
    assert reaped.status == dg.DagsterRunStatus.FAILURE
    # Failed by the orphaned-runs sensor (its pid is gone), or first by the code server
    # that launched the worker (it saw its child die), then adopted by the sensor.
    why = reaped.tags[ORPHAN_TAG]
    assert "died" in why or "terminated by signal 9 (SIGKILL)" in why, why
    healer = "reaped" if "died" in why else "the code server failed it; adopted"
    (redo,) = [r for r in loop.runs() if r.tags.get(REDO_OF_TAG) == victim.run_id]
    assert redo.status == dg.DagsterRunStatus.SUCCESS
    assert redo.tags.get("dagster/sensor_name", "").endswith("_orphaned_runs")
    assert redo.tags.get("mlcicd/via") != "cycle"  # launched by the daemon
    retried = [r for r in loop.runs() if r.tags.get("dagster/parent_run_id") == victim.run_id]
    assert retried == [], "Dagster's run retries re-executed the run beside the redo"
    # The daemon's controller ticks staged nothing but moved the canary on and promoted it.
    events = [h["event"] for h in loop.state().history if h["at"] > started_at]
    assert "canary_staged" in events and "canary_promoted" in events, events
    steps = [e for e in events if e.startswith("canary_step_")]
    assert len(steps) >= 2, events  # its first step (the deploy step) and a tick's advance
    assert "rollout_controller" in log.read_text()
    loop.table["kill -9 of a run worker the daemon launched"] = (
        f"orphaned-runs sensor under the daemon redid it ({healer}); the daemon's controller "
        "ticks advanced and promoted the canary"
    )
    loop.assert_healthy()


def _wait_for_gate_worker(loop, daemon: subprocess.Popen, log: Path, timeout_s: float = 180):
    """The landed batch's data-gate run, launched by the daemon, once its worker is known
    (the worker tags the run with its pid as it starts executing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert daemon.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        for run in loop.live_runs():  # (its training, if the gate finished unseen)
            if run.job_name.endswith(("_ingest", "_retrain")) and run.tags.get(PID_TAG):
                assert run.tags.get("mlcicd/via") != "cycle"
                return run
        time.sleep(0.1)
