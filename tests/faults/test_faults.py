"""Faults at every phase of the loop, on real processes; the next ticks heal each one.

Scenarios run in order on one home (``conftest.loop``) with live traffic throughout;
each ends with ``assert_healthy``: the state is consistent, registry aliases follow
what serves, no run is left ``STARTED``, and no live request failed. Each scenario
sets up what it needs (a canary in flight, a weak stable so that a canary is decided
within seconds) with the deploy job, as an operator would. How many cycles or ticks
each healing took goes into ``loop.table`` (docs/rollout.md, "Fault table").

Phases and their kill points: ``training`` and ``gates`` (steps of a retrain run),
``staging`` (the deployment step, candidate loaded), ``canary_step``, ``promotion``
and ``rollback`` (controller ticks).
"""

from __future__ import annotations

import signal
import time

import dagster as dg
import pytest

from mlcicd_dagster.pipeline.orphans import ORPHAN_TAG, REDO_OF_TAG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _retrain_runs(loop, **filters):
    return [r for r in loop.runs(**filters) if r.job_name.endswith("_retrain")]


def test_sigterm_stops_a_cycle_then_two_concurrent_cycles_redo_its_run_once(loop):
    loop.land()
    proc = loop.popen("cycle")
    deadline = time.monotonic() + 180
    while not loop.live_runs():  # the landed batch's data gate is running
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
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
    # Two cycles at once: both see the interrupted run's redo request; one runs it. Both
    # die if they reach a training (the next scenario's fault): one at most runs each key.
    a, b = (loop.popen("cycle", "--json", fault="training") for _ in range(2))
    outs = [p.communicate(timeout=600) for p in (a, b)]
    codes = sorted([a.returncode, b.returncode])
    assert set(codes) <= {0, -signal.SIGKILL} and -signal.SIGKILL in codes, (codes, outs)
    redos = [r for r in loop.runs() if r.tags.get(REDO_OF_TAG) == rid]
    assert len(redos) == 1 and redos[0].status == dg.DagsterRunStatus.SUCCESS, redos
    keys = [r.tags.get("dagster/run_key") for r in loop.runs() if r.tags.get("dagster/run_key")]
    assert len(keys) == len(set(keys)), keys  # no request ran twice
    loop.table["SIGTERM during a run"] = "exit 143; run tagged, redone by the next cycle: 1 cycle"
    loop.table["two concurrent cycles"] = "run-key lease: the redo ran once: 1 cycle"
    assert loop.traffic.stats.failed == 0, loop.traffic.stats


def test_kill_in_training_then_gates_then_staging_each_reaped_and_redone(loop):
    before = loop.state()
    if not _retrain_runs(loop, statuses=[dg.DagsterRunStatus.STARTED]):
        loop.land()  # (run alone) a training to kill
        loop.cycle_killed_at("training")
    (orphan,) = _retrain_runs(loop, statuses=[dg.DagsterRunStatus.STARTED])
    assert orphan.tags.get("mlcicd/pid")  # a dead process's run, left STARTED
    loop.cycle_killed_at("gates")  # the redo of that run dies in its gates
    loop.cycle_killed_at("staging")  # and the redo of that one while staging its candidate
    staged = loop.state()
    assert staged.phase == "staged" and staged.canary is not None, staged.to_dict()
    assert staged.canary.weight == 0.0  # loaded, no traffic yet
    cycles = loop.heal_by_cycles(lambda: not loop.live_runs() and loop.state().phase == "canary")
    reaped = [r for r in _retrain_runs(loop, statuses=[dg.DagsterRunStatus.FAILURE])
              if "died" in r.tags.get(ORPHAN_TAG, "")]  # fmt: skip
    assert len(reaped) >= 3, [r.tags for r in reaped]
    redone = [r for r in _retrain_runs(loop, statuses=[dg.DagsterRunStatus.SUCCESS])
              if REDO_OF_TAG in r.tags]  # fmt: skip
    assert redone, "the orphaned work was not redone"
    assert loop.state().stable.version == before.stable.version
    loop.table["kill -9 in training"] = "orphaned-runs sensor failed the run and redid it: 1 cycle"
    loop.table["kill -9 in the gates"] = "orphaned-runs sensor failed the run and redid it: 1 cycle"
    loop.table["kill -9 while staging"] = (
        f"the redo reverted the half-staged candidate and staged it again: {cycles} cycle(s)"
    )
    assert cycles == 1
    loop.assert_healthy()


