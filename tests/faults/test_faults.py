"""Faults at every phase of the loop, on real processes; the next ticks heal each one.

Scenarios run in order on one home (``conftest.loop``) with live traffic throughout;
each ends with ``assert_healthy``: the state is consistent, registry aliases follow
what serves, no run is left ``STARTED``, and no live request failed. How many cycles
(ticks) each healing took is recorded in docs/rollout.md ("Fault table").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from mlcicd_dagster.pipeline.orphans import ORPHAN_TAG, REDO_OF_TAG

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def _in_flight(lp) -> bool:
    return lp.state().phase in ("staged", "canary", "shadow")


@pytest.mark.timeout(1200)
def test_kill_during_training_then_during_gates_is_reaped_and_redone(loop):
    loop.land()
    assert loop.cycle_until("training", timeout_s=120) == 1
    (orphan,) = loop.runs(statuses=[dg.DagsterRunStatus.STARTED])
    assert orphan.tags.get("mlcicd/pid")
    # The redo of that run dies too, in its gates this time.
    assert loop.cycle_until("gates", timeout_s=120) == 1
    ticks = loop.heal(lambda: not loop.runs(statuses=[dg.DagsterRunStatus.STARTED])
                      and _in_flight(loop) or loop.state().stable.version != "1")  # fmt: skip
    loop.ticks["training/gates"] = ticks
    failed = loop.runs(statuses=[dg.DagsterRunStatus.FAILURE])
    reaped = [r for r in failed if ORPHAN_TAG in r.tags]
    assert len(reaped) == 2 and all("died" in r.tags[ORPHAN_TAG] for r in reaped)
    redone = [r for r in loop.runs(statuses=[dg.DagsterRunStatus.SUCCESS]) if REDO_OF_TAG in r.tags]
    assert redone, "the orphaned work was not redone"
    loop.assert_healthy()


@pytest.mark.timeout(900)
def test_kill_at_a_canary_step_then_at_promotion_heals(loop):
    if not _in_flight(loop):
        pytest.skip("no canary in flight (the candidate was decided already)")
    before = loop.state()
    if loop.cycle_until("canary_step", unless=lambda: not _in_flight(loop)) == 0:
        loop.assert_healthy()
        pytest.skip(f"the canary was decided before its next step: {loop.state().history[-1]}")
    after = loop.state()
    assert after.phase == "canary" and after.revision == before.revision  # old step, whole
    status = loop.status_json()["deployment"]["rollout"]
    assert status and status["waiting_for"]
    loop.ticks["canary step"] = loop.heal(lambda: loop.state().revision > before.revision)
    assert loop.state().phase in ("canary", "promoted", "rolled_back")
    if loop.cycle_until("promotion", timeout_s=300, unless=lambda: not _in_flight(loop)) == 0:
        ended = loop.state()
        loop.assert_healthy()
        pytest.skip(f"the canary was decided without a promotion: {ended.history[-1]}")
    promoted = loop.state()
    assert promoted.phase == "promoted" and promoted.stable.version != before.stable.version
    assert promoted.previous.version == before.stable.version  # kept warm
    assert loop.alias_mismatches(), "the kill fell between the state write and the aliases"
    loop.ticks["promotion"] = loop.heal(lambda: not loop.alias_mismatches())
    loop.assert_healthy()


HOTFIX = """
import sys
import pandas as pd
import definitions
from mlcicd_dagster.cli import dagster_instance
from mlcicd_dagster.pipeline.deploy_ops import run_deploy_job
from mlcicd_dagster.pipeline.hotfix import register_unvetted_model
from mlcicd_dagster.platform.home import Home

