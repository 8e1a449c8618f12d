"""The retraining policy: causes, de-duplication, cool-down, budget, persistence, alerts."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlcicd_dagster.monitoring import (
    DriftSummary,
    MonitoringResult,
    PolicyState,
    RetrainPolicy,
    VersionMetrics,
    evaluate,
    load_state,
    run_policy,
)
from mlcicd_dagster.monitoring.metrics import MetricEstimate
from mlcicd_dagster.monitoring.policy import policy_state_path

from .conftest import T0

H = dt.timedelta(hours=1)
FEATURES = ("a", "b", "c")


def _result(
    i, *, drifted=(), auc=0.80, baseline_auc=0.80, n_labeled=1000, version="1", judged=True
):
    start = T0 + i * H
    rows = tuple(
        {"feature": f, "drifted": f in drifted, "p_adjusted": 0.001 if f in drifted else 0.5}
        for f in FEATURES
    )
    fd = DriftSummary(5000, 2000, 0.05, "test", rows, tuple(drifted), judged=judged)
    se = 0.01
    metrics = {
        "auc": MetricEstimate("auc", auc, auc - 0.02, auc + 0.02, se, n_labeled, 0.95, "delong")
    }
    vm = VersionMetrics(
        version=version,
        tracks=("stable",),
        n_predictions=2000,
        n_labeled=n_labeled,
        n_invalid_labels=0,
        label_coverage=n_labeled / 2000,
        label_delay_s=None,
        mean_prediction=0.2,
        label_rate=0.2,
        metrics=metrics,
        baseline={"auc": baseline_auc},
    )
    return MonitoringResult("m", start, start + H, start + H, 2000, (vm,), version, fd)


def _run(policy, results, state=None):
    state = state or PolicyState("m")
    out = []
    for r in results:
        decisions, state = evaluate(policy, state, [r], r.end)
        out.append(decisions)
    return out, state


def test_clean_windows_never_trigger():
    decisions, state = _run(RetrainPolicy(), [_result(i) for i in range(50)])
    assert not any(decisions) and state.triggers == () and state.drift_streaks == {}


def test_drift_must_be_sustained_in_the_same_feature():
    policy = RetrainPolicy(drift_windows=2)
    # alternating features never make a streak of 2
    alternating = [_result(i, drifted=("a",) if i % 2 else ("b",)) for i in range(10)]
    decisions, _ = _run(policy, alternating)
    assert not any(decisions)
    decisions, state = _run(
        policy, [_result(0), _result(1, drifted=("a",)), _result(2, drifted=("a", "b"))]
    )
    assert [len(d) for d in decisions] == [0, 0, 1]
    trig = decisions[2][0]
    assert trig.cause == "drift" and trig.causes == ("drift@1",)
    assert "a" in trig.reason and trig.evidence["drift@1"]["streaks"] == {"a": 2}
    tags = trig.run_tags()
    assert tags["mlcicd/trigger"] == "drift" and tags["mlcicd/trigger_id"] == trig.trigger_id
    assert state.triggers[-1]["trigger_id"] == trig.trigger_id


def test_unjudged_windows_neither_extend_nor_break_a_streak():
    policy = RetrainPolicy(drift_windows=2)
    rs = [_result(0, drifted=("a",)), _result(1, judged=False), _result(2, drifted=("a",))]
    decisions, _ = _run(policy, rs)
    assert [len(d) for d in decisions] == [0, 0, 1]


def test_one_retrain_per_cause_rearmed_when_cleared():
    policy = RetrainPolicy(drift_windows=2, cooldown=dt.timedelta(0), max_per_day=100)
    rs = [_result(i, drifted=("a",)) for i in range(6)]  # sustained for 6 windows
    decisions, state = _run(policy, rs)
    assert sum(len(d) for d in decisions) == 1 and "drift@1" in state.fired
    # drift clears, then comes back: a new retrain is allowed
    more = [_result(6), _result(7, drifted=("a",)), _result(8, drifted=("a",))]
    decisions, state = _run(policy, more, state)
    assert [len(d) for d in decisions] == [0, 0, 1]
    # another version serving: a new cause key
    decisions, state = _run(
        policy, [_result(9 + i, drifted=("a",), version="2") for i in range(2)], state
    )
    assert [d[0].causes for d in decisions if d] == [("drift@2",)]


def test_repeated_and_out_of_order_results_are_idempotent():
    policy = RetrainPolicy(drift_windows=2)
    r0, r1 = _result(0, drifted=("a",)), _result(1, drifted=("a",))
    d, state = evaluate(policy, PolicyState("m"), [r1, r0, r0], r1.end)
    assert len(d) == 1
    d2, state2 = evaluate(policy, state, [r0, r1], r1.end)  # same windows read again
    assert d2 == [] and state2.drift_streaks == state.drift_streaks


def test_cooldown_holds_back_then_lets_through():
    policy = RetrainPolicy(drift_windows=1, cooldown=dt.timedelta(hours=3), max_per_day=10)
    rs = [_result(0, drifted=("a",)), _result(1, drifted=("a",), auc=0.6)]
    decisions, state = _run(policy, rs)
    assert [d[0].cause if d else None for d in decisions] == ["drift", None]
    assert state.suppressed[-1]["suppressed_by"].startswith("cooldown until")
    assert state.suppressed[-1]["causes"] == ["degradation@1"]
    # still degraded after the cool-down: now it fires
    later = [_result(i, drifted=("a",), auc=0.6) for i in range(2, 5)]
    decisions, state = _run(policy, later, state)
    assert [d[0].cause if d else None for d in decisions] == [None, "degradation", None]


def test_budget_caps_retrains_per_day():
    policy = RetrainPolicy(drift_windows=1, cooldown=dt.timedelta(0), max_per_day=2)
    # each window a different version drifts: a new cause every hour
    rs = [_result(i, drifted=("a",), version=str(i)) for i in range(6)]
    decisions, state = _run(policy, rs)
    assert [len(d) for d in decisions] == [1, 1, 0, 0, 0, 0]
    assert state.suppressed[-1]["suppressed_by"].startswith("budget: 2 retrains")
    # a day later the budget is free again
    decisions, _ = _run(policy, [_result(30, drifted=("a",), version="30")], state)
    assert len(decisions[0]) == 1


def test_degradation_priority_and_merged_causes():
    policy = RetrainPolicy(drift_windows=1)
    decisions, _ = _run(policy, [_result(0, drifted=("b",), auc=0.70)])
    trig = decisions[0][0]
    assert trig.cause == "degradation" and trig.causes == ("degradation@1", "drift@1")
    assert "auc" in trig.reason and "drift" in trig.reason


def test_degradation_needs_enough_labels_and_a_real_gap():
    policy = RetrainPolicy(min_labels=500)
    decisions, _ = _run(policy, [_result(0, auc=0.70, n_labeled=100), _result(1, auc=0.79)])
    assert not any(decisions)


def test_new_data_trigger_counts_each_label_once():
    policy = RetrainPolicy(
        min_new_labels=2500, drift=False, degradation=False, cooldown=dt.timedelta(0)
    )
    # window 0 computed twice (more labels the second time): 600 then 1000 labels
    state = PolicyState("m")
    d, state = evaluate(policy, state, [_result(0, n_labeled=600)], T0 + H)
    d, state = evaluate(policy, state, [_result(0, n_labeled=1000)], T0 + 2 * H)
    assert state.labels_since_retrain == 1000
    d, state = evaluate(policy, state, [_result(1, n_labeled=1000)], T0 + 3 * H)
    assert d == [] and state.labels_since_retrain == 2000
    d, state = evaluate(policy, state, [_result(2, n_labeled=1000)], T0 + 4 * H)
    assert [t.cause for t in d] == ["new_data"] and state.labels_since_retrain == 0


def test_policy_config_is_validated():
    with pytest.raises(ValueError):
        RetrainPolicy(drift_windows=0)
    with pytest.raises(ValueError):
        RetrainPolicy(degradation_alpha=0)
    with pytest.raises(ValueError):
        evaluate(RetrainPolicy(), PolicyState("other"), [_result(0)], T0)


def test_run_policy_persists_atomically_and_alerts_once(home):
    policy = RetrainPolicy(drift_windows=2)
    rs = [_result(i, drifted=("a",)) for i in range(4)]
    all_decisions = []
    for r in rs:
        d, _ = run_policy(home, "m", policy, [r], r.end)
        all_decisions += d
    assert len(all_decisions) == 1
    state = load_state(home, "m")
    assert json.loads(policy_state_path(home, "m").read_text())["schema"] == 1
    assert state.triggers[0]["trigger_id"] == all_decisions[0].trigger_id
    alerts = [json.loads(line) for line in home.alerts.read_text().splitlines()]
    drift_alerts = [a for a in alerts if "drift" in json.dumps(a)]
    assert len(drift_alerts) == 1  # sustained drift alerted once, not every window
    policy_state_path(home, "m").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read retraining policy state"):
        load_state(home, "m")


def test_history_replayed_every_tick_across_a_version_change_still_builds_a_streak():
    # The sensor passes the recent history on every tick. An old window of the previous
    # version must not reset the new version's streak when it is read again (regression:
    # the demo's sustained drift never triggered after a canary promotion).
    policy = RetrainPolicy(drift_windows=2)
    history = [_result(0, version="1"), _result(1, version="1")]
    state = PolicyState("m")
    fired = []
    for i in range(2, 5):
        history.append(_result(i, drifted=("a",), version="2"))
        decisions, state = evaluate(policy, state, history, history[-1].end)
        fired += decisions
    assert [t.causes for t in fired] == [("drift@2",)]
