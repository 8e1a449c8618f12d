"""The join of prediction log and feedback labels, and the per-version metrics of a window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mlcicd_dagster.models.stats import PROB_CLIP
from mlcicd_dagster.monitoring import MonitoringError, MonitoringResult, compute_window
from mlcicd_dagster.monitoring.logs import write_feedback_part, write_prediction_part
from mlcicd_dagster.monitoring.window import load_window

from .conftest import T0

H = dt.timedelta(hours=1)
S = dt.timedelta(seconds=1)


def _preds(n, version="1", track="stable", start=T0, seed=0, prefix="r"):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "request_id": [f"{prefix}{i}" for i in range(n)],
            "ts": [start + i * S for i in range(n)],
            "model_version": version,
            "track": track,
            "prediction": rng.random(n),
            "x": rng.normal(size=n),
            "c": rng.choice(["a", "b"], n),
        }
    )


def test_empty_and_missing_logs_give_an_empty_result(home):
    r = compute_window(home, "m", T0, T0 + H, reference=None, numeric=["x"])
    assert r.n_predictions == 0 and r.versions == () and r.primary_version is None
    assert all(c.passed for c in r.checks())
    home.predictions("m").mkdir(parents=True)
    (home.predictions("m") / ".part-1-abc.parquet.tmp").write_bytes(b"half written")
    r = compute_window(home, "m", T0, T0 + H, reference=None, numeric=["x"])
    assert r.n_predictions == 0
    json_ready = r.to_dict()
    assert MonitoringResult.from_dict(json_ready).to_dict() == json_ready


def test_window_bounds_late_labels_missing_labels_and_as_of(home):
    p = _preds(100)
    p.loc[90:, "ts"] = T0 + H + S  # 10 rows after the window: not in it
    write_prediction_part(home.predictions("m"), p)
    fb = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(60)],
            "label": [float(i % 2) for i in range(60)],
            # labels for r0..r49 arrive within the hour, r50..r59 three hours late
            "ts": [T0 + i * S + 30 * S if i < 50 else T0 + 3 * H for i in range(60)],
        }
    )
    write_feedback_part(home.feedback("m"), fb)
    r = compute_window(home, "m", T0, T0 + H, reference=None, as_of=T0 + 2 * H)
    v = r.version("1")
    assert r.n_predictions == 90 and v.n_predictions == 90
    assert v.n_labeled == 50 and v.label_coverage == pytest.approx(50 / 90)
    assert v.label_delay_s["p50"] == pytest.approx(30.0)
    # the late labels count once the computation is made after they arrived
    later = compute_window(home, "m", T0, T0 + H, reference=None, as_of=T0 + 4 * H)
    assert later.version("1").n_labeled == 60
    assert later.version("1").label_delay_s["max"] == pytest.approx(3 * 3600 - 50)


def test_duplicate_feedback_last_wins_and_invalid_labels(home):
    write_prediction_part(home.predictions("m"), _preds(4))
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame(
            {
                "request_id": ["r0", "r0", "r1", "r2"],
                "label": [1.0, 0.0, 1.0, 7.0],
                "ts": [T0 + 10 * S, T0 + 20 * S, T0 + 10 * S, T0 + 10 * S],
            }
        ),
    )
    # same ts in a later part: the later part wins the tie
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame({"request_id": ["r1"], "label": [0.0], "ts": [T0 + 10 * S]}),
    )
    data = load_window(home, "m", T0, T0 + H, as_of=T0 + H, with_request_id=True)
    labels = dict(zip(data.frame["request_id"], data.frame["label"], strict=True))
    assert labels["r0"] == 0.0  # later ts wins
    assert labels["r1"] == 0.0  # tie on ts: later part wins
    assert labels["r2"] == 7.0 and np.isnan(labels["r3"])
    assert data.n_duplicate_feedback == 2
    r = compute_window(home, "m", T0, T0 + H, reference=None, as_of=T0 + H)
    v = r.version("1")
    assert (v.n_labeled, v.n_invalid_labels) == (2, 1)
    assert r.n_duplicate_feedback == 2


def test_per_version_metrics_match_sklearn_and_shadow_is_not_double_counted(home):
    rng = np.random.default_rng(1)
    stable = _preds(3000, "1", "stable", seed=1)
    canary = _preds(1000, "2", "canary", start=T0 + 3000 * S / 10, seed=2, prefix="k")
    canary["ts"] = [T0 + i * S for i in range(1000)]
    shadow = stable.iloc[:500].copy()
    shadow["model_version"], shadow["track"] = "3", "shadow"
    shadow["prediction"] = rng.random(500)
    write_prediction_part(home.predictions("m"), stable)
    write_prediction_part(home.predictions("m"), pd.concat([canary, shadow]))
    ids = pd.concat([stable["request_id"], canary["request_id"]])
    y = (rng.random(len(ids)) < 0.3).astype(float)
    write_feedback_part(
        home.feedback("m"), pd.DataFrame({"request_id": ids, "label": y, "ts": T0 + H})
    )
    r = compute_window(home, "m", T0, T0 + H, reference=None, as_of=T0 + 2 * H)
    assert r.n_predictions == 4000  # shadow rows are the same requests again
    assert r.primary_version == "1"
    assert [v.version for v in r.versions] == ["1", "2", "3"]
    lab = dict(zip(ids, y, strict=True))
    for v, frame in (("1", stable), ("2", canary), ("3", shadow)):
        vm = r.version(v)
        yy = frame["request_id"].map(lab).to_numpy()
        assert vm.n_labeled == len(frame) and vm.label_coverage == 1.0
        assert vm.metrics["auc"].value == pytest.approx(roc_auc_score(yy, frame["prediction"]))
        # the monitor clips probabilities with the library's one constant, as every gate does
        clipped = np.clip(frame["prediction"], PROB_CLIP, 1 - PROB_CLIP)
        assert vm.metrics["log_loss"].value == pytest.approx(log_loss(yy, clipped))
    assert r.version("3").tracks == ("shadow",)
    md = r.versions_markdown()
    assert "| 1 | stable | 3000 | 3000 |" in md


def test_bad_logs_give_clear_errors(home):
    write_prediction_part(home.predictions("m"), _preds(5))
    with pytest.raises(MonitoringError, match="lacks columns.*'nope'"):
        compute_window(
            home, "m", T0, T0 + H, reference=pd.DataFrame({"nope": [1.0]}), numeric=["nope"]
        )
    with pytest.raises(ValueError, match="empty window"):
        compute_window(home, "m", T0, T0, reference=None)
    (home.predictions("m") / "part-2-deadbeef.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(MonitoringError, match="prediction log"):
        compute_window(home, "m", T0, T0 + H, reference=None)


def test_degradation_check_against_baseline(home):
    rng = np.random.default_rng(4)
    n = 2000
    y = (rng.random(n) < 0.3).astype(float)
    p = np.clip(0.3 + 0.1 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)  # weak model
    frame = _preds(n)
    frame["prediction"] = p
    write_prediction_part(home.predictions("m"), frame)
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame({"request_id": frame["request_id"], "label": y, "ts": T0 + H}),
    )
    live_auc = roc_auc_score(y, p)
    ok = compute_window(
        home, "m", T0, T0 + H, reference=None, as_of=T0 + H, baseline={"1": {"auc": live_auc}}
    )
    assert {c.name: c.passed for c in ok.checks()}["live_performance"]
    bad = compute_window(
        home,
        "m",
        T0,
        T0 + H,
        reference=None,
        as_of=T0 + H,
        baseline={"1": {"auc": live_auc + 0.15}},
    )
    check = {c.name: c for c in bad.checks()}["live_performance"]
    assert not check.passed and check.severity == "ERROR" and "auc" in check.description
    name, severity, passed, description = check
    assert (name, severity, passed) == ("live_performance", "ERROR", False)
    # round trip keeps the verdict
    again = MonitoringResult.from_dict(bad.to_dict())
    assert [tuple(c) for c in again.checks()] == [tuple(c) for c in bad.checks()]


def test_drift_sample_is_of_the_window_and_repeatable(home):
    from mlcicd_dagster.monitoring import MonitorConfig

    for i in range(3):  # three hours of traffic; only the middle one is the window
        write_prediction_part(
            home.predictions("m"), _preds(2000, version="10" if i else "9", start=T0 + i * H,
                                          seed=i, prefix=f"h{i}-")
        )  # fmt: skip
    ref = pd.DataFrame({"x": np.random.default_rng(0).normal(size=3000)})
    cfg = MonitorConfig(max_drift_rows=500)
    runs = [
        compute_window(home, "m", T0 + H, T0 + 2 * H, reference=ref, numeric=["x"], config=cfg)
        for _ in range(2)
    ]
    fd = runs[0].feature_drift
    assert 400 <= fd.n_current <= 600  # a ~500-row sample of the window's 2000 rows
    assert runs[0].feature_drift == runs[1].feature_drift  # same rows, same verdict
    everything = compute_window(
        home, "m", T0, T0 + 3 * H, reference=ref, numeric=["x"], config=MonitorConfig()
    )
    assert everything.feature_drift.n_current == 6000
    assert [v.version for v in everything.versions] == ["9", "10"]  # version order, not text
