"""MLflow as on the cluster: a tracking server on loopback whose backend store is the real
PostgreSQL and whose artifacts are proxied (``--serve-artifacts``) to an artifact root.

On the cluster the artifact destination is ``s3://<bucket>/mlflow``; here it is a local
folder (no S3 endpoint offline), which exercises the same proxy path: clients only
know ``MLFLOW_TRACKING_URI=http://...`` and never touch the artifact store directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    from conftest_mlflow import running_mlflow_server

    with running_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow"), "mlflow") as server:
        yield server


def test_registered_model_round_trip_through_server_and_postgres(
    mlflow_server, postgres, tmp_path, monkeypatch
):
    from sklearn.linear_model import LogisticRegression

    from mlcicd_dagster.models import registry
    from mlcicd_dagster.models.loading import load_predictor, log_and_register

    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLCICD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # anything written to ./mlruns would show up here
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int).to_numpy()
    model = LogisticRegression().fit(X, y)

    reg = log_and_register(
        model,
        model_name="credit_default",
        X_example=X.head(5),
        tracking_uri=url,
        params={"C": 1.0},
        metrics={"auc": 0.99},
    )
    registry.set_alias(url, "credit_default", "champion", reg.version)

    # The registry lives in PostgreSQL ...
    rows = postgres.query(
        "mlflow", "SELECT name, version FROM model_versions WHERE name = 'credit_default'"
    )
    assert ("credit_default", int(reg.version)) in rows
    aliases = postgres.query(
        "mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name='credit_default'"
    )
    assert ("champion", int(reg.version)) in aliases
    metrics = postgres.query("mlflow", f"SELECT key FROM metrics WHERE run_uuid = '{reg.run_id}'")
    assert ("auc",) in metrics
    # ... the artifacts went through the server to its artifact destination ...
    assert any(artifacts.rglob("MLmodel"))
    assert not (tmp_path / "mlruns").exists()
    # ... and the champion loads back through the server as the model server would load it.
    predictor = load_predictor("models:/credit_default@champion", tracking_uri=url)
    assert predictor.version == reg.version
    expected = model.predict_proba(X.head(20))[:, 1]
    np.testing.assert_allclose(predictor.predict_proba(X.head(20)), expected, rtol=1e-6)
