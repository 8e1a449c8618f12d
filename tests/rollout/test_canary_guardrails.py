"""The guardrails' minimum sample before a rollback vote keeps false rollbacks of skewed
quantities within each guardrail's share of alpha (fast settings of
``bench/bench_canary_guardrails.py``; fixed seeds, the production rule)."""

from __future__ import annotations

from bench.bench_canary_guardrails import (
    ALPHA_RB,
    BASELINE_MIN_N,
    ERROR_CASES,
    SHIFT_CASES,
    error_rollbacks,
    guardrail_spec,
    latency_rollbacks,
    shift_rollbacks,
)


def test_prediction_shift_false_rollbacks_of_an_equal_skewed_model():
    canary, stable = SHIFT_CASES["equal, very skewed"]
    ours = shift_rollbacks(guardrail_spec("prediction_shift"), canary, stable, reps=3000)
    generic = shift_rollbacks(
        guardrail_spec("prediction_shift", BASELINE_MIN_N), canary, stable, reps=3000
    )
    assert ours <= ALPHA_RB / 2, ours
    assert generic > 2 * ours, (generic, ours)  # the minimum is what keeps it there


def test_a_better_model_is_not_lost_to_a_weak_stables_narrow_predictions():
    canary, stable = SHIFT_CASES["better, more spread than a weak stable"]
    ours = shift_rollbacks(guardrail_spec("prediction_shift"), canary, stable, reps=3000)
    generic = shift_rollbacks(
        guardrail_spec("prediction_shift", BASELINE_MIN_N), canary, stable, reps=3000
    )
    assert ours <= 0.01, ours
    assert generic >= 0.04, generic


def test_a_model_shifted_by_the_margin_is_still_rolled_back():
    canary, stable = SHIFT_CASES["worse: shifted by the margin"]
    assert shift_rollbacks(guardrail_spec("prediction_shift"), canary, stable, reps=1000) >= 0.95


def test_latency_false_rollbacks_of_an_equally_fast_model_under_load():
    ours = latency_rollbacks(guardrail_spec("latency"), reps=300)
    assert ours <= ALPHA_RB, ours
    assert guardrail_spec("latency").min_n_rollback > BASELINE_MIN_N
    assert (
        latency_rollbacks(guardrail_spec("latency"), reps=100, slower=1.25) >= 0.95
    )  # still caught


def test_error_rate_false_rollbacks_of_equal_models_even_with_failures_in_bursts():
    spec = guardrail_spec("error_rate")
    for case in ("equal, frequent failures (3%)", "equal, failures in bursts of 10 (1%)"):
        assert error_rollbacks(spec, *ERROR_CASES[case], reps=2000) <= ALPHA_RB, case
    broken = ERROR_CASES["worse: a broken canary failing 10% (stable 0.2%)"]
    assert error_rollbacks(spec, *broken, reps=500) >= 0.99
