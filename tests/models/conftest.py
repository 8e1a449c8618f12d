"""Shared fixtures for model tests: a real MLflow store (SQLite) and the shipped data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / "assets" / "credit_default" / "data"
LABEL = "default.payment.next.month"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCICD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLCICD_ALERT_WEBHOOK", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the session: creating its tables costs seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@pytest.fixture(scope="session")
def pool() -> pd.DataFrame:
    return pd.read_csv(DATA / "pool.csv.gz")


@pytest.fixture(scope="session")
def golden() -> pd.DataFrame:
    return pd.read_csv(DATA / "golden.csv.gz")


@pytest.fixture(scope="session")
def features(pool) -> list[str]:
    return [c for c in pool.columns if c not in ("ID", LABEL)]


@pytest.fixture(scope="session")
def small_model(pool, features):
    """A quick HistGradientBoosting model on 4,000 rows (fitted on arrays)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = pool.iloc[:4000]
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0)
    model.fit(train[features].to_numpy(np.float64), train[LABEL].to_numpy())
    return model
