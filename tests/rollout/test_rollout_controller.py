"""The rollout controller: begin returns at once, each tick does at most one thing from
the persisted state, on the wall clock stored in it (real MLflow store, real state file)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap

import pytest

from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout import controller as c
from mlcicd_dagster.rollout import registry as reg
from mlcicd_dagster.rollout import state as st
from mlcicd_dagster.rollout import strategies as s
from mlcicd_dagster.rollout.local_target import LocalTarget

MODEL = "rollout_test"
CFG = s.CanaryConfig(steps=(0.1, 0.5), check_interval_s=1, step_min_duration_s=10,
                     step_min_samples=100, max_duration_s=600, serve_timeout_s=5)  # fmt: skip


class NoTraffic:
    def collect(self, state, since):
        return an.Evidence()


class Counted:
    """``n`` canary requests seen so far, no labels (no verdict either way)."""

    def __init__(self) -> None:
        self.n = 0

    def collect(self, state, since):
        m = an.Moments.of([0.2] * self.n) if self.n else an.Moments()
        return an.Evidence(canary={"prediction_shift": m}, stable={"prediction_shift": m})


@pytest.fixture
def target(home, registered):
    uri, _ = registered
    return LocalTarget(home, MODEL, tracking_uri=uri)


@pytest.fixture
def live(target, registered, client, frame, features):
    _, refs = registered
    assert s.blue_green(target, refs["v1"], registry=client).outcome == "promoted"
    return refs


def _at(seconds: float, t0: dt.datetime):
    return lambda: t0 + dt.timedelta(seconds=seconds)


def test_begin_returns_at_the_first_step_and_a_tick_without_traffic_holds(target, live, client):
    t0 = dt.datetime.now(dt.UTC)
    res = c.begin(target, live["v2"], "canary", canary_config=CFG, registry=client,
                  now=lambda: t0)  # fmt: skip
    assert res.outcome == c.IN_PROGRESS
    state = target.read_state()
    assert state.phase == "canary" and state.canary.weight == 0.1
    assert state.rollout["started_at"] == t0.isoformat(timespec="milliseconds")
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    src = Counted()
    src.n = 12
    report = c.tick(target, evidence=src, canary_config=CFG, registry=client, now=_at(30, t0))
    assert report.outcome == "holding"
    assert "waiting for traffic: 12/100 samples at step 10%" in report.message
    assert target.read_state().revision == state.revision  # holding writes no state
    seen = c.read_progress(target.state_path)
    assert seen["message"] == report.message and seen["rollout_id"] == state.rollout["id"]
    # Enough samples and dwell: the next tick moves one step, no more.
    src.n = 150
    report = c.tick(target, evidence=src, canary_config=CFG, registry=client, now=_at(40, t0))
    assert report.outcome == "advanced" and target.read_state().canary.weight == 0.5
    report = c.tick(target, evidence=src, canary_config=CFG, registry=client, now=_at(41, t0))
    assert report.outcome == "holding" and "0/100 samples at step 50%" in report.message


def test_max_duration_counts_on_the_wall_clock_in_the_state(target, live, client):
    t0 = dt.datetime.now(dt.UTC)
    c.begin(target, live["v2"], "canary", canary_config=CFG, registry=client, now=lambda: t0)
    held = c.tick(target, evidence=NoTraffic(), canary_config=CFG, registry=client,
                  now=_at(599, t0))  # fmt: skip
    assert held.outcome == "holding" and "rolls back in 1 s" in held.message
    # Any process, any time later: the elapsed time is read from the state.
    done = c.tick(target, evidence=NoTraffic(), canary_config=CFG, registry=client,
                  now=_at(601, t0))  # fmt: skip
    assert done.outcome == "rolled_back"
    assert [d.check for d in done.decisions][-1] == "max_duration"
    after = target.read_state()
    assert after.canary is None and after.stable.version == live["v1"].version
    assert reg.alias_mismatches(after, client) == []


def test_a_newer_candidate_supersedes_the_one_in_flight(target, live, client):
    c.begin(target, live["v2"], "canary", canary_config=CFG, registry=client)
    again = c.begin(target, live["v2"], "canary", canary_config=CFG, registry=client)
    assert again.outcome == c.IN_PROGRESS  # the same version: nothing new to do
    res = c.begin(target, live["v3"], "canary", canary_config=CFG, registry=client)
    assert res.outcome == c.IN_PROGRESS
    state = target.read_state()
    assert state.canary.version == live["v3"].version
    assert any(h["event"] == f"superseded_by_v{live['v3'].version}" for h in state.history)


def test_a_stager_that_died_is_reverted_by_the_next_tick(target, live, client):
    target.transition("canary_staged", lambda s_: {"canary": live["v2"], "phase": "staged",
                                                   "rollout": {"id": "x"}})  # fmt: skip
    report = c.tick(target, evidence=NoTraffic(), canary_config=CFG, registry=client)
    assert report.outcome == "reverted"
    after = target.read_state()
    assert after.canary is None and after.phase == "rolled_back"
    assert reg.alias_mismatches(after, client) == []


def test_a_corrupt_state_file_is_read_from_its_copy_and_rewritten(target, live, client):
    good = target.read_state()
    target.state_path.write_text("{ not json")
    assert st.state_is_corrupt(target.state_path, MODEL)
    assert target.read_state().stable == good.stable  # readers (the server) fall back
    with pytest.raises(st.DeploymentStateError):
        st.read_state(target.state_path, MODEL, fallback=False)
    report = c.tick(target, evidence=NoTraffic(), canary_config=CFG, registry=client)
    assert report.outcome == "repaired" and "last good copy" in report.message
    assert st.state_is_corrupt(target.state_path, MODEL) is None
    assert json.loads(target.state_path.read_text())["stable"]["version"] == good.stable.version


HOLD = textwrap.dedent(
    """
    import sys, time
    from mlcicd_dagster.platform.lease import Lease
    from mlcicd_dagster.rollout.state import lease_path
    with Lease(lease_path(sys.argv[1]), owner="a deploy step"):
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_tick_while_another_process_writes_reports_busy(target, live, client):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target.state_path)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        report = c.tick(target, evidence=NoTraffic(), canary_config=CFG, registry=client,
                        lease_wait_s=0.5)  # fmt: skip
        assert report.outcome == "busy" and "a deploy step" in report.message
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert c.tick(target, evidence=NoTraffic(), registry=client).outcome == "idle"
