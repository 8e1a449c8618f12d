"""Fixtures for the model server: a real MLflow store with three registered versions,
a fresh MLCICD_HOME per test, and servers on 127.0.0.1 (free port) stopped at teardown."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for ``serving_support``
from serving_support import DATA, FAST, LABEL, MODEL, Registry  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Three versions of credit_default, logged with the models package (skops, sqlite)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlcicd_dagster.models.loading import log_and_register

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    pool = pd.read_csv(DATA / "pool.csv.gz")
    features = [c for c in pool.columns if c not in ("ID", LABEL)]
    train = pool.iloc[:3000]
    import mlflow

    # Artifacts under tmp too (MLflow's default artifact root is ./mlruns in the cwd).
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(MODEL, artifact_location=(root / "artifacts").as_uri())
    versions = {}
    for max_iter in (5, 15, 30):  # three distinguishable models
        model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=0)
        model.fit(train[features].to_numpy(np.float64), train[LABEL].to_numpy())
        reg = log_and_register(
            model, model_name=MODEL, X_example=train[features].head(8), tracking_uri=uri
        )
        versions[reg.version] = reg
    return Registry(uri, features, pool.iloc[3000:3600][features].reset_index(drop=True), versions)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry) -> Any:
    from mlcicd_dagster.platform.home import Home

    monkeypatch.setenv("MLCICD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Home.from_env().ensure()


@pytest.fixture
def start_server(home: Any) -> Iterator[Callable[..., Any]]:
    from mlcicd_dagster.serving import ServerConfig, ServerThread

    started: list[Any] = []

    def start(**overrides: Any) -> Any:
        config = ServerConfig(**{**FAST, **overrides})
        srv = ServerThread(home, MODEL, "127.0.0.1", 0, config).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def local_predictors(registry: Registry) -> dict[str, Any]:
    """The same versions loaded in-process, to check the server's answers against."""
    from mlcicd_dagster.models.loading import load_predictor

    return {
        v: load_predictor(r.model_uri, tracking_uri=registry.tracking_uri)
        for v, r in registry.versions.items()
    }