def test_kill_at_rollback_heals_on_the_next_tick(loop):
    """A hand-registered model trained on shuffled labels is canaried and rolled back."""
    stable = loop.state().stable.version
    bad = loop.agent.ask("hotfix")["version"]
    loop.deploy(bad)  # supersedes any canary in flight
    assert loop.state().canary.version == bad
    loop.faulty_agent("rollback").die_at_kill_point(within_s=120)
    dropped = loop.state()
    assert dropped.phase == "rolled_back" and dropped.stable.version == stable
    assert loop.alias_mismatches(), "the kill fell between the state write and the aliases"
    ticks = loop.heal_by_ticks(lambda: not loop.alias_mismatches())
    loop.table["kill -9 at rollback"] = f"registry aliases re-synced: {ticks} tick(s)"
    assert ticks == 1
    loop.assert_healthy()


def test_kill_at_a_canary_step_then_at_promotion_each_heal_on_the_next_tick(loop):
    """A good model canaried against a weak stable (the shuffled-label model, switched in
    blue-green by a careless operator) moves up and is promoted within seconds of traffic."""
    bad = loop.bad_version()
    good = loop.state().stable.version
    loop.deploy(bad, "blue_green")
    assert loop.state().stable.version == bad
    loop.deploy(good)
    before = loop.state()
    assert before.phase == "canary" and before.canary.version == good
    loop.faulty_agent("canary_step").die_at_kill_point(within_s=120)
    after = loop.state()
    assert after.phase == "canary" and after.revision == before.revision  # old step, whole
    assert after.canary.weight == before.canary.weight
    status = loop.status_json()["deployment"]["rollout"]
    assert status["candidate"] == good and status["step"] == before.canary.weight, status
    ticks = loop.heal_by_ticks(lambda: loop.state().revision > before.revision)
    stepped = loop.state()
    assert stepped.phase == "canary", loop.why(good)
    assert stepped.canary.weight > before.canary.weight
    loop.table["kill -9 at a canary step"] = (
        f"state whole at the old step; the next tick advanced: {ticks} tick(s)"
    )
    assert ticks == 1
    loop.assert_healthy()
    loop.faulty_agent("promotion").die_at_kill_point(within_s=180)
    promoted = loop.state()
    assert promoted.phase == "promoted" and promoted.stable.version == good, loop.why(good)
    assert promoted.previous.version == bad  # kept warm
    assert loop.alias_mismatches(), "the kill fell between the state write and the aliases"
    ticks = loop.heal_by_ticks(lambda: not loop.alias_mismatches())
    loop.table["kill -9 at promotion"] = f"registry aliases re-synced: {ticks} tick(s)"
    assert ticks == 1
    loop.assert_healthy()


def test_a_torn_state_file_and_a_spare_that_cannot_load_leave_the_stable_model_serving(loop):
    """The state file torn mid-write and one missing file of the warm spare (``previous``):
    ``status`` and a restarted server use the last good copy and serve the stable model
    (degraded); the next tick rewrites the state file."""
    import json

    import httpx

    from mlcicd_dagster.models.registry import client
    from mlcicd_dagster.rollout.state import state_is_corrupt
    from mlcicd_dagster.serving import start_subprocess

    state = loop.state()
    assert state.previous is not None, state.to_dict()
    mv = client(loop.home.tracking_uri).get_model_version("credit_default", state.previous.version)
    model_id = mv.source.rstrip("/").rsplit("/", 1)[-1]
    folder = next(p for p in loop.home.mlflow_artifacts.rglob(model_id) if p.is_dir())
    files = [f for f in folder.rglob("model*") if f.is_file()]
    assert files, list(folder.rglob("*"))
    path = loop.home.deployment_state("credit_default")
    path.write_text('{"model_name": "credit_default", "revision": ')  # torn
    status = loop.status_json()
    assert status["deployment"]["stable"]["version"] == state.stable.version
    assert "last good copy" in status["backends"]["deployment_state"]
    for f in files:
        f.rename(f.with_name(f.name + ".gone"))
    server_file = loop.home.server_file.read_bytes()
    # A second server on its own port, started now, as after a restart.
    proc, url = start_subprocess(loop.home, "credit_default", port=0, env=loop.env)
    try:
        r = loop.wait_ready(url)
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
        loop.home.server_file.write_bytes(server_file)  # the live server's address again
        for f in files:
            f.with_name(f.name + ".gone").rename(f)
    ticks = loop.heal_by_ticks(lambda: state_is_corrupt(path, "credit_default") is None)
    loop.table["torn state file"] = f"last good copy; rewritten by the next tick: {ticks} tick(s)"
    loop.table["missing model file of the spare"] = "restarted server serves stable, degraded"
    assert ticks == 1
    assert loop.state().stable.version == state.stable.version
    loop.assert_healthy()


def test_status_names_an_unreachable_mlflow_within_seconds(loop):
    import json

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
    loop.table["unreachable MLflow"] = f"`status` answered in {took:.1f} s, naming mlflow"
