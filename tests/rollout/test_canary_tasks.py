"""The canary's sequential test stays within its error rates on every task's per-request
loss (fast settings of ``bench/bench_canary_tasks.py``; the bench runs 2,000 canaries)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_canary_tasks import error_rates
from mlcicd_dagster.models.tasks import make_task


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_sequential_canary_error_rates_per_task(task):
    r = error_rates(task, reps=200, batch=200)
    # 200 runs: a true 5% rate is measured within about +-3 points
    assert r["false_rollback"] <= 0.08, r
    assert r["false_promotion"] <= 0.08, r
    assert r["median_n_worse"] < 4 * r["n_fixed"], r  # decided before the horizon


def test_request_loss_per_task():
    assert make_task("regression").request_loss(np.array([1.0]), np.array([4.0]))[0] == 3.0
    multi = make_task("multiclass", ["a", "b", "c"])
    loss = multi.request_loss(np.array([1]), np.array([[0.2, 0.5, 0.3]]))
    assert loss[0] == pytest.approx(-np.log(0.5))


def test_regression_canary_judges_the_absolute_error_from_the_logs():
    """The logged value and its feedback label give the canary |error| per request; the
    analysis judges it with a margin in the label's units."""
    import pandas as pd

    from mlcicd_dagster.rollout import analysis as an
    from mlcicd_dagster.rollout.evidence import evidence_from_rows
    from mlcicd_dagster.rollout.state import DeploymentState, ModelRef

    rng = np.random.default_rng(2)
    n = 600
    y = rng.normal(150, 50, n)
    track = np.where(np.arange(n) % 2 == 0, "stable", "canary")
    noise = np.where(track == "canary", 40.0, 10.0)  # the canary is much worse
    rows = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "model_version": np.where(track == "canary", "2", "1"),
            "track": track,
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
            "latency_ms": 5.0,
            "prediction": y + rng.normal(0, 1, n) * noise,
            "label": y,
        }
    )
    state = DeploymentState(model_name="m", stable=ModelRef("1", "models:/m/1"),
                            canary=ModelRef("2", "models:/m/2", weight=0.5))  # fmt: skip
    ev = evidence_from_rows(rows, state, task=make_task("regression"))
    assert "abs_error" in ev.canary and "log_loss" not in ev.canary
    config = an.AnalysisConfig(metrics=an.metrics_for_task("regression", label_scale=8.0))
    result = an.analyse(ev, config)
    assert result.verdict == an.ROLLBACK, result
    # multiclass: tests/rollout/test_canary_multiclass.py
    assert an.metrics_for_task("multiclass")[0].name == "log_loss"
    with pytest.raises(ValueError, match="no canary metrics"):
        an.metrics_for_task("ranking")


def test_replay_rolls_back_a_clearly_worse_model_and_keeps_an_equal_one():
    """``bench/replay_canary.py``'s loop (the pipeline's steps and analysis) on per-row
    losses: an equal model is promoted, one worse by twice the margin rolled back."""
    from bench.replay_canary import replay
    from mlcicd_dagster.rollout.strategies import CanaryConfig

    rng = np.random.default_rng(3)
    p = rng.beta(2, 6, 5000)
    y = (rng.random(5000) < p).astype(float)
    stable = (make_task("binary").request_loss(y, p), p)
    worse_p = np.clip(p + rng.normal(0, 0.25, 5000), 0.01, 0.99)
    worse = (make_task("binary").request_loss(y, worse_p), worse_p)
    assert worse[0].mean() - stable[0].mean() > 0.1  # twice the 0.05 margin
    config = CanaryConfig(steps=(0.05, 0.25, 0.5), step_min_samples=60)
    same = replay(config, stable, stable, reps=300, look=80, max_looks=300)
    assert same["promoted"] >= 0.97 and same["rolled_back"] <= 0.03, same
    bad = replay(config, stable, worse, reps=300, look=80, max_looks=300)
    assert bad["rolled_back"] >= 0.97 and "log_loss" in bad["rolled_back_by"], bad
