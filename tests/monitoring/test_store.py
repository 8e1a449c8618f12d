"""Saved results, `mlcicd status --json`'s monitoring part, and Dagster metadata."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd

from mlcicd_dagster.monitoring import (
    RetrainPolicy,
    compute_window,
    load_results,
    monitoring_status,
    run_policy,
    save_result,
)
from mlcicd_dagster.monitoring.logs import write_feedback_part, write_prediction_part

from .conftest import T0

H = dt.timedelta(hours=1)


def _traffic(home, i, shift=False, n=400):
    rng = np.random.default_rng(i)
    start = T0 + i * H
    x = rng.normal(size=n) + (3.0 if shift else 0.0)
    ids = [f"{i}-{k}" for k in range(n)]
    write_prediction_part(
        home.predictions("m"),
        pd.DataFrame(
            {
                "request_id": ids,
                "ts": [start + dt.timedelta(seconds=k) for k in range(n)],
                "model_version": "4",
                "prediction": rng.random(n),
                "x": x,
                "c": rng.choice(["a", "b"], n),
            }
        ),
    )
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame({"request_id": ids, "label": (rng.random(n) < 0.3) * 1.0, "ts": start + H}),
    )


def test_status_shows_latest_window_and_why_a_retrain_was_triggered(home):
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    assert monitoring_status(home, "m")["latest"] is None
    for i in range(3):
        _traffic(home, i, shift=i >= 1)
        r = compute_window(
            home, "m", T0 + i * H, T0 + (i + 1) * H, reference=reference,
            numeric=["x"], categorical=["c"], as_of=T0 + (i + 2) * H,
        )  # fmt: skip
        save_result(home, r)
        run_policy(home, "m", RetrainPolicy(), load_results(home, "m", last=3), r.end)
    saved = load_results(home, "m")
    assert [s.window_key for s in saved] == sorted(s.window_key for s in saved)
    assert len(saved) == 3 and saved[-1].feature_drift.drifted == ("x",)
    status = monitoring_status(home, "m")
    json.dumps(status)  # JSON-ready
    assert status["latest"]["window"]["key"] == saved[-1].window_key
    assert status["latest"]["feature_drift"]["drifted"] == ["x"]
    trig = status["retraining"]["triggers"]
    assert len(trig) == 1 and trig[0]["cause"] == "drift" and "x" in trig[0]["reason"]
    assert trig[0]["at"] == (T0 + 3 * H).isoformat()
    assert "drift@4" in status["retraining"]["active_causes"]


def test_metadata_is_readable_dagster_metadata(home):
    _traffic(home, 0)
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
    r = compute_window(
        home, "m", T0, T0 + H, reference=reference, numeric=["x"], categorical=["c"],
        reference_predictions=rng.random(2000), baseline={"4": {"auc": 0.5}}, as_of=T0 + 2 * H,
    )  # fmt: skip
    md = r.to_metadata()
    assert all(isinstance(v, dg.MetadataValue) for v in md.values())
    assert "| 4 | stable | 400 | 400 |" in md["versions"].value
    assert "| x | numeric | ks |" in md["feature_drift"].value
    names = [c.name for c in r.checks()]
    assert names == ["live_performance", "feature_drift", "prediction_drift", "label_coverage"]
    # the checks map one to one onto Dagster asset check results
    for c in r.checks():
        dg.AssetCheckResult(
            check_name=c.name,
            passed=c.passed,
            severity=dg.AssetCheckSeverity(c.severity),
            description=c.description,
        )
