"""A live canary for a multiclass and a regression model: the real model server on
loopback splits real requests by the canary weight, labels arrive later on ``/feedback``
(text classes for the multiclass model, numbers for the regression one), and the rollout
controller's ticks (``rollout.controller.tick``, as the controller sensor runs them, with the
task's evidence and metrics) roll a clearly worse candidate back and promote a better one.

Small scikit-learn models on scikit-learn's bundled digits and diabetes data (no downloads).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.models.tasks import Task, make_task
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout import controller as c
from mlcicd_dagster.rollout import strategies as s
from mlcicd_dagster.rollout.evidence import LogEvidenceSource
from mlcicd_dagster.rollout.local_target import LocalTarget
from mlcicd_dagster.rollout.state import ModelRef

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STEPS = (0.2, 0.5)
FIRST, SECOND = 150, 550  # requests sent at each step
# Undecided after the first labels (the split of requests is random): traffic goes on, as
# in production, in rounds of MORE labelled requests, at most ROUNDS of them.
MORE, ROUNDS = 400, 3


@dataclass
class Case:
    model: str
    task: Task
    x: pd.DataFrame  # rows sent as traffic
    y: pd.Series  # their labels, as a client would send them (text classes, numbers)
    refs: dict[str, ModelRef]  # "stable", "worse", "better"
    label_scale: float | None = None  # regression: the candidate's holdout MAE


def _register(model, name, x, y_enc, uri, task, **kw) -> ModelRef:
    from mlcicd_dagster.models.loading import log_and_register

    model.fit(x, y_enc)
    out = log_and_register(
        model, model_name=name, X_example=x.head(5), tracking_uri=uri, task=task, **kw
    )
    return ModelRef(version=out.version, model_uri=out.model_uri, run_id=out.run_id)


def _digits(uri: str) -> Case:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_digits(as_frame=True)
    x = data.data
    y = pd.Series([DIGITS[i] for i in data.target], index=x.index)
    task = make_task("multiclass", DIGITS)
    enc = task.encode(y)
    train, traffic = slice(0, 1000), slice(1000, None)

    def lr():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.005, max_iter=300))

    def swapped(*pairs: tuple[int, int]) -> np.ndarray:
        swap = np.arange(len(DIGITS))
        for i, j in pairs:
            swap[[i, j]] = [j, i]
        return swap[enc[train]]

    # Same model, same confidence (the prediction-shift guardrail watches the predicted
    # class's probability), different labels learnt: stable mixes up 3 and 8, the worse
    # candidate three more pairs, the better one none. Only the delayed labels tell them
    # apart. Strong regularisation keeps the per-request log-loss's spread small enough
    # for the canary's 0.05-nat margin to decide on a few hundred labels.
    refs = {
        "stable": _register(lr(), "live_digits", x.iloc[train], swapped((3, 8)), uri, task),
        "worse": _register(
            lr(), "live_digits", x.iloc[train], swapped((3, 8), (4, 9), (1, 7), (2, 5)), uri, task
        ),
        "better": _register(lr(), "live_digits", x.iloc[train], enc[train], uri, task),
    }
    return Case("live_digits", task, x.iloc[traffic], y.iloc[traffic], refs)


def _diabetes(uri: str) -> Case:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target.astype(float)
    task = make_task("regression")
    enc = task.encode(y)
    train, holdout = slice(0, 300), slice(300, None)
    # stable: over-regularised; worse: fitted with the target's sign flipped around its
    # mean (a label-pipeline bug: same mean prediction, errors twice as large); better: fit.
    flipped = 2 * enc[train].mean() - enc[train]
    refs = {}
    for key, alpha, target in (("stable", 2.0, enc[train]), ("worse", 1.0, flipped),
                               ("better", 0.01, enc[train])):  # fmt: skip
        model = Ridge(alpha=alpha)
        refs[key] = _register(model, "live_diabetes", x.iloc[train], target, uri, task)
        if key == "better":  # its holdout MAE: the canary margin's unit (deploy_ops.label_scale)
            scale = float(np.mean(np.abs(model.predict(x.iloc[holdout]) - enc[holdout])))
    return Case("live_diabetes", task, x, y, refs, label_scale=scale)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _send(client: httpx.Client, case: Case, n: int, start: int) -> list[tuple[str, str, int]]:
    """``n`` single-row requests, each with its own routing key. Returns (request id,
    served version, row position) for each; labels are sent later (``_label``)."""
    out = []
    cols = list(case.x.columns)
    for k in range(start, start + n):
        i = k % len(case.x)
        body = {"dataframe_split": {"columns": cols, "data": [case.x.iloc[i].tolist()]}}
        r = client.post("/invocations", json=body, headers={"X-Routing-Key": uuid.uuid4().hex})
        assert r.status_code == 200, r.text
        out.append((r.headers["X-Request-Id"], r.headers["X-Model-Version"], i))
    return out


def _label(client: httpx.Client, case: Case, sent: list[tuple[str, str, int]]) -> None:
    """The labels, later, in batches of 100 (as a labelling job posts them)."""
    items = []
    for rid, _, i in sent:
        value = case.y.iloc[i]
        items.append(
            {"request_id": rid, "label": value if isinstance(value, str) else float(value)}
        )
    for k in range(0, len(items), 100):
        r = client.post("/feedback", json=items[k : k + 100])
        assert r.status_code in (200, 202), r.text


def _why(report: c.TickReport) -> str:
    return f"{report.message}: {[(d.check, d.reason) for d in report.decisions]}"


def _share(sent, version: str) -> float:
    return sum(v == version for _, v, _ in sent) / len(sent)


def _canary(target, client, case: Case, candidate: ModelRef, registry) -> c.TickReport:
    """Begin a canary of ``candidate`` and drive it with the controller's ticks against
    live traffic; returns the tick that decided it."""
    cfg = s.CanaryConfig(
        steps=STEPS, check_interval_s=1, step_min_duration_s=0, step_min_samples=15,
        max_duration_s=3600, serve_timeout_s=30,
        analysis=an.AnalysisConfig(metrics=an.metrics_for_task(case.task.name, case.label_scale)),
    )  # fmt: skip
    evidence = LogEvidenceSource(target.home, case.model, task=case.task)

    def tick() -> c.TickReport:
        time.sleep(0.3)  # the server's log writers flush every 50 ms
        return c.tick(target, evidence=evidence, canary_config=cfg, registry=registry)

    v = candidate.version
    begun = c.begin(target, candidate, "canary", canary_config=cfg, registry=registry)
    assert begun.outcome == c.IN_PROGRESS and target.read_state().canary.weight == STEPS[0]
    held = tick()
    assert held.outcome == "holding"
    assert f"waiting for traffic: 0/15 samples at step {STEPS[0]:.0%}" in held.message

    # Step 1: traffic, no labels yet. The server honours the 20% split; enough canary
    # requests (and no verdict either way) move the canary up one step.
    first = _send(client, case, FIRST, 0)
    assert 0.08 < _share(first, v) < 0.34, _share(first, v)
    moved = tick()
    assert moved.outcome == "advanced", _why(moved)
    assert target.read_state().canary.weight == STEPS[1]

    # Last step: traffic split ~50/50; without labels the controller says it waits for them.
    second = _send(client, case, SECOND, FIRST)
    assert 0.38 < _share(second, v) < 0.62, _share(second, v)
    waiting = tick()
    assert waiting.outcome == "holding", waiting.message
    primary = an.metrics_for_task(case.task.name, case.label_scale)[0].name
    assert f"waiting for evidence at step {STEPS[1]:.0%}: {primary} n=0/0" in waiting.message
    assert c.read_progress(target.state_path)["message"] == waiting.message  # `mlcicd status`
    assert waiting.progress["labels"] == {"canary": 0, "stable": 0, "paired": 0}

    # The labels arrive (delayed feedback): the next tick decides, or says it needs more.
    _label(client, case, first + second)
    decided, sent = tick(), FIRST + SECOND
    for _ in range(ROUNDS):
        if decided.outcome != "holding":
            break
        assert "not enough evidence either way" in decided.message, decided.message
        more = _send(client, case, MORE, sent)
        _label(client, case, more)
        decided, sent = tick(), sent + MORE
    return decided


@pytest.mark.parametrize("build", [_digits, _diabetes], ids=["multiclass", "regression"])
def test_controller_judges_a_live_canary_per_task(build, tracking_uri, home, monkeypatch):
    from mlflow import MlflowClient

    from mlcicd_dagster.serving import ServerConfig, ServerThread

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    case = build(tracking_uri)
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    target = LocalTarget(home, case.model, tracking_uri=tracking_uri)
    stable, worse, better = (case.refs[k] for k in ("stable", "worse", "better"))
    assert s.blue_green(target, stable, serve_timeout_s=30).outcome == "promoted"
    config = ServerConfig(flush_interval_s=0.05, poll_interval_s=0.05, scoring_threads=0)
    srv = ServerThread(home, case.model, "127.0.0.1", 0, config).start()
    try:
        srv.wait_ready(60)
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            bad = _canary(target, client, case, worse, registry)
            assert bad.outcome == "rolled_back", bad.message
            verdicts = {m["metric"]: m for m in bad.decisions[-1].details["metrics"]}
            assert bad.decisions[-1].check == "canary_analysis"
            loss = next(iter(verdicts.values()))  # the task's primary loss comes first
            assert loss["mean_canary"] > loss["mean_stable"], loss
            assert bad.progress["labels"]["canary"] >= 100  # judged on the delayed labels
            after = target.read_state()
            assert after.canary is None and after.stable.version == stable.version
            assert target.wait_until_serving(after.revision, 30)
            assert {v for _, v, _ in _send(client, case, 20, 0)} == {stable.version}

            good = _canary(target, client, case, better, registry)
            assert good.outcome == "promoted", good.message
            assert target.read_state().stable.version == better.version
            assert str(registry.get_model_version_by_alias(case.model, "champion").version) == (
                better.version
            )
            assert target.wait_until_serving(target.read_state().revision, 30)
            assert {v for _, v, _ in _send(client, case, 20, 0)} == {better.version}
    finally:
        srv.stop()
