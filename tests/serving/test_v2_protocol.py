"""The Open Inference Protocol (v2) routes, spoken to by a real client: tritonclient's HTTP
client, JSON and binary tensors, one tensor per feature or one [n, d] tensor."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from serving_support import MODEL, deploy, read_log


@pytest.fixture
def served(home: Any, start_server: Any) -> Any:
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    return srv


def _client(srv: Any) -> Any:
    import tritonclient.http as triton

    return triton.InferenceServerClient(url=f"{srv.host}:{srv.port}")


def _inputs(frame: Any, binary: bool) -> list[Any]:
    import tritonclient.http as triton

    out = []
    for col in frame.columns:
        values = frame[col].to_numpy()
        dtype = "INT64" if values.dtype.kind == "i" else "FP64"
        tensor = triton.InferInput(col, [len(values)], dtype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        out.append(tensor)
    return out


def test_triton_client_health_metadata_and_infer(served, registry, local_predictors) -> None:
    import pandas as pd
    import tritonclient.http as triton
    from serving_support import DATA

    client = _client(served)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == registry.features
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types["AGE"] == "INT64" and types["LIMIT_BAL"] == "FP64"
    assert meta["outputs"][0]["shape"] == [-1, 2]

    # Rows as a landed batch has them (int64 and float64 columns).
    frame = pd.read_csv(DATA / "pool.csv.gz")[registry.features].iloc[3000:3004]
    expected = local_predictors["1"].predict_proba(frame)
    invocations = httpx.post(
        f"{served.url}/invocations",
        json={"dataframe_split": frame.to_dict(orient="split", index=False)},
    ).json()["predictions"]
    for binary in (False, True):
        result = client.infer(
            MODEL,
            _inputs(frame, binary),
            request_id="req-7",
            outputs=[triton.InferRequestedOutput("predictions", binary_data=False)],
        )
        got = result.as_numpy("predictions")
        assert got.shape == (4, 2)
        np.testing.assert_allclose(got[:, 1], expected, rtol=1e-12)
        np.testing.assert_allclose(got, invocations, rtol=1e-12)  # what /invocations answers
        response = result.get_response()
        assert response["id"] == "req-7" and response["model_version"] == "1"
    # One [n, d] tensor with the features in order; the version named in the path.
    whole = triton.InferInput("features", [4, len(registry.features)], "FP64")
    whole.set_data_from_numpy(frame.to_numpy(np.float64))
    got = client.infer(MODEL, [whole], model_version="1").as_numpy("predictions")
    np.testing.assert_allclose(got[:, 1], expected, rtol=1e-12)
    client.close()


def test_v2_errors_are_clear_and_requests_are_logged(served, registry) -> None:
    from tritonclient.utils import InferenceServerException

    client = _client(served)
    import tritonclient.http as triton

    age = triton.InferInput("AGE", [1], "INT64")
    age.set_data_from_numpy(np.array([30]))
    with pytest.raises(InferenceServerException, match="missing input tensor"):
        client.infer(MODEL, [age])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("other_model", [age])
    with pytest.raises(InferenceServerException, match="not being served"):
        client.infer(MODEL, [age], model_version="9")
    client.close()
    url = f"{served.url}/v2/models/{MODEL}/infer"
    bad = {"inputs": [{"name": "AGE", "shape": [2], "datatype": "FP64", "data": [1.0]}]}
    r = httpx.post(url, json=bad)
    assert r.status_code == 400 and "1 values for shape [2]" in r.json()["message"]
    r = httpx.post(url, json={"inputs": [{"name": "AGE", "shape": [1], "datatype": "FP128"}]})
    assert r.status_code == 400 and "'FP128' is not one of" in r.json()["message"]
    row = registry.rows.iloc[0]
    text_age = [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [float(row[c])]}
        for c in registry.features
        if c != "AGE"
    ] + [{"name": "AGE", "shape": [1], "datatype": "BYTES", "data": ["30"]}]
    r = httpx.post(url, json={"inputs": text_age})  # this model takes no text
    assert r.status_code == 400 and "'AGE': the feature is a number, not BYTES" in r.text
    # A good v2 request is routed, answered with request ids and logged like /invocations.
    good = {
        "inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [float(row[c])]}
            for c in registry.features
        ]
    }
    r = httpx.post(url, json=good)
    assert r.status_code == 200, r.text
    rid = r.headers["X-Request-Id"]
    served.stop()
    logged = read_log(served.model_server.home.predictions(MODEL))
    assert rid in set(logged["request_id"])
