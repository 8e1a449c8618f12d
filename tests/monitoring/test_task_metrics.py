"""Live metrics with intervals and prediction drift for every task."""

from __future__ import annotations

import numpy as np
import pytest

from mlcicd_dagster.models.tasks import make_task
from mlcicd_dagster.monitoring.metrics import task_metrics, task_prediction_drift


def test_intervals_cover_the_truth_per_task():
    rng = np.random.default_rng(0)
    reg = make_task("regression")
    y = rng.normal(100, 20, 4000)
    pred = y + rng.normal(0, 10, 4000)  # true MAE 10*sqrt(2/pi) = 7.98, RMSE 10
    m = task_metrics(reg, y, pred)
    assert m["mae"].lo < 10 * np.sqrt(2 / np.pi) < m["mae"].hi
    assert m["rmse"].lo < 10 < m["rmse"].hi and m["rmse"].method == "delta"
    assert not m["mae"].higher_is_better

    # coverage of the 95% intervals over 60 independent windows of a calibrated model
    multi = make_task("multiclass", ["a", "b", "c"])
    covered = 0
    for seed in range(60):
        r = np.random.default_rng(100 + seed)
        probs = r.dirichlet([1, 1, 1], 800)
        labels = (probs.cumsum(axis=1) > r.random((800, 1))).argmax(axis=1)
        m = task_metrics(multi, labels, probs)
        truth = float(np.mean(probs.max(axis=1)))  # expected accuracy given these outputs
        covered += m["accuracy"].lo < truth < m["accuracy"].hi
        assert m["accuracy"].method == "wilson" and m["log_loss"].lo > 0
    assert covered >= 52, covered  # 95% of 60 = 57; 52 allows binomial noise

    binary = task_metrics(
        make_task("binary"), np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.6, 0.3])
    )
    assert binary["auc"].value == 1.0


def test_prediction_drift_per_task():
    rng = np.random.default_rng(1)
    reg = make_task("regression")
    same = task_prediction_drift(reg, rng.normal(0, 1, 5000), rng.normal(0, 1, 5000))
    moved = task_prediction_drift(reg, rng.normal(0, 1, 5000), rng.normal(1, 1, 5000))
    assert same["psi"] < 0.02 < 0.2 < moved["psi"]
    multi = make_task("multiclass", [0, 1, 2])
    ref = np.eye(3)[rng.integers(0, 3, 3000)]
    shifted = np.eye(3)[np.where(rng.random(3000) < 0.6, 0, rng.integers(0, 3, 3000))]
    d = task_prediction_drift(multi, ref, shifted)
    assert d["max_class_share_change"] == pytest.approx(0.4, abs=0.05) and d["psi"] > 0.2


def test_regression_window_measures_mae_and_rmse_from_the_logs(tmp_path):
    """Prediction and feedback logs as the server writes them -> a window of a regression."""
    import datetime as dt

    import pandas as pd

    from mlcicd_dagster.monitoring.window import compute_window
    from mlcicd_dagster.platform.home import Home

    home = Home(tmp_path / "home")
    rng = np.random.default_rng(5)
    n = 400
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ids = [f"r{i}" for i in range(n)]
    y = rng.normal(150, 50, n)
    pred = y + rng.normal(0, 10, n)
    preds_dir, fb_dir = home.predictions("reg"), home.feedback("reg")
    preds_dir.mkdir(parents=True)
    fb_dir.mkdir(parents=True)
    ts = pd.Series([now - dt.timedelta(minutes=30)] * n).astype("datetime64[us, UTC]")
    pd.DataFrame(
        {
            "request_id": ids,
            "ts": ts,
            "model_version": "1",
            "track": "stable",
            "routing_key": ids,
            "latency_ms": 1.0,
            "prediction": pred,
        }
    ).to_parquet(preds_dir / "part-1-aaaaaaaa.parquet")
    labels = np.where(np.arange(n) < 390, y, np.nan)  # 10 rows not labelled yet
    labels[0] = np.inf  # an invalid label is counted, not measured
    pd.DataFrame(
        {"request_id": ids, "label": labels, "ts": (ts + pd.Timedelta(minutes=5)).astype(ts.dtype)}
    ).to_parquet(fb_dir / "part-2-bbbbbbbb.parquet")
    result = compute_window(
        home,
        "reg",
        now - dt.timedelta(hours=1),
        now,
        reference=None,
        task=make_task("regression"),
    )
    (v,) = result.versions
    assert v.n_labeled == 389 and v.n_invalid_labels == 1
    assert set(v.metrics) == {"mae", "rmse"}
    assert v.metrics["rmse"].lo < 10 < v.metrics["rmse"].hi


def test_an_estimate_without_a_standard_error_round_trips():
    """One labelled row has no standard error: stored as null, read back as NaN (a window
    with a single label once made the retraining sensor fail to read its results)."""
    import math

    from mlcicd_dagster.monitoring.metrics import MetricEstimate, log_loss

    est = log_loss(np.array([1.0]), np.array([0.7]), level=0.95)
    assert math.isnan(est.se)
    back = MetricEstimate.from_dict(est.to_dict())
    assert math.isnan(back.se) and back.value == pytest.approx(est.value) and back.n == 1
