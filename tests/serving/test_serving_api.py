"""The HTTP API over a real socket: formats, headers, feedback, bad input, metrics, log."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from serving_support import MODEL, deploy, read_log, split_body


@pytest.fixture
def served(home, registry, start_server):
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        yield srv, client


def test_all_four_formats_score_like_the_model(served, registry, local_predictors):
    srv, client = served
    feats = registry.features
    rows = registry.rows.iloc[:3]
    expected = local_predictors["1"].predict_proba(rows[feats])
    records = rows[feats].to_dict("records")
    bodies = {
        "dataframe_split": split_body(feats, rows),
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs_columns": {"inputs": {c: rows[c].tolist() for c in feats}},
        "inputs_records": {"inputs": records},
    }
    seen_ids: set[str] = set()
    for name, body in bodies.items():
        r = client.post("/invocations", json=body)
        assert r.status_code == 200, (name, r.text)
        preds = np.asarray(r.json()["predictions"])  # [[P(0), P(1)], ...]: the pyfunc's output
        np.testing.assert_allclose(preds[:, 1], expected, rtol=1e-9, err_msg=name)
        ids = r.headers["X-Request-Id"].split(",")
        assert len(ids) == 3 and len(set(ids)) == 3
        assert not seen_ids & set(ids)
        seen_ids |= set(ids)
        assert r.headers["X-Model-Version"] == "1"
        assert r.headers["X-Track"] == "stable"
    # One record as an object, columns in another order plus an extra column (ignored).
    rec = dict(reversed(list(records[0].items())), extra_column="ignored")
    r = client.post("/invocations", json={"inputs": rec})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0][1] == pytest.approx(expected[0])


def test_nothing_deployed_is_503_not_a_crash(home, start_server):
    srv = start_server()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "nothing deployed" in ready.json()["reason"]
        r = client.post("/invocations", json={"inputs": {"a": [1]}})
        assert r.status_code == 503
        assert "no model deployed" in r.json()["message"]
        assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert client.get("/deployment").json()["served_revision"] == 0


def test_feedback_known_unknown_and_from_disk(home, registry, start_server):
    deploy(home, stable="1")
    # recent_ids=1: ids of earlier requests leave memory and are found on disk by DuckDB.
    srv = start_server(recent_ids=1)
    srv.wait_ready()
    feats = registry.features
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        first = client.post("/invocations", json=split_body(feats, registry.rows.iloc[:2]))
        old_ids = first.headers["X-Request-Id"].split(",")
        srv.model_server.predlog.flush()
        last = client.post("/invocations", json=split_body(feats, registry.rows.iloc[2:3]))
        new_id = last.headers["X-Request-Id"]
        ok = client.post("/feedback", json={"request_id": new_id, "label": 1})
        assert ok.status_code == 200 and ok.json() == {"accepted": 1}
        ok = client.post(
            "/feedback",
            json=[
                {"request_id": old_ids[0], "label": 0},
                {"request_id": old_ids[1], "label": True},
            ],
        )
        assert ok.status_code == 200, ok.text
        missing = client.post(
            "/feedback",
            json=[{"request_id": new_id, "label": 1}, {"request_id": "no-such-id", "label": 0}],
        )
        assert missing.status_code == 404
        assert missing.json()["unknown"] == ["no-such-id"]
        for bad in ({"request_id": new_id}, {"request_id": new_id, "label": " "}, [], 3):
            r = client.post("/feedback", json=bad)
            assert r.status_code == 400 and r.json()["message"], bad
    srv.stop()
    fb = read_log(home.feedback(MODEL))
    assert sorted(fb["request_id"]) == sorted([new_id, *old_ids])  # the 404 list wrote nothing
    assert dict(zip(fb["request_id"], fb["label"], strict=True))[old_ids[1]] == 1.0
    assert _ts_type(home.feedback(MODEL)) == "timestamp[us, tz=UTC]"


def _ts_type(directory):
    import pyarrow.parquet as pq

    types = {str(pq.read_schema(p).field("ts").type) for p in directory.glob("part-*.parquet")}
    assert len(types) == 1
    return types.pop()


def _row(registry):
    return registry.rows.iloc[0][registry.features].tolist()


BAD_INPUTS = [
    ("malformed JSON", b'{"dataframe_split": ', "valid JSON"),
    ("not an object", b"[1, 2, 3]", "Received a list"),
    ("unknown format", json.dumps({"tensor": [[1]]}).encode(), "exactly one of the input fields"),
    ("two formats", json.dumps({"inputs": [], "instances": []}).encode(), "exactly one of"),
    ("no rows", json.dumps({"dataframe_records": []}).encode(), "Failed to enforce schema"),
    ("deep nesting", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    ("empty body", b"", "valid JSON"),
]


@pytest.mark.parametrize("name,body,needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_structurally_bad_bodies(served, name, body, needle):
    """MLflow's answers (the parity suite compares every case with mlflow models serve)."""
    _, client = served
    r = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert needle in doc["message"]
    assert r.headers["X-Request-Id"] and r.headers["X-Model-Version"] == "1"


