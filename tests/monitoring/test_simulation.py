"""Clean traffic does not trigger retraining; a real shift does, within two windows.

Real data (the shipped credit_default pool), a real model (scikit-learn logistic
regression), the data gate's drift statistics and the default retraining policy.
The library is told the columns; it knows nothing of credit_default.

Planned rates (per window, clean traffic):
* feature drift check: family-wise <= alpha = 0.05 (Holm; the PSI floor only removes alarms);
* degradation check: <= degradation_alpha = 0.01 (Bonferroni across metrics);
* policy alarm: <= 0.01 + 0.05**2 (degradation, or the same feature flagged in two
  consecutive windows).
Counts over 200 windows are checked against the binomial upper tail at 1e-6, so a
correct implementation fails this test about once in a million runs.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from mlcicd_dagster.monitoring import (
    MonitorConfig,
    PolicyState,
    RetrainPolicy,
    compute_window,
    evaluate,
    run_policy,
)
from mlcicd_dagster.monitoring.drift import prediction_reference, reference_profile
from mlcicd_dagster.monitoring.logs import write_feedback_part, write_prediction_part
from mlcicd_dagster.monitoring.metrics import classification_metrics
from mlcicd_dagster.monitoring.window import WindowData, summarize

from .conftest import T0

POOL = Path(__file__).resolve().parents[2] / "assets" / "credit_default" / "data" / "pool.csv.gz"
LABEL = "default.payment.next.month"
NUMERIC = ["LIMIT_BAL", "AGE", *[f"BILL_AMT{i}" for i in range(1, 7)]] + [
    f"PAY_AMT{i}" for i in range(1, 7)
]
CATEGORICAL = ["SEX", "EDUCATION", "MARRIAGE", "PAY_0", *[f"PAY_{i}" for i in range(2, 7)]]
FEATURES = NUMERIC + CATEGORICAL
H = dt.timedelta(hours=1)
WINDOW_ROWS = 1500
N_CLEAN = 200
TAIL = 1e-6


@pytest.fixture(scope="module")
def world():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = pd.read_csv(POOL).sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, holdout, live = df.iloc[:9000], df.iloc[9000:12000], df.iloc[12000:]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(train[FEATURES], train[LABEL])
    hold_p = model.predict_proba(holdout[FEATURES])[:, 1]
    hold = classification_metrics(holdout[LABEL].to_numpy(), hold_p)
    baseline = {"1": {k: {"value": v.value, "se": v.se} for k, v in hold.items()}}
    live = live.reset_index(drop=True)
    return {
        "model": model,
        "live": live,
        "live_p": model.predict_proba(live[FEATURES])[:, 1],  # scored once: clean rows repeat
        "profile": reference_profile(train, numeric=NUMERIC, categorical=CATEGORICAL),
        "pred_ref": prediction_reference(hold_p),
        "baseline": baseline,
    }


def _window(world, rng, shift_share=0.0):
    """A window of live traffic and the served model's scores for it."""
    idx = rng.integers(0, len(world["live"]), WINDOW_ROWS)
    w = world["live"].iloc[idx].reset_index(drop=True)
    p = world["live_p"][idx]
    if shift_share:
        # A new customer segment (here: a random share of traffic) with credit limits cut by half.
        seg = rng.random(len(w)) < shift_share
        w.loc[seg, "LIMIT_BAL"] = w.loc[seg, "LIMIT_BAL"] * 0.5
        p = world["model"].predict_proba(w[FEATURES])[:, 1]
    w.attrs["p"] = p
    return w


def _summarize(world, w, i, rng):
    p = w.attrs["p"]
    labelled = rng.random(len(w)) < 0.8  # 80% of the labels have arrived
    frame = pd.DataFrame(
        {
            "model_version": "1",
            "track": "stable",
            "prediction": p,
            "label": np.where(labelled, w[LABEL].to_numpy(dtype=float), np.nan),
            "delay_s": np.where(labelled, 600.0, np.nan),
        }
    )
    start = T0 + i * H
    return summarize(
        WindowData(frame, 0, w[FEATURES]),
        model_name="credit",
        start=start,
        end=start + H,
        as_of=start + 2 * H,
        reference=world["profile"],
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        reference_predictions=world["pred_ref"],
        baseline=world["baseline"],
    )


