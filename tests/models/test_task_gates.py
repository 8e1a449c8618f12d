"""Non-inferiority and slices on each task's own losses: an equal candidate passes, a
clearly worse one is rejected, the first model must beat the constant model."""

from __future__ import annotations

import numpy as np

from mlcicd_dagster.models.task_gates import TaskMargins, non_inferiority, slices
from mlcicd_dagster.models.tasks import make_task


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_multiclass_and_regression_non_inferiority():
    rng = np.random.default_rng(3)
    multi = make_task("multiclass", ["a", "b", "c", "d"])
    n = 3000
    logits = rng.normal(0, 2, (n, 4))
    y = (_softmax(logits).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    champ = _softmax(logits + rng.normal(0, 0.3, (n, 4)))
    equal = _softmax(logits + rng.normal(0, 0.3, (n, 4)))
    worse = _softmax(rng.normal(0, 2, (n, 4)))  # knows nothing
    m = TaskMargins()
    assert non_inferiority(multi, {"holdout": (y, equal, champ)}, m).passed
    bad = non_inferiority(multi, {"holdout": (y, worse, champ)}, m)
    assert not bad.passed and "log-loss on holdout" in bad.summary
    assert {r["metric"] for r in bad.rows} == {"log-loss", "error rate"}
    first = non_inferiority(multi, {"golden": (y, champ, None)}, m)
    assert first.passed and "constant model" in first.summary
    assert "reported_macro_f1" in first.rows[0]
    assert not non_inferiority(multi, {"golden": (y, np.full((n, 4), 0.25), None)}, m).passed

    reg = make_task("regression")
    f = rng.normal(150, 50, n)
    yr = f + rng.normal(0, 20, n)
    champ_r, equal_r = f + rng.normal(0, 10, n), f + rng.normal(0, 10, n)
    worse_r = f + rng.normal(0, 40, n)
    assert non_inferiority(reg, {"holdout": (yr, equal_r, champ_r)}, m).passed
    rej = non_inferiority(reg, {"holdout": (yr, worse_r, champ_r)}, m)
    assert not rej.passed and "squared error" in rej.summary
    assert non_inferiority(reg, {"golden": (yr, champ_r, None)}, m).passed

    # slices: worse only where x > 1 (a quarter of the rows) is found there, by Holm
    x = rng.normal(0, 1, n)
    local = np.where(x > 1, worse_r, equal_r)
    groups = [("x <= 1", x <= 1), ("x > 1", x > 1), ("tiny", np.arange(n) < 5)]
    s = slices(reg, yr, local, champ_r, groups, m)
    verdict = {r["slice"]: r["passed"] for r in s.rows}
    assert verdict == {"x <= 1": True, "x > 1": False, "tiny": True}
    assert not s.passed and "x > 1" in s.summary
    assert [r["judged"] for r in s.rows] == [True, True, False]
