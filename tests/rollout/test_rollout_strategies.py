"""Strategies against the real local target (state file + in-process smoke through
load_predictor on a real MLflow store), with simulated traffic and a fake clock."""

from __future__ import annotations

import json

import pytest

from mlcicd_dagster.rollout import controller as c
from mlcicd_dagster.rollout import registry as reg
from mlcicd_dagster.rollout import strategies as s
from mlcicd_dagster.rollout.analysis import AnalysisConfig, MetricSpec
from mlcicd_dagster.rollout.local_target import LocalTarget
from mlcicd_dagster.rollout.state import ModelRef

MODEL = "rollout_test"  # as registered by conftest

FAST = s.CanaryConfig(
    steps=(0.05, 0.25, 0.5),
    check_interval_s=10,
    step_min_duration_s=20,
    step_min_samples=100,
    max_duration_s=3600,
    serve_timeout_s=5,
)


@pytest.fixture
def target(home, registered):
    uri, _ = registered
    return LocalTarget(home, MODEL, tracking_uri=uri)


@pytest.fixture
def rows(frame, features):
    return frame[features].iloc[:20]


def _first(target, ref, client, rows):
    res = s.blue_green(target, ref, smoke_rows=rows, registry=client, serve_timeout_s=5)
    assert res.outcome == "promoted"
    return res


def _champion(client) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def _tags(client, version):
    return client.get_model_version(MODEL, version).tags


def test_blue_green_switch_keeps_blue_warm_and_rolls_back_instantly(
    target, registered, client, rows
):
    _, refs = registered
    _first(target, refs["v1"], client, rows)
    res = s.blue_green(target, refs["v2"], smoke_rows=rows, registry=client, serve_timeout_s=5)
    assert res.outcome == "promoted"
    st = target.read_state()
    assert (st.stable.version, st.previous.version, st.canary) == (
        refs["v2"].version, refs["v1"].version, None,
    )  # fmt: skip
    assert st.phase == "promoted" and st.rollout is None
    assert [d.check for d in res.decisions] == ["infra", "smoke", "switch"]
    assert all(d.passed for d in res.decisions)
    assert reg.alias_mismatches(st, client) == []
    assert _champion(client) == refs["v2"].version
    tags = _tags(client, refs["v2"].version)
    smoke_key = next(k for k in tags if k.startswith(f"mlcicd.rollout.{res.rollout_id}.") and
                     k.endswith(".smoke"))  # fmt: skip
    assert json.loads(tags[smoke_key])["verdict"] == "pass"
    assert tags["mlcicd.rollout.outcome"].startswith("promoted")

    back = s.rollback(target, reason="pager says so", registry=client)
    assert back.outcome == "rolled_back"
    st = target.read_state()
    assert st.stable.version == refs["v1"].version and st.previous is None
    assert _champion(client) == refs["v1"].version
    assert reg.alias_mismatches(st, client) == []
    # Nothing left to roll back to: says so instead of guessing.
    assert s.rollback(target, registry=client).outcome == "unchanged"


def test_blue_green_smoke_failure_keeps_blue(target, registered, client, rows):
    _, refs = registered
    _first(target, refs["v1"], client, rows)
    broken = ModelRef(version="999", model_uri=f"models:/{MODEL}/999")
    res = s.blue_green(target, broken, smoke_rows=rows, registry=client, serve_timeout_s=5)
    assert res.outcome == "rolled_back"
    smoke = next(d for d in res.decisions if d.check == "smoke")
    assert not smoke.passed and "999" in smoke.reason
    st = target.read_state()
    assert st.stable.version == refs["v1"].version and st.canary is None
    assert st.phase == "rolled_back"
    assert reg.alias_mismatches(st, client) == []


