"""LocalTarget against the real model server on loopback: the server follows the state
file, ``/deployment`` reports the served revision, smoke tests go through ``/invocations``
with ``X-Track``, and a canary is judged from the server's own prediction + feedback logs."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest

from mlcicd_dagster.rollout import controller as c
from mlcicd_dagster.rollout import strategies as s
from mlcicd_dagster.rollout.analysis import AnalysisConfig, MetricSpec
from mlcicd_dagster.rollout.evidence import LogEvidenceSource
from mlcicd_dagster.rollout.local_target import LocalTarget

MODEL = "rollout_test"  # as registered by conftest
LABEL = "default.payment.next.month"


@pytest.fixture
def server(home, registered, monkeypatch):
    from mlcicd_dagster.serving import ServerConfig, ServerThread

    uri, refs = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    target = LocalTarget(home, MODEL, tracking_uri=uri)
    assert s.blue_green(target, refs["v1"], serve_timeout_s=5).outcome == "promoted"
    config = ServerConfig(flush_interval_s=0.05, poll_interval_s=0.05, scoring_threads=0)
    srv = ServerThread(home, MODEL, "127.0.0.1", 0, config).start()
    try:
        srv.wait_ready(60)
        yield srv, target
    finally:
        srv.stop()


def _send(url, frame, features, n, offset):
    """``n`` single-row requests with distinct routing keys, each followed by its label."""
    rows = frame.iloc[offset : offset + n]
    with httpx.Client(base_url=url, timeout=10) as c:
        for _, row in rows.iterrows():
            body = {"dataframe_split": {"columns": features, "data": [row[features].tolist()]}}
            r = c.post("/invocations", json=body, headers={"X-Routing-Key": uuid.uuid4().hex})
            assert r.status_code == 200, r.text
            fb = c.post("/feedback", json={"request_id": r.headers["X-Request-Id"],
                                           "label": float(row[LABEL])})  # fmt: skip
            assert fb.status_code in (200, 202), fb.text


def test_local_target_drives_the_real_server(server, registered, frame, features, clock):
    srv, target = server
    _, refs = registered
    assert target.server_address() == srv.url
    assert target.served_revision() == target.read_state().revision

    sent = {"n": 0}

    def traffic_then_wait(seconds):  # the canary loop's sleep: real traffic, then a flush
        _send(srv.url, frame, features, 60, sent["n"])
        sent["n"] += 60
        import time

        time.sleep(0.3)
        clock.sleep(seconds)

    cfg = s.CanaryConfig(
        steps=(0.5,), check_interval_s=30, step_min_duration_s=0, max_duration_s=3600,
        serve_timeout_s=30,
        analysis=AnalysisConfig(
            metrics=(MetricSpec("prediction_shift", margin=0.3, two_sided=True, min_n=30),)
        ),
    )  # fmt: skip
    res = c.canary(target, refs["v2"], evidence=LogEvidenceSource(target.home, MODEL),
                   config=cfg, smoke_rows=frame[features].head(10),
                   clock=clock, sleep=traffic_then_wait)  # fmt: skip
    assert res.outcome == "promoted", [(d.check, d.reason) for d in res.decisions]
    smoke = next(d for d in res.decisions if d.check == "smoke")
    assert smoke.passed and smoke.details["rows"] == 10
    final = [d for d in res.decisions if d.check == "canary_analysis"][-1]
    m = final.details["metrics"][0]
    assert m["n_canary"] >= 30 and m["n_stable"] >= 30  # evidence read from the real logs
    assert final.details["descriptive"]["labels_canary"] >= 1  # feedback joined
    assert target.wait_until_serving(res.state.revision, 10)
    r = httpx.post(f"{srv.url}/invocations", json={"dataframe_split": {
        "columns": features, "data": [frame[features].iloc[0].tolist()]}})  # fmt: skip
    assert r.headers["X-Model-Version"] == refs["v2"].version

    # Instant rollback: v1 was kept warm as `previous`.
    back = s.rollback(target, reason="test")
    assert target.wait_until_serving(back.state.revision, 10)
    r = httpx.post(f"{srv.url}/invocations", json={"dataframe_split": {
        "columns": features, "data": [frame[features].iloc[0].tolist()]}})  # fmt: skip
    assert r.headers["X-Model-Version"] == refs["v1"].version


def test_smoke_on_a_track_goes_through_http(server, registered, frame, features):
    srv, target = server
    _, refs = registered
    staged = dataclasses.replace(refs["v3"], weight=0.0)
    state = target.transition("stage", lambda st: {"canary": staged, "phase": "staged"})
    assert target.wait_until_serving(state.revision, 30)
    scores = target.smoke("canary", frame[features].head(5))
    assert scores.shape == (5,) and ((scores >= 0) & (scores <= 1)).all()
    assert target.describe()["server"] == srv.url