p = definitions.location.pipeline("credit_default")
rows = pd.read_csv(sys.argv[1]).head(2000)
version = register_unvetted_model(p.spec, Home.from_env(), rows, p.spec.label)
print(version, run_deploy_job(p, definitions.defs, dagster_instance(), version)["status"])
"""


@pytest.mark.timeout(900)
def test_kill_during_rollback_heals(loop):
    """A hand-registered model trained on shuffled labels is canaried and rolled back."""
    from tests_support import DATA

    stable = loop.state().stable.version
    out = subprocess.run(
        [sys.executable, "-c", HOTFIX, str(DATA / "pool.csv.gz")],
        cwd=loop.project, env={**os.environ, **loop.env}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.split()[-1] == "success", out.stdout + out.stderr
    version = out.stdout.split()[-2]
    assert loop.state().canary.version == version
    loop.cycle_until("rollback", timeout_s=240)
    dropped = loop.state()
    assert dropped.phase == "rolled_back" and dropped.stable.version == stable
    loop.ticks["rollback"] = loop.heal(lambda: not loop.alias_mismatches())
    loop.assert_healthy()


@pytest.mark.timeout(1200)
def test_sigterm_stops_a_cycle_then_two_concurrent_cycles_redo_its_run_once(loop):
    loop.land()
    proc = loop.popen("cycle")
    deadline = time.monotonic() + 300
    while not loop.runs(statuses=[dg.DagsterRunStatus.STARTED]):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    stopped_in = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "stopped by SIGTERM" in err
    assert stopped_in < 30, stopped_in
    interrupted = [r for r in loop.runs(statuses=[dg.DagsterRunStatus.FAILURE])
                   if "SIGTERM" in r.tags.get(ORPHAN_TAG, "")]  # fmt: skip
    assert len(interrupted) == 1, [r.tags for r in loop.runs()]
    rid = interrupted[0].run_id
    # Two cycles at once: both see the interrupted run's redo request; one runs it.
    a, b = loop.popen("cycle", "--json"), loop.popen("cycle", "--json")
    outs = [p.communicate(timeout=900) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    redos = [r for r in loop.runs() if r.tags.get(REDO_OF_TAG) == rid]
    assert len(redos) == 1, [(r.run_id, r.status) for r in redos]
    keys = [r.tags.get("dagster/run_key") for r in loop.runs() if r.tags.get("dagster/run_key")]
    assert len(keys) == len(set(keys)), keys  # no request ran twice
    loop.ticks["SIGTERM"] = 1
    loop.ticks["two concurrent cycles"] = 1
    loop.heal(lambda: not _in_flight(loop), max_cycles=120)
    loop.assert_healthy()


def test_corrupt_state_file_falls_back_and_the_next_tick_repairs_it(loop):
    from mlcicd_dagster.rollout.state import state_is_corrupt
    from mlcicd_dagster.serving import start_subprocess

    path = loop.home.deployment_state("credit_default")
    stable = loop.state().stable.version
    path.write_text('{"model_name": "credit_default", "revision": ')  # torn
    status = loop.status_json()
    assert status["deployment"]["stable"]["version"] == stable
    assert "last good copy" in status["backends"]["deployment_state"]
    # A server restarted now still serves the stable model (a second one, on its own port).
    server_file = loop.home.server_file.read_bytes()
    proc, url = start_subprocess(loop.home, "credit_default", port=0, env=loop.env)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while (r := httpx.get(f"{url}/ready", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json()["versions"]["stable"] == stable
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        loop.home.server_file.write_bytes(server_file)  # the live server's address again
    loop.ticks["corrupt state"] = loop.heal(
        lambda: state_is_corrupt(path, "credit_default") is None
    )
    assert loop.state().stable.version == stable
    loop.assert_healthy()


def test_status_names_an_unreachable_mlflow_within_seconds(loop):
    loop.env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"
    try:
        t0 = time.monotonic()
        out = loop.mlcicd("status", "--json", "--pipeline", "credit_default", timeout=60)
        took = time.monotonic() - t0
    finally:
        loop.env.pop("MLFLOW_TRACKING_URI")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert "mlflow" in status["backends"] and status["backends"]["mlflow"] != "ok"
    assert took < 30, took


def test_a_spare_that_cannot_load_leaves_the_stable_model_serving(loop):
    """One missing file of the warm spare (``previous``): a restarted server still serves."""
    import httpx

    from mlcicd_dagster.models.registry import client
    from mlcicd_dagster.serving import start_subprocess

    state = loop.state()
    if state.previous is None:
        pytest.skip("no previous version kept warm in this run")
    mv = client(loop.home.tracking_uri).get_model_version("credit_default", state.previous.version)
    model_id = mv.source.rstrip("/").rsplit("/", 1)[-1]
    folder = next(p for p in loop.home.mlflow_artifacts.rglob(model_id) if p.is_dir())
    files = [f for f in folder.rglob("model*") if f.is_file()]
    assert files, list(folder.rglob("*"))
    for f in files:
        f.rename(f.with_name(f.name + ".gone"))
    server_file = loop.home.server_file.read_bytes()
    proc, url = start_subprocess(loop.home, "credit_default", port=0, env=loop.env)
    try:
        deadline = time.monotonic() + 120
        while (r := httpx.get(f"{url}/ready", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json()["versions"]["stable"] == state.stable.version
        assert "previous" not in r.json()["versions"]
        doc = httpx.get(f"{url}/deployment", timeout=5).json()
        assert "previous" in doc["degraded"], doc
        body = {"dataframe_split": json.loads(
            loop.pool.drop(columns=["default.payment.next.month"]).head(3)
            .to_json(orient="split", index=False))}  # fmt: skip
        scored = httpx.post(f"{url}/invocations", json=body, timeout=10)
        assert scored.status_code == 200 and scored.headers["X-Model-Version"] == (
            state.stable.version
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        loop.home.server_file.write_bytes(server_file)
        for f in files:
            f.with_name(f.name + ".gone").rename(f)
    loop.assert_healthy()
