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