def test_bad_values_name_the_problem(served, registry):
    srv, client = served
    feats = registry.features
    row = _row(registry)

    def split(columns, data):
        return {"dataframe_split": {"columns": columns, "data": data}}

    def with_value(column, value):
        bad = dict(zip(feats, row, strict=True))
        bad[column] = value
        return {"dataframe_records": [dict(zip(feats, row, strict=True)), bad]}

    cases = [
        (split(feats[:-1], [row[:-1]]), feats[-1]),
        ({"dataframe_records": [{k: v for k, v in zip(feats, row, strict=True) if k != "AGE"}]},
         "AGE"),
        (with_value("AGE", "abc"), "AGE"),
        (with_value("AGE", None), "AGE"),
        ({"dataframe_split": [row]}, "Dataframe split format must be a dictionary"),
    ]  # fmt: skip
    for body, needle in cases:
        r = client.post("/invocations", json=body)
        assert r.status_code == 400, (needle, r.text)
        assert needle in r.json()["message"], (needle, r.json())

    # Ours only (docs/serving.md): bounded bodies and rows, 413 with an MLflow error document.
    small = srv.model_server.config.max_body_bytes
    r = client.post("/invocations", content=b" " * (small + 1))
    assert r.status_code == 413 and "limit" in r.json()["message"]
    many = srv.model_server.config.max_rows_per_request + 1
    r = client.post("/invocations", json={"instances": [dict(zip(feats, row, strict=True))] * many})
    assert r.status_code == 413 and "rows" in r.json()["message"]
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    r = client.post("/invocations", content=b"a,b\n1,2", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.get("/invocations")
    assert r.status_code == 405 and r.json()["detail"] == "Method Not Allowed"
    assert client.get("/nope").status_code == 404

    # ... and the server still answers.
    ok = client.post("/invocations", json=split(feats, [row]))
    assert ok.status_code == 200


def test_metrics_exposition(served, registry):
    from prometheus_client.parser import text_string_to_metric_families

    srv, client = served
    feats = registry.features
    for i in range(5):
        client.post("/invocations", json=split_body(feats, registry.rows.iloc[i : i + 2]))
    client.post("/invocations", json={"dataframe_split": {"columns": feats, "data": [[None]]}})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }
    v1 = (("model_version", "1"), ("track", "stable"))
    assert samples[("mlcicd_requests_total", v1)] == 5
    assert samples[("mlcicd_rows_total", v1)] == 10
    assert samples[("mlcicd_request_latency_seconds_count", v1)] == 5
    assert samples[("mlcicd_prediction_count", v1)] == 10
    assert 0 < samples[("mlcicd_prediction_sum", v1)] < 10
    assert samples[("mlcicd_batch_size_rows_sum", (("model_version", "1"),))] >= 10
    assert samples[("mlcicd_request_errors_total", (("kind", "client"), *v1))] == 1
    assert samples[("mlcicd_model_loaded", v1)] == 1
    assert samples[("mlcicd_deployment_revision", ())] == 1


def test_prediction_log_schema_and_server_file(home, registry, start_server):
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    info = json.loads(home.server_file.read_text())
    assert info["port"] == srv.port and info["host"] == "127.0.0.1" and info["pid"] > 0
    feats = registry.features
    sent = registry.rows.iloc[:4]
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        r = client.post(
            "/invocations", json=split_body(feats, sent), headers={"X-Routing-Key": "user-7"}
        )
        ids = r.headers["X-Request-Id"].split(",")
        preds = r.json()["predictions"]
        # Smoke traffic on an explicit track is answered but not logged.
        smoke = client.post(
            "/invocations", json=split_body(feats, sent), headers={"X-Track": "stable"}
        )
        assert smoke.status_code == 200
        dep = client.get("/deployment").json()
        assert dep["served_revision"] == dep["revision"] == 1
        assert dep["loaded"]["stable"]["version"] == "1"
    srv.stop()  # graceful: flushes the log, removes the server file
    assert not home.server_file.exists()
    parts = list(home.predictions(MODEL).glob("*"))
    assert parts and all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    logged = read_log(home.predictions(MODEL))
    assert list(logged.columns[:7]) == [
        "request_id", "ts", "model_version", "track", "routing_key", "latency_ms", "prediction",
    ]  # fmt: skip
    assert list(logged.columns[7:]) == feats
    assert list(logged["request_id"]) == ids
    assert set(logged["routing_key"]) == {"user-7"} and set(logged["track"]) == {"stable"}
    # The log keeps P(positive), column 1 of the class probabilities answered.
    np.testing.assert_allclose(logged["prediction"], np.asarray(preds)[:, 1])
    np.testing.assert_allclose(logged[feats].to_numpy(), sent[feats].to_numpy(np.float64))
    assert (logged["latency_ms"] > 0).all()
    assert _ts_type(home.predictions(MODEL)) == "timestamp[us, tz=UTC]"