def test_canary_promotes_on_good_evidence(target, registered, client, rows, clock, traffic):
    _, refs = registered
    _first(target, refs["v1"], client, rows)
    src = traffic(loss_shift=-0.05)
    res = c.canary(target, refs["v2"], evidence=src, config=FAST, smoke_rows=rows,
                   registry=client, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.outcome == "promoted", [d.reason for d in res.decisions]
    st = target.read_state()
    assert st.stable.version == refs["v2"].version and st.previous.version == refs["v1"].version
    assert st.canary is None and st.phase == "promoted"
    # It walked up every step before promoting.
    assert sorted(set(src.weights_seen)) == [0.05, 0.25, 0.5]
    steps = [h["event"] for h in st.history if h["event"].startswith("canary_step")]
    assert steps == ["canary_step_0.05", "canary_step_0.25", "canary_step_0.5"]
    final = [d for d in res.decisions if d.check == "canary_analysis"][-1]
    assert final.verdict == "promote" and final.statistic <= final.threshold
    assert final.details["metrics"][0]["metric"] == "log_loss"
    assert reg.alias_mismatches(st, client) == []
    with pytest.raises(Exception):  # noqa: B017 - challenger alias is gone
        client.get_model_version_by_alias(MODEL, "challenger")
    tags = _tags(client, refs["v2"].version)
    assert any(k.endswith(".canary_analysis") for k in tags)


def test_canary_rolls_back_on_bad_evidence(target, registered, client, rows, clock, traffic):
    _, refs = registered
    _first(target, refs["v1"], client, rows)
    src = traffic(loss_shift=+0.15)
    res = c.canary(target, refs["v2"], evidence=src, config=FAST, smoke_rows=rows,
                   registry=client, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.outcome == "rolled_back"
    bad = res.decisions[-1]
    assert bad.check == "canary_analysis" and bad.verdict == "rollback" and not bad.passed
    assert bad.statistic >= bad.threshold
    st = target.read_state()
    assert st.stable.version == refs["v1"].version and st.canary is None
    assert _champion(client) == refs["v1"].version
    assert reg.alias_mismatches(st, client) == []
    assert _tags(client, refs["v2"].version)["mlcicd.rollout.outcome"].startswith("rolled_back")


def test_canary_rolls_back_at_max_duration_without_evidence(
    target, registered, client, rows, clock, traffic
):
    _, refs = registered
    _first(target, refs["v1"], client, rows)
    cfg = s.CanaryConfig(steps=(0.1, 0.5), check_interval_s=60, step_min_duration_s=60,
                         step_min_samples=50, max_duration_s=1800, serve_timeout_s=5)  # fmt: skip
    src = traffic(label_fraction=0.0)  # feedback never arrives: no evidence of quality
    res = c.canary(target, refs["v2"], evidence=src, config=cfg, registry=client,
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.outcome == "rolled_back"
    last = res.decisions[-1]
    assert last.check == "max_duration" and last.threshold == 1800 and last.statistic >= 1800
    assert clock.t == pytest.approx(1800)
    assert target.read_state().stable.version == refs["v1"].version


def test_canary_min_sample_guard_blocks_promotion_on_thin_traffic(
    target, registered, rows, clock, traffic
):
    _, refs = registered
    s.blue_green(target, refs["v1"], smoke_rows=rows, serve_timeout_s=5)
    cfg = s.CanaryConfig(
        steps=(0.5,), check_interval_s=60, step_min_duration_s=0, max_duration_s=3000,
        analysis=AnalysisConfig(metrics=(MetricSpec("log_loss", margin=0.05, min_n=500),)),
    )  # fmt: skip
    # A far better canary, but ~4 requests a minute per arm: 50 looks give ~200 < 500.
    src = traffic(per_interval=8, loss_shift=-0.3)
    res = c.canary(target, refs["v2"], evidence=src, config=cfg, clock=clock, sleep=clock.sleep)
    assert res.outcome == "rolled_back"
    guarded = [d for d in res.decisions if d.check == "canary_analysis"]
    assert any("min-sample guard" in m["reason"] for m in guarded[-1].details["metrics"])


def test_shadow_promotes_on_paired_evidence(target, registered, client, rows, clock):
    from mlcicd_dagster.rollout.analysis import Evidence, Moments

    _, refs = registered
    _first(target, refs["v1"], client, rows)
    n = {"k": 0}

    class Paired:
        def collect(self, state, since):
            assert state.shadow is not None and state.phase == "shadow"
            n["k"] += 300
            return Evidence(paired={"log_loss": Moments(n["k"], -0.03, 0.02)})

    only_loss = AnalysisConfig(metrics=(MetricSpec("log_loss", 0.05),))
    cfg = s.ShadowConfig(fraction=0.5, check_interval_s=30, serve_timeout_s=5, analysis=only_loss)
    res = c.shadow(target, refs["v3"], evidence=Paired(), config=cfg, smoke_rows=rows,
                   registry=client, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.outcome == "promoted"
    st = target.read_state()
    assert st.stable.version == refs["v3"].version and st.shadow is None
    assert reg.alias_mismatches(st, client) == []


def test_a_rollout_refuses_to_start_over_one_in_flight(target, registered, rows, clock, traffic):
    _, refs = registered
    s.blue_green(target, refs["v1"], smoke_rows=rows, serve_timeout_s=5)
    src = traffic(fail_on_call=2)
    with pytest.raises(RuntimeError, match="injected"):
        c.canary(target, refs["v2"], evidence=src, config=FAST, clock=clock, sleep=clock.sleep)
    with pytest.raises(s.RolloutError, match="resume_or_revert"):
        s.blue_green(target, refs["v3"], smoke_rows=rows, serve_timeout_s=5)
