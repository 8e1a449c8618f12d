"""Evidence from Parquet prediction + feedback logs (the documented schema), via DuckDB."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.evidence import LogEvidenceSource, read_window
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef

MODEL = "m"


def _write(folder, df, name):
    folder.mkdir(parents=True, exist_ok=True)
    df.to_parquet(folder / f"part-{name}.parquet", index=False)


def _log(home, n=400, shadow=False, seed=0):
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="UTC")
    ids = [f"r{i}" for i in range(n)]
    p_s = rng.uniform(0.05, 0.6, n)
    y = (rng.uniform(size=n) < p_s).astype(float)
    track = np.where(np.arange(n) % 2 == 0, "stable", "canary") if not shadow else ["stable"] * n
    preds = pd.DataFrame({
        "request_id": ids, "ts": now, "model_version": np.where(track == "stable", "1", "2")
        if not shadow else "1", "track": track, "routing_key": ids,
        "latency_ms": rng.uniform(1, 3, n), "prediction": p_s, "x": 1.0,
    })  # fmt: skip
    parts = [preds]
    if shadow:  # the candidate scored the same requests, logged a second time
        sh = preds.copy()
        sh["track"], sh["model_version"] = "shadow", "2"
        sh["prediction"] = 1.0 - p_s  # a candidate that gets it backwards
        parts.append(sh)
    _write(home.predictions(MODEL), pd.concat(parts), "1-aaaa")
    _write(home.predictions(MODEL), preds.iloc[:0], "2-empty")
    fb = pd.DataFrame({"request_id": ids[: n // 2], "label": y[: n // 2], "ts": now})
    _write(home.feedback(MODEL), fb, "1-bbbb")
    (home.predictions(MODEL) / ".part-3-tmp.parquet").write_bytes(b"half a file")  # ignored
    return now


def _state(track):
    cand = ModelRef("2", "models:/m/2", weight=0.5)
    return DeploymentState(MODEL, revision=3, phase=track, stable=ModelRef("1", "models:/m/1"),
                           **{track: cand})  # fmt: skip


def test_canary_and_stable_arms_with_labels(home):
    now = _log(home)
    since = now.to_pydatetime() - dt.timedelta(seconds=5)
    rows = read_window(home, MODEL, since)
    assert len(rows) == 400 and rows["label"].notna().sum() == 200
    ev = LogEvidenceSource(home, MODEL, error_counts=lambda s: {"canary": (1, 200),
                                                                "stable": (0, 200)}).collect(
        _state("canary"), since)  # fmt: skip
    assert ev.canary["prediction_shift"].n == 200 and ev.stable["latency"].n == 200
    assert ev.canary["log_loss"].n == 100 and ev.stable["log_loss"].n == 100
    assert ev.canary["error_rate"].mean == 0.005
    assert ev.descriptive["labels_canary"] == 100 and 0 <= ev.descriptive["ks"] <= 1
    # Nothing in a window that starts after the rows.
    later = now.to_pydatetime() + dt.timedelta(seconds=5)
    assert read_window(home, MODEL, later).empty


def test_shadow_rows_are_paired_by_request_id(home):
    now = _log(home, shadow=True)
    ev = LogEvidenceSource(home, MODEL).collect(_state("shadow"), now.to_pydatetime())
    assert ev.paired["prediction_shift"].n == 400 and ev.paired["log_loss"].n == 200
    res = an.analyse(ev, an.AnalysisConfig(metrics=(an.MetricSpec("log_loss", 0.05, min_n=50),)))
    assert res.verdict == an.ROLLBACK and res.metrics[0].paired


def test_no_logs_yet_is_no_evidence(home):
    ev = LogEvidenceSource(home, MODEL).collect(_state("canary"), dt.datetime.now(dt.UTC))
    assert ev.n_canary() == 0
    assert an.analyse(ev).verdict == an.CONTINUE


def test_latency_guardrail_ignores_differences_below_the_floor():
    # 0.9 ms vs 1.1 ms (22% slower) is cache noise: both count as the floor, so no rollback.
    from mlcicd_dagster.rollout.evidence import LATENCY_FLOOR_MS, _arm_moments

    fast = pd.DataFrame({"latency_ms": np.full(300, 0.9), "prediction": 0.2, "label": np.nan})
    slow = pd.DataFrame({"latency_ms": np.full(300, 1.1), "prediction": 0.2, "label": np.nan})
    a, b = _arm_moments(fast)["latency"], _arm_moments(slow)["latency"]
    assert a.mean == b.mean == pytest.approx(np.log(LATENCY_FLOOR_MS))
    # above the floor a real slowdown still shows
    slower = pd.DataFrame({"latency_ms": np.full(300, 12.0), "prediction": 0.2, "label": np.nan})
    assert _arm_moments(slower)["latency"].mean > a.mean
