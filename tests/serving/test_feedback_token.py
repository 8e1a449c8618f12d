"""Who may write labels: with a token configured, /feedback needs it (401 otherwise) and a
refused label never reaches the feedback log, so never a feedback batch; scoring stays open."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from serving_support import MODEL, deploy, read_log, split_body

TOKEN = "s3cret-token"


@pytest.fixture
def served(home: Any, registry: Any, start_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLCICD_FEEDBACK_TOKEN", TOKEN)  # what deploy/'s Secret sets
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    return srv


def test_labels_need_the_token_and_refused_ones_are_never_recorded(
    served: Any, registry: Any, home: Any
) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        # Scoring stays open, as in MLflow.
        r = client.post("/invocations", json=split_body(registry.features, registry.rows[:3]))
        assert r.status_code == 200, r.text
        ids = r.headers["X-Request-Id"].split(",")
        labels = [{"request_id": rid, "label": 1} for rid in ids]
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"X-Token": TOKEN},
        ):
            refused = client.post("/feedback", json=labels, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error_code"] == "UNAUTHENTICATED"
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        metrics = client.get("/metrics").text
        assert "mlcicd_feedback_refused_total 5.0" in metrics
        # Nothing reached the feedback log (the source of feedback batches).
        served.model_server.feedlog.flush()
        assert read_log(home.feedback(MODEL)).empty
        ok = client.post("/feedback", json=labels[:2], headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json() == {"accepted": 2}
    served.stop()
    log = read_log(home.feedback(MODEL))
    assert sorted(log["request_id"]) == sorted(ids[:2])


def test_without_a_token_feedback_is_open(home: Any, registry: Any, start_server: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("MLCICD_FEEDBACK_TOKEN", raising=False)
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    r = httpx.post(f"{srv.url}/invocations", json=split_body(registry.features, registry.rows[:1]))
    rid = r.headers["X-Request-Id"]
    ok = httpx.post(f"{srv.url}/feedback", json={"request_id": rid, "label": 0})
    assert ok.status_code == 200