def test_clean_traffic_false_alarms_within_planned_rates(world):
    rng = np.random.default_rng(2024)
    cfg = MonitorConfig()
    policy = RetrainPolicy(cooldown=dt.timedelta(0), max_per_day=10**6)  # count every alarm
    state = PolicyState("credit")
    drift_alarms = degradation_alarms = policy_alarm_windows = triggers = 0
    for i in range(N_CLEAN):
        r = _summarize(world, _window(world, rng), i, rng)
        checks = {c.name: c for c in r.checks()}
        drift_alarms += not checks["feature_drift"].passed
        degradation_alarms += not checks["live_performance"].passed
        decisions, state = evaluate(policy, state, [r], r.end)
        triggers += len(decisions)
        policy_alarm_windows += bool(state.active)
    planned_drift = cfg.drift_alpha
    planned_degr = cfg.degradation_alpha
    planned_policy = policy.degradation_alpha + cfg.drift_alpha**2
    assert drift_alarms <= binom.isf(TAIL, N_CLEAN, planned_drift), drift_alarms
    assert degradation_alarms <= binom.isf(TAIL, N_CLEAN, planned_degr), degradation_alarms
    assert policy_alarm_windows <= binom.isf(TAIL, N_CLEAN, planned_policy), policy_alarm_windows
    assert triggers <= policy_alarm_windows
    print(f"clean: drift {drift_alarms}, degradation {degradation_alarms}, policy {triggers}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_limit_cut_by_half_caught_within_two_windows(world, seed):
    rng = np.random.default_rng(seed)
    state = PolicyState("credit")
    policy = RetrainPolicy()
    fired_at = None
    for i in range(6):
        shifted = i >= 2
        r = _summarize(world, _window(world, rng, 0.5 if shifted else 0.0), i, rng)
        decisions, state = evaluate(policy, state, [r], r.end)
        if decisions and fired_at is None:
            fired_at = i
            trig = decisions[0]
    assert fired_at is not None and 2 <= fired_at <= 3, fired_at  # shift starts at window 2
    assert trig.cause == "drift" and "LIMIT_BAL" in trig.reason
    assert trig.run_tags()["mlcicd/trigger"] == "drift"
    assert len(state.triggers) == 1  # sustained drift: one retrain, not one per window


def test_concept_shift_triggers_label_confirmed_degradation(world):
    rng = np.random.default_rng(9)
    state = PolicyState("credit")
    w = _window(world, rng)
    w[LABEL] = np.where(rng.random(len(w)) < 0.35, 1 - w[LABEL], w[LABEL])  # labels change meaning
    r = _summarize(world, w, 0, rng)
    assert not {c.name: c.passed for c in r.checks()}["live_performance"]
    decisions, state = evaluate(RetrainPolicy(), state, [r], r.end)
    assert [d.cause for d in decisions] == ["degradation"]
    assert decisions[0].evidence["degradation@1"]["degraded"]


def test_shift_end_to_end_through_the_logs(world, home):
    """The same story through Parquet logs, compute_window, run_policy and the alert sink."""
    rng = np.random.default_rng(5)
    fired = []
    for i in range(4):
        w = _window(world, rng, 0.5 if i >= 2 else 0.0)
        start = T0 + i * H
        ids = [f"w{i}-{k}" for k in range(len(w))]
        p = w.attrs["p"]
        ts = [start + dt.timedelta(seconds=2 * k) for k in range(len(w))]
        write_prediction_part(
            home.predictions("credit"),
            pd.concat(
                [
                    pd.DataFrame(
                        {"request_id": ids, "ts": ts, "model_version": "1", "prediction": p}
                    ),
                    w[FEATURES],
                ],
                axis=1,
            ),
        )
        write_feedback_part(
            home.feedback("credit"),
            pd.DataFrame({"request_id": ids, "label": w[LABEL].astype(float), "ts": start + H}),
        )
        r = compute_window(
            home,
            "credit",
            start,
            start + H,
            reference=world["profile"],
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            reference_predictions=world["pred_ref"],
            baseline=world["baseline"],
            as_of=start + 2 * H,
        )
        assert r.n_predictions == WINDOW_ROWS and r.version("1").label_coverage == 1.0
        decisions, _ = run_policy(home, "credit", RetrainPolicy(), [r], r.end)
        fired += [(i, d) for d in decisions]
    assert [(i, d.cause) for i, d in fired] == [(3, "drift")]
    alerts = [json.loads(x) for x in home.alerts.read_text().splitlines()]
    assert [a["kind"] for a in alerts] == ["monitoring_drift"]
    assert "LIMIT_BAL" in alerts[0]["details"]["reason"]
