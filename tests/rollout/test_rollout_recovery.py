"""A deploy op that dies mid-rollout leaves the state old or new, never half, and the next
run resumes or reverts it (injected exceptions, a SIGKILLed process, failing writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mlcicd_dagster.rollout import controller as c
from mlcicd_dagster.rollout import registry as reg
from mlcicd_dagster.rollout import state as st
from mlcicd_dagster.rollout import strategies as s
from mlcicd_dagster.rollout.local_target import LocalTarget

MODEL = "rollout_test"  # as registered by conftest
FAST = s.CanaryConfig(
    steps=(0.05, 0.25, 0.5), check_interval_s=10, step_min_duration_s=20,
    step_min_samples=100, serve_timeout_s=5,
)  # fmt: skip


@pytest.fixture
def target(home, registered):
    uri, _ = registered
    return LocalTarget(home, MODEL, tracking_uri=uri)


@pytest.fixture
def live(target, registered, client, frame, features):
    """v1 serving as champion."""
    _, refs = registered
    res = s.blue_green(target, refs["v1"], smoke_rows=frame[features].head(5), registry=client)
    assert res.outcome == "promoted"
    return refs


def test_exception_mid_canary_then_revert(target, live, client, clock, traffic):
    src = traffic(loss_shift=-0.05, fail_on_call=6)
    with pytest.raises(RuntimeError, match="injected"):
        c.canary(target, live["v2"], evidence=src, config=FAST, registry=client,
                 clock=clock, sleep=clock.sleep)  # fmt: skip
    died = target.read_state()
    assert died.phase == "canary" and died.canary.version == live["v2"].version
    assert died.rollout["step"] in FAST.steps and died.rollout["evidence_since"]
    # The registry followed what served: the canary is the challenger.
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == live["v2"].version

    res = s.resume_or_revert(target, registry=client)
    assert res.outcome == "reverted"
    after = target.read_state()
    assert after.stable.version == live["v1"].version and after.canary is None
    assert after.phase == "rolled_back" and after.rollout is None
    assert reg.alias_mismatches(after, client) == []
    assert res.decisions[-1].check == "resume" and res.decisions[-1].verdict == "rollback"
    # Idempotent: a second call finds nothing in flight.
    assert s.resume_or_revert(target, registry=client).outcome == "unchanged"


def test_interrupted_canary_resumes_from_its_step(target, live, client, clock, traffic):
    src = traffic(loss_shift=-0.05, fail_on_call=9)
    with pytest.raises(RuntimeError):
        c.canary(target, live["v2"], evidence=src, config=FAST, registry=client,
                 clock=clock, sleep=clock.sleep)  # fmt: skip
    step = target.read_state().rollout["step"]
    assert step > FAST.steps[0]
    assert s.resume_or_revert(target, registry=client, resume=True).outcome == "resume"
    src.fail_on_call = None
    src.weights_seen.clear()
    res = c.canary(target, live["v2"], evidence=src, config=FAST, registry=client,
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.outcome == "promoted"
    assert res.decisions[0].check == "resume"
    assert min(src.weights_seen) == step  # did not start over at 5%
    assert target.read_state().stable.version == live["v2"].version
    assert reg.alias_mismatches(target.read_state(), client) == []


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.rollout import analysis as an, controller as c, strategies as s
    from mlcicd_dagster.rollout.local_target import LocalTarget
    from mlcicd_dagster.rollout.state import ModelRef
    from mlflow import MlflowClient

    from pathlib import Path
    home, uri, version = Home(Path(sys.argv[1])), sys.argv[2], sys.argv[3]
    calls = {"n": 0}

    class Src:
        def collect(self, state, since):
            calls["n"] += 1
            if calls["n"] == 4:
                os.kill(os.getpid(), signal.SIGKILL)  # the op dies, no cleanup runs
            n = 200 * calls["n"]
            return an.Evidence(canary={"log_loss": an.Moments(n, 0.45, 0.16)},
                               stable={"log_loss": an.Moments(n, 0.45, 0.16)})

    t = [0.0]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.canary(LocalTarget(home, "rollout_test", tracking_uri=uri),
             ModelRef(version, f"models:/rollout_test/{version}"), evidence=Src(),
             config=s.CanaryConfig(steps=(0.05, 0.25, 0.5), check_interval_s=10,
                                   step_min_duration_s=10, step_min_samples=10),
             registry=client, clock=lambda: t[0], sleep=lambda x: t.__setitem__(0, t[0] + x))
    """
)


def test_sigkill_mid_rollout_leaves_whole_state_and_next_run_reverts(
    target, live, client, home, registered
):
    uri, _ = registered
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(home.root), uri, live["v2"].version],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    raw = json.loads(target.state_path.read_text())  # whole JSON, not half a file
    died = st.DeploymentState.from_dict(raw)
    assert died.phase == "canary" and died.canary.version == live["v2"].version
    assert not list(target.state_path.parent.glob(".*.tmp"))  # no stray temp files
    res = s.resume_or_revert(target, registry=client)
    assert res.outcome == "reverted"
    after = target.read_state()
    assert after.stable.version == live["v1"].version and after.canary is None
    assert reg.alias_mismatches(after, client) == []


def test_failed_write_keeps_previous_state(target, live, monkeypatch):
    before = target.state_path.read_bytes()

    def broken_replace(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        target.transition("canary_step_0.05", lambda s_: {"canary": live["v2"], "phase": "canary"})
    monkeypatch.undo()
    assert target.state_path.read_bytes() == before
    with pytest.raises(ZeroDivisionError):
        target.transition("bad", lambda s_: {"phase": str(1 / 0)})
    assert target.state_path.read_bytes() == before


def test_aliases_drift_is_flagged_and_repaired(target, live, client):
    state = target.read_state()
    assert reg.alias_mismatches(state, client) == []
    # Someone moves the alias by hand (or a run died between state write and alias move).
    client.set_registered_model_alias(MODEL, "champion", live["v3"].version)
    client.set_registered_model_alias(MODEL, "challenger", live["v2"].version)
    problems = reg.alias_mismatches(state, client)
    assert len(problems) == 2 and any("champion" in p and live["v3"].version in p for p in problems)
    res = s.resume_or_revert(target, registry=client)
    assert res.outcome == "unchanged" and len(res.alias_changes) == 2
    assert reg.alias_mismatches(state, client) == []
