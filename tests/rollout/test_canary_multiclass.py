"""A multiclass canary and monitoring window from the real logs: the server's log writers
(``serving.logs``) keep each request's class probabilities and text labels; the canary's
evidence (``rollout.evidence``) and the monitoring window (``monitoring.window``) read them
back through DuckDB and judge the log-loss of the true class."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from mlcicd_dagster.models.tasks import make_task
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.evidence import LogEvidenceSource, read_window
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef
from mlcicd_dagster.serving.logs import (
    FeedbackEntry,
    PredictionEntry,
    feedback_log,
    multiclass_outputs,
    prediction_log,
)

MODEL = "zoo"
CLASSES = ["cat", "dog", "owl"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _traffic(home, *, n=1200, canary_noise=0.0, track="canary", seed=0, bad_labels=0):
    """Log ``n`` requests per arm through the server's log writers; feedback for each as
    the text class ("dog"). Returns (since, labels, stable probabilities, candidate's)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 3))
    truth = _softmax(logits)
    y = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    p_stable = _softmax(logits + rng.normal(0, 0.3, (n, 3)))
    p_cand = _softmax(logits + rng.normal(0, 0.3 + canary_noise, (n, 3)))
    preds = prediction_log(home.predictions(MODEL), flush_interval_s=60, max_pending_rows=10**6)
    feedback = feedback_log(home.feedback(MODEL), flush_interval_s=60, max_pending_rows=10**6)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    x = rng.normal(size=(n, 2))
    now = time.time()
    names = ("x0", "x1")
    for i in range(n):
        sid = f"s{i}"
        if track == "canary":  # each request goes to one arm
            cid, stable_rows = f"c{i}", slice(i, i + 1)
        else:  # the shadow scores the stable arm's request: same id
            cid, stable_rows = sid, slice(i, i + 1)
        for rid, ver, trk, p in ((sid, "1", "stable", p_stable), (cid, "2", track, p_cand)):
            out = p[stable_rows]
            preds.append(
                PredictionEntry([rid], now, ver, trk, rid, 5.0, out.max(axis=1), x[i : i + 1],
                                names, multiclass_outputs(out))
            )  # fmt: skip
        label = CLASSES[y[i]] if i >= bad_labels else "emu"  # "emu" is no declared class
        feedback.append(FeedbackEntry(sid, label, now + 1))
        if track == "canary":
            feedback.append(FeedbackEntry(cid, label, now + 1))
    assert preds.flush() > 0 and feedback.flush() > 0
    return since, y, p_stable, p_cand


def _state(track: str) -> DeploymentState:
    cand = ModelRef("2", "models:/zoo/2", weight=0.5)
    return DeploymentState(MODEL, revision=2, phase=track, stable=ModelRef("1", "models:/zoo/1"),
                           **{track: cand})  # fmt: skip


def test_the_log_keeps_class_probabilities_and_text_labels(home):
    since, y, p_stable, _ = _traffic(home, n=50, bad_labels=2)
    rows = read_window(home, MODEL, since)
    stable = rows[rows["track"] == "stable"]
    stable = stable.sort_values("request_id", key=lambda s: s.str[1:].astype(int))
    got = np.vstack(stable["probabilities"].to_numpy())
    np.testing.assert_allclose(got, p_stable)
    assert list(stable["label"])[:3] == ["emu", "emu", CLASSES[y[2]]]
    assert multiclass_outputs(np.zeros((4, 2))) is None  # binary: one number per row suffices


def test_multiclass_canary_judges_the_log_loss_of_the_true_class(home):
    task = make_task("multiclass", CLASSES)
    since, y, p_stable, p_cand = _traffic(home, canary_noise=2.0, bad_labels=20)
    ev = LogEvidenceSource(home, MODEL, task=task).collect(_state("canary"), since)
    # the per-request loss is the task's: -log P(true class), clipped; "emu" is left out
    expected = task.request_loss(y[20:], p_cand[20:]).mean()
    assert ev.canary["log_loss"].n == len(y) - 20
    assert ev.canary["log_loss"].mean == pytest.approx(expected)
    assert 0 < ev.descriptive["accuracy_canary"] < ev.descriptive["accuracy_stable"] <= 1
    config = an.AnalysisConfig(metrics=an.metrics_for_task("multiclass"))
    result = an.analyse(ev, config)
    assert result.verdict == an.ROLLBACK, result


def test_multiclass_canary_promotes_an_equal_model(home):
    task = make_task("multiclass", CLASSES)
    since, *_ = _traffic(home, n=3000, canary_noise=0.0, seed=3)
    ev = LogEvidenceSource(home, MODEL, task=task).collect(_state("canary"), since)
    result = an.analyse(ev, an.AnalysisConfig(metrics=an.metrics_for_task("multiclass")))
    assert result.verdict == an.PROMOTE, result


def test_multiclass_shadow_pairs_the_loss_per_request(home):
    task = make_task("multiclass", CLASSES)
    since, y, p_stable, p_cand = _traffic(home, canary_noise=2.0, track="shadow", seed=1)
    ev = LogEvidenceSource(home, MODEL, task=task).collect(_state("shadow"), since)
    diff = task.request_loss(y, p_cand) - task.request_loss(y, p_stable)
    assert ev.paired["log_loss"].n == len(y)
    assert ev.paired["log_loss"].mean == pytest.approx(diff.mean())


def test_multiclass_monitoring_window_from_the_logs(home):
    from sklearn.metrics import accuracy_score, log_loss

    from mlcicd_dagster.models.stats import PROB_CLIP
    from mlcicd_dagster.monitoring.window import compute_window

    task = make_task("multiclass", CLASSES)
    since, y, p_stable, _ = _traffic(home, n=600, bad_labels=5, seed=2)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    # the reference: the stable model's outputs on reference rows; shifted: all "owl"
    shifted = np.tile([0.05, 0.05, 0.9], (400, 1))
    result = compute_window(home, MODEL, since, until, reference=None, task=task,
                            reference_predictions={"1": p_stable[:400], "2": shifted},
                            as_of=until + dt.timedelta(seconds=5))  # fmt: skip
    v1, v2 = result.versions
    assert (v1.n_labeled, v1.n_invalid_labels) == (595, 5)
    m = v1.metrics
    yy, pp = y[5:], np.clip(p_stable[5:], PROB_CLIP, 1 - PROB_CLIP)
    assert m["log_loss"].value == pytest.approx(log_loss(yy, pp, labels=[0, 1, 2]), rel=1e-3)
    assert m["log_loss"].lo < m["log_loss"].value < m["log_loss"].hi
    assert m["accuracy"].value == pytest.approx(accuracy_score(yy, p_stable[5:].argmax(axis=1)))
    assert m["accuracy"].lo < m["accuracy"].value < m["accuracy"].hi
    # prediction drift: the predicted class's probability and the predicted class
    assert {r["feature"] for r in v1.prediction_drift.rows} == {"prediction", "predicted_class"}
    assert v1.prediction_drift.drifted == ()
    assert "predicted_class" in v2.prediction_drift.drifted


def test_multiclass_feedback_becomes_a_batch_with_declared_classes(home):
    """Retraining data from the logs: text labels come back as the declared classes,
    labels that fit no class are left out, hard examples are wrong predicted classes."""
    import pyarrow.parquet as pq

    from mlcicd_dagster.monitoring.feedback_batch import export_feedback_batch, hard_examples

    task = make_task("multiclass", CLASSES)
    since, y, p_stable, _ = _traffic(home, n=80, bad_labels=4, seed=4)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    batch = export_feedback_batch(home, MODEL, "zoo", since, until, features=["x0", "x1"],
                                  label="animal", id_column=None, task=task,
                                  as_of=until + dt.timedelta(seconds=5))  # fmt: skip
    assert batch.created and batch.n_rows == 76, batch  # stable rows; "emu" left out
    out = pq.read_table(batch.path).to_pandas()
    assert list(out.columns) == ["x0", "x1", "animal"]
    assert set(out["animal"]) <= set(CLASSES)
    wrong = int(np.sum(p_stable[4:].argmax(axis=1) != y[4:]))
    assert batch.n_hard == wrong > 0 and len(hard_examples(batch.path)) == wrong
